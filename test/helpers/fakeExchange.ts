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
 * away before the answer (`aborted`), failed sign-ins, connections (open, peak, total), and keeps
 * the last request's headers and HTTP version. `delayMs` delays every answer (504 tests); close()
 * stops it (502 tests).
 *
 * `http2: true` (with `tls`) serves HTTP/2 (HTTP/1.1 still accepted) with the same answers, and
 * announces `maxStreams` (default 100) as SETTINGS_MAX_CONCURRENT_STREAMS. HTTP/2 faults for hostile
 * tests, by a request header `x-fake-fault`: `rst` resets the stream (RST_STREAM INTERNAL_ERROR),
 * `goaway` sends GOAWAY (INTERNAL_ERROR) and drops the connection 50 ms later; GetAttachment does
 * so after its first 64 KiB, SendMail after the first chunk of the request body. goaway() sends a
 * graceful GOAWAY (NO_ERROR) on every HTTP/2 connection.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { constants as h2, createSecureServer, type Http2SecureServer, type Http2ServerResponse, type Http2Session } from 'node:http2'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
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
  /** HTTP/2 over TLS (needs `tls`); HTTP/1.1 clients are still served. */
  http2?: boolean
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS announced. Default 100. */
  maxStreams?: number
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
  /** HTTP version of the last request ("1.1", "2.0"). */
  lastHttpVersion: string | undefined
  /** TCP connections open now, their peak (settable), and all accepted. */
  readonly connections: number
  maxConnections: number
  readonly connectionsTotal: number
  /** Answer every held Ping now (tests that first wait until N are held at once). */
  releasePings(): number
  /** Graceful GOAWAY (NO_ERROR) on every HTTP/2 connection; returns how many. */
  goaway(): number
  reset(): void
  close(): Promise<void>
}

export async function startFakeExchange(o: FakeExchangeOptions): Promise<FakeExchange> {
  const users = new Map(Object.entries(o.users).map(([u, p]) => [activeSyncUserKey(u)!, p]))
  const state = {
    pingHoldMs: o.pingHoldMs ?? 2000, delayMs: 0, requests: 0, byCommand: new Map<string, number>(),
    inFlight: 0, maxInFlight: 0, aborted: 0, authFailures: 0,
    lastHeaders: undefined as IncomingMessage['headers'] | undefined, lastUrl: undefined as string | undefined,
    lastHttpVersion: undefined as string | undefined, connections: 0, maxConnections: 0, connectionsTotal: 0,
  }
  const sockets = new Set<Socket>()
  const sessions = new Set<Http2Session>()
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
    state.lastHttpVersion = req.httpVersion
    let done = false
    res.on('close', () => {
      state.inFlight--
      // HTTP/2 compat responses emit 'finish' on a reset too: only end() makes writableEnded true.
      if (!res.writableEnded || (!done && !res.writableFinished)) state.aborted++
    })
    res.on('finish', () => { done = true })
    const answer = (status: number, headers: Record<string, string | number>, body?: Buffer | string) => {
      const send = () => {
        if (closed(res)) return
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
      const f = fault(req.headers['x-fake-fault'])
      streamBytes(res, Number(req.headers['x-fake-bytes'] ?? 0), req.headers['x-fake-chunked'] === '1', f && (() => f(res)))
      return
    }
    const chunks: Buffer[] = []
    let size = 0
    const bodyFault = fault(req.headers['x-fake-fault'])
    req.on('data', (c: Buffer) => {
      if (bodyFault && size === 0) bodyFault(res)
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
            if (!closed(res)) res.writeHead(200, { 'content-type': WBXML, 'content-length': PING_OK.length, 'x-fake-exchange': 'ping' }).end(PING_OK)
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

  /** HTTP/2 faults (x-fake-fault): reset the stream, or GOAWAY and drop the connection. */
  const fault = (kind: string | string[] | undefined) => kind !== 'rst' && kind !== 'goaway' ? undefined : (res: ServerResponse) => {
    const stream = (res as unknown as Partial<Http2ServerResponse>).stream
    if (!stream) throw new Error('x-fake-fault needs HTTP/2')
    if (kind === 'rst') {
      stream.close(h2.NGHTTP2_INTERNAL_ERROR)
      return
    }
    const session = stream.session
    session?.goaway(h2.NGHTTP2_INTERNAL_ERROR)
    later(50, () => session?.destroy())
  }

  let server: Server | Http2SecureServer
  if (o.http2) {
    if (!o.tls) throw new Error('http2 needs tls')
    const h2server = createSecureServer({ cert: o.tls.cert, key: o.tls.key, allowHTTP1: true, settings: { maxConcurrentStreams: o.maxStreams ?? 100 } })
    h2server.on('request', (req, res) => handle(req as unknown as IncomingMessage, res as unknown as ServerResponse))
    h2server.on('session', (session: Http2Session) => {
      sessions.add(session)
      session.on('close', () => sessions.delete(session))
      // A stream the proxy resets while we write is not an error of the server.
      session.on('error', () => undefined)
    })
    server = h2server
  } else {
    const h1server = o.tls ? createHttpsServer({ cert: o.tls.cert, key: o.tls.key }, handle) : createHttpServer(handle)
    // Held Pings: no request timeout of our own (Node's default would cut one after 300 s).
    h1server.requestTimeout = 0
    h1server.headersTimeout = 60_000
    h1server.keepAliveTimeout = 65_000
    server = h1server
  }
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    state.connectionsTotal++
    state.maxConnections = Math.max(state.maxConnections, ++state.connections)
    socket.once('close', () => {
      sockets.delete(socket)
      state.connections--
    })
  })
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
    get lastHttpVersion() { return state.lastHttpVersion },
    set lastHttpVersion(v) { state.lastHttpVersion = v },
    get connections() { return state.connections },
    get maxConnections() { return state.maxConnections },
    set maxConnections(v) { state.maxConnections = v },
    get connectionsTotal() { return state.connectionsTotal },
    releasePings() {
      const all = [...held]
      for (const reply of all) reply()
      return all.length
    },
    goaway() {
      for (const session of sessions) session.goaway(h2.NGHTTP2_NO_ERROR)
      return sessions.size
    },
    reset() {
      Object.assign(state, { requests: 0, inFlight: state.inFlight, maxInFlight: state.inFlight, aborted: 0, authFailures: 0, lastHeaders: undefined, lastUrl: undefined })
      state.byCommand.clear()
    },
    close: () => new Promise<void>((resolve) => {
      for (const t of timers) clearTimeout(t)
      timers.clear()
      server.close(() => resolve())
      for (const session of sessions) session.destroy()
      for (const socket of sockets) socket.destroy()
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

/** The answer cannot be written any more (HTTP/1.1 response or HTTP/2 stream destroyed). */
function closed(res: ServerResponse): boolean {
  return res.destroyed || (res as unknown as Partial<Http2ServerResponse>).stream?.destroyed === true
}

/** `n` bytes of "a" in 64 KiB writes, waiting for 'drain' (so a slow reader slows us down); `cut` ends it after the first. */
function streamBytes(res: ServerResponse, n: number, chunked: boolean, cut?: () => void): void {
  res.writeHead(200, chunked ? { 'content-type': 'application/octet-stream' } : { 'content-type': 'application/octet-stream', 'content-length': n })
  const block = Buffer.alloc(64 * 1024, 0x61)
  let left = n
  const pump = () => {
    while (left > 0) {
      const c = left >= block.length ? block : block.subarray(0, left)
      left -= c.length
      const ok = res.write(c)
      if (cut) {
        cut()
        return
      }
      if (!ok) {
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
