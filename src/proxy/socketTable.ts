/**
 * What the kernel knows of the proxy's connections, uWebSockets.js giving no connection events
 * (Linux only): the TCP socket table of the network namespace (/proc/net/tcp, /proc/net/tcp6),
 * kept to the sockets this process holds (/proc/self/fd links `socket:[inode]`).
 *
 *   line on a listener port, inode of one of our fds ─┬─ LISTEN: rx_queue = accept backlog
 *                                                     └─ any other state: a connection we hold open
 *
 * Sockets that no process holds have inode 0 and are left out by the ownership test: handshakes
 * in progress (SYN_RECV), connections waiting in the accept queue (they are the backlog),
 * connections the proxy closed (FIN_WAIT, TIME_WAIT). The ownership test keeps out another
 * process's sockets on the same port: a second proxy sharing it (SO_REUSEPORT), or one still
 * draining its connections after it stopped listening. A port bound by a listener is never
 * handed out as an ephemeral port, so no outgoing connection of ours matches one.
 */
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs'
import { open, readdir } from 'node:fs/promises'
import { isIPv4 } from 'node:net'
import { setImmediate as yieldToLoop } from 'node:timers/promises'

/** TCP states as /proc/net/tcp prints them (include/net/tcp_states.h). */
export const TCP_ESTABLISHED = 0x01
export const TCP_LISTEN = 0x0a

/** One line of /proc/net/tcp or /proc/net/tcp6, the fields the proxy reads. */
export interface TcpLine {
  family: 4 | 6
  localPort: number
  state: number
  txQueue: number
  rxQueue: number
  inode: number
}

/**
 * The lines of a /proc/net/tcp{,6} text whose local port is in `ports` (every line without it).
 * The header and malformed lines are skipped. Hand-written scanning, no split or regex per line:
 * a table of 20,000 lines is parsed in a few milliseconds.
 */
export function parseTcpTable(text: string, ports?: ReadonlySet<number>, out: TcpLine[] = []): TcpLine[] {
  let start = 0
  while (start < text.length) {
    let end = text.indexOf('\n', start)
    if (end < 0) end = text.length
    const line = parseRange(text, start, end, ports)
    if (line) out.push(line)
    start = end + 1
  }
  return out
}

/** One line, or undefined (header, malformed, or a port not in `ports`). */
export function parseTcpLine(line: string, ports?: ReadonlySet<number>): TcpLine | undefined {
  return parseRange(line, 0, line.length, ports)
}

/** Start and end offsets of the fields found by fields(): [start0, end0, start1, end1, …]. */
const at = new Int32Array(20)

/** Find the first `n` whitespace-separated fields of s[from, to); returns how many there are. */
function fields(s: string, from: number, to: number, n: number): number {
  let k = 0
  let i = from
  while (k < n) {
    while (i < to && s.charCodeAt(i) <= 32) i++
    if (i >= to) break
    at[2 * k] = i
    while (i < to && s.charCodeAt(i) > 32) i++
    at[2 * k + 1] = i
    k++
  }
  return k
}

/** Value of the upper-case hex digits s[from, to) (as the kernel prints them), or -1. */
function hex(s: string, from: number, to: number): number {
  let v = 0
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i)
    const d = c >= 48 && c <= 57 ? c - 48 : c >= 65 && c <= 70 ? c - 55 : -1
    if (d < 0) return -1
    v = v * 16 + d
  }
  return v
}

/** Value of the decimal digits s[from, to), or -1. */
function dec(s: string, from: number, to: number): number {
  let v = 0
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i)
    if (c < 48 || c > 57) return -1
    v = v * 10 + c - 48
  }
  return v
}

// "  sl  local_address rem_address   st tx_queue:rx_queue tr:tm->when retrnsmt   uid  timeout inode ..."
//    0   1             2             3  4                 5           6          7    8        9
function parseRange(s: string, from: number, to: number, ports?: ReadonlySet<number>): TcpLine | undefined {
  if (fields(s, from, to, 10) < 10) return undefined
  // "12:" slot number
  if (at[1]! - at[0]! < 2 || s.charCodeAt(at[1]! - 1) !== 58 || dec(s, at[0]!, at[1]! - 1) < 0) return undefined
  // "0100007F:24E3" or 32 hex digits and the port
  const ls = at[2]!
  const le = at[3]!
  const width = le - ls
  if ((width !== 13 && width !== 37) || s.charCodeAt(le - 5) !== 58 || hex(s, ls, le - 5) < 0) return undefined
  const localPort = hex(s, le - 4, le)
  if (localPort < 0 || (ports && !ports.has(localPort))) return undefined
  const state = at[7]! - at[6]! === 2 ? hex(s, at[6]!, at[7]!) : -1
  const qs = at[8]!
  if (state < 0 || at[9]! - qs !== 17 || s.charCodeAt(qs + 8) !== 58) return undefined
  const txQueue = hex(s, qs, qs + 8)
  const rxQueue = hex(s, qs + 9, qs + 17)
  const inode = dec(s, at[18]!, at[19]!)
  if (txQueue < 0 || rxQueue < 0 || inode < 0) return undefined
  return { family: width === 13 ? 4 : 6, localPort, state, txQueue, rxQueue, inode }
}

/** Where the tables and this process's descriptors are read (tests point fdDir at a child's). */
export interface ProcSource {
  tables: readonly string[]
  fdDir: string
}

