/**
 * Consistent, encrypted backups of the store and their restore.
 *
 *   backup   SQLite:      the online backup API (better-sqlite3 `db.backup()`, all pages in one
 *                         step on a connection of its own) copies a consistent snapshot while the
 *                         server runs; the snapshot file is the payload.
 *            PostgreSQL:  the logical export of backupLogical.ts (JSON lines, one REPEATABLE READ
 *                         snapshot) is the payload: no pg_dump needed, restorable into any schema.
 *            Either way the payload is encrypted into one file (backupFile.ts) under the backup
 *            key (backupKey.ts), written to a temporary file and renamed, mode 0600.
 *
 *   restore  Decrypt and verify (every record, the final one, integrity_check / row counts, the
 *            schema version) and check that the master key opens the sealed secrets, before the
 *            database is replaced: SQLite by renaming a verified file into place, PostgreSQL in
 *            one transaction. A database that holds data is replaced only with `force`.
 *
 * Plaintext never lands outside a private folder (mkdtemp, 0700) beside the database (backup)
 * or the target (restore), removed afterwards; the only secrets in a payload are the store's,
 * still sealed under the master key.
 */
import { existsSync } from 'node:fs'
import { chmod, mkdir, mkdtemp, open, readdir, rename, rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'
import Database from 'better-sqlite3'
import { BackupInvalidError, ConfigError, ExistsError, UnavailableError } from '../errors.js'
import type { BackupKey } from './backupKey.js'
import { BackupReader, BackupWriter, RECORD_MAX, syncDir, type PayloadKind } from './backupFile.js'
import { dropGatehouseObjects, exportLogical, GATEHOUSE_TABLES, hasData, importLogical, splitLines } from './backupLogical.js'
import { LATEST_SCHEMA_VERSION } from './migrations.js'
import { PgDb } from './pgDb.js'
import { SecretBox, type MasterKeyRing } from './secretBox.js'
import { advisoryLock, type SqlDb } from './sqlDb.js'
import { SqliteDb } from './sqliteDb.js'

/** The database to back up: a SQLite file (read on a connection of its own) or a PostgreSQL pool. */
export type BackupSource = { kind: 'sqlite'; path: string } | { kind: 'postgres'; db: SqlDb }
/** The database to restore into. */
export type RestoreTarget = { kind: 'sqlite'; path: string } | { kind: 'postgres'; url: string; schema?: string }

export interface BackupResult {
  file: string
  /** Size of the backup file. */
  bytes: number
  ms: number
  kind: PayloadKind
  schemaVersion: number
}

export interface RestoreResult {
  kind: PayloadKind
  /** When the backup was taken (ms since epoch). */
  createdAt: number
  schemaVersion: number
  activeEnrollments: number
  openSessions: number
  ms: number
  /** The previous database files, moved aside (SQLite with `force` over a database holding data). */
  movedAside: string[]
}

/** Pages per backup step, the most better-sqlite3 accepts: the whole database in one step (see snapshotInWorker). */
const ALL_PAGES = 0x7fff_ffff

// --- backup ----------------------------------------------------------------------------------

/** Write one encrypted backup of `source` to `out` (which must not exist yet). */
export async function createBackup(o: { source: BackupSource; key: BackupKey; out: string; now?: number }): Promise<BackupResult> {
  const started = performance.now()
  const now = o.now ?? Date.now()
  await mkdir(dirname(o.out), { recursive: true, mode: 0o700 })
  if (o.source.kind === 'postgres') {
    const w = await BackupWriter.create(o.out, o.key, 'logical', now)
    try {
      const s = await exportLogical(o.source.db, (c) => w.write(c), now)
      const bytes = await w.finish()
      return { file: o.out, bytes, ms: performance.now() - started, kind: 'logical', schemaVersion: s.schemaVersion }
    } catch (err) {
      await w.abort()
      throw err
    }
  }
  const path = o.source.path
  if (!existsSync(path)) throw new ConfigError(`no database to back up at ${path}`)
  // The plaintext snapshot stays beside the database (same disk, same trust), never beside the backups.
  const tmp = await mkdtemp(join(dirname(path), '.gatehouse-snapshot-'))
  try {
    const snapshot = join(tmp, 'snapshot.db')
    // Created 0600 by us first (the folder is 0700 anyway): SQLite would use the umask.
    await (await open(snapshot, 'wx', 0o600)).close()
    await snapshotInWorker(path, snapshot)
    const schemaVersion = finishSnapshot(snapshot)
    const w = await BackupWriter.create(o.out, o.key, 'sqlite', now)
    try {
      const fh = await open(snapshot, 'r')
      try {
        for await (const chunk of fh.createReadStream({ highWaterMark: RECORD_MAX })) await w.write(chunk as Buffer)
      } finally {
        await fh.close().catch(() => undefined)
      }
      const bytes = await w.finish()
      return { file: o.out, bytes, ms: performance.now() - started, kind: 'sqlite', schemaVersion }
    } catch (err) {
      await w.abort()
      throw err
    }
  } finally {
    await rm(tmp, { recursive: true, force: true })
  }
}

/**
 * The online backup of `source` into `dest`, on a worker thread with a connection of its own.
 * One step copies every page under one read transaction: a consistent snapshot, and no restarts
 * however busy the writers are (a stepped copy restarts after every write of another
 * connection, and the server writes all the time). A single step is synchronous, so it runs off
 * the server's event loop: measured inline, an 80 MB database held the loop for 260 ms.
 */
function snapshotInWorker(source: string, dest: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const w = new Worker(SNAPSHOT_WORKER, { eval: true, workerData: { module: require.resolve('better-sqlite3'), source, dest, pages: ALL_PAGES } })
    w.once('message', (m: { ok: boolean; message?: string }) => (m.ok ? resolve() : reject(new UnavailableError(`the database snapshot failed: ${m.message}`))))
    w.once('error', reject)
    w.once('exit', (code) => reject(new Error(`the snapshot worker exited (${code})`))) // no-op once settled
  })
}

