/**
 * SqlDb over better-sqlite3: one connection, synchronous calls wrapped in promises.
 *
 * Transactions take `fn`s that await, so statements of other callers could otherwise run on the
 * same connection in the middle of one (and be committed or rolled back with it). Every
 * transaction therefore goes through a FIFO queue, and any call made while a transaction is
 * open or queued joins that queue behind it. With the queue empty a call runs at once: a
 * better-sqlite3 call is synchronous, so nothing can interleave with it.
 */
import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from 'node:fs'
import { dirname } from 'node:path'
import Database from 'better-sqlite3'
import { ExistsError, UnavailableError } from '../errors.js'
import { checkParams, type SqlDb, type SqlValue } from './sqlDb.js'

const STATEMENT_CACHE_MAX = 500

export interface SqliteDbOptions {
  /** Database file, or `:memory:`. */
  path: string
}

export class SqliteDb implements SqlDb {
  readonly dialect = 'sqlite' as const
  readonly path: string
  readonly #db: Database.Database
  readonly #statements = new Map<string, Database.Statement>()
  /** Tail of the queue of transactions (and of the calls waiting behind them). */
  #tail: Promise<void> = Promise.resolve()
  /** Tasks queued or running; 0 = a call may run at once. */
  #queued = 0
  #savepoints = 0

  private constructor(db: Database.Database, path: string) {
    this.#db = db
    this.path = path
  }

  /** Open (creating the file 0600 and its folder 0700) with WAL, foreign keys and a busy timeout. */
  static open(opts: SqliteDbOptions): SqliteDb {
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
      const out = new SqliteDb(db, opts.path)
      out.fixFileModes()
      return out
    } catch (err) {
      db.close()
      throw err
    }
  }

  /**
   * SQLite gives -wal/-shm the main file's mode; this belt-and-braces check runs again once the
   * first writes (migrations) have created them.
   */
  fixFileModes(): void {
    if (this.path === ':memory:') return
    for (const suffix of ['-wal', '-shm']) {
      if (existsSync(this.path + suffix)) chmodSync(this.path + suffix, 0o600)
    }
  }

  all<T>(sql: string, params: readonly SqlValue[] = []): Promise<T[]> {
    return this.#call(() => this.#all<T>(sql, params))
  }

  get<T>(sql: string, params: readonly SqlValue[] = []): Promise<T | undefined> {
    return this.#call(() => this.#all<T>(sql, params)[0])
  }

  run(sql: string, params: readonly SqlValue[] = []): Promise<{ changes: number }> {
    return this.#call(() => this.#run(sql, params))
  }

  exec(sql: string): Promise<void> {
    return this.#call(() => {
      this.#db.exec(sql)
    })
  }

  transaction<T>(fn: (tx: SqlDb) => Promise<T>): Promise<T> {
    return this.#enqueue(async () => {
      this.#sync(() => this.#db.exec('BEGIN IMMEDIATE'))
      const tx = new SqliteTx(this)
      try {
        const out = await fn(tx)
        tx.end()
        this.#sync(() => this.#db.exec('COMMIT'))
        return out
      } catch (err) {
        tx.end()
        // SQLite may already have rolled back by itself (e.g. SQLITE_FULL).
        try {
          if (this.#db.inTransaction) this.#db.exec('ROLLBACK')
        } catch {
          // the original error says more
        }
        throw err
      }
    })
  }

  async close(): Promise<void> {
    await this.#call(() => {
      this.#statements.clear()
      if (this.#db.open) this.#db.close()
    })
  }

  // --- used by SqliteTx: straight to the connection, the queue is already held -------------

  /** @internal */
  direct = {
    all: <T>(sql: string, params: readonly SqlValue[]) => this.#sync(() => this.#all<T>(sql, params)),
    run: (sql: string, params: readonly SqlValue[]) => this.#sync(() => this.#run(sql, params)),
    exec: (sql: string) => this.#sync(() => this.#db.exec(sql)),
    savepoint: async <T>(tx: SqlDb, fn: (tx: SqlDb) => Promise<T>): Promise<T> => {
      const name = `sp${++this.#savepoints}`
      this.#sync(() => this.#db.exec(`SAVEPOINT ${name}`))
      try {
        const out = await fn(tx)
        this.#sync(() => this.#db.exec(`RELEASE ${name}`))
        return out
      } catch (err) {
        if (this.#db.inTransaction) this.#db.exec(`ROLLBACK TO ${name}; RELEASE ${name}`)
        throw err
      }
    },
  }

  // --- internals ----------------------------------------------------------------------------

  #statement(sql: string): Database.Statement {
    let st = this.#statements.get(sql)
    if (!st) {
      st = this.#db.prepare(sql)
      if (this.#statements.size >= STATEMENT_CACHE_MAX) this.#statements.clear()
      this.#statements.set(sql, st)
    }
    return st
  }

  #all<T>(sql: string, params: readonly SqlValue[]): T[] {
    checkParams(params)
    const st = this.#statement(sql)
    if (!st.reader) {
      st.run(...params)
      return []
    }
    return st.all(...params) as T[]
  }

  #run(sql: string, params: readonly SqlValue[]): { changes: number } {
    checkParams(params)
    return { changes: this.#statement(sql).run(...params).changes }
  }

  /** Run a synchronous call, mapping SQLite errors to Gatehouse errors. */
  #sync<T>(f: () => T): T {
    try {
      return f()
    } catch (err) {
      throw mapSqliteError(err)
    }
  }

  /** A call outside any transaction: at once when nothing is queued, else behind the queue. */
  #call<T>(f: () => T): Promise<T> {
    if (this.#queued === 0) {
      try {
        return Promise.resolve(this.#sync(f))
      } catch (err) {
        return Promise.reject(err)
      }
    }
    return this.#enqueue(async () => this.#sync(f))
  }

  #enqueue<T>(task: () => Promise<T>): Promise<T> {
    this.#queued++
    const prev = this.#tail
    let release!: () => void
    this.#tail = new Promise<void>((resolve) => { release = resolve })
    return (async () => {
      try {
        await prev
        return await task()
      } finally {
        this.#queued--
        release()
      }
    })()
  }
}

