/**
 * RevocationHub: append + push, replay from a seq then live records without gaps or repeats while
 * appends keep coming, gap detection, records appended by another server, shutdown. Over an
 * in-memory log whose every call yields a random number of turns (to shake out interleavings),
 * and once over the real SQLite store.
 */
import { Writable } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { RevocationGapError, UnavailableError } from '../../src/errors.js'
import { createLogger } from '../../src/observability/logger.js'
import { RevocationHub } from '../../src/security/revocationHub.js'
import { openStore } from '../../src/store/openStore.js'
import { newMasterKey, SecretBox } from '../../src/store/secretBox.js'
import type { RevocationKind, RevocationRecord, RevocationStore } from '../../src/store/types.js'

const log = createLogger({ level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) })

/** Yield 0–3 turns of the event loop (macro or micro tasks), at random. */
async function jitter(): Promise<void> {
  const n = Math.floor(Math.random() * 4)
  for (let i = 0; i < n; i++) {
    if (Math.random() < 0.5) await new Promise((r) => setImmediate(r))
    else await Promise.resolve()
  }
}

/** The log as the store keeps it; `firstSeq` > 1 simulates a truncated log. */
class MemoryLog implements RevocationStore {
  records: RevocationRecord[] = []
  next: number
  /** When set, the next page read (limit > 1: not the gap check) takes its snapshot before (or after) waiting for this. */
  hold: { gate: Promise<void>; snapshot: 'before' | 'after'; entered: () => void } | undefined
  constructor(firstSeq = 1) { this.next = firstSeq }
  async appendRevocation(kind: RevocationKind, target: string, now: number): Promise<number> {
    await jitter()
    const seq = this.next++
    this.records.push({ seq, at: now, kind, target })
    return seq
  }
  async revocationsSince(seq: number, limit: number): Promise<RevocationRecord[]> {
    const hold = this.hold
    if (hold && limit > 1) {
      this.hold = undefined
      const before = this.records.filter((r) => r.seq > seq).slice(0, limit)
      hold.entered()
      await hold.gate
      return hold.snapshot === 'before' ? before : this.records.filter((r) => r.seq > seq).slice(0, limit)
    }
    const out = this.records.filter((r) => r.seq > seq).slice(0, limit)
    await jitter()
    return out
  }
  async latestRevocationSeq(): Promise<number> {
    await jitter()
    return this.records.at(-1)?.seq ?? 0
  }
}

const seqs = (rs: RevocationRecord[]) => rs.map((r) => r.seq)
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

