import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ConfigError, SecretStoreError } from '../../src/errors.js'
import {
  SecretBox, loadMasterKey, loadOrCreateMasterKey, newMasterKey, serializeRing, type MasterKeyRing,
} from '../../src/store/secretBox.js'

const AAD = { table: 'enrollments', column: 'shared_key', row: 'enr-1' }
const posix = process.platform !== 'win32'

let dir: string
beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'gh-secretbox-')) })
afterEach(() => { rmSync(dir, { recursive: true, force: true }) })

function ringOf(...keys: ReturnType<typeof newMasterKey>[]): MasterKeyRing {
  return { version: 1, current: keys[keys.length - 1]!.id, keys }
}

describe('SecretBox', () => {
  const box = new SecretBox(ringOf(newMasterKey()))
  const secret = Buffer.from('0123456789abcdef0123456789abcdef')

  it('round-trips and records the key id', () => {
    const sealed = box.seal(secret, AAD)
    expect(box.open(sealed, AAD).equals(secret)).toBe(true)
    expect(box.keyIdOf(sealed)).toBe(box.currentKeyId)
    expect(sealed[0]).toBe(0x01)
    expect(sealed.includes(secret)).toBe(false)
    // Random IV: sealing twice gives different bytes.
    expect(box.seal(secret, AAD).equals(sealed)).toBe(false)
  })

  it('round-trips an empty plaintext', () => {
    expect(box.open(box.seal(Buffer.alloc(0), AAD), AAD).length).toBe(0)
  })

  it.each([
    ['row', { ...AAD, row: 'enr-2' }],
    ['column', { ...AAD, column: 'other' }],
    ['table', { ...AAD, table: 'sessions' }],
  ])('fails with the AAD of another %s', (_what, aad) => {
    const sealed = box.seal(secret, AAD)
    expect(() => box.open(sealed, aad)).toThrow(SecretStoreError)
  })

  it('fails when any byte of IV, ciphertext or tag is flipped', () => {
    const sealed = box.seal(secret, AAD)
    const headerLen = 2 + sealed[1]!
    for (let i = headerLen; i < sealed.length; i++) {
      const bad = Buffer.from(sealed)
      bad[i] = bad[i]! ^ 0x01
      expect(() => box.open(bad, AAD), `byte ${i}`).toThrow(SecretStoreError)
    }
  })

  it('fails on a bad version byte and on truncation, with a generic message', () => {
    const sealed = box.seal(secret, AAD)
    const badVersion = Buffer.from(sealed)
    badVersion[0] = 0x02
    expect(() => box.open(badVersion, AAD)).toThrow(SecretStoreError)
    for (const len of [0, 1, 2, 10, sealed.length - 1]) {
      expect(() => box.open(sealed.subarray(0, len), AAD)).toThrow(SecretStoreError)
    }
    try {
      box.open(sealed.subarray(0, sealed.length - 1), AAD)
    } catch (err) {
      expect((err as Error).message).not.toContain(AAD.row)
      expect((err as Error).message).toBe('stored secret could not be decrypted')
    }
  })

  it('fails on an unknown key id', () => {
    const other = new SecretBox(ringOf(newMasterKey()))
    expect(() => box.open(other.seal(secret, AAD), AAD)).toThrow(SecretStoreError)
  })

  it('opens values sealed with an old key after a new current key is added', () => {
    const oldKey = newMasterKey()
    const oldBox = new SecretBox(ringOf(oldKey))
    const sealedOld = oldBox.seal(secret, AAD)
    const rotated = new SecretBox(ringOf(oldKey, newMasterKey()))
    expect(rotated.currentKeyId).not.toBe(oldKey.id)
    expect(rotated.open(sealedOld, AAD).equals(secret)).toBe(true)
    const sealedNew = rotated.seal(secret, AAD)
    expect(rotated.keyIdOf(sealedNew)).toBe(rotated.currentKeyId)
    expect(() => oldBox.open(sealedNew, AAD)).toThrow(SecretStoreError)
  })

  it('rejects a table or column containing the separator', () => {
    expect(() => box.seal(secret, { ...AAD, table: 'a|b' })).toThrow(SecretStoreError)
  })
})

describe('master key file', () => {
  it('is created 0600 in a new 0700 directory and loads back identically', () => {
    const path = join(dir, 'sub', 'master.key')
    const ring = loadOrCreateMasterKey(path)
    expect(ring.keys).toHaveLength(1)
    expect(ring.keys[0]!.key.length).toBe(32)
    expect(ring.current).toMatch(/^k[0-9a-f]{8}$/)
    if (posix) {
      expect(statSync(path).mode & 0o777).toBe(0o600)
      expect(statSync(join(dir, 'sub')).mode & 0o777).toBe(0o700)
    }
    const again = loadOrCreateMasterKey(path)
    expect(again.current).toBe(ring.current)
    expect(again.keys[0]!.key.equals(ring.keys[0]!.key)).toBe(true)
    expect(loadMasterKey(path).current).toBe(ring.current)
  })

  it.runIf(posix)('refuses a group-readable file and says chmod 600', () => {
    const path = join(dir, 'master.key')
    loadOrCreateMasterKey(path)
    chmodSync(path, 0o640)
    expect(() => loadMasterKey(path)).toThrow(ConfigError)
    expect(() => loadOrCreateMasterKey(path)).toThrow(/chmod 600/)
    expect(() => loadMasterKey(path)).toThrow(path)
  })

  it('refuses a missing file without create', () => {
    expect(() => loadMasterKey(join(dir, 'nope.key'))).toThrow(ConfigError)
  })

  it('reports malformed files without echoing key material', () => {
    const path = join(dir, 'master.key')
    const key = newMasterKey()
    const good = JSON.parse(serializeRing(ringOf(key))) as { keys: { key: string }[] }
    const b64 = good.keys[0]!.key
    const cases: [string, string][] = [
      [`{"version":1,"current":"x","keys":[{"id":"x","key":"${b64}` /* cut */, 'not valid JSON'],
      [JSON.stringify({ ...good, version: 2 }), 'version'],
      [JSON.stringify({ ...good, current: 'nope' }), 'current'],
      [JSON.stringify({ ...good, keys: [{ ...good.keys[0], key: b64.slice(0, 20) }] }), 'keys[0].key'],
      [JSON.stringify({ ...good, keys: [{ ...good.keys[0], key: `${b64}AAAA` }] }), 'keys[0].key'],
      [JSON.stringify({ ...good, keys: [good.keys[0], good.keys[0]] }), 'duplicated'],
    ]
    for (const [content, expected] of cases) {
      writeFileSync(path, content, { mode: 0o600 })
      let message = ''
      try {
        loadMasterKey(path)
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError)
        message = (err as Error).message
      }
      expect(message).toContain(expected)
      expect(message).toContain(path)
      expect(message).not.toContain(b64)
      expect(message).not.toContain(b64.slice(0, 12))
      expect(message).not.toContain(key.key.toString('hex').slice(0, 12))
    }
    // Sanity: the good file itself loads.
    writeFileSync(path, serializeRing(ringOf(key)), { mode: 0o600 })
    expect(loadMasterKey(path).keys[0]!.key.equals(key.key)).toBe(true)
    expect(readFileSync(path, 'utf8')).toContain(b64)
  })
})
