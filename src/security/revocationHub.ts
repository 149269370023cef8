/**
 * The revocation hub: every revocation is appended to the store's revocation log, then pushed at
 * once to every subscriber (the proxies' revocation streams, routes/revocationStream.ts).
 *
 *   revoke…() ─▶ store.appendRevocation ─▶ pump ─▶ subscriber 1 (proxy A's stream)
 *                                          │   └─▶ subscriber 2 (proxy B's stream)
 *   poll timer (other servers' appends) ───┘
 *
 * The pump delivers the log in seq order, each record once: it reads `revocationsSince(delivered)`
 * from the store rather than forwarding what this process appended, so records appended by another
 * security server on the same PostgreSQL database reach this server's proxies too (at the next
 * poll). Pumps run one at a time (a promise chain); the store serialises appends, so a record
 * becomes visible only after every smaller seq (src/store/queries/revocations.ts).
 *
 * The hub only records and tells: callers change the state first (close the sessions, revoke the
 * enrollment, lock the device) and call the hub after, so that a proxy which drops a session and
 * asks again gets "not valid".
 */
import { RevocationGapError, UnavailableError } from '../errors.js'
import type { Logger } from '../observability/logger.js'
import type { RevocationKind, RevocationRecord, RevocationStore } from '../store/types.js'

export interface RevocationHubOptions {
  store: RevocationStore
  log: Logger
  now?: () => number
  /** How often the log is read for records appended elsewhere (another security server). Default 1000 ms; 0 = never. */
  pollIntervalMs?: number
  /** Records read per store query while replaying or pumping. Default 500. */
  pageSize?: number
  /** Interval of the heartbeat line on each revocation stream. Default 10 000 ms. */
  heartbeatIntervalMs?: number
}

/** One follower of the log; `cursor` is the highest seq it has been given (or skipped past). */
export interface RevocationSubscription {
  readonly cursor: number
  close(): void
}

type OnRecord = (r: RevocationRecord) => void

interface Subscriber {
  cursor: number
  /** Live records that arrived while the store replay was running; delivered after it. */
  pending: RevocationRecord[] | undefined
  onRecord: OnRecord
  closed: boolean
}

/** Separator of the device target: "<user>\u0000<deviceId>" (NUL cannot occur in either). */
export const DEVICE_TARGET_SEPARATOR = '\u0000'

export class RevocationHub {
  private readonly subscribers = new Set<Subscriber>()
  /** Highest seq handed to the subscribers; undefined until the first pump read the log's end. */
  private delivered: number | undefined
  private chain: Promise<void> = Promise.resolve()
  private pollTimer: NodeJS.Timeout | undefined
  private closed = false
  private readonly pageSize: number
  readonly heartbeatIntervalMs: number

  constructor(private readonly o: RevocationHubOptions) {
    this.pageSize = o.pageSize ?? 500
    this.heartbeatIntervalMs = o.heartbeatIntervalMs ?? 10_000
  }

  /** Read the end of the log and start polling for records appended by other servers. */
  async start(): Promise<void> {
    await this.pump()
    const every = this.o.pollIntervalMs ?? 1000
    if (every > 0 && !this.pollTimer) {
      this.pollTimer = setInterval(() => {
        if (this.subscribers.size > 0) this.pump().catch((err: unknown) => this.o.log.error({ err }, 'revocation poll failed'))
      }, every).unref()
    }
  }

  /** Stop polling and drop every subscriber (their streams are ended by the server). */
  close(): void {
    this.closed = true
    clearInterval(this.pollTimer)
    this.pollTimer = undefined
    for (const s of this.subscribers) s.closed = true
    this.subscribers.clear()
  }

  get subscriberCount(): number {
    return this.subscribers.size
  }

  /** A session ended: `sessionIdHash` is the SHA-256 (hex) of its id, as the store keys it. */
  revokeSession(sessionIdHash: string): Promise<number> {
    return this.append('session', sessionIdHash)
  }

  revokeEnrollment(enrollmentId: string): Promise<number> {
    return this.append('enrollment', enrollmentId)
  }

  revokeDevice(userName: string, deviceId: string): Promise<number> {
    return this.append('device', `${userName}${DEVICE_TARGET_SEPARATOR}${deviceId}`)
  }

  revokeUser(userName: string): Promise<number> {
    return this.append('user', userName)
  }

