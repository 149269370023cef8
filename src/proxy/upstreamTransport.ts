/**
 * Upstream transport: one keep-alive pool per upstream origin (h1Pool.ts: the proxy's own
 * HTTP/1.1 client; streamed uploads go through undici), and one attempt of one request on it. An attempt collects the answer (bounded by maxResponseBytes) and
 * says how it failed, so that the caller can decide on health and retries:
 *
 *   connect  no connection could be made (refused, unreachable, connect timeout): the target is
 *            presumed down, and the request never reached it
 *   reset    the connection broke after the request was written but before any byte of the
 *            answer arrived (the upstream died, or closed a kept-alive connection under us)
 *   timeout  no headers, or a gap in the body, longer than the route's timeoutSeconds
 *   other    anything else (answer over the size limit, aborted by us, invalid request)
 *
 * With a `sink` the answer is not collected: its status, headers and body go to the sink as they
 * arrive (the proxy seals them record by record), and the sink can pause the body (backpressure).
 * A request body may be a Readable (streamed upload); such a request is never retried.
 */
import type { Readable } from 'node:stream'
import type { Dispatcher } from 'undici'
import { UpstreamError, UpstreamTimeoutError } from '../errors.js'
import type { HeaderList } from '../protocol/head.js'
import { H1Pool } from './h1Pool.js'

/** Hop-by-hop headers (RFC 9110 §7.6.1) and ones we set ourselves: never forwarded either way. */
export const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
  'proxy-authenticate', 'proxy-authorization', 'host', 'content-length', 'expect', 'http2-settings',
])

export interface UpstreamResponse {
  status: number
  headers: HeaderList
  body: Buffer
}

export interface ForwardRequest {
  method: string
  path: string
  headers: Record<string, string | string[]>
  /** A Readable streams the body (sent chunked; never retried). */
  body: Buffer | null | Readable
  /** Set by forward(): call it to abandon the upstream request (the device went away). */
  cancel?: () => void
  /** Stream the answer into this instead of collecting it (forward() then resolves at the headers). */
  sink?: ResponseSink
}

/** Controls of an answer's body, handed to a sink. */
export interface BodyFlow {
  pause(): void
  resume(): void
  /** Drop the rest of the answer (the sink then gets error(err)). */
  abort(err: Error): void
}

/** Where a streamed answer goes (ForwardRequest.sink). */
export interface ResponseSink {
  /** Status and headers arrived; `declaredLength` is the upstream's content-length, if any. */
  start(status: number, headers: HeaderList, declaredLength: number | undefined, flow: BodyFlow): void
  data(chunk: Buffer): void
  end(): void
  /** The body failed after start(): the upstream broke, a gap over the timeout, over maxResponseBytes, or aborted. */
  error(err: Error): void
}

const EMPTY = Buffer.alloc(0)

export type FailureKind = 'connect' | 'reset' | 'timeout' | 'other'

/** Errors of the network before a connection existed: the target could not be reached. */
const CONNECT_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN',
  'ENOTFOUND', 'EAI_AGAIN', 'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_SOCKET',
])
/** The connection broke under a request that was written: nothing says whether the upstream acted on it. */
const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET'])
const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])

export function createPool(origin: string, o: { connections: number; connectTimeoutMs: number; ca?: Buffer | undefined }): H1Pool {
  return new H1Pool(origin, { connections: o.connections, connectTimeoutMs: o.connectTimeoutMs, ca: o.ca, keepAliveTimeoutMs: 30_000 })
}

/** What an attempt reports to its owner. */
export interface AttemptOwner<T> {
  /** The status line and headers arrived (the target answered). */
  answered(a: Attempt<T>): void
  /** The attempt is over: `err` undefined means the whole answer is in `a`. */
  ended(a: Attempt<T>, err: Error | undefined, kind: FailureKind | undefined): void
}

/**
 * One request on one target, as a dispatch handler (undici's interface, which h1Pool.ts speaks
 * too): no Readable stream, promise chain or AbortSignal per request (measured with
 * bench/quick.ts, see docs/performance.md). `target` and `probe` are the owner's bookkeeping,
 * carried along so that a late end is still accounted for.
 */
