/**
 * The encrypted backup file: a header, then the payload in AES-256-GCM records of at most 64 KiB
 * with a final-record flag, so that tampering, a wrong key and truncation are all detected.
 * Written to a temporary file (mode 0600) and renamed into place, so a backup file is complete
 * or absent.
 *
 * Header (58 bytes, in the clear, authenticated by every record):
 *
 *   +----------+---------+------+----------+-----------+-----------+
 *   | GHBACKUP | version | kind | keyId    | createdAt | salt      |
 *   +----------+---------+------+----------+-----------+-----------+
 *     8 bytes    1 (=1)    1      8          8 (ms, BE)  32 (random)
 *
 *   kind: 1 = a SQLite database file, 2 = logical JSON lines (backupLogical.ts)
 *   keyId: id of the backup key (backupKey.ts)
 *
 * Records, until the one flagged final; nothing may follow it:
 *
 *   +--------------------------+------------------------------+
 *   | F | plaintext length (31) | ciphertext (length) | tag 16 |
 *   +--------------------------+------------------------------+
 *     4 bytes BE, F = final flag (bit 31); length <= 65536
 *
 *   data key = HKDF-SHA256(ikm = backup key, salt = header salt, info = "gatehouse/backup/v1", 32)
 *   nonce    = 4 zero bytes || record number (uint64 BE, from 0)
 *   AAD      = header (58 bytes) || record number (8) || final flag (1 byte, 0 or 1)
 *
 * The salt is fresh per file, so every file has its own data key and counter nonces never repeat
 * under one key. The final flag is both in the length word and in the AAD: cutting the file after
 * any record, or flipping the flag, fails.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto'
import { closeSync, fsyncSync, openSync } from 'node:fs'
import { open, rename, rm, type FileHandle } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { BackupInvalidError, ExistsError } from '../errors.js'
import { keyIdHex, BACKUP_KEY_ID_LENGTH, type BackupKey } from './backupKey.js'

export const BACKUP_MAGIC = Buffer.from('GHBACKUP', 'ascii')
export const BACKUP_FORMAT_VERSION = 1
export const RECORD_MAX = 64 * 1024
const SALT_LENGTH = 32
const TAG_LENGTH = 16
const FINAL = 0x8000_0000
export const HEADER_LENGTH = BACKUP_MAGIC.length + 1 + 1 + BACKUP_KEY_ID_LENGTH + 8 + SALT_LENGTH
const INFO = Buffer.from('gatehouse/backup/v1', 'ascii')

/** What the payload is: a SQLite database file, or the logical export of backupLogical.ts. */
export type PayloadKind = 'sqlite' | 'logical'
const KIND_CODES: Record<PayloadKind, number> = { sqlite: 1, logical: 2 }

export interface BackupHeader {
  kind: PayloadKind
  keyId: Buffer
  /** ms since epoch */
  createdAt: number
}

function encodeHeader(h: BackupHeader, salt: Buffer): Buffer {
  const b = Buffer.alloc(HEADER_LENGTH)
  let o = BACKUP_MAGIC.copy(b, 0)
  o = b.writeUInt8(BACKUP_FORMAT_VERSION, o)
  o = b.writeUInt8(KIND_CODES[h.kind], o)
  o += h.keyId.copy(b, o)
  o = b.writeBigUInt64BE(BigInt(h.createdAt), o)
  salt.copy(b, o)
  return b
}

function dataKey(key: BackupKey, salt: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', key.key, salt, INFO, 32))
}

function nonce(seq: bigint): Buffer {
  const n = Buffer.alloc(12)
  n.writeBigUInt64BE(seq, 4)
  return n
}

function aad(header: Buffer, seq: bigint, final: boolean): Buffer {
  const a = Buffer.alloc(header.length + 9)
  header.copy(a, 0)
  a.writeBigUInt64BE(seq, header.length)
  a[header.length + 8] = final ? 1 : 0
  return a
}

/**
 * Writes one backup file: `write` the payload in any pieces, then `finish` (or `abort`). The
 * file appears under its name only when finished.
 */
export class BackupWriter {
  readonly #fh: FileHandle
  readonly #tmp: string
  readonly #out: string
  readonly #header: Buffer
  readonly #key: Buffer
  #seq = 0n
  #pending: Buffer[] = []
  #pendingBytes = 0
  #bytes = 0
  #done = false

  private constructor(fh: FileHandle, tmp: string, out: string, header: Buffer, key: Buffer) {
    this.#fh = fh
    this.#tmp = tmp
    this.#out = out
    this.#header = header
    this.#key = key
  }

