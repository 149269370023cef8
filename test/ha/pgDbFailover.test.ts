/**
 * PgDb's host list and retry rule (src/store/pgDb.ts), on real servers:
 *  - a connection cut under a statement (pg_terminate_backend: 57P01) on the local test
 *    PostgreSQL: a read is sent again, a write is not, nor a transaction whose callback ran;
 *  - a primary and a standby built by test/helpers/pgCluster.ts, listed standby first: the
 *    standby is skipped (read-only), the primary's death makes operations fail fast as
 *    UnavailableError, and once the standby is promoted the same PgDb writes to it.
 */
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { afterAll, describe, expect, it } from 'vitest'
import { UnavailableError } from '../../src/errors.js'
import { redactUrl } from '../../src/store/openStore.js'
import { PgDb } from '../../src/store/pgDb.js'
import { pgClusterSkipReason, startReplicatedPair, type PgPair } from '../helpers/pgCluster.js'
import { postgresAvailable, skipWithout } from '../helpers/services.js'

const PG_URL = process.env.GATEHOUSE_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const skipLocal = skipWithout('PostgreSQL', await postgresAvailable(PG_URL), redactUrl(PG_URL))
const clusterSkipReason = pgClusterSkipReason()
if (clusterSkipReason) console.warn(`skipping: ${clusterSkipReason}`)

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Terminate (once) the backend running a statement containing `marker`; resolves with how many were cut. */
async function cutBackendRunning(marker: string): Promise<number> {
  const admin = new pg.Client({ connectionString: PG_URL })
  admin.on('error', () => {})
  await admin.connect()
  try {
    for (let i = 0; i < 100; i++) {
      const r = await admin.query<{ ok: boolean }>(
        `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND state = 'active' AND query LIKE $1`,
        [`%${marker}%`],
      )
      if (r.rows.length > 0) return r.rows.length
      await sleep(20)
    }
    return 0
  } finally {
    await admin.end()
  }
}

describe.skipIf(skipLocal)('PgDb retry rule (connection cut under a statement)', () => {
  const schema = `gh_ha_${process.pid}_${randomBytes(3).toString('hex')}`
  let db: PgDb | undefined

  afterAll(async () => {
    await db?.close()
    const admin = await PgDb.open({ url: PG_URL })
    try {
      await admin.exec(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
    } finally {
      await admin.close()
    }
  })

  it('sends a cut read again, never a cut write nor a transaction whose callback ran', async () => {
    const hosts: string[] = []
    db = await PgDb.open({ url: PG_URL, schema, max: 3, onHostSelected: (h) => hosts.push(h) })
    await db.exec('CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER NOT NULL)')

    // A read: cut while it sleeps, answered anyway (a second pool, the same host).
    const read = db.get<{ ok: number }>('SELECT 1 AS ok FROM pg_sleep(0.3) AS read_marker_1')
    expect(await cutBackendRunning('read_marker_1')).toBe(1)
    expect(await read).toEqual({ ok: 1 })

    // A write: cut while it runs, refused as unavailable and not sent again (a retry would have inserted the row).
    const write = db.run(`INSERT INTO t (k, n) SELECT 'w', 1 FROM pg_sleep(0.3) AS write_marker_2`).then(() => undefined, (e: unknown) => e)
    expect(await cutBackendRunning('write_marker_2')).toBe(1)
    expect(await write).toBeInstanceOf(UnavailableError)
    await sleep(400)
    expect(await db.all('SELECT k FROM t')).toEqual([])

    // A transaction cut before COMMIT: rolled back by the server, and not run again (its callback
    // may have acted outside the database); the next one works on a new connection.
    let attempts = 0
    const tx = db.transaction(async (t) => {
      attempts++
      await t.run('INSERT INTO t (k, n) VALUES (?, ?)', ['x', attempts])
      await t.get('SELECT 1 AS ok FROM pg_sleep(0.3) AS tx_marker_3')
      return attempts
    }).then(() => undefined, (e: unknown) => e)
    expect(await cutBackendRunning('tx_marker_3')).toBe(1)
    expect(await tx).toBeInstanceOf(UnavailableError)
    expect(attempts).toBe(1)
    expect(await db.all('SELECT k, n FROM t')).toEqual([])
    await db.transaction(async (t) => { await t.run('INSERT INTO t (k, n) VALUES (?, ?)', ['x', 2]) })
    expect(await db.all('SELECT k, n FROM t')).toEqual([{ k: 'x', n: 2 }])

    // A plain SQL error is not a failover: no new pool.
    await expect(db.run('INSERT INTO t (k, n) VALUES (?, ?)', ['x', 9])).rejects.toThrow(/already exists/)
    expect(hosts.length).toBe(4) // start, then a new pool (same host) after each of the three cuts
    expect(new Set(hosts).size).toBe(1)
  })
})

describe.skipIf(clusterSkipReason !== undefined)('PgDb over a primary and a standby', () => {
  let pair: PgPair | undefined
  let db: PgDb | undefined

  afterAll(async () => {
    try {
      await db?.close()
    } finally {
      await pair?.cleanup()
    }
  })

  it('skips a read-only standby listed first, fails fast while no host writes, and follows the promotion', async () => {
    pair = await startReplicatedPair()
    const { primary, standby } = pair
    const p = `127.0.0.1:${primary.port}`
    const s = `127.0.0.1:${standby.port}`
    const selected: [string, string | undefined][] = []
    db = await PgDb.open({
      url: `postgres://postgres@${s},${p}/gatehouse`, // no target_session_attrs: read-write by default with several hosts
      schema: 'ha', connectionTimeoutMs: 2000, onHostSelected: (h, prev) => selected.push([h, prev]),
    })
    expect(db.host).toBe(p)
    await db.exec('CREATE TABLE t (k TEXT PRIMARY KEY)')
    await db.run('INSERT INTO t (k) VALUES (?)', ['before'])

    await primary.kill()
    const started = performance.now()
    const err = await db.run('INSERT INTO t (k) VALUES (?)', ['during']).then(() => undefined, (e: unknown) => e)
    expect(err).toBeInstanceOf(UnavailableError)
    expect((err as Error).message).toBe('database unavailable: none of the 2 hosts accepts writes')
    await expect(db.get('SELECT k FROM t')).rejects.toBeInstanceOf(UnavailableError)
    expect(performance.now() - started).toBeLessThan(3000)

    await standby.promote()
    let done = false
    for (let i = 0; !done; i++) {
      try {
        await db.run('INSERT INTO t (k) VALUES (?)', ['after'])
        done = true
      } catch (e) {
        expect(e).toBeInstanceOf(UnavailableError)
        if (i > 100) throw e
        await sleep(50)
      }
    }
    expect(db.host).toBe(s)
    expect(await db.all('SELECT k FROM t ORDER BY k')).toEqual([{ k: 'after' }, { k: 'before' }])
    expect(selected).toEqual([[p, undefined], [s, p]])
  }, 60_000)
})
