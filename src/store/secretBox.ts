import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { ConfigError, SecretStoreError } from '../errors.js'

/**
 * Encryption at rest for secrets kept in the store (enrollment shared keys, session keys).
 *
 * The master key file holds a ring of AES-256 keys; new values are sealed with `current`, and
 * older keys stay in the ring so rows sealed before a rotation remain readable.
 *
 * Sealed value layout (all lengths in bytes):
 *
 *   +------+-------+-----------------+----------+----------------+----------+
 *   | 0x01 | idLen | keyId (ASCII)   | IV (12)  | ciphertext (n) | tag (16) |
 *   +------+-------+-----------------+----------+----------------+----------+
 *     1      1       idLen
 *
 * AAD (authenticated, not stored) = UTF-8 of `gatehouse/v1|<table>|<column>|<row>`, so a sealed
 * value copied into another row, column or table fails to open. The header itself is not in the
 * AAD: tampering with the version or key id simply selects the wrong key and fails the tag.
 */

const FORMAT_VERSION = 0x01
const IV_LENGTH = 12
const TAG_LENGTH = 16
const KEY_LENGTH = 32
const KEY_ID_RE = /^[A-Za-z0-9_-]{1,64}$/

export interface MasterKey {
  id: string
  key: Buffer
  createdAt: string
}

export interface MasterKeyRing {
  version: 1
  current: string
  keys: MasterKey[]
}

export interface SealContext {
  table: string
  column: string
  row: string
}

/** A fresh random key entry (used on first start and, later, by rotation). */
export function newMasterKey(now: Date = new Date()): MasterKey {
  return { id: `k${randomBytes(4).toString('hex')}`, key: randomBytes(KEY_LENGTH), createdAt: now.toISOString() }
}

/** Load the master key file, refusing unsafe permissions or malformed content. */
export function loadMasterKey(path: string): MasterKeyRing {
  let raw: string
  try {
    // Permissions first: a key file others can read is already compromised, say so loudly.
    const st = statSync(path)
    if (process.platform !== 'win32' && (st.mode & 0o077) !== 0) {
      throw new ConfigError(
        `master key file ${path} is accessible by group/other (mode ${(st.mode & 0o777).toString(8)}); run: chmod 600 ${path}`,
      )
    }
    raw = readFileSync(path, 'utf8')
  } catch (err) {
    if (err instanceof ConfigError) throw err
    const code = (err as NodeJS.ErrnoException).code ?? 'unknown error'
    throw new ConfigError(`master key file ${path} cannot be read (${code})`)
  }
  return parseRing(path, raw)
}

/** Load the master key file, creating it (0600, parent dir 0700) with one random key if missing. */
export function loadOrCreateMasterKey(path: string): MasterKeyRing {
  const ring: MasterKeyRing = { version: 1, current: '', keys: [newMasterKey()] }
  ring.current = ring.keys[0]!.id
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
  try {
    // 'wx' so two processes starting together never overwrite each other's key.
    writeFileSync(path, serializeRing(ring), { mode: 0o600, flag: 'wx' })
    chmodSync(path, 0o600) // writeFile's mode is filtered by the umask
    return ring
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      const code = (err as NodeJS.ErrnoException).code ?? 'unknown error'
      throw new ConfigError(`master key file ${path} cannot be created (${code})`)
    }
  }
  return loadMasterKey(path)
}

export function serializeRing(ring: MasterKeyRing): string {
  const keys = ring.keys.map((k) => ({ id: k.id, key: k.key.toString('base64'), createdAt: k.createdAt }))
  return `${JSON.stringify({ version: 1, current: ring.current, keys }, null, 2)}\n`
}

