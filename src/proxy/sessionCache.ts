/**
 * Validated sessions, bounded (lru-cache, least recently used evicted) with a TTL so an answer
 * from the security server is trusted only for a while. Concurrent misses for one session are
 * coalesced into one validation call by lru-cache's `fetch` (one in-flight promise per key).
 *
 * An entry holds the decoded keys and the session's anti-replay window. When an entry's TTL runs
 * out it is re-validated and the window is carried over to the new entry (lru-cache hands the
 * stale value to `fetchMethod`), so expiry of the cache never re-opens old sequence numbers.
 */
import { LRUCache } from 'lru-cache'
import { RESPONSE_SALT_LENGTH } from '../protocol/constants.js'
import { deriveResponseKey } from '../protocol/keySchedule.js'
import { pooledRandom } from '../protocol/randomPool.js'
import { ReplayWindow } from '../protocol/replayWindow.js'
import type { ControlPlaneClient, SessionGrant } from './controlPlane.js'

export interface SessionEntry {
  userName: string
  deviceId: string
  appId: string
  appVersion: string
  c2s: Buffer
  s2c: Buffer
  expiresAt: number
  replay: ReplayState
}

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

export interface SessionCacheOptions {
  maxEntries: number
  ttlMs: number
  replayWindowSize: number
  /** How long "not a valid session" is remembered, so junk ids do not each cost a call. */
  negativeTtlMs?: number
}

export interface SessionCacheEvents {
  hit(): void
  miss(): void
  evicted(): void
}

export class SessionCache {
  private readonly cache: LRUCache<string, SessionEntry>
  private readonly invalid: LRUCache<string, true>

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
      dispose: (_v, _k, reason) => {
        if (reason === 'evict') this.events?.evicted()
      },
      fetchMethod: async (sessionId, stale, { options }) => {
        const grant = await this.controlPlane.validate(sessionId)
        if (!grant) {
          this.invalid.set(sessionId, true)
          return undefined
        }
        const s2c = Buffer.from(grant.s2cKey, 'base64')
        const replay = stale && stale.s2c.equals(s2c) ? stale.replay : newReplayState(this.o.replayWindowSize, s2c)
        const entry = toEntry(grant, replay)
        // Never trust a grant past the session's own end.
        options.ttl = Math.max(1, Math.min(this.o.ttlMs, entry.expiresAt - Date.now()))
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
    if (hit) {
      this.events?.hit()
      return hit
    }
    this.events?.miss()
    if (this.invalid.has(sessionId)) return undefined
    return this.cache.fetch(sessionId)
  }

  /** Synchronous lookup of a cached, unexpired entry (the hot path tries this first). */
  peek(sessionId: string): SessionEntry | undefined {
    return this.cache.get(sessionId)
  }

  /** Drop a session at once (revocation push, or the security server said it ended). */
  delete(sessionId: string): void {
    this.cache.delete(sessionId)
  }

  get size(): number {
    return this.cache.size
  }

  clear(): void {
    this.cache.clear()
    this.invalid.clear()
  }
}

function toEntry(g: SessionGrant, replay: ReplayState): SessionEntry {
  return {
    userName: g.userName, deviceId: g.deviceId, appId: g.appId, appVersion: g.appVersion,
    c2s: Buffer.from(g.c2sKey, 'base64'), s2c: Buffer.from(g.s2cKey, 'base64'),
    expiresAt: g.expiresAt, replay,
  }
}
