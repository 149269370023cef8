/**
 * Backups of a running Gatehouse on SQLite: the security server's schedule (first backup at
 * start, never two at once, the newest `keep` kept, logged and counted), a backup taken under
 * traffic restored into a fresh database where the same devices work without enrolling again,
 * nothing secret or identifying readable in the backup file, and every damaged backup, wrong key
 * or occupied target refused without touching the target.
 */
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { GatehouseDevice } from '../../src/client/device.js'
import { buildConfig } from '../../src/config/load.js'
import { BackupInvalidError, ConfigError, ExistsError } from '../../src/errors.js'
import { createLogger } from '../../src/observability/logger.js'
import { BackupScheduler } from '../../src/security/backupScheduler.js'
import { securityServerFromConfig } from '../../src/security/fromConfig.js'
import { securityMetrics } from '../../src/security/metrics.js'
import { backupFileName, createBackup, listBackups, restoreBackup } from '../../src/store/backup.js'
import { BackupReader, HEADER_LENGTH } from '../../src/store/backupFile.js'
import { backupKeyFrom, loadOrCreateBackupKey, type BackupKey } from '../../src/store/backupKey.js'
import { openStore } from '../../src/store/openStore.js'
import { loadMasterKey, loadOrCreateMasterKey, newMasterKey, SecretBox, type MasterKeyRing } from '../../src/store/secretBox.js'
import type { SqlStore } from '../../src/store/sqlStore.js'
import { makeTestPki } from '../helpers/pki.js'
import { counterValue, LogSink, spellings, startStack, type Stack } from '../helpers/stack.js'

const until = async (cond: () => boolean, ms = 10_000) => {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time')
    await new Promise((r) => setTimeout(r, 20))
  }
}
const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex')
const logEvents = (sink: LogSink, event: string) => sink.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.event === event)

async function decrypt(file: string, key: BackupKey): Promise<Buffer> {
  const r = await BackupReader.open(file, key)
  const parts: Buffer[] = []
  for await (const p of r.payload()) parts.push(p)
  return Buffer.concat(parts)
}

