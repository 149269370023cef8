import { afterEach, describe, expect, it, vi } from 'vitest'
import { ControlPlaneUnavailableError } from '../../src/errors.js'
import type { SessionGrant } from '../../src/proxy/controlPlane.js'
import { SessionCache } from '../../src/proxy/sessionCache.js'

const grant = (over: Partial<SessionGrant> = {}): SessionGrant => ({
  enrollmentId: 'e1', userName: 'alice', deviceId: 'd1', appId: 'mail', appVersion: '1.0', c2sKey: Buffer.alloc(32, 1).toString('base64'),
  s2cKey: Buffer.alloc(32, 2).toString('base64'), expiresAt: Date.now() + 3600_000, idleTimeoutMs: 600_000, ...over,
})
const SID = 'A'.repeat(22)

describe('SessionCache', () => {
  afterEach(() => { vi.useRealTimers() })

  it('coalesces concurrent misses into one validation call', async () => {
    let calls = 0
    let release!: () => void
    const gate = new Promise<void>((r) => { release = r })
    const cache = new SessionCache({ maxEntries: 10, ttlMs: 60_000, replayWindowSize: 64 }, {
      validate: async () => { calls++; await gate; return grant() },
    })
    const all = Promise.all(Array.from({ length: 20 }, () => cache.get(SID)))
    release()
    const entries = await all
    expect(calls).toBe(1)
    expect(new Set(entries).size).toBe(1)
    expect(entries[0]!.c2s.equals(Buffer.alloc(32, 1))).toBe(true)
  })

  it('remembers invalid sessions briefly so junk ids do not each cost a call', async () => {
    let calls = 0
    const cache = new SessionCache({ maxEntries: 10, ttlMs: 60_000, replayWindowSize: 64, negativeTtlMs: 60_000 }, {
      validate: async () => { calls++; return undefined },
    })
    expect(await cache.get(SID)).toBeUndefined()
    expect(await cache.get(SID)).toBeUndefined()
    expect(calls).toBe(1)
  })

  it('re-validates after the TTL and carries the replay window and response salt over', async () => {
    let calls = 0
    const cache = new SessionCache({ maxEntries: 10, ttlMs: 50, replayWindowSize: 64 }, { validate: async () => { calls++; return grant() } })
    const first = (await cache.get(SID))!
    expect(first.replay.window.accept(7)).toBe('ok')
    await new Promise((r) => setTimeout(r, 250))
    expect(cache.peek(SID)).toBeUndefined()
    const second = (await cache.get(SID))!
    expect(calls).toBe(2)
    expect(second).not.toBe(first)
    expect(second.replay).toBe(first.replay)
    expect(second.replay.window.accept(7)).toBe('replay')
  })

  it('a recreated entry gets a new window and a new response salt (never reused with an old window)', async () => {
    const cache = new SessionCache({ maxEntries: 10, ttlMs: 60_000, replayWindowSize: 64 }, { validate: async () => grant() })
    const first = (await cache.get(SID))!
    cache.delete(SID)
    const second = (await cache.get(SID))!
    expect(second.replay).not.toBe(first.replay)
    expect(second.replay.responseSalt.equals(first.replay.responseSalt)).toBe(false)
  })

  it('is bounded: the least recently used entry is evicted and counted', async () => {
    let evicted = 0
    const cache = new SessionCache({ maxEntries: 2, ttlMs: 60_000, replayWindowSize: 64 },
      { validate: async () => grant() }, { hit: () => {}, miss: () => {}, evicted: () => { evicted++ } })
    for (const id of ['a', 'b', 'c']) await cache.get(id.repeat(22))
    expect(cache.size).toBe(2)
    expect(evicted).toBe(1)
    expect(cache.peek('a'.repeat(22))).toBeUndefined()
  })

  it('never trusts a grant past the session end', async () => {
    const cache = new SessionCache({ maxEntries: 10, ttlMs: 60_000, replayWindowSize: 64 }, {
      validate: async () => grant({ expiresAt: Date.now() + 100 }),
    })
    await cache.get(SID)
    expect(cache.peek(SID)).toBeDefined()
    await new Promise((r) => setTimeout(r, 300))
    expect(cache.peek(SID)).toBeUndefined()
  })

  it('passes control-plane outages to the caller and caches nothing', async () => {
    let up = false
    const cache = new SessionCache({ maxEntries: 10, ttlMs: 60_000, replayWindowSize: 64 }, {
      validate: async () => { if (!up) throw new ControlPlaneUnavailableError('down'); return grant() },
    })
    await expect(cache.get(SID)).rejects.toBeInstanceOf(ControlPlaneUnavailableError)
    up = true
    expect(await cache.get(SID)).toBeDefined()
  })

  it('serves a cached session through a control-plane outage for the grace period, then 503', async () => {
    let up = true
    let calls = 0
    let graced = 0
    const cache = new SessionCache({ maxEntries: 10, ttlMs: 50, replayWindowSize: 64, graceMs: 600 }, {
      validate: async () => { calls++; if (!up) throw new ControlPlaneUnavailableError('down'); return grant() },
    }, { hit: () => {}, miss: () => {}, evicted: () => {}, grace: () => { graced++ } })
    const first = (await cache.get(SID))!
    up = false
    await new Promise((r) => setTimeout(r, 150))
    const during = await cache.get(SID)
    expect(during).toBe(first)
    expect(graced).toBe(1)
    // Within a second of the failure, no new attempt is made for in-grace sessions.
    const before = calls
    expect(await cache.get(SID)).toBe(first)
    expect(calls).toBe(before)
    // An unknown session gets the outage, not "invalid".
    await expect(cache.get('B'.repeat(22))).rejects.toBeInstanceOf(ControlPlaneUnavailableError)
    await new Promise((r) => setTimeout(r, 700))
    await expect(cache.get(SID)).rejects.toBeInstanceOf(ControlPlaneUnavailableError)
    // Recovery is automatic, and the replay window survived the outage.
    up = true
    first.replay.window.accept(9)
    const after = (await cache.get(SID))!
    expect(after.replay.window.accept(9)).toBe('replay')
  })

  it('without a grace period an outage is passed on at once', async () => {
    let up = true
    const cache = new SessionCache({ maxEntries: 10, ttlMs: 50, replayWindowSize: 64 }, {
      validate: async () => { if (!up) throw new ControlPlaneUnavailableError('down'); return grant() },
    })
    await cache.get(SID)
    up = false
    await new Promise((r) => setTimeout(r, 150))
    await expect(cache.get(SID)).rejects.toBeInstanceOf(ControlPlaneUnavailableError)
  })
})
