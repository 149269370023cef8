/**
 * The logical backup payload: every Gatehouse table as JSON lines, read in one consistent
 * snapshot (PostgreSQL: a REPEATABLE READ, READ ONLY transaction), and its import into an empty
 * database of either engine, in one transaction.
 *
 * Format (UTF-8, one JSON value per line, each line ends with "\n"):
 *
 *   {"format":"gatehouse-logical","version":1,"dialect":"postgres","schemaVersion":3,"createdAt":"2025-…Z"}
 *   {"table":"apps","columns":["id","name",…]}          a table section: parents before children
 *   ["mail","Mail",null,"[]",…]                         one row, values in `columns` order
 *   {"end":"apps","rows":12}                            end of the section, with its row count
 *   …
 *   {"end":true,"tables":14,"rows":1234}                 trailer: nothing may follow
 *
 * Values: JSON null, strings and numbers as they are (every integer column holds ms timestamps
 * or counters below 2^53); bytes as {"b64":"…"}; a 64-bit integer the driver gave as a bigint as
 * {"int":"…"}. Rows are in primary-key order (read by keyset pages, so memory stays bounded).
 * Sealed secrets (shared keys, session keys) stay sealed under the master key: the export holds
 * no secret in the clear. The schema itself is not in the export: the import recreates it with
 * this Gatehouse's migrations up to `schemaVersion`, so a backup restores into an empty schema of
 * either engine, and the server's usual migrations then bring it up to date.
 *
 * Only the tables the migrations create are exported or dropped: other tables that share the
 * schema (e.g. `public`) are never touched.
 */
import { StringDecoder } from 'node:string_decoder'
import { BackupInvalidError, UnavailableError } from '../errors.js'
import { LATEST_SCHEMA_VERSION, MIGRATIONS, renderMigration, SCHEMA_MIGRATIONS_DDL } from './migrations.js'
import type { SqlDb, SqlValue } from './sqlDb.js'

export const LOGICAL_FORMAT = 'gatehouse-logical'
export const LOGICAL_VERSION = 1
const PAGE_ROWS = 1000
const INSERT_ROWS = 100
const FLUSH_BYTES = 64 * 1024
const MAX_LINE = 16 * 1024 * 1024
const IDENT_RE = /^[A-Za-z_][A-Za-z0-9_]*$/

export interface LogicalSummary {
  schemaVersion: number
  tables: number
  rows: number
}

interface TableInfo {
  name: string
  columns: string[]
  pk: string[]
  parents: string[]
  /** PostgreSQL: columns whose default is a sequence (reset after an import). */
  serial: string[]
}

const q = (name: string): string => {
  if (!IDENT_RE.test(name)) throw new Error(`unexpected identifier ${JSON.stringify(name)}`)
  return `"${name}"`
}

