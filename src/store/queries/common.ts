/**
 * What every query module shares: the database, the secret box, the clock, and small helpers
 * to build WHERE clauses and pages. Column names passed to `Where` are constants of this code,
 * never caller input; values always travel as `?` parameters.
 */
import { createHash } from 'node:crypto'
import { ExistsError, MalformedError } from '../../errors.js'
import type { SecretBox } from '../secretBox.js'
import type { SqlDb, SqlValue } from '../sqlDb.js'
import type { Page } from '../types.js'

export interface QueryContext {
  readonly db: SqlDb
  readonly box: SecretBox
  /** Clock for the methods whose interface gives no `now` (revokeEnrollment, rememberNonce). */
  readonly now: () => number
}

export const sha256Hex = (s: string): string => createHash('sha256').update(s, 'utf8').digest('hex')

/** AND-ed conditions; a condition whose value is undefined is left out. */
export class Where {
  readonly #parts: string[] = []
  readonly params: SqlValue[] = []

  /** `column = ?` when value is defined. */
  eq(column: string, value: SqlValue | undefined): this {
    if (value !== undefined) {
      this.#parts.push(`${column} = ?`)
      this.params.push(value)
    }
    return this
  }

  /** A raw condition with its own `?` parameters. */
  add(condition: string, ...params: SqlValue[]): this {
    this.#parts.push(condition)
    this.params.push(...params)
    return this
  }

  get empty(): boolean {
    return this.#parts.length === 0
  }

  /** ` WHERE a AND b`, or '' when there is no condition. */
  toString(): string {
    return this.#parts.length === 0 ? '' : ` WHERE ${this.#parts.join(' AND ')}`
  }
}

/** Largest LIMIT both engines take as "no limit" (and exactly representable as a double). */
const NO_LIMIT = Number.MAX_SAFE_INTEGER

/** ` LIMIT ? OFFSET ?` and its two parameters (no limit when none was asked for). */
export function pageSql(p: Page): { sql: string; params: number[] } {
  const limit = p.limit ?? NO_LIMIT
  const offset = p.offset ?? 0
  for (const [name, v] of [['limit', limit], ['offset', offset]] as const) {
    if (!Number.isSafeInteger(v) || v < 0) throw new MalformedError(`${name} must be a non-negative integer`)
  }
  return { sql: ' LIMIT ? OFFSET ?', params: [limit, offset] }
}

/** Await an insert, turning a duplicate key into an ExistsError with a message safe to show. */
export async function insertOrExists<T>(write: Promise<T>, message: string): Promise<T> {
  try {
    return await write
  } catch (err) {
    if (err instanceof ExistsError) throw new ExistsError(message)
    throw err
  }
}

export const toJson = (v: unknown): string => JSON.stringify(v)

export function parseStringArray(text: string): string[] {
  const v: unknown = JSON.parse(text)
  return Array.isArray(v) ? v.map(String) : []
}
