/**
 * The requests in flight on the device listener and what is noted about each beside the request
 * path: body progress (the body timeout), bytes both ways and upstream time (the access log), the
 * listener it came in on (a retired listener closes when its requests are done).
 *
 * The body timeout is one sweep every `sweepMs` over the requests still receiving their body,
 * instead of a timer per request (a Map entry per request costs less than setTimeout and
 * clearTimeout). A request fires at most `sweepMs` late: bodyTimeoutSeconds (≤ 7) + 0.5 s stays
 * below the 8 s at which uWebSockets.js cuts a stalled body without an answer.
 */
import type { Listener } from './listeners.js'

/** What the body timeout needs to know of a request (server.ts Exchange). */
export interface BodyState {
  readonly bodyDone: boolean
  readonly finished: boolean
  /** Reading is paused by the proxy itself (upstream backpressure): not the device's fault. */
  readonly paused: boolean
}

export interface RequestNote {
  /** Last body progress (performance.now()); the request start until the first chunk. */
  bodyAt: number
  bytesIn: number
  bytesOut: number
  upstreamMs: number | undefined
  remote: string
  listener: Listener | undefined
}

export class InFlight<X extends BodyState> {
  private readonly notes = new Map<X, RequestNote>()
  private timer: NodeJS.Timeout | undefined

  constructor(private readonly o: { bodyTimeoutMs: () => number; bodyTimedOut: (x: X) => void; sweepMs?: number }) {}

  start(): void {
    this.timer ??= setInterval(() => this.sweep(performance.now()), this.o.sweepMs ?? 500).unref()
  }

  add(x: X, remote: string, listener: Listener | undefined, now = performance.now()): void {
    this.notes.set(x, { bodyAt: now, bytesIn: 0, bytesOut: 0, upstreamMs: undefined, remote, listener })
    if (listener) listener.inflight++
  }

  /** Body bytes arrived (`n` may be 0: the end of the body). */
  body(x: X, n: number, now = performance.now()): void {
    const note = this.notes.get(x)
    if (!note) return
    note.bodyAt = now
    note.bytesIn += n
  }

  sent(x: X, n: number): void {
    const note = this.notes.get(x)
    if (note) note.bytesOut += n
  }

  upstream(x: X, ms: number): void {
    const note = this.notes.get(x)
    if (note) note.upstreamMs = ms
  }

  /** The request is done: its note, for the access log. */
  end(x: X): RequestNote | undefined {
    const note = this.notes.get(x)
    if (!note) return undefined
    this.notes.delete(x)
    if (note.listener) note.listener.inflight--
    return note
  }

  get size(): number {
    return this.notes.size
  }

  /** Fire every request whose body has not progressed for the timeout (tests call it directly). */
  sweep(now: number): void {
    const limit = this.o.bodyTimeoutMs()
    for (const [x, note] of this.notes) {
      if (x.bodyDone || x.finished) continue
      if (x.paused) note.bodyAt = now
      else if (now - note.bodyAt > limit) {
        // Pushed forward so that the request fires once even if expiring does not finish it.
        note.bodyAt = now
        this.o.bodyTimedOut(x)
      }
    }
  }

  close(): void {
    clearInterval(this.timer)
    this.timer = undefined
  }
}
