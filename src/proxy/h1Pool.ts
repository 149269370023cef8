/**
 * A keep-alive pool of HTTP/1.1 connections to one upstream origin, for requests whose body is
 * whole in memory (or absent): the proxy's common case. It speaks to the same dispatch-handler
 * interface as undici (onRequestStart, onResponseStart, onResponseData, onResponseEnd,
 * onResponseError and a controller with abort/pause/resume), so upstreamTransport.ts's Attempt
 * works with either. A request with a streamed (Readable) body goes to an undici Pool this pool
 * keeps for them, which frames and backpressures uploads.
 *
 * Why not undici for everything: per request, undici builds a Request (header validation and
 * normalisation, diagnostics channels), passes through handler wrappers and the llhttp wasm
 * boundary several times; bench:ab measured this pool at −14 % proxy CPU per 1 KiB round trip
 * and −36 % per ActiveSync Sync (docs/performance.md, "Changes made by measurement"). What it
 * does is the minimum a forwarding proxy needs:
 *
 *   dispatch ─▶ idle connection (LIFO: the warmest) │ new one (up to `connections`) │ FIFO queue
 *     ─▶ onRequestStart ─▶ request head + body in one write ─▶ H1ResponseParser ─▶ handler
 *     ─▶ complete and reusable: next queued request, or idle │ anything else: connection closed
 *
 * Errors carry undici's codes so that the transport classifies both alike: connect failures
 * (ECONNREFUSED…, UND_ERR_CONNECT_TIMEOUT), a connection lost under a written request
 * (UND_ERR_SOCKET, ECONNRESET), UND_ERR_HEADERS_TIMEOUT and UND_ERR_BODY_TIMEOUT. Timeouts are
 * checked by one coarse sweep per pool (every 250 ms), not a timer per request; a request's
 * precise deadline is its Forwarding's (upstreams.ts).
 */
import net from 'node:net'
import { Readable } from 'node:stream'
import tls from 'node:tls'
import { Pool, type Dispatcher } from 'undici'
import { UpstreamError } from '../errors.js'
import { BAD_FIELD_VALUE_RE as BAD_VALUE_RE, TOKEN_RE } from '../protocol/head.js'
import { H1ResponseParser } from './h1Response.js'

/** The part of undici's DispatchHandler this pool calls. */
export interface H1Handler {
  onRequestStart?(controller: Dispatcher.DispatchController, context: unknown): void
  onResponseStart?(controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>, statusMessage?: string): void
  onResponseData?(controller: Dispatcher.DispatchController, chunk: Buffer): void
  onResponseEnd?(controller: Dispatcher.DispatchController, trailers: Record<string, string | string[] | undefined>): void
  onResponseError?(controller: Dispatcher.DispatchController, error: Error): void
}

export interface H1DispatchOptions {
  method: string
  path: string
  headers: Record<string, string | string[]>
  body: Buffer | null | Readable
  /** From the write of the request to the end of the answer's head. */
  headersTimeout: number
  /** Longest gap between two reads of the answer's body (not counted while paused). */
  bodyTimeout: number
}

export interface H1PoolOptions {
  connections: number
  connectTimeoutMs: number
  /** Trust for an https origin. */
  ca?: Buffer | undefined
  /** An idle connection is closed after this long, or sooner when the upstream's keep-alive hint says so. */
  keepAliveTimeoutMs?: number
  maxHeaderBytes?: number
}

const SWEEP_MS = 250
/** Close an idle connection this much before the upstream's announced keep-alive timeout. */
const KEEP_ALIVE_MARGIN_MS = 1000
/** What undici accepts in a request target. */
const BAD_PATH_RE = /[^\x21-\xff]/
const KEEP_ALIVE_TIMEOUT_RE = /timeout=(\d{1,9})/
/** Bodies up to this size are copied behind the head for one write; larger ones go in a corked second write. */
const COPY_BODY_BYTES = 16 * 1024
/** undici sends content-length: 0 for these methods when there is no body. */
const EXPECTS_PAYLOAD = new Set(['POST', 'PUT', 'PATCH', 'QUERY'])

/**
 * A caller's header the pool writes itself, in any case: undici compared these names
 * case-insensitively, and a 'Content-Length' let through would send two lengths (a smuggling
 * vector). Only names of these lengths are lower-cased.
 */