/** Validation messages name the field only: the file's values may be key bytes. */
function parseRing(path: string, raw: string): MasterKeyRing {
  const fail = (what: string) => new ConfigError(`master key file ${path}: ${what}`)
  let doc: unknown
  try {
    doc = JSON.parse(raw)
  } catch {
    // JSON.parse's message quotes the input, which may contain key material: not forwarded.
    throw fail('not valid JSON')
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw fail('expected a JSON object')
  const d = doc as Record<string, unknown>
  if (d.version !== 1) throw fail('"version" must be 1')
  if (typeof d.current !== 'string') throw fail('"current" must be a string')
  if (!Array.isArray(d.keys) || d.keys.length === 0) throw fail('"keys" must be a non-empty array')
  const keys: MasterKey[] = []
  const seen = new Set<string>()
  d.keys.forEach((entry: unknown, i: number) => {
    if (typeof entry !== 'object' || entry === null) throw fail(`keys[${i}] must be an object`)
    const e = entry as Record<string, unknown>
    if (typeof e.id !== 'string' || !KEY_ID_RE.test(e.id)) throw fail(`keys[${i}].id must match ${KEY_ID_RE}`)
    if (seen.has(e.id)) throw fail(`keys[${i}].id is duplicated`)
    seen.add(e.id)
    if (typeof e.key !== 'string') throw fail(`keys[${i}].key must be a base64 string`)
    const key = Buffer.from(e.key, 'base64')
    // Round-trip check rejects non-canonical or garbage base64, which Buffer.from silently skips.
    if (key.length !== KEY_LENGTH || key.toString('base64') !== e.key) {
      throw fail(`keys[${i}].key must be base64 of exactly ${KEY_LENGTH} bytes`)
    }
    if (typeof e.createdAt !== 'string') throw fail(`keys[${i}].createdAt must be a string`)
    keys.push({ id: e.id, key, createdAt: e.createdAt })
  })
  if (!seen.has(d.current)) throw fail('"current" does not name a key in "keys"')
  return { version: 1, current: d.current, keys }
}

export class SecretBox {
  readonly currentKeyId: string
  readonly #keys = new Map<string, Buffer>()

  constructor(ring: MasterKeyRing) {
    for (const k of ring.keys) {
      if (!KEY_ID_RE.test(k.id) || k.key.length !== KEY_LENGTH) {
        throw new ConfigError('master key ring contains an invalid key entry')
      }
      this.#keys.set(k.id, Buffer.from(k.key)) // own copy: caller may wipe theirs
    }
    if (!this.#keys.has(ring.current)) throw new ConfigError('master key ring: "current" does not name a key')
    this.currentKeyId = ring.current
  }

  seal(plaintext: Buffer, aad: SealContext): Buffer {
    const key = this.#keys.get(this.currentKeyId)!
    const iv = randomBytes(IV_LENGTH)
    const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_LENGTH })
    cipher.setAAD(aadBytes(aad))
    const ct = Buffer.concat([cipher.update(plaintext), cipher.final()])
    const id = Buffer.from(this.currentKeyId, 'ascii')
    return Buffer.concat([Buffer.from([FORMAT_VERSION, id.length]), id, iv, ct, cipher.getAuthTag()])
  }

  open(sealed: Buffer, aad: SealContext): Buffer {
    const { keyId, body } = parseHeader(sealed)
    const key = this.#keys.get(keyId)
    if (!key) throw openFailed()
    const iv = body.subarray(0, IV_LENGTH)
    const ct = body.subarray(IV_LENGTH, body.length - TAG_LENGTH)
    const tag = body.subarray(body.length - TAG_LENGTH)
    try {
      const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_LENGTH })
      decipher.setAAD(aadBytes(aad))
      decipher.setAuthTag(tag)
      return Buffer.concat([decipher.update(ct), decipher.final()])
    } catch {
      throw openFailed()
    }
  }

  /** Which master key sealed this value (to find rows still sealed with an old key). */
  keyIdOf(sealed: Buffer): string {
    return parseHeader(sealed).keyId
  }
}

/** One generic message for every failure: the caller learns nothing about which check failed. */
function openFailed(): Error {
  return new SecretStoreError('stored secret could not be decrypted')
}

function parseHeader(sealed: Buffer): { keyId: string; body: Buffer } {
  if (sealed.length < 2 || sealed[0] !== FORMAT_VERSION) throw openFailed()
  const idLen = sealed[1]!
  const bodyStart = 2 + idLen
  if (idLen === 0 || sealed.length < bodyStart + IV_LENGTH + TAG_LENGTH) throw openFailed()
  return { keyId: sealed.toString('ascii', 2, bodyStart), body: sealed.subarray(bodyStart) }
}

function aadBytes(aad: SealContext): Buffer {
  // `|` is the separator: table and column must not contain it, or two contexts could collide.
  // The row is last, so any character there is unambiguous.
  if (!aad.table || !aad.column || aad.table.includes('|') || aad.column.includes('|')) {
    throw new SecretStoreError('invalid sealing context')
  }
  return Buffer.from(`gatehouse/v1|${aad.table}|${aad.column}|${aad.row}`, 'utf8')
}
