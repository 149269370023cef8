/**
 * Master key rotation while the security server runs (`gatehouse keys rotate`).
 *
 *   1. rotate:   add a new key to the master key file, make it current, keep the old ones;
 *                the file is replaced atomically (temp file 0600 + fsync + rename).
 *   2. reload:   every running server re-reads the file (its mtime is polled, and on SIGHUP)
 *                and from then on seals with the new key; it can still open every old value.
 *   3. re-seal:  store.reencryptSecrets() rewrites, in small transactions, every row sealed with
 *                another key; the server keeps serving in between.
 *   4. prune:    (optional) keys no row uses any more are removed from the file.
 *
 * Safety: a reload never forgets a key it had (the new ring is merged over the old one), so a
 * row sealed by a server that had not reloaded yet stays readable; pruned keys leave memory at
 * the next restart. Prune removes only keys no row carries, checked right before the file is
 * written.
 */
import { randomBytes } from 'node:crypto'
import { chmodSync, closeSync, fsyncSync, openSync, renameSync, unlinkSync, unwatchFile, watchFile, writeSync } from 'node:fs'
import { ConfigError } from '../errors.js'
import type { Logger } from '../observability/logger.js'
import { loadMasterKey, newMasterKey, SecretBox, serializeRing, type MasterKeyRing, type SealContext } from '../store/secretBox.js'
import type { SqlDb } from '../store/sqlDb.js'

/** Tables with sealed columns and their key_id column (src/store/queries/secrets.ts seals these). */
const SEALED_TABLES = ['enrollments', 'sessions'] as const

/**
 * A SecretBox whose key ring can be replaced while the store uses it. The store holds this one
 * object; `reload` swaps the box inside, so a seal or open always sees one whole ring.
 */
export class ReloadableSecretBox extends SecretBox {
  #inner: SecretBox
  #ring: MasterKeyRing

  constructor(ring: MasterKeyRing) {
    super(ring)
    this.#inner = new SecretBox(ring)
    this.#ring = ring
    // The base class keeps currentKeyId as a plain field; here it follows the inner box.
    Object.defineProperty(this, 'currentKeyId', { get: () => this.#inner.currentKeyId, enumerable: true, configurable: true })
  }

  /** Take the file's ring (its current key) and keep every key already known. */
  reload(ring: MasterKeyRing): { current: string; added: string[] } {
    const known = new Map(this.#ring.keys.map((k) => [k.id, k]))
    const added = ring.keys.filter((k) => !known.has(k.id)).map((k) => k.id)
    for (const k of ring.keys) known.set(k.id, k)
    const merged: MasterKeyRing = { version: 1, current: ring.current, keys: [...known.values()] }
    this.#inner = new SecretBox(merged) // validates before anything is swapped
    this.#ring = merged
    return { current: merged.current, added }
  }

  get keyIds(): string[] {
    return this.#ring.keys.map((k) => k.id)
  }

  override seal(plaintext: Buffer, aad: SealContext): Buffer {
    return this.#inner.seal(plaintext, aad)
  }

  override open(sealed: Buffer, aad: SealContext): Buffer {
    return this.#inner.open(sealed, aad)
  }

  override keyIdOf(sealed: Buffer): string {
    return this.#inner.keyIdOf(sealed)
  }
}

/**
 * Re-read the master key file into `box` when its modification time changes (polled every
 * `intervalMs`) and on SIGHUP. A file that cannot be read or parsed is logged and ignored: the
 * box keeps its keys. Returns a stop function.
 */
export function watchMasterKey(path: string, box: ReloadableSecretBox, log: Logger, o: { intervalMs?: number; sighup?: boolean } = {}): () => void {
  const reload = (why: string) => {
    try {
      const r = box.reload(loadMasterKey(path))
      log.info({ event: 'master_key_reloaded', why, current: r.current, added: r.added }, 'master key file reloaded')
    } catch (err) {
      log.error({ event: 'master_key_reload_failed', why, err }, 'master key file could not be reloaded; keeping the keys in memory')
    }
  }
  const onChange = (cur: { mtimeMs: number }, prev: { mtimeMs: number }) => {
    if (cur.mtimeMs !== prev.mtimeMs && cur.mtimeMs !== 0) reload('file changed')
  }
  watchFile(path, { interval: o.intervalMs ?? 1000, persistent: false }, onChange)
  const onHup = () => reload('SIGHUP')
  if (o.sighup) process.on('SIGHUP', onHup)
  return () => {
    unwatchFile(path, onChange)
    if (o.sighup) process.off('SIGHUP', onHup)
  }
}

/** Replace the key file atomically: a crash leaves the old file or the new one, mode 0600 either way. */
export function writeRingAtomic(path: string, ring: MasterKeyRing): void {
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`
  try {
    const fd = openSync(tmp, 'wx', 0o600)
    try {
      writeSync(fd, serializeRing(ring))
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    chmodSync(tmp, 0o600) // open's mode is filtered by the umask
    renameSync(tmp, path)
  } catch (err) {
    try { unlinkSync(tmp) } catch { /* not created */ }
    throw new ConfigError(`master key file ${path} cannot be written (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
}

/** Step 1: a new current key in the file. Returns the new ring and the key ids before. */
export function addCurrentKey(path: string): { ring: MasterKeyRing; added: string; previous: string[] } {
  const ring = loadMasterKey(path)
  const key = newMasterKey()
  const next: MasterKeyRing = { version: 1, current: key.id, keys: [...ring.keys, key] }
  writeRingAtomic(path, next)
  return { ring: next, added: key.id, previous: ring.keys.map((k) => k.id) }
}

/** Key ids that sealed at least one stored row. */
export async function keyIdsInUse(db: SqlDb): Promise<string[]> {
  const ids = new Set<string>()
  for (const t of SEALED_TABLES) {
    for (const r of await db.all<{ key_id: string }>(`SELECT DISTINCT key_id FROM ${t}`)) ids.add(r.key_id)
  }
  return [...ids].sort()
}

/** Step 4: drop from the file every key but the current one that no row uses. Returns the removed ids. */
export async function pruneUnusedKeys(path: string, db: SqlDb): Promise<{ removed: string[]; kept: string[] }> {
  const ring = loadMasterKey(path)
  const used = new Set(await keyIdsInUse(db))
  const keep = ring.keys.filter((k) => k.id === ring.current || used.has(k.id))
  const removed = ring.keys.filter((k) => !keep.includes(k)).map((k) => k.id)
  if (removed.length > 0) writeRingAtomic(path, { version: 1, current: ring.current, keys: keep })
  return { removed, kept: keep.map((k) => k.id) }
}
