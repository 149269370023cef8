/**
 * The small async SQL interface the store is written against, implemented for SQLite
 * (better-sqlite3, `sqliteDb.ts`) and PostgreSQL (pg, `pgDb.ts`), so every query is written once.
 *
 * Conventions both engines follow:
 * - Placeholders are `?`, positional. The PostgreSQL adapter rewrites them to `$1..$n` by plain
 *   text substitution, so SQL that takes parameters must never contain a literal `?` (not in a
 *   string literal, an identifier or a comment). Every query of the store obeys this.
 * - Bytes: Buffer in, Buffer out (BLOB / BYTEA). Integers: JS numbers in and out (BIGINT columns
 *   hold ms timestamps and counters, all below 2^53). No booleans: use 0/1 or a CHECKed TEXT.
 * - A unique or primary-key violation rejects with `ExistsError`; an unreachable database with
 *   `UnavailableError` (src/errors.ts); a text parameter containing NUL with `MalformedError`
 *   (PostgreSQL cannot store it). Other errors pass through unchanged.
 */
import { createHash } from 'node:crypto'
import { MalformedError } from '../errors.js'
import type { Dialect } from './migrations.js'

export type { Dialect } from './migrations.js'

/** What may be bound to a `?`. */
export type SqlValue = string | number | bigint | Buffer | null

export interface SqlDb {
  readonly dialect: Dialect
  /** Every row (SELECT, or a write with RETURNING). */
  all<T>(sql: string, params?: readonly SqlValue[]): Promise<T[]>
  /** The first row, or undefined. */
  get<T>(sql: string, params?: readonly SqlValue[]): Promise<T | undefined>
  /** A write; `changes` = rows inserted, updated or deleted. */
  run(sql: string, params?: readonly SqlValue[]): Promise<{ changes: number }>
  /**
   * Run `fn` in a transaction: committed when its promise resolves, rolled back when it rejects.
   * Use only the `tx` handle inside `fn` (never the outer db: on SQLite that waits for this very
   * transaction to end, a deadlock). `tx.transaction` nests as a savepoint.
   */
  transaction<T>(fn: (tx: SqlDb) => Promise<T>): Promise<T>
  /** Several statements separated by `;`, no parameters (DDL). */
  exec(sql: string): Promise<void>
  close(): Promise<void>
}

/**
 * Refuse text containing NUL: PostgreSQL TEXT cannot hold it, so both engines refuse it alike
 * (bytes that may contain NUL go in a bytes column as a Buffer).
 */
export function checkParams(params: readonly SqlValue[]): void {
  for (const p of params) {
    if (typeof p === 'string' && p.includes('\u0000')) throw new MalformedError('text values must not contain NUL characters')
  }
}

/**
 * `?` → `$1..$n` for PostgreSQL. Plain substitution: see the convention above (no `?` inside
 * literals, identifiers or comments of parameterised SQL).
 */
export function toPgPlaceholders(sql: string): string {
  let n = 0
  return sql.replace(/\?/g, () => `$${++n}`)
}

/**
 * Serialise this transaction with every other one taking the same named lock, until it ends.
 * PostgreSQL: a transaction-scoped advisory lock. SQLite: nothing to do, `BEGIN IMMEDIATE`
 * already admits one writer at a time.
 */
export async function advisoryLock(tx: SqlDb, name: string): Promise<void> {
  if (tx.dialect !== 'postgres') return
  const key = createHash('sha256').update(`gatehouse:${name}`, 'utf8').digest().readBigInt64BE(0)
  await tx.get('SELECT pg_advisory_xact_lock(CAST(? AS BIGINT))', [key.toString()])
}
