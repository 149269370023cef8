/** Open the configured store: PostgreSQL when a URL is given, else the SQLite file. */
import { ConfigError } from '../errors.js'
import { PgDb, type PgDbOptions } from './pgDb.js'
import type { SecretBox } from './secretBox.js'
import { SqliteDb } from './sqliteDb.js'
import type { SqlDb } from './sqlDb.js'
import { SqlStore } from './sqlStore.js'

export interface OpenStoreOptions {
  /** SQLite database file, or ':memory:'. Used when `url` is not set. */
  path?: string
  /** postgres:// or postgresql:// URL; wins over `path`. */
  url?: string
  /** PostgreSQL only: schema holding the tables (created if missing). */
  schema?: string
  secretBox: SecretBox
  /** Clock for the methods whose interface gives no `now`; default Date.now. */
  now?: () => number
  /** PostgreSQL only: pool size and timeouts. */
  pg?: Omit<PgDbOptions, 'url' | 'schema'>
}

/** A URL fit for messages and logs: the password replaced by `***`. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z]+:\/\/[^:@/]*):[^@/]*@/i, '$1:***@')
}

/** Open the database, apply pending migrations and return the store; closes the database on failure. */
export async function openStore(o: OpenStoreOptions): Promise<SqlStore> {
  let db: SqlDb
  let where: string
  if (o.url) {
    db = await PgDb.open({ ...o.pg, url: o.url, schema: o.schema })
    where = `${redactUrl(o.url)}${o.schema ? ` (schema ${o.schema})` : ''}`
  } else if (o.path) {
    db = SqliteDb.open({ path: o.path })
    where = o.path
  } else {
    throw new ConfigError('no database configured: set security.databaseUrl or security.databasePath')
  }
  try {
    const store = await SqlStore.open(db, o.secretBox, { now: o.now, where })
    if (db instanceof SqliteDb) db.fixFileModes()
    return store
  } catch (err) {
    await db.close()
    throw err
  }
}
