/**
 * A request envelope read record by record as uWS hands its body over, for bodies larger than
 * STREAM_AFTER_BYTES that were not complete when the session was known (smaller ones are read
 * whole first: the buffered path in server.ts).
 *
 *   uWS onData ─▶ EnvelopeDecoder ─▶ head record authenticated ─▶ timestamp + replay checks
 *                                   ─▶ body records, as they authenticate ─▶ upstream body
 *
 * The upstream request starts once at least one full record of body (64 KiB) authenticated, or
 * with the whole body when the FINAL record came first; from then on plaintext flows into a
 * Readable that undici consumes. A record that fails later, a body cut short or over the limit
 * destroys that Readable: undici drops the connection mid-body, so the upstream sees an aborted
 * request, never a complete one (docs/protocol.md §9).
 *
 * Memory: reading from the device pauses (uWS `res.pause()`) while more than `highWaterMark`
 * bytes of plaintext wait for the upstream, and resumes when undici has read them. Bytes the
 * device still manages to push past that (already in flight) are kept up to `capBytes`; beyond,
 * the request fails with 503 GH_ERR_UPSTREAM_BACKPRESSURE.
 */
import { Readable } from 'node:stream'
import { DecryptError, MalformedError, TruncatedError, UpstreamBackpressureError } from '../errors.js'
import { MAX_RECORD_PLAINTEXT } from '../protocol/constants.js'
import { EnvelopeDecoder, joinedRecords, type Preamble } from '../protocol/envelope.js'
import type { CryptoPool } from './cryptoPool.js'
import { InOrder } from './inOrder.js'

/** Plaintext waiting for the upstream above which reading from the device pauses. */
export const STREAM_HIGH_WATER_BYTES = 256 * 1024
/** Plaintext waiting for the upstream (plus records being opened) above which the request fails (503). */
export const STREAM_BUFFER_CAP_BYTES = 8 * 1024 * 1024
/** Authenticated body plaintext held back before the upstream request starts streaming. */
export const STREAM_START_BYTES = MAX_RECORD_PLAINTEXT
/** Envelope bytes the proxy reads before it streams a body: smaller bodies are read whole first. */
export const STREAM_AFTER_BYTES = MAX_RECORD_PLAINTEXT

export interface RequestStreamOptions {
  sessionId: string
  requestLine: string
  key: Buffer
  pool: CryptoPool | undefined
  /** Pause and resume reading from the device (uWS res.pause / res.resume). */
  pauseDevice(): void
  resumeDevice(): void
  /** The head record authenticated: check timestamp and replay (throw to refuse), then read the head. */
  head(preamble: Preamble, plaintext: Buffer): void
  /** Start the upstream request: null (no body), the whole body, or a stream of it. */
  start(body: Buffer | null | Readable): void
  /** The request failed (the caller answers and abandons the upstream request). */
  fail(err: unknown): void
  highWaterMark?: number
  capBytes?: number
}

interface Opened {
  head: boolean
  /** Opened in the pool: a joined head record, still to be split (the inline decoder splits itself). */
  joined?: boolean
  final: boolean
  plaintext: Buffer
}

export class RequestStream {
  private readonly decoder: EnvelopeDecoder
  private readonly opened: InOrder<Opened>
  private readonly highWaterMark: number
  private readonly capBytes: number
  /** Body plaintext authenticated before the upstream request started. */
  private held: Buffer[] = []
  private heldBytes = 0
  private body: Readable | undefined
  private started = false
  /** Bytes of records handed to the crypto pool and not yet opened. */
  private opening = 0
  private paused = false
  private over = false

  constructor(private readonly o: RequestStreamOptions) {
    this.decoder = new EnvelopeDecoder({ kind: 'request', sessionId: o.sessionId, requestLine: o.requestLine, key: o.key })
    this.opened = new InOrder((r) => this.onRecord(r), (err) => this.fail(err))
    this.highWaterMark = o.highWaterMark ?? STREAM_HIGH_WATER_BYTES
    this.capBytes = o.capBytes ?? STREAM_BUFFER_CAP_BYTES
  }

  /** True once the FINAL record arrived: what may follow on the wire is only HTTP framing. */
  get envelopeComplete(): boolean {
    return this.decoder.done
  }

  /** The device joined its head record (FLAG_JOINED): it reads a joined answer too. */
  get joined(): boolean {
    return this.decoder.joined
  }

  /** True once the upstream request was started (it has to be abandoned on failure). */
  get upstreamStarted(): boolean {
    return this.started
  }

