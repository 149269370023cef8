/**
 * The kernel socket table behind the connection gauges (socketTable.ts, connectionMetrics.ts):
 * the /proc/net/tcp{,6} parser on real-format lines (IPv4, IPv6, malformed ones ignored), the
 * ownership and state rules, the cache, the gauges over a fake /proc, and the kernel itself: a
 * listener whose process does not accept shows its backlog.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { Writable } from 'node:stream'
import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import { createLogger } from '../../src/observability/logger.js'
import { ConnectionReader, registerConnectionMetrics } from '../../src/proxy/connectionMetrics.js'
import { countPorts, parseTcpLine, parseTcpTable, procSource, readPorts, TCP_ESTABLISHED, TCP_LISTEN } from '../../src/proxy/socketTable.js'

const HEADER4 = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     '
const HEADER6 = '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode'

/** A /proc/net/tcp line as the kernel prints it (tcp4_seq_show's format). */
function line4(sl: number, localHex: string, port: number, state: number, queues: [number, number], inode: number): string {
  const h = (n: number, w: number) => n.toString(16).toUpperCase().padStart(w, '0')
  return `${String(sl).padStart(4)}: ${localHex}:${h(port, 4)} 0100007F:${h(40000 + sl, 4)} ${h(state, 2)} ${h(queues[0], 8)}:${h(queues[1], 8)} 00:00000000 00000000  1000        0 ${inode} 1 0000000000000000 20 4 30 10 -1                  `
}

function line6(sl: number, port: number, state: number, queues: [number, number], inode: number): string {
  const h = (n: number, w: number) => n.toString(16).toUpperCase().padStart(w, '0')
  return `${String(sl).padStart(4)}: 0000000000000000FFFF00000100007F:${h(port, 4)} 0000000000000000FFFF00000100007F:${h(50000 + sl, 4)} ${h(state, 2)} ${h(queues[0], 8)}:${h(queues[1], 8)} 00:00000000 00000000  1000        0 ${inode} 1 0000000000000000 20 4 30 10 -1`
}

const LOG_SINK = () => {
  const lines: string[] = []
  const destination = new Writable({ write(c: Buffer, _e, cb) { lines.push(...c.toString().split('\n').filter(Boolean)); cb() } })
  return { lines, log: createLogger({ level: 'debug', destination }) }
}

describe('/proc/net/tcp parser', () => {
  it('reads IPv4 lines: port, state, queues, inode; skips the header', () => {
    const text = [HEADER4, line4(0, '0100007F', 9443, TCP_LISTEN, [0, 7], 7531), line4(1, '0100007F', 9443, TCP_ESTABLISHED, [12, 0], 116117), ''].join('\n')
    expect(parseTcpTable(text)).toEqual([
      { family: 4, localPort: 9443, state: TCP_LISTEN, txQueue: 0, rxQueue: 7, inode: 7531 },
      { family: 4, localPort: 9443, state: TCP_ESTABLISHED, txQueue: 12, rxQueue: 0, inode: 116117 },
    ])
  })

  it('reads IPv6 lines (IPv4-mapped clients of a dual-stack listener) and five-digit slot numbers', () => {
    const text = [HEADER6, line6(0, 443, TCP_LISTEN, [0, 3], 4739), line6(12345, 443, 0x08, [0, 0], 99)].join('\n')
    expect(parseTcpTable(text)).toEqual([
      { family: 6, localPort: 443, state: TCP_LISTEN, txQueue: 0, rxQueue: 3, inode: 4739 },
      { family: 6, localPort: 443, state: 0x08, txQueue: 0, rxQueue: 0, inode: 99 },
    ])
  })

  it('keeps only the wanted ports', () => {
    const text = [HEADER4, line4(0, '0100007F', 9443, TCP_LISTEN, [0, 0], 1), line4(1, '00000000', 22, TCP_LISTEN, [0, 0], 2)].join('\n')
    expect(parseTcpTable(text, new Set([9443])).map((l) => l.inode)).toEqual([1])
    expect(parseTcpTable(text, new Set([1])).length).toBe(0)
  })

  it('ignores malformed lines without throwing', () => {
    const good = line4(0, '0100007F', 9443, TCP_ESTABLISHED, [0, 0], 42)
    const bad = [
      '', '   ', 'garbage', '0: 0100007F:24E3', // truncated
      good.replace('0100007F:24E3', '0100007F24E3'), // no port separator
      good.replace('0100007F:24E3', '100007F:24E3'), // 7 hex digits
      good.replace('0100007F:24E3', '0100007g:24E3'), // not hex
      good.replace(' 01 ', ' 1 '), // state width
      good.replace('00000000:00000000', '00000000-00000000'), // queues
      good.replace(' 42 ', ' -42 '), // inode
      good.replace('   0: ', '   0 '), // slot without colon
      '\u0000\u0001\u0002 \uFFFD',
    ]
    for (const b of bad) expect(parseTcpLine(b), JSON.stringify(b)).toBeUndefined()
    expect(parseTcpTable([HEADER4, ...bad, good, ...bad].join('\n')).map((l) => l.inode)).toEqual([42])
    // A table cut mid-line (the file changed while read) keeps the complete lines.
    expect(parseTcpTable(`${HEADER4}\n${good}\n${good.slice(0, 40)}`).length).toBe(1)
  })
})

