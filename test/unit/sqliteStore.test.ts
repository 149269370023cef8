import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ConfigError, ExistsError } from '../../src/errors.js'
import { LATEST_SCHEMA_VERSION, MIGRATIONS } from '../../src/store/migrations.js'
import { SecretBox, newMasterKey } from '../../src/store/secretBox.js'
import { SqliteStore, sessionIdHash } from '../../src/store/sqliteStore.js'
import type { EnrollmentRecord, SessionRecord } from '../../src/store/types.js'

const T0 = 1_700_000_000_000
const box = new SecretBox({ version: 1, current: 'k1', keys: [{ ...newMasterKey(), id: 'k1' }] })

let dir: string
let dbPath: string
const opened: SqliteStore[] = []
function openStore(now?: () => number): SqliteStore {
  const s = SqliteStore.open({ path: dbPath, secretBox: box, ...(now ? { now } : {}) })
  opened.push(s)
  return s
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'gh-sqlite-'))
  dbPath = join(dir, 'data', 'gatehouse.db')
})
afterEach(async () => {
  for (const s of opened.splice(0)) await s.close()
  rmSync(dir, { recursive: true, force: true })
})

function enrollment(over: Partial<EnrollmentRecord> = {}): EnrollmentRecord {
  return {
    id: 'enr-1', userName: 'alice', deviceId: 'dev-1', appId: 'com.example.app', appVersion: '1.2.3',
    sharedKey: randomBytes(32), createdAt: T0, status: 'active', ...over,
  }
}

function session(over: Partial<SessionRecord> = {}): SessionRecord {
  return {
    id: randomBytes(32).toString('base64url'), enrollmentId: 'enr-1', userName: 'alice', deviceId: 'dev-1',
    appId: 'com.example.app', appVersion: '1.2.3', c2sKey: randomBytes(32), s2cKey: randomBytes(32),
    createdAt: T0, expiresAt: T0 + 3_600_000, idleTimeoutMs: 600_000, lastSeenAt: T0, closedAt: null, ...over,
  }
}