const require = createRequire(import.meta.url)
const SNAPSHOT_WORKER = `
const { parentPort, workerData: w } = require('node:worker_threads')
const fail = (err) => parentPort.postMessage({ ok: false, message: String(err && err.message) })
let db
try {
  db = new (require(w.module))(w.source, { readonly: true, fileMustExist: true })
} catch (err) {
  fail(err)
}
if (db) {
  db.backup(w.dest, { progress: () => w.pages }).then(
    () => { db.close(); parentPort.postMessage({ ok: true }) },
    (err) => { db.close(); fail(err) },
  )
}
`

/** A snapshot as one self-contained file (rollback journal, not WAL); returns its schema version. */
function finishSnapshot(file: string): number {
  const db = new Database(file, { fileMustExist: true })
  try {
    db.pragma('journal_mode = DELETE')
    const row = db.prepare('SELECT MAX(version) AS v FROM schema_migrations').get() as { v: number | null } | undefined
    return Number(row?.v ?? 0)
  } catch (err) {
    throw new ConfigError(`the database is not a Gatehouse database (${(err as Error).message})`)
  } finally {
    db.close()
  }
}

// --- backup files in a folder ----------------------------------------------------------------

const NAME_RE = /^gatehouse-(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(\d{3})Z-[0-9a-f]{4}\.ghbackup$/

/** `gatehouse-20250102T030405678Z-1a2b.ghbackup`: sorts by time; the suffix keeps two in one ms apart. */
export function backupFileName(now = Date.now()): string {
  const stamp = new Date(now).toISOString().replace(/[-:.]/g, '')
  return `gatehouse-${stamp}-${randomBytes(2).toString('hex')}.ghbackup`
}

/** The backup files of a folder (named by backupFileName), oldest first. */
export async function listBackups(dir: string): Promise<{ file: string; at: number }[]> {
  let names: string[]
  try {
    names = await readdir(dir)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw err
  }
  return names.flatMap((n) => {
    const m = NAME_RE.exec(n)
    if (!m) return []
    const [y, mo, d, h, mi, s, ms] = m.slice(1).map(Number) as [number, number, number, number, number, number, number]
    return [{ file: join(dir, n), at: Date.UTC(y, mo - 1, d, h, mi, s, ms) }]
  }).sort((a, b) => (a.file < b.file ? -1 : 1))
}

/** Delete all but the newest `keep` backup files of the folder; returns the deleted files. Other files are left alone. */
export async function pruneBackups(dir: string, keep: number): Promise<string[]> {
  const all = await listBackups(dir)
  const old = all.slice(0, Math.max(0, all.length - keep))
  for (const b of old) await rm(b.file, { force: true })
  return old.map((b) => b.file)
}

// --- restore ---------------------------------------------------------------------------------

/**
 * Restore a backup file into an empty database (or, with `force`, over one holding data). The
 * master key `ring` must open the sealed secrets of the backup: a restore without the right
 * master key would bring back enrollments no device could use.
 */
export async function restoreBackup(o: { file: string; key: BackupKey; ring: MasterKeyRing; target: RestoreTarget; force?: boolean }): Promise<RestoreResult> {
  const started = performance.now()
  const reader = await BackupReader.open(o.file, o.key)
  try {
    const r = o.target.kind === 'postgres'
      ? await restorePostgres(reader, o.target, o.ring, o.force ?? false)
      : await restoreSqlite(reader, o.target.path, o.ring, o.force ?? false)
    return { ...r, kind: reader.header.kind, createdAt: reader.header.createdAt, ms: performance.now() - started }
  } finally {
    await reader.close()
  }
}

type Restored = Omit<RestoreResult, 'kind' | 'createdAt' | 'ms'>

async function restorePostgres(reader: BackupReader, t: { url: string; schema?: string }, ring: MasterKeyRing, force: boolean): Promise<Restored> {
  if (reader.header.kind !== 'logical') {
    throw new ConfigError('this backup holds a SQLite database file: restore it into SQLite (security.databasePath, without security.databaseUrl)')
  }
  const db = await PgDb.open({ url: t.url, schema: t.schema, max: 1 })
  try {
    return await db.transaction(async (tx) => {
      // Servers starting meanwhile wait here instead of migrating a half-restored schema.
      await advisoryLock(tx, 'migrations')
      if (!force && (await hasData(tx))) throw refuseOverwrite('the PostgreSQL database')
      await dropGatehouseObjects(tx)
      const s = await importLogical(tx, splitLines(reader.payload()))
      await checkMasterKey(tx, ring)
      return { schemaVersion: s.schemaVersion, ...(await counts(tx)), movedAside: [] }
    })
  } finally {
    await db.close()
  }
}

async function restoreSqlite(reader: BackupReader, target: string, ring: MasterKeyRing, force: boolean): Promise<Restored> {
  const existing = await sqliteState(target)
  if (existing === 'data' && !force) throw refuseOverwrite(`database ${target}`)
  await mkdir(dirname(target), { recursive: true, mode: 0o700 })
  const tmp = await mkdtemp(join(dirname(target), '.gatehouse-restore-'))
  try {
    const file = join(tmp, 'restore.db')
    let db: SqliteDb
    if (reader.header.kind === 'sqlite') {
      const fh = await open(file, 'wx', 0o600)
      try {
        for await (const chunk of reader.payload()) await fh.write(chunk)
        await fh.sync()
      } finally {
        await fh.close()
      }
      db = openRestored(file)
    } else {
      // A logical backup (from PostgreSQL) restores into SQLite too.
      db = openRestored(file)
      try {
        await db.transaction((tx) => importLogical(tx, splitLines(reader.payload())))
      } catch (err) {
        await db.close()
        throw err
      }
    }
    let result: Restored
    try {
      result = { ...(await verifySqlite(db)), movedAside: [] }
      await checkMasterKey(db, ring)
      await db.exec('PRAGMA journal_mode = DELETE') // one self-contained file to move into place
    } finally {
      await db.close()
    }
    result.movedAside = existing === 'none' ? [] : await clearTarget(target, existing === 'data')
    await rename(file, target)
    await chmod(target, 0o600)
    syncDir(dirname(target))
    return result
  } finally {
    await rm(tmp, { recursive: true, force: true })
  }
}

function openRestored(file: string): SqliteDb {
  try {
    return SqliteDb.open({ path: file })
  } catch (err) {
    throw new BackupInvalidError(`the backup does not hold a usable SQLite database (${(err as Error).message})`)
  }
}

async function verifySqlite(db: SqliteDb): Promise<Omit<Restored, 'movedAside'>> {
  let check: { integrity_check: string }[]
  try {
    check = await db.all<{ integrity_check: string }>('PRAGMA integrity_check')
  } catch (err) {
    throw new BackupInvalidError(`the restored database fails its integrity check (${(err as Error).message})`)
  }
  if (check.length !== 1 || check[0]?.integrity_check !== 'ok') {
    throw new BackupInvalidError(`the restored database fails its integrity check: ${check.slice(0, 3).map((c) => c.integrity_check).join('; ')}`)
  }
  let version: number
  try {
    version = Number((await db.get<{ v: number | null }>('SELECT MAX(version) AS v FROM schema_migrations'))?.v ?? 0)
  } catch {
    throw new BackupInvalidError('the restored database has no Gatehouse schema (no schema_migrations table)')
  }
  if (version < 1) throw new BackupInvalidError('the restored database has no Gatehouse schema version')
  if (version > LATEST_SCHEMA_VERSION) {
    throw new BackupInvalidError(`the backup has schema version ${version}, newer than this Gatehouse knows (${LATEST_SCHEMA_VERSION}); restore it with a newer Gatehouse`)
  }
  return { schemaVersion: version, ...(await counts(db)) }
}

async function counts(db: SqlDb): Promise<{ activeEnrollments: number; openSessions: number }> {
  const n = async (sql: string) => Number((await db.get<{ n: number }>(sql))?.n ?? 0)
  return {
    activeEnrollments: await n(`SELECT COUNT(*) AS n FROM enrollments WHERE status = 'active'`),
    openSessions: await n('SELECT COUNT(*) AS n FROM sessions WHERE closed_at IS NULL'),
  }
}

/** Sealed columns and the primary key their AAD names (as in src/store/queries/secrets.ts). */
const SEALED = [
  { table: 'enrollments', pk: 'id', column: 'shared_key' },
  { table: 'sessions', pk: 'id_hash', column: 'keys' },
] as const

/**
 * Every master key id the backup's sealed rows use must be in the ring and open one such row.
 * Throws ConfigError naming the key ids (ids are not secret), never a value.
 */
export async function checkMasterKey(db: SqlDb, ring: MasterKeyRing): Promise<void> {
  const box = new SecretBox(ring)
  const missing = new Set<string>()
  const wrong = new Set<string>()
  for (const t of SEALED) {
    for (const { key_id: id } of await db.all<{ key_id: string }>(`SELECT DISTINCT key_id FROM ${t.table}`)) {
      if (!ring.keys.some((k) => k.id === id)) {
        missing.add(id)
        continue
      }
      const row = await db.get<{ pk: string; secret: Buffer }>(`SELECT ${t.pk} AS pk, ${t.column} AS secret FROM ${t.table} WHERE key_id = ? LIMIT 1`, [id])
      if (!row) continue
      try {
        box.open(row.secret, { table: t.table, column: t.column, row: row.pk }).fill(0)
      } catch {
        wrong.add(id)
      }
    }
  }
  if (missing.size > 0 || wrong.size > 0) {
    const parts = [
      missing.size > 0 ? `key id(s) ${[...missing].join(', ')} are not in the master key file` : '',
      wrong.size > 0 ? `key id(s) ${[...wrong].join(', ')} do not open the stored secrets` : '',
    ].filter(Boolean)
    throw new ConfigError(`the master key file does not match this backup (${parts.join('; ')}): restore with the master key file of the installation that made the backup`)
  }
}

/** 'none' (no file), 'empty' (no Gatehouse row outside schema_migrations) or 'data'. Read-only: the file is not changed. */
async function sqliteState(path: string): Promise<'none' | 'empty' | 'data'> {
  if (!existsSync(path)) return 'none'
  let db: Database.Database | undefined
  try {
    db = new Database(path, { readonly: true, fileMustExist: true })
    const tables = (db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table'`).all() as { name: string }[])
      .map((t) => t.name).filter((n) => GATEHOUSE_TABLES.has(n) && n !== 'schema_migrations')
    return tables.some((t) => db!.prepare(`SELECT 1 FROM "${t}" LIMIT 1`).get() !== undefined) ? 'data' : 'empty'
  } catch {
    return 'data' // not a database we can read: never overwritten without --force
  } finally {
    db?.close()
  }
}

/** Remove (no data) or move aside (data, `--force`) the old database and its -wal/-shm files. */
async function clearTarget(path: string, keep: boolean): Promise<string[]> {
  const stamp = new Date().toISOString().replace(/[-:.]/g, '')
  const moved: string[] = []
  for (const suffix of ['', '-wal', '-shm', '-journal']) {
    const f = path + suffix
    if (!existsSync(f)) continue
    if (keep) {
      const aside = `${path}.before-restore-${stamp}${suffix}`
      await rename(f, aside)
      moved.push(aside)
    } else {
      await rm(f, { force: true })
    }
  }
  return moved
}

function refuseOverwrite(what: string): InstanceType<typeof ExistsError> {
  return new ExistsError(`${what} already holds data; restore refuses to overwrite it (stop the security server, then use --force to replace it)`)
}