export class Attempt<T> implements Dispatcher.DispatchHandler, UpstreamResponse, BodyFlow {
  status = 0
  headers: HeaderList = []
  /** The whole answer, once it ended. */
  body: Buffer = EMPTY
  private chunks: Buffer[] = []
  private size = 0
  private started = false
  private responded = false
  private over = false
  private controller: Dispatcher.DispatchController | undefined
  private abortWith: Error | undefined
  private sink: ResponseSink | undefined
  private sinking = false

  constructor(
    readonly target: T,
    readonly probe: boolean,
    private readonly limit: number,
    private readonly owner: AttemptOwner<T>,
  ) {}

  /** Send it. Errors of the request itself (invalid header) arrive through onResponseError as well. */
  dispatch(pool: H1Pool, req: ForwardRequest, timeoutMs: number): void {
    this.sink = req.sink
    pool.dispatch({ method: req.method, path: req.path, headers: req.headers, body: req.body, headersTimeout: timeoutMs, bodyTimeout: timeoutMs }, this)
  }

  /** Give up on it. A request still queued in the pool is dropped when it reaches a connection. */
  abort(err: Error): void {
    if (this.over || this.abortWith) return
    this.abortWith = err
    this.controller?.abort(err)
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.started = true
    this.controller = controller
    if (this.abortWith) controller.abort(this.abortWith)
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, h: Record<string, string | string[] | undefined>): void {
    if (statusCode < 200) return // 1xx informational: the real answer follows
    this.responded = true
    this.status = statusCode
    this.headers = toHeaderList(h)
    this.owner.answered(this)
    if (this.sink && !this.abortWith) {
      this.sinking = true
      const len = h['content-length']
      this.sink.start(statusCode, this.headers, typeof len === 'string' && /^\d{1,15}$/.test(len) ? Number(len) : undefined, this)
    }
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.size += chunk.length
    if (this.size > this.limit) {
      controller.abort(new UpstreamError('upstream response too large'))
      return
    }
    if (this.sinking) this.sink!.data(chunk)
    else this.chunks.push(chunk)
  }

  onResponseEnd(): void {
    if (this.over) return
    this.over = true
    this.body = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.size)
    this.chunks = []
    this.owner.ended(this, undefined, undefined)
    if (this.sinking) this.sink!.end()
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.over) return
    this.over = true
    this.chunks = []
    this.owner.ended(this, err, this.classify(err))
    if (this.sinking) this.sink!.error(err)
  }

  /** Sink backpressure: stop reading the answer until resume(). */
  pause(): void {
    if (!this.over) this.controller?.pause()
  }

  resume(): void {
    if (!this.over) this.controller?.resume()
  }

  private classify(err: Error): FailureKind {
    if (err === this.abortWith || err instanceof UpstreamError || err instanceof UpstreamTimeoutError) return 'other'
    const code = (err as { code?: unknown }).code
    if (typeof code !== 'string') return 'other'
    if (TIMEOUT_CODES.has(code)) return 'timeout'
    if (!this.started) return CONNECT_CODES.has(code) ? 'connect' : 'other'
    return !this.responded && RESET_CODES.has(code) ? 'reset' : 'other'
  }
}

/** The typed error a device gets for a failed attempt (our own errors pass through). */
export function upstreamError(err: Error, kind: FailureKind | undefined): Error {
  if (err instanceof UpstreamError || err instanceof UpstreamTimeoutError) return err
  if (kind === 'timeout') return new UpstreamTimeoutError('upstream did not answer in time')
  return new UpstreamError('upstream unavailable')
}

export function toHeaderList(h: Record<string, string | string[] | undefined>): HeaderList {
  const out: HeaderList = []
  for (const name in h) {
    const value = h[name]
    if (value === undefined || HOP_BY_HOP.has(name)) continue
    if (Array.isArray(value)) for (const v of value) out.push([name, v])
    else out.push([name, value])
  }
  return out
}
