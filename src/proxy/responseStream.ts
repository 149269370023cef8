/**
 * The upstream's answer sealed record by record and written to the device with backpressure.
 *
 *   undici body chunks ─▶ 64 KiB records ─▶ seal (inline, or in the crypto pool) ─▶ uWS
 *       ▲ controller.pause() while uWS is backpressured or 4 records are being sealed
 *       └ controller.resume() in onWritable
 *
 * A small answer (the whole body within one record) is sent in one piece when it ends, as
 * before: status line, headers and the whole envelope in one corked write. A larger one starts
 * as soon as more than one record of body has arrived: with `tryEnd` and the exact envelope size
 * when the upstream gave a content-length (so the device gets a content-length too), chunked with
 * `write` otherwise.
 *
 * A failure before anything was written is answered as an error (502 / 504). After that the
 * connection is closed without a FINAL record: the device sees the truncation (its decoder
 * requires FINAL), never a shortened body that looks complete.
 */
import { UpstreamError } from '../errors.js'
import {
  MAX_RECORD_PLAINTEXT, RECORD_HEADER_LENGTH, RESPONSE_PREAMBLE_LENGTH, TAG_LENGTH, ENVELOPE_MEDIA_TYPE,
} from '../protocol/constants.js'
import { EnvelopeEncoder, fitsJoined } from '../protocol/envelope.js'
import { RecordSplitter } from '../protocol/recordSplitter.js'
import { encodeResponseHead, type HeaderList } from '../protocol/head.js'
import type { CryptoPool } from './cryptoPool.js'
import { InOrder } from './inOrder.js'
import type { BodyFlow, ResponseSink } from './upstreamTransport.js'
import type * as uws from './uws.js'

/** Records being sealed in the crypto pool at once, per response, before the upstream is paused. */
const MAX_SEALING = 4

export interface ResponseStreamOptions {
  res: uws.HttpResponse
  statusLine(status: number): string
  /** The response envelope: the request's session, line, seq and timestamp, the response salt and key. */
  envelope: ConstructorParameters<typeof EnvelopeEncoder>[0]
  pool: CryptoPool | undefined
  /** proxy.limits.maxResponseBytes: an answer declaring more is refused before any byte is sent. */
  limit: number
  /** The request was HEAD: a content-length describes no body. */
  head: boolean
  /** The request's head record was joined (FLAG_JOINED): a whole small answer is one joined record. Default false. */
  joined?: boolean
  /** The device is gone, or the exchange was answered otherwise: write nothing more. */
  gone(): boolean
  /** False when the connection must close after this response (request body not read to its end). */
  keepAlive(): boolean
  /** Nothing was written and the answer failed: answer this error instead. */
  failed(err: Error): void
  /** The status line was written: from now on a failure can only cut the connection. */
  started(status: number): void
  /** The whole envelope was written. */
  finished(status: number): void
  /** Cut after it started: the caller closes the connection (no FINAL record was sent). */
  cut(err: Error): void
  /** Envelope bytes handed to uWS. */
  sent(bytes: number): void
}

/** Sealed bytes on their way to uWS; `final` marks the FINAL record's. */
interface Sealed {
  bytes: Buffer
  final: boolean
}

export class ResponseStream implements ResponseSink {
  private status = 0
  private headers: HeaderList = []
  private declared: number | undefined
  private flow: BodyFlow | undefined
  private encoder: EnvelopeEncoder | undefined
  private readonly split = new RecordSplitter()
  private bodyBytes = 0
  /** The status line was written. */
  private writing = false
  /** Complete, failed or abandoned: nothing more happens. */
  private done = false
  /** Sealed records in order (made when the first body record is sealed: small answers never need it). */
  private sealed: InOrder<Sealed> | undefined
  /** tryEnd mode: the envelope's exact size; undefined: chunked writes. */
  private total: number | undefined
  /** tryEnd mode: the bytes uWS did not take yet, and the write offset they start at. */
  private pending: { buf: Buffer; offset: number } | undefined
  /** Chunked mode: uWS buffered part of a write (backpressure) until onWritable. */
  private blocked = false
  /** Sealed bytes waiting behind `pending` or `blocked`. */
  private readonly queue: Sealed[] = []
  private paused = false
  private closeAfter = false

  constructor(private readonly o: ResponseStreamOptions) {}

  /** True once the status line was written. */
  get responding(): boolean {
    return this.writing
  }

  start(status: number, headers: HeaderList, declaredLength: number | undefined, flow: BodyFlow): void {
    this.status = status
    this.headers = headers
    this.flow = flow
    this.declared = this.o.head ? undefined : declaredLength
    if (this.declared !== undefined && this.declared > this.o.limit) return flow.abort(new UpstreamError('upstream response too large'))
    this.encoder = new EnvelopeEncoder(this.o.envelope)
  }

  data(chunk: Buffer): void {
    if (this.done) return
    if (this.o.gone()) return this.stop()
    this.bodyBytes += chunk.length
    if (this.declared !== undefined && this.bodyBytes > this.declared) return this.flow!.abort(new UpstreamError('upstream sent more than its content-length'))
    // The FINAL record always carries 1..64 KiB, so the envelope size follows from the content-length.
    for (const record of this.split.push(chunk)) this.seal(record, false)
    this.balance()
  }

  end(): void {
    if (this.done) return
    if (this.o.gone()) return this.stop()
    const rest = this.split.rest()
    if (!this.writing && !(this.o.pool?.takes(rest.length) ?? false)) return this.whole(rest)
    if (this.total !== undefined && this.bodyBytes !== this.declared) return this.error(new UpstreamError('upstream answer shorter than its content-length'))
    this.seal(rest, true)
  }

