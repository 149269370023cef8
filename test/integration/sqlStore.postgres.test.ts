/**
 * The store contract on a real PostgreSQL (GATEHOUSE_PG_URL, default the local test database),
 * each store in a fresh schema dropped afterwards. Skipped when PostgreSQL is not reachable,
 * unless GATEHOUSE_REQUIRE_SERVICES=1.
 */
import { randomBytes } from 'node:crypto'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { ConfigError, ExistsError, UnavailableError } from '../../src/errors.js'
import { LATEST_SCHEMA_VERSION, MIGRATIONS, SCHEMA_MIGRATIONS_DDL, renderSql } from '../../src/store/migrations.js'
import { openStore, redactUrl } from '../../src/store/openStore.js'
import { PgDb } from '../../src/store/pgDb.js'
import { sessionIdHash, type SqlStore } from '../../src/store/sqlStore.js'
import { postgresAvailable, skipWithout } from '../helpers/services.js'
import { contractBox, enrollment, session, storeContract, T0 } from '../unit/storeContract.js'

const PG_URL = process.env.GATEHOUSE_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const skip = skipWithout('PostgreSQL', await postgresAvailable(PG_URL), redactUrl(PG_URL))

const RUN = `gh_t_${process.pid}_${randomBytes(3).toString('hex')}`
let n = 0
const schemas = new Set<string>()
function freshSchema(): string {
  const schema = `${RUN}_${++n}`
  schemas.add(schema)
  return schema
}

/** Drop a test schema (CASCADE: tables, triggers, the trigger function). */
async function dropSchema(schema: string): Promise<void> {
  const admin = await PgDb.open({ url: PG_URL })
  try {
    await admin.exec(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
    schemas.delete(schema)
  } finally {
    await admin.close()
  }
}

afterAll(async () => {
  for (const schema of [...schemas]) await dropSchema(schema) // whatever a failed test left behind
})

describe.skipIf(skip)('SqlStore on PostgreSQL', () => {
  storeContract('store contract', async ({ secretBox, now }) => {
    const schema = freshSchema()
    const store = await openStore({ url: PG_URL, schema, secretBox, now })
    return {
      store,
      db: store.db,
      async raw() {
        // Every column of every table of the schema, as text (bytea as \x hex).
        const columns = await store.db.all<{ table_name: string; column_name: string }>(
          `SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = ? ORDER BY table_name, ordinal_position`,
          [schema],
        )
        const parts: string[] = []
        for (const c of columns) {
          const rows = await store.db.all<{ v: string | null }>(`SELECT CAST("${c.column_name}" AS TEXT) AS v FROM "${c.table_name}"`)
          parts.push(...rows.map((r) => r.v ?? ''))
        }
        expect(columns.length).toBeGreaterThan(20)
        return Buffer.from(parts.join('\n'), 'utf8')
      },
      async cleanup() {
        await store.close()
        await dropSchema(schema)
      },
    }
  })

  describe('migrations and connections', () => {
    const opened: SqlStore[] = []
    afterEach(async () => {
      for (const s of opened.splice(0)) await s.close()
    })

    it('applies each migration once when two servers start together on an empty schema', async () => {
      const schema = freshSchema()
      const both = await Promise.all([
        openStore({ url: PG_URL, schema, secretBox: contractBox }),
        openStore({ url: PG_URL, schema, secretBox: contractBox }),
      ])
      opened.push(...both)
      for (const s of both) expect(await s.schemaVersion()).toBe(LATEST_SCHEMA_VERSION)
      const rows = await both[0].db.all<{ version: number }>('SELECT version FROM schema_migrations ORDER BY version')
      expect(rows.map((r) => r.version)).toEqual(MIGRATIONS.map((m) => m.version))
      await both[0].createEnrollment(enrollment())
      expect((await both[1].getEnrollment('enr-1'))?.userName).toBe('alice')
      await dropSchemaAfter(schema, opened)
    })

    it('upgrades a version-1 schema, keeping its enrollments and sessions readable', async () => {
      const schema = freshSchema()
      const enr = enrollment()
      const sess = session()
      const idHash = sessionIdHash(sess.id)
      const v1 = await PgDb.open({ url: PG_URL, schema })
      await v1.exec(SCHEMA_MIGRATIONS_DDL)
      await v1.exec(renderSql(MIGRATIONS[0]!.sql, 'postgres'))
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

      const s = await openStore({ url: PG_URL, schema, secretBox: contractBox })
      opened.push(s)
      expect(await s.schemaVersion()).toBe(LATEST_SCHEMA_VERSION)
      expect(await s.getEnrollment(enr.id)).toEqual(enr)
      expect(await s.getSession(sess.id)).toEqual(sess)
      expect(await s.closeSessionsWhere({ userName: 'alice' }, T0 + 1)).toEqual([idHash])
      await dropSchemaAfter(schema, opened)
    })

    it('refuses a schema newer than the code knows', async () => {
      const schema = freshSchema()
      const s = await openStore({ url: PG_URL, schema, secretBox: contractBox })
      await s.db.run('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)', [LATEST_SCHEMA_VERSION + 1, 'future', T0])
      await s.close()
      await expect(openStore({ url: PG_URL, schema, secretBox: contractBox })).rejects.toThrow(ConfigError)
      await expect(openStore({ url: PG_URL, schema, secretBox: contractBox })).rejects.toThrow(/newer/)
      await dropSchema(schema)
    })

    it('maps duplicates to ExistsError and parses BIGINT as numbers, bytes as Buffers', async () => {
      const schema = freshSchema()
      const db = await PgDb.open({ url: PG_URL, schema })
      try {
        await db.exec('CREATE TABLE t (k TEXT PRIMARY KEY, v BIGINT NOT NULL, b BYTEA NULL)')
        const bytes = randomBytes(40)
        await db.run('INSERT INTO t (k, v, b) VALUES (?, ?, ?)', ['a', T0, bytes])
        expect(await db.get('SELECT k, v, b, COUNT(*) OVER () AS n FROM t')).toEqual({ k: 'a', v: T0, b: bytes, n: 1 })
        await expect(db.run('INSERT INTO t (k, v) VALUES (?, ?)', ['a', 1])).rejects.toThrow(ExistsError)
        await expect(db.transaction(async (tx) => {
          await tx.run('INSERT INTO t (k, v) VALUES (?, ?)', ['b', 1])
          await tx.transaction(async (inner) => { await inner.run('INSERT INTO t (k, v) VALUES (?, ?)', ['c', 1]) })
          throw new Error('boom')
        })).rejects.toThrow('boom')
        expect(await db.all('SELECT k FROM t')).toEqual([{ k: 'a' }])
      } finally {
        await db.close()
        await dropSchema(schema)
      }
    })

    it('reports an unreachable server as UnavailableError, without the password', async () => {
      const err = await openStore({ url: 'postgres://gatehouse:s3cret@127.0.0.1:1/x', secretBox: contractBox, pg: { connectionTimeoutMs: 2000 } })
        .then(() => undefined, (e: unknown) => e)
      expect(err).toBeInstanceOf(UnavailableError)
      expect(String((err as Error).message)).not.toContain('s3cret')
    })
  })
})

async function dropSchemaAfter(schema: string, opened: SqlStore[]): Promise<void> {
  for (const s of opened.splice(0)) await s.close()
  await dropSchema(schema)
}
