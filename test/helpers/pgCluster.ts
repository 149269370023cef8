/**
 * Real PostgreSQL clusters for the high-availability tests: a primary and a streaming hot standby
 * (`pg_basebackup -R`) on free loopback ports, with synchronous replication on (RPO 0), built
 * with the server binaries under /usr/lib/postgresql/<version>/bin in a temporary directory.
 *
 *   primary :P1  ──WAL stream (synchronous: a commit returns once the standby has flushed it)──▶  standby :P2
 *
 * initdb refuses to run as root: as root every binary runs as the `postgres` OS user through
 * `runuser -u postgres --`, in a temporary directory owned by that user. Trust authentication on
 * loopback only (the clusters listen on 127.0.0.1 alone).
 *
 * The standby's own `synchronous_standby_names` is empty: once promoted it is alone, and a
 * primary naming a synchronous standby that does not exist would make every commit wait forever
 * (docs/deployment.md, "HA pair with replicated PostgreSQL").
 *
 * `cleanup()` stops both servers and removes the directory; a detached watchdog does the same if
 * the test process dies first (a timeout, Ctrl-C), so no server outlives a run.
 *
 * When the binaries are missing, `pgClusterSkipReason()` says why (tests skip), or throws when
 * GATEHOUSE_REQUIRE_SERVICES=1 (CI: a missing service fails the run).
 */
import { execFile, execFileSync, spawn } from 'node:child_process'
import { accessSync, appendFileSync, chownSync, constants, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import pg from 'pg'
import { requireServices } from './services.js'

const PG_ROOT = '/usr/lib/postgresql'
const TOOLS = ['initdb', 'pg_ctl', 'pg_basebackup', 'postgres'] as const
const INSTALL_HINT = 'PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) not found under /usr/lib/postgresql/*/bin: apt-get install postgresql'
/** application_name of the standby, named by the primary's synchronous_standby_names. */
const STANDBY_NAME = 'gh_standby'
const DATABASE = 'gatehouse'

/** The newest installed server's bin folder, or undefined. */
function findBinDir(): string | undefined {
  let versions: string[]
  try {
    versions = readdirSync(PG_ROOT).filter((v) => /^\d+(\.\d+)?$/.test(v)).sort((a, b) => Number(b) - Number(a))
  } catch {
    return undefined
  }
  for (const v of versions) {
    const bin = path.join(PG_ROOT, v, 'bin')
    try {
      for (const t of TOOLS) accessSync(path.join(bin, t), constants.X_OK)
      return bin
    } catch {
      // incomplete install: try an older one
    }
  }
  return undefined
}

/** uid and gid of the `postgres` OS user, when we run as root (else we run the binaries as ourselves). */
function postgresUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim())
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim())
  return { uid, gid }
}

/**
 * Undefined when clusters can be built here; else the reason to skip. Throws instead when
 * GATEHOUSE_REQUIRE_SERVICES=1.
 */
export function pgClusterSkipReason(): string | undefined {
  let why: string | undefined
  if (!findBinDir()) why = INSTALL_HINT
  else if (process.getuid?.() === 0) {
    try {
      accessSync('/usr/sbin/runuser', constants.X_OK)
      postgresUser()
    } catch {
      why = 'running as root, but there is no `postgres` OS user or no runuser to run initdb as that user'
    }
  }
  if (why === undefined) return undefined
  if (requireServices) throw new Error(`${why} (GATEHOUSE_REQUIRE_SERVICES=1: services-backed tests must run)`)
  return `${why}; set GATEHOUSE_REQUIRE_SERVICES=1 to make this fail`
}

async function freePort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', () => resolve()))
  const port = (s.address() as AddressInfo).port
  await new Promise<void>((resolve) => s.close(() => resolve()))
  return port
}

/**
 * A detached shell that outlives this test process: once the process is gone (killed by a
 * timeout, Ctrl-C, a crash) while `dir` still exists, it stops the servers and removes `dir`.
 * After a normal cleanup `dir` is gone and it exits within a second.
 */
