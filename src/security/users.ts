import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto'
import { chmod, mkdir, open, readFile, rename, unlink } from 'node:fs/promises'
import { dirname } from 'node:path'
import { ConfigError, ExistsError, UsageError } from '../errors.js'

/**
 * Local user file: `{ "version": 1, "users": [ { name, hash, groups, createdAt } ] }`.
 * Passwords are stored as `scrypt$N$r$p$<salt b64>$<hash b64>` (parameters kept per hash so
 * they can be raised later without invalidating existing users).
 */

const SCRYPT = { N: 16384, r: 8, p: 1, saltLength: 16, keyLength: 32 }
const NAME_RE = /^[A-Za-z0-9._@-]{1,128}$/
const MIN_PASSWORD = 8
const MAX_PASSWORD = 1024

export interface UserEntry {
  name: string
  hash: string
  groups: string[]
  createdAt: string
}

export interface UserInfo {
  name: string
  groups: string[]
  createdAt: string
}

interface ParsedHash {
  N: number
  r: number
  p: number
  salt: Buffer
  hash: Buffer
}

function scryptAsync(password: string, salt: Buffer, keylen: number, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, keylen, opts, (err, key) => (err ? reject(err) : resolve(key)))
  })
}

/** NFC so the same password typed on different keyboards hashes the same. */
const normalize = (password: string) => password.normalize('NFC')

/** Bounds stop a tampered file from making every sign-in cost seconds or gigabytes. */
function parseHash(encoded: string): ParsedHash | undefined {
  const parts = encoded.split('$')
  if (parts.length !== 6 || parts[0] !== 'scrypt') return undefined
  const [N, r, p] = [Number(parts[1]), Number(parts[2]), Number(parts[3])]
  if (!Number.isInteger(N) || N < 2 || N > 2 ** 20 || (N & (N - 1)) !== 0) return undefined
  if (!Number.isInteger(r) || r < 1 || r > 32 || !Number.isInteger(p) || p < 1 || p > 16) return undefined
  const salt = Buffer.from(parts[4]!, 'base64')
  const hash = Buffer.from(parts[5]!, 'base64')
  if (salt.length < 8 || hash.length < 16 || hash.length > 64) return undefined
  return { N, r, p, salt, hash }
}

const scryptOpts = (N: number, r: number, p: number): ScryptOptions =>
  ({ N, r, p, maxmem: 256 * N * r + 1024 * 1024 })

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(SCRYPT.saltLength)
  const { N, r, p } = SCRYPT
  const key = await scryptAsync(normalize(password), salt, SCRYPT.keyLength, scryptOpts(N, r, p))
  return `scrypt$${N}$${r}$${p}$${salt.toString('base64')}$${key.toString('base64')}`
}

/** false on any mismatch or malformed hash; never throws for a wrong password. */
export async function verifyPassword(password: string, encoded: string): Promise<boolean> {
  const h = parseHash(encoded)
  if (!h) return false
  const key = await scryptAsync(normalize(password), h.salt, h.hash.length, scryptOpts(h.N, h.r, h.p))
  return timingSafeEqual(key, h.hash)
}

// A real hash to check unknown users against, so their answer takes as long as a known user's.
let dummyHash: Promise<string> | undefined
const getDummyHash = () => (dummyHash ??= hashPassword(randomBytes(16).toString('hex')))

function validateName(name: string): void {
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    throw new UsageError('user name must be 1-128 characters of A-Z a-z 0-9 . _ @ -')
  }
}

export class UserFile {
  readonly path: string
  #users: UserEntry[]
  /** Serializes writes so concurrent add/remove never lose each other's change. */
  #queue: Promise<unknown> = Promise.resolve()

  private constructor(path: string, users: UserEntry[]) {
    this.path = path
    this.#users = users
  }