/**
 * The tables a listener on `host` needs: an IPv4 address (0.0.0.0 included) accepts IPv4 only;
 * an IPv6 one or a name may take both (IPv4 clients of a dual-stack socket are in tcp6).
 */
export function procSource(host: string): ProcSource {
  return { tables: isIPv4(host) ? ['/proc/net/tcp'] : ['/proc/net/tcp', '/proc/net/tcp6'], fdDir: '/proc/self/fd' }
}

/** Whether the tables and the descriptor directory can be read here (Linux with /proc). */
export function procAvailable(src: ProcSource): boolean {
  return existsSync(src.fdDir) && existsSync(src.tables[0]!)
}

const SOCKET_LINK = 'socket:['

function socketInode(fdDir: string, fd: string): number | undefined {
  try {
    const link = readlinkSync(`${fdDir}/${fd}`)
    return link.startsWith(SOCKET_LINK) ? Number(link.slice(SOCKET_LINK.length, -1)) : undefined
  } catch {
    return undefined // closed since the directory was read
  }
}

/** Inodes of the sockets the process holds, read at once (blocks ~8 µs per descriptor). */
export function socketInodesSync(fdDir: string): Set<number> {
  const out = new Set<number>()
  for (const fd of readdirSync(fdDir)) {
    const ino = socketInode(fdDir, fd)
    if (ino !== undefined) out.add(ino)
  }
  return out
}

/**
 * The same, yielding to the event loop every `chunk` descriptors: one readlink each (~8 µs), so
 * 10,000 connections would otherwise hold the loop for about 80 ms (a promise per readlink costs
 * 5× more in all).
 */
export async function socketInodes(fdDir: string, chunk = 250, busy?: Busy): Promise<Set<number>> {
  const out = new Set<number>()
  const fds = await readdir(fdDir)
  let t = performance.now()
  for (let i = 0; i < fds.length; i++) {
    const ino = socketInode(fdDir, fds[i]!)
    if (ino !== undefined) out.add(ino)
    if (i % chunk === chunk - 1) {
      if (busy) busy.ms += performance.now() - t
      await yieldToLoop()
      t = performance.now()
    }
  }
  if (busy) busy.ms += performance.now() - t
  return out
}

/** Time a reading held the event loop (ms), its waits for the thread pool left out. */
export interface Busy {
  ms: number
}

/**
 * Read and parse a table piece by piece: each read runs in the thread pool (the kernel formats
 * the lines there, ~3 µs each), and the loop only parses one piece between reads.
 */
export async function readTcpTable(file: string, ports: ReadonlySet<number>, out: TcpLine[] = [], pieceBytes = 128 * 1024, busy?: Busy): Promise<TcpLine[]> {
  const fh = await open(file, 'r')
  try {
    const buf = Buffer.allocUnsafe(pieceBytes)
    let rest = ''
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, pieceBytes, null)
      if (bytesRead === 0) break
      const t = performance.now()
      const text = rest + buf.toString('latin1', 0, bytesRead)
      const cut = text.lastIndexOf('\n') + 1
      parseTcpTable(text.slice(0, cut), ports, out)
      rest = text.slice(cut)
      if (busy) busy.ms += performance.now() - t
    }
    if (rest) parseTcpTable(rest, ports, out)
  } finally {
    await fh.close()
  }
  return out
}

/** What the kernel shows of one listener port. */
export interface PortCounts {
  /** Connections accepted on the port that this process holds open (any state but LISTEN). */
  connections: number
  /** Connections waiting in the accept queues of this process's listening sockets on the port. */
  listenQueue: number
  /** This process has a listening socket on the port. */
  listening: boolean
}

/** Count the lines of `ports` held by this process (`ours`: its socket inodes). */
export function countPorts(lines: readonly TcpLine[], ports: Iterable<number>, ours: ReadonlySet<number>): Map<number, PortCounts> {
  const out = new Map<number, PortCounts>()
  for (const p of ports) out.set(p, { connections: 0, listenQueue: 0, listening: false })
  for (const l of lines) {
    const c = out.get(l.localPort)
    if (!c || l.inode === 0 || !ours.has(l.inode)) continue
    if (l.state === TCP_LISTEN) {
      c.listening = true
      c.listenQueue += l.rxQueue
    } else {
      c.connections++
    }
  }
  return out
}

/**
 * One reading. The tables are read before the descriptors: a connection accepted in between is
 * left out (it was in the backlog when the table was read), one closed in between too.
 */
export async function readPorts(ports: readonly number[], src: ProcSource, busy?: Busy): Promise<Map<number, PortCounts>> {
  const want = new Set(ports)
  const lines: TcpLine[] = []
  for (const t of src.tables) await readTcpTable(t, want, lines, undefined, busy)
  const ours = await socketInodes(src.fdDir, undefined, busy)
  const t = performance.now()
  const counts = countPorts(lines, want, ours)
  if (busy) busy.ms += performance.now() - t
  return counts
}

/** The same, synchronously (tests that hold the event loop so that nothing is accepted). */
export function readPortsSync(ports: readonly number[], src: ProcSource): Map<number, PortCounts> {
  const want = new Set(ports)
  const lines: TcpLine[] = []
  for (const t of src.tables) parseTcpTable(readFileSync(t, 'latin1'), want, lines)
  return countPorts(lines, want, socketInodesSync(src.fdDir))
}