describe('backups of a running Gatehouse (SQLite)', () => {
  let dir: string
  let dbPath: string
  let backupsDir: string
  let ring: MasterKeyRing
  let key: BackupKey
  let store: SqlStore
  let stack: Stack
  let devices: GatehouseDevice[] = []
  /** A backup taken under traffic, shared by the tests below. */
  let backupFile: string
  const sessions: { sessionId: string; c2s: Buffer; s2c: Buffer }[] = []

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'gh-backup-'))
    dbPath = path.join(dir, 'data', 'gatehouse.db')
    backupsDir = path.join(dir, 'backups')
    ring = loadOrCreateMasterKey(path.join(dir, 'data', 'master.key'))
    key = loadOrCreateBackupKey(path.join(dir, 'keys', 'backup.key')).key
    store = await openStore({ path: dbPath, secretBox: new SecretBox(ring) })
    stack = await startStack({
      security: { store, backup: { source: { kind: 'sqlite', path: dbPath }, key, dir: backupsDir, intervalMs: 3_600_000, keep: 3 } },
    })
  })
  afterAll(async () => {
    await stack?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('the server takes the first scheduled backup at start, logs its size and duration, and counts it', async () => {
    await until(() => logEvents(stack.logs, 'backup_written').length > 0)
    const [line] = logEvents(stack.logs, 'backup_written')
    const files = await listBackups(backupsDir)
    expect(files.length).toBe(1)
    expect(line).toMatchObject({ file: files[0]!.file, bytes: statSync(files[0]!.file).size, kind: 'sqlite', schemaVersion: expect.any(Number) })
    expect(line!.durationMs).toEqual(expect.any(Number))
    expect(statSync(files[0]!.file).mode & 0o777).toBe(0o600)
    expect(statSync(backupsDir).mode & 0o777).toBe(0o700)
    const reg = stack.security.registry
    expect(await counterValue(reg, 'gatehouse_security_backups_total', { result: 'success' })).toBe(1)
    expect(await counterValue(reg, 'gatehouse_security_backups_total', { result: 'failure' })).toBe(0)
    const last = (await reg.getSingleMetric('gatehouse_security_backup_last_success_timestamp_seconds')!.get()).values[0]!.value
    expect(Math.abs(last - Date.now() / 1000)).toBeLessThan(60)
  })

  it('never takes two at once, and keeps the newest `keep` files', async () => {
    const scheduler = stack.security.backups!
    const [a, b] = await Promise.all([scheduler.runNow(), scheduler.runNow()])
    expect([a, b].filter((r) => r === undefined).length).toBe(1)
    expect(logEvents(stack.logs, 'backup_skipped').length).toBe(1)
    const written: string[] = []
    for (let i = 0; i < 3; i++) written.push((await scheduler.runNow())!.file)
    const kept = (await listBackups(backupsDir)).map((f) => f.file)
    expect(kept).toEqual(written) // the three newest, oldest first
    expect(readdirSync(backupsDir).filter((n) => n.endsWith('.tmp') || n.startsWith('.'))).toEqual([])
    expect(readdirSync(path.dirname(dbPath)).filter((n) => n.startsWith('.gatehouse-'))).toEqual([]) // snapshot folders removed
  })

  it('a backup taken under traffic restores into a fresh database where the same devices work without enrolling again', async () => {
    devices = await Promise.all([1, 2, 3, 4].map(() => stack.enrolledDevice()))
    for (const d of devices) sessions.push(await d.openSession())
    let stop = false
    const failures: unknown[] = []
    let done = 0
    const traffic = (async () => {
      while (!stop) {
        for (const d of devices) {
          try {
            expect((await d.request('GET', '/demo/hello')).status).toBe(200)
            done++
          } catch (err) {
            failures.push(err)
          }
        }
      }
    })()
    await until(() => done >= 8)
    const r = await createBackup({ source: { kind: 'sqlite', path: dbPath }, key, out: path.join(dir, 'under-traffic.ghbackup') })
    backupFile = r.file
    const at = done
    await until(() => done >= at + 8)
    stop = true
    await traffic
    expect(failures).toEqual([])
    expect(r.kind).toBe('sqlite')

    const target = path.join(dir, 'restored', 'gatehouse.db')
    const restored = await restoreBackup({ file: backupFile, key, ring: loadMasterKey(path.join(dir, 'data', 'master.key')), target: { kind: 'sqlite', path: target } })
    expect(restored.activeEnrollments).toBe(4)
    expect(restored.movedAside).toEqual([])
    expect(statSync(target).mode & 0o777).toBe(0o600)
    expect(readdirSync(path.dirname(target))).toEqual(['gatehouse.db'])

    // A second Gatehouse over the restored database: the devices keep their enrollment.
    const restoredStore = await openStore({ path: target, secretBox: new SecretBox(ring) })
    const second = await startStack({ security: { store: restoredStore } })
    try {
      for (const d of devices) {
        const e = d.enrollmentState!
        expect((await restoredStore.getEnrollment(e.enrollmentId))!.sharedKey.toString('base64')).toBe(e.sharedKey)
        const again = second.device({ deviceId: e.deviceId, enrollment: e })
        const res = await again.request('GET', '/demo/hello')
        expect(res.status).toBe(200)
      }
    } finally {
      await second.close()
    }
  })

  it('the backup file shows no key material, session id, user name or database content', async () => {
    const bytes = readFileSync(backupFile)
    const payload = await decrypt(backupFile, key)
    // The checks can fail: the decrypted payload does hold the user name and the SQLite header.
    expect(payload.includes('alice')).toBe(true)
    expect(payload.includes('SQLite format 3')).toBe(true)
    const needles: Buffer[] = [Buffer.from('SQLite format 3'), Buffer.from('CREATE TABLE'), Buffer.from('alice'), Buffer.from('enrollments')]
    for (const d of devices) {
      const e = d.enrollmentState!
      const shared = Buffer.from(e.sharedKey, 'base64')
      needles.push(shared, ...spellings(shared).map((s) => Buffer.from(s)), Buffer.from(e.enrollmentId), Buffer.from(e.deviceId))
      // Shared keys are sealed under the master key: not in the clear even in the payload.
      expect(payload.includes(shared), 'shared key in the payload').toBe(false)
    }
    for (const s of sessions) {
      needles.push(Buffer.from(s.sessionId), s.c2s, s.s2c, ...[s.c2s, s.s2c].flatMap((k) => spellings(k).map((x) => Buffer.from(x))))
      expect(payload.includes(s.c2s) || payload.includes(Buffer.from(s.sessionId)), 'session key or id in the payload').toBe(false)
    }
    for (const k of ring.keys) needles.push(k.key, Buffer.from(k.key.toString('base64')))
    needles.push(key.key, Buffer.from(key.key.toString('base64')))
    for (const n of needles) expect(bytes.includes(n), `found ${n.length} bytes of a secret or identifier`).toBe(false)
    expect(bytes.subarray(0, 8).toString()).toBe('GHBACKUP')
  })

  it('refuses a flipped byte, a cut file, another backup key or another master key, leaving the target untouched', async () => {
    const target = path.join(dir, 'occupied', 'gatehouse.db')
    await restoreBackup({ file: backupFile, key, ring, target: { kind: 'sqlite', path: target } })
    const before = sha(target)
    const good = readFileSync(backupFile)
    const variants: [string, Buffer][] = [
      ['flipped', Buffer.from(good).fill(good[good.length >> 1]! ^ 0x20, good.length >> 1, (good.length >> 1) + 1)],
      ['flipped header', Buffer.from(good).fill(good[20]! ^ 0x01, 20, 21)],
      ['truncated', good.subarray(0, good.length - 100)],
      ['truncated at a record boundary', good.subarray(0, HEADER_LENGTH + 4 + 65536 + 16)],
    ]
    for (const [name, bytes] of variants) {
      const f = path.join(dir, `${name.replace(/ /g, '-')}.ghbackup`)
      writeFileSync(f, bytes)
      for (const t of [target, path.join(dir, `fresh-${name.replace(/ /g, '-')}`, 'gatehouse.db')]) {
        const err = await restoreBackup({ file: f, key, ring, target: { kind: 'sqlite', path: t }, force: true }).then(() => undefined, (e: unknown) => e)
        expect(err, name).toBeInstanceOf(BackupInvalidError)
        expect((err as Error).message, name).toMatch(name.startsWith('flipped') ? /failed authentication|tampered/ : /truncated/)
      }
      expect(existsSync(path.join(dir, `fresh-${name.replace(/ /g, '-')}`, 'gatehouse.db')), name).toBe(false)
    }
    const otherKey = backupKeyFrom(randomBytes(32))
    await expect(restoreBackup({ file: backupFile, key: otherKey, ring, target: { kind: 'sqlite', path: target }, force: true }))
      .rejects.toThrow(/was encrypted with backup key [0-9a-f]{16}, but the backup key file holds key [0-9a-f]{16}/)
    const otherRing: MasterKeyRing = { version: 1, current: '', keys: [newMasterKey()] }
    otherRing.current = otherRing.keys[0]!.id
    const wrongMaster = await restoreBackup({ file: backupFile, key, ring: otherRing, target: { kind: 'sqlite', path: target }, force: true }).then(() => undefined, (e: unknown) => e)
    expect(wrongMaster).toBeInstanceOf(ConfigError)
    expect((wrongMaster as Error).message).toMatch(/master key file does not match this backup \(key id\(s\) k[0-9a-f]+ are not in the master key file\)/)
    // Same key id, other bytes: the id is there but does not open the secrets.
    const forged: MasterKeyRing = { version: 1, current: ring.current, keys: [{ ...ring.keys[0]!, key: randomBytes(32) }] }
    await expect(restoreBackup({ file: backupFile, key, ring: forged, target: { kind: 'sqlite', path: target }, force: true }))
      .rejects.toThrow(/do not open the stored secrets/)
    expect(sha(target)).toBe(before)
    expect(readdirSync(path.dirname(target)).sort()).toEqual(['gatehouse.db'])
  })

  it('refuses to overwrite data without force; force moves the old files aside; an empty database is simply replaced', async () => {
    const target = path.join(dir, 'again', 'gatehouse.db')
    const empty = await openStore({ path: target, secretBox: new SecretBox(ring) })
    await empty.close()
    const first = await restoreBackup({ file: backupFile, key, ring, target: { kind: 'sqlite', path: target } })
    expect(first.movedAside).toEqual([])
    const err = await restoreBackup({ file: backupFile, key, ring, target: { kind: 'sqlite', path: target } }).then(() => undefined, (e: unknown) => e)
    expect(err).toBeInstanceOf(ExistsError)
    expect((err as Error).message).toContain(`database ${target} already holds data; restore refuses to overwrite it`)
    const before = sha(target)
    const forced = await restoreBackup({ file: backupFile, key, ring, target: { kind: 'sqlite', path: target }, force: true })
    expect(forced.movedAside.length).toBe(1)
    expect(forced.movedAside[0]).toMatch(/gatehouse\.db\.before-restore-\d{8}T\d{9}Z$/)
    expect(sha(forced.movedAside[0]!)).toBe(before)
    // A file that is not a database counts as data too.
    const junk = path.join(dir, 'junk.db')
    writeFileSync(junk, 'not a database at all, but somebody\'s file')
    await expect(restoreBackup({ file: backupFile, key, ring, target: { kind: 'sqlite', path: junk } })).rejects.toBeInstanceOf(ExistsError)
  })
})