/** Table and function names every migration (and the schema_migrations DDL) creates. */
function created(kind: 'TABLE' | 'FUNCTION'): Set<string> {
  const re = kind === 'TABLE'
    ? /CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?"?([A-Za-z_][A-Za-z0-9_]*)"?/gi
    : /CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+"?([A-Za-z_][A-Za-z0-9_]*)"?\s*\(/gi
  const sql = [SCHEMA_MIGRATIONS_DDL, ...MIGRATIONS.flatMap((m) => [renderMigration(m, 'sqlite'), renderMigration(m, 'postgres')])].join('\n')
  return new Set([...sql.matchAll(re)].map((m) => m[1]!.toLowerCase()))
}

export const GATEHOUSE_TABLES: ReadonlySet<string> = created('TABLE')
const GATEHOUSE_FUNCTIONS: ReadonlySet<string> = created('FUNCTION')

/** The Gatehouse tables present in the database, parents before children (then by name). */
export async function describeTables(db: SqlDb): Promise<TableInfo[]> {
  const infos = db.dialect === 'postgres' ? await describePostgres(db) : await describeSqlite(db)
  const byName = new Map(infos.map((t) => [t.name, t]))
  const out: TableInfo[] = []
  const state = new Map<string, 'visiting' | 'done'>()
  const visit = (t: TableInfo) => {
    if (state.get(t.name) === 'done') return
    if (state.get(t.name) === 'visiting') throw new Error(`foreign keys form a cycle through ${t.name}`)
    state.set(t.name, 'visiting')
    for (const p of t.parents) {
      const parent = byName.get(p)
      if (parent && p !== t.name) visit(parent)
    }
    state.set(t.name, 'done')
    out.push(t)
  }
  for (const t of [...infos].sort((a, b) => (a.name < b.name ? -1 : 1))) visit(t)
  // schema_migrations first: an importer learns the version before any data.
  return [...out.filter((t) => t.name === 'schema_migrations'), ...out.filter((t) => t.name !== 'schema_migrations')]
}

async function describePostgres(db: SqlDb): Promise<TableInfo[]> {
  const tables = await db.all<{ name: string }>(
    `SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'`,
  )
  const mine = tables.map((t) => t.name).filter((n) => GATEHOUSE_TABLES.has(n))
  const infos = new Map<string, TableInfo>(mine.map((n) => [n, { name: n, columns: [], pk: [], parents: [], serial: [] }]))
  for (const c of await db.all<{ t: string; c: string; d: string | null }>(
    `SELECT table_name AS t, column_name AS c, column_default AS d FROM information_schema.columns
     WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position`,
  )) {
    const info = infos.get(c.t)
    if (!info) continue
    info.columns.push(c.c)
    if (c.d?.startsWith('nextval(')) info.serial.push(c.c)
  }
  for (const k of await db.all<{ t: string; c: string }>(
    `SELECT kcu.table_name AS t, kcu.column_name AS c FROM information_schema.table_constraints tc
     JOIN information_schema.key_column_usage kcu
       ON kcu.constraint_schema = tc.constraint_schema AND kcu.constraint_name = tc.constraint_name AND kcu.table_name = tc.table_name
     WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = current_schema()
     ORDER BY kcu.table_name, kcu.ordinal_position`,
  )) infos.get(k.t)?.pk.push(k.c)
  for (const f of await db.all<{ child: string; parent: string }>(
    `SELECT ch.relname AS child, pa.relname AS parent FROM pg_constraint c
     JOIN pg_class ch ON ch.oid = c.conrelid JOIN pg_class pa ON pa.oid = c.confrelid
     JOIN pg_namespace n ON n.oid = ch.relnamespace
     WHERE c.contype = 'f' AND n.nspname = current_schema()`,
  )) infos.get(f.child)?.parents.push(f.parent)
  return [...infos.values()]
}

async function describeSqlite(db: SqlDb): Promise<TableInfo[]> {
  const tables = await db.all<{ name: string }>(`SELECT name FROM sqlite_master WHERE type = 'table'`)
  const out: TableInfo[] = []
  for (const { name } of tables) {
    if (!GATEHOUSE_TABLES.has(name)) continue
    const cols = await db.all<{ name: string; pk: number }>(`PRAGMA table_info(${q(name)})`)
    const fks = await db.all<{ table: string }>(`PRAGMA foreign_key_list(${q(name)})`)
    out.push({
      name,
      columns: cols.map((c) => c.name),
      pk: cols.filter((c) => c.pk > 0).sort((a, b) => a.pk - b.pk).map((c) => c.name),
      parents: [...new Set(fks.map((f) => f.table))],
      serial: [],
    })
  }
  return out
}

/** True when a Gatehouse table other than schema_migrations holds a row. */
export async function hasData(db: SqlDb): Promise<boolean> {
  for (const t of await describeTables(db)) {
    if (t.name === 'schema_migrations') continue
    if (await db.get(`SELECT 1 AS x FROM ${q(t.name)} LIMIT 1`)) return true
  }
  return false
}

/**
 * Write the export of `db` through `write`, in one consistent snapshot. PostgreSQL reads in a
 * REPEATABLE READ, READ ONLY transaction (writers go on); SQLite in a write transaction, which
 * holds other writers back meanwhile (the SQLite backup normally copies the file instead).
 */
export async function exportLogical(db: SqlDb, write: (chunk: Buffer) => Promise<void>, now = Date.now()): Promise<LogicalSummary> {
  return db.transaction(async (tx) => {
    if (tx.dialect === 'postgres') await tx.run('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY')
    const tables = await describeTables(tx)
    if (!tables.some((t) => t.name === 'schema_migrations')) throw new Error('the database has no Gatehouse schema (no schema_migrations table)')
    const version = Number((await tx.get<{ v: number | null }>('SELECT MAX(version) AS v FROM schema_migrations'))?.v ?? 0)
    let buf: string[] = []
    let bufBytes = 0
    const line = async (v: unknown) => {
      const s = `${JSON.stringify(v)}\n`
      buf.push(s)
      bufBytes += s.length
      if (bufBytes >= FLUSH_BYTES) await flush()
    }
    const flush = async () => {
      if (buf.length === 0) return
      const chunk = Buffer.from(buf.join(''), 'utf8')
      buf = []
      bufBytes = 0
      await write(chunk)
    }
    await line({ format: LOGICAL_FORMAT, version: LOGICAL_VERSION, dialect: tx.dialect, schemaVersion: version, createdAt: new Date(now).toISOString() })
    let total = 0
    for (const t of tables) {
      await line({ table: t.name, columns: t.columns })
      let rows = 0
      for await (const page of pages(tx, t)) {
        for (const r of page) await line(t.columns.map((c) => encodeValue(r[c], `${t.name}.${c}`)))
        rows += page.length
      }
      await line({ end: t.name, rows })
      total += rows
    }
    await line({ end: true, tables: tables.length, rows: total })
    await flush()
    return { schemaVersion: version, tables: tables.length, rows: total }
  })
}

/** A table's rows in primary-key order, PAGE_ROWS at a time (keyset: each page starts after the last key). */
async function* pages(db: SqlDb, t: TableInfo): AsyncGenerator<Record<string, unknown>[]> {
  const cols = t.columns.map(q).join(', ')
  if (t.pk.length === 0) {
    // Not the case of any Gatehouse table; kept correct rather than fast.
    yield await db.all<Record<string, unknown>>(`SELECT ${cols} FROM ${q(t.name)} ORDER BY ${t.columns.map(q).join(', ')}`)
    return
  }
  const key = t.pk.map(q).join(', ')
  let after: SqlValue[] | undefined
  for (;;) {
    const where = after ? ` WHERE (${key}) > (${after.map(() => '?').join(', ')})` : ''
    const rows = await db.all<Record<string, unknown>>(
      `SELECT ${cols} FROM ${q(t.name)}${where} ORDER BY ${key} LIMIT ?`, [...(after ?? []), PAGE_ROWS],
    )
    if (rows.length > 0) yield rows
    if (rows.length < PAGE_ROWS) return
    const last = rows[rows.length - 1]!
    after = t.pk.map((c) => last[c] as SqlValue)
  }
}

function encodeValue(v: unknown, where: string): unknown {
  if (v === null || v === undefined || typeof v === 'string') return v ?? null
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new Error(`${where} holds a non-finite number`)
    return v
  }
  if (typeof v === 'bigint') return { int: v.toString() }
  if (Buffer.isBuffer(v)) return { b64: v.toString('base64') }
  throw new Error(`${where} holds a value of a type the logical backup does not know (${typeof v})`)
}

