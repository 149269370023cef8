/**
 * The backup key: 32 random bytes that encrypt backup files (backupFile.ts), kept apart from the
 * master key. A stolen backup shows nothing without it; a restore needs it AND the master key
 * file (the database's own secrets stay sealed under the master key inside the backup).
 *
 * File: the key in base64 on one line (32 raw bytes are accepted too, e.g. `head -c 32
 * /dev/urandom`), mode 0600, refused when group or others can read it.
 *
 * Key id: the first 8 bytes of HMAC-SHA256(key, "gatehouse/backup/key-id"), written in every
 * backup's header so that a wrong key file is named as such instead of failing as "tampered".
 * An HMAC output says nothing about the key.
 */
import { createHmac, randomBytes } from 'node:crypto'
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { ConfigError } from '../errors.js'

export const BACKUP_KEY_LENGTH = 32
export const BACKUP_KEY_ID_LENGTH = 8

export interface BackupKey {
  /** 8 bytes, see above. */
  readonly id: Buffer
  readonly key: Buffer
}

/** The key id as shown in messages (hex). */
export const keyIdHex = (id: Buffer): string => id.toString('hex')

export function backupKeyFrom(key: Buffer): BackupKey {
  if (key.length !== BACKUP_KEY_LENGTH) throw new ConfigError(`a backup key is ${BACKUP_KEY_LENGTH} bytes`)
  const id = createHmac('sha256', key).update('gatehouse/backup/key-id').digest().subarray(0, BACKUP_KEY_ID_LENGTH)
  return { id: Buffer.from(id), key: Buffer.from(key) }
}

/** Load the backup key file, refusing unsafe permissions or content that is not one 32-byte key. */
export function loadBackupKey(path: string): BackupKey {
  let raw: Buffer
  try {
    const st = statSync(path)
    if (process.platform !== 'win32' && (st.mode & 0o077) !== 0) {
      throw new ConfigError(`backup key file ${path} is accessible by group/other (mode ${(st.mode & 0o777).toString(8)}); run: chmod 600 ${path}`)
    }
    raw = readFileSync(path)
  } catch (err) {
    if (err instanceof ConfigError) throw err
    const code = (err as NodeJS.ErrnoException).code ?? 'unknown error'
    throw new ConfigError(`backup key file ${path} cannot be read (${code})`)
  }
  return backupKeyFrom(parseKeyFile(path, raw))
}

/** Load the backup key file, creating it (0600, folder 0700) with a fresh random key if missing. */
export function loadOrCreateBackupKey(path: string): { key: BackupKey; created: boolean } {
  const key = randomBytes(BACKUP_KEY_LENGTH)
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
    // 'wx': two processes creating it at once never overwrite each other's key.
    writeFileSync(path, `${key.toString('base64')}\n`, { mode: 0o600, flag: 'wx' })
    chmodSync(path, 0o600) // writeFile's mode is filtered by the umask
    return { key: backupKeyFrom(key), created: true }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new ConfigError(`backup key file ${path} cannot be created (${(err as NodeJS.ErrnoException).code ?? 'unknown error'})`)
    }
  } finally {
    key.fill(0)
  }
  return { key: loadBackupKey(path), created: false }
}

/** Messages never quote the content: it is key material. */
function parseKeyFile(path: string, raw: Buffer): Buffer {
  if (raw.length === BACKUP_KEY_LENGTH) return raw
  const text = raw.toString('latin1').trim()
  const key = Buffer.from(text, 'base64')
  // Round trip: Buffer.from silently skips characters that are not base64.
  if (key.length !== BACKUP_KEY_LENGTH || key.toString('base64') !== text) {
    throw new ConfigError(`backup key file ${path} must hold one base64 line of exactly ${BACKUP_KEY_LENGTH} bytes (or the ${BACKUP_KEY_LENGTH} bytes themselves)`)
  }
  return key
}
