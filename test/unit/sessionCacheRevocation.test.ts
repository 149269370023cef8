/** SessionCache.revoke: pushed revocations by session hash, enrollment, device, user and policy. */
import { describe, expect, it } from 'vitest'
import type { SessionGrant } from '../../src/proxy/controlPlane.js'
import { revocationMatches, SessionCache, sessionIdHash } from '../../src/proxy/sessionCache.js'
import { sessionIdHash as storeSessionIdHash } from '../../src/store/sqlStore.js'

const grant = (over: Partial<SessionGrant> = {}): SessionGrant => ({
  enrollmentId: 'e1', userName: 'alice', deviceId: 'd1', appId: 'mail', appVersion: '1.0', c2sKey: Buffer.alloc(32, 1).toString('base64'),
  s2cKey: Buffer.alloc(32, 2).toString('base64'), expiresAt: Date.now() + 3600_000, idleTimeoutMs: 600_000, ...over,
})
const sid = (i: number) => `S${String(i).padStart(21, '0')}`

/** A cache over a fake control plane that knows `grants` (sid → grant) and counts calls. */
function cacheOver(grants: Map<string, SessionGrant>, maxEntries = 100) {
  const calls: string[] = []
  const cache = new SessionCache({ maxEntries, ttlMs: 60_000, replayWindowSize: 64 }, {
    validate: async (id) => { calls.push(id); return grants.get(id) },
  })
  return { cache, calls }
}