describe('counting a port', () => {
  const L = (localPort: number, state: number, inode: number, rxQueue = 0) => ({ family: 4 as const, localPort, state, txQueue: 0, rxQueue, inode })

  it('counts our sockets only: connections in any state but LISTEN, the backlog of every listening socket', () => {
    const lines = [
      L(9443, TCP_LISTEN, 10, 3), L(9443, TCP_LISTEN, 11, 2), // two threads' listening sockets (SO_REUSEPORT)
      L(9443, TCP_LISTEN, 90, 50), // another process's listener on the same port
      L(9443, TCP_ESTABLISHED, 20), L(9443, TCP_ESTABLISHED, 21), L(9443, 0x08 /* CLOSE_WAIT */, 22),
      L(9443, TCP_ESTABLISHED, 91), // another process's connection (a draining proxy)
      L(9443, TCP_ESTABLISHED, 0), L(9443, 0x03 /* SYN_RECV */, 0), L(9443, 0x06 /* TIME_WAIT */, 0), // held by no process
      L(8080, TCP_ESTABLISHED, 23), // another port of ours
    ]
    const ours = new Set([10, 11, 20, 21, 22, 23])
    expect(countPorts(lines, [9443], ours).get(9443)).toEqual({ connections: 3, listenQueue: 5, listening: true })
    expect(countPorts(lines, [9443, 7000], ours).get(7000)).toEqual({ connections: 0, listenQueue: 0, listening: false })
  })
})

/** A fake /proc: table files and a descriptor directory of `socket:[inode]` links. */
function fakeProc(dir: string, table: string, inodes: number[]) {
  const tcp = path.join(dir, 'tcp')
  writeFileSync(tcp, table)
  const fdDir = mkdtempSync(path.join(dir, 'fd-'))
  symlinkSync('/dev/null', path.join(fdDir, '0'))
  inodes.forEach((ino, i) => symlinkSync(`socket:[${ino}]`, path.join(fdDir, String(i + 3))))
  return { tables: [tcp], fdDir }
}

describe('connection gauges over a fake /proc', () => {
  let dir = ''
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true })
    dir = ''
  })

  it('reads a table and descriptors; reuses a reading for minIntervalMs, or 20× the time it held the loop up to 5 s', async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'gh-socktab-'))
    const table = [HEADER4, line4(0, '0100007F', 9443, TCP_LISTEN, [0, 4], 100), line4(1, '0100007F', 9443, TCP_ESTABLISHED, [0, 0], 101), line4(2, '0100007F', 9443, TCP_ESTABLISHED, [0, 0], 999)].join('\n')
    const src = fakeProc(dir, table, [100, 101])
    expect((await readPorts([9443], src)).get(9443)).toEqual({ connections: 1, listenQueue: 4, listening: true })
    let now = 0
    const reader = new ConnectionReader({ source: src, minIntervalMs: 1000, now: () => now })
    await reader.counts([9443])
    // Concurrent scrapes share one reading; a reading younger than the interval is reused.
    await Promise.all([reader.counts([9443]), reader.counts([9443])])
    now = 999
    await reader.counts([9443])
    expect(reader.readings).toBe(1)
    now = 1000
    await reader.counts([9443])
    expect(reader.readings).toBe(2)
    expect(reader.lastBusyMs).toBeGreaterThan(0)
    expect(reader.lastBusyMs).toBeLessThan(50)
    reader.lastBusyMs = 100 // a reading that held the loop 100 ms: reused for 2 s, never over 5 s
    expect(reader.maxAgeMs).toBe(2000)
    reader.lastBusyMs = 1000
    expect(reader.maxAgeMs).toBe(5000)
  })

  it('exports both gauges by listener; absent before the listener has a port', async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'gh-socktab-'))
    const table = [HEADER4, line4(0, '0100007F', 9443, TCP_LISTEN, [0, 2], 100), line4(1, '0100007F', 9443, TCP_ESTABLISHED, [0, 0], 101), line4(2, '0100007F', 9443, 0x08, [0, 0], 102)].join('\n')
    const registry = new Registry()
    let port = 0
    const { log } = LOG_SINK()
    registerConnectionMetrics(registry, { listeners: [{ name: 'device', port: () => port }], host: '127.0.0.1', log, source: fakeProc(dir, table, [100, 101, 102]) })
    expect(await registry.metrics()).not.toMatch(/^gatehouse_proxy_connections_active\{/m)
    port = 9443
    const text = await registry.metrics()
    expect(text).toMatch(/^gatehouse_proxy_connections_active\{listener="device"\} 2$/m)
    expect(text).toMatch(/^gatehouse_proxy_listen_queue\{listener="device"\} 2$/m)
  })

  it('registers nothing without /proc, with one log line; a failed reading leaves the gauges out', async () => {
    const registry = new Registry()
    const { lines, log } = LOG_SINK()
    const r = registerConnectionMetrics(registry, { listeners: [{ name: 'device', port: () => 9443 }], host: '127.0.0.1', log, source: { tables: ['/nonexistent/tcp'], fdDir: '/nonexistent/fd' } })
    expect(r).toBeUndefined()
    expect(await registry.metrics()).not.toMatch(/connections_active|listen_queue/)
    expect(lines.filter((l) => l.includes('connection_metrics_unavailable')).length).toBe(1)

    dir = mkdtempSync(path.join(os.tmpdir(), 'gh-socktab-'))
    const src = fakeProc(dir, HEADER4, [])
    const registry2 = new Registry()
    const sink = LOG_SINK()
    registerConnectionMetrics(registry2, { listeners: [{ name: 'device', port: () => 9443 }], host: '127.0.0.1', log: sink.log, source: src })
    rmSync(src.tables[0]!)
    const text = await registry2.metrics()
    expect(text).not.toMatch(/^gatehouse_proxy_connections_active\{/m)
    await registry2.metrics()
    expect(sink.lines.filter((l) => l.includes('connection_metrics_failed')).length).toBe(1)
  })
})

