/**
 * SqlDb over a `pg` connection pool. Transactions run on a dedicated client (BEGIN / COMMIT /
 * ROLLBACK, savepoints when nested); everything else on any pooled client.
 *
 * BIGINT (int8, type 20) is parsed as a JS number for this pool only (the `types` option, not the
 * global pg.types): every BIGINT we store is a ms timestamp or a counter, far below 2^53.
 *
 * Several hosts and failover (pg 8 takes one host per pool; pgHosts.ts splits libpq's multi-host
 * URLs): one pool at a time, to the first host in URL order that accepts a connection and, for
 * `target_session_attrs=read-write` (the default with several hosts), answers
 * `SHOW transaction_read_only` = off — checked on every new connection of the pool, so a pool
 * never serves from a standby.
 *
 *   query ──▶ pool to host k ──ok──▶ answer
 *                  │ connection refused/lost, 57P01-03 shutdown, 25006 read-only
 *                  ▼
 *        drop the pool, find the first writable host again (one search at a time; after a search
 *        that found none, others fail at once for REDISCOVER_MS) ──▶ retry once if safe, else
 *        UnavailableError (503)
 *
 * Retry rule — an operation is sent again, once, to the new host only when doing so can neither
 * apply a write twice nor repeat what the caller did meanwhile:
 *   - the failure happened while getting a connection, or on a transaction's BEGIN (nothing was
 *     sent, the callback has not run);
 *   - a single statement that reads (SELECT outside a transaction), whatever the failure;
 *   - a single statement refused with 25006 (read-only server: nothing was written).
 * Everything else reaches the caller as UnavailableError, and the device retries the whole
 * request: a single write whose connection failed after it was sent may have committed (with
 * synchronous replication too: a server killed while waiting for its standby has already
 * committed locally); a transaction whose callback has run is never run again, even when its
 * connection failed before COMMIT (so nothing was committed), because callbacks may act outside
 * the database (a backup export writes its file as it reads, a restore consumes its input).
 */
import pg from 'pg'
import { ConfigError, ExistsError, UnavailableError } from '../errors.js'
import { parsePgHosts, type PgHost, type TargetSessionAttrs } from './pgHosts.js'
import { advisoryLock, checkParams, toPgPlaceholders, type SqlDb, type SqlValue } from './sqlDb.js'

const INT8_OID = 20
const SCHEMA_RE = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/
/** After a search that found no usable host, fail at once for this long rather than search again per query. */
const REDISCOVER_MS = 100

export interface PgDbOptions {
  /**
   * postgres:// or postgresql:// URL (passed as `connectionString`). Several hosts in libpq's
   * form (`postgres://u@h1:5432,h2:5432/db?target_session_attrs=read-write`): see the module comment.
   */
  url: string
  /**
   * Schema holding every table; created if missing and put first (alone) on each connection's
   * search_path. Default: the server's search_path (normally `public`).
   */
  schema?: string
  /** Pool size. Default 10. */
  max?: number
  /** Longest a statement may run before the server cancels it. Default 30 000 ms. */
  statementTimeoutMs?: number
  /** Longest to wait for a new connection, per host tried. Default 5 000 ms. */
  connectionTimeoutMs?: number
  /** Errors of idle pooled connections (the next query gets an error of its own anyway). */
  onIdleError?: (err: Error) => void
  /** Told each time a pool is opened to a host: at start (`previous` undefined) and after each failover. */
  onHostSelected?: (host: string, previous: string | undefined) => void
}

const parseInt8 = (value: string): number => Number(value)

const types: pg.CustomTypesConfig = {
  getTypeParser: ((id: number, format?: 'text' | 'binary') =>
    id === INT8_OID && format !== 'binary' ? parseInt8 : pg.types.getTypeParser(id, format)) as pg.CustomTypesConfig['getTypeParser'],
}

/** Double quotes for an identifier already checked against SCHEMA_RE. */
const ident = (name: string) => `"${name}"`

/** A statement that only reads, outside a transaction: safe to send again. */
const READ_RE = /^\s*SELECT\b/i

interface Target {
  readonly pool: pg.Pool
  readonly host: string
}

export class PgDb implements SqlDb {
  readonly dialect = 'postgres' as const
  readonly schema: string | undefined
  readonly #o: PgDbOptions
  readonly #hosts: PgHost[]
  readonly #attrs: TargetSessionAttrs
  #current: Target | undefined
  #finding: Promise<Target> | undefined
  #lastFailure: { at: number; err: unknown } | undefined
  #lastHost: string | undefined
  /** Pools dropped after a failure, still ending (their checked-out clients finish first). */
  readonly #retiring = new Set<Promise<void>>()
  #closed = false