describe('SqliteStore', () => {
  it('applies migrations once, records them, and reopens idempotently', async () => {
    const s = openStore()
    expect(await s.schemaVersion()).toBe(LATEST_SCHEMA_VERSION)
    await s.close()
    openStore()
    const db = new Database(dbPath, { readonly: true })
    const rows = db.prepare('SELECT version, name, applied_at FROM schema_migrations ORDER BY version').all() as
      { version: number; name: string; applied_at: number }[]
    db.close()
    expect(rows.map((r) => r.version)).toEqual(MIGRATIONS.map((m) => m.version))
    expect(rows[0]!.name).toBe(MIGRATIONS[0]!.name)
    expect(rows[0]!.applied_at).toBeGreaterThan(0)
  })

  it.runIf(process.platform !== 'win32')('creates the database file 0600', async () => {
    const s = openStore()
    await s.createEnrollment(enrollment())
    expect(statSync(dbPath).mode & 0o777).toBe(0o600)
    if (existsSync(`${dbPath}-wal`)) expect(statSync(`${dbPath}-wal`).mode & 0o777).toBe(0o600)
  })

  it('refuses a schema newer than the code knows', async () => {
    const s = openStore()
    await s.close()
    const db = new Database(dbPath)
    db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)')
      .run(LATEST_SCHEMA_VERSION + 1, 'from the future', Date.now())
    db.close()
    expect(() => SqliteStore.open({ path: dbPath, secretBox: box })).toThrow(ConfigError)
    expect(() => SqliteStore.open({ path: dbPath, secretBox: box })).toThrow(/newer/)
  })

  it('round-trips an enrollment, counts and revokes it', async () => {
    const s = openStore()
    const rec = enrollment()
    await s.createEnrollment(rec)
    await s.createEnrollment(enrollment({ id: 'enr-2' }))
    expect(await s.getEnrollment('enr-1')).toEqual(rec)
    expect(await s.getEnrollment('missing')).toBeUndefined()
    await expect(s.createEnrollment(rec)).rejects.toThrow(ExistsError)
    expect(await s.countActiveEnrollments()).toBe(2)
    expect(await s.revokeEnrollment('enr-1')).toBe(true)
    expect(await s.revokeEnrollment('enr-1')).toBe(false)
    expect(await s.revokeEnrollment('missing')).toBe(false)
    expect((await s.getEnrollment('enr-1'))?.status).toBe('revoked')
    expect(await s.countActiveEnrollments()).toBe(1)
  })

  it('round-trips a session, looked up by its id, stored by its hash', async () => {
    const s = openStore()
    await s.createEnrollment(enrollment())
    const rec = session()
    await s.createSession(rec)
    expect(await s.getSession(rec.id)).toEqual(rec)
    expect(await s.getSession(session().id)).toBeUndefined()
    await expect(s.createSession(rec)).rejects.toThrow(ExistsError)
    const db = new Database(dbPath, { readonly: true })
    const row = db.prepare('SELECT id_hash, key_id FROM sessions').get() as { id_hash: string; key_id: string }
    db.close()
    expect(row).toEqual({ id_hash: sessionIdHash(rec.id), key_id: 'k1' })
  })

  it('touches and closes sessions; revoking the enrollment closes its sessions', async () => {
    const s = openStore(() => T0 + 9)
    await s.createEnrollment(enrollment())
    const rec = session()
    await s.createSession(rec)
    await s.touchSession(rec.id, T0 + 5_000)
    expect((await s.getSession(rec.id))?.lastSeenAt).toBe(T0 + 5_000)
    await s.touchSession(rec.id, T0 + 1_000) // older: ignored
    expect((await s.getSession(rec.id))?.lastSeenAt).toBe(T0 + 5_000)
    expect(await s.closeSession(rec.id, T0 + 6_000)).toBe(true)
    expect(await s.closeSession(rec.id, T0 + 7_000)).toBe(false)
    expect(await s.closeSession('unknown', T0)).toBe(false)
    expect((await s.getSession(rec.id))?.closedAt).toBe(T0 + 6_000)

    const other = session()
    await s.createSession(other)
    await s.revokeEnrollment('enr-1')
    expect((await s.getSession(other.id))?.closedAt).toBe(T0 + 9)
  })

  it('remembers nonces until expiry and purges expired rows', async () => {
    let now = T0
    const s = openStore(() => now)
    expect(await s.rememberNonce('session-open', 'n1', T0 + 1_000)).toBe(true)
    expect(await s.rememberNonce('session-open', 'n1', T0 + 1_000)).toBe(false)
    expect(await s.rememberNonce('other-scope', 'n1', T0 + 1_000)).toBe(true)
    now = T0 + 2_000
    expect(await s.purgeExpired(now)).toBe(2)
    expect(await s.rememberNonce('session-open', 'n1', now + 1_000)).toBe(true)
    // Expired but not yet purged: also reusable.
    now = T0 + 5_000
    expect(await s.rememberNonce('session-open', 'n1', now + 1_000)).toBe(true)
  })

  it('purges expired, idle and closed sessions but keeps live ones', async () => {
    const s = openStore()
    await s.createEnrollment(enrollment())
    const live = session()
    const expired = session({ expiresAt: T0 + 1_000 })
    const idle = session({ idleTimeoutMs: 500 })
    const closed = session()
    for (const r of [live, expired, idle, closed]) await s.createSession(r)
    await s.closeSession(closed.id, T0)
    expect(await s.purgeExpired(T0 + 1_000)).toBe(3)
    expect(await s.getSession(live.id)).toBeDefined()
    expect(await s.getSession(expired.id)).toBeUndefined()
  })

  it('never writes secrets or session ids to disk in clear', async () => {
    const s = openStore()
    const enr = enrollment()
    const sess = session()
    await s.createEnrollment(enr)
    await s.createSession(sess)
    await s.touchSession(sess.id, T0 + 1)
    const files = [dbPath, `${dbPath}-wal`, `${dbPath}-shm`].filter((f) => existsSync(f))
    const disk = Buffer.concat(files.map((f) => readFileSync(f)))
    expect(disk.includes(Buffer.from(enr.userName))).toBe(true) // proves we read the data at all
    const needles: (string | Buffer)[] = [sess.id, sess.id.slice(0, 16)]
    for (const secret of [enr.sharedKey, sess.c2sKey, sess.s2cKey, Buffer.concat([sess.c2sKey, sess.s2cKey])]) {
      needles.push(secret, secret.subarray(0, 12), secret.toString('base64'), secret.toString('base64url'),
        secret.toString('hex'), secret.toString('hex').toUpperCase(), Buffer.from(sess.id, 'base64url'))
    }
    for (const n of needles) expect(disk.includes(n), `found ${typeof n === 'string' ? 'string' : 'bytes'}`).toBe(false)
  })

  it('works in memory', async () => {
    const s = SqliteStore.open({ path: ':memory:', secretBox: box })
    await s.createEnrollment(enrollment())
    expect((await s.getEnrollment('enr-1'))?.userName).toBe('alice')
    await s.close()
  })
})