  /** A policy changed: proxies drop every cached session (re-validated on next use). */
  policyChanged(policyId: string): Promise<number> {
    return this.append('policy', policyId)
  }

  /** Appends, then resolves once the record has been handed to every subscriber. */
  private async append(kind: RevocationKind, target: string): Promise<number> {
    const seq = await this.o.store.appendRevocation(kind, target, this.o.now ? this.o.now() : Date.now())
    await this.pump()
    return seq
  }

  /**
   * Follow the log from `sinceSeq` (exclusive): the stored records after it, then live ones, in
   * seq order without gaps or repeats. `sinceSeq` undefined = from now on (live records only).
   * Throws RevocationGapError when record `sinceSeq` is not in the log (truncated, or a different
   * database): the follower cannot know what it missed.
   */
  async subscribe(sinceSeq: number | undefined, onRecord: OnRecord): Promise<RevocationSubscription> {
    if (this.closed) throw new UnavailableError('shutting down')
    // The pump must know where the log ended before anyone follows it, or it would skip records
    // appended between a replay and its first run.
    if (this.delivered === undefined) await this.enqueue(async () => { await this.ensureDelivered() })
    if (sinceSeq !== undefined && sinceSeq > 0) {
      const first = await this.o.store.revocationsSince(sinceSeq - 1, 1)
      if (first[0]?.seq !== sinceSeq) throw new RevocationGapError(`revocation log has no entry ${sinceSeq}`)
    }
    if (sinceSeq === undefined) {
      // Registered inside the pump chain, so `delivered` cannot move while we read it.
      return new Promise((resolve, reject) => {
        this.enqueue(async () => {
          await this.ensureDelivered()
          if (this.closed) throw new UnavailableError('shutting down')
          const sub: Subscriber = { cursor: this.delivered!, pending: undefined, onRecord, closed: false }
          this.subscribers.add(sub)
          resolve(this.handle(sub))
        }).catch(reject)
      })
    }
    // Registered before the replay so that nothing pumped meanwhile is missed; live records are
    // held in `pending` and delivered after the replay, skipping what the replay already gave.
    const sub: Subscriber = { cursor: sinceSeq, pending: [], onRecord, closed: false }
    this.subscribers.add(sub)
    try {
      for (;;) {
        const page = await this.o.store.revocationsSince(sub.cursor, this.pageSize)
        for (const r of page) this.give(sub, r)
        if (page.length < this.pageSize || sub.closed) break
      }
    } catch (err) {
      this.subscribers.delete(sub)
      throw err
    }
    if (this.closed) throw new UnavailableError('shutting down')
    const held = sub.pending!
    sub.pending = undefined
    for (const r of held) this.give(sub, r)
    return this.handle(sub)
  }

  private handle(sub: Subscriber): RevocationSubscription {
    return {
      get cursor() { return sub.cursor },
      close: () => {
        sub.closed = true
        this.subscribers.delete(sub)
      },
    }
  }

  /** Deliver one record to one subscriber unless it already has it. */
  private give(sub: Subscriber, r: RevocationRecord): void {
    if (sub.closed || r.seq <= sub.cursor) return
    sub.cursor = r.seq
    try {
      sub.onRecord(r)
    } catch (err) {
      this.o.log.error({ err }, 'revocation subscriber failed')
    }
  }

  /** Hand every record after `delivered` to the subscribers; runs one at a time. */
  private pump(): Promise<void> {
    return this.enqueue(async () => {
      if (await this.ensureDelivered()) return
      for (;;) {
        const page = await this.o.store.revocationsSince(this.delivered!, this.pageSize)
        for (const r of page) {
          this.delivered = r.seq
          for (const sub of this.subscribers) {
            if (sub.pending) sub.pending.push(r)
            else this.give(sub, r)
          }
        }
        if (page.length < this.pageSize) return
      }
    })
  }

  /** First use: start from the end of the log (nobody subscribed before, so nothing is owed). True when it just did. */
  private async ensureDelivered(): Promise<boolean> {
    if (this.delivered !== undefined) return false
    this.delivered = await this.o.store.latestRevocationSeq()
    return true
  }

  private enqueue(task: () => Promise<void>): Promise<void> {
    const run = this.chain.then(task)
    // The chain survives a failed task; the caller still sees the failure.
    this.chain = run.catch(() => undefined)
    return run
  }
}
