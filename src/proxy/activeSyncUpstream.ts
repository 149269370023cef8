/**
 * The connections of the ActiveSync gateway to Exchange, HTTP/1.1 or HTTP/2.
 *
 * HTTP/1.1 (default): the proxy's own keep-alive pool (h1Pool.ts; streamed uploads go through
 * undici), one request per connection at a time. A held Ping holds a connection for its whole
 * heartbeat, so the proxy needs two sockets per online mail client.
 *
 * HTTP/2 (`upstreamHttp2`, https only, negotiated by ALPN): requests share connections, up to
 * `maxStreams` at once on each, so 10,000 held Pings need 100 connections to Exchange instead of
 * 10,000. Built on undici `Client`s with `allowH2`, with three workarounds for undici 7.30.2:
 *
 * - A Pool would open a connection per request while its first connection is still being set
 *   up (a client that is connecting counts as busy), so a burst of Pings after a restart would
 *   open one connection each. `Lanes` places requests itself: fill the first connection with
 *   room, open another only when all are full (requests wait at the least loaded connection
 *   once `maxConnections` are open).
 * - undici sends a POST (not idempotent) or a streamed body on a connection only when nothing else
 *   runs on it; behind held Pings that is up to maxHoldSeconds. POSTs are marked idempotent (it
 *   only lets them share the connection: undici retries nothing here), and request bodies that fit
 *   `wholeBodyMax` are read whole first (Ping, Sync, small SendMail). Larger or chunked bodies
 *   stream on a connection of their own (`uploads`, HTTP/2 too, one request per connection).
 * - If ALPN does not select h2, undici would speak HTTP/1.1 on the connection and pipeline held
 *   Pings behind each other. The connection is refused instead (502, and a warning in the log).
 *
 * Known undici behaviour, tested in test/integration/activeSyncHttp2.test.ts: a GOAWAY from
 * Exchange, even a graceful one, ends every request on that connection (the devices get 502, or
 * their answer is cut; the next requests use a new connection); an RST_STREAM ends only its
 * request. undici does not lower its per-connection limit to the SETTINGS_MAX_CONCURRENT_STREAMS
 * Exchange announces: requests above it wait inside the HTTP/2 session, hence `maxStreams` must
 * not exceed it (RFC 9113 §6.5.2 recommends servers allow at least 100).
 */
import type { TLSSocket } from 'node:tls'
import { Readable } from 'node:stream'
import { buildConnector, Client, Pool, type Dispatcher } from 'undici'
import { ConfigError, UpstreamError } from '../errors.js'
import { H1Pool } from './h1Pool.js'

export interface ExchangeUpstream {
  readonly protocol: 'http/1.1' | 'h2'
  /**
   * Request bodies declared this long or shorter are read whole, then sent as one Buffer (over
   * HTTP/2 only those share a connection); -1: every body is streamed as it arrives.
   */
  readonly wholeBodyMax: number
  dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): void
  /** Connections to Exchange open now. */
  connections(): number
  close(): Promise<void>
}

export interface ExchangeUpstreamOptions {
  /** Exchange origin. */
  origin: string
  http2: boolean
  /** PEM CA certificates for an https Exchange (default: the system store). */
  ca?: Buffer | undefined
  /** Most connections (HTTP/1.1: one per request in flight). */
  maxConnections: number
  /** HTTP/2: most requests at once per connection. */
  maxStreams: number
  /** Largest request body read whole and sent as one Buffer (HTTP/2: multiplexed; larger ones stream on their own connection). */
  wholeBodyMax: number
  /** HTTP/2: a connection was refused because ALPN did not select h2. */
  onNoHttp2(): void
}

export function createExchangeUpstream(o: ExchangeUpstreamOptions): ExchangeUpstream {
  if (!o.http2) return new Http1Upstream(o)
  if (!o.origin.startsWith('https:')) throw new ConfigError('ActiveSync: HTTP/2 to Exchange needs an https upstream')
  return new Http2Upstream(o)
}

class Http1Upstream implements ExchangeUpstream {
  readonly protocol = 'http/1.1'
  /**
   * Small bodies are read whole and sent with their Content-Length in one write, not through a
   * stream: 20 % less proxy CPU per 1 KiB Sync and 22 % more Syncs per second (npm run bench:ab
   * -- --scenario activesync, docs/performance.md). A slow client then holds no Exchange connection.
   */
  readonly wholeBodyMax: number
  private readonly pool: H1Pool