describe('scheduled backups wired from the configuration', () => {
  it('security.backup.enabled: the server creates the backup key (0600) and writes a backup at start', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'gh-backup-cfg-'))
    const pki = await makeTestPki()
    const sink = new LogSink()
    try {
      const c = buildConfig({
        dataDir: path.join(dir, 'data'),
        security: {
          listen: { port: 0 }, proxyApi: { port: 0 }, admin: { port: 0 },
          tls: { cert: pki.serverCert, key: pki.serverKey, ca: pki.caCert },
          backup: { enabled: true, intervalSeconds: 3600, keep: 2, dir: path.join(dir, 'offsite') },
        },
      }, undefined, dir)
      const server = await securityServerFromConfig(c, createLogger({ level: 'info', destination: sink }))
      await server.start()
      try {
        await until(() => logEvents(sink, 'backup_written').length > 0)
        expect(statSync(path.join(dir, 'data', 'backup.key')).mode & 0o777).toBe(0o600)
        expect(logEvents(sink, 'backup_key_created').length).toBe(1)
        const files = await listBackups(path.join(dir, 'offsite'))
        expect(files.length).toBe(1)
        const key = loadOrCreateBackupKey(path.join(dir, 'data', 'backup.key')).key
        expect((await decrypt(files[0]!.file, key)).subarray(0, 15).toString()).toBe('SQLite format 3')
        expect(await counterValue(server.registry, 'gatehouse_security_backups_total', { result: 'success' })).toBe(1)
        expect(await server.registry.metrics()).toContain('gatehouse_security_backup_last_success_timestamp_seconds')
      } finally {
        await server.close()
      }
    } finally {
      pki.cleanup()
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('after a restart the next backup is due one interval after the newest file, and the gauge starts from that file', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'gh-backup-due-'))
    const dbPath = path.join(dir, 'g.db')
    await (await openStore({ path: dbPath, secretBox: new SecretBox(loadOrCreateMasterKey(path.join(dir, 'master.key'))) })).close()
    const key = backupKeyFrom(randomBytes(32))
    const sink = new LogSink()
    const make = () => {
      const registry = new Registry()
      const scheduler = new BackupScheduler({
        source: { kind: 'sqlite', path: dbPath }, key, dir: path.join(dir, 'b'), intervalMs: 60_000, keep: 5,
        log: createLogger({ level: 'info', destination: sink }), metrics: securityMetrics(registry),
      })
      return { scheduler, registry }
    }
    const gauge = async (r: Registry) => (await r.getSingleMetric('gatehouse_security_backup_last_success_timestamp_seconds')!.get()).values[0]!.value
    try {
      const recent = Date.now() - 10_000
      await createBackup({ source: { kind: 'sqlite', path: dbPath }, key, out: path.join(dir, 'b', backupFileName(recent)) })
      const first = make()
      await first.scheduler.start()
      const plan = logEvents(sink, 'backup_schedule').at(-1)!
      expect(plan).toMatchObject({ intervalSeconds: 60, keep: 5 })
      expect(plan.firstInSeconds as number).toBeGreaterThanOrEqual(40) // 60 - 10, less the time taken since
      expect(plan.firstInSeconds as number).toBeLessThanOrEqual(50)
      expect(await gauge(first.registry)).toBe(recent / 1000)
      await new Promise((r) => setTimeout(r, 300))
      expect((await listBackups(path.join(dir, 'b'))).length).toBe(1) // not due yet
      await first.scheduler.close()

      // The newest file is older than an interval: due at once.
      const old = Date.now() - 120_000
      rmSync(path.join(dir, 'b'), { recursive: true })
      await createBackup({ source: { kind: 'sqlite', path: dbPath }, key, out: path.join(dir, 'b', backupFileName(old)) })
      const second = make()
      await second.scheduler.start()
      expect(logEvents(sink, 'backup_schedule').at(-1)).toMatchObject({ firstInSeconds: 0 })
      await until(() => logEvents(sink, 'backup_written').length === 1)
      expect(await gauge(second.registry)).toBeGreaterThan(old / 1000 + 100)
      await second.scheduler.close()
      expect((await listBackups(path.join(dir, 'b'))).length).toBe(2)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('a failed backup is logged and counted, leaves no file, and the next one still runs', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'gh-backup-fail-'))
    const sink = new LogSink()
    const registry = new Registry()
    const metrics = securityMetrics(registry)
    const scheduler = new BackupScheduler({
      source: { kind: 'sqlite', path: path.join(dir, 'missing.db') }, key: backupKeyFrom(randomBytes(32)), dir: path.join(dir, 'b'),
      intervalMs: 3_600_000, keep: 5, log: createLogger({ level: 'info', destination: sink }), metrics,
    })
    try {
      expect(await scheduler.runNow()).toBeUndefined()
      expect(await counterValue(registry, 'gatehouse_security_backups_total', { result: 'failure' })).toBe(1)
      expect(await counterValue(registry, 'gatehouse_security_backups_total', { result: 'success' })).toBe(0)
      expect(logEvents(sink, 'backup_failed').length).toBe(1)
      expect(await listBackups(path.join(dir, 'b'))).toEqual([])
      const store = await openStore({ path: path.join(dir, 'missing.db'), secretBox: new SecretBox(loadOrCreateMasterKey(path.join(dir, 'master.key'))) })
      await store.close()
      expect((await scheduler.runNow())?.kind).toBe('sqlite')
      expect(await counterValue(registry, 'gatehouse_security_backups_total', { result: 'success' })).toBe(1)
    } finally {
      await scheduler.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
