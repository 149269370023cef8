/**
 * The behaviour every Store must have, run against each engine (sqlStore.sqlite.test.ts,
 * test/integration/sqlStore.postgres.test.ts). Not a test file itself: `storeContract(name, open)`
 * defines the suite; `open` gives a fresh, empty, migrated store for each test.
 */
import { randomBytes } from 'node:crypto'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ExistsError, MalformedError, SecretStoreError } from '../../src/errors.js'
import { LATEST_SCHEMA_VERSION } from '../../src/store/migrations.js'
import { reencryptSecrets } from '../../src/store/queries/secrets.js'
import { SecretBox, type MasterKey } from '../../src/store/secretBox.js'
import type { SqlDb } from '../../src/store/sqlDb.js'
import { SqlStore, sessionIdHash } from '../../src/store/sqlStore.js'
import type {
  ActivationCodeRecord, AppPackageRecord, AppRecord, AuditEvent, DeviceCommandRecord, EnrollmentRecord, PolicyRecord,
  SessionRecord, Store,
} from '../../src/store/types.js'

export interface StoreFixture {
  store: Store
  /** The database under the store, for raw SQL. */
  db: SqlDb
  /** Everything stored, as bytes (SQLite: the files; PostgreSQL: every column of every table as text). */
  raw(): Promise<Buffer>
  cleanup(): Promise<void>
}

export interface OpenOptions {
  secretBox: SecretBox
  /** The store's clock (revokeEnrollment, rememberNonce). */
  now: () => number
}

export const T0 = 1_700_000_000_000
const K1: MasterKey = { id: 'k1', key: randomBytes(32), createdAt: '2024-01-01T00:00:00.000Z' }
const K2: MasterKey = { id: 'k2', key: randomBytes(32), createdAt: '2024-06-01T00:00:00.000Z' }
/** The box stores are opened with: k1 only. */
export const contractBox = new SecretBox({ version: 1, current: 'k1', keys: [K1] })
/** After a rotation: k2 current, k1 still in the ring. */
const rotatedBox = new SecretBox({ version: 1, current: 'k2', keys: [K1, K2] })

export function enrollment(over: Partial<EnrollmentRecord> = {}): EnrollmentRecord {
  return {
    id: 'enr-1', userName: 'alice', deviceId: 'dev-1', appId: 'com.example.app', appVersion: '1.2.3',
    sharedKey: randomBytes(32), createdAt: T0, status: 'active', ...over,
  }
}

export function session(over: Partial<SessionRecord> = {}): SessionRecord {
  return {
    id: randomBytes(32).toString('base64url'), enrollmentId: 'enr-1', userName: 'alice', deviceId: 'dev-1',
    appId: 'com.example.app', appVersion: '1.2.3', c2sKey: randomBytes(32), s2cKey: randomBytes(32),
    createdAt: T0, expiresAt: T0 + 3_600_000, idleTimeoutMs: 600_000, lastSeenAt: T0, closedAt: null, ...over,
  }
}

function app(over: Partial<AppRecord> = {}): AppRecord {
  return {
    id: 'mail', name: 'Mail', minVersion: '1.0.0', allowedVersions: ['1.0.0', '1.1.0'], routes: ['/mail/', '/calendar/'],
    groups: ['staff'], createdAt: T0, updatedAt: T0, ...over,
  }
}

function pkg(over: Partial<AppPackageRecord> = {}): AppPackageRecord {
  return { appId: 'mail', version: '1.0.0', fileName: 'mail-1.0.0.apk', sha256: 'ab'.repeat(32), size: 12_345_678, createdAt: T0, ...over }
}

function policy(over: Partial<PolicyRecord> = {}): PolicyRecord {
  return {
    id: 'p-global', scope: 'global', scopeId: '', maxSessionLifetimeSeconds: 28_800, idleTimeoutSeconds: 1800,
    reauthIntervalSeconds: null, maxDevicesPerUser: 3, updatedAt: T0, ...over,
  }
}

function code(over: Partial<ActivationCodeRecord> = {}): ActivationCodeRecord {
  return {
    codeHash: randomBytes(32).toString('hex'), userName: 'alice', appId: null, expiresAt: T0 + 60_000, usedAt: null,
    createdBy: 'admin', createdAt: T0, ...over,
  }
}

function command(over: Partial<DeviceCommandRecord> = {}): DeviceCommandRecord {
  return {
    id: 'cmd-1', userName: 'alice', deviceId: 'dev-1', appId: null, kind: 'lock', state: 'pending', issuedBy: 'admin',
    issuedAt: T0, deliveredAt: null, acknowledgedAt: null, ...over,
  }
}

function audit(over: Partial<AuditEvent> = {}): AuditEvent {
  return {
    at: T0, actor: 'admin', actorRole: 'admin', action: 'device.lock', target: 'alice/dev-1', remote: '10.0.0.1',
    details: { reason: 'lost', nested: { n: 1, list: [1, 'two', null] } }, ...over,
  }
}

