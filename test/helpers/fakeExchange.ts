/**
 * A fake Exchange ActiveSync server (node:http or node:https) for the gateway's tests and
 * benchmark. It requires HTTP Basic credentials, parses the query in both forms, and answers:
 *
 *   OPTIONS          200, MS-ASProtocolVersions / MS-ASProtocolCommands headers, empty body
 *   Sync             200, a WBXML-ish body: a fixed header followed by the request body (echo)
 *   Ping             holds the request `pingHoldMs` ms (a body "hold=N" holds N ms, releasePings()
 *                    ends every hold now), then 200 with a small WBXML body (Ping Status 1)
 *   SendMail         200, text: the number of body bytes received (streamed upload checks)
 *   GetAttachment    200, `x-fake-bytes` bytes of 0x61 (with Content-Length, or chunked when
 *                    `x-fake-chunked: 1`; written with backpressure)
 *   anything else    200, the command name
 *
 * It counts requests (per command), requests in flight and their peak, requests whose client went
 * away before the answer (`aborted`), failed sign-ins, and keeps the last request's headers.
 * `delayMs` delays every answer (504 tests); close() stops it (502 tests).
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { activeSyncUserKey } from '../../src/protocol/activeSyncIdentity.js'
import { parseActiveSyncQuery } from '../../src/proxy/activeSyncQuery.js'

export const PROTOCOL_VERSIONS = '2.5,12.0,12.1,14.0,14.1,16.0,16.1'
export const PROTOCOL_COMMANDS = 'Sync,SendMail,SmartForward,SmartReply,GetAttachment,FolderSync,FolderCreate,FolderDelete,FolderUpdate,MoveItems,GetItemEstimate,MeetingResponse,Search,Settings,Ping,ItemOperations,Provision,ResolveRecipients,ValidateCert,Find'
/** WBXML 1.3 header, unknown public id, UTF-8, no string table. */
export const WBXML_HEADER = Buffer.from([0x03, 0x01, 0x6a, 0x00])
/** `<Ping xmlns="Ping:"><Status>1</Status></Ping>`. */
export const PING_OK = Buffer.from([0x03, 0x01, 0x6a, 0x00, 0x00, 0x0d, 0x45, 0x47, 0x03, 0x31, 0x00, 0x01, 0x01])
const WBXML = 'application/vnd.ms-sync.wbxml'

export interface FakeExchangeOptions {
  /** Users and passwords (user names compared the way Exchange does: domain and case ignored). */
  users: Record<string, string>
  pingHoldMs?: number
  tls?: { cert: Buffer; key: Buffer }
  host?: string
  port?: number
}

export interface FakeExchange {
  readonly port: number
  readonly url: string
  pingHoldMs: number
  /** Delay before every answer (ms). */
  delayMs: number
  requests: number
  readonly byCommand: Map<string, number>
  inFlight: number
  maxInFlight: number
  /** Requests whose client (the proxy) went away before the answer was complete. */
  aborted: number
  authFailures: number
  lastHeaders: IncomingMessage['headers'] | undefined
  lastUrl: string | undefined
  /** Answer every held Ping now (tests that first wait until N are held at once). */
  releasePings(): number
  reset(): void
  close(): Promise<void>
}