function decodeValue(v: unknown): SqlValue {
  if (v === null || typeof v === 'string') return v
  if (typeof v === 'number' && Number.isFinite(v)) return v
  if (typeof v === 'object' && !Array.isArray(v)) {
    const o = v as Record<string, unknown>
    const keys = Object.keys(o)
    if (keys.length === 1 && typeof o.b64 === 'string') return Buffer.from(o.b64, 'base64')
    if (keys.length === 1 && typeof o.int === 'string' && /^-?\d{1,20}$/.test(o.int)) return BigInt(o.int)
  }
  throw malformed('a value of an unknown type')
}

const malformed = (what: string) => new BackupInvalidError(`backup payload is malformed: ${what}`)

/** The Gatehouse schema exactly at `version` (tables, indexes, triggers), without schema_migrations rows. */
export async function createSchemaAt(tx: SqlDb, version: number): Promise<void> {
  await tx.exec(SCHEMA_MIGRATIONS_DDL)
  for (const m of MIGRATIONS) if (m.version <= version) await tx.exec(renderMigration(m, tx.dialect))
}

/** Drop every Gatehouse table (and PostgreSQL trigger function) of the current schema; nothing else. */
export async function dropGatehouseObjects(tx: SqlDb): Promise<string[]> {
  const tables = (await describeTables(tx)).reverse() // children first
  for (const t of tables) await tx.exec(`DROP TABLE IF EXISTS ${q(t.name)}${tx.dialect === 'postgres' ? ' CASCADE' : ''}`)
  if (tx.dialect === 'postgres') {
    for (const f of GATEHOUSE_FUNCTIONS) await tx.exec(`DROP FUNCTION IF EXISTS ${q(f)} CASCADE`)
  }
  return tables.map((t) => t.name)
}

/**
 * Import an export into `tx`, which must hold no Gatehouse table (see dropGatehouseObjects):
 * creates the schema at the export's version, inserts every row, checks every count, then
 * resets PostgreSQL sequences past the imported ids. Run it inside a transaction: any error
 * leaves the database as it was.
 */