  private constructor(opts: PgDbOptions, hosts: PgHost[], attrs: TargetSessionAttrs) {
    this.#o = opts
    this.schema = opts.schema
    this.#hosts = hosts
    this.#attrs = attrs
  }

  /** Connect (to the first usable host), check the database answers and create the schema if one is named. */
  static async open(opts: PgDbOptions): Promise<PgDb> {
    if (!/^postgres(ql)?:\/\//.test(opts.url)) throw new ConfigError('database URL must start with postgres:// or postgresql://')
    if (opts.schema !== undefined && !SCHEMA_RE.test(opts.schema)) {
      throw new ConfigError(`database schema name must match ${SCHEMA_RE}`)
    }
    const { hosts, targetSessionAttrs } = parsePgHosts(opts.url)
    const db = new PgDb(opts, hosts, targetSessionAttrs)
    const schema = opts.schema
    try {
      if (schema !== undefined) {
        // Under a lock: two CREATE SCHEMA IF NOT EXISTS at once can still collide in the catalog.
        await db.transaction(async (tx) => {
          await advisoryLock(tx, 'create-schema')
          await tx.exec(`CREATE SCHEMA IF NOT EXISTS ${ident(schema)}`)
        })
      } else {
        await db.get('SELECT 1 AS ok')
      }
      return db
    } catch (err) {
      await db.close()
      throw err
    }
  }

  /** The host in use (`host:port` as written in the URL); undefined while none is connected. */
  get host(): string | undefined {
    return this.#current?.host
  }

  async all<T>(sql: string, params: readonly SqlValue[] = []): Promise<T[]> {
    checkParams(params)
    const text = params.length > 0 ? toPgPlaceholders(sql) : sql
    return (await this.#run(READ_RE.test(sql), (c) => c.query<T & pg.QueryResultRow>(text, params as unknown[]))).rows
  }

  async get<T>(sql: string, params: readonly SqlValue[] = []): Promise<T | undefined> {
    return (await this.all<T>(sql, params))[0]
  }

  async run(sql: string, params: readonly SqlValue[] = []): Promise<{ changes: number }> {
    checkParams(params)
    const text = params.length > 0 ? toPgPlaceholders(sql) : sql
    return { changes: (await this.#run(false, (c) => c.query(text, params as unknown[]))).rowCount ?? 0 }
  }

  async exec(sql: string): Promise<void> {
    await this.#run(false, (c) => c.query(sql))
  }

  async transaction<T>(fn: (tx: SqlDb) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const target = await this.#target()
      const client = await this.#connect(target, attempt)
      if (!client) continue
      const state: { lost: unknown } = { lost: undefined }
      const onError = (err: Error) => { state.lost ??= err }
      client.on('error', onError)
      const tx = new PgTx(async (sql, params) => {
        checkParams(params)
        try {
          return await client.query(params.length > 0 ? toPgPlaceholders(sql) : sql, params as unknown[])
        } catch (err) {
          if (isFailover(err)) state.lost ??= err
          throw mapPgError(err)
        }
      })
      let begun = false
      try {
        await tx.command('BEGIN')
        begun = true
        const out = await fn(tx)
        tx.end()
        await tx.command('COMMIT')
        client.off('error', onError)
        client.release()
        return out
      } catch (err) {
        tx.end()
        let broken = state.lost
        if (broken === undefined) {
          try {
            await client.query('ROLLBACK')
          } catch (rollbackErr) {
            broken = rollbackErr // the connection is unusable: destroy it rather than pool it
          }
        }
        client.off('error', onError)
        client.release(broken === undefined ? undefined : asError(broken))
        if (state.lost !== undefined) {
          this.#drop(target)
          if (attempt === 0 && !begun) continue // the callback never ran
          throw mapPgError(state.lost)
        }
        throw err
      }
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    const current = this.#current
    this.#current = undefined
    await this.#finding?.catch(() => undefined)
    await Promise.all([current?.pool.end(), ...this.#retiring])
  }

  /** One statement on a pooled client, with the failover and retry rule of the module comment. */
  async #run<R>(read: boolean, op: (c: pg.PoolClient) => Promise<R>): Promise<R> {
    for (let attempt = 0; ; attempt++) {
      const target = await this.#target()
      const client = await this.#connect(target, attempt)
      if (!client) continue
      // A checked-out client has no error listener of the pool's: an error between statements
      // would otherwise be an uncaught 'error' event.
      let lost: unknown
      const onError = (err: Error) => { lost ??= err }
      client.on('error', onError)
      try {
        const out = await op(client)
        client.off('error', onError)
        client.release(lost === undefined ? undefined : asError(lost))
        return out
      } catch (err) {
        client.off('error', onError)
        const failover = isFailover(err)
        // Plain SQL errors (a duplicate key…) leave the connection usable; anything else destroys it.
        client.release(failover || !hasSqlState(err) ? asError(err) : undefined)
        if (failover) {
          this.#drop(target)
          if (attempt === 0 && (read || provesNothingWritten(err))) continue
        }
        throw mapPgError(err)
      }
    }
  }

  /**
   * A client of `target`'s pool; undefined when getting one failed in a way that calls for
   * another host and a first attempt may try again (nothing was sent).
   */
  async #connect(target: Target, attempt: number): Promise<pg.PoolClient | undefined> {
    try {
      return await target.pool.connect()
    } catch (err) {
      if (!isFailover(err)) throw mapPgError(err)
      this.#drop(target)
      if (attempt === 0) return undefined
      throw mapPgError(err)
    }
  }

  /** The pool in use, or the search for a usable host (one at a time; see REDISCOVER_MS). */
  #target(): Promise<Target> {
    if (this.#closed) return Promise.reject(new UnavailableError('database closed'))
    if (this.#current) return Promise.resolve(this.#current)
    const failed = this.#lastFailure
    if (failed && Date.now() - failed.at < REDISCOVER_MS) return Promise.reject(failed.err)
    this.#finding ??= this.#find().finally(() => { this.#finding = undefined })
    return this.#finding
  }

  /** Try every host in URL order; keep a pool to the first that passes the target_session_attrs check. */
  async #find(): Promise<Target> {
    const errors: unknown[] = []
    for (const h of this.#hosts) {
      const pool = this.#newPool(h)
      try {
        // The pool's onConnect runs the check: a host that is read-only fails here.
        const client = await pool.connect()
        client.release()
      } catch (err) {
        errors.push(err)
        void pool.end().catch(() => undefined)
        continue
      }
      if (this.#closed) {
        await pool.end()
        throw new UnavailableError('database closed')
      }
      const target = { pool, host: h.label }
      this.#current = target
      this.#lastFailure = undefined
      const previous = this.#lastHost
      this.#lastHost = h.label
      this.#o.onHostSelected?.(h.label, previous)
      return target
    }
    const mapped = errors.map(mapPgError)
    // A refusal that is not an outage (wrong password, no such database) is worth more than "unavailable".
    const hard = mapped.find((e) => !(e instanceof UnavailableError))
    const err = hard ?? (this.#hosts.length === 1
      ? mapped[0]
      : new UnavailableError(`database unavailable: none of the ${this.#hosts.length} hosts accepts ${this.#attrs === 'any' ? 'connections' : 'writes'}`, { cause: new AggregateError(errors) }))
    this.#lastFailure = { at: Date.now(), err }
    throw err
  }

  #newPool(h: PgHost): pg.Pool {
    const schema = this.schema
    const attrs = this.#attrs
    const pool = new pg.Pool({
      connectionString: h.url,
      application_name: 'gatehouse',
      max: this.#o.max ?? 10,
      statement_timeout: this.#o.statementTimeoutMs ?? 30_000,
      connectionTimeoutMillis: this.#o.connectionTimeoutMs ?? 5_000,
      // A client stuck inside a transaction must not hold locks forever.
      idle_in_transaction_session_timeout: 60_000,
      types,
      onConnect: async (client: pg.ClientBase) => {
        if (attrs !== 'any') await checkSessionAttrs(client, attrs)
        if (schema !== undefined) await client.query(`SET search_path TO ${ident(schema)}`)
      },
    })
    pool.on('error', (err) => {
      this.#o.onIdleError?.(err)
      // An idle connection cut by a dying server: find the next host now rather than on the next query.
      if (isFailover(err) && this.#current?.pool === pool) this.#drop(this.#current)
    })
    return pool
  }

  /** Stop using `target` (if still current): the next operation searches the hosts again. */
  #drop(target: Target): void {
    if (this.#current !== target) return
    this.#current = undefined
    const ending = target.pool.end().catch(() => undefined)
    this.#retiring.add(ending)
    void ending.finally(() => this.#retiring.delete(ending))
  }
}

/** Refuse a server that does not meet target_session_attrs (as a 25006 error: nothing was written). */
async function checkSessionAttrs(client: pg.ClientBase, attrs: Exclude<TargetSessionAttrs, 'any'>): Promise<void> {
  const ok = attrs === 'primary'
    ? (await client.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]?.r === false
    : (await client.query<{ transaction_read_only: string }>('SHOW transaction_read_only')).rows[0]?.transaction_read_only === 'off'
  if (!ok) throw Object.assign(new Error(`server is not ${attrs} (a standby, or not promoted yet)`), { code: '25006' })
}

type Query = (sql: string, params: readonly SqlValue[]) => Promise<pg.QueryResult>

class PgTx implements SqlDb {
  readonly dialect = 'postgres' as const
  #open = true
  #savepoints = 0

  constructor(private readonly query: Query) {}

  end(): void {
    this.#open = false
  }

  #check(): void {
    if (!this.#open) throw new Error('transaction handle used after its transaction ended')
  }

  async command(sql: string): Promise<void> {
    await this.query(sql, [])
  }

  async all<T>(sql: string, params: readonly SqlValue[] = []): Promise<T[]> {
    this.#check()
    return (await this.query(sql, params)).rows as T[]
  }

  async get<T>(sql: string, params: readonly SqlValue[] = []): Promise<T | undefined> {
    return (await this.all<T>(sql, params))[0]
  }

  async run(sql: string, params: readonly SqlValue[] = []): Promise<{ changes: number }> {
    this.#check()
    return { changes: (await this.query(sql, params)).rowCount ?? 0 }
  }

  async exec(sql: string): Promise<void> {
    this.#check()
    await this.query(sql, [])
  }

  async transaction<T>(fn: (tx: SqlDb) => Promise<T>): Promise<T> {
    this.#check()
    const name = `sp${++this.#savepoints}`
    await this.command(`SAVEPOINT ${name}`)
    try {
      const out = await fn(this)
      await this.command(`RELEASE SAVEPOINT ${name}`)
      return out
    } catch (err) {
      await this.command(`ROLLBACK TO SAVEPOINT ${name}`)
      throw err
    }
  }

  async close(): Promise<void> {
    throw new Error('close the database, not a transaction handle')
  }
}

/** SQLSTATEs meaning the server or the connection is gone or refusing work. */
const UNAVAILABLE_STATES = new Set(['57P01', '57P02', '57P03', '53300', '53400', '25006'])
/** SQLSTATEs after which this server will not serve us: shut down, crashed, starting, read-only. */
const FAILOVER_STATES = new Set(['57P01', '57P02', '57P03', '25006'])
/** Failures that prove the statement wrote nothing. */
const NOTHING_WRITTEN_STATES = new Set(['25006', '57P03'])
const NET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE'])
const CONNECTION_LOST_RE = /Connection terminated|timeout exceeded when trying to connect|connection error|Connection refused/i

function codeOf(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : ''
}

function messageOf(err: unknown): string {
  const message = (err as { message?: unknown } | null)?.message
  return typeof message === 'string' ? message : ''
}

/** A SQL error reported by a live server (it carries a five-character SQLSTATE). */
function hasSqlState(err: unknown): boolean {
  return /^[0-9A-Z]{5}$/.test(codeOf(err))
}

/** The connection or the server is gone, or the server cannot take our work: use another host. */
function isFailover(err: unknown): boolean {
  const code = codeOf(err)
  if (code.startsWith('08') || FAILOVER_STATES.has(code) || NET_CODES.has(code) || CONNECTION_LOST_RE.test(messageOf(err))) return true
  return err instanceof AggregateError && err.errors.some(isFailover)
}

function provesNothingWritten(err: unknown): boolean {
  return NOTHING_WRITTEN_STATES.has(codeOf(err))
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err))
}

function mapPgError(err: unknown): unknown {
  if (err instanceof UnavailableError || err instanceof ConfigError) return err
  const code = codeOf(err)
  // Never the server's detail: it quotes the conflicting key.
  if (code === '23505') return new ExistsError('row already exists', { cause: err })
  if (code === '57014') return new UnavailableError('database statement timed out', { cause: err })
  if (code.startsWith('08') || UNAVAILABLE_STATES.has(code) || NET_CODES.has(code) || CONNECTION_LOST_RE.test(messageOf(err))) {
    return new UnavailableError('database unavailable', { cause: err })
  }
  if (err instanceof AggregateError && err.errors.some((x) => mapPgError(x) instanceof UnavailableError)) {
    return new UnavailableError('database unavailable', { cause: err }) // several addresses, none reachable
  }
  return err
}