export function storeContract(name: string, open: (o: OpenOptions) => Promise<StoreFixture>): void {
  describe(name, () => {
    let fx: StoreFixture
    let s: Store
    let clock = T0

    beforeEach(async () => {
      clock = T0
      fx = await open({ secretBox: contractBox, now: () => clock })
      s = fx.store
    })
    afterEach(async () => {
      await fx?.cleanup()
    })

    it('is at the latest schema version', async () => {
      expect(await s.schemaVersion()).toBe(LATEST_SCHEMA_VERSION)
    })

    describe('enrollments', () => {
      it('round-trips an enrollment; duplicates are refused; unknown ids are undefined', async () => {
        const rec = enrollment()
        await s.createEnrollment(rec)
        expect(await s.getEnrollment('enr-1')).toEqual(rec)
        expect(await s.getEnrollment('missing')).toBeUndefined()
        await expect(s.createEnrollment(rec)).rejects.toThrow(ExistsError)
        await expect(s.createEnrollment(rec)).rejects.toThrow('enrollment already exists')
      })

      it('counts and revokes; revoking closes the open sessions only', async () => {
        await s.createEnrollment(enrollment())
        await s.createEnrollment(enrollment({ id: 'enr-2' }))
        const open = session()
        const closed = session()
        const other = session({ enrollmentId: 'enr-2' })
        for (const r of [open, closed, other]) await s.createSession(r)
        await s.closeSession(closed.id, T0 + 1)
        expect(await s.countActiveEnrollments()).toBe(2)
        clock = T0 + 9
        expect(await s.revokeEnrollment('enr-1')).toBe(true)
        expect(await s.revokeEnrollment('enr-1')).toBe(false)
        expect(await s.revokeEnrollment('missing')).toBe(false)
        expect((await s.getEnrollment('enr-1'))?.status).toBe('revoked')
        expect(await s.countActiveEnrollments()).toBe(1)
        expect((await s.getSession(open.id))?.closedAt).toBe(T0 + 9)
        expect((await s.getSession(closed.id))?.closedAt).toBe(T0 + 1)
        expect((await s.getSession(other.id))?.closedAt).toBeNull()
      })

      it('lists with filters and pages, oldest first, never with the key', async () => {
        await s.createEnrollment(enrollment({ id: 'e3', createdAt: T0 + 3, deviceId: 'dev-2' }))
        await s.createEnrollment(enrollment({ id: 'e1', createdAt: T0 + 1 }))
        await s.createEnrollment(enrollment({ id: 'e2', createdAt: T0 + 2, appId: 'other' }))
        await s.createEnrollment(enrollment({ id: 'e4', createdAt: T0 + 4, userName: 'bob' }))
        await s.revokeEnrollment('e2')
        const ids = async (f: Parameters<Store['listEnrollments']>[0]) => (await s.listEnrollments(f)).map((e) => e.id)
        expect(await ids({})).toEqual(['e1', 'e2', 'e3', 'e4'])
        expect(await ids({ userName: 'alice' })).toEqual(['e1', 'e2', 'e3'])
        expect(await ids({ userName: 'alice', deviceId: 'dev-1' })).toEqual(['e1', 'e2'])
        expect(await ids({ appId: 'other' })).toEqual(['e2'])
        expect(await ids({ status: 'revoked' })).toEqual(['e2'])
        expect(await ids({ status: 'active', userName: 'alice' })).toEqual(['e1', 'e3'])
        expect(await ids({ userName: 'nobody' })).toEqual([])
        expect(await ids({ limit: 2 })).toEqual(['e1', 'e2'])
        expect(await ids({ limit: 2, offset: 2 })).toEqual(['e3', 'e4'])
        expect(await ids({ offset: 3 })).toEqual(['e4'])
        expect(await ids({ limit: 0 })).toEqual([])
        await expect(s.listEnrollments({ limit: -1 })).rejects.toThrow(MalformedError)
        await expect(s.listEnrollments({ offset: 1.5 })).rejects.toThrow(MalformedError)
        const [first] = await s.listEnrollments({ limit: 1 })
        expect(first).toEqual({ id: 'e1', userName: 'alice', deviceId: 'dev-1', appId: 'com.example.app', appVersion: '1.2.3', createdAt: T0 + 1, status: 'active' })
        expect(first).not.toHaveProperty('sharedKey')
      })

      it('refuses text with NUL characters alike on every engine', async () => {
        await expect(s.createEnrollment(enrollment({ deviceId: 'dev\u00001' }))).rejects.toThrow(MalformedError)
        await expect(s.getEnrollment('enr\u0000')).rejects.toThrow(MalformedError)
        expect(await s.countActiveEnrollments()).toBe(0)
      })

      it('gives the distinct device ids with an active enrollment', async () => {
        await s.createEnrollment(enrollment({ id: 'a', deviceId: 'dev-b' }))
        await s.createEnrollment(enrollment({ id: 'b', deviceId: 'dev-a' }))
        await s.createEnrollment(enrollment({ id: 'c', deviceId: 'dev-a', appId: 'other' }))
        await s.createEnrollment(enrollment({ id: 'd', deviceId: 'dev-c' }))
        await s.createEnrollment(enrollment({ id: 'e', deviceId: 'dev-z', userName: 'bob' }))
        await s.revokeEnrollment('d')
        expect(await s.activeDeviceIds('alice')).toEqual(['dev-a', 'dev-b'])
        expect(await s.activeDeviceIds('bob')).toEqual(['dev-z'])
        expect(await s.activeDeviceIds('nobody')).toEqual([])
      })
    })

    describe('sign-ins', () => {
      it('records and replaces the last sign-in of an enrollment', async () => {
        await s.createEnrollment(enrollment())
        expect(await s.lastSignIn('enr-1')).toBeUndefined()
        await s.recordSignIn({ enrollmentId: 'enr-1', method: 'password', groups: ['staff', 'mail-users'], at: T0 })
        expect(await s.lastSignIn('enr-1')).toEqual({ enrollmentId: 'enr-1', method: 'password', groups: ['staff', 'mail-users'], at: T0 })
        await s.recordSignIn({ enrollmentId: 'enr-1', method: 'password+code', groups: [], at: T0 + 5 })
        expect(await s.lastSignIn('enr-1')).toEqual({ enrollmentId: 'enr-1', method: 'password+code', groups: [], at: T0 + 5 })
        expect(await s.lastSignIn('unknown')).toBeUndefined()
      })
    })

    describe('sessions', () => {
      beforeEach(async () => {
        await s.createEnrollment(enrollment())
        await s.createEnrollment(enrollment({ id: 'enr-2', deviceId: 'dev-2' }))
        await s.createEnrollment(enrollment({ id: 'enr-bob', userName: 'bob', deviceId: 'dev-9' }))
      })

      it('round-trips a session, looked up by its id, stored by its hash', async () => {
        const rec = session()
        await s.createSession(rec)
        expect(await s.getSession(rec.id)).toEqual(rec)
        expect(await s.getSession(session().id)).toBeUndefined()
        await expect(s.createSession(rec)).rejects.toThrow(ExistsError)
        await expect(s.createSession(session({ s2cKey: randomBytes(16) }))).rejects.toThrow(SecretStoreError)
        expect((await s.listSessions({})).map((x) => x.idHash)).toEqual([sessionIdHash(rec.id)])
        const rows = await fx.db.all<{ id_hash: string; key_id: string }>('SELECT id_hash, key_id FROM sessions')
        expect(rows).toEqual([{ id_hash: sessionIdHash(rec.id), key_id: 'k1' }])
      })

      it('touches forward only, and never a closed session', async () => {
        const rec = session()
        await s.createSession(rec)
        await s.touchSession(rec.id, T0 + 5_000)
        expect((await s.getSession(rec.id))?.lastSeenAt).toBe(T0 + 5_000)
        await s.touchSession(rec.id, T0 + 1_000)
        expect((await s.getSession(rec.id))?.lastSeenAt).toBe(T0 + 5_000)
        await s.touchSession('unknown', T0 + 9_000)
        await s.closeSession(rec.id, T0 + 6_000)
        await s.touchSession(rec.id, T0 + 7_000)
        expect((await s.getSession(rec.id))?.lastSeenAt).toBe(T0 + 5_000)
      })

      it('closes a session once', async () => {
        const rec = session()
        await s.createSession(rec)
        expect(await s.closeSession(rec.id, T0 + 6_000)).toBe(true)
        expect(await s.closeSession(rec.id, T0 + 7_000)).toBe(false)
        expect(await s.closeSession('unknown', T0)).toBe(false)
        expect((await s.getSession(rec.id))?.closedAt).toBe(T0 + 6_000)
      })

      it('closes the open sessions matching a filter and returns their id hashes', async () => {
        const a1 = session()
        const a2 = session({ enrollmentId: 'enr-2', deviceId: 'dev-2' })
        const a3 = session()
        const b1 = session({ enrollmentId: 'enr-bob', userName: 'bob', deviceId: 'dev-9' })
        for (const r of [a1, a2, a3, b1]) await s.createSession(r)
        await s.closeSession(a3.id, T0 + 1)
        await expect(s.closeSessionsWhere({}, T0)).rejects.toThrow(MalformedError)
        expect(await s.closeSessionsWhere({ userName: 'nobody' }, T0)).toEqual([])
        expect(await s.closeSessionsWhere({ userName: 'alice', deviceId: 'dev-2' }, T0 + 5)).toEqual([sessionIdHash(a2.id)])
        expect(await s.closeSessionsWhere({ userName: 'alice' }, T0 + 6)).toEqual([sessionIdHash(a1.id)])
        expect(await s.closeSessionsWhere({ userName: 'alice' }, T0 + 7)).toEqual([])
        expect((await s.getSession(a3.id))?.closedAt).toBe(T0 + 1)
        expect((await s.getSession(a1.id))?.closedAt).toBe(T0 + 6)
        expect((await s.getSession(b1.id))?.closedAt).toBeNull()
        const c1 = session({ enrollmentId: 'enr-bob', userName: 'bob', deviceId: 'dev-9' })
        await s.createSession(c1)
        expect(await s.closeSessionsWhere({ enrollmentId: 'enr-bob' }, T0 + 8)).toEqual([sessionIdHash(b1.id), sessionIdHash(c1.id)].sort())
        const d1 = session({ enrollmentId: 'enr-2', deviceId: 'dev-2' })
        await s.createSession(d1)
        expect(await s.closeSessionsWhere({ deviceId: 'dev-2' }, T0 + 9)).toEqual([sessionIdHash(d1.id)])
      })

      it('lists sessions with filters and pages, without keys or ids', async () => {
        const a1 = session({ createdAt: T0 + 1 })
        const a2 = session({ createdAt: T0 + 2, enrollmentId: 'enr-2', deviceId: 'dev-2' })
        const b1 = session({ createdAt: T0 + 3, enrollmentId: 'enr-bob', userName: 'bob', deviceId: 'dev-9' })
        for (const r of [b1, a2, a1]) await s.createSession(r)
        await s.closeSession(a2.id, T0 + 10)
        const hashes = async (f: Parameters<Store['listSessions']>[0]) => (await s.listSessions(f)).map((x) => x.idHash)
        const [h1, h2, h3] = [a1, a2, b1].map((r) => sessionIdHash(r.id))
        expect(await hashes({})).toEqual([h1, h2, h3])
        expect(await hashes({ userName: 'alice' })).toEqual([h1, h2])
        expect(await hashes({ deviceId: 'dev-2' })).toEqual([h2])
        expect(await hashes({ open: true })).toEqual([h1, h3])
        expect(await hashes({ open: false })).toEqual([h2])
        expect(await hashes({ userName: 'alice', open: true })).toEqual([h1])
        expect(await hashes({ limit: 1, offset: 1 })).toEqual([h2])
        const [first] = await s.listSessions({ limit: 1 })
        expect(first).toEqual({
          idHash: h1, enrollmentId: 'enr-1', userName: 'alice', deviceId: 'dev-1', appId: 'com.example.app', appVersion: '1.2.3',
          createdAt: T0 + 1, expiresAt: a1.expiresAt, lastSeenAt: T0, closedAt: null,
        })
      })

      it('remembers nonces until they expire, per scope', async () => {
        clock = T0
        expect(await s.rememberNonce('session-open', 'n1', T0 + 1_000)).toBe(true)
        expect(await s.rememberNonce('session-open', 'n1', T0 + 1_000)).toBe(false)
        expect(await s.rememberNonce('other-scope', 'n1', T0 + 1_000)).toBe(true)
        expect(await s.rememberNonce('session-open', 'n2', T0 + 1_000)).toBe(true)
        clock = T0 + 999
        expect(await s.rememberNonce('session-open', 'n1', T0 + 5_000)).toBe(false)
        // Expired but not yet purged: reusable.
        clock = T0 + 1_000
        expect(await s.rememberNonce('session-open', 'n1', T0 + 5_000)).toBe(true)
        expect(await s.rememberNonce('session-open', 'n1', T0 + 5_000)).toBe(false)
        expect(await s.purgeExpired(T0 + 2_000)).toBe(2) // other-scope/n1 and session-open/n2
        expect(await s.rememberNonce('other-scope', 'n1', T0 + 9_000)).toBe(true)
        expect(await s.rememberNonce('x', 'a very long nonce '.repeat(1000), T0 + 9_000)).toBe(true)
      })

      it('lets exactly one of 20 concurrent callers remember a nonce', async () => {
        const results = await Promise.all(Array.from({ length: 20 }, () => s.rememberNonce('race', 'same', T0 + 60_000)))
        expect(results.filter(Boolean)).toHaveLength(1)
        clock = T0 + 60_000 // expired: again exactly one takes it over
        const again = await Promise.all(Array.from({ length: 20 }, () => s.rememberNonce('race', 'same', T0 + 120_000)))
        expect(again.filter(Boolean)).toHaveLength(1)
      })

      it('purges expired, idle and closed sessions but keeps live ones', async () => {
        const live = session()
        const expired = session({ expiresAt: T0 + 1_000 })
        const idle = session({ idleTimeoutMs: 500 })
        const closed = session()
        for (const r of [live, expired, idle, closed]) await s.createSession(r)
        await s.closeSession(closed.id, T0)
        await s.rememberNonce('n', 'old', T0 + 10)
        await s.rememberNonce('n', 'new', T0 + 10_000)
        expect(await s.purgeExpired(T0 + 1_000)).toBe(4)
        expect(await s.getSession(live.id)).toBeDefined()
        for (const r of [expired, idle, closed]) expect(await s.getSession(r.id)).toBeUndefined()
        expect(await s.purgeExpired(T0 + 1_000)).toBe(0)
      })
    })

    describe('app catalog', () => {
      it('upserts, lists, updates and deletes apps', async () => {
        expect(await s.getApp('mail')).toBeUndefined()
        expect(await s.listApps()).toEqual([])
        await s.upsertApp(app())
        await s.upsertApp(app({ id: 'chat', name: 'Chat', minVersion: null, allowedVersions: [], routes: [], groups: [] }))
        expect(await s.getApp('mail')).toEqual(app())
        expect((await s.listApps()).map((a) => a.id)).toEqual(['chat', 'mail'])
        expect(await s.getApp('chat')).toEqual(app({ id: 'chat', name: 'Chat', minVersion: null, allowedVersions: [], routes: [], groups: [] }))
        await s.upsertApp(app({ name: 'Mail 2', routes: ['/mail/'], groups: [], createdAt: T0 + 99, updatedAt: T0 + 100 }))
        expect(await s.getApp('mail')).toEqual(app({ name: 'Mail 2', routes: ['/mail/'], groups: [], createdAt: T0, updatedAt: T0 + 100 }))
        expect(await s.deleteApp('chat')).toBe(true)
        expect(await s.deleteApp('chat')).toBe(false)
        expect((await s.listApps()).map((a) => a.id)).toEqual(['mail'])
      })

      it('adds, lists and finds packages; they go with their app', async () => {
        await s.upsertApp(app())
        await s.upsertApp(app({ id: 'chat' }))
        await s.addPackage(pkg({ version: '1.1.0', fileName: 'mail-1.1.0.apk', createdAt: T0 + 2 }))
        await s.addPackage(pkg())
        await s.addPackage(pkg({ appId: 'chat', fileName: 'chat.apk' }))
        await expect(s.addPackage(pkg())).rejects.toThrow(ExistsError)
        await expect(s.addPackage(pkg({ appId: 'no-such-app' }))).rejects.toThrow()
        expect((await s.listPackages('mail')).map((p) => p.version)).toEqual(['1.0.0', '1.1.0'])
        expect(await s.getPackage('mail', '1.0.0')).toEqual(pkg())
        expect(await s.getPackage('mail', '9.9.9')).toBeUndefined()
        expect(await s.listPackages('nothing')).toEqual([])
        await s.deleteApp('mail')
        expect(await s.listPackages('mail')).toEqual([])
        expect(await s.getPackage('chat', '1.0.0')).toEqual(pkg({ appId: 'chat', fileName: 'chat.apk' }))
      })

      it('upserts, lists (broadest first) and deletes policies', async () => {
        const app1 = policy({ id: 'p-app', scope: 'app', scopeId: 'mail', maxDevicesPerUser: null, reauthIntervalSeconds: 600 })
        const group = policy({ id: 'p-staff', scope: 'group', scopeId: 'staff', maxSessionLifetimeSeconds: null, idleTimeoutSeconds: null })
        for (const p of [app1, group, policy()]) await s.upsertPolicy(p)
        expect(await s.listPolicies()).toEqual([policy(), group, app1])
        const changed = { ...group, maxDevicesPerUser: 1, idleTimeoutSeconds: 60, updatedAt: T0 + 5 }
        await s.upsertPolicy(changed)
        expect(await s.listPolicies()).toEqual([policy(), changed, app1])
        expect(await s.deletePolicy('p-staff')).toBe(true)
        expect(await s.deletePolicy('p-staff')).toBe(false)
        expect((await s.listPolicies()).map((p) => p.id)).toEqual(['p-global', 'p-app'])
      })
    })

    describe('activation codes', () => {
      it('consumes a code once, and never after it expired', async () => {
        const c = code()
        await s.createActivationCode(c)
        await expect(s.createActivationCode(c)).rejects.toThrow(ExistsError)
        expect(await s.consumeActivationCode('unknown', T0)).toBeUndefined()
        expect(await s.consumeActivationCode(c.codeHash, T0 + 10)).toEqual({ ...c, usedAt: T0 + 10 })
        expect(await s.consumeActivationCode(c.codeHash, T0 + 11)).toBeUndefined()
        const late = code({ appId: 'mail' })
        await s.createActivationCode(late)
        expect(await s.consumeActivationCode(late.codeHash, late.expiresAt)).toBeUndefined()
        expect(await s.consumeActivationCode(late.codeHash, late.expiresAt - 1)).toEqual({ ...late, usedAt: late.expiresAt - 1 })
      })

      it('lets exactly one of 20 concurrent consumers win', async () => {
        const c = code()
        await s.createActivationCode(c)
        const results = await Promise.all(Array.from({ length: 20 }, (_, i) => s.consumeActivationCode(c.codeHash, T0 + i)))
        const winners = results.filter((r) => r !== undefined)
        expect(winners).toHaveLength(1)
        expect((await s.listActivationCodes({}))[0]?.usedAt).toBe(winners[0]!.usedAt)
      })

      it('lists codes newest first, by user, in pages', async () => {
        const c1 = code({ createdAt: T0 + 1 })
        const c2 = code({ createdAt: T0 + 2, userName: 'bob' })
        const c3 = code({ createdAt: T0 + 3, appId: 'mail' })
        for (const c of [c1, c2, c3]) await s.createActivationCode(c)
        expect(await s.listActivationCodes({})).toEqual([c3, c2, c1])
        expect(await s.listActivationCodes({ userName: 'alice' })).toEqual([c3, c1])
        expect(await s.listActivationCodes({ userName: 'alice', limit: 1, offset: 1 })).toEqual([c1])
        expect(await s.listActivationCodes({ userName: 'nobody' })).toEqual([])
      })
    })

    describe('devices and commands', () => {
      it('sets, gets and lists device states', async () => {
        expect(await s.getDevice('alice', 'dev-1')).toBeUndefined()
        await s.setDeviceState('alice', 'dev-1', 'locked', T0)
        await s.setDeviceState('alice', 'dev-2', 'active', T0 + 1)
        await s.setDeviceState('bob', 'dev-1', 'locked', T0 + 2)
        expect(await s.getDevice('alice', 'dev-1')).toEqual({ userName: 'alice', deviceId: 'dev-1', state: 'locked', updatedAt: T0 })
        await s.setDeviceState('alice', 'dev-1', 'wiped', T0 + 5)
        expect(await s.getDevice('alice', 'dev-1')).toEqual({ userName: 'alice', deviceId: 'dev-1', state: 'wiped', updatedAt: T0 + 5 })
        expect(await s.getDevice('alice', 'dev-9')).toBeUndefined()
        const keys = async (f: Parameters<Store['listDevices']>[0]) => (await s.listDevices(f)).map((d) => `${d.userName}/${d.deviceId}`)
        expect(await keys({})).toEqual(['alice/dev-1', 'alice/dev-2', 'bob/dev-1'])
        expect(await keys({ userName: 'alice' })).toEqual(['alice/dev-1', 'alice/dev-2'])
        expect(await keys({ state: 'locked' })).toEqual(['bob/dev-1'])
        expect(await keys({ limit: 1, offset: 2 })).toEqual(['bob/dev-1'])
      })

      it('queues, delivers and acknowledges commands', async () => {
        const whole = command()
        const mailWipe = command({ id: 'cmd-2', appId: 'mail', kind: 'wipe', issuedAt: T0 + 1 })
        const chatWipe = command({ id: 'cmd-3', appId: 'chat', kind: 'wipe', issuedAt: T0 + 2 })
        const otherDevice = command({ id: 'cmd-4', deviceId: 'dev-2', issuedAt: T0 + 3 })
        for (const c of [chatWipe, otherDevice, mailWipe, whole]) await s.createCommand(c)
        await expect(s.createCommand(whole)).rejects.toThrow(ExistsError)
        expect(await s.openCommands('alice', 'dev-1')).toEqual([whole, mailWipe, chatWipe])
        expect(await s.openCommands('alice', 'dev-1', 'mail')).toEqual([whole, mailWipe])
        expect(await s.openCommands('alice', 'dev-9')).toEqual([])

        await s.markCommandDelivered('cmd-1', T0 + 10)
        await s.markCommandDelivered('cmd-1', T0 + 20) // the first delivery time is kept
        await s.markCommandDelivered('unknown', T0 + 20)
        const delivered = { ...whole, state: 'delivered' as const, deliveredAt: T0 + 10 }
        expect((await s.openCommands('alice', 'dev-1', 'mail'))[0]).toEqual(delivered)

        expect(await s.acknowledgeCommand('cmd-1', T0 + 30)).toBe(true)
        expect(await s.acknowledgeCommand('cmd-1', T0 + 31)).toBe(false)
        expect(await s.acknowledgeCommand('unknown', T0 + 31)).toBe(false)
        expect(await s.acknowledgeCommand('cmd-2', T0 + 32)).toBe(true) // straight from pending
        await s.markCommandDelivered('cmd-2', T0 + 40) // no going back
        expect(await s.openCommands('alice', 'dev-1', 'mail')).toEqual([])
        expect(await s.openCommands('alice', 'dev-1')).toEqual([chatWipe])

        const ids = async (f: Parameters<Store['listCommands']>[0]) => (await s.listCommands(f)).map((c) => c.id)
        expect(await ids({})).toEqual(['cmd-1', 'cmd-2', 'cmd-3', 'cmd-4'])
        expect(await ids({ state: 'acknowledged' })).toEqual(['cmd-1', 'cmd-2'])
        expect(await ids({ deviceId: 'dev-2' })).toEqual(['cmd-4'])
        expect(await ids({ userName: 'alice', state: 'pending', limit: 1 })).toEqual(['cmd-3'])
        expect((await s.listCommands({ state: 'acknowledged' }))[0]).toEqual({ ...delivered, state: 'acknowledged', acknowledgedAt: T0 + 30 })
        expect((await s.listCommands({ state: 'acknowledged' }))[1]).toEqual({ ...mailWipe, state: 'acknowledged', acknowledgedAt: T0 + 32 })
      })
    })

    describe('audit log', () => {
      it('appends with increasing ids and queries by actor, action, target and time', async () => {
        const id1 = await s.appendAudit(audit())
        const id2 = await s.appendAudit(audit({ at: T0 + 10, actor: 'helpdesk1', actorRole: 'helpdesk', action: 'session.close', details: {} }))
        const id3 = await s.appendAudit(audit({ at: T0 + 20, target: 'bob/dev-2', id: 999 }))
        expect(id2).toBeGreaterThan(id1)
        expect(id3).toBeGreaterThan(id2)
        const all = await s.queryAudit({})
        expect(all).toEqual([
          { ...audit(), id: id1 },
          { ...audit({ at: T0 + 10, actor: 'helpdesk1', actorRole: 'helpdesk', action: 'session.close', details: {} }), id: id2 },
          { ...audit({ at: T0 + 20, target: 'bob/dev-2' }), id: id3 },
        ])
        const ids = async (f: Parameters<Store['queryAudit']>[0]) => (await s.queryAudit(f)).map((e) => e.id)
        expect(await ids({ actor: 'admin' })).toEqual([id1, id3])
        expect(await ids({ action: 'session.close' })).toEqual([id2])
        expect(await ids({ target: 'bob/dev-2' })).toEqual([id3])
        expect(await ids({ since: T0 + 10 })).toEqual([id2, id3])
        expect(await ids({ until: T0 + 10 })).toEqual([id1, id2])
        expect(await ids({ since: T0 + 5, until: T0 + 15 })).toEqual([id2])
        expect(await ids({ actor: 'admin', since: T0 + 1 })).toEqual([id3])
        expect(await ids({ limit: 1, offset: 1 })).toEqual([id2])
        expect(await ids({ actor: 'nobody' })).toEqual([])
      })

      it('is append-only: the database refuses UPDATE and DELETE', async () => {
        const id = await s.appendAudit(audit())
        await expect(fx.db.run('UPDATE audit_log SET actor = ? WHERE id = ?', ['mallory', id])).rejects.toThrow(/append-only/)
        await expect(fx.db.run('DELETE FROM audit_log WHERE id = ?', [id])).rejects.toThrow(/append-only/)
        await expect(fx.db.run('DELETE FROM audit_log')).rejects.toThrow(/append-only/)
        expect(await s.queryAudit({})).toEqual([{ ...audit(), id }])
      })
    })

    describe('administrators', () => {
      it('upserts, gets, lists and deletes admin users', async () => {
        expect(await s.getAdminUser('root')).toBeUndefined()
        await s.upsertAdminUser({ name: 'root', passwordHash: 'scrypt$1', role: 'admin', createdAt: T0 })
        await s.upsertAdminUser({ name: 'desk', passwordHash: 'scrypt$2', role: 'helpdesk', createdAt: T0 + 1 })
        expect(await s.getAdminUser('root')).toEqual({ name: 'root', passwordHash: 'scrypt$1', role: 'admin', createdAt: T0 })
        await s.upsertAdminUser({ name: 'root', passwordHash: 'scrypt$3', role: 'auditor', createdAt: T0 + 50 })
        expect(await s.getAdminUser('root')).toEqual({ name: 'root', passwordHash: 'scrypt$3', role: 'auditor', createdAt: T0 })
        expect(await s.listAdminUsers()).toEqual([
          { name: 'desk', role: 'helpdesk', createdAt: T0 + 1 },
          { name: 'root', role: 'auditor', createdAt: T0 },
        ])
        expect(await s.deleteAdminUser('desk')).toBe(true)
        expect(await s.deleteAdminUser('desk')).toBe(false)
        expect((await s.listAdminUsers()).map((u) => u.name)).toEqual(['root'])
      })

      it('creates, gets and deletes tokens; deleting the user deletes its tokens', async () => {
        await s.upsertAdminUser({ name: 'root', passwordHash: 'h', role: 'admin', createdAt: T0 })
        await s.upsertAdminUser({ name: 'other', passwordHash: 'h', role: 'admin', createdAt: T0 })
        const t1 = { tokenHash: 'a'.repeat(64), adminName: 'root', expiresAt: T0 + 1000, createdAt: T0 }
        const t2 = { tokenHash: 'b'.repeat(64), adminName: 'root', expiresAt: T0 - 1, createdAt: T0 - 10 }
        const t3 = { tokenHash: 'c'.repeat(64), adminName: 'other', expiresAt: T0 + 1000, createdAt: T0 }
        for (const t of [t1, t2, t3]) await s.createAdminToken(t)
        await expect(s.createAdminToken(t1)).rejects.toThrow(ExistsError)
        expect(await s.getAdminToken(t1.tokenHash)).toEqual(t1)
        expect(await s.getAdminToken(t2.tokenHash)).toEqual(t2) // expired: the caller decides
        expect(await s.getAdminToken('d'.repeat(64))).toBeUndefined()
        expect(await s.deleteAdminToken(t1.tokenHash)).toBe(true)
        expect(await s.deleteAdminToken(t1.tokenHash)).toBe(false)
        await s.deleteAdminUser('root')
        expect(await s.getAdminToken(t2.tokenHash)).toBeUndefined()
        expect(await s.getAdminToken(t3.tokenHash)).toEqual(t3)
      })
    })

    describe('revocation log', () => {
      it('appends with increasing seq and replays in order from any point', async () => {
        expect(await s.latestRevocationSeq()).toBe(0)
        expect(await s.revocationsSince(0, 10)).toEqual([])
        const targets = ['h1', 'enr-1', 'alice\u0000dev-1', 'alice', 'p-global'] as const
        const kinds = ['session', 'enrollment', 'device', 'user', 'policy'] as const
        const seqs: number[] = []
        for (let i = 0; i < kinds.length; i++) seqs.push(await s.appendRevocation(kinds[i]!, targets[i]!, T0 + i))
        expect([...seqs].sort((a, b) => a - b)).toEqual(seqs)
        expect(new Set(seqs).size).toBe(seqs.length)
        expect(await s.latestRevocationSeq()).toBe(seqs.at(-1))
        const all = await s.revocationsSince(0, 100)
        expect(all).toEqual(kinds.map((kind, i) => ({ seq: seqs[i], at: T0 + i, kind, target: targets[i] })))
        expect(await s.revocationsSince(seqs[1]!, 2)).toEqual(all.slice(2, 4))
        expect(await s.revocationsSince(seqs.at(-1)!, 10)).toEqual([])
        expect(await s.revocationsSince(0, 0)).toEqual([])
        await expect(s.revocationsSince(0, -1)).rejects.toThrow(MalformedError)
      })

      it('numbers concurrent appends uniquely and replays them in order', async () => {
        const seqs = await Promise.all(Array.from({ length: 20 }, (_, i) => s.appendRevocation('session', `h${i}`, T0 + i)))
        expect(new Set(seqs).size).toBe(20)
        const replay = await s.revocationsSince(0, 100)
        expect(replay.map((r) => r.seq)).toEqual([...seqs].sort((a, b) => a - b))
        expect(await s.latestRevocationSeq()).toBe(Math.max(...seqs))
      })
    })

    describe('secrets at rest', () => {
      it('never stores secrets or session ids in clear', async () => {
        const enr = enrollment({ userName: 'visible-user-name' })
        const sess = session({ userName: 'visible-user-name' })
        await s.createEnrollment(enr)
        await s.createSession(sess)
        await s.touchSession(sess.id, T0 + 1)
        await s.rememberNonce('open:enr-1', 'nonce-value-in-clear', T0 + 1000)
        const disk = await fx.raw()
        expect(disk.includes(Buffer.from('visible-user-name'))).toBe(true) // proves we read the data at all
        const needles: (string | Buffer)[] = [sess.id, sess.id.slice(0, 16), 'nonce-value-in-clear']
        const idBytes = Buffer.from(sess.id, 'base64url')
        for (const secret of [enr.sharedKey, sess.c2sKey, sess.s2cKey, Buffer.concat([sess.c2sKey, sess.s2cKey]), idBytes]) {
          needles.push(secret, secret.subarray(0, 12), secret.toString('base64'), secret.toString('base64url'),
            secret.toString('hex'), secret.toString('hex').toUpperCase())
        }
        for (const n of needles) expect(disk.includes(n), `found ${typeof n === 'string' ? 'string' : 'bytes'}`).toBe(false)
      })

      it('re-seals every secret under a new current key; old ciphertext reads until then', async () => {
        const enrollments = Array.from({ length: 3 }, (_, i) => enrollment({ id: `enr-${i}` }))
        for (const e of enrollments) await s.createEnrollment(e)
        const sessions = Array.from({ length: 4 }, (_, i) => session({ enrollmentId: `enr-${i % 3}` }))
        for (const r of sessions) await s.createSession(r)
        await s.closeSession(sessions[0]!.id, T0 + 1)

        const rotated = new SqlStore(fx.db, rotatedBox, { now: () => clock })
        for (const e of enrollments) expect(await rotated.getEnrollment(e.id)).toEqual(e) // sealed with k1, still readable
        const keyIds = async () => {
          const rows = [
            ...await fx.db.all<{ key_id: string }>('SELECT key_id FROM enrollments'),
            ...await fx.db.all<{ key_id: string }>('SELECT key_id FROM sessions'),
          ]
          return [...new Set(rows.map((r) => r.key_id))]
        }
        expect(await keyIds()).toEqual(['k1'])
        // A session sealed under k2 already is left alone.
        await s.createEnrollment(enrollment({ id: 'enr-new' }))
        const fresh = session({ enrollmentId: 'enr-new' })
        await rotated.createSession(fresh)

        expect(await rotated.reencryptSecrets()).toBe(enrollments.length + 1 + sessions.length)
        expect(await keyIds()).toEqual(['k2'])
        expect(await rotated.reencryptSecrets()).toBe(0)
        for (const e of enrollments) expect(await rotated.getEnrollment(e.id)).toEqual(e)
        for (const r of [...sessions, fresh]) {
          const got = await rotated.getSession(r.id)
          expect(got?.c2sKey).toEqual(r.c2sKey)
          expect(got?.s2cKey).toEqual(r.s2cKey)
        }
        // Really re-sealed: a ring without k2 can no longer open them.
        await expect(s.getEnrollment('enr-0')).rejects.toThrow(SecretStoreError)
      })

      it('re-seals in batches, walking every row exactly once', async () => {
        for (let i = 0; i < 7; i++) await s.createEnrollment(enrollment({ id: `e${i}` }))
        const ctx = { db: fx.db, box: rotatedBox, now: () => clock }
        expect(await reencryptSecrets(ctx, 2)).toBe(7)
        expect(await reencryptSecrets(ctx, 2)).toBe(0)
        const rotated = new SqlStore(fx.db, rotatedBox)
        expect((await rotated.getEnrollment('e6'))?.id).toBe('e6')
      })
    })
  })
}