export async function importLogical(tx: SqlDb, input: AsyncIterable<string>, o: { onHeader?: (h: { schemaVersion: number; dialect: string; createdAt: string }) => void } = {}): Promise<LogicalSummary> {
  const it = input[Symbol.asyncIterator]()
  const next = async (): Promise<unknown> => {
    const r = await it.next()
    if (r.done) throw malformed('it ends before its trailer')
    try {
      return JSON.parse(r.value) as unknown
    } catch {
      throw malformed('a line is not JSON')
    }
  }
  const header = (await next()) as Record<string, unknown>
  if (header?.format !== LOGICAL_FORMAT) throw malformed('it does not start with a gatehouse-logical header')
  if (header.version !== LOGICAL_VERSION) throw malformed(`format version ${String(header.version)} is not ${LOGICAL_VERSION}`)
  const version = header.schemaVersion
  if (typeof version !== 'number' || !Number.isInteger(version) || version < 1) throw malformed('no schema version')
  if (version > LATEST_SCHEMA_VERSION) {
    throw new BackupInvalidError(`the backup has schema version ${version}, newer than this Gatehouse knows (${LATEST_SCHEMA_VERSION}); restore it with a newer Gatehouse`)
  }
  o.onHeader?.({ schemaVersion: version, dialect: String(header.dialect), createdAt: String(header.createdAt) })
  await createSchemaAt(tx, version)
  const tables = new Map((await describeTables(tx)).map((t) => [t.name, t]))
  const seen = new Set<string>()
  let total = 0
  for (;;) {
    const v = await next()
    if (Array.isArray(v) || typeof v !== 'object' || v === null) throw malformed('a row outside a table section')
    const d = v as Record<string, unknown>
    if (d.end === true) {
      if (d.tables !== seen.size || d.rows !== total) throw malformed('the trailer counts do not match')
      break
    }
    const name = d.table
    const info = typeof name === 'string' ? tables.get(name) : undefined
    if (!info || seen.has(info.name)) throw malformed(`unknown or repeated table ${JSON.stringify(name)}`)
    seen.add(info.name)
    const columns = d.columns
    if (!Array.isArray(columns) || columns.length === 0 || new Set(columns).size !== columns.length
      || !columns.every((c): c is string => typeof c === 'string' && info.columns.includes(c))) {
      throw malformed(`the columns of ${info.name} do not match the schema`)
    }
    const insert = (n: number) => `INSERT INTO ${q(info.name)} (${columns.map(q).join(', ')}) VALUES ${
      Array.from({ length: n }, () => `(${columns.map(() => '?').join(', ')})`).join(', ')}`
    let batch: SqlValue[] = []
    let batchRows = 0
    let rows = 0
    const flush = async () => {
      if (batchRows > 0) {
        try {
          await tx.run(insert(batchRows), batch)
        } catch (err) {
          if (err instanceof UnavailableError) throw err
          // The message only, never the server's detail: it would quote the row.
          throw new BackupInvalidError(`backup payload cannot be imported: a row of ${info.name} was refused (${(err as Error).message})`, { cause: err })
        }
      }
      batch = []
      batchRows = 0
    }
    for (;;) {
      const r = await next()
      if (Array.isArray(r)) {
        if (r.length !== columns.length) throw malformed(`a row of ${info.name} has ${r.length} values for ${columns.length} columns`)
        for (const x of r) batch.push(decodeValue(x))
        batchRows++
        rows++
        if (batchRows >= INSERT_ROWS) await flush()
        continue
      }
      const e = r as Record<string, unknown> | null
      if (e?.end !== info.name || e.rows !== rows) throw malformed(`the section of ${info.name} does not end with its row count`)
      await flush()
      break
    }
    total += rows
  }
  if ((await it.next()).done !== true) throw malformed('lines follow the trailer')
  const got = Number((await tx.get<{ v: number | null }>('SELECT MAX(version) AS v FROM schema_migrations'))?.v ?? 0)
  if (got !== version) throw malformed(`schema_migrations says version ${got}, the header ${version}`)
  if (tx.dialect === 'postgres') {
    for (const t of tables.values()) {
      for (const c of t.serial) {
        // Next id = one past the largest imported (1 for an empty table).
        await tx.get(
          `SELECT setval(pg_get_serial_sequence(?, ?), COALESCE((SELECT MAX(${q(c)}) FROM ${q(t.name)}), 0) + 1, false) AS v`,
          [t.name, c],
        )
      }
    }
  }
  return { schemaVersion: version, tables: seen.size, rows: total }
}

/** Split decrypted payload records into lines (UTF-8 safe across record boundaries). */
export async function* splitLines(chunks: AsyncIterable<Buffer>): AsyncGenerator<string> {
  const dec = new StringDecoder('utf8')
  let rest = ''
  for await (const c of chunks) {
    const parts = (rest + dec.write(c)).split('\n')
    rest = parts.pop()!
    for (const p of parts) yield p
    if (rest.length > MAX_LINE) throw malformed(`a line is longer than ${MAX_LINE} bytes`)
  }
  rest += dec.end()
  if (rest.length > 0) throw malformed('it does not end with a newline')
}
