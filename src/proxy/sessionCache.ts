/**
 * Validated sessions, bounded (lru-cache, least recently used evicted) with a TTL so an answer
 * from the security server is trusted only for a while. Concurrent misses for one session are
 * coalesced into one validation call by lru-cache's `fetch` (one in-flight promise per key).
 *
 * An entry holds the decoded keys and the session's anti-replay window. When an entry's TTL runs
 * out it is re-validated and the window is carried over to the new entry (lru-cache hands the
 * stale value to `fetchMethod`), so expiry of the cache never re-opens old sequence numbers.
 *
 * Revocations pushed by the security server (revocationFeed.ts) drop entries at once: by the
 * SHA-256 of the session id (a Map hash → id kept beside the cache), or by enrollment, device or
 * user (a walk over the entries: rare, and O(entries) is a few ms at 100k). A validation answer
 * still in flight when a matching revocation arrives may predate it, so it is asked again.
 */
import { createHash } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import { ControlPlaneUnavailableError, GatehouseError } from '../errors.js'
import { RESPONSE_SALT_LENGTH } from '../protocol/constants.js'
import { deriveResponseKey } from '../protocol/keySchedule.js'
import { pooledRandom } from '../protocol/randomPool.js'
import { ReplayWindow } from '../protocol/replayWindow.js'
import { toAppGate, type AppGate } from './appContext.js'
import type { ControlPlaneClient, SessionGrant } from './controlPlane.js'

export interface SessionEntry {
  enrollmentId: string
  userName: string
  deviceId: string
  appId: string
  appVersion: string
  c2s: Buffer
  s2c: Buffer
  expiresAt: number
  replay: ReplayState
  /** SHA-256 (hex) of the session id: how the revocation log names a session. */
  idHash: string
  /** App context (routes, version), prepared once per entry: appContext.ts. */
  app: AppGate
  /** When the security server last said this session is valid (ms). */
  validatedAt: number
  /** Cache generation it was validated in; an older one must be re-validated before use. */
  generation: number
}

export type RevocationKind = 'session' | 'enrollment' | 'device' | 'user' | 'policy'

/** One pushed revocation (the security server's RevocationRecord without seq and time). */
export interface Revocation {
  kind: RevocationKind
  /** session: SHA-256 hex of the id; enrollment: its id; device: "<user>\u0000<deviceId>"; user: the name; policy: its id. */
  target: string
}

/** Same function as the store's `sessionIdHash` (the security server keys sessions by it). */
export function sessionIdHash(sessionId: string): string {
  return createHash('sha256').update(sessionId, 'utf8').digest('hex')
}

/** Does this revocation apply to this session? (policy: every session is re-validated.) */
export function revocationMatches(r: Revocation, e: Pick<SessionEntry, 'idHash' | 'enrollmentId' | 'userName' | 'deviceId'>): boolean {
  switch (r.kind) {
    case 'session': return e.idHash === r.target
    case 'enrollment': return e.enrollmentId === r.target
    case 'device': return r.target === `${e.userName}\u0000${e.deviceId}`
    case 'user': return e.userName === r.target
    case 'policy': return true
  }
}

/** Revocations remembered for validation answers in flight (older ones: re-validate anyway). */
const RECENT_REVOCATIONS = 256
/** Rounds of re-validation when revocations keep matching an answer in flight; then "not valid". */
const MAX_VALIDATION_ROUNDS = 3

/**
 * A session's anti-replay window and the response salt that belongs to it. The salt lives exactly
 * as long as the window: the window accepts each seq once, so under this salt each response nonce
 * is used once; a new window (after eviction or restart) gets a new salt (docs/protocol.md §1).
 */
export interface ReplayState {
  window: ReplayWindow
  responseSalt: Buffer
  responseKey: Buffer
}

function newReplayState(size: number, s2c: Buffer): ReplayState {
  const responseSalt = pooledRandom(RESPONSE_SALT_LENGTH)
  return { window: new ReplayWindow(size), responseSalt, responseKey: deriveResponseKey(s2c, responseSalt) }
}

/** While the control plane is failing, in-grace sessions skip re-validation for this long. */
const OUTAGE_PROBE_MS = 1000

export interface SessionCacheOptions {
  maxEntries: number
  ttlMs: number
  replayWindowSize: number
  /** How long "not a valid session" is remembered, so junk ids do not each cost a call. */
  negativeTtlMs?: number
  /**
   * Control-plane outage grace: while no security server answers, a cached session keeps working
   * this long after its last successful validation (never past its own end). 0 = none.
   */
  graceMs?: number
}

