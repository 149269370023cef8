/**
 * The ActiveSync gate's answers: "may this user's device reach Exchange?", asked of the security
 * server (POST /v1/activesync/check over the control plane's mutual-TLS pool) and kept in a
 * bounded LRU cache (lru-cache) so that a mail client's steady traffic costs one call per
 * `gateCacheSeconds`. Concurrent misses for one (user, device) are coalesced into one call by
 * lru-cache's `fetch`.
 *
 *   key = "<user key>\u0000<DeviceId>"   (user key: src/protocol/activeSyncIdentity.ts)
 *
 * - Allowed answers live `ttlMs`; refusals `negativeTtlMs` (short: a device enrolled a moment ago
 *   gets in soon, yet a stream of requests from an unknown device costs one call per few seconds).
 * - Pushed revocations (src/proxy/revocationFeed.ts) drop entries at once: device (its key), user
 *   (every key of the user), enrollment (answers that relied on it). An answer still in flight
 *   when a matching revocation arrives may predate it, so it is asked again.
 * - While no security server answers, an allowed answer keeps working for `graceMs` after it was
 *   given (the session cache's outage grace); anything else is ControlPlaneUnavailableError (503),
 *   never a refusal.
 */
import { LRUCache } from 'lru-cache'
import { ControlPlaneUnavailableError, GatehouseError } from '../errors.js'
import { activeSyncUserKey, type ActiveSyncCheckAnswer } from '../protocol/activeSyncIdentity.js'
import type { Revocation } from './sessionCache.js'

/** An answer of the security server, as cached. */
export interface GateAnswer extends ActiveSyncCheckAnswer {
  /** When it was given (ms). */
  checkedAt: number
}

export interface GateClient {
  /** Throws ControlPlaneUnavailableError when no security server answers. */
  activeSyncCheck(userKey: string, deviceId: string): Promise<ActiveSyncCheckAnswer>
}

export interface ActiveSyncGateOptions {
  ttlMs: number
  /** How long a refusal is remembered; default min(ttlMs, 5 s). */
  negativeTtlMs?: number
  maxEntries: number
  /** Outage grace for allowed answers; 0 = none. */
  graceMs?: number
}

export interface ActiveSyncGateEvents {
  hit(): void
  miss(): void
  grace(): void
}

/** Revocations remembered for answers in flight (older: ask again anyway). */
const RECENT_REVOCATIONS = 256
/** Rounds of asking again while revocations keep matching an answer in flight. */
const MAX_ROUNDS = 3
/** While the control plane is failing, answers within grace skip asking for this long. */
const OUTAGE_PROBE_MS = 1000

export function gateKey(userKey: string, deviceId: string): string {
  return `${userKey}\u0000${deviceId}`
}

/** Does this revocation apply to the gate entry `key` (holding `answer`)? */
export function gateRevocationMatches(r: Revocation, key: string, answer: Pick<GateAnswer, 'enrollmentIds'> | undefined): boolean {
  switch (r.kind) {
    case 'device': {
      const sep = r.target.indexOf('\u0000')
      if (sep < 0) return false
      const user = activeSyncUserKey(r.target.slice(0, sep))
      return user !== undefined && key === gateKey(user, r.target.slice(sep + 1))
    }
    case 'user': {
      const user = activeSyncUserKey(r.target)
      return user !== undefined && key.startsWith(`${user}\u0000`)
    }
    case 'enrollment':
      return answer !== undefined && answer.enrollmentIds.includes(r.target)
    case 'session':
    case 'policy':
      return false
  }
}

export class ActiveSyncGate {
  private readonly cache: LRUCache<string, GateAnswer>
  private epoch = 0
  private readonly recent: { epoch: number; r: Revocation }[] = []
  private lastOutage = 0

