/**
 * Scheduled backups (`security.backup`): while the security server runs, one encrypted backup
 * every `intervalSeconds` into `dir` (never two at once), then all but the newest `keep` backup
 * files are deleted. Each backup is logged (file, size, duration) and counted
 * (`gatehouse_security_backups_total{result}`, `..._backup_last_success_timestamp_seconds`).
 *
 * The first backup is due `intervalSeconds` after the newest file already in `dir` (at once when
 * there is none), so restarting the server neither skips nor repeats a backup.
 */
import path from 'node:path'
import type { GatehouseConfig } from '../config/load.js'
import type { Logger } from '../observability/logger.js'
import { backupFileName, createBackup, listBackups, pruneBackups, type BackupResult, type BackupSource } from '../store/backup.js'
import type { BackupKey } from '../store/backupKey.js'
import type { SqlDb } from '../store/sqlDb.js'
import type { SecurityMetrics } from './metrics.js'

export interface BackupScheduleOptions {
  source: BackupSource
  key: BackupKey
  dir: string
  intervalMs: number
  keep: number
}

/** `security.backup` with its paths resolved (relative ones against the working directory). */
export function backupSettings(c: GatehouseConfig, cwd = process.cwd()) {
  const b = c.security.backup
  return {
    enabled: b.enabled,
    intervalMs: b.intervalSeconds * 1000,
    keep: b.keep,
    dir: path.resolve(cwd, b.dir ?? path.join(c.dataDir, 'backups')),
    keyFile: path.resolve(cwd, b.keyFile ?? path.join(c.dataDir, 'backup.key')),
  }
}

/** What to back up for this configuration: the PostgreSQL pool `db` when a URL is set, else the SQLite file. */
export function backupSource(c: GatehouseConfig, db: () => SqlDb): BackupSource {
  return c.security.databaseUrl ? { kind: 'postgres', db: db() } : { kind: 'sqlite', path: c.files.databasePath }
}

export class BackupScheduler {
  readonly #o: BackupScheduleOptions
  readonly #log: Logger
  readonly #metrics: Pick<SecurityMetrics, 'backups' | 'backupLastSuccess'>
  readonly #ok
  readonly #failed
  #timer: NodeJS.Timeout | undefined
  #running: Promise<BackupResult | undefined> | undefined
  #closed = false

  constructor(o: BackupScheduleOptions & { log: Logger; metrics: Pick<SecurityMetrics, 'backups' | 'backupLastSuccess'> }) {
    this.#o = o
    this.#log = o.log
    this.#metrics = o.metrics
    this.#ok = o.metrics.backups.labels('success')
    this.#failed = o.metrics.backups.labels('failure')
    // Both series exist from the start, so `increase(...{result="failure"})` alerts work at 0.
    this.#ok.inc(0)
    this.#failed.inc(0)
    this.#metrics.backupLastSuccess.set(0)
  }

  /** Plan the first backup (see the file comment). */
  async start(): Promise<void> {
    const newest = (await listBackups(this.#o.dir).catch(() => [])).at(-1)
    const due = newest ? Math.min(this.#o.intervalMs, Math.max(0, newest.at + this.#o.intervalMs - Date.now())) : 0
    // A restart does not reset "time since the last backup" (alerts on the gauge stay quiet).
    if (newest) this.#metrics.backupLastSuccess.set(newest.at / 1000)
    this.#log.info({ event: 'backup_schedule', dir: this.#o.dir, intervalSeconds: this.#o.intervalMs / 1000, keep: this.#o.keep, firstInSeconds: Math.round(due / 1000) }, 'scheduled backups on')
    this.#plan(due)
  }

  /**
   * Take a backup now, unless one is running (then undefined, and nothing else happens). Never
   * rejects: a failure is logged and counted.
   */
  runNow(): Promise<BackupResult | undefined> {
    if (this.#running) {
      this.#log.warn({ event: 'backup_skipped' }, 'backup skipped: the previous one is still running')
      return Promise.resolve(undefined)
    }
    const run = this.#run().finally(() => { this.#running = undefined })
    this.#running = run
    return run
  }

  /** Stop the schedule and wait for a backup in progress to end. */
  async close(): Promise<void> {
    this.#closed = true
    clearTimeout(this.#timer)
    await this.#running
  }

  #plan(delayMs: number): void {
    if (this.#closed) return
    this.#timer = setTimeout(() => {
      const started = Date.now()
      void this.runNow().then(() => this.#plan(Math.max(0, started + this.#o.intervalMs - Date.now())))
    }, delayMs)
    this.#timer.unref()
  }

  async #run(): Promise<BackupResult | undefined> {
    const out = path.join(this.#o.dir, backupFileName())
    try {
      const r = await createBackup({ source: this.#o.source, key: this.#o.key, out })
      const removed = await pruneBackups(this.#o.dir, this.#o.keep).catch((err: unknown) => {
        this.#log.warn({ event: 'backup_prune_failed', dir: this.#o.dir, err }, 'old backups could not be deleted')
        return []
      })
      this.#ok.inc()
      this.#metrics.backupLastSuccess.set(Date.now() / 1000)
      this.#log.info({
        event: 'backup_written', file: r.file, bytes: r.bytes, durationMs: Math.round(r.ms), kind: r.kind, schemaVersion: r.schemaVersion, removed: removed.length,
      }, 'backup written')
      return r
    } catch (err) {
      this.#failed.inc()
      this.#log.error({ event: 'backup_failed', file: out, err }, 'scheduled backup failed')
      return undefined
    }
  }
}
