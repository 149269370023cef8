/**
 * The encrypted backup file format (src/store/backupFile.ts) and the backup key file
 * (src/store/backupKey.ts): round trips at record boundaries, and every way a file can be
 * damaged — a flipped byte anywhere, a cut anywhere, bytes appended, a wrong key — refused.
 */
import { randomBytes } from 'node:crypto'
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { BackupInvalidError, ConfigError, ExistsError } from '../../src/errors.js'
import { BackupReader, BackupWriter, HEADER_LENGTH, RECORD_MAX } from '../../src/store/backupFile.js'
import { backupKeyFrom, loadBackupKey, loadOrCreateBackupKey } from '../../src/store/backupKey.js'

const dir = mkdtempSync(path.join(tmpdir(), 'gh-backupfile-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
let n = 0
const fresh = () => path.join(dir, `b${++n}.ghbackup`)
const key = backupKeyFrom(randomBytes(32))

async function write(payload: Buffer, pieces = 3, k = key): Promise<string> {
  const out = fresh()
  const w = await BackupWriter.create(out, k, 'sqlite', 1_700_000_000_000)
  const step = Math.max(1, Math.ceil(payload.length / pieces))
  for (let i = 0; i < payload.length; i += step) await w.write(payload.subarray(i, i + step))
  await w.finish()
  return out
}

async function read(file: string, k = key): Promise<Buffer> {
  const r = await BackupReader.open(file, k)
  const parts: Buffer[] = []
  for await (const p of r.payload()) parts.push(p)
  return Buffer.concat(parts)
}

async function refused(file: string, re: RegExp, k = key): Promise<void> {
  const err = await read(file, k).then(() => undefined, (e: unknown) => e)
  expect(err, `expected ${re} for ${file}`).toBeInstanceOf(BackupInvalidError)
  expect((err as Error).message).toMatch(re)
  expect((err as { code: string }).code).toBe('GH_ERR_BACKUP_INVALID')
}

/** Byte offsets where each record starts, and whether it is final. */
function records(file: string): { at: number; final: boolean; end: number }[] {
  const b = readFileSync(file)
  const out: { at: number; final: boolean; end: number }[] = []
  let at = HEADER_LENGTH
  while (at < b.length) {
    const w = b.readUInt32BE(at)
    const end = at + 4 + (w & 0x7fffffff) + 16
    out.push({ at, final: (w & 0x80000000) !== 0, end })
    at = end
  }
  return out
}

describe('backup file format', () => {
  it.each([0, 1, 1000, RECORD_MAX - 1, RECORD_MAX, RECORD_MAX + 1, 3 * RECORD_MAX, 200_000])('round trip of %i payload bytes', async (size) => {
    const payload = randomBytes(size)
    const file = await write(payload)
    expect((await read(file)).equals(payload)).toBe(true)
    const recs = records(file)
    expect(recs.length).toBe(Math.max(1, Math.ceil(size / RECORD_MAX)))
    expect(recs.map((r) => r.final)).toEqual(recs.map((_, i) => i === recs.length - 1))
    expect(recs.at(-1)!.end).toBe(statSync(file).size)
    expect(statSync(file).mode & 0o777).toBe(0o600)
  })

  it('reports the header: kind and creation time', async () => {
    const r = await BackupReader.open(await write(Buffer.from('x')), key)
    expect(r.header.kind).toBe('sqlite')
    expect(r.header.createdAt).toBe(1_700_000_000_000)
    await r.close()
  })

  it('two files of the same payload share no ciphertext (fresh salt, fresh data key)', async () => {
    const payload = Buffer.alloc(5000, 7)
    const a = readFileSync(await write(payload)).subarray(HEADER_LENGTH)
    const b = readFileSync(await write(payload)).subarray(HEADER_LENGTH)
    expect(a.equals(b)).toBe(false)
    expect(a.subarray(4, 36).equals(b.subarray(4, 36))).toBe(false)
  })

  it('refuses every single flipped byte (header, length words, ciphertext, tags)', async () => {
    const file = await write(randomBytes(2 * RECORD_MAX + 100))
    const good = readFileSync(file)
    const positions = new Set<number>()
    for (let i = 0; i < HEADER_LENGTH; i++) positions.add(i)
    for (const r of records(file)) for (const p of [r.at, r.at + 3, r.at + 4, r.at + 5000, r.end - 17, r.end - 1]) positions.add(p)
    for (const p of positions) {
      if (p >= good.length) continue
      const bad = Buffer.from(good)
      bad[p] = bad[p]! ^ 0x01
      const f = fresh()
      writeFileSync(f, bad)
      const err = await read(f).then(() => undefined, (e: unknown) => e)
      expect(err, `flip at ${p}`).toBeInstanceOf(BackupInvalidError)
    }
    await refused(fileWith(good, (b) => { b[HEADER_LENGTH + 10]! ^= 0xff }), /failed authentication at record 0/)
  })

  it('refuses a file cut anywhere: inside the header, inside a record, at a record boundary', async () => {
    const file = await write(randomBytes(2 * RECORD_MAX + 100))
    const good = readFileSync(file)
    const recs = records(file)
    expect(recs.length).toBe(3)
    for (const cut of [4, HEADER_LENGTH - 1, HEADER_LENGTH, HEADER_LENGTH + 2, recs[0]!.end - 1, recs[0]!.end, recs[1]!.end, recs[1]!.end + 4, good.length - 1]) {
      const f = fileWith(good.subarray(0, cut))
      const err = await read(f).then(() => undefined, (e: unknown) => e)
      expect(err, `cut at ${cut}`).toBeInstanceOf(BackupInvalidError)
      expect((err as Error).message, `cut at ${cut}`).toMatch(cut < 8 ? /not a Gatehouse backup/ : /truncated/)
    }
  })

  it('refuses a record turned into the final one, and bytes after the final record', async () => {
    const file = await write(randomBytes(RECORD_MAX + 10))
    const good = readFileSync(file)
    const recs = records(file)
    // Drop the last record and flag the first as final: the flag is in the AAD.
    const forged = Buffer.from(good.subarray(0, recs[0]!.end))
    forged.writeUInt32BE((forged.readUInt32BE(recs[0]!.at) | 0x80000000) >>> 0, recs[0]!.at)
    await refused(fileWith(forged), /failed authentication at record 0/)
    await refused(fileWith(Buffer.concat([good, Buffer.from([0])])), /data after its final record/)
    await refused(fileWith(Buffer.concat([good, good.subarray(recs[1]!.at)])), /data after its final record/)
  })

  it('refuses another backup key by its id, and a file that is not a backup', async () => {
    const file = await write(Buffer.from('payload'))
    const other = backupKeyFrom(randomBytes(32))
    const err = await BackupReader.open(file, other).then(() => undefined, (e: unknown) => e)
    expect(err).toBeInstanceOf(BackupInvalidError)
    expect((err as Error).message).toContain(`was encrypted with backup key ${key.id.toString('hex')}, but the backup key file holds key ${other.id.toString('hex')}`)
    await refused(fileWith(Buffer.from('SQLite format 3\u0000 and more')), /is not a Gatehouse backup file/)
    await refused(path.join(dir, 'missing.ghbackup'), /cannot be read \(ENOENT\)/)
  })

  it('never overwrites a file, and an aborted writer leaves nothing behind', async () => {
    const file = await write(Buffer.from('a'))
    await expect(BackupWriter.create(file, key, 'sqlite')).rejects.toBeInstanceOf(ExistsError)
    const before = readdirSync(dir).length
    const w = await BackupWriter.create(fresh(), key, 'logical')
    await w.write(randomBytes(100_000))
    await w.abort()
    expect(readdirSync(dir).length).toBe(before)
  })
})

describe('backup key file', () => {
  it('is created once, mode 0600, base64 of 32 bytes, with a stable id', () => {
    const f = path.join(dir, 'keys', 'backup.key')
    const a = loadOrCreateBackupKey(f)
    expect(a.created).toBe(true)
    expect(statSync(f).mode & 0o777).toBe(0o600)
    expect(readFileSync(f, 'utf8')).toMatch(/^[A-Za-z0-9+/]{43}=\n$/)
    const b = loadOrCreateBackupKey(f)
    expect(b.created).toBe(false)
    expect(b.key.key.equals(a.key.key)).toBe(true)
    expect(b.key.id.equals(a.key.id)).toBe(true)
    expect(a.key.id.length).toBe(8)
  })

  it('accepts the 32 raw bytes too; refuses other content and loose permissions without quoting the file', () => {
    const raw = path.join(dir, 'raw.key')
    const bytes = randomBytes(32)
    writeFileSync(raw, bytes, { mode: 0o600 })
    expect(loadBackupKey(raw).key.equals(bytes)).toBe(true)
    const bad = path.join(dir, 'bad.key')
    writeFileSync(bad, 'c2VjcmV0LWJ1dC10b28tc2hvcnQ=\n', { mode: 0o600 })
    expect(() => loadBackupKey(bad)).toThrow(ConfigError)
    expect(() => loadBackupKey(bad)).not.toThrow(/c2VjcmV0/)
    chmodSync(raw, 0o644)
    expect(() => loadBackupKey(raw)).toThrow(/accessible by group\/other \(mode 644\); run: chmod 600/)
    expect(() => loadBackupKey(path.join(dir, 'none.key'))).toThrow(/cannot be read \(ENOENT\)/)
  })
})

function fileWith(bytes: Buffer, change?: (b: Buffer) => void): string {
  const b = Buffer.from(bytes)
  change?.(b)
  const f = fresh()
  writeFileSync(f, b)
  return f
}