  constructor(o: ExchangeUpstreamOptions) {
    this.wholeBodyMax = o.wholeBodyMax
    this.pool = new H1Pool(o.origin, { connections: o.maxConnections, connectTimeoutMs: 10_000, ca: o.ca, keepAliveTimeoutMs: 30_000 })
  }

  dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): void {
    const body = opts.body
    this.pool.dispatch({
      method: opts.method, path: opts.path, headers: opts.headers as Record<string, string | string[]>,
      body: body instanceof Readable || Buffer.isBuffer(body) ? body : null,
      headersTimeout: opts.headersTimeout ?? 300_000, bodyTimeout: opts.bodyTimeout ?? 300_000,
    }, handler)
  }

  connections(): number {
    return this.pool.size
  }

  async close(): Promise<void> {
    await this.pool.destroy().catch(() => undefined)
  }
}

/** One HTTP/2 connection (an undici Client, which reconnects on demand) and its requests in flight. */
interface Lane {
  client: Client
  load: number
}

class Http2Upstream implements ExchangeUpstream {
  readonly protocol = 'h2'
  readonly wholeBodyMax: number
  private readonly lanes: Lane[] = []
  private readonly uploads: Pool
  private readonly clientOptions: Client.Options

  constructor(private readonly o: ExchangeUpstreamOptions) {
    this.wholeBodyMax = o.wholeBodyMax
    const connect = h2Only(o.ca, o.onNoHttp2)
    this.clientOptions = { allowH2: true, connect, pipelining: o.maxStreams, maxConcurrentStreams: o.maxStreams }
    // Streamed bodies: one request per connection (pipelining 1), so undici never holds one back.
    this.uploads = new Pool(o.origin, { allowH2: true, connect, connections: o.maxConnections })
  }

  dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): void {
    const body = opts.body
    if (body !== null && body !== undefined && typeof body !== 'string' && !Buffer.isBuffer(body)) {
      this.uploads.dispatch(opts, handler)
      return
    }
    const lane = this.lane()
    lane.load++
    lane.client.dispatch({ ...opts, idempotent: true }, new Counted(handler, lane))
  }

  /** The first connection with room; a new one when all are full; else the least loaded. */
  private lane(): Lane {
    let least: Lane | undefined
    for (const l of this.lanes) {
      if (l.load < this.o.maxStreams) return l
      if (least === undefined || l.load < least.load) least = l
    }
    if (least === undefined || this.lanes.length < this.o.maxConnections) {
      const lane = { client: new Client(this.o.origin, this.clientOptions), load: 0 }
      this.lanes.push(lane)
      return lane
    }
    return least
  }

  connections(): number {
    let n = this.uploads.stats.connected
    for (const l of this.lanes) if (l.client.stats.connected) n++
    return n
  }

  async close(): Promise<void> {
    await Promise.all([...this.lanes.map((l) => l.client.destroy()), this.uploads.destroy()].map((p) => p.catch(() => undefined)))
  }
}

/** Forwards to the relay's handler; frees the lane's slot once the request is over. */
class Counted implements Dispatcher.DispatchHandler {
  private over = false

  constructor(private readonly h: Dispatcher.DispatchHandler, private readonly lane: Lane) {}

  onRequestStart(controller: Dispatcher.DispatchController, context: unknown): void {
    this.h.onRequestStart?.(controller, context)
  }

  onResponseStart(controller: Dispatcher.DispatchController, status: number, headers: Record<string, string | string[] | undefined>, message?: string): void {
    this.h.onResponseStart?.(controller, status, headers, message)
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.h.onResponseData?.(controller, chunk)
  }

  onResponseEnd(controller: Dispatcher.DispatchController, trailers: Record<string, string | string[] | undefined>): void {
    this.release()
    this.h.onResponseEnd?.(controller, trailers)
  }

  onResponseError(controller: Dispatcher.DispatchController, err: Error): void {
    this.release()
    this.h.onResponseError?.(controller, err)
  }

  private release(): void {
    if (this.over) return
    this.over = true
    this.lane.load--
  }
}

/** undici's TLS connector (it offers http/1.1 and h2): a connection where ALPN did not select h2 is refused. */
function h2Only(ca: Buffer | undefined, onRefused: () => void): buildConnector.connector {
  const base = buildConnector({ ...(ca ? { ca } : {}), allowH2: true })
  return (opts, callback) => base(opts, (...args) => {
    const [err, socket] = args
    if (err !== null) {
      callback(err, null)
      return
    }
    if ((socket as TLSSocket).alpnProtocol !== 'h2') {
      socket.destroy()
      onRefused()
      callback(new UpstreamError('Exchange did not negotiate HTTP/2'), null)
      return
    }
    callback(null, socket)
  })
}
