import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ConfigError, ExistsError, UsageError } from '../../src/errors.js'
import { UserFile, hashPassword, verifyPassword } from '../../src/security/users.js'

const PASSWORD = 'correct horse battery staple'

let dir: string
let path: string
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'gh-users-'))
  path = join(dir, 'etc', 'users.json')
})
afterEach(() => { rmSync(dir, { recursive: true, force: true }) })

describe('password hashes', () => {
  it('hash in the documented format and verify', async () => {
    const h = await hashPassword(PASSWORD)
    expect(h).toMatch(/^scrypt\$16384\$8\$1\$[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}$/)
    expect(await verifyPassword(PASSWORD, h)).toBe(true)
    expect(await verifyPassword(`${PASSWORD}!`, h)).toBe(false)
    expect(await verifyPassword(PASSWORD, 'scrypt$garbage')).toBe(false)
    expect(await hashPassword(PASSWORD)).not.toBe(h) // salted
  })
})

describe('UserFile', () => {
  it('adds, verifies, lists and removes users', async () => {
    const users = await UserFile.load(path, { create: true })
    expect(users.list()).toEqual([])
    await users.add('alice', PASSWORD, ['staff', 'mobile'])
    await users.add('bob@example.com', 'another password')
    expect(await users.verify('alice', PASSWORD)).toEqual({ name: 'alice', groups: ['staff', 'mobile'] })
    expect(users.list().map((u) => u.name)).toEqual(['alice', 'bob@example.com'])
    expect(users.list()[0]).not.toHaveProperty('hash')

    const reloaded = await UserFile.load(path)
    expect(await reloaded.verify('bob@example.com', 'another password')).toEqual({ name: 'bob@example.com', groups: [] })

    expect(await users.remove('alice')).toBe(true)
    expect(await users.remove('alice')).toBe(false)
    expect(await users.verify('alice', PASSWORD)).toBeNull()
    expect((await UserFile.load(path)).list().map((u) => u.name)).toEqual(['bob@example.com'])
  })

  it('returns null for a wrong password or an unknown user', async () => {
    const users = await UserFile.load(path, { create: true })
    await users.add('alice', PASSWORD)
    expect(await users.verify('alice', 'wrong password')).toBeNull()
    expect(await users.verify('alice', '')).toBeNull()
    expect(await users.verify('alice', 'x'.repeat(5000))).toBeNull()
    expect(await users.verify('nobody', PASSWORD)).toBeNull()
    expect(await users.verify('Alice', PASSWORD)).toBeNull()
  })

  it('refuses duplicates, bad names and bad passwords', async () => {
    const users = await UserFile.load(path, { create: true })
    await users.add('alice', PASSWORD)
    await expect(users.add('alice', PASSWORD)).rejects.toThrow(ExistsError)
    await expect(users.add('ALICE', PASSWORD)).rejects.toThrow(ExistsError)
    for (const name of ['', 'a b', 'x'.repeat(129), 'é', 'a/b', 'a\nb']) {
      await expect(users.add(name, PASSWORD), JSON.stringify(name)).rejects.toThrow(UsageError)
    }
    await expect(users.add('carol', 'short')).rejects.toThrow(UsageError)
    await expect(users.add('carol', 'x'.repeat(1025))).rejects.toThrow(UsageError)
    await expect(users.add('carol', PASSWORD, ['bad group'])).rejects.toThrow(UsageError)
    expect(users.list().map((u) => u.name)).toEqual(['alice'])
  })

  it('serializes concurrent adds without losing any', async () => {
    const users = await UserFile.load(path, { create: true })
    await Promise.all(['u1', 'u2', 'u3', 'u4'].map((n) => users.add(n, PASSWORD)))
    expect((await UserFile.load(path)).list().map((u) => u.name).sort()).toEqual(['u1', 'u2', 'u3', 'u4'])
  })

  it('writes the file 0600, atomically, without the plaintext password', async () => {
    const users = await UserFile.load(path, { create: true })
    await users.add('alice', PASSWORD)
    if (process.platform !== 'win32') expect(statSync(path).mode & 0o777).toBe(0o600)
    const text = readFileSync(path, 'utf8')
    expect(text).not.toContain(PASSWORD)
    expect(text).not.toContain(Buffer.from(PASSWORD).toString('base64'))
    expect(JSON.parse(text)).toMatchObject({ version: 1, users: [{ name: 'alice', groups: [] }] })
    expect(readdirSync(join(dir, 'etc'))).toEqual(['users.json']) // no temp files left behind
  })

  it('reports a missing file (without create) and a corrupted one with a ConfigError naming the path', async () => {
    await expect(UserFile.load(path)).rejects.toThrow(ConfigError)
    await UserFile.load(path, { create: true })
    const cases: [string, RegExp][] = [
      ['{ not json', /not valid JSON/],
      [JSON.stringify({ version: 2, users: [] }), /version/],
      [JSON.stringify({ version: 1, users: [{ name: 'a', hash: 'plain', groups: [], createdAt: '' }] }), /users\[0\]\.hash/],
      [JSON.stringify({ version: 1, users: [{ name: 'a b', hash: 'x', groups: [], createdAt: '' }] }), /users\[0\]\.name/],
    ]
    for (const [content, re] of cases) {
      writeFileSync(path, content)
      const err = await UserFile.load(path).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(ConfigError)
      expect((err as Error).message).toMatch(re)
      expect((err as Error).message).toContain(path)
    }
  })
})
