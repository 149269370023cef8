/**
 * Backups on a real PostgreSQL (GATEHOUSE_PG_URL, default the local test database), each test
 * in fresh schemas dropped afterwards: the logical export restored into another schema row for
 * row (sealed secrets, bytes with NUL, sequences that continue), one snapshot even while writers
 * run, refusal to overwrite data, a damaged backup rolled back, PostgreSQL → SQLite, and a SQLite
 * backup refused for PostgreSQL. Skipped without PostgreSQL unless GATEHOUSE_REQUIRE_SERVICES=1.
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { BackupInvalidError, ConfigError, ExistsError } from '../../src/errors.js'
import { createBackup, restoreBackup } from '../../src/store/backup.js'
import { BackupReader } from '../../src/store/backupFile.js'
import { backupKeyFrom } from '../../src/store/backupKey.js'
import { exportLogical } from '../../src/store/backupLogical.js'
import { openStore, redactUrl } from '../../src/store/openStore.js'
import { PgDb } from '../../src/store/pgDb.js'
import { SecretBox, type MasterKeyRing } from '../../src/store/secretBox.js'
import type { SqlDb } from '../../src/store/sqlDb.js'
import type { SqlStore } from '../../src/store/sqlStore.js'
import type { EnrollmentRecord, SessionRecord } from '../../src/store/types.js'
import { postgresAvailable, skipWithout } from '../helpers/services.js'

const PG_URL = process.env.GATEHOUSE_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const skip = skipWithout('PostgreSQL', await postgresAvailable(PG_URL), redactUrl(PG_URL))

const RUN = `gh_bk_${process.pid}_${randomBytes(3).toString('hex')}`
let n = 0
const schemas = new Set<string>()
const freshSchema = () => {
  const s = `${RUN}_${++n}`
  schemas.add(s)
  return s
}
const dir = mkdtempSync(path.join(os.tmpdir(), 'gh-backup-pg-'))
let files = 0
const out = () => path.join(dir, `b${++files}.ghbackup`)

afterAll(async () => {
  if (!skip) {
    const admin = await PgDb.open({ url: PG_URL })
    try {
      for (const s of schemas) await admin.exec(`DROP SCHEMA IF EXISTS "${s}" CASCADE`)
    } finally {
      await admin.close()
    }
  }
  rmSync(dir, { recursive: true, force: true })
})

const T0 = 1_700_000_000_000
const ring: MasterKeyRing = { version: 1, current: 'kpg1', keys: [{ id: 'kpg1', key: randomBytes(32), createdAt: '2025-01-01T00:00:00.000Z' }] }
const box = new SecretBox(ring)
const key = backupKeyFrom(randomBytes(32))

const enrollment = (i: number): EnrollmentRecord => ({
  id: `enr-${String(i).padStart(5, '0')}`, userName: `user${i % 7}`, deviceId: `dev-${i}`, appId: 'mail', appVersion: '1.0.0',
  sharedKey: randomBytes(32), createdAt: T0 + i, status: 'active',
})
const session = (e: EnrollmentRecord): SessionRecord => ({
  id: randomBytes(32).toString('base64url'), enrollmentId: e.id, userName: e.userName, deviceId: e.deviceId, appId: e.appId,
  appVersion: e.appVersion, c2sKey: randomBytes(32), s2cKey: randomBytes(32), createdAt: T0, expiresAt: T0 + 3_600_000,
  idleTimeoutMs: 600_000, lastSeenAt: T0, closedAt: null,
})

async function inChunks<T>(items: T[], f: (x: T) => Promise<unknown>, size = 20): Promise<void> {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(f))
}

/** Rows in every table: more than one export page (1000) in enrollments, sessions and the audit log. */
async function populate(store: SqlStore, count = 1100): Promise<{ enrollments: EnrollmentRecord[]; sessions: SessionRecord[] }> {
  const enrollments = Array.from({ length: count }, (_, i) => enrollment(i))
  await inChunks(enrollments, (e) => store.createEnrollment(e))
  const sessions = enrollments.map(session)
  await inChunks(sessions, (s) => store.createSession(s))
  await inChunks(Array.from({ length: count }, (_, i) => i), (i) => store.appendAudit({
    at: T0 + i, actor: 'admin', actorRole: 'admin', action: 'device.lock', target: `device:${i}`, remote: '10.0.0.1', details: { n: i, note: 'é ✓' },
  }))
  await store.upsertApp({ id: 'mail', name: 'Mail', minVersion: '1.0.0', allowedVersions: [], routes: ['/mail/'], groups: ['staff'], createdAt: T0, updatedAt: T0 })
  await store.addPackage({ appId: 'mail', version: '1.0.0', fileName: 'mail.apk', sha256: 'ab'.repeat(32), size: 1234, createdAt: T0 })
  await store.upsertPolicy({ id: 'p1', scope: 'group', scopeId: 'staff', maxSessionLifetimeSeconds: 3600, idleTimeoutSeconds: null, reauthIntervalSeconds: 86400, maxDevicesPerUser: 2, updatedAt: T0 })
  await store.createActivationCode({ codeHash: 'cd'.repeat(32), userName: 'user1', appId: null, expiresAt: T0 + 60_000, usedAt: null, createdBy: 'admin', createdAt: T0 })
  await store.setDeviceState('user1', 'dev-1', 'locked', T0)
  await store.createCommand({ id: 'cmd-1', userName: 'user1', deviceId: 'dev-1', appId: null, kind: 'lock', state: 'pending', issuedBy: 'admin', issuedAt: T0, deliveredAt: null, acknowledgedAt: null })
  await store.upsertAdminUser({ name: 'ops', passwordHash: 'scrypt$x', role: 'admin', createdAt: T0 })
  await store.createAdminToken({ tokenHash: 'ef'.repeat(32), adminName: 'ops', expiresAt: T0 + 3_600_000, createdAt: T0 })
  await store.recordSignIn({ enrollmentId: enrollments[0]!.id, method: 'password', groups: ['staff'], at: T0 })
  await store.rememberNonce('open', 'nonce-1', Date.now() + 3_600_000)
  await store.appendRevocation('session', 'aa'.repeat(32), T0)
  await store.appendRevocation('device', 'user1\u0000dev-1', T0) // NUL: stored as bytes
  await store.appendRevocation('user', 'user2', T0)
  return { enrollments, sessions }
}