describe('the kernel socket table (Linux)', () => {
  const servers: Server[] = []
  const sockets: Socket[] = []
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy()
    await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))))
  })

  it.runIf(process.platform === 'linux')('counts the connections this process accepted, not the clients\' ends, and none after they close', async () => {
    const accepted: Socket[] = []
    const server = createServer((s) => accepted.push(s))
    servers.push(server)
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const port = (server.address() as AddressInfo).port
    const src = procSource('127.0.0.1')
    expect((await readPorts([port], src)).get(port)).toEqual({ connections: 0, listenQueue: 0, listening: true })
    for (let i = 0; i < 5; i++) sockets.push(connect(port, '127.0.0.1'))
    await waitFor(() => accepted.length === 5)
    // The clients' ends are ours too, but their local port is not the listener's.
    expect((await readPorts([port], src)).get(port)!.connections).toBe(5)
    for (const s of sockets.splice(0)) s.destroy()
    for (const s of accepted) s.destroy()
    await waitFor(async () => (await readPorts([port], src)).get(port)!.connections === 0)
  })

  it.runIf(process.platform === 'linux')('shows the backlog of a process that does not accept, through its descriptors', async () => {
    // A listener in a child whose event loop is then held: the kernel completes the handshakes,
    // nobody accepts them.
    const child = spawn(process.execPath, ['-e', `
      const s = require('node:net').createServer(() => {})
      s.listen(0, '127.0.0.1', 64, () => {
        process.stdout.write(s.address().port + '\\n') // synchronous on a pipe
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20000) // sleeps, accepting nothing
      })`], { stdio: ['ignore', 'pipe', 'inherit'] })
    try {
      const port = Number(await new Promise<string>((resolve) => child.stdout.once('data', (d: Buffer) => resolve(d.toString().trim()))))
      for (let i = 0; i < 7; i++) sockets.push(connect(port, '127.0.0.1'))
      await Promise.all(sockets.map((s) => new Promise((r) => s.once('connect', r))))
      const theirs = { tables: ['/proc/net/tcp'], fdDir: `/proc/${child.pid}/fd` }
      await waitFor(async () => (await readPorts([port], theirs)).get(port)!.listenQueue === 7)
      expect((await readPorts([port], theirs)).get(port)).toEqual({ connections: 0, listenQueue: 7, listening: true })
      // Our own descriptors do not hold that listener: nothing of it is ours.
      expect((await readPorts([port], procSource('127.0.0.1'))).get(port)).toEqual({ connections: 0, listenQueue: 0, listening: false })
    } finally {
      child.kill('SIGKILL')
    }
  })
})

async function waitFor(cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time')
    await new Promise((r) => setTimeout(r, 20))
  }
}
