/**
 * The streaming relay of the ActiveSync gateway: one client request to Exchange and its answer
 * back, neither held whole in memory, with backpressure both ways.
 *
 *   client ──uWS onData──▶ RequestBody (Readable, highWaterMark) ──undici──▶ Exchange
 *            ◀─ res.pause() when the Readable is full, res.resume() when undici reads again
 *   (a body declared within bodyHighWaterMark, 64 KiB, is read whole first and sent as one Buffer:
 *   cheaper over HTTP/1.1, where it goes through the proxy's own pool (h1Pool.ts), and over
 *   HTTP/2 what lets it share a connection; activeSyncUpstream.ts)
 *
 *   client ◀──uWS write/tryEnd── Relay (dispatch handler) ◀──────────────── Exchange
 *            controller.pause() when uWS reports backpressure, resume() in onWritable
 *
 * A request body is also bounded in total (`limit`, 413 above). A response with a Content-Length
 * is relayed with `tryEnd` (uWS writes the length and keeps the connection reusable); one without
 * is relayed chunked with `write`. A failure before the status line was sent becomes a 502 or 504
 * answer; after it, the client connection is closed (the client sees a truncated answer, never a
 * wrong one).
 *
 * Measured (test/integration/activeSyncHold.test.ts): uWS does not time out a request whose
 * body was fully received and whose response is pending (a request held 35 s got its answer), nor
 * one paused with res.pause(); so a Ping is bounded only by the upstream client's headers and
 * body timeouts, set to maxHoldSeconds plus a margin.
 */
import { Readable } from 'node:stream'
import type { Dispatcher } from 'undici'
import { UpstreamError, UpstreamTimeoutError } from '../errors.js'
import type { ExchangeUpstream } from './activeSyncUpstream.js'
import * as uws from './uws.js'

/** What the relay reports back to its owner (the gateway). */
export interface RelayEvents {
  /** The client's response can no longer be written (aborted, or answered already). */
  gone(): boolean
  /** Exchange's status line was relayed: from now on failures can only close the connection. */
  started(status: number): void
  /** The response was sent completely (status as relayed). */
  finished(status: number, bytesOut: number): void
  /** Nothing was sent yet and the exchange failed: answer with this error. */
  failed(err: Error): void
  /** The response was cut after it started (the connection was closed). */
  truncated(err: Error): void
  /** Exchange failure kind, for metrics (connect, timeout, reset, too_large, …). */
  upstreamError(kind: string): void
}

/**
 * The request body from uWS, handed to undici either as a Readable (streamed) or, once complete,
 * as one Buffer (whole(): a body declared within the whole-body limit). Until one of the two is
 * asked for, chunks are held; the Readable is made only for a streamed body. Reading from the
 * client pauses while `highWaterMark` bytes wait (uWS `pause()`), so a client uploading faster
 * than Exchange reads costs at most that much memory.
 */
export class RequestBody {
  received = 0
  complete = false
  private paused = false
  private destroyed = false
  private readable: Readable | undefined
  /** Chunks received before the stream or whole() took over. */
  private held: Buffer[] = []
  private heldBytes = 0
  private onWhole: ((body: Buffer) => void) | undefined

  constructor(private readonly res: uws.HttpResponse, private readonly o: {
    limit: number
    highWaterMark: number
    live(): boolean
    onTooLarge(): void
    onBytes(n: number): void
  }) {}

  /** The body as a Readable for undici, made on first use with what arrived so far. */
  get stream(): Readable {
    if (this.readable) return this.readable
    const r = new Readable({ highWaterMark: this.o.highWaterMark, read: () => this.resumeClient() })
    // An error ends the stream for undici; the cause is reported by the owner.
    r.on('error', () => undefined)
    for (const c of this.takeHeld()) r.push(c)
    if (this.complete) r.push(null)
    if (this.destroyed) r.destroy()
    this.readable = r
    return r
  }

  /** Hand one uWS chunk over (copied: uWS reuses its buffer after the callback). */
  push(chunk: ArrayBuffer, isLast: boolean): void {
    // Destroyed by us, or the stream by undici (the upstream request failed).
    if (this.destroyed || this.readable?.destroyed) return
    const n = chunk.byteLength
    this.received += n
    if (this.received > this.o.limit) {
      this.o.onTooLarge()
      return
    }
    if (n > 0) {
      this.o.onBytes(n)
      const copy = uws.copyChunk(chunk)
      let full: boolean
      if (this.readable) {
        full = !this.readable.push(copy)
      } else {
        this.held.push(copy)
        this.heldBytes += n
        full = this.heldBytes > this.o.highWaterMark && this.onWhole === undefined
      }
      if (full && !isLast && this.o.live()) {
        this.paused = true
        this.res.pause()
      }
    }
    if (isLast) {
      this.complete = true
      if (this.readable) this.readable.push(null)
      else if (this.onWhole) this.onWhole(this.concatHeld())
    }
  }