function isFraming(name: string): boolean {
  const n = name.length
  if (n !== 4 && n !== 10 && n !== 14 && n !== 17) return false
  const l = name.toLowerCase()
  return l === 'host' || l === 'connection' || l === 'content-length' || l === 'transfer-encoding'
}

class PoolError extends Error {
  constructor(message: string, readonly code: string) {
    super(message)
  }
}

/** One request: its handler, and the controller the handler holds. */
class Job implements Dispatcher.DispatchController {
  conn: Conn | undefined
  aborted = false
  paused = false
  reason: Error | null = null
  /** onResponseEnd or onResponseError was called. */
  over = false
  /** The request was written: a lost connection is no longer a connect failure. */
  written = false
  /** The request head was built and checked (dispatch). */
  head = ''

  constructor(
    readonly pool: H1Pool,
    readonly o: H1DispatchOptions,
    readonly handler: H1Handler,
  ) {}

  abort(reason: Error): void {
    if (this.over || this.aborted) return
    this.aborted = true
    this.reason = reason
    this.pool.aborted(this, reason)
  }

  pause(): void {
    if (this.over || this.paused) return
    this.paused = true
    this.conn?.socket.pause()
  }

  resume(): void {
    if (this.over || !this.paused) return
    this.paused = false
    if (this.conn) {
      this.conn.lastRead = Date.now()
      this.conn.socket.resume()
    }
  }
}

/** One connection and the request it carries. */
interface Conn {
  socket: net.Socket
  connected: boolean
  job: Job | undefined
  /** One per connection, reset for each request; its events go to `job` (none when it is gone). */
  parser: H1ResponseParser
  /** Last read of the answer (body timeout), or the write of the request (headers timeout). */
  lastRead: number
  /** Idle since (keep-alive expiry). */
  idleSince: number
  /** The upstream's keep-alive hint, minus a margin; -1: none given. */
  keepAliveMs: number
  /** Set by the parser's end, acted on after the read (onData). */
  reusable: boolean
  /**
   * The request carried a body with a method that has no defined body semantics (GET, DELETE,
   * OPTIONS…): an upstream that ignores such bodies would read it as a next request, so the
   * connection is not reused (as undici does).
   */
  noReuse: boolean
}

export class H1Pool {
  private readonly host: string
  private readonly port: number
  private readonly secure: boolean
  private readonly idle: Conn[] = []
  private readonly conns = new Set<Conn>()
  /** Requests waiting for a connection, FIFO (`head` indexes the first). */
  private queue: Job[] = []
  private queueHead = 0
  private sweeper: NodeJS.Timeout | undefined
  private closing: { resolve: () => void; promise: Promise<void> } | undefined
  private destroyed = false
  private established = 0
  /** Streamed uploads go through undici (made on first use). */
  private streams: Pool | undefined
  private readonly keepAliveMs: number
  private readonly maxHeaderBytes: number
  private readonly hostHeader: string

  constructor(
    private readonly origin: string,
    private readonly o: H1PoolOptions,
  ) {
    const u = new URL(origin)
    this.secure = u.protocol === 'https:'
    this.host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname
    this.port = u.port ? Number(u.port) : this.secure ? 443 : 80
    this.hostHeader = u.host
    this.keepAliveMs = o.keepAliveTimeoutMs ?? 30_000
    this.maxHeaderBytes = o.maxHeaderBytes ?? 16 * 1024
  }

  /** Connections established (not those still connecting), with those of streamed uploads. */
  get size(): number {
    return this.established + (this.streams?.stats.connected ?? 0)
  }

  dispatch(o: H1DispatchOptions, handler: H1Handler): boolean {
    if (o.body instanceof Readable) {
      this.streams ??= new Pool(this.origin, {
        connections: this.o.connections, pipelining: 1, keepAliveTimeout: this.keepAliveMs,
        connect: this.o.ca ? { timeout: this.o.connectTimeoutMs, ca: this.o.ca } : { timeout: this.o.connectTimeoutMs },
      })
      return this.streams.dispatch({ ...o, origin: this.origin, method: o.method as Dispatcher.HttpMethod }, handler as Dispatcher.DispatchHandler)
    }
    const job = new Job(this, o, handler)
    if (this.destroyed || this.closing) {
      this.fail(job, new PoolError('the upstream pool is closed', 'UND_ERR_CLOSED'))
      return false
    }
    try {
      job.head = this.requestHead(o)
    } catch (err) {
      this.fail(job, err as Error)
      return false
    }
    const conn = this.idle.pop()
    if (conn) this.run(conn, job)
    else {
      this.queue.push(job)
      if (this.conns.size < this.o.connections) this.connect()
    }
    return true
  }