function watchdog(dir: string, pgCtl: string[], dataDirs: string[]): void {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`
  const stop = dataDirs.map((d) => `${pgCtl.map(q).join(' ')} -D ${q(d)} -m immediate -w stop >/dev/null 2>&1`).join('; ')
  const script = `while kill -0 ${process.pid} 2>/dev/null && [ -d ${q(dir)} ]; do sleep 1; done; ` +
    `if [ -d ${q(dir)} ]; then ${stop}; rm -rf ${q(dir)}; fi`
  spawn('/bin/sh', ['-c', script], { cwd: dir, detached: true, stdio: 'ignore' }).unref()
}

/** One PostgreSQL server (a data directory and its port). */
export class PgNode {
  constructor(
    readonly name: string,
    readonly port: number,
    readonly dataDir: string,
    private readonly run: (tool: string, args: string[], timeoutMs?: number) => Promise<string>,
  ) {}

  /** `postgres://postgres@127.0.0.1:PORT/<db>` (trust authentication, no password). */
  url(db = DATABASE): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${db}`
  }

  get logFile(): string {
    return path.join(path.dirname(this.dataDir), `${this.name}.log`)
  }

  async start(): Promise<void> {
    await this.run('pg_ctl', ['-D', this.dataDir, '-l', this.logFile, '-w', '-t', '30', 'start'], 40_000)
  }

  /** Stop as a crash would: `pg_ctl stop -m immediate` (no checkpoint, clients cut). */
  async kill(): Promise<void> {
    await this.run('pg_ctl', ['-D', this.dataDir, '-m', 'immediate', '-w', 'stop'])
  }

  /** Make a standby a primary; resolves once it accepts writes (`-w`). */
  async promote(): Promise<void> {
    await this.run('pg_ctl', ['-D', this.dataDir, '-w', '-t', '30', 'promote'], 40_000)
  }

  /** Stop if running (fast mode); never throws. */
  async stop(): Promise<void> {
    if (!existsSync(path.join(this.dataDir, 'postmaster.pid'))) return
    await this.run('pg_ctl', ['-D', this.dataDir, '-m', 'fast', '-w', '-t', '20', 'stop'], 30_000)
      .catch(() => this.run('pg_ctl', ['-D', this.dataDir, '-m', 'immediate', '-w', 'stop']).catch(() => ''))
  }

  /** One query on a fresh connection (helpers and checks; not the code under test). */
  async query<T extends pg.QueryResultRow>(sql: string, db = DATABASE): Promise<T[]> {
    const c = new pg.Client({ connectionString: this.url(db), connectionTimeoutMillis: 5000 })
    c.on('error', () => {})
    await c.connect()
    try {
      return (await c.query<T>(sql)).rows
    } finally {
      await c.end().catch(() => {})
    }
  }

  /** The last lines of this server's log (to explain a failure). */
  logTail(lines = 30): string {
    try {
      return readFileSync(this.logFile, 'utf8').split('\n').slice(-lines).join('\n')
    } catch {
      return '(no log)'
    }
  }
}

export interface PgPair {
  dir: string
  primary: PgNode
  standby: PgNode
  /** `postgres://postgres@127.0.0.1:P1,127.0.0.1:P2/gatehouse?target_session_attrs=read-write` */
  multiHostUrl: string
  /** Stop both servers and remove the directory; safe to call twice and after a failed start. */
  cleanup(): Promise<void>
}

/**
 * Build and start a primary and a synchronous hot standby of it, with a `gatehouse` database.
 * Resolves once the standby streams as the synchronous standby (pg_stat_replication sync_state
 * 'sync'). Cleans up by itself when building fails.
 */
