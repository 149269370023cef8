/** The ActiveSync gate cache: coalescing, TTLs, revocations (also racing an answer), outage grace. */
import { describe, expect, it } from 'vitest'
import { ControlPlaneUnavailableError } from '../../src/errors.js'
import type { ActiveSyncCheckAnswer } from '../../src/protocol/activeSyncIdentity.js'
import { ActiveSyncGate, gateKey, gateRevocationMatches } from '../../src/proxy/activeSyncGate.js'

const ALLOWED: ActiveSyncCheckAnswer = { allowed: true, state: 'active', enrollmentIds: ['e1'] }
const UNKNOWN: ActiveSyncCheckAnswer = { allowed: false, state: 'unknown', enrollmentIds: [] }

/** A control plane whose answers the test sets, counting calls, optionally held until released. */
function fakeClient(answer: (user: string, device: string) => ActiveSyncCheckAnswer | 'down') {
  const c = {
    calls: 0,
    hold: undefined as Promise<void> | undefined,
    async activeSyncCheck(user: string, device: string): Promise<ActiveSyncCheckAnswer> {
      c.calls++
      const a = answer(user, device)
      if (c.hold) await c.hold
      if (a === 'down') throw new ControlPlaneUnavailableError('control plane unavailable')
      return a
    },
  }
  return c
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('ActiveSyncGate', () => {
  it('coalesces concurrent misses into one call and serves hits from the cache', async () => {
    const client = fakeClient(() => ALLOWED)
    let release!: () => void
    client.hold = new Promise((r) => { release = r })
    const gate = new ActiveSyncGate({ ttlMs: 60_000, maxEntries: 10 }, client)
    const k = gateKey('alice', 'DEV1')
    const all = Promise.all(Array.from({ length: 20 }, () => gate.check(k)))
    release()
    expect((await all).every((a) => a.allowed)).toBe(true)
    expect(client.calls).toBe(1)
    expect(gate.peek(k)?.allowed).toBe(true)
    await gate.check(k)
    expect(client.calls).toBe(1)
  })

  it('refusals are remembered briefly (negativeTtlMs), allowed answers for ttlMs', async () => {
    let answer = UNKNOWN
    const client = fakeClient(() => answer)
    const gate = new ActiveSyncGate({ ttlMs: 60_000, negativeTtlMs: 150, maxEntries: 10 }, client)
    const k = gateKey('alice', 'DEV1')
    expect((await gate.check(k)).allowed).toBe(false)
    expect((await gate.check(k)).allowed).toBe(false)
    expect(client.calls).toBe(1)
    answer = ALLOWED
    await sleep(300)
    expect((await gate.check(k)).allowed).toBe(true)
    expect(client.calls).toBe(2)
  })

  it('revocations drop matching entries: device (reduced user), user, enrollment; not sessions or policies', async () => {
    const client = fakeClient(() => ALLOWED)
    const gate = new ActiveSyncGate({ ttlMs: 60_000, maxEntries: 100 }, client)
    const a1 = gateKey('alice', 'DEV1')
    const a2 = gateKey('alice', 'DEV2')
    const b1 = gateKey('bob', 'DEV1')
    for (const k of [a1, a2, b1]) await gate.check(k)
    expect(gate.revoke({ kind: 'session', target: 'ab'.repeat(32) })).toEqual([])
    expect(gate.revoke({ kind: 'policy', target: 'p1' })).toEqual([])
    expect(gate.revoke({ kind: 'device', target: 'CORP\\Alice\u0000DEV1' })).toEqual([a1])
    expect(gate.peek(a1)).toBeUndefined()
    expect(gate.revoke({ kind: 'user', target: 'ALICE@corp.example' })).toEqual([a2])
    expect(gate.revoke({ kind: 'enrollment', target: 'e1' })).toEqual([b1])
    expect(gate.size).toBe(0)
  })

  it('asks again when a matching revocation arrives while an answer is in flight', async () => {
    let answer = ALLOWED
    const client = fakeClient(() => answer)
    let release!: () => void
    client.hold = new Promise((r) => { release = r })
    const gate = new ActiveSyncGate({ ttlMs: 60_000, maxEntries: 10 }, client)
    const k = gateKey('alice', 'DEV1')
    const pending = gate.check(k)
    await sleep(5)
    // The device is locked while the first answer ("allowed") is on its way.
    answer = { allowed: false, state: 'locked', enrollmentIds: [] }
    gate.revoke({ kind: 'device', target: 'alice\u0000DEV1' })
    client.hold = undefined
    release()
    expect(await pending).toMatchObject({ allowed: false, state: 'locked' })
    expect(client.calls).toBe(2)
  })

  it('control plane down: ControlPlaneUnavailableError, or a stale allowed answer within the grace; never a stale refusal or a revoked answer', async () => {
    let down = false
    const answers = new Map<string, ActiveSyncCheckAnswer>([['DEV1', ALLOWED], ['DEV2', UNKNOWN], ['DEV3', ALLOWED]])
    const client = fakeClient((_u, d) => (down ? 'down' : answers.get(d) ?? UNKNOWN))
    const grace: number[] = []
    const gate = new ActiveSyncGate({ ttlMs: 50, negativeTtlMs: 50, maxEntries: 10, graceMs: 60_000 }, client, { hit: () => undefined, miss: () => undefined, grace: () => grace.push(1) })
    for (const d of ['DEV1', 'DEV2', 'DEV3']) await gate.check(gateKey('alice', d))
    down = true
    await sleep(120)
    expect((await gate.check(gateKey('alice', 'DEV1'))).allowed).toBe(true)
    expect(grace.length).toBe(1)
    await expect(gate.check(gateKey('alice', 'DEV2'))).rejects.toBeInstanceOf(ControlPlaneUnavailableError)
    await expect(gate.check(gateKey('alice', 'NEW'))).rejects.toBeInstanceOf(ControlPlaneUnavailableError)
    // A revocation also drops the stale entry kept for the grace.
    gate.revoke({ kind: 'device', target: 'alice\u0000DEV3' })
    await expect(gate.check(gateKey('alice', 'DEV3'))).rejects.toBeInstanceOf(ControlPlaneUnavailableError)
    // Without grace: unavailable.
    const strict = new ActiveSyncGate({ ttlMs: 50, maxEntries: 10 }, fakeClient(() => 'down'))
    await expect(strict.check(gateKey('alice', 'DEV1'))).rejects.toBeInstanceOf(ControlPlaneUnavailableError)
  })

  it('gateRevocationMatches: device targets reduce the user; malformed targets match nothing', () => {
    const k = gateKey('alice', 'DEV1')
    expect(gateRevocationMatches({ kind: 'device', target: 'alice\u0000DEV1' }, k, undefined)).toBe(true)
    expect(gateRevocationMatches({ kind: 'device', target: 'alice\u0000dev1' }, k, undefined)).toBe(false)
    expect(gateRevocationMatches({ kind: 'device', target: 'aliceDEV1' }, k, undefined)).toBe(false)
    expect(gateRevocationMatches({ kind: 'user', target: 'alic' }, k, undefined)).toBe(false)
    expect(gateRevocationMatches({ kind: 'enrollment', target: 'e1' }, k, undefined)).toBe(false)
  })
})