  /** Wait for the requests in flight and queued, then close every connection. */
  close(): Promise<void> {
    if (!this.closing) {
      let resolve!: () => void
      const promise = new Promise<void>((r) => { resolve = r })
      this.closing = { resolve, promise }
      this.settle()
    }
    return Promise.all([this.closing.promise, this.streams?.close()]).then(() => undefined)
  }

  /** Fail whatever is queued or in flight and close every connection now. */
  async destroy(): Promise<void> {
    this.destroyed = true
    const err = new PoolError('the upstream pool was destroyed', 'UND_ERR_DESTROYED')
    for (const job of this.queue.splice(this.queueHead)) this.fail(job, err)
    this.queue = []
    this.queueHead = 0
    for (const c of [...this.conns]) {
      const job = c.job
      this.drop(c)
      if (job) this.fail(job, err)
    }
    this.settle()
    await this.streams?.destroy()
  }

  /** Called by Job.abort. */
  aborted(job: Job, reason: Error): void {
    // A handler holds the controller from onRequestStart on: the job has its connection until
    // its answer ended or failed, and then abort() does nothing.
    const c = job.conn
    job.conn = undefined
    if (c) c.job = undefined
    if (c && job.written) {
      // Mid-exchange: the connection's state is unknown, so it is not reused.
      this.drop(c)
      this.refill()
    }
    // Not written (aborted in onRequestStart: a request abandoned while it was queued): the
    // connection is clean, and run() hands it on.
    this.fail(job, reason)
    this.settle()
  }

  private requestHead(o: H1DispatchOptions): string {
    if (!TOKEN_RE.test(o.method)) throw new UpstreamError('invalid request method')
    if (o.path.length === 0 || BAD_PATH_RE.test(o.path)) throw new UpstreamError('invalid request path')
    let head = `${o.method} ${o.path} HTTP/1.1\r\nhost: ${this.hostHeader}\r\nconnection: keep-alive\r\n`
    const h = o.headers
    for (const name in h) {
      const v = h[name]!
      // Framing is ours: the body's own length (never a caller's), and no hop-by-hop headers.
      if (isFraming(name)) continue
      if (!TOKEN_RE.test(name)) throw new UpstreamError('invalid request header name')
      if (typeof v === 'string') {
        if (BAD_VALUE_RE.test(v)) throw new UpstreamError('invalid request header value')
        head += `${name}: ${v}\r\n`
      } else {
        for (const x of v) {
          if (BAD_VALUE_RE.test(x)) throw new UpstreamError('invalid request header value')
          head += `${name}: ${x}\r\n`
        }
      }
    }
    const body = o.body as Buffer | null
    if (body) head += `content-length: ${body.length}\r\n`
    else if (EXPECTS_PAYLOAD.has(o.method)) head += 'content-length: 0\r\n'
    return head + '\r\n'
  }