  constructor(
    private readonly o: ActiveSyncGateOptions,
    private readonly client: GateClient,
    private readonly events?: ActiveSyncGateEvents,
  ) {
    const negativeTtlMs = o.negativeTtlMs ?? Math.min(o.ttlMs, 5000)
    this.cache = new LRUCache<string, GateAnswer>({
      max: o.maxEntries,
      ttl: o.ttlMs,
      // Expiry is checked on access with a coarse clock; no timers per entry.
      ttlResolution: 100,
      noDeleteOnStaleGet: true,
      // A failed re-check (control plane down) keeps the stale entry for the outage grace.
      noDeleteOnFetchRejection: true,
      fetchMethod: async (key, _stale, { options }) => {
        const sep = key.indexOf('\u0000')
        const user = key.slice(0, sep)
        const deviceId = key.slice(sep + 1)
        let answer: ActiveSyncCheckAnswer
        let cacheable = true
        for (let round = 1; ; round++) {
          const asked = this.epoch
          answer = await this.client.activeSyncCheck(user, deviceId)
          // A revocation applied while we asked may postdate the answer: ask again.
          if (!this.revokedSince(asked, key, answer)) break
          if (round === MAX_ROUNDS) {
            // Revocations keep coming: use this answer once, do not keep it.
            cacheable = false
            break
          }
        }
        options.ttl = !cacheable ? 1 : answer.allowed ? o.ttlMs : negativeTtlMs
        return { ...answer, checkedAt: Date.now() }
      },
    })
  }

  /** A cached, unexpired answer (the hot path tries this first, synchronously). */
  peek(key: string): GateAnswer | undefined {
    const a = this.cache.get(key)
    if (a) this.events?.hit()
    return a
  }

  /** The answer for `key`; throws ControlPlaneUnavailableError when no security server answers. */
  async check(key: string): Promise<GateAnswer> {
    const hit = this.cache.get(key)
    if (hit) {
      this.events?.hit()
      return hit
    }
    this.events?.miss()
    if (Date.now() - this.lastOutage < OUTAGE_PROBE_MS) {
      const stale = this.withinGrace(key)
      if (stale) return stale
    }
    for (let attempt = 0; ; attempt++) {
      try {
        const a = await this.cache.fetch(key)
        if (a) return a
      } catch (err) {
        if (err instanceof ControlPlaneUnavailableError) {
          this.lastOutage = Date.now()
          const stale = this.withinGrace(key)
          if (stale) return stale
        }
        if (err instanceof GatehouseError) throw err
        // Anything else: lru-cache aborted the fetch (a revocation deleted the key or cleared the
        // cache meanwhile): asking again gets an answer given after the revocation.
      }
      if (attempt >= MAX_ROUNDS) throw new ControlPlaneUnavailableError('control plane unavailable')
    }
  }

  private withinGrace(key: string): GateAnswer | undefined {
    const graceMs = this.o.graceMs ?? 0
    if (graceMs <= 0) return undefined
    const stale = this.cache.get(key, { allowStale: true })
    if (!stale || !stale.allowed || Date.now() - stale.checkedAt > graceMs) return undefined
    this.events?.grace()
    return stale
  }

  /** Apply a pushed revocation; returns the keys of the cached entries it dropped. */
  revoke(r: Revocation): string[] {
    if (r.kind === 'session' || r.kind === 'policy') return []
    this.epoch++
    this.recent.push({ epoch: this.epoch, r })
    if (this.recent.length > RECENT_REVOCATIONS) this.recent.shift()
    const keys: string[] = []
    // dump() also walks stale entries (kept for the outage grace) and those being re-checked: a
    // revoked device must not come back through either. O(entries), and revocations are rare.
    for (const [key, { value }] of this.cache.dump()) if (gateRevocationMatches(r, key, value)) keys.push(key)
    for (const key of keys) this.cache.delete(key)
    return keys
  }

  private revokedSince(epoch: number, key: string, a: ActiveSyncCheckAnswer): boolean {
    if (epoch === this.epoch) return false
    const oldest = this.recent[0]
    if (!oldest || oldest.epoch > epoch + 1) return true
    for (let i = this.recent.length - 1; i >= 0 && this.recent[i]!.epoch > epoch; i--) {
      if (gateRevocationMatches(this.recent[i]!.r, key, a)) return true
    }
    return false
  }

  get size(): number {
    return this.cache.size
  }

  /** Drop every answer (the revocation stream was (re)connected without knowing what was missed). */
  clear(): void {
    this.cache.clear()
  }
}