  /** Hand over one chunk of the body. `chunk` may be uWS's own memory: nothing keeps it after return. */
  push(chunk: Buffer, isLast: boolean): void {
    if (this.over) return
    try {
      const pool = this.o.pool
      if (pool) {
        for (const r of this.decoder.pushFramed(chunk)) {
          const opening = pool.open(r.job)
          if (opening instanceof Promise) {
            this.opening += r.length
            this.opened.add(opening.then((plaintext) => {
              this.opening -= r.length
              return { head: r.head, joined: r.joined, final: r.final, plaintext }
            }))
          } else {
            this.opened.add({ head: r.head, joined: r.joined, final: r.final, plaintext: opening })
          }
        }
      } else {
        for (const r of this.decoder.push(chunk)) this.opened.add(r)
      }
      if (isLast) this.decoder.end()
    } catch (err) {
      return this.fail(err)
    }
    this.balance()
  }

  /** Stop: abandon the upstream body (the caller answers). */
  abort(err: Error): void {
    if (this.over) return
    this.over = true
    this.opened.stop()
    this.held = []
    this.body?.destroy(err)
  }

  private onRecord(r: Opened): void {
    if (this.over) return
    try {
      this.take(r)
    } catch (err) {
      return this.fail(err)
    }
    this.balance()
  }

  /** One authenticated record: the head is checked, body plaintext held or streamed on. */
  private take(r: Opened): void {
    if (r.joined) {
      for (const part of joinedRecords(0, r.plaintext, r.final)) this.take(part)
      return
    }
    if (r.head) {
      this.o.head(this.decoder.preamble!, r.plaintext)
      if (r.final) this.begin(null)
      return
    }
    if (this.body) {
      if (r.plaintext.length > 0) this.body.push(r.plaintext)
      if (r.final) this.body.push(null)
      return
    }
    if (r.plaintext.length > 0) {
      this.held.push(r.plaintext)
      this.heldBytes += r.plaintext.length
    }
    if (r.final) {
      this.begin(this.held.length === 1 ? this.held[0]! : Buffer.concat(this.held, this.heldBytes))
      this.held = []
      this.heldBytes = 0
    } else if (this.heldBytes >= STREAM_START_BYTES) {
      this.body = new Readable({ highWaterMark: this.highWaterMark, read: () => this.wanted() })
      // Destroyed with the reason when the request fails; undici reports it as its own error.
      this.body.on('error', () => undefined)
      for (const b of this.held) this.body.push(b)
      this.held = []
      this.heldBytes = 0
      this.begin(this.body)
    }
  }

  private begin(body: Buffer | null | Readable): void {
    this.started = true
    this.o.start(body)
  }

  /**
   * Pause the device while more than the high-water mark waits (plaintext for the upstream, held
   * records, records being opened), resume when it is back under; fail past the cap.
   */
  private balance(): void {
    if (this.over) return
    if (this.decoder.done) {
      // The whole envelope is in: what the device still sends is HTTP framing. Never leave the
      // connection paused (it may carry the next request).
      if (this.paused) {
        this.paused = false
        this.o.resumeDevice()
      }
      return
    }
    const waiting = (this.body?.readableLength ?? 0) + this.heldBytes + this.opening
    if (waiting > this.capBytes) return this.fail(new UpstreamBackpressureError('the upstream reads the body more slowly than it arrives'))
    if (!this.paused && waiting > this.highWaterMark) {
      this.paused = true
      this.o.pauseDevice()
    } else if (this.paused && waiting <= this.highWaterMark) {
      this.paused = false
      this.o.resumeDevice()
    }
  }

  /**
   * undici asks for more: the Readable is below its high-water mark. Resume the device now: a
   * Readable that asked does not ask again before something is pushed.
   */
  private wanted(): void {
    if (!this.paused || this.over) return
    this.paused = false
    this.o.resumeDevice()
  }

  private fail(err: unknown): void {
    if (this.over) return
    this.abort(err instanceof Error ? err : new Error('request failed'))
    this.o.fail(err)
  }
}

/** For gatehouse_proxy_decrypt_failures_total: why the envelope was refused (undefined: not the envelope). */
export function refusalReason(err: unknown): 'auth' | 'truncated' | 'malformed' | undefined {
  if (err instanceof DecryptError) return 'auth'
  if (err instanceof TruncatedError) return 'truncated'
  if (err instanceof MalformedError) return 'malformed'
  return undefined
}
