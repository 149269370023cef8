/**
 * `gatehouse admin add|list|remove|token` (administrators of the admin API and dashboard, kept
 * in the database) and `gatehouse keys rotate|prune` (master key rotation while servers run).
 *
 * These commands open the configured database directly, so they work whether or not a server
 * is running (SQLite allows a second process; PostgreSQL anyway). Passwords are read as for
 * `users add` (--password-stdin, $GATEHOUSE_PASSWORD or a hidden prompt), never printed; a
 * token is printed once on standard output and only its hash is stored.
 */
import { userInfo } from 'node:os'
import type { GatehouseConfig } from '../../config/load.js'
import { loadConfig } from '../../config/load.js'
import { ExistsError, UsageError } from '../../errors.js'
import { createLogger } from '../../observability/logger.js'
import { ADMIN_ROLES, AdminAuth, validateAdmin } from '../../security/adminAuth.js'
import { AuditLog } from '../../security/audit.js'
import { addCurrentKey, keyIdsInUse, pruneUnusedKeys, ReloadableSecretBox } from '../../security/masterKeys.js'
import { openStore } from '../../store/openStore.js'
import { loadMasterKey, loadOrCreateMasterKey } from '../../store/secretBox.js'
import type { SqlStore } from '../../store/sqlStore.js'
import type { AdminRole } from '../../store/types.js'
import { expectPositionals, flag, intOption, stringOption } from '../args.js'
import { formatTable, type Command, type CommandContext } from '../commands.js'
import { readPassword } from './users.js'

const MAX_TOKEN_TTL = 90 * 86400

function config(ctx: CommandContext): GatehouseConfig {
  return loadConfig(stringOption(ctx.values, 'config'))
}

async function withStore<T>(c: GatehouseConfig, fn: (store: SqlStore, box: ReloadableSecretBox) => Promise<T>): Promise<T> {
  const box = new ReloadableSecretBox(loadOrCreateMasterKey(c.files.masterKeyFile))
  const store = await openStore({ url: c.security.databaseUrl, path: c.files.databasePath, secretBox: box })
  try {
    return await fn(store, box)
  } finally {
    await store.close()
  }
}

/** The CLI acts as the operator at this machine: audited as `cli:<login>`. */
const operator = () => {
  try {
    return `cli:${userInfo().username}`
  } catch {
    return 'cli:unknown'
  }
}

function tools(store: SqlStore) {
  const log = createLogger({ level: 'silent' })
  const audit = new AuditLog({ store, log })
  const auth = new AdminAuth({ store, audit, log, auth: { verify: async () => null } })
  const record = (action: string, target: string, details?: Record<string, unknown>) =>
    audit.record({ actor: operator(), actorRole: 'operator', action, target, remote: 'local', details })
  return { audit, auth, record }
}

export const adminAdd: Command = {
  name: 'admin add',
  summary: 'Add an administrator of the admin API and dashboard',
  usage: 'admin add NAME --role admin|helpdesk|auditor [--password-stdin] [--replace]',
  details: [
    'Options:',
    '  --role R           admin (everything), helpdesk (read; lock/unlock/wipe; activation codes)',
    '                     or auditor (read everything incl. the audit log; change nothing)',
    '  --password-stdin   read the password from the first line of standard input',
    '  --replace          change the role and password of an existing administrator',
    '',
    'Without --password-stdin the password comes from $GATEHOUSE_PASSWORD or a hidden prompt.',
    'Passwords are 12 to 1024 characters, stored as scrypt hashes in the database.',
  ].join('\n'),
  options: { role: { type: 'string' }, 'password-stdin': { type: 'boolean' }, replace: { type: 'boolean' } },
  async run(ctx) {
    const [name] = expectPositionals(ctx.positionals, ['NAME'])
    const role = stringOption(ctx.values, 'role')
    if (!role || !(ADMIN_ROLES as readonly string[]).includes(role)) throw new UsageError(`--role must be one of ${ADMIN_ROLES.join(', ')}`)
    const c = config(ctx)
    const password = await readPassword(ctx)
    validateAdmin(name, role, password)
    await withStore(c, async (store) => {
      const existing = await store.getAdminUser(name!)
      if (existing && !flag(ctx.values, 'replace')) throw new ExistsError(`admin ${name} already exists (use --replace to change it)`)
      const { auth, record } = tools(store)
      await auth.putAdmin(name!, role as AdminRole, password)
      await record(existing ? 'admin.update' : 'admin.create', `admin:${name}`, { role })
    })
    ctx.stdout.write(`${flag(ctx.values, 'replace') ? 'saved' : 'added'} admin ${name} (${role})\n`)
  },
}

export const adminList: Command = {
  name: 'admin list',
  summary: 'List the administrators',
  usage: 'admin list',
  async run(ctx) {
    expectPositionals(ctx.positionals, [])
    const admins = await withStore(config(ctx), (store) => store.listAdminUsers())
    if (admins.length === 0) {
      ctx.stdout.write('no administrators yet: gatehouse admin add NAME --role admin\n')
      return
    }
    ctx.stdout.write(`${formatTable(['NAME', 'ROLE', 'CREATED'], admins.map((a) => [a.name, a.role, new Date(a.createdAt).toISOString()]))}\n`)
  },
}

