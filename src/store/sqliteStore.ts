import { createHash } from 'node:crypto'
import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from 'node:fs'
import { dirname } from 'node:path'
import Database from 'better-sqlite3'
import { ConfigError, ExistsError, SecretStoreError } from '../errors.js'
import { LATEST_SCHEMA_VERSION, MIGRATIONS, SCHEMA_MIGRATIONS_DDL, renderSql } from './migrations.js'
import type { SecretBox } from './secretBox.js'
import type { EnrollmentRecord, SessionRecord, Store } from './types.js'

export interface SqliteStoreOptions {
  /** Database file, or `:memory:` for tests. */
  path: string
  secretBox: SecretBox
  /** Clock for `rememberNonce` (the interface gives it no `now`); default Date.now. */
  now?: () => number
}

interface EnrollmentRow {
  id: string
  user_name: string
  device_id: string
  app_id: string
  app_version: string
  shared_key: Buffer
  created_at: number
  status: 'active' | 'revoked'
}

interface SessionRow {
  id_hash: string
  enrollment_id: string
  user_name: string
  device_id: string
  app_id: string
  app_version: string
  keys: Buffer
  created_at: number
  expires_at: number
  idle_timeout_ms: number
  last_seen_at: number
  closed_at: number | null
}

const sha256Hex = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex')

/** Session ids are bearer secrets: only their hash is stored and used as the key. */
export const sessionIdHash = sha256Hex

function statements(db: Database.Database) {
  return {
    insertEnrollment: db.prepare(`INSERT INTO enrollments
      (id, user_name, device_id, app_id, app_version, shared_key, key_id, created_at, status)
      VALUES (@id, @user_name, @device_id, @app_id, @app_version, @shared_key, @key_id, @created_at, @status)`),
    getEnrollment: db.prepare<[string], EnrollmentRow>('SELECT * FROM enrollments WHERE id = ?'),
    revokeEnrollment: db.prepare(`UPDATE enrollments SET status = 'revoked' WHERE id = ? AND status = 'active'`),
    closeEnrollmentSessions: db.prepare('UPDATE sessions SET closed_at = ? WHERE enrollment_id = ? AND closed_at IS NULL'),
    countActive: db.prepare<[], { n: number }>(`SELECT COUNT(*) AS n FROM enrollments WHERE status = 'active'`),
    insertSession: db.prepare(`INSERT INTO sessions
      (id_hash, enrollment_id, user_name, device_id, app_id, app_version, keys, key_id,
       created_at, expires_at, idle_timeout_ms, last_seen_at, closed_at)
      VALUES (@id_hash, @enrollment_id, @user_name, @device_id, @app_id, @app_version, @keys, @key_id,
       @created_at, @expires_at, @idle_timeout_ms, @last_seen_at, @closed_at)`),
    getSession: db.prepare<[string], SessionRow>('SELECT * FROM sessions WHERE id_hash = ?'),
    // Never moves last_seen_at backwards (concurrent requests may finish out of order).
    touchSession: db.prepare('UPDATE sessions SET last_seen_at = ? WHERE id_hash = ? AND closed_at IS NULL AND last_seen_at < ?'),
    closeSession: db.prepare('UPDATE sessions SET closed_at = ? WHERE id_hash = ? AND closed_at IS NULL'),
    // Insert, or take over an expired entry not yet purged; a live entry makes changes = 0.
    rememberNonce: db.prepare(`INSERT INTO nonces (scope, nonce_hash, expires_at) VALUES (?, ?, ?)
      ON CONFLICT (scope, nonce_hash) DO UPDATE SET expires_at = excluded.expires_at
      WHERE nonces.expires_at <= ?`),
    // Closed and idle-expired sessions can never be used again, so their sealed keys go too.
    purgeSessions: db.prepare(`DELETE FROM sessions WHERE expires_at <= @now OR closed_at IS NOT NULL
      OR last_seen_at + idle_timeout_ms <= @now`),
    purgeNonces: db.prepare('DELETE FROM nonces WHERE expires_at <= ?'),
    schemaVersion: db.prepare<[], { v: number | null }>('SELECT MAX(version) AS v FROM schema_migrations'),
  }
}

export class SqliteStore implements Store {
  readonly #db: Database.Database
  readonly #box: SecretBox
  readonly #now: () => number
  readonly #st: ReturnType<typeof statements>

  private constructor(db: Database.Database, box: SecretBox, now: () => number) {
    this.#db = db
    this.#box = box
    this.#now = now
    this.#st = statements(db)
  }

  static open(opts: SqliteStoreOptions): SqliteStore {
    const memory = opts.path === ':memory:'
    if (!memory) {
      mkdirSync(dirname(opts.path), { recursive: true, mode: 0o700 })
      // Create the file 0600 ourselves so it never exists with umask permissions.
      if (!existsSync(opts.path)) closeSync(openSync(opts.path, 'a', 0o600))
    }
    const db = new Database(opts.path)
    try {
      if (!memory) chmodSync(opts.path, 0o600)
      db.pragma('journal_mode = WAL')
      db.pragma('synchronous = NORMAL')
      db.pragma('foreign_keys = ON')
      db.pragma('busy_timeout = 5000')
      migrate(db, opts.path)
      // SQLite gives -wal/-shm the main file's mode; this is a belt-and-braces check.
      for (const suffix of ['-wal', '-shm']) {
        if (!memory && existsSync(opts.path + suffix)) chmodSync(opts.path + suffix, 0o600)
      }
      return new SqliteStore(db, opts.secretBox, opts.now ?? Date.now)
    } catch (err) {
      db.close()
      throw err
    }
  }