  private connect(): void {
    const conn: Conn = {
      socket: undefined as unknown as net.Socket, connected: false, job: undefined, parser: undefined as unknown as H1ResponseParser,
      lastRead: Date.now(), idleSince: 0, keepAliveMs: -1, reusable: false, noReuse: false,
    }
    // Events go to the connection's current job: one parser and three closures per connection,
    // not per request. A job aborted in the middle of a read is detached (job undefined) and
    // hears nothing more.
    conn.parser = new H1ResponseParser(false, { maxHeaderBytes: this.maxHeaderBytes }, {
      head: (status, headers, reason) => {
        if (conn.job) this.onHead(conn, conn.job, status, headers, reason)
      },
      data: (chunk) => {
        const job = conn.job
        if (job && !job.over) job.handler.onResponseData?.(job, chunk)
      },
      end: (reusable) => {
        if (conn.job) this.onComplete(conn, conn.job, reusable)
      },
    })
    const socket = this.secure
      ? tls.connect({ host: this.host, port: this.port, servername: net.isIP(this.host) ? undefined : this.host, ca: this.o.ca, ALPNProtocols: ['http/1.1'] })
      : net.connect({ host: this.host, port: this.port })
    conn.socket = socket
    this.conns.add(conn)
    this.startSweeper()
    socket.setNoDelay(true)
    const timer = setTimeout(() => socket.destroy(new PoolError('connect timeout', 'UND_ERR_CONNECT_TIMEOUT')), this.o.connectTimeoutMs)
    socket.once(this.secure ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer)
      conn.connected = true
      this.established++
      this.next(conn)
    })
    socket.on('data', (chunk: Buffer) => this.onData(conn, chunk))
    socket.on('end', () => this.onEnd(conn))
    socket.on('error', (err) => this.onLost(conn, err))
    socket.on('close', () => {
      clearTimeout(timer)
      this.onLost(conn, new PoolError('other side closed', 'UND_ERR_SOCKET'))
    })
  }

  /** A connection is free: take the next queued request, or wait idle. */
  private next(conn: Conn): void {
    if (!this.conns.has(conn)) return
    const job = this.take()
    if (job) return this.run(conn, job)
    if (this.closing || this.destroyed) {
      this.drop(conn)
      return this.settle()
    }
    conn.idleSince = Date.now()
    // An idle keep-alive connection does not keep the process alive (ref() again in run()).
    conn.socket.unref()
    this.idle.push(conn)
  }

  private take(): Job | undefined {
    if (this.queueHead >= this.queue.length) return undefined
    const job = this.queue[this.queueHead]!
    this.queue[this.queueHead++] = undefined as unknown as Job
    if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.queueHead)
      this.queueHead = 0
    }
    return job
  }

  private run(conn: Conn, job: Job): void {
    job.conn = conn
    conn.job = job
    job.handler.onRequestStart?.(job, {})
    if (job.aborted) return this.next(conn) // aborted in onRequestStart: nothing was written
    conn.parser.reset(job.o.method === 'HEAD')
    conn.lastRead = Date.now()
    job.written = true
    const body = job.o.body as Buffer | null
    conn.noReuse = body !== null && body.length > 0 && !EXPECTS_PAYLOAD.has(job.o.method)
    conn.socket.ref()
    if (!body || body.length === 0) conn.socket.write(job.head, 'latin1')
    else if (body.length <= COPY_BODY_BYTES) {
      // Head and body in one buffer: one write, one syscall.
      const out = Buffer.allocUnsafe(job.head.length + body.length)
      out.write(job.head, 0, 'latin1')
      body.copy(out, job.head.length)
      conn.socket.write(out)
    } else {
      conn.socket.cork()
      conn.socket.write(job.head, 'latin1')
      conn.socket.write(body)
      conn.socket.uncork()
    }
    if (job.paused) conn.socket.pause()
  }

  private onHead(conn: Conn, job: Job, status: number, headers: Record<string, string | string[]>, reason: string): void {
    const hint = headers['keep-alive']
    if (typeof hint === 'string') {
      const m = KEEP_ALIVE_TIMEOUT_RE.exec(hint)
      if (m) conn.keepAliveMs = Math.max(0, Number(m[1]) * 1000 - KEEP_ALIVE_MARGIN_MS)
    }
    if (job.over || job.aborted) return
    job.handler.onResponseStart?.(job, status, headers, reason)
  }

  /** The parser's end: the handler hears of it now; the connection's fate is decided after the read. */
  private onComplete(conn: Conn, job: Job, reusable: boolean): void {
    conn.job = undefined
    // A keep-alive hint of timeout=1 or less (after the margin: 0) means: do not reuse.
    conn.reusable = reusable && conn.keepAliveMs !== 0
    job.conn = undefined
    if (!job.over && !job.aborted) {
      job.over = true
      job.handler.onResponseEnd?.(job, {})
    }
  }

  private onData(conn: Conn, chunk: Buffer): void {
    const parser = conn.parser
    if (!conn.job) {
      // Bytes with no request outstanding: the upstream is confused; never reuse this connection.
      this.drop(conn)
      return this.refill()
    }
    let extra: Buffer | undefined
    try {
      extra = parser.execute(chunk)
    } catch (err) {
      return this.lose(conn, err as Error)
    }
    // Only reads from the head's end on restart the clock: the head must be whole within
    // headersTimeout of the write (as undici's), however slowly an upstream trickles it in.
    if (parser.started) conn.lastRead = Date.now()
    if (!parser.complete || !this.conns.has(conn)) return
    // Bytes past the end of the answer (we never pipeline): nothing more is read from here.
    if (!conn.reusable || conn.noReuse || (extra && extra.length > 0) || this.destroyed) {
      this.drop(conn)
      this.refill()
      return this.settle()
    }
    // Paused by the handler to the end: reading resumes for the next answer.
    conn.socket.resume()
    this.next(conn)
  }

  private onEnd(conn: Conn): void {
    // Closed before the connection was made (an https origin that accepts and closes before the
    // handshake ends: a port published with nothing behind it, a server at its limit): a failed
    // connect, not a free slot to reconnect into (that looped at ~1,000 connects a second).
    if (!conn.connected) return this.lose(conn, new PoolError('other side closed before the connection was made', 'ECONNRESET'))
    const parser = conn.parser
    if (conn.job) {
      try {
        // Completes an answer that runs to the end of the connection.
        parser.close()
      } catch {
        // Closed under a written request: with no byte of answer yet, the transport retries an
        // idempotent request elsewhere (a kept-alive connection the upstream closed, or its death).
        return this.lose(conn, new PoolError(parser.started ? 'upstream closed the connection in the middle of the answer' : 'other side closed', 'UND_ERR_SOCKET'))
      }
    }
    this.drop(conn)
    this.refill()
    this.settle()
  }

  /** The connection broke, or its answer failed to parse: fail its request, forget it. */
  private onLost(conn: Conn, err: Error): void {
    if (!this.conns.has(conn)) return
    this.lose(conn, err)
  }

  private lose(conn: Conn, err: Error): void {
    const job = conn.job
    const wasConnected = conn.connected
    conn.job = undefined
    this.drop(conn)
    if (job) {
      job.conn = undefined
      this.fail(job, err)
    }
    if (!wasConnected) {
      if (this.conns.size === 0) {
        // No connection left, none being made: the target is down for everything queued, and
        // the transport retries those requests elsewhere (reconnecting for them would churn
        // until their deadline).
        for (let j = this.take(); j; j = this.take()) this.fail(j, err)
      } else {
        // Other connections are up or being made: as with undici, one failed connect fails one
        // request; the others wait for a connection (one more is made below if there is room).
        const j = this.take()
        if (j) this.fail(j, err)
      }
    }
    this.refill()
    this.settle()
  }

  private drop(conn: Conn): void {
    if (!this.conns.delete(conn)) return
    if (conn.connected) this.established--
    const i = this.idle.indexOf(conn)
    if (i >= 0) this.idle.splice(i, 1)
    conn.socket.destroy()
    if (this.conns.size === 0) this.stopSweeper()
  }

  /** Requests still queued need a connection. */
  private refill(): void {
    if (!this.destroyed && this.queueHead < this.queue.length && this.conns.size < this.o.connections) this.connect()
  }

  private fail(job: Job, err: Error): void {
    if (job.over) return
    job.over = true
    job.handler.onResponseError?.(job, err)
  }

  /** close(): resolved once nothing is queued or in flight. */
  private settle(): void {
    if (!this.closing) return
    if (this.queueHead < this.queue.length) return
    for (const c of this.conns) if (c.job) return
    for (const c of [...this.conns]) this.drop(c)
    this.closing.resolve()
  }

  private startSweeper(): void {
    if (this.sweeper) return
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS)
    this.sweeper.unref()
  }

  private stopSweeper(): void {
    clearInterval(this.sweeper)
    this.sweeper = undefined
  }

  /** Timeouts of requests in flight, expiry of idle connections. */
  private sweep(): void {
    const now = Date.now()
    let late: Conn[] | undefined
    let expired: Conn[] | undefined
    // Collected first, acted on after: dropping changes the set. 10,000 held ActiveSync Pings
    // make this loop 10,000 steps, about 0.1 ms, four times a second.
    for (const c of this.conns) {
      const job = c.job
      if (job) {
        if (job.paused) continue
        const limit = c.parser.started ? job.o.bodyTimeout : job.o.headersTimeout
        if (limit > 0 && now - c.lastRead > limit) (late ??= []).push(c)
      } else if (c.connected && now - c.idleSince > (c.keepAliveMs >= 0 ? Math.min(c.keepAliveMs, this.keepAliveMs) : this.keepAliveMs)) {
        (expired ??= []).push(c)
      }
    }
    for (const c of late ?? []) {
      this.lose(c, c.parser.started ? new PoolError('body timeout', 'UND_ERR_BODY_TIMEOUT') : new PoolError('headers timeout', 'UND_ERR_HEADERS_TIMEOUT'))
    }
    // A late job's handler may have dispatched again and taken one of these meanwhile.
    for (const c of expired ?? []) if (!c.job) this.drop(c)
  }
}
