/** Applies the pending migrations of migrations.ts, on either engine. */
import { ConfigError } from '../errors.js'
import { LATEST_SCHEMA_VERSION, MIGRATIONS, SCHEMA_MIGRATIONS_DDL, renderMigration } from './migrations.js'
import { advisoryLock, type SqlDb } from './sqlDb.js'

const LOCK = 'migrations'

export async function schemaVersion(db: SqlDb): Promise<number> {
  const r = await db.get<{ v: number | null }>('SELECT MAX(version) AS v FROM schema_migrations')
  return Number(r?.v ?? 0)
}

/**
 * Each pending migration runs in its own transaction and is recorded in schema_migrations.
 * Servers starting together against one database apply each migration once: every step takes
 * the write lock first (SQLite `BEGIN IMMEDIATE`, PostgreSQL an advisory lock) and re-reads the
 * version inside. A database newer than this code is refused (ConfigError). `where` names the
 * database in that message (never with a password).
 */
export async function migrate(db: SqlDb, where: string): Promise<void> {
  await db.transaction(async (tx) => {
    await advisoryLock(tx, LOCK)
    await tx.exec(SCHEMA_MIGRATIONS_DDL)
  })
  const found = await schemaVersion(db)
  if (found > LATEST_SCHEMA_VERSION) {
    throw new ConfigError(
      `database ${where} has schema version ${found}, newer than this Gatehouse knows (${LATEST_SCHEMA_VERSION}); upgrade Gatehouse`,
    )
  }
  for (const m of MIGRATIONS) {
    if (m.version <= found) continue
    await db.transaction(async (tx) => {
      await advisoryLock(tx, LOCK)
      if ((await schemaVersion(tx)) >= m.version) return
      await tx.exec(renderMigration(m, db.dialect))
      await tx.run('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)', [m.version, m.name, Date.now()])
    })
  }
}