  async createEnrollment(rec: EnrollmentRecord): Promise<void> {
    const sealed = this.#box.seal(rec.sharedKey, { table: 'enrollments', column: 'shared_key', row: rec.id })
    try {
      this.#st.insertEnrollment.run({
        id: rec.id, user_name: rec.userName, device_id: rec.deviceId, app_id: rec.appId,
        app_version: rec.appVersion, shared_key: sealed, key_id: this.#box.keyIdOf(sealed),
        created_at: rec.createdAt, status: rec.status,
      })
    } catch (err) {
      throw mapConstraint(err, 'enrollment already exists')
    }
  }

  async getEnrollment(id: string): Promise<EnrollmentRecord | undefined> {
    const r = this.#st.getEnrollment.get(id)
    if (!r) return undefined
    return {
      id: r.id, userName: r.user_name, deviceId: r.device_id, appId: r.app_id, appVersion: r.app_version,
      sharedKey: this.#box.open(r.shared_key, { table: 'enrollments', column: 'shared_key', row: r.id }),
      createdAt: r.created_at, status: r.status,
    }
  }

  /** Revoking a device also closes its open sessions: revocation must take effect at once. */
  async revokeEnrollment(id: string): Promise<boolean> {
    return this.#db.transaction(() => {
      const changed = this.#st.revokeEnrollment.run(id).changes > 0
      if (changed) this.#st.closeEnrollmentSessions.run(this.#now(), id)
      return changed
    })()
  }

  async countActiveEnrollments(): Promise<number> {
    return this.#st.countActive.get()?.n ?? 0
  }

  async createSession(rec: SessionRecord): Promise<void> {
    if (rec.c2sKey.length !== rec.s2cKey.length) throw new SecretStoreError('session keys must have equal lengths')
    const idHash = sessionIdHash(rec.id)
    const plain = Buffer.concat([rec.c2sKey, rec.s2cKey])
    let sealed: Buffer
    try {
      sealed = this.#box.seal(plain, { table: 'sessions', column: 'keys', row: idHash })
    } finally {
      plain.fill(0)
    }
    try {
      this.#st.insertSession.run({
        id_hash: idHash, enrollment_id: rec.enrollmentId, user_name: rec.userName, device_id: rec.deviceId,
        app_id: rec.appId, app_version: rec.appVersion, keys: sealed, key_id: this.#box.keyIdOf(sealed),
        created_at: rec.createdAt, expires_at: rec.expiresAt, idle_timeout_ms: rec.idleTimeoutMs,
        last_seen_at: rec.lastSeenAt, closed_at: rec.closedAt,
      })
    } catch (err) {
      throw mapConstraint(err, 'session already exists') // never the id: it is a secret
    }
  }

  async getSession(id: string): Promise<SessionRecord | undefined> {
    const r = this.#st.getSession.get(sessionIdHash(id))
    if (!r) return undefined
    const keys = this.#box.open(r.keys, { table: 'sessions', column: 'keys', row: r.id_hash })
    const half = keys.length / 2
    return {
      id, enrollmentId: r.enrollment_id, userName: r.user_name, deviceId: r.device_id, appId: r.app_id,
      appVersion: r.app_version, c2sKey: keys.subarray(0, half), s2cKey: keys.subarray(half),
      createdAt: r.created_at, expiresAt: r.expires_at, idleTimeoutMs: r.idle_timeout_ms,
      lastSeenAt: r.last_seen_at, closedAt: r.closed_at,
    }
  }

  async touchSession(id: string, now: number): Promise<void> {
    this.#st.touchSession.run(now, sessionIdHash(id), now)
  }

  async closeSession(id: string, now: number): Promise<boolean> {
    return this.#st.closeSession.run(now, sessionIdHash(id)).changes > 0
  }

  async rememberNonce(scope: string, nonce: string, expiresAt: number): Promise<boolean> {
    // Hashed so arbitrary client-supplied values are stored with a fixed size.
    return this.#st.rememberNonce.run(scope, sha256Hex(nonce), expiresAt, this.#now()).changes > 0
  }

  async purgeExpired(now: number): Promise<number> {
    return this.#db.transaction(() =>
      this.#st.purgeSessions.run({ now }).changes + this.#st.purgeNonces.run(now).changes,
    )()
  }

  async schemaVersion(): Promise<number> {
    return this.#st.schemaVersion.get()?.v ?? 0
  }

  async close(): Promise<void> {
    if (this.#db.open) this.#db.close()
  }
}

/** Applies pending migrations, one transaction each; refuses a schema newer than this code. */
function migrate(db: Database.Database, path: string): void {
  db.exec(SCHEMA_MIGRATIONS_DDL)
  const current = () => db.prepare<[], { v: number | null }>('SELECT MAX(version) AS v FROM schema_migrations').get()?.v ?? 0
  const found = current()
  if (found > LATEST_SCHEMA_VERSION) {
    throw new ConfigError(
      `database ${path} has schema version ${found}, newer than this Gatehouse knows (${LATEST_SCHEMA_VERSION}); upgrade Gatehouse`,
    )
  }
  const record = db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)')
  for (const m of MIGRATIONS.filter((x) => x.version > found)) {
    // IMMEDIATE takes the write lock first, and the re-check inside makes two processes
    // starting together apply each migration exactly once.
    db.transaction(() => {
      if (current() >= m.version) return
      db.exec(renderSql(m.sql, 'sqlite'))
      record.run(m.version, m.name, Date.now())
    }).immediate()
  }
}

function mapConstraint(err: unknown, message: string): unknown {
  const code = (err as { code?: unknown }).code
  if (code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE') return new ExistsError(message)
  return err
}