  /** Start `out` (refused if it exists); the bytes go to a temporary file beside it. */
  static async create(out: string, key: BackupKey, kind: PayloadKind, createdAt = Date.now()): Promise<BackupWriter> {
    if (await exists(out)) throw new ExistsError(`backup file ${out} already exists`)
    const tmp = join(dirname(out), `.${basename(out)}.${randomBytes(6).toString('hex')}.tmp`)
    const fh = await open(tmp, 'wx', 0o600)
    try {
      await fh.chmod(0o600) // open's mode is filtered by the umask
      const salt = randomBytes(SALT_LENGTH)
      const header = encodeHeader({ kind, keyId: key.id, createdAt }, salt)
      await fh.write(header)
      const w = new BackupWriter(fh, tmp, out, header, dataKey(key, salt))
      w.#bytes = header.length
      return w
    } catch (err) {
      await fh.close().catch(() => undefined)
      await rm(tmp, { force: true })
      throw err
    }
  }

  /** Add payload bytes; full 64 KiB records are encrypted and written as they fill. */
  async write(chunk: Buffer): Promise<void> {
    if (this.#done) throw new Error('backup writer already finished')
    let rest = chunk
    while (rest.length > 0) {
      const take = Math.min(rest.length, RECORD_MAX - this.#pendingBytes)
      this.#pending.push(rest.subarray(0, take))
      this.#pendingBytes += take
      rest = rest.subarray(take)
      // A full record is written only once more bytes follow: the last one must carry the flag.
      if (this.#pendingBytes === RECORD_MAX && rest.length > 0) await this.#flush(false)
    }
  }

  /** Write the final record, sync, rename into place; returns the file size in bytes. */
  async finish(): Promise<number> {
    if (this.#done) throw new Error('backup writer already finished')
    try {
      await this.#flush(true)
      this.#done = true
      await this.#fh.sync()
      await this.#fh.close()
      await rename(this.#tmp, this.#out)
      syncDir(dirname(this.#out))
      return this.#bytes
    } catch (err) {
      await this.abort()
      throw err
    } finally {
      this.#key.fill(0)
    }
  }

  /** Drop the temporary file. */
  async abort(): Promise<void> {
    this.#done = true
    this.#key.fill(0)
    await this.#fh.close().catch(() => undefined)
    await rm(this.#tmp, { force: true })
  }

  async #flush(final: boolean): Promise<void> {
    const plain = Buffer.concat(this.#pending, this.#pendingBytes)
    this.#pending = []
    this.#pendingBytes = 0
    const seq = this.#seq++
    const cipher = createCipheriv('aes-256-gcm', this.#key, nonce(seq), { authTagLength: TAG_LENGTH })
    cipher.setAAD(aad(this.#header, seq, final))
    const ct = Buffer.concat([cipher.update(plain), cipher.final()])
    const word = Buffer.alloc(4)
    word.writeUInt32BE((final ? FINAL : 0) + plain.length)
    const record = Buffer.concat([word, ct, cipher.getAuthTag()])
    await this.#fh.write(record)
    this.#bytes += record.length
  }
}

/**
 * Reads and checks a backup file. `open` checks the header (magic, version, key id); `payload()`
 * yields the decrypted payload record by record and throws BackupInvalidError at the first
 * record that fails, when the file ends before its final record, or when bytes follow it. A
 * consumer must treat what it got as unverified until the iteration has completed.
 */
export class BackupReader {
  readonly header: BackupHeader
  /** File size in bytes. */
  readonly size: number
  readonly #fh: FileHandle
  readonly #headerBytes: Buffer
  readonly #key: Buffer
  readonly #file: string

  private constructor(fh: FileHandle, file: string, header: BackupHeader, headerBytes: Buffer, key: Buffer, size: number) {
    this.#fh = fh
    this.#file = file
    this.header = header
    this.#headerBytes = headerBytes
    this.#key = key
    this.size = size
  }

  static async open(file: string, key: BackupKey): Promise<BackupReader> {
    let fh: FileHandle
    try {
      fh = await open(file, 'r')
    } catch (err) {
      throw new BackupInvalidError(`backup file ${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
    }
    try {
      const size = (await fh.stat()).size
      const h = Buffer.alloc(HEADER_LENGTH)
      const { bytesRead } = await fh.read(h, 0, HEADER_LENGTH, 0)
      if (bytesRead < BACKUP_MAGIC.length || !h.subarray(0, BACKUP_MAGIC.length).equals(BACKUP_MAGIC)) {
        throw new BackupInvalidError(`${file} is not a Gatehouse backup file`)
      }
      if (bytesRead < HEADER_LENGTH) throw new BackupInvalidError(`backup file ${file} is truncated (incomplete header)`)
      const version = h[BACKUP_MAGIC.length]!
      if (version !== BACKUP_FORMAT_VERSION) {
        throw new BackupInvalidError(`backup file ${file} has format version ${version}; this Gatehouse reads version ${BACKUP_FORMAT_VERSION}`)
      }
      const code = h[BACKUP_MAGIC.length + 1]!
      const kind = (Object.keys(KIND_CODES) as PayloadKind[]).find((k) => KIND_CODES[k] === code)
      if (!kind) throw new BackupInvalidError(`backup file ${file} has an unknown payload kind (${code}); it was tampered with or made by a newer Gatehouse`)
      let o = BACKUP_MAGIC.length + 2
      const keyId = Buffer.from(h.subarray(o, o + BACKUP_KEY_ID_LENGTH))
      o += BACKUP_KEY_ID_LENGTH
      const createdAt = Number(h.readBigUInt64BE(o))
      o += 8
      if (!timingSafeEqual(keyId, key.id)) {
        throw new BackupInvalidError(
          `backup file ${file} was encrypted with backup key ${keyIdHex(keyId)}, but the backup key file holds key ${keyIdHex(key.id)}: use the key file of the installation that made the backup`,
        )
      }
      return new BackupReader(fh, file, { kind, keyId, createdAt }, h, dataKey(key, h.subarray(o, o + SALT_LENGTH)), size)
    } catch (err) {
      await fh.close()
      throw err
    }
  }

  /** The decrypted payload, one record at a time; closes the file at the end (or on error). */
  async *payload(): AsyncGenerator<Buffer> {
    let pos = HEADER_LENGTH
    let seq = 0n
    const word = Buffer.alloc(4)
    try {
      for (;;) {
        const got = await this.#readAt(word, pos)
        if (got < 4) throw this.#truncated(seq)
        pos += 4
        const w = word.readUInt32BE(0)
        const final = (w & FINAL) !== 0
        const length = w & ~FINAL
        if (length > RECORD_MAX) throw this.#tampered(seq)
        const body = Buffer.alloc(length + TAG_LENGTH)
        if ((await this.#readAt(body, pos)) < body.length) throw this.#truncated(seq)
        pos += body.length
        let plain: Buffer
        try {
          const d = createDecipheriv('aes-256-gcm', this.#key, nonce(seq), { authTagLength: TAG_LENGTH })
          d.setAAD(aad(this.#headerBytes, seq, final))
          d.setAuthTag(body.subarray(length))
          plain = Buffer.concat([d.update(body.subarray(0, length)), d.final()])
        } catch {
          throw this.#tampered(seq)
        }
        seq++
        yield plain
        if (final) {
          if (pos !== this.size || (await this.#readAt(word, pos)) > 0) {
            throw new BackupInvalidError(`backup file ${this.#file} has data after its final record: it was tampered with`)
          }
          return
        }
      }
    } finally {
      this.#key.fill(0)
      await this.#fh.close().catch(() => undefined)
    }
  }

  /** Close without reading (when the payload is not needed after all). */
  async close(): Promise<void> {
    this.#key.fill(0)
    await this.#fh.close().catch(() => undefined)
  }

  async #readAt(buf: Buffer, pos: number): Promise<number> {
    let got = 0
    while (got < buf.length) {
      const { bytesRead } = await this.#fh.read(buf, got, buf.length - got, pos + got)
      if (bytesRead === 0) break
      got += bytesRead
    }
    return got
  }

  #truncated(seq: bigint): InstanceType<typeof BackupInvalidError> {
    return new BackupInvalidError(`backup file ${this.#file} is truncated: it ends in or before record ${seq}, without its final record`)
  }

  #tampered(seq: bigint): InstanceType<typeof BackupInvalidError> {
    return new BackupInvalidError(`backup file ${this.#file} failed authentication at record ${seq}: it is corrupt or was tampered with`)
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await (await open(p, 'r')).close()
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ENOENT'
  }
}

/** fsync a folder so a rename in it survives a crash (best effort: not every platform allows it). */
export function syncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r')
    try {
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
  } catch {
    // not supported here (e.g. Windows)
  }
}