export async function startFakeExchange(o: FakeExchangeOptions): Promise<FakeExchange> {
  const users = new Map(Object.entries(o.users).map(([u, p]) => [activeSyncUserKey(u)!, p]))
  const state = {
    pingHoldMs: o.pingHoldMs ?? 2000, delayMs: 0, requests: 0, byCommand: new Map<string, number>(),
    inFlight: 0, maxInFlight: 0, aborted: 0, authFailures: 0,
    lastHeaders: undefined as IncomingMessage['headers'] | undefined, lastUrl: undefined as string | undefined,
  }
  const timers = new Set<NodeJS.Timeout>()
  /** Held Pings: their answer, to be sent by their timer or by releasePings(). */
  const held = new Set<() => void>()
  const later = (ms: number, f: () => void) => {
    const t = setTimeout(() => { timers.delete(t); f() }, ms)
    timers.add(t)
  }

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    state.requests++
    state.inFlight++
    state.maxInFlight = Math.max(state.maxInFlight, state.inFlight)
    state.lastHeaders = req.headers
    state.lastUrl = req.url
    let done = false
    res.on('close', () => {
      state.inFlight--
      if (!done && !res.writableFinished) state.aborted++
    })
    res.on('finish', () => { done = true })
    const answer = (status: number, headers: Record<string, string | number>, body?: Buffer | string) => {
      const send = () => {
        if (res.destroyed) return
        res.writeHead(status, { 'content-length': body === undefined ? 0 : Buffer.byteLength(body), ...headers }).end(body)
      }
      if (state.delayMs > 0) later(state.delayMs, send)
      else send()
    }
    if (!authorized(req.headers.authorization, users)) {
      state.authFailures++
      req.resume()
      answer(401, { 'www-authenticate': 'Basic realm="fake-exchange"' })
      return
    }
    const url = new URL(req.url ?? '/', 'http://exchange')
    if (req.method === 'OPTIONS') {
      count(state.byCommand, 'OPTIONS')
      req.resume()
      answer(200, { 'ms-asprotocolversions': PROTOCOL_VERSIONS, 'ms-asprotocolcommands': PROTOCOL_COMMANDS, 'ms-server-activesync': '15.1', allow: 'OPTIONS,POST' })
      return
    }
    let command: string
    try {
      command = parseActiveSyncQuery(url.search.slice(1)).command
    } catch {
      req.resume()
      answer(400, {})
      return
    }
    count(state.byCommand, command)
    if (command === 'GetAttachment') {
      req.resume()
      streamBytes(res, Number(req.headers['x-fake-bytes'] ?? 0), req.headers['x-fake-chunked'] === '1')
      return
    }
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (c: Buffer) => {
      size += c.length
      if (command !== 'SendMail') chunks.push(c)
    })
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      switch (command) {
        case 'Sync':
          answer(200, { 'content-type': WBXML }, Buffer.concat([WBXML_HEADER, body]))
          break
        case 'Ping': {
          const m = /^hold=(\d+)$/.exec(body.toString('latin1'))
          const hold = m ? Number(m[1]) : state.pingHoldMs
          let answered = false
          const reply = () => {
            if (answered) return
            answered = true
            held.delete(reply)
            if (!res.destroyed) res.writeHead(200, { 'content-type': WBXML, 'content-length': PING_OK.length, 'x-fake-exchange': 'ping' }).end(PING_OK)
          }
          held.add(reply)
          res.on('close', () => held.delete(reply))
          later(hold, reply)
          break
        }
        case 'SendMail':
          answer(200, { 'content-type': 'text/plain' }, String(size))
          break
        default:
          answer(200, { 'content-type': 'text/plain' }, command)
      }
    })
  }

  const server: Server = o.tls ? createHttpsServer({ cert: o.tls.cert, key: o.tls.key }, handle) : createHttpServer(handle)
  // Held Pings: no request timeout of our own (Node's default would cut one after 300 s).
  server.requestTimeout = 0
  server.headersTimeout = 60_000
  server.keepAliveTimeout = 65_000
  await new Promise<void>((resolve) => server.listen(o.port ?? 0, o.host ?? '127.0.0.1', () => resolve()))
  const port = (server.address() as AddressInfo).port
  const fake: FakeExchange = {
    port,
    url: `${o.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    get pingHoldMs() { return state.pingHoldMs },
    set pingHoldMs(v) { state.pingHoldMs = v },
    get delayMs() { return state.delayMs },
    set delayMs(v) { state.delayMs = v },
    get requests() { return state.requests },
    set requests(v) { state.requests = v },
    get byCommand() { return state.byCommand },
    get inFlight() { return state.inFlight },
    set inFlight(v) { state.inFlight = v },
    get maxInFlight() { return state.maxInFlight },
    set maxInFlight(v) { state.maxInFlight = v },
    get aborted() { return state.aborted },
    set aborted(v) { state.aborted = v },
    get authFailures() { return state.authFailures },
    set authFailures(v) { state.authFailures = v },
    get lastHeaders() { return state.lastHeaders },
    set lastHeaders(v) { state.lastHeaders = v },
    get lastUrl() { return state.lastUrl },
    set lastUrl(v) { state.lastUrl = v },
    releasePings() {
      const all = [...held]
      for (const reply of all) reply()
      return all.length
    },
    reset() {
      Object.assign(state, { requests: 0, inFlight: state.inFlight, maxInFlight: state.inFlight, aborted: 0, authFailures: 0, lastHeaders: undefined, lastUrl: undefined })
      state.byCommand.clear()
    },
    close: () => new Promise<void>((resolve) => {
      for (const t of timers) clearTimeout(t)
      timers.clear()
      server.close(() => resolve())
      server.closeAllConnections()
    }),
  }
  return fake
}

function count(m: Map<string, number>, k: string): void {
  m.set(k, (m.get(k) ?? 0) + 1)
}

function authorized(header: string | undefined, users: Map<string, string>): boolean {
  if (!header?.startsWith('Basic ')) return false
  const decoded = Buffer.from(header.slice(6), 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  if (colon < 0) return false
  const key = activeSyncUserKey(decoded.slice(0, colon))
  return key !== undefined && users.get(key) === decoded.slice(colon + 1)
}

/** `n` bytes of "a" in 64 KiB writes, waiting for 'drain' (so a slow reader slows us down). */
function streamBytes(res: ServerResponse, n: number, chunked: boolean): void {
  res.writeHead(200, chunked ? { 'content-type': 'application/octet-stream' } : { 'content-type': 'application/octet-stream', 'content-length': n })
  const block = Buffer.alloc(64 * 1024, 0x61)
  let left = n
  const pump = () => {
    while (left > 0) {
      const c = left >= block.length ? block : block.subarray(0, left)
      left -= c.length
      if (!res.write(c)) {
        res.once('drain', pump)
        return
      }
    }
    res.end()
  }
  pump()
}

/** `Authorization` value for Basic credentials. */
export function basicAuth(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`, 'utf8').toString('base64')}`
}