  destroy(err?: Error): void {
    if (this.destroyed) return
    this.destroyed = true
    this.held = []
    this.onWhole = undefined
    this.readable?.destroy(err)
  }

  /** Hand the body over as one Buffer once complete (a small body); never called back if destroyed first. */
  whole(done: (body: Buffer) => void): void {
    if (this.destroyed) return
    if (this.complete) return done(this.concatHeld())
    this.onWhole = done
    this.resumeClient()
  }

  private resumeClient(): void {
    if (this.paused && this.o.live()) {
      this.paused = false
      this.res.resume()
    }
  }

  private takeHeld(): Buffer[] {
    const held = this.held
    this.held = []
    this.heldBytes = 0
    return held
  }

  private concatHeld(): Buffer {
    const held = this.takeHeld()
    return held.length === 1 ? held[0]! : Buffer.concat(held)
  }
}

export interface RelayRequest {
  origin: string
  method: string
  /** Path and query, as sent by the client. */
  path: string
  headers: Record<string, string | string[]>
  body: RequestBody | null
  /** The body's declared Content-Length (undefined: chunked). */
  bodyLength: number | undefined
  /** headersTimeout and bodyTimeout of the upstream request. */
  timeoutMs: number
}

/** Status lines prepared once; upstream reason phrases are used when they are plain text. */
const REASON_RE = /^[\x20-\x7e]{1,64}$/

/** One relayed request. */
export class Relay {
  private controller: Dispatcher.DispatchController | undefined
  private abortReason: Error | undefined
  private status = 0
  private headersSent = false
  private done = false
  /** Response Content-Length (tryEnd path) or undefined (chunked write path). */
  private total: number | undefined
  private bytesOut = 0
  /** tryEnd path: the chunk uWS could not take whole, with the write offset it started at. */
  private pending: { chunk: Buffer; offset: number } | undefined
  private readonly queue: Buffer[] = []
  private ended = false

  constructor(private readonly res: uws.HttpResponse, private readonly ev: RelayEvents, private readonly statusLine: (status: number, reason?: string) => string) {}

  /** Headers of the answer were written to the client. */
  get responding(): boolean {
    return this.headersSent
  }

  start(upstream: ExchangeUpstream, r: RelayRequest): void {
    const body = r.body
    if (body !== null && r.bodyLength !== undefined && r.bodyLength <= upstream.wholeBodyMax) {
      // One write with its length (HTTP/1.1), and over HTTP/2 what lets it share a connection.
      body.whole((whole) => {
        if (!this.abortReason && !this.ev.gone()) this.dispatch(upstream, r, whole)
      })
      return
    }
    this.dispatch(upstream, r, body ? body.stream : null)
  }