describe('RevocationHub', () => {
  it('pushes each kind with its target to live subscribers before the revoke call returns', async () => {
    const store = new MemoryLog()
    const hub = new RevocationHub({ store, log, now: () => 1234 })
    await hub.start()
    const got: RevocationRecord[] = []
    const sub = await hub.subscribe(undefined, (r) => got.push(r))
    expect(sub.cursor).toBe(0)

    expect(await hub.revokeSession('ab'.repeat(32))).toBe(1)
    expect(got).toHaveLength(1)
    await hub.revokeEnrollment('enr-1')
    await hub.revokeDevice('alice', 'dev-9')
    await hub.revokeUser('bob')
    await hub.policyChanged('pol-1')
    expect(got).toEqual([
      { seq: 1, at: 1234, kind: 'session', target: 'ab'.repeat(32) },
      { seq: 2, at: 1234, kind: 'enrollment', target: 'enr-1' },
      { seq: 3, at: 1234, kind: 'device', target: 'alice\u0000dev-9' },
      { seq: 4, at: 1234, kind: 'user', target: 'bob' },
      { seq: 5, at: 1234, kind: 'policy', target: 'pol-1' },
    ])
    expect(store.records).toHaveLength(5)
    expect(sub.cursor).toBe(5)

    sub.close()
    await hub.revokeUser('carol')
    expect(got).toHaveLength(5)
    expect(hub.subscriberCount).toBe(0)
    hub.close()
  })

  it('a live subscriber starts at the end of the log, not at its beginning', async () => {
    const store = new MemoryLog()
    for (let i = 0; i < 7; i++) await store.appendRevocation('user', `u${i}`, 1)
    const hub = new RevocationHub({ store, log })
    await hub.start()
    const got: RevocationRecord[] = []
    const sub = await hub.subscribe(undefined, (r) => got.push(r))
    expect(sub.cursor).toBe(7)
    await hub.revokeUser('x')
    expect(seqs(got)).toEqual([8])
    hub.close()
  })

  it('replays from a seq, then live, without gaps or repeats while revocations keep coming', async () => {
    for (let round = 0; round < 20; round++) {
      const store = new MemoryLog()
      // A page size below the backlog, so that the replay takes several reads.
      const hub = new RevocationHub({ store, log, pageSize: 7, pollIntervalMs: 0 })
      await hub.start()
      for (let i = 0; i < 40; i++) await hub.revokeUser(`before-${i}`)

      const subs: { since: number; got: RevocationRecord[] }[] = []
      const storm = Promise.all(Array.from({ length: 120 }, (_, i) => hub.revokeSession(`s${i}`)))
      // Subscribers join at different points of the storm, from different seqs.
      const joins = [0, 1, 13, 39, 40].map(async (since, k) => {
        for (let j = 0; j < k * 3; j++) await new Promise((r) => setImmediate(r))
        const entry = { since, got: [] as RevocationRecord[] }
        subs.push(entry)
        await hub.subscribe(since, (r) => entry.got.push(r))
      })
      await Promise.all([storm, ...joins])
      await hub.revokeUser('after')
      const latest = store.records.at(-1)!.seq
      expect(latest).toBe(161)
      for (const s of subs) expect(seqs(s.got), `round ${round}, since ${s.since}`).toEqual(range(s.since + 1, latest))
      // And what they got is what the log holds.
      for (const s of subs) expect(s.got).toEqual(store.records.filter((r) => r.seq > s.since))
      hub.close()
    }
  })

  it.each(['before', 'after'] as const)('a record pushed while the replay read is in flight is delivered once (snapshot %s it)', async (snapshot) => {
    const store = new MemoryLog()
    const hub = new RevocationHub({ store, log, pollIntervalMs: 0 })
    await hub.start()
    for (let i = 0; i < 5; i++) await hub.revokeUser(`u${i}`)
    let release!: () => void
    let entered!: () => void
    const inRead = new Promise<void>((r) => { entered = r })
    store.hold = { gate: new Promise<void>((r) => { release = r }), snapshot, entered }
    const got: number[] = []
    const subscribed = hub.subscribe(2, (r) => got.push(r.seq))
    await inRead
    // Appended and pumped while the replay's read is held: it reaches the subscriber's queue.
    await hub.revokeUser('live')
    expect(got).toEqual([])
    release()
    await subscribed
    expect(got).toEqual([3, 4, 5, 6])
    await hub.revokeUser('later')
    expect(got).toEqual([3, 4, 5, 6, 7])
    hub.close()
  })

  it('refuses a seq the log no longer holds (truncated, or another database) with GH_ERR_REVOCATION_GAP', async () => {
    const store = new MemoryLog(50) // entries 1..49 were truncated
    const hub = new RevocationHub({ store, log })
    await hub.start()
    for (let i = 0; i < 5; i++) await hub.revokeUser(`u${i}`) // seq 50..54
    await expect(hub.subscribe(10, () => undefined)).rejects.toBeInstanceOf(RevocationGapError)
    await expect(hub.subscribe(49, () => undefined)).rejects.toMatchObject({ code: 'GH_ERR_REVOCATION_GAP', status: 410 })
    // Ahead of the log: a proxy that followed another database.
    await expect(hub.subscribe(99, () => undefined)).rejects.toBeInstanceOf(RevocationGapError)
    const got: RevocationRecord[] = []
    await hub.subscribe(50, (r) => got.push(r))
    expect(seqs(got)).toEqual([51, 52, 53, 54])
    expect(hub.subscriberCount).toBe(1)
    hub.close()
  })

  it('delivers records another security server appended to the shared log (poll)', async () => {
    const store = new MemoryLog()
    const hub = new RevocationHub({ store, log, pollIntervalMs: 20 })
    await hub.start()
    const got: RevocationRecord[] = []
    await hub.subscribe(undefined, (r) => got.push(r))
    await store.appendRevocation('device', 'alice\u0000d1', Date.now()) // not through this hub
    await hub.revokeUser('bob') // through it: delivered in seq order after the other one
    expect(seqs(got)).toEqual([1, 2])
    await store.appendRevocation('user', 'carol', Date.now())
    await expect.poll(() => seqs(got), { timeout: 2000, interval: 10 }).toEqual([1, 2, 3])
    hub.close()
  })

  it('a failing subscriber does not stop the others; after close() nobody can subscribe', async () => {
    const store = new MemoryLog()
    const hub = new RevocationHub({ store, log })
    await hub.start()
    await hub.subscribe(undefined, () => { throw new Error('broken socket') })
    const got: number[] = []
    await hub.subscribe(undefined, (r) => got.push(r.seq))
    await hub.revokeUser('a')
    expect(got).toEqual([1])
    hub.close()
    expect(hub.subscriberCount).toBe(0)
    await expect(hub.subscribe(undefined, () => undefined)).rejects.toBeInstanceOf(UnavailableError)
  })

  it('works over the real store (SQLite): replay, live, gap', async () => {
    const key = newMasterKey()
    const store = await openStore({ path: ':memory:', secretBox: new SecretBox({ version: 1, current: key.id, keys: [key] }) })
    try {
      const hub = new RevocationHub({ store, log })
      await hub.start()
      for (let i = 0; i < 3; i++) await hub.revokeUser(`u${i}`)
      const got: RevocationRecord[] = []
      await hub.subscribe(1, (r) => got.push(r))
      await hub.revokeDevice('alice', 'd1')
      expect(got.map((r) => [r.seq, r.kind, r.target])).toEqual([[2, 'user', 'u1'], [3, 'user', 'u2'], [4, 'device', 'alice\u0000d1']])
      await expect(hub.subscribe(5, () => undefined)).rejects.toBeInstanceOf(RevocationGapError)
      hub.close()
    } finally {
      await store.close()
    }
  })
})