export interface SessionCacheEvents {
  hit(): void
  miss(): void
  evicted(): void
  /** A stale entry was served because the control plane is unreachable. */
  grace?(): void
}

export class SessionCache {
  private readonly cache: LRUCache<string, SessionEntry>
  private readonly invalid: LRUCache<string, true>
  /** SHA-256 hex of the id → id, for the sessions in the cache. */
  private readonly byHash = new Map<string, string>()
  /** Counts applied revocations; `recent` holds the last ones with the count at which they applied. */
  private epoch = 0
  private readonly recent: { epoch: number; r: Revocation }[] = []
  /** When a validation last failed for want of a security server (ms; 0 = never). */
  private lastOutage = 0
  /** Bumped by softClear(): entries of older generations are re-validated before use. */
  private generation = 0

  constructor(
    private readonly o: SessionCacheOptions,
    private readonly controlPlane: Pick<ControlPlaneClient, 'validate'>,
    private readonly events?: SessionCacheEvents,
  ) {
    this.invalid = new LRUCache({ max: Math.min(o.maxEntries, 100_000), ttl: o.negativeTtlMs ?? 5000 })
    this.cache = new LRUCache<string, SessionEntry>({
      max: o.maxEntries,
      ttl: o.ttlMs,
      // Expiry is checked on access with a coarse clock; no timers per entry.
      ttlResolution: 100,
      // Keep a stale entry until fetchMethod has seen it, to carry its replay window over.
      noDeleteOnStaleGet: true,
      // A failed re-validation (control plane down) keeps the stale entry for the outage grace.
      noDeleteOnFetchRejection: true,
      dispose: (v, k, reason) => {
        if (reason === 'evict') this.events?.evicted()
        // 'set' replaces the value under the same id: the mapping stays.
        if (reason !== 'set' && this.byHash.get(v.idHash) === k) this.byHash.delete(v.idHash)
      },
      fetchMethod: async (sessionId, stale, { options }) => {
        const idHash = sessionIdHash(sessionId)
        let grant: SessionGrant | undefined
        for (let round = 1; ; round++) {
          const asked = this.epoch
          grant = await this.controlPlane.validate(sessionId)
          // A revocation applied while we asked may postdate the answer: ask again.
          if (!grant || !this.revokedSince(asked, { ...grant, idHash })) break
          if (round === MAX_VALIDATION_ROUNDS) {
            grant = undefined
            break
          }
        }
        if (!grant) {
          this.invalid.set(sessionId, true)
          return undefined
        }
        const s2c = Buffer.from(grant.s2cKey, 'base64')
        const replay = stale && stale.s2c.equals(s2c) ? stale.replay : newReplayState(this.o.replayWindowSize, s2c)
        const entry = toEntry(grant, replay, idHash, this.generation)
        // Never trust a grant past the session's own end. Re-validating within half the idle
        // timeout keeps the security server's lastSeenAt current (each validation touches it), so
        // a session in use through any proxy never idles out, and one left unused ends between
        // idleTimeout/2 and idleTimeout after its last request (docs/protocol.md §4).
        options.ttl = Math.max(1, Math.min(this.o.ttlMs, entry.expiresAt - Date.now(), Math.floor(grant.idleTimeoutMs / 2)))
        this.byHash.set(idHash, sessionId)
        // lru-cache does not dispose a stale value evicted while it is being re-fetched; such
        // mappings are swept once they add up.
        if (this.byHash.size > this.o.maxEntries + 1024) {
          for (const [h, id] of this.byHash) if (id !== sessionId && !this.cache.has(id)) this.byHash.delete(h)
        }
        return entry
      },
    })
  }