describe('SessionCache revocations', () => {
  it('hashes session ids exactly as the store does', () => {
    expect(sessionIdHash(sid(1))).toBe(storeSessionIdHash(sid(1)))
    expect(sessionIdHash(sid(1))).toMatch(/^[0-9a-f]{64}$/)
  })

  it('drops a session by the hash of its id, and remembers it as invalid', async () => {
    const grants = new Map([[sid(1), grant()], [sid(2), grant()]])
    const { cache, calls } = cacheOver(grants)
    await cache.get(sid(1))
    await cache.get(sid(2))
    expect(cache.revoke({ kind: 'session', target: sessionIdHash(sid(1)) })).toEqual([sid(1)])
    expect(cache.peek(sid(1))).toBeUndefined()
    expect(cache.peek(sid(2))).toBeDefined()
    // Unknown hashes are no-ops.
    expect(cache.revoke({ kind: 'session', target: 'f'.repeat(64) })).toEqual([])
    // The revoked id costs no further validation call.
    const before = calls.length
    expect(await cache.get(sid(1))).toBeUndefined()
    expect(calls.length).toBe(before)
  })

  it('drops by enrollment, device and user', async () => {
    const grants = new Map([
      [sid(1), grant({ enrollmentId: 'e1', userName: 'alice', deviceId: 'd1' })],
      [sid(2), grant({ enrollmentId: 'e2', userName: 'alice', deviceId: 'd1' })],
      [sid(3), grant({ enrollmentId: 'e3', userName: 'alice', deviceId: 'd2' })],
      [sid(4), grant({ enrollmentId: 'e4', userName: 'bob', deviceId: 'd1' })],
      [sid(5), grant({ enrollmentId: 'e5', userName: 'bob', deviceId: 'd5' })],
    ])
    const { cache } = cacheOver(grants)
    for (const id of grants.keys()) await cache.get(id)
    expect(cache.revoke({ kind: 'enrollment', target: 'e3' })).toEqual([sid(3)])
    expect(cache.revoke({ kind: 'device', target: 'alice\u0000d1' }).sort()).toEqual([sid(1), sid(2)])
    expect(cache.size).toBe(2)
    expect(cache.revoke({ kind: 'user', target: 'bob' }).sort()).toEqual([sid(4), sid(5)])
    expect(cache.size).toBe(0)
    for (const id of grants.keys()) await cache.get(id)
    grants.clear()
    expect(cache.revoke({ kind: 'policy', target: 'p1' })).toEqual([])
    expect(cache.size).toBe(0)
    expect(cache.hashedCount).toBe(0)
  })

  it('a policy change makes every entry re-validate before use, keeping its replay window', async () => {
    let calls = 0
    const cache = new SessionCache({ maxEntries: 10, ttlMs: 60_000, replayWindowSize: 64 }, {
      validate: async () => { calls++; return grant() },
    })
    const first = (await cache.get(sid(1)))!
    first.replay.window.accept(5)
    expect(cache.revoke({ kind: 'policy', target: 'p1' })).toEqual([])
    expect(cache.peek(sid(1))).toBeUndefined()
    const again = (await cache.get(sid(1)))!
    expect(calls).toBe(2)
    expect(again).not.toBe(first)
    expect(again.replay.window.accept(5)).toBe('replay')
    expect(cache.peek(sid(1))).toBe(again)
  })

  it('keeps the hash map in step with inserts, evictions, deletes and clears', async () => {
    const grants = new Map(Array.from({ length: 30 }, (_, i) => [sid(i), grant({ enrollmentId: `e${i}` })] as const))
    const { cache } = cacheOver(grants, 10)
    for (let i = 0; i < 30; i++) await cache.get(sid(i))
    expect(cache.size).toBe(10)
    expect(cache.hashedCount).toBe(10)
    // An evicted session's hash no longer maps.
    expect(cache.revoke({ kind: 'session', target: sessionIdHash(sid(0)) })).toEqual([])
    cache.delete(sid(29))
    expect(cache.hashedCount).toBe(9)
    cache.clear()
    expect(cache.hashedCount).toBe(0)
  })

  it('asks again when a matching revocation arrives while a validation is in flight', async () => {
    // The first answer predates the revocation (it says valid); the second follows it.
    const answers = [grant({ userName: 'carol' }), undefined]
    let release!: () => void
    const gate = new Promise<void>((r) => { release = r })
    let calls = 0
    const cache = new SessionCache({ maxEntries: 10, ttlMs: 60_000, replayWindowSize: 64 }, {
      validate: async () => { const a = answers[calls++]; if (calls === 1) await gate; return a },
    })
    const pending = cache.get(sid(1))
    await Promise.resolve()
    expect(cache.revoke({ kind: 'user', target: 'carol' })).toEqual([])
    release()
    expect(await pending).toBeUndefined()
    expect(calls).toBe(2)
    expect(cache.peek(sid(1))).toBeUndefined()
  })

  it('does not ask again for a revocation that does not match the answer in flight', async () => {
    let release!: () => void
    const gate = new Promise<void>((r) => { release = r })
    let calls = 0
    const cache = new SessionCache({ maxEntries: 10, ttlMs: 60_000, replayWindowSize: 64 }, {
      validate: async () => { calls++; await gate; return grant({ userName: 'dave' }) },
    })
    const pending = cache.get(sid(1))
    cache.revoke({ kind: 'user', target: 'someone-else' })
    cache.revoke({ kind: 'session', target: sessionIdHash(sid(2)) })
    release()
    expect(await pending).toBeDefined()
    expect(calls).toBe(1)
  })

  it('a clear during a validation in flight re-asks instead of failing the request', async () => {
    let release!: () => void
    const gate = new Promise<void>((r) => { release = r })
    let calls = 0
    const cache = new SessionCache({ maxEntries: 10, ttlMs: 60_000, replayWindowSize: 64 }, {
      validate: async () => { calls++; if (calls === 1) await gate; return grant() },
    })
    const pending = cache.get(sid(1))
    await Promise.resolve()
    cache.revoke({ kind: 'policy', target: 'p' })
    release()
    const e = await pending
    expect(e?.userName).toBe('alice')
    expect(cache.peek(sid(1))).toBe(e)
  })

  it('revocationMatches names the right fields', () => {
    const e = { idHash: 'h', enrollmentId: 'e', userName: 'u', deviceId: 'd' }
    expect(revocationMatches({ kind: 'session', target: 'h' }, e)).toBe(true)
    expect(revocationMatches({ kind: 'session', target: 'e' }, e)).toBe(false)
    expect(revocationMatches({ kind: 'enrollment', target: 'e' }, e)).toBe(true)
    expect(revocationMatches({ kind: 'device', target: 'u\u0000d' }, e)).toBe(true)
    expect(revocationMatches({ kind: 'device', target: 'ud' }, e)).toBe(false)
    expect(revocationMatches({ kind: 'user', target: 'u' }, e)).toBe(true)
    expect(revocationMatches({ kind: 'user', target: 'd' }, e)).toBe(false)
    expect(revocationMatches({ kind: 'policy', target: 'x' }, e)).toBe(true)
  })
})
