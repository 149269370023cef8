/**
 * `gatehouse backup` (an encrypted, consistent backup of the database, safe while servers run)
 * and `gatehouse restore` (on a fresh install: decrypt, verify, bring the database back).
 * Formats and checks: src/store/backup.ts; operator guide: docs/deployment.md.
 */
import { existsSync } from 'node:fs'
import { userInfo } from 'node:os'
import path from 'node:path'
import { loadConfig, type GatehouseConfig } from '../../config/load.js'
import { ConfigError, UsageError } from '../../errors.js'
import { createLogger } from '../../observability/logger.js'
import { AuditLog } from '../../security/audit.js'
import { backupSettings } from '../../security/backupScheduler.js'
import { backupFileName, createBackup, restoreBackup, type BackupSource, type RestoreTarget } from '../../store/backup.js'
import { loadBackupKey, loadOrCreateBackupKey } from '../../store/backupKey.js'
import { openStore, redactUrl } from '../../store/openStore.js'
import { PgDb } from '../../store/pgDb.js'
import { loadMasterKey, SecretBox } from '../../store/secretBox.js'
import { expectPositionals, flag, stringOption } from '../args.js'
import type { Command, CommandContext } from '../commands.js'

const KINDS = { sqlite: 'SQLite database', logical: 'logical export' } as const

function config(ctx: CommandContext): GatehouseConfig {
  return loadConfig(stringOption(ctx.values, 'config'))
}

const mib = (bytes: number) => `${(bytes / (1024 * 1024)).toFixed(2)} MiB`

export const backupCommand: Command = {
  name: 'backup',
  summary: 'Write an encrypted backup of the database (safe while the servers run)',
  usage: 'backup [--out FILE | --dir DIR]',
  details: [
    'Options:',
    '  --out FILE   write the backup to FILE (refused if it exists)',
    '  --dir DIR    write gatehouse-<time>-<random>.ghbackup into DIR (default security.backup.dir,',
    '               <dataDir>/backups); old files are not deleted (scheduled backups keep security.backup.keep)',
    '',
    'SQLite: a consistent snapshot with the online backup API. PostgreSQL: a logical export of every',
    'Gatehouse table in one snapshot. Encrypted with the backup key (security.backup.keyFile, created',
    'on first use). A restore needs the backup key AND the master key file: keep copies of both,',
    'apart from the backups. See docs/deployment.md.',
  ].join('\n'),
  options: { out: { type: 'string' }, dir: { type: 'string' } },
  async run(ctx) {
    expectPositionals(ctx.positionals, [])
    const outOpt = stringOption(ctx.values, 'out')
    const dirOpt = stringOption(ctx.values, 'dir')
    if (outOpt && dirOpt) throw new UsageError('use --out or --dir, not both')
    const c = config(ctx)
    const settings = backupSettings(c)
    if (!c.security.databaseUrl && !existsSync(c.files.databasePath)) throw new ConfigError(`no database to back up at ${c.files.databasePath}`)
    const { key, created } = loadOrCreateBackupKey(settings.keyFile)
    if (created) ctx.stderr.write(`created backup key file ${settings.keyFile}: keep a copy of it, and of the master key file, apart from the backups\n`)
    const out = outOpt ? path.resolve(outOpt) : path.join(dirOpt ? path.resolve(dirOpt) : settings.dir, backupFileName())
    let pg: PgDb | undefined
    try {
      let source: BackupSource
      if (c.security.databaseUrl) {
        pg = await PgDb.open({ url: c.security.databaseUrl, max: 1 })
        source = { kind: 'postgres', db: pg }
      } else {
        source = { kind: 'sqlite', path: c.files.databasePath }
      }
      const r = await createBackup({ source, key, out })
      ctx.stdout.write(`backup written: ${r.file}\n  ${KINDS[r.kind]}, schema version ${r.schemaVersion}, ${r.bytes} bytes (${mib(r.bytes)}), ${Math.round(r.ms)} ms\n`)
    } finally {
      await pg?.close()
    }
  },
}

export const restoreCommand: Command = {
  name: 'restore',
  summary: 'Restore the database from an encrypted backup (fresh install; --force to replace data)',
  usage: 'restore FILE [--force]',
  details: [
    'Options:',
    '  --force   replace a database that already holds data (SQLite: the old files are moved',
    '            aside as <database>.before-restore-<time>); stop the security server first',
    '',
    'Needs the backup key file (security.backup.keyFile) and the master key file',
    '(security.masterKeyFile) of the installation that made the backup. The whole file is',
    'decrypted and verified (any tampering, truncation or a wrong key is refused) and the',
    'master key is checked against the stored secrets before the database is replaced.',
    'Into SQLite (security.databasePath) or PostgreSQL (security.databaseUrl, in one transaction).',
  ].join('\n'),
  options: { force: { type: 'boolean' } },
  async run(ctx) {
    const [fileArg] = expectPositionals(ctx.positionals, ['FILE'])
    const file = path.resolve(fileArg!)
    const c = config(ctx)
    const settings = backupSettings(c)
    if (!existsSync(settings.keyFile)) {
      throw new ConfigError(`no backup key file at ${settings.keyFile}: copy there the backup key file kept apart from the backups (or set security.backup.keyFile)`)
    }
    if (!existsSync(c.files.masterKeyFile)) {
      throw new ConfigError(`no master key file at ${c.files.masterKeyFile}: copy there the master key file of the installation that made the backup (or set security.masterKeyFile)`)
    }
    const key = loadBackupKey(settings.keyFile)
    const ring = loadMasterKey(c.files.masterKeyFile)
    const target: RestoreTarget = c.security.databaseUrl ? { kind: 'postgres', url: c.security.databaseUrl } : { kind: 'sqlite', path: c.files.databasePath }
    const where = target.kind === 'postgres' ? redactUrl(target.url) : target.path
    const r = await restoreBackup({ file, key, ring, target, force: flag(ctx.values, 'force') })
    // Bring the schema up to date now (as the server would) and leave a trace in the audit log.
    const store = await openStore({ url: c.security.databaseUrl, path: c.files.databasePath, secretBox: new SecretBox(ring) })
    try {
      await new AuditLog({ store, log: createLogger({ level: 'silent' }) }).record({
        actor: operator(), actorRole: 'operator', action: 'backup.restore', target: 'database', remote: 'local',
        details: { file: path.basename(file), backupCreatedAt: new Date(r.createdAt).toISOString(), schemaVersion: r.schemaVersion },
      })
    } finally {
      await store.close()
    }
    ctx.stdout.write([
      `restored ${file} into ${where} in ${Math.round(r.ms)} ms`,
      `  backup of ${new Date(r.createdAt).toISOString()}, ${KINDS[r.kind]}, schema version ${r.schemaVersion}`,
      `  ${r.activeEnrollments} active enrollment(s), ${r.openSessions} open session(s)`,
      ...r.movedAside.map((f) => `  previous database file moved aside: ${f}`),
      '',
    ].join('\n'))
  },
}

/** The CLI acts as the operator at this machine: audited as `cli:<login>`. */
function operator(): string {
  try {
    return `cli:${userInfo().username}`
  } catch {
    return 'cli:unknown'
  }
}

export const backupCommands: Command[] = [backupCommand, restoreCommand]
