import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ConfigError, ExistsError } from '../../src/errors.js'
import { LATEST_SCHEMA_VERSION, MIGRATIONS, SCHEMA_MIGRATIONS_DDL, renderSql } from '../../src/store/migrations.js'
import { openStore } from '../../src/store/openStore.js'
import { SqliteDb } from '../../src/store/sqliteDb.js'
import { sessionIdHash, type SqlStore } from '../../src/store/sqlStore.js'
import { contractBox, enrollment, session, storeContract, T0 } from './storeContract.js'

const dirs: string[] = []
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'gh-sqlstore-'))
  dirs.push(d)
  return d
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
})

storeContract('SqlStore on SQLite', async ({ secretBox, now }) => {
  const dir = tempDir()
  const path = join(dir, 'data', 'gatehouse.db')
  const store = await openStore({ path, secretBox, now })
  return {
    store,
    db: store.db,
    async raw() {
      return Buffer.concat([path, `${path}-wal`, `${path}-shm`].filter((f) => existsSync(f)).map((f) => readFileSync(f)))
    },
    async cleanup() {
      await store.close()
    },
  }
})

describe('SqlStore on SQLite: files and migrations', () => {
  let dbPath: string
  const opened: SqlStore[] = []
  const open = async () => {
    const s = await openStore({ path: dbPath, secretBox: contractBox })
    opened.push(s)
    return s
  }
  beforeEach(() => {
    dbPath = join(tempDir(), 'data', 'gatehouse.db')
  })
  afterEach(async () => {
    for (const s of opened.splice(0)) await s.close()
  })

  it('applies migrations once, records them, and reopens idempotently', async () => {
    const s = await open()
    expect(await s.schemaVersion()).toBe(LATEST_SCHEMA_VERSION)
    await s.close()
    await open()
    const db = new Database(dbPath, { readonly: true })
    const rows = db.prepare('SELECT version, name, applied_at FROM schema_migrations ORDER BY version').all() as
      { version: number; name: string; applied_at: number }[]
    db.close()
    expect(rows.map((r) => r.version)).toEqual(MIGRATIONS.map((m) => m.version))
    expect(rows.map((r) => r.name)).toEqual(MIGRATIONS.map((m) => m.name))
    expect(rows[0]!.applied_at).toBeGreaterThan(0)
  })

  it.runIf(process.platform !== 'win32')('creates the database file 0600 in a 0700 folder', async () => {
    const s = await open()
    await s.createEnrollment(enrollment())
    expect(statSync(dbPath).mode & 0o777).toBe(0o600)
    expect(statSync(join(dbPath, '..')).mode & 0o777).toBe(0o700)
    for (const suffix of ['-wal', '-shm']) {
      if (existsSync(dbPath + suffix)) expect(statSync(dbPath + suffix).mode & 0o777).toBe(0o600)
    }
  })

  it('refuses a schema newer than the code knows', async () => {
    await (await open()).close()
    const db = new Database(dbPath)
    db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(LATEST_SCHEMA_VERSION + 1, 'from the future', Date.now())
    db.close()
    await expect(openStore({ path: dbPath, secretBox: contractBox })).rejects.toThrow(ConfigError)
    await expect(openStore({ path: dbPath, secretBox: contractBox })).rejects.toThrow(/newer/)
  })

  it('upgrades a version-1 database, keeping its enrollments and sessions readable', async () => {
    // A database as the first release left it: migration 1 only, rows sealed the same way.
    const enr = enrollment()
    const sess = session()
    const idHash = sessionIdHash(sess.id)
    const v1 = SqliteDb.open({ path: dbPath })
    await v1.exec(SCHEMA_MIGRATIONS_DDL)
    await v1.exec(renderSql(MIGRATIONS[0]!.sql, 'sqlite'))
    await v1.run('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)', [1, MIGRATIONS[0]!.name, T0])
    const key = contractBox.seal(enr.sharedKey, { table: 'enrollments', column: 'shared_key', row: enr.id })
    await v1.run('INSERT INTO enrollments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
      [enr.id, enr.userName, enr.deviceId, enr.appId, enr.appVersion, key, 'k1', enr.createdAt, enr.status])
    const keys = contractBox.seal(Buffer.concat([sess.c2sKey, sess.s2cKey]), { table: 'sessions', column: 'keys', row: idHash })
    await v1.run(`INSERT INTO sessions (id_hash, enrollment_id, user_name, device_id, app_id, app_version, keys, key_id,
      created_at, expires_at, idle_timeout_ms, last_seen_at, closed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    [idHash, sess.enrollmentId, sess.userName, sess.deviceId, sess.appId, sess.appVersion, keys, 'k1',
      sess.createdAt, sess.expiresAt, sess.idleTimeoutMs, sess.lastSeenAt, sess.closedAt])
    await v1.close()

    const s = await open()
    expect(await s.schemaVersion()).toBe(LATEST_SCHEMA_VERSION)
    expect(await s.getEnrollment(enr.id)).toEqual(enr)
    expect(await s.getSession(sess.id)).toEqual(sess)
    expect((await s.listSessions({ userName: 'alice' })).map((x) => x.idHash)).toEqual([idHash])
    expect(await s.closeSessionsWhere({ deviceId: 'dev-1' }, T0 + 1)).toEqual([idHash])
    expect(await s.appendAudit({ at: T0, actor: 'a', actorRole: 'admin', action: 'x', target: 't', remote: '', details: {} })).toBe(1)
  })

  it('works in memory', async () => {
    const s = await openStore({ path: ':memory:', secretBox: contractBox })
    opened.push(s)
    await s.createEnrollment(enrollment())
    expect((await s.getEnrollment('enr-1'))?.userName).toBe('alice')
  })

  it('needs a path or a URL', async () => {
    await expect(openStore({ secretBox: contractBox })).rejects.toThrow(ConfigError)
  })
})

describe('SqliteDb', () => {
  let db: SqliteDb
  beforeEach(async () => {
    db = SqliteDb.open({ path: join(tempDir(), 'db.sqlite') })
    await db.exec('CREATE TABLE t (k TEXT PRIMARY KEY, v BIGINT NOT NULL, b BLOB NULL)')
  })
  afterEach(async () => {
    await db.close()
  })

  it('round-trips numbers, text, bytes and null; maps duplicates to ExistsError', async () => {
    const bytes = randomBytes(40)
    await db.run('INSERT INTO t (k, v, b) VALUES (?, ?, ?)', ['a', T0, bytes])
    await db.run('INSERT INTO t (k, v, b) VALUES (?, ?, ?)', ['b', 2, null])
    expect(await db.all('SELECT k, v, b FROM t ORDER BY k')).toEqual([{ k: 'a', v: T0, b: bytes }, { k: 'b', v: 2, b: null }])
    expect(await db.get('SELECT k FROM t WHERE k = ?', ['zz'])).toBeUndefined()
    await expect(db.run('INSERT INTO t (k, v) VALUES (?, ?)', ['a', 1])).rejects.toThrow(ExistsError)
    expect(await db.run('UPDATE t SET v = v + 1')).toEqual({ changes: 2 })
  })

  it('commits, rolls back, and nests as savepoints', async () => {
    await db.transaction(async (tx) => { await tx.run('INSERT INTO t (k, v) VALUES (?, ?)', ['a', 1]) })
    await expect(db.transaction(async (tx) => {
      await tx.run('INSERT INTO t (k, v) VALUES (?, ?)', ['b', 1])
      throw new Error('boom')
    })).rejects.toThrow('boom')
    await db.transaction(async (tx) => {
      await tx.run('INSERT INTO t (k, v) VALUES (?, ?)', ['c', 1])
      await expect(tx.transaction(async (inner) => {
        await inner.run('INSERT INTO t (k, v) VALUES (?, ?)', ['d', 1])
        throw new Error('inner')
      })).rejects.toThrow('inner')
    })
    expect((await db.all<{ k: string }>('SELECT k FROM t ORDER BY k')).map((r) => r.k)).toEqual(['a', 'c'])
  })

  it('makes calls from other callers wait while a transaction is open', async () => {
    let inside!: () => void
    const entered = new Promise<void>((r) => { inside = r })
    let resume!: () => void
    const gate = new Promise<void>((r) => { resume = r })
    const tx = db.transaction(async (t) => {
      await t.run('INSERT INTO t (k, v) VALUES (?, ?)', ['a', 1])
      inside()
      await gate // the transaction stays open across a real wait
      await t.run('UPDATE t SET v = ? WHERE k = ?', [2, 'a'])
    })
    await entered
    const seen = db.get<{ v: number }>('SELECT v FROM t WHERE k = ?', ['a'])
    const write = db.run('INSERT INTO t (k, v) VALUES (?, ?)', ['b', 1])
    await new Promise((r) => setTimeout(r, 20))
    resume()
    await tx
    expect(await seen).toEqual({ v: 2 }) // never the half-done state v = 1
    expect(await write).toEqual({ changes: 1 })
    let stale!: Parameters<Parameters<SqliteDb['transaction']>[0]>[0]
    await db.transaction(async (t) => { stale = t })
    await expect(stale.get('SELECT 1')).rejects.toThrow(/ended/)
  })
})