  error(err: Error): void {
    if (this.done) return
    this.done = true
    this.sealed?.stop()
    this.split.clear()
    if (this.o.gone()) return
    if (this.writing) this.o.cut(err)
    else this.o.failed(err)
  }

  /** The device left, or the exchange was answered otherwise: drop the rest of the answer. */
  private stop(): void {
    if (this.done) return
    this.done = true
    this.sealed?.stop()
    this.split.clear()
    this.flow?.abort(new UpstreamError('response abandoned'))
  }

  /** The whole answer is in and fits one record: one corked write, as for any small answer. */
  private whole(body: Buffer): void {
    const enc = this.encoder!
    const head = encodeResponseHead({ status: this.status, headers: this.headers })
    let out: Buffer
    if (body.length === 0) out = Buffer.concat([enc.preamble, enc.record(head, true)])
    else if (this.o.joined && fitsJoined(head.length, body.length)) out = Buffer.concat([enc.preamble, enc.joined(head, body, true)])
    else out = Buffer.concat([enc.preamble, enc.record(head, false), enc.record(body, true)])
    this.done = true
    this.writing = true
    this.o.started(this.status)
    this.o.sent(out.length)
    const res = this.o.res
    res.cork(() => {
      res.writeStatus(this.o.statusLine(outerStatus(this.status)))
        .writeHeader('content-type', ENVELOPE_MEDIA_TYPE)
        .writeHeader('cache-control', 'no-store')
        .end(out, !this.o.keepAlive())
    })
    this.o.finished(this.status)
  }

  /** Seal one body record; the status line and the head record go out before the first. */
  private seal(plaintext: Buffer, final: boolean): void {
    if (!this.writing) this.begin()
    const pool = this.o.pool
    this.sealed ??= new InOrder<Sealed>(
      (b) => this.write(b),
      (err) => this.error(err instanceof Error ? err : new Error('seal failed')),
      () => this.balance(),
    )
    if (!pool?.takes(plaintext.length)) return this.sealed.add({ bytes: this.encoder!.record(plaintext, final), final })
    const r = pool.seal(this.encoder!.prepare(plaintext, final))
    this.sealed.add(r instanceof Promise ? r.then((bytes) => ({ bytes, final })) : { bytes: r, final })
  }

  /** Status line and headers, then the preamble and the head record. */
  private begin(): void {
    this.writing = true
    const head = this.encoder!.record(encodeResponseHead({ status: this.status, headers: this.headers }), false)
    this.closeAfter = !this.o.keepAlive()
    // uWS ends a tryEnd response by itself and cannot close the connection after it.
    if (this.declared !== undefined && !this.closeAfter) {
      const records = Math.ceil(this.declared / MAX_RECORD_PLAINTEXT)
      this.total = RESPONSE_PREAMBLE_LENGTH + head.length + records * (RECORD_HEADER_LENGTH + TAG_LENGTH) + this.declared
    }
    this.o.started(this.status)
    const res = this.o.res
    res.cork(() => {
      res.writeStatus(this.o.statusLine(outerStatus(this.status)))
        .writeHeader('content-type', ENVELOPE_MEDIA_TYPE)
        .writeHeader('cache-control', 'no-store')
    })
    res.onWritable((offset) => this.onWritable(offset))
    this.write({ bytes: Buffer.concat([this.encoder!.preamble, head]), final: false })
  }

  /** Hand sealed bytes to uWS in order, queueing them while uWS is backpressured. */
  private write(s: Sealed): void {
    if (this.done) return
    if (this.o.gone()) return this.stop()
    if (this.pending || this.blocked || this.queue.length > 0) this.queue.push(s)
    else this.o.res.cork(() => this.put(s))
    this.balance()
  }

  private put(s: Sealed): void {
    this.o.sent(s.bytes.length)
    const res = this.o.res
    if (this.total === undefined) {
      if (!res.write(s.bytes)) this.blocked = true
      if (s.final) {
        // uWS keeps what it could not send yet and flushes it after the terminating chunk.
        res.end(undefined, this.closeAfter)
        this.complete()
      }
      return
    }
    const offset = res.getWriteOffset()
    const [ok, finished] = res.tryEnd(s.bytes, this.total)
    if (finished) this.complete()
    else if (!ok) this.pending = { buf: s.bytes, offset }
  }

  private onWritable(at: number): boolean {
    if (this.done || this.o.gone()) return true
    const p = this.pending
    if (p) {
      const [ok, finished] = this.o.res.tryEnd(p.buf.subarray(at - p.offset), this.total!)
      if (finished) {
        this.complete()
        return true
      }
      if (!ok) return false
      this.pending = undefined
    }
    this.blocked = false
    while (this.queue.length > 0 && !this.pending && !this.blocked && !this.done) this.put(this.queue.shift()!)
    this.balance()
    return true
  }

  private complete(): void {
    if (this.done) return
    this.done = true
    this.o.finished(this.status)
  }

  /** Pause the upstream while uWS is backpressured or the pool holds enough of our records. */
  private balance(): void {
    if (this.done || !this.flow) return
    const full = !!this.pending || this.blocked || this.queue.length > 0 || (this.sealed?.pending ?? 0) >= MAX_SEALING
    if (full && !this.paused) {
      this.paused = true
      this.flow.pause()
    } else if (!full && this.paused) {
      this.paused = false
      this.flow.resume()
    }
  }
}

/**
 * The outer HTTP status of an envelope answer: the upstream's, except for statuses that forbid a
 * body (1xx, 204, 205, 304) — the envelope always has one, so those travel as 200 and the device
 * reads the real status from the authenticated head record (docs/protocol.md).
 */
export function outerStatus(status: number): number {
  return status < 200 || status === 204 || status === 205 || status === 304 ? 200 : status
}