  private dispatch(upstream: ExchangeUpstream, r: RelayRequest, body: Readable | Buffer | null): void {
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart: (controller) => {
        this.controller = controller
        if (this.abortReason) controller.abort(this.abortReason)
      },
      onResponseStart: (controller, statusCode, headers, statusMessage) => this.onStart(controller, statusCode, headers, statusMessage),
      onResponseData: (controller, chunk) => this.onData(controller, chunk),
      onResponseEnd: () => this.onEnd(),
      onResponseError: (_controller, err) => this.onError(err),
    }
    upstream.dispatch({
      origin: r.origin, method: r.method as Dispatcher.HttpMethod, path: r.path, headers: r.headers, body,
      headersTimeout: r.timeoutMs, bodyTimeout: r.timeoutMs,
    }, handler)
  }

  /** Abandon the upstream request (client gone, revoked, shutting down, body too large). */
  abort(reason: Error): void {
    if (this.done) return
    this.abortReason ??= reason
    this.controller?.abort(reason)
  }

  private onStart(controller: Dispatcher.DispatchController, status: number, headers: Record<string, string | string[] | undefined>, reason?: string): void {
    // 1xx informational: the real answer follows.
    if (status < 200) return
    if (this.ev.gone()) {
      controller.abort(new UpstreamError('client gone'))
      return
    }
    this.status = status
    const len = headers['content-length']
    const total = typeof len === 'string' && /^\d{1,15}$/.test(len) ? Number(len) : undefined
    this.total = total
    this.headersSent = true
    this.ev.started(status)
    this.res.cork(() => {
      this.res.writeStatus(this.statusLine(status, reason && REASON_RE.test(reason) ? reason : undefined))
      for (const name in headers) {
        const v = headers[name]
        if (v === undefined || RESPONSE_SKIP.has(name)) continue
        if (Array.isArray(v)) for (const one of v) this.res.writeHeader(name, one)
        else this.res.writeHeader(name, v)
      }
    })
  }

  private onData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.done || this.ev.gone()) return
    if (this.total !== undefined && this.bytesOut + chunk.length > this.total) {
      // More than announced: the upstream is broken; never relay past the declared length.
      controller.abort(new UpstreamError('upstream sent more than its Content-Length'))
      return
    }
    this.bytesOut += chunk.length
    if (this.total === undefined) {
      let ok = true
      this.res.cork(() => { ok = this.res.write(chunk) })
      if (!ok) {
        controller.pause()
        this.res.onWritable(() => {
          controller.resume()
          return true
        })
      }
      return
    }
    if (this.pending || this.queue.length > 0) {
      this.queue.push(chunk)
      return
    }
    this.res.cork(() => this.tryWrite(chunk))
  }

  /** tryEnd one chunk; on backpressure keep the rest and pause Exchange until uWS is writable. */
  private tryWrite(chunk: Buffer): void {
    const offset = this.res.getWriteOffset()
    const [ok, done] = this.res.tryEnd(chunk, this.total!)
    if (done) {
      this.complete()
    } else if (!ok) {
      this.pending = { chunk, offset }
      this.controller?.pause()
      this.res.onWritable((at) => this.onWritable(at))
    }
  }

  private onWritable(at: number): boolean {
    const p = this.pending
    if (!p || this.done) return true
    const [ok, done] = this.res.tryEnd(p.chunk.subarray(at - p.offset), this.total!)
    if (done) {
      this.complete()
      return true
    }
    if (!ok) return false
    this.pending = undefined
    while (this.queue.length > 0 && !this.pending && !this.done) this.tryWrite(this.queue.shift()!)
    if (!this.pending && !this.done) {
      if (this.ended) this.truncate(new UpstreamError('upstream answer shorter than its Content-Length'))
      else this.controller?.resume()
    }
    return true
  }

  private onEnd(): void {
    if (this.done) return
    this.ended = true
    if (this.ev.gone()) return
    if (this.total === undefined) {
      this.res.cork(() => this.res.end())
      this.complete()
      return
    }
    if (this.total === 0 && this.bytesOut === 0) {
      // uWS writes "content-length: 0" for an empty end().
      this.res.cork(() => this.res.end())
      this.complete()
      return
    }
    // Data still waiting for the client: onWritable finishes (or finds the answer short).
    if (this.pending || this.queue.length > 0) return
    this.truncate(new UpstreamError('upstream answer shorter than its Content-Length'))
  }

  private onError(err: Error): void {
    if (this.done) return
    this.done = true
    // Ended by the owner (client gone, revoked, body too large, shutdown): it answers itself.
    if (this.abortReason) return
    this.ev.upstreamError(errorKind(err))
    if (this.ev.gone()) return
    const mapped = err instanceof UpstreamError ? err : mapUpstreamError(err)
    if (this.headersSent) {
      this.res.close()
      this.ev.truncated(mapped)
    } else {
      this.ev.failed(mapped)
    }
  }

  private truncate(err: Error): void {
    if (this.done) return
    this.done = true
    this.controller?.abort(err)
    if (!this.ev.gone()) this.res.close()
    this.ev.truncated(err)
  }

  private complete(): void {
    if (this.done) return
    this.done = true
    this.ev.finished(this.status, this.bytesOut)
  }
}

/** Headers of Exchange's answer not relayed: hop-by-hop, and what uWS writes itself. */
const RESPONSE_SKIP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
  'proxy-authenticate', 'content-length', 'date',
])

function errorKind(err: unknown): string {
  const code = (err as { code?: string }).code ?? ''
  switch (code) {
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
      return 'timeout'
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'ECONNREFUSED':
    case 'ENOTFOUND':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'connect'
    case 'UND_ERR_SOCKET':
    case 'ECONNRESET':
    case 'EPIPE':
    case 'ERR_HTTP2_STREAM_ERROR': // HTTP/2: the stream was reset (RST_STREAM), the session ended (GOAWAY), or closed early
    case 'ERR_HTTP2_SESSION_ERROR':
    case 'ERR_HTTP2_GOAWAY_SESSION':
    case 'ERR_HTTP2_STREAM_CANCEL':
    case 'ERR_STREAM_PREMATURE_CLOSE':
    case 'UND_ERR_INFO':
      return 'reset'
    default:
      return err instanceof UpstreamError ? 'protocol' : 'other'
  }
}

function mapUpstreamError(err: unknown): Error {
  const code = (err as { code?: string }).code ?? ''
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') {
    return new UpstreamTimeoutError('Exchange did not answer in time')
  }
  return new UpstreamError('Exchange unavailable')
}