export async function startReplicatedPair(): Promise<PgPair> {
  const bin = findBinDir()
  if (!bin) throw new Error(INSTALL_HINT)
  const owner = postgresUser()
  const dir = mkdtempSync(path.join(tmpdir(), 'gh-pg-'))
  if (owner) chownSync(dir, owner.uid, owner.gid)
  const run = (tool: string, args: string[], timeoutMs = 30_000) => new Promise<string>((resolve, reject) => {
    const exe = path.join(bin, tool)
    const [file, argv] = owner ? ['/usr/sbin/runuser', ['-u', 'postgres', '--', exe, ...args]] : [exe, args]
    // cwd: a directory the postgres user can enter (the repository may not be readable to it).
    execFile(file, argv, { cwd: dir, timeout: timeoutMs, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C', LC_ALL: 'C' } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${tool} ${args.join(' ')} failed: ${err.message}\n${stderr}`))
      else resolve(stdout)
    })
  })
  const [p1, p2] = [await freePort(), await freePort()]
  const primary = new PgNode('primary', p1, path.join(dir, 'primary'), run)
  const standby = new PgNode('standby', p2, path.join(dir, 'standby'), run)
  let cleaned = false
  const cleanup = async () => {
    if (cleaned) return
    cleaned = true
    await Promise.all([primary.stop(), standby.stop()])
    rmSync(dir, { recursive: true, force: true })
  }
  watchdog(dir, owner ? ['/usr/sbin/runuser', '-u', 'postgres', '--', path.join(bin, 'pg_ctl')] : [path.join(bin, 'pg_ctl')], [primary.dataDir, standby.dataDir])
  const settings = (port: number) => [
    `listen_addresses = '127.0.0.1'`,
    `port = ${port}`,
    `unix_socket_directories = '${dir}'`,
    `wal_level = replica`,
    `max_wal_senders = 5`,
    `hot_standby = on`,
    `max_connections = 60`,
    `shared_buffers = 16MB`,
    `synchronous_commit = on`,
    `wal_sender_timeout = 5s`,
    `wal_receiver_status_interval = 1s`,
    `log_min_messages = warning`,
  ].join('\n') + '\n'
  try {
    await run('initdb', ['-D', primary.dataDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync', '--no-instructions'], 60_000)
    appendFileSync(path.join(primary.dataDir, 'postgresql.conf'), settings(p1))
    await primary.start()
    await primary.query(`CREATE DATABASE ${DATABASE}`, 'postgres')
    await run('pg_basebackup', [
      '-d', `host=127.0.0.1 port=${p1} user=postgres application_name=${STANDBY_NAME}`,
      '-D', standby.dataDir, '-R', '-X', 'stream', '-c', 'fast', '--no-sync',
    ], 60_000)
    // The copy carries the primary's settings: its own port, and no synchronous standby of its own.
    appendFileSync(path.join(standby.dataDir, 'postgresql.conf'), `port = ${p2}\nsynchronous_standby_names = ''\n`)
    await standby.start()
    // Synchronous only now: before the standby streams, every commit on the primary would wait.
    await primary.query(`ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 (${STANDBY_NAME})'`, 'postgres')
    await primary.query('SELECT pg_reload_conf()', 'postgres')
    const deadline = Date.now() + 20_000
    for (;;) {
      const rows = await primary.query<{ sync_state: string }>(`SELECT sync_state FROM pg_stat_replication WHERE application_name = '${STANDBY_NAME}'`, 'postgres')
      if (rows[0]?.sync_state === 'sync') break
      if (Date.now() > deadline) throw new Error(`the standby did not become synchronous (${JSON.stringify(rows)})\n${standby.logTail()}`)
      await new Promise((r) => setTimeout(r, 100))
    }
  } catch (err) {
    const logs = `--- primary log ---\n${primary.logTail()}\n--- standby log ---\n${standby.logTail()}`
    await cleanup()
    throw new Error(`${(err as Error).message}\n${logs}`, { cause: err })
  }
  return {
    dir, primary, standby, cleanup,
    multiHostUrl: `postgres://postgres@127.0.0.1:${p1},127.0.0.1:${p2}/${DATABASE}?target_session_attrs=read-write`,
  }
}
