/**
 * The last N warn/error/fatal log lines of this process, for the admin API's server-log view
 * (`GET /admin/v1/logs/errors`). Fed by the logger (src/observability/logger.ts) with the final
 * serialised line, i.e. after redaction: what is kept here is exactly what went to the log.
 *
 * A fixed-size ring (undici `lib/dispatcher/fixed-queue.js` style): pushing never allocates
 * beyond the entry itself, and the oldest line is overwritten when full.
 *
 *   slots: [ e5 | e6 | e2 | e3 | e4 ]      capacity 5, next = 2 (oldest), size = 5
 *                     ^ next write
 */

export interface RecentLogEntry {
  /** Position in this process's stream of kept lines (1, 2, …): lets a client ask for newer ones. */
  seq: number
  level: 'warn' | 'error' | 'fatal'
  /** ISO time as logged. */
  time: string
  msg: string
  /** The rest of the line (component, event, code, route, err, …), already redacted. */
  fields: Record<string, unknown>
}

const KEPT = /^\{"level":"(warn|error|fatal)"/
/** A single line longer than this is cut before it is parsed (one huge line must not pin memory). */
const MAX_LINE = 16 * 1024

export class RecentErrors {
  readonly capacity: number
  private readonly slots: (RecentLogEntry | undefined)[]
  private next = 0
  private size = 0
  private seq = 0

  constructor(capacity = 500) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError('capacity must be a positive integer')
    this.capacity = capacity
    this.slots = new Array<RecentLogEntry | undefined>(capacity)
  }

  /**
   * Offer one serialised pino line (any level); keeps it when it is warn or worse. Cheap for the
   * lines it drops: one anchored regex test on the line's start, no parse.
   */
  offer(line: string): void {
    const m = KEPT.exec(line)
    if (!m) return
    let fields: Record<string, unknown>
    try {
      const text = line.length > MAX_LINE ? undefined : line
      fields = text ? (JSON.parse(text) as Record<string, unknown>) : { truncated: true }
    } catch {
      return
    }
    const { level: _l, time, msg, pid: _p, hostname: _h, ...rest } = fields
    this.push({
      seq: 0,
      level: m[1] as RecentLogEntry['level'],
      time: typeof time === 'string' ? time : new Date().toISOString(),
      msg: typeof msg === 'string' ? msg : '',
      fields: rest,
    })
  }

  push(e: RecentLogEntry): void {
    e.seq = ++this.seq
    this.slots[this.next] = e
    this.next = (this.next + 1) % this.capacity
    if (this.size < this.capacity) this.size++
  }

  /** Newest first; at most `limit`; only entries with seq > `after` and level in `levels`. */
  list(o: { limit?: number; after?: number; levels?: readonly string[] } = {}): RecentLogEntry[] {
    const limit = o.limit ?? this.capacity
    const out: RecentLogEntry[] = []
    for (let i = 1; i <= this.size && out.length < limit; i++) {
      const e = this.slots[(this.next - i + this.capacity) % this.capacity]!
      if (o.after !== undefined && e.seq <= o.after) break
      if (o.levels && !o.levels.includes(e.level)) continue
      out.push(e)
    }
    return out
  }

  /** Lines kept since start (including those overwritten since). */
  get total(): number {
    return this.seq
  }
}