/** The logical export without its header line (which carries the export time): equal = same rows. */
async function rows(db: SqlDb): Promise<string> {
  const parts: Buffer[] = []
  await exportLogical(db, async (c) => { parts.push(c) })
  return Buffer.concat(parts).toString('utf8').split('\n').slice(1).join('\n')
}

const open = (schema: string) => openStore({ url: PG_URL, schema, secretBox: box })

describe.skipIf(skip)('backups on PostgreSQL (logical export)', () => {
  it('restores into a fresh schema row for row: sealed secrets, bytes with NUL, sequences that continue', async () => {
    const s1 = freshSchema()
    const store = await open(s1)
    let restored: SqlStore | undefined
    try {
      const { enrollments, sessions } = await populate(store)
      const b = await createBackup({ source: { kind: 'postgres', db: store.db }, key, out: out() })
      expect(b.kind).toBe('logical')
      const s2 = freshSchema()
      const r = await restoreBackup({ file: b.file, key, ring, target: { kind: 'postgres', url: PG_URL, schema: s2 } })
      expect(r).toMatchObject({ kind: 'logical', activeEnrollments: enrollments.length, openSessions: sessions.length, movedAside: [] })
      restored = await open(s2)
      expect(await rows(restored.db)).toBe(await rows(store.db))
      for (const i of [0, 999, 1000, 1099]) {
        expect((await restored.getEnrollment(enrollments[i]!.id))!.sharedKey.equals(enrollments[i]!.sharedKey)).toBe(true)
        expect((await restored.getSession(sessions[i]!.id))!.c2sKey.equals(sessions[i]!.c2sKey)).toBe(true)
      }
      const revs = await restored.revocationsSince(0, 10)
      expect(revs.map((x) => x.target)).toEqual(['aa'.repeat(32), 'user1\u0000dev-1', 'user2'])
      // Sequences continue past the restored ids, in both schemas alike.
      expect(await restored.appendRevocation('user', 'user3', T0)).toBe(await store.appendRevocation('user', 'user3', T0))
      const auditId = await restored.appendAudit({ at: T0, actor: 'a', actorRole: 'admin', action: 'x', target: 't', remote: 'r', details: {} })
      expect(auditId).toBe(enrollments.length + 1)
    } finally {
      await restored?.close()
      await store.close()
    }
  })

  it('the export is one snapshot: enrollment+session pairs written meanwhile are in it whole or not at all', async () => {
    const s1 = freshSchema()
    const store = await open(s1)
    try {
      await populate(store, 1500)
      let stop = false
      let written = 0
      const writer = (async () => {
        for (let i = 100_000; !stop; i++) {
          const e = enrollment(i)
          await store.createEnrollment(e)
          await store.createSession(session(e)) // a session whose enrollment the export must also hold
          written++
        }
      })()
      while (written < 3) await new Promise((r) => setTimeout(r, 5))
      const before = written
      const b = await createBackup({ source: { kind: 'postgres', db: store.db }, key, out: out() })
      const during = written - before
      stop = true
      await writer
      expect(during, 'writes must run during the export for this test to mean anything').toBeGreaterThan(0)
      // The import checks foreign keys row by row: a session without its enrollment would fail it.
      const r = await restoreBackup({ file: b.file, key, ring, target: { kind: 'postgres', url: PG_URL, schema: freshSchema() } })
      // The snapshot may fall between a pair's two writes: an enrollment without its session yet, never the reverse.
      expect(r.activeEnrollments - r.openSessions).toBeGreaterThanOrEqual(0)
      expect(r.activeEnrollments - r.openSessions).toBeLessThanOrEqual(1)
      expect(r.activeEnrollments).toBeGreaterThanOrEqual(1500 + before)
      expect(r.activeEnrollments).toBeLessThanOrEqual(1500 + written)
    } finally {
      await store.close()
    }
  })

  it('refuses a schema holding data; a damaged backup changes nothing; --force replaces only Gatehouse tables, in one transaction', async () => {
    const s1 = freshSchema()
    const store = await open(s1)
    try {
      await populate(store, 50)
      const b = await createBackup({ source: { kind: 'postgres', db: store.db }, key, out: out() })
      await store.upsertApp({ id: 'later', name: 'Later', minVersion: null, allowedVersions: [], routes: [], groups: [], createdAt: T0, updatedAt: T0 })
      await store.db.exec('CREATE TABLE other_app (id TEXT PRIMARY KEY); INSERT INTO other_app VALUES (\'keep me\')')
      const target = { kind: 'postgres' as const, url: PG_URL, schema: s1 }
      const refused = await restoreBackup({ file: b.file, key, ring, target }).then(() => undefined, (e: unknown) => e)
      expect(refused).toBeInstanceOf(ExistsError)
      expect((refused as Error).message).toMatch(/the PostgreSQL database already holds data; restore refuses to overwrite it/)
      const cut = out()
      const bytes = readFileSync(b.file)
      writeFileSync(cut, bytes.subarray(0, bytes.length - 5))
      await expect(restoreBackup({ file: cut, key, ring, target, force: true })).rejects.toBeInstanceOf(BackupInvalidError)
      expect(await store.getApp('later')).toBeDefined() // rolled back: the data written after the backup is still there
      const r = await restoreBackup({ file: b.file, key, ring, target, force: true })
      expect(r.activeEnrollments).toBe(50)
      expect(await store.getApp('later')).toBeUndefined() // the backup's state
      expect(await store.getApp('mail')).toBeDefined()
      expect(await store.db.get<{ id: string }>('SELECT id FROM other_app')).toEqual({ id: 'keep me' })
      // The store still works on the replaced tables (the audit trigger came back too).
      await expect(store.db.run('DELETE FROM audit_log')).rejects.toThrow(/append-only/)
    } finally {
      await store.close()
    }
  })

  it('a PostgreSQL backup restores into SQLite; a SQLite backup is refused for PostgreSQL', async () => {
    const store = await open(freshSchema())
    const sqlitePath = path.join(dir, 'from-pg', 'gatehouse.db')
    try {
      const { enrollments } = await populate(store, 30)
      const b = await createBackup({ source: { kind: 'postgres', db: store.db }, key, out: out() })
      // Nothing in the file is readable: not a user name, not a JSON key.
      const raw = readFileSync(b.file)
      for (const needle of ['user1', 'enr-00001', 'shared_key', 'gatehouse-logical', enrollments[0]!.sharedKey.toString('base64')]) {
        expect(raw.includes(needle), needle).toBe(false)
      }
      const reader = await BackupReader.open(b.file, key)
      let plain = ''
      for await (const p of reader.payload()) plain += p.toString('utf8')
      expect(plain).toContain('"user1"') // the check above could have failed

      const r = await restoreBackup({ file: b.file, key, ring, target: { kind: 'sqlite', path: sqlitePath } })
      expect(r.activeEnrollments).toBe(30)
      const lite = await openStore({ path: sqlitePath, secretBox: box })
      try {
        expect((await lite.getEnrollment(enrollments[7]!.id))!.sharedKey.equals(enrollments[7]!.sharedKey)).toBe(true)
        expect((await lite.revocationsSince(0, 10)).map((x) => x.target)).toContain('user1\u0000dev-1')
        expect(await lite.appendAudit({ at: T0, actor: 'a', actorRole: 'admin', action: 'x', target: 't', remote: 'r', details: {} })).toBe(31)
      } finally {
        await lite.close()
      }
      const liteBackup = await createBackup({ source: { kind: 'sqlite', path: sqlitePath }, key, out: out() })
      const err = await restoreBackup({ file: liteBackup.file, key, ring, target: { kind: 'postgres', url: PG_URL, schema: freshSchema() } }).then(() => undefined, (e: unknown) => e)
      expect(err).toBeInstanceOf(ConfigError)
      expect((err as Error).message).toMatch(/this backup holds a SQLite database file: restore it into SQLite/)
    } finally {
      await store.close()
    }
  })
})
