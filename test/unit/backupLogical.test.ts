/**
 * The logical backup payload (src/store/backupLogical.ts) on SQLite in memory: the documented
 * JSON-lines layout, a round trip that gives back the same rows, and every malformed payload
 * refused inside the import transaction (nothing left behind).
 */
import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { BackupInvalidError } from '../../src/errors.js'
import { exportLogical, GATEHOUSE_TABLES, hasData, importLogical, splitLines } from '../../src/store/backupLogical.js'
import { LATEST_SCHEMA_VERSION } from '../../src/store/migrations.js'
import { openStore } from '../../src/store/openStore.js'
import { SecretBox } from '../../src/store/secretBox.js'
import type { SqlDb } from '../../src/store/sqlDb.js'
import { SqliteDb } from '../../src/store/sqliteDb.js'

const box = new SecretBox({ version: 1, current: 'k1', keys: [{ id: 'k1', key: randomBytes(32), createdAt: '2025-01-01T00:00:00.000Z' }] })
const T0 = 1_700_000_000_000

async function exported(db: SqlDb): Promise<string> {
  const parts: Buffer[] = []
  await exportLogical(db, async (c) => { parts.push(c) }, T0)
  return Buffer.concat(parts).toString('utf8')
}

async function* from(text: string, chunk = 7): AsyncGenerator<Buffer> {
  const b = Buffer.from(text, 'utf8')
  for (let i = 0; i < b.length; i += chunk) yield b.subarray(i, i + chunk)
}

async function populated() {
  const store = await openStore({ path: ':memory:', secretBox: box })
  await store.createEnrollment({ id: 'enr-1', userName: 'zoë', deviceId: 'dev-1', appId: 'mail', appVersion: '1.0.0', sharedKey: randomBytes(32), createdAt: T0, status: 'active' })
  await store.createSession({
    id: randomBytes(32).toString('base64url'), enrollmentId: 'enr-1', userName: 'zoë', deviceId: 'dev-1', appId: 'mail', appVersion: '1.0.0',
    c2sKey: randomBytes(32), s2cKey: randomBytes(32), createdAt: T0, expiresAt: T0 + 1000, idleTimeoutMs: 1000, lastSeenAt: T0, closedAt: null,
  })
  await store.appendAudit({ at: T0, actor: 'a', actorRole: 'admin', action: 'x', target: 't', remote: 'r', details: { s: 'line\nbreak "quoted"' } })
  await store.appendRevocation('device', 'zoë\u0000dev-1', T0)
  return store
}

async function importInto(text: string): Promise<SqliteDb> {
  const db = SqliteDb.open({ path: ':memory:' })
  await db.transaction((tx) => importLogical(tx, splitLines(from(text))))
  return db
}

async function refusedImport(text: string, re: RegExp): Promise<void> {
  const db = SqliteDb.open({ path: ':memory:' })
  try {
    const err = await db.transaction((tx) => importLogical(tx, splitLines(from(text)))).then(() => undefined, (e: unknown) => e)
    expect(err, String(re)).toBeInstanceOf(BackupInvalidError)
    expect((err as Error).message).toMatch(re)
    // Rolled back: not even the schema is left.
    expect(await db.all(`SELECT name FROM sqlite_master WHERE type = 'table'`)).toEqual([])
  } finally {
    await db.close()
  }
}

describe('logical backup payload', () => {
  it('is JSON lines: header, one section per table (parents first) with its count, trailer', async () => {
    const store = await populated()
    try {
      const lines = (await exported(store.db)).split('\n')
      expect(lines.pop()).toBe('')
      const json = lines.map((l) => JSON.parse(l) as unknown)
      expect(json[0]).toEqual({ format: 'gatehouse-logical', version: 1, dialect: 'sqlite', schemaVersion: LATEST_SCHEMA_VERSION, createdAt: new Date(T0).toISOString() })
      const tables = json.filter((j): j is { table: string } => typeof (j as { table?: unknown }).table === 'string').map((j) => j.table)
      expect(new Set(tables)).toEqual(GATEHOUSE_TABLES)
      expect(tables[0]).toBe('schema_migrations')
      expect(tables.indexOf('enrollments')).toBeLessThan(tables.indexOf('sessions'))
      expect(tables.indexOf('apps')).toBeLessThan(tables.indexOf('app_packages'))
      expect(json.at(-1)).toMatchObject({ end: true, tables: GATEHOUSE_TABLES.size })
      const revocation = json[json.findIndex((j) => (j as { table?: string }).table === 'revocations') + 1] as unknown[]
      expect(revocation).toEqual([1, T0, 'device', { b64: Buffer.from('zoë\u0000dev-1').toString('base64') }])
    } finally {
      await store.close()
    }
  })

  it('round trip: the imported database exports the same rows; sealed values stay sealed', async () => {
    const store = await populated()
    try {
      const text = await exported(store.db)
      const copy = await importInto(text)
      try {
        expect(await exported(copy)).toBe(text)
        expect(await hasData(copy)).toBe(true)
        expect(text).not.toContain((await store.getEnrollment('enr-1'))!.sharedKey.toString('base64'))
      } finally {
        await copy.close()
      }
    } finally {
      await store.close()
    }
  })

  it('refuses malformed payloads and rolls the import back', async () => {
    const store = await populated()
    let text: string
    try {
      text = await exported(store.db)
    } finally {
      await store.close()
    }
    const lines = text.split('\n').slice(0, -1)
    const join = (l: string[]) => `${l.join('\n')}\n`
    const header = JSON.parse(lines[0]!) as Record<string, unknown>
    const at = (table: string) => lines.findIndex((l) => l.startsWith(`{"table":"${table}"`))
    await refusedImport(join(lines.slice(0, -1)), /ends before its trailer/)
    await refusedImport(text.slice(0, -1), /does not end with a newline/)
    await refusedImport(join([...lines, '{"end":true}']), /lines follow the trailer/)
    await refusedImport(join([JSON.stringify({ ...header, schemaVersion: LATEST_SCHEMA_VERSION + 1 }), ...lines.slice(1)]), /newer than this Gatehouse knows/)
    await refusedImport(join([JSON.stringify({ ...header, format: 'other' }), ...lines.slice(1)]), /does not start with a gatehouse-logical header/)
    await refusedImport(join(lines.map((l, i) => (i === at('enrollments') ? l.replace('"enrollments"', '"sqlite_master"') : l))), /unknown or repeated table "sqlite_master"/)
    await refusedImport(join(lines.map((l, i) => (i === at('enrollments') ? l.replace('"status"', '"status","evil"') : l))), /columns of enrollments do not match/)
    await refusedImport(join(lines.map((l, i) => (i === at('enrollments') + 1 ? l.replace(/,"active"\]$/, ']') : l))), /has 8 values for 9 columns/)
    await refusedImport(join(lines.map((l) => (l.startsWith('{"end":"sessions"') ? '{"end":"sessions","rows":2}' : l))), /section of sessions does not end with its row count/)
    await refusedImport(join(lines.map((l, i) => (i === at('enrollments') + 1 ? l.replace('"zoë"', '{"x":1}') : l))), /a value of an unknown type/)
    // A session whose enrollment is missing: foreign keys hold during the import.
    const dropped = lines.filter((_l, i) => i !== at('enrollments') + 1).map((l) => (l.startsWith('{"end":"enrollments"') ? '{"end":"enrollments","rows":0}' : l))
    await refusedImport(join(dropped), /a row of sessions was refused \(FOREIGN KEY constraint failed\)/)
  })
})