/** The handle a transaction's `fn` gets: runs on the connection directly, refuses use after the end. */
class SqliteTx implements SqlDb {
  readonly dialect = 'sqlite' as const
  #open = true

  constructor(private readonly owner: SqliteDb) {}

  end(): void {
    this.#open = false
  }

  #check(): void {
    if (!this.#open) throw new Error('transaction handle used after its transaction ended')
  }

  async all<T>(sql: string, params: readonly SqlValue[] = []): Promise<T[]> {
    this.#check()
    return this.owner.direct.all<T>(sql, params)
  }

  async get<T>(sql: string, params: readonly SqlValue[] = []): Promise<T | undefined> {
    return (await this.all<T>(sql, params))[0]
  }

  async run(sql: string, params: readonly SqlValue[] = []): Promise<{ changes: number }> {
    this.#check()
    return this.owner.direct.run(sql, params)
  }

  async exec(sql: string): Promise<void> {
    this.#check()
    this.owner.direct.exec(sql)
  }

  async transaction<T>(fn: (tx: SqlDb) => Promise<T>): Promise<T> {
    this.#check()
    return this.owner.direct.savepoint(this, fn)
  }

  async close(): Promise<void> {
    throw new Error('close the database, not a transaction handle')
  }
}

function mapSqliteError(err: unknown): unknown {
  const code = (err as { code?: unknown }).code
  if (code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE') {
    return new ExistsError('row already exists', { cause: err })
  }
  if (typeof code === 'string' && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'))) {
    return new UnavailableError('database is busy', { cause: err })
  }
  return err
}