  /**
   * The session's entry; undefined when the security server says it is not valid. Throws
   * ControlPlaneUnavailableError when it cannot be asked.
   */
  async get(sessionId: string): Promise<SessionEntry | undefined> {
    const hit = this.cache.get(sessionId)
    if (hit && hit.generation === this.generation) {
      this.events?.hit()
      return hit
    }
    // An entry of an older generation is re-validated (its replay window carried over).
    const forceRefresh = hit !== undefined
    this.events?.miss()
    if (this.invalid.has(sessionId)) return undefined
    // During an outage, sessions within their grace are served without waiting on another
    // attempt (a black-holed security server costs a full timeout per call); one attempt per
    // second still probes for recovery.
    if (Date.now() - this.lastOutage < OUTAGE_PROBE_MS) {
      const stale = this.withinGrace(sessionId)
      if (stale) return stale
    }
    try {
      return await this.cache.fetch(sessionId, forceRefresh ? { forceRefresh: true } : {})
    } catch (err) {
      if (err instanceof ControlPlaneUnavailableError) {
        this.lastOutage = Date.now()
        const stale = this.withinGrace(sessionId)
        if (stale) return stale
      }
      if (err instanceof GatehouseError) throw err
      // lru-cache aborted the fetch: a revocation deleted this id or cleared the cache meanwhile.
      // Asking again gets an answer given after the revocation.
      if (this.invalid.has(sessionId)) return undefined
      return this.cache.fetch(sessionId)
    }
  }

  /** The stale entry of a session validated less than the grace period ago, if any. */
  private withinGrace(sessionId: string): SessionEntry | undefined {
    const graceMs = this.o.graceMs ?? 0
    if (graceMs <= 0) return undefined
    const stale = this.cache.get(sessionId, { allowStale: true })
    const now = Date.now()
    if (!stale || now - stale.validatedAt > graceMs || stale.expiresAt <= now) return undefined
    this.events?.grace?.()
    return stale
  }

  /** Synchronous lookup of a cached, unexpired entry (the hot path tries this first). */
  peek(sessionId: string): SessionEntry | undefined {
    const e = this.cache.get(sessionId)
    return e && e.generation === this.generation ? e : undefined
  }

  /** Drop a session at once (revocation push, or the security server said it ended). */
  delete(sessionId: string): void {
    this.cache.delete(sessionId)
    this.byHash.delete(sessionIdHash(sessionId))
  }

  /**
   * Apply a pushed revocation; returns the ids of the cached sessions it ended (their requests in
   * flight are cut by the caller). A policy change drops every entry but ends none: they are
   * re-validated on next use.
   */
  revoke(r: Revocation): string[] {
    this.epoch++
    this.recent.push({ epoch: this.epoch, r })
    if (this.recent.length > RECENT_REVOCATIONS) this.recent.shift()
    if (r.kind === 'policy') {
      this.softClear()
      return []
    }
    let ids: string[]
    if (r.kind === 'session') {
      const id = this.byHash.get(r.target)
      ids = id === undefined ? [] : [id]
    } else {
      ids = []
      for (const [id, e] of this.cache.entries()) if (revocationMatches(r, e)) ids.push(id)
    }
    for (const id of ids) {
      this.delete(id)
      // Ended for good: a request with this id need not cost a validation call.
      this.invalid.set(id, true)
    }
    return ids
  }

  /** True when a revocation applied after `epoch` matches this session (or may have: too old to tell). */
  private revokedSince(epoch: number, e: Pick<SessionEntry, 'idHash' | 'enrollmentId' | 'userName' | 'deviceId'>): boolean {
    if (epoch === this.epoch) return false
    const oldest = this.recent[0]
    if (!oldest || oldest.epoch > epoch + 1) return true
    for (let i = this.recent.length - 1; i >= 0 && this.recent[i]!.epoch > epoch; i--) {
      if (revocationMatches(this.recent[i]!.r, e)) return true
    }
    return false
  }

  /** Sessions mapped by id hash (tests: the map must follow the cache). */
  get hashedCount(): number {
    return this.byHash.size
  }

  get size(): number {
    return this.cache.size
  }

  clear(): void {
    this.cache.clear()
    this.invalid.clear()
    this.byHash.clear()
  }

  /**
   * Re-validate every entry before its next use, without dropping it: policy changes, the
   * revocation stream's first connect or a gap in it. Keeping the entries keeps their replay
   * windows (a dropped window would let a captured request be accepted again within the clock
   * skew) and lets the outage grace serve them if the security server cannot be asked.
   */
  softClear(): void {
    this.generation++
    this.invalid.clear()
  }
}

function toEntry(g: SessionGrant, replay: ReplayState, idHash: string, generation: number): SessionEntry {
  return {
    enrollmentId: g.enrollmentId, userName: g.userName, deviceId: g.deviceId, appId: g.appId, appVersion: g.appVersion,
    c2s: Buffer.from(g.c2sKey, 'base64'), s2c: Buffer.from(g.s2cKey, 'base64'),
    expiresAt: g.expiresAt, replay, idHash, app: toAppGate(g.appContext), validatedAt: Date.now(), generation,
  }
}