  static async load(path: string, opts: { create?: boolean } = {}): Promise<UserFile> {
    await getDummyHash() // computed now, so the first unknown-user sign-in is not the slow one
    let raw: string
    try {
      raw = await readFile(path, 'utf8')
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT' && opts.create) {
        const file = new UserFile(path, [])
        await mkdir(dirname(path), { recursive: true, mode: 0o700 })
        await file.#write([])
        return file
      }
      throw new ConfigError(`user file ${path} cannot be read (${code ?? 'unknown error'})`)
    }
    return new UserFile(path, parseUserFile(path, raw))
  }

  list(): UserInfo[] {
    return this.#users.map((u) => ({ name: u.name, groups: [...u.groups], createdAt: u.createdAt }))
  }

  async add(name: string, password: string, groups: string[] = []): Promise<void> {
    validateName(name)
    if (typeof password !== 'string' || password.length < MIN_PASSWORD || password.length > MAX_PASSWORD) {
      throw new UsageError(`password must be ${MIN_PASSWORD} to ${MAX_PASSWORD} characters`)
    }
    for (const g of groups) {
      if (typeof g !== 'string' || !NAME_RE.test(g)) throw new UsageError('group names must be 1-128 characters of A-Z a-z 0-9 . _ @ -')
    }
    this.#assertAbsent(name)
    const hash = await hashPassword(password)
    await this.#mutate(() => {
      this.#assertAbsent(name) // again: another add may have finished while we hashed
      return [...this.#users, { name, hash, groups: [...new Set(groups)], createdAt: new Date().toISOString() }]
    })
  }

  async remove(name: string): Promise<boolean> {
    let removed = false
    await this.#mutate(() => {
      const next = this.#users.filter((u) => u.name !== name)
      removed = next.length !== this.#users.length
      return removed ? next : undefined
    })
    return removed
  }

  async verify(name: string, password: string): Promise<{ name: string; groups: string[] } | null> {
    if (typeof name !== 'string' || typeof password !== 'string' || password.length > MAX_PASSWORD) return null
    const user = this.#users.find((u) => u.name === name)
    const ok = await verifyPassword(password, user ? user.hash : await getDummyHash())
    return ok && user ? { name: user.name, groups: [...user.groups] } : null
  }

  /** Case-insensitive: `Admin` next to `admin` invites confusion and impersonation. */
  #assertAbsent(name: string): void {
    const lower = name.toLowerCase()
    if (this.#users.some((u) => u.name.toLowerCase() === lower)) throw new ExistsError(`user ${name} already exists`)
  }

  /** Runs `change` in turn; writes its result (if any) and only then makes it current. */
  #mutate(change: () => UserEntry[] | undefined): Promise<void> {
    const run = this.#queue.then(async () => {
      const next = change()
      if (!next) return
      await this.#write(next)
      this.#users = next
    })
    this.#queue = run.catch(() => undefined)
    return run
  }

  /** Atomic replace: a crash leaves either the old file or the new one, never half of one. */
  async #write(users: UserEntry[]): Promise<void> {
    const tmp = `${this.path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`
    const body = `${JSON.stringify({ version: 1, users }, null, 2)}\n`
    try {
      const fh = await open(tmp, 'wx', 0o600)
      try {
        await fh.writeFile(body, 'utf8')
        await fh.sync()
      } finally {
        await fh.close()
      }
      await chmod(tmp, 0o600) // open's mode is filtered by the umask
      await rename(tmp, this.path)
    } catch (err) {
      await unlink(tmp).catch(() => undefined)
      const code = (err as NodeJS.ErrnoException).code ?? 'unknown error'
      throw new ConfigError(`user file ${this.path} cannot be written (${code})`)
    }
  }
}

function parseUserFile(path: string, raw: string): UserEntry[] {
  const fail = (what: string) => new ConfigError(`user file ${path}: ${what}`)
  let doc: unknown
  try {
    doc = JSON.parse(raw)
  } catch {
    throw fail('not valid JSON') // JSON.parse's message would quote the file (hashes)
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw fail('expected a JSON object')
  const d = doc as Record<string, unknown>
  if (d.version !== 1) throw fail('"version" must be 1')
  if (!Array.isArray(d.users)) throw fail('"users" must be an array')
  const seen = new Set<string>()
  return d.users.map((entry: unknown, i: number): UserEntry => {
    if (typeof entry !== 'object' || entry === null) throw fail(`users[${i}] must be an object`)
    const u = entry as Record<string, unknown>
    if (typeof u.name !== 'string' || !NAME_RE.test(u.name)) throw fail(`users[${i}].name is missing or invalid`)
    if (seen.has(u.name)) throw fail(`users[${i}].name is duplicated`)
    seen.add(u.name)
    if (typeof u.hash !== 'string' || !parseHash(u.hash)) throw fail(`users[${i}].hash is not a valid scrypt hash`)
    if (!Array.isArray(u.groups) || !u.groups.every((g) => typeof g === 'string')) {
      throw fail(`users[${i}].groups must be an array of strings`)
    }
    if (typeof u.createdAt !== 'string') throw fail(`users[${i}].createdAt must be a string`)
    return { name: u.name, hash: u.hash, groups: u.groups as string[], createdAt: u.createdAt }
  })
}