export const adminRemove: Command = {
  name: 'admin remove',
  summary: 'Remove an administrator (and its tokens)',
  usage: 'admin remove NAME',
  async run(ctx) {
    const [name] = expectPositionals(ctx.positionals, ['NAME'])
    const removed = await withStore(config(ctx), async (store) => {
      const ok = await store.deleteAdminUser(name!)
      if (ok) await tools(store).record('admin.delete', `admin:${name}`)
      return ok
    })
    if (!removed) {
      ctx.stderr.write(`gatehouse: no admin named "${name}"\n`)
      return 1
    }
    ctx.stdout.write(`removed admin ${name}\n`)
  },
}

export const adminToken: Command = {
  name: 'admin token',
  summary: 'Print a new bearer token for an administrator (shown once)',
  usage: 'admin token NAME [--ttl SECONDS]',
  details: [
    'Options:',
    `  --ttl SECONDS   lifetime of the token (default 3600, at most ${MAX_TOKEN_TTL})`,
    '',
    'The token goes to standard output alone on one line (for scripts: TOKEN=$(gatehouse admin token ops));',
    'its expiry goes to standard error. Use it as "Authorization: Bearer <token>".',
  ].join('\n'),
  options: { ttl: { type: 'string' } },
  async run(ctx) {
    const [name] = expectPositionals(ctx.positionals, ['NAME'])
    const ttl = intOption(ctx.values, 'ttl', { min: 60, max: MAX_TOKEN_TTL }) ?? 3600
    const { token, expiresAt } = await withStore(config(ctx), async (store) => {
      if (!(await store.getAdminUser(name!))) throw new UsageError(`no admin named "${name}"`)
      const { auth, record } = tools(store)
      const t = await auth.issueAdminToken(name!, ttl * 1000)
      await record('admin.token', `admin:${name}`, { ttlSeconds: ttl, expiresAt: t.expiresAt })
      return t
    })
    ctx.stdout.write(`${token}\n`)
    ctx.stderr.write(`token for ${name} expires ${new Date(expiresAt).toISOString()}\n`)
  },
}

export const keysRotate: Command = {
  name: 'keys rotate',
  summary: 'Add a new master key, make it current and re-seal every stored secret with it',
  usage: 'keys rotate [--prune] [--wait SECONDS]',
  details: [
    'Options:',
    '  --prune          afterwards, remove from the key file the keys no stored row uses any more',
    '  --wait SECONDS   pause between writing the key file and re-sealing, so that running servers',
    '                   (which re-read the file within a second, or at once on SIGHUP) seal new',
    '                   secrets with the new key first (default 2)',
    '',
    'Safe while servers run: the old keys stay in the file (and in every running server) until',
    '--prune, so every secret stays readable throughout.',
  ].join('\n'),
  options: { prune: { type: 'boolean' }, wait: { type: 'string' } },
  async run(ctx) {
    expectPositionals(ctx.positionals, [])
    const c = config(ctx)
    const waitS = intOption(ctx.values, 'wait', { min: 0, max: 600 }) ?? 2
    const path = c.files.masterKeyFile
    loadMasterKey(path) // a missing or unsafe file is reported before anything changes
    const r = addCurrentKey(path)
    ctx.stdout.write(`added master key ${r.added} (now current; ${r.ring.keys.length} keys in ${path})\n`)
    if (waitS > 0) await new Promise((resolve) => setTimeout(resolve, waitS * 1000))
    await withStore(c, async (store, box) => {
      box.reload(loadMasterKey(path))
      const n = await store.reencryptSecrets()
      ctx.stdout.write(`re-sealed ${n} stored secret(s) with ${box.currentKeyId}\n`)
      if (flag(ctx.values, 'prune')) await prune(ctx, path, store)
      await tools(store).record('keys.rotate', 'master-key', { keyId: r.added, resealed: n, pruned: flag(ctx.values, 'prune') })
    })
  },
}

async function prune(ctx: CommandContext, path: string, store: SqlStore): Promise<void> {
  // A server that had not reloaded yet may have sealed a row with an old key meanwhile: re-seal
  // once more, then drop only keys no row carries.
  await store.reencryptSecrets()
  const { removed, kept } = await pruneUnusedKeys(path, store.db)
  ctx.stdout.write(removed.length > 0 ? `removed unused key(s): ${removed.join(', ')}\n` : 'no unused keys to remove\n')
  ctx.stdout.write(`keys in use or current: ${kept.join(', ')}\n`)
}

export const keysPrune: Command = {
  name: 'keys prune',
  summary: 'Remove from the master key file the keys no stored row uses',
  usage: 'keys prune',
  async run(ctx) {
    expectPositionals(ctx.positionals, [])
    const c = config(ctx)
    await withStore(c, async (store) => {
      await prune(ctx, c.files.masterKeyFile, store)
      ctx.stdout.write(`key ids in the database: ${(await keyIdsInUse(store.db)).join(', ') || '(none)'}\n`)
    })
  },
}

export const adminCommands: Command[] = [adminAdd, adminList, adminRemove, adminToken, keysRotate, keysPrune]
