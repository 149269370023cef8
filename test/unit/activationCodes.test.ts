/** Activation codes: format and entropy, only the hash stored, single use, expiry, user and app binding. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { MalformedError } from '../../src/errors.js'
import { ActivationCodeService, base32, canonicalCode, codeHash } from '../../src/security/activationCodes.js'
import { newMasterKey, SecretBox } from '../../src/store/secretBox.js'
import { openStore } from '../../src/store/openStore.js'
import type { SqlStore } from '../../src/store/sqlStore.js'

describe('code format', () => {
  it('base32 is RFC 4648 (test vectors of §10, without padding)', () => {
    expect(base32(Buffer.from(''))).toBe('')
    expect(base32(Buffer.from('f'))).toBe('MY')
    expect(base32(Buffer.from('fo'))).toBe('MZXQ')
    expect(base32(Buffer.from('foo'))).toBe('MZXW6')
    expect(base32(Buffer.from('foob'))).toBe('MZXW6YQ')
    expect(base32(Buffer.from('fooba'))).toBe('MZXW6YTB')
    expect(base32(Buffer.from('foobar'))).toBe('MZXW6YTBOI')
  })

  it('canonical form: case and dashes/spaces do not matter; anything else is not a code', () => {
    const c = 'ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ23-4567'
    expect(canonicalCode(c)).toBe('ABCDEFGHIJKLMNOPQRSTUVWXYZ234567')
    expect(canonicalCode(c.toLowerCase().replaceAll('-', ' '))).toBe('ABCDEFGHIJKLMNOPQRSTUVWXYZ234567')
    expect(canonicalCode(c.slice(0, -1))).toBeUndefined()
    expect(canonicalCode(c.replace('A', '0'))).toBeUndefined()
    expect(canonicalCode(42)).toBeUndefined()
    expect(canonicalCode('A'.repeat(65))).toBeUndefined()
  })
})

describe('ActivationCodeService', () => {
  let store: SqlStore
  let now = 1_700_000_000_000
  let svc: ActivationCodeService
  beforeEach(async () => {
    const key = newMasterKey()
    store = await openStore({ path: ':memory:', secretBox: new SecretBox({ version: 1, current: key.id, keys: [key] }) })
    now = 1_700_000_000_000
    svc = new ActivationCodeService({ store, now: () => now })
  })
  afterEach(async () => {
    await store.close()
  })

  it('issues 160-bit codes, different each time, shown in groups of four', async () => {
    const a = await svc.issue({ userName: 'alice', createdBy: 'admin' })
    const b = await svc.issue({ userName: 'alice', createdBy: 'admin' })
    expect(a.code).toMatch(/^([A-Z2-7]{4}-){7}[A-Z2-7]{4}$/)
    expect(canonicalCode(a.code)!.length * 5).toBeGreaterThanOrEqual(128)
    expect(a.code).not.toBe(b.code)
    expect(a.expiresAt).toBe(now + 72 * 3600 * 1000)
  })

  it('stores only the SHA-256 of the code: not in the records, not in the database', async () => {
    const { code } = await svc.issue({ userName: 'alice', appId: 'mail', ttlSeconds: 600, createdBy: 'admin' })
    const canonical = canonicalCode(code)!
    const [rec] = await svc.list({ userName: 'alice' })
    expect(rec).toEqual({
      codeHash: codeHash(canonical), userName: 'alice', appId: 'mail', expiresAt: now + 600_000, usedAt: null, createdBy: 'admin', createdAt: now,
    })
    expect(rec!.codeHash).toMatch(/^[0-9a-f]{64}$/)
    const rows = await store.db.all<Record<string, unknown>>('SELECT * FROM activation_codes')
    const dump = JSON.stringify(rows)
    expect(dump).not.toContain(canonical)
    expect(dump).not.toContain(code)
    expect(dump).not.toContain(canonical.toLowerCase())
  })

  it('a code works once, for its user and app, in any spelling', async () => {
    const { code } = await svc.issue({ userName: 'alice', appId: 'mail', createdBy: 'admin' })
    expect(await svc.consume(code.toLowerCase().replaceAll('-', ''), { userName: 'alice', appId: 'mail' })).toBe(true)
    expect(await svc.consume(code, { userName: 'alice', appId: 'mail' })).toBe(false)
    expect((await svc.list({ userName: 'alice' }))[0]!.usedAt).toBe(now)
  })

  it('concurrent uses of one code: exactly one succeeds', async () => {
    const { code } = await svc.issue({ userName: 'alice', createdBy: 'admin' })
    const results = await Promise.all(Array.from({ length: 8 }, () => svc.consume(code, { userName: 'alice', appId: 'mail' })))
    expect(results.filter(Boolean)).toHaveLength(1)
  })

  it('a code without an app fits any app', async () => {
    const { code } = await svc.issue({ userName: 'alice', createdBy: 'admin' })
    expect(await svc.consume(code, { userName: 'alice', appId: 'anything' })).toBe(true)
  })

  it('expired: refused', async () => {
    const { code } = await svc.issue({ userName: 'alice', ttlSeconds: 60, createdBy: 'admin' })
    now += 60_000
    expect(await svc.consume(code, { userName: 'alice', appId: 'mail' })).toBe(false)
  })

  it('another user or another app: refused, and the code is spent (it cannot be probed)', async () => {
    const a = await svc.issue({ userName: 'alice', createdBy: 'admin' })
    expect(await svc.consume(a.code, { userName: 'bob', appId: 'mail' })).toBe(false)
    expect(await svc.consume(a.code, { userName: 'alice', appId: 'mail' })).toBe(false)
    const b = await svc.issue({ userName: 'alice', appId: 'crm', createdBy: 'admin' })
    expect(await svc.consume(b.code, { userName: 'alice', appId: 'mail' })).toBe(false)
  })

  it('junk is refused without a store lookup', async () => {
    expect(await svc.consume('not-a-code', { userName: 'alice', appId: 'mail' })).toBe(false)
    expect(await svc.consume(undefined, { userName: 'alice', appId: 'mail' })).toBe(false)
  })

  it.each([
    [{ userName: '', createdBy: 'a' }, 'userName'],
    [{ userName: 'alice', appId: 'bad app', createdBy: 'a' }, 'appId'],
    [{ userName: 'alice', ttlSeconds: 59, createdBy: 'a' }, 'ttlSeconds'],
    [{ userName: 'alice', ttlSeconds: 31 * 86400, createdBy: 'a' }, 'ttlSeconds'],
    [{ userName: 'alice', createdBy: '' }, 'createdBy'],
  ])('issue(%j) is refused naming %s', async (input, field) => {
    const err = await svc.issue(input).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(MalformedError)
    expect((err as Error).message.startsWith(field)).toBe(true)
  })
})
