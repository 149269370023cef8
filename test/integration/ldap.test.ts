/**
 * Directory sign-in against a real OpenLDAP slapd (test/helpers/slapd.ts): search then bind and
 * direct bind, groups from memberOf and from a group search, hostile user names, LDAPS and
 * StartTLS, a directory that is down or never answers, the provider chain, and the whole path
 * through the real security server (201 / 401 / 503, nothing secret in the log).
 */
import { randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import path from 'node:path'
import { Agent } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildConfig } from '../../src/config/load.js'
import { ConfigError, UnavailableError } from '../../src/errors.js'
import { generateEcdhKeyPair } from '../../src/protocol/keySchedule.js'
import { AuthenticatorChain } from '../../src/security/directory/chain.js'
import { escapeDnValue, escapeFilterValue, firstRdnValue, LdapAuthenticator, type LdapOptions } from '../../src/security/directory/ldap.js'
import { authenticatorFromConfig } from '../../src/security/fromConfig.js'
import { LocalUserAuthenticator } from '../../src/security/localUsers.js'
import { UserFile } from '../../src/security/users.js'
import { makeTestPki } from '../helpers/pki.js'
import { slapdSkipReason, startSlapd, type Slapd } from '../helpers/slapd.js'
import { closedPort, sendRaw, startRelay, startStack, type Relay, type Stack } from '../helpers/stack.js'

const skipReason = slapdSkipReason()
if (skipReason) console.warn(`test/integration/ldap.test.ts: skipping the slapd tests: ${skipReason}`)

const PEOPLE = 'ou=people,dc=example,dc=org'
const GROUPS = 'ou=groups,dc=example,dc=org'

/** A TCP server that accepts connections and never says anything. */
async function blackHole(): Promise<{ port: number; connections: () => number; close(): Promise<void> }> {
  const sockets = new Set<Socket>()
  let count = 0
  const server: Server = createServer((s) => {
    count++
    sockets.add(s)
    s.on('error', () => {})
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  return {
    port: (server.address() as AddressInfo).port,
    connections: () => count,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy()
      server.close(() => resolve())
    }),
  }
}

async function unavailable(p: Promise<unknown>): Promise<InstanceType<typeof UnavailableError>> {
  const err = await p.then(() => undefined, (e: unknown) => e)
  expect(err).toBeInstanceOf(UnavailableError)
  const e = err as InstanceType<typeof UnavailableError>
  expect(e.status).toBe(503)
  expect(e.code).toBe('GH_ERR_UNAVAILABLE')
  expect(e.message).toBe('directory unavailable')
  return e
}

async function timed<T>(p: Promise<T>): Promise<{ ms: number; result: T | unknown }> {
  const t0 = performance.now()
  const result = await p.then((v) => v, (e: unknown) => e)
  return { ms: performance.now() - t0, result }
}

describe('LDAP escaping (RFC 4515 filters, RFC 4514 DNs)', () => {
  it('escapes filter metacharacters', () => {
    expect(escapeFilterValue('alice')).toBe('alice')
    expect(escapeFilterValue('*')).toBe('\\2a')
    expect(escapeFilterValue('alice)(uid=*')).toBe('alice\\29\\28uid=\\2a')
    expect(escapeFilterValue('a\\b\0c')).toBe('a\\5cb\\00c')
    expect(escapeFilterValue('jürgen')).toBe('jürgen')
  })

  it('escapes DN specials, leading space or #, trailing space', () => {
    expect(escapeDnValue('d,ave')).toBe('d\\,ave')
    expect(escapeDnValue('a+b="c";<d>\\')).toBe('a\\+b\\=\\"c\\"\\;\\<d\\>\\\\')
    expect(escapeDnValue(' #x ')).toBe('\\ #x\\ ')
    expect(escapeDnValue('#x')).toBe('\\#x')
    expect(escapeDnValue('a\\ ')).toBe('a\\\\\\ ')
    expect(escapeDnValue('nul\0')).toBe('nul\\00')
  })

  it('reduces a group DN to its first value', () => {
    expect(firstRdnValue('cn=staff,ou=groups,dc=example,dc=org')).toBe('staff')
    expect(firstRdnValue('CN=Domain Users,CN=Users,DC=corp,DC=example')).toBe('Domain Users')
    expect(firstRdnValue('cn=mail\\2Cusers,ou=groups')).toBe('mail,users')
    expect(firstRdnValue('cn=a\\,b+uid=x,ou=g')).toBe('a,b')
    expect(firstRdnValue('cn=J\\C3\\BCrgen,ou=g')).toBe('Jürgen')
    expect(firstRdnValue('not a dn')).toBeUndefined()
  })
})

describe.skipIf(skipReason !== undefined)('LDAP sign-in against a real slapd', () => {
  let slapd: Slapd
  const cleanups: (() => Promise<void> | void)[] = []

  /** Search then bind with the service account; groups from memberOf. */
  const searchBind = (over: Partial<LdapOptions> = {}) => new LdapAuthenticator({
    url: slapd.url, bindDn: slapd.service.dn, bindPasswordFile: slapd.service.passwordFile, userBase: PEOPLE,
    groupsAttribute: 'memberOf', connectTimeoutMs: 1000, timeoutMs: 2000, ...over,
  })
  /** Direct bind; groups from a group search (read with the user's own rights). */
  const directBind = (over: Partial<LdapOptions> = {}) => new LdapAuthenticator({
    url: slapd.url, userDnTemplate: `uid={{username}},${PEOPLE}`, groupBase: GROUPS, connectTimeoutMs: 1000, timeoutMs: 2000, ...over,
  })
  /** Every password this file knows: none may appear in an error, a cause or a log. */
  const secrets = () => [slapd.service.password, slapd.rootPassword, ...Object.values(slapd.users).map((u) => u.password)]
  const expectNoSecret = (text: string) => {
    for (const s of secrets()) expect(text).not.toContain(s)
  }

  beforeAll(async () => {
    slapd = await startSlapd({ tls: true })
  })
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c()
    await slapd?.stop()
  })

  describe('search then bind', () => {
    it('returns the name and the groups of the user (memberOf, reduced to the CN)', async () => {
      const ldap = searchBind()
      const { alice, bob, carol } = slapd.users
      expect(await ldap.verify('alice', alice.password)).toEqual({ name: 'alice', groups: ['mail-users', 'staff'] })
      expect(await ldap.verify('bob', bob.password)).toEqual({ name: 'bob', groups: ['staff'] })
      expect(await ldap.verify('carol', carol.password)).toEqual({ name: 'carol', groups: [] })
    })

    it('finds groups with a group search instead (service account rights), or both', async () => {
      const bySearch = searchBind({ groupsAttribute: undefined, groupBase: GROUPS })
      expect(await bySearch.verify('alice', slapd.users.alice.password)).toEqual({ name: 'alice', groups: ['mail-users', 'staff'] })
      expect(await bySearch.verify('carol', slapd.users.carol.password)).toEqual({ name: 'carol', groups: [] })
      const both = searchBind({ groupBase: GROUPS, groupFilter: '(&(objectClass=groupOfNames)(member={{dn}}))' })
      expect(await both.verify('bob', slapd.users.bob.password)).toEqual({ name: 'bob', groups: ['staff'] })
    })

    it('returns the name as the directory spells it, and other name attributes work', async () => {
      expect((await searchBind().verify('ALICE', slapd.users.alice.password))?.name).toBe('alice')
      const byMail = searchBind({ userFilter: '(mail={{username}})' })
      expect(await byMail.verify('bob@example.org', slapd.users.bob.password)).toEqual({ name: 'bob', groups: ['staff'] })
      const cnName = searchBind({ usernameAttribute: 'cn' })
      expect((await cnName.verify('carol', slapd.users.carol.password))?.name).toBe('Carol Example')
    })

    it('a wrong password, another user\'s password, an unknown user: null', async () => {
      const ldap = searchBind()
      expect(await ldap.verify('alice', `${slapd.users.alice.password}x`)).toBeNull()
      expect(await ldap.verify('alice', slapd.users.bob.password)).toBeNull()
      expect(await ldap.verify('mallory', slapd.users.alice.password)).toBeNull()
      // The service account is not under userBase: it cannot sign in as a user.
      expect(await ldap.verify('gatehouse', slapd.service.password)).toBeNull()
    })

    it('filter injection finds nobody: the name is escaped (RFC 4515)', async () => {
      const ldap = searchBind()
      const pw = slapd.users.alice.password
      // Unescaped, each would match alice (or be a filter error): escaped, they match nobody.
      for (const name of ['*', 'ali*', 'alice)(uid=*', '*)(|(uid=*', 'alice)(|(objectClass=*)', '(uid=alice)', 'alice\\', 'alice\0']) {
        expect(await ldap.verify(name, pw), name).toBeNull()
      }
    })

    it('a filter matching several entries signs nobody in', async () => {
      // alice and bob share description=team-a: never guess which one is meant.
      const ldap = searchBind({ userFilter: '(description={{username}})' })
      expect(await ldap.verify('team-a', slapd.users.alice.password)).toBeNull()
    })

    it('a name with DN-special characters signs in (the found DN is used as is)', async () => {
      const { dave } = slapd.users
      expect(await searchBind().verify(dave.name, dave.password)).toEqual({ name: 'd,ave', groups: [] })
    })

    it('a refused service account is an outage, not a wrong password', async () => {
      const wrongFile = path.join(slapd.dir, 'wrong-bind-password')
      writeFileSync(wrongFile, 'not-the-service-password\n')
      const err = await unavailable(searchBind({ bindPasswordFile: wrongFile }).verify('alice', slapd.users.alice.password))
      expect(String((err.cause as Error).message)).toMatch(/InvalidCredentials/)
      expectNoSecret(`${err.message} ${(err.cause as Error).message}`)
    })

    it('a missing user base is an outage, not an unknown user', async () => {
      await unavailable(searchBind({ userBase: 'ou=nowhere,dc=example,dc=org' }).verify('alice', slapd.users.alice.password))
    })
  })

  describe('direct bind (DN template)', () => {
    it('signs in and reads the groups with the user\'s rights', async () => {
      const ldap = directBind()
      expect(await ldap.verify('alice', slapd.users.alice.password)).toEqual({ name: 'alice', groups: ['mail-users', 'staff'] })
      expect(await ldap.verify('bob', slapd.users.bob.password)).toEqual({ name: 'bob', groups: ['staff'] })
      expect(await directBind({ groupBase: undefined, groupsAttribute: 'memberOf' }).verify('alice', slapd.users.alice.password))
        .toEqual({ name: 'alice', groups: ['mail-users', 'staff'] })
    })

    it('escapes the name into the DN (RFC 4514)', async () => {
      const { dave, alice } = slapd.users
      expect(await directBind().verify(dave.name, dave.password)).toEqual({ name: 'd,ave', groups: [] })
      // "alice,ou=people,…" stays one value: it names no entry.
      expect(await directBind().verify(`alice,${PEOPLE}`, alice.password)).toBeNull()
      expect(await directBind().verify('alice+cn=Alice Example', alice.password)).toBeNull()
    })

    it('a wrong password or an unknown user: null', async () => {
      expect(await directBind().verify('alice', 'wrong password')).toBeNull()
      expect(await directBind().verify('nobody', slapd.users.alice.password)).toBeNull()
    })
  })

  describe('empty passwords', () => {
    it('are refused before any connection (an empty simple bind is an anonymous bind)', async () => {
      const hole = await blackHole()
      cleanups.push(hole.close)
      const url = `ldap://127.0.0.1:${hole.port}`
      expect(await directBind({ url }).verify('alice', '')).toBeNull()
      expect(await searchBind({ url }).verify('alice', '')).toBeNull()
      expect(hole.connections()).toBe(0)
      // Against the real directory too, in both modes.
      expect(await directBind().verify('alice', '')).toBeNull()
      expect(await searchBind().verify('alice', '')).toBeNull()
    })

    it('an empty service password file is refused at construction', () => {
      const empty = path.join(slapd.dir, 'empty-bind-password')
      writeFileSync(empty, '\n')
      expect(() => searchBind({ bindPasswordFile: empty })).toThrow(ConfigError)
    })
  })

  describe('TLS', () => {
    it('LDAPS with the test CA signs in', async () => {
      const ldap = searchBind({ url: slapd.ldapsUrl!, caFile: slapd.caFile })
      expect(await ldap.verify('alice', slapd.users.alice.password)).toEqual({ name: 'alice', groups: ['mail-users', 'staff'] })
      // localhost is in the certificate too (name checked, SNI sent).
      const byName = directBind({ url: slapd.ldapsUrl!.replace('127.0.0.1', 'localhost'), caFile: slapd.caFile })
      expect((await byName.verify('bob', slapd.users.bob.password))?.name).toBe('bob')
    })

    it('LDAPS trusting another CA (or the system store) is unavailable, not a wrong password', async () => {
      const other = await makeTestPki()
      cleanups.push(other.cleanup)
      const err = await unavailable(searchBind({ url: slapd.ldapsUrl!, caFile: other.caCert }).verify('alice', slapd.users.alice.password))
      expect((err.cause as Error).message).toMatch(/certificate|self.signed|verify/i)
      await unavailable(searchBind({ url: slapd.ldapsUrl! }).verify('alice', slapd.users.alice.password))
    })

    it('StartTLS signs in; with the wrong CA it is unavailable', async () => {
      expect(await searchBind({ startTls: true, caFile: slapd.caFile }).verify('alice', slapd.users.alice.password))
        .toEqual({ name: 'alice', groups: ['mail-users', 'staff'] })
      expect(await directBind({ startTls: true, caFile: slapd.caFile }).verify('carol', slapd.users.carol.password))
        .toEqual({ name: 'carol', groups: [] })
      expect(await searchBind({ startTls: true, caFile: slapd.caFile }).verify('alice', 'wrong')).toBeNull()
      const other = await makeTestPki()
      cleanups.push(other.cleanup)
      await unavailable(searchBind({ startTls: true, caFile: other.caCert }).verify('alice', slapd.users.alice.password))
    })

    it('StartTLS to a server speaking LDAPS fails as unavailable', async () => {
      // The ldaps port does not understand a plain LDAP request: no answer, or a closed connection.
      await unavailable(searchBind({ url: slapd.ldapsUrl!.replace('ldaps:', 'ldap:'), startTls: true, caFile: slapd.caFile, timeoutMs: 1000 })
        .verify('alice', slapd.users.alice.password))
    })
  })

  describe('a directory that cannot answer', () => {
    it('down (closed port): unavailable at once', async () => {
      const url = `ldap://127.0.0.1:${await closedPort()}`
      for (const ldap of [searchBind({ url }), directBind({ url })]) {
        const { ms, result } = await timed(ldap.verify('alice', slapd.users.alice.password))
        await unavailable(Promise.reject(result))
        expect(ms).toBeLessThan(1000)
        expectNoSecret(`${(result as Error).message} ${String((result as Error).cause)}`)
      }
    })

    it('a black hole (accepts, never answers): unavailable within timeoutMs', async () => {
      const hole = await blackHole()
      cleanups.push(hole.close)
      const timeoutMs = 700
      const cases: [string, LdapAuthenticator][] = [
        ['ldap:// search then bind', searchBind({ url: `ldap://127.0.0.1:${hole.port}`, timeoutMs })],
        ['ldap:// direct bind', directBind({ url: `ldap://127.0.0.1:${hole.port}`, timeoutMs })],
        ['ldap:// StartTLS', searchBind({ url: `ldap://127.0.0.1:${hole.port}`, startTls: true, caFile: slapd.caFile, timeoutMs })],
        ['ldaps:// (TLS handshake never answered)', searchBind({ url: `ldaps://127.0.0.1:${hole.port}`, caFile: slapd.caFile, timeoutMs })],
      ]
      const results = await Promise.all(cases.map(([, ldap]) => timed(ldap.verify('alice', slapd.users.alice.password))))
      results.forEach(({ ms, result }, i) => {
        const label = cases[i]![0]
        expect(result, label).toBeInstanceOf(UnavailableError)
        expect(ms, label).toBeGreaterThan(timeoutMs - 50)
        expect(ms, label).toBeLessThan(timeoutMs + 700)
      })
      expect(hole.connections()).toBe(cases.length)
    })

    it('connectTimeoutMs bounds the TLS handshake on its own', async () => {
      const hole = await blackHole()
      cleanups.push(hole.close)
      const ldap = searchBind({ url: `ldaps://127.0.0.1:${hole.port}`, caFile: slapd.caFile, connectTimeoutMs: 300, timeoutMs: 5000 })
      const { ms, result } = await timed(ldap.verify('alice', slapd.users.alice.password))
      expect(result).toBeInstanceOf(UnavailableError)
      expect(ms).toBeLessThan(1500)
    })

    it('the directory closing the connection mid-sign-in is unavailable', async () => {
      const server = createServer((s) => s.once('data', () => s.destroy()))
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
      cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())))
      const url = `ldap://127.0.0.1:${(server.address() as AddressInfo).port}`
      await unavailable(directBind({ url }).verify('alice', slapd.users.alice.password))
      await unavailable(searchBind({ url }).verify('alice', slapd.users.alice.password))
    })
  })

  describe('provider chain', () => {
    let localFile: string
    const LOCAL_PASSWORD = `local-${randomBytes(9).toString('base64url')}`

    beforeAll(async () => {
      localFile = path.join(slapd.dir, 'users.json')
      const users = await UserFile.load(localFile, { create: true })
      await users.add('zed', LOCAL_PASSWORD, ['contractors'])
    })

    it('local first, then LDAP: each user signs in where it lives', async () => {
      const chain = new AuthenticatorChain([new LocalUserAuthenticator(localFile), searchBind()])
      expect(await chain.verify('zed', LOCAL_PASSWORD)).toEqual({ name: 'zed', groups: ['contractors'] })
      expect(await chain.verify('alice', slapd.users.alice.password)).toEqual({ name: 'alice', groups: ['mail-users', 'staff'] })
      expect(await chain.verify('alice', 'wrong password')).toBeNull()
      expect(await chain.verify('nobody', 'some password')).toBeNull()
    })

    it('LDAP down: local users still sign in; anyone else is unavailable (503), never "wrong password"', async () => {
      const down = searchBind({ url: `ldap://127.0.0.1:${await closedPort()}` })
      const chain = new AuthenticatorChain([new LocalUserAuthenticator(localFile), down])
      expect(await chain.verify('zed', LOCAL_PASSWORD)).toEqual({ name: 'zed', groups: ['contractors'] })
      await unavailable(chain.verify('alice', slapd.users.alice.password))
      await unavailable(chain.verify('nobody', 'some password'))
      // A local user with a wrong password might be a directory user with that name: unknown, so 503.
      await unavailable(chain.verify('zed', 'wrong password'))
      // The order is respected: a directory first, down, then the local file still works.
      const reversed = new AuthenticatorChain([down, new LocalUserAuthenticator(localFile)])
      expect(await reversed.verify('zed', LOCAL_PASSWORD)).toEqual({ name: 'zed', groups: ['contractors'] })
    })

    it('is built from security.directories', async () => {
      const c = buildConfig({
        security: {
          usersFile: localFile,
          directories: [
            { type: 'local' },
            { type: 'ldap', url: slapd.ldapsUrl, caFile: slapd.caFile, bindDn: slapd.service.dn, bindPasswordFile: slapd.service.passwordFile, userBase: PEOPLE, groupBase: GROUPS },
          ],
        },
      })
      const auth = authenticatorFromConfig(c)
      expect(auth).toBeInstanceOf(AuthenticatorChain)
      expect(await auth.verify('zed', LOCAL_PASSWORD)).toEqual({ name: 'zed', groups: ['contractors'] })
      expect(await auth.verify('bob', slapd.users.bob.password)).toEqual({ name: 'bob', groups: ['staff'] })
      expect(authenticatorFromConfig(buildConfig({ security: { usersFile: localFile } }))).toBeInstanceOf(LocalUserAuthenticator)
      const missing = buildConfig({
        security: { directories: [{ type: 'ldap', url: slapd.url, bindDn: slapd.service.dn, bindPasswordFile: path.join(slapd.dir, 'nope'), userBase: PEOPLE }] },
      })
      expect(() => authenticatorFromConfig(missing)).toThrow(ConfigError)
      expect(() => authenticatorFromConfig(missing)).toThrow(/^security\.directories\[0\]\.bindPasswordFile cannot be read \(.*ENOENT\)$/)
    })
  })

  describe('through the real security server', () => {
    let stack: Stack
    let agent: Agent
    let relay: Relay
    let localFile: string
    const LOCAL_PASSWORD = `local-${randomBytes(9).toString('base64url')}`

    const enroll = (user: string, password: string) => sendRaw(agent, stack.securityUrl, '/v1/enroll', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        user, password, appId: 'mail', appVersion: '1.0.0', deviceId: `ldap-${randomBytes(4).toString('hex')}`,
        devicePublicKey: generateEcdhKeyPair().publicKey.toString('base64url'),
      }),
    })

    beforeAll(async () => {
      localFile = path.join(slapd.dir, 'stack-users.json')
      await (await UserFile.load(localFile, { create: true })).add('zed', LOCAL_PASSWORD, ['contractors'])
      // Through a relay, so the directory can go down in the middle of the test.
      relay = await startRelay(Number(new URL(slapd.url).port))
      const ldap = searchBind({ url: `ldap://127.0.0.1:${relay.port}`, startTls: true, caFile: slapd.caFile, groupBase: GROUPS, timeoutMs: 1500 })
      stack = await startStack({ security: { auth: new AuthenticatorChain([new LocalUserAuthenticator(localFile), ldap]) } })
      agent = new Agent({ connect: { ca: stack.ca } })
    })
    afterAll(async () => {
      await agent?.close()
      await stack?.close()
      await relay?.cut()
    })

    it('enrolls with directory credentials (201) and opens a session', async () => {
      const ok = await enroll('alice', slapd.users.alice.password)
      expect(ok.status).toBe(201)
      expect(JSON.parse(ok.text)).toMatchObject({ enrollmentId: expect.any(String) })
      const dev = stack.device()
      await dev.enroll('bob', slapd.users.bob.password)
      const session = await dev.openSession()
      expect(session.sessionId).toEqual(expect.any(String))
      expect(stack.logs.text).toMatch(/"event":"enrolled","user":"bob"/)
    })

    it('a wrong password or an unknown user: 401 GH_ERR_AUTHENTICATION', async () => {
      for (const [user, password] of [['alice', 'wrong password'], ['mallory', slapd.users.alice.password], ['alice)(uid=*', slapd.users.alice.password]] as const) {
        const a = await enroll(user, password)
        expect(a.status, user).toBe(401)
        expect(a.code, user).toBe('GH_ERR_AUTHENTICATION')
      }
    })

    it('directory down: 503 GH_ERR_UNAVAILABLE (not 401); local users still enroll', async () => {
      expect((await enroll('zed', LOCAL_PASSWORD)).status).toBe(201)
      await relay.cut()
      const down = await enroll('carol', slapd.users.carol.password)
      expect(down.status).toBe(503)
      expect(down.code).toBe('GH_ERR_UNAVAILABLE')
      expect(JSON.parse(down.text)).toEqual({ error: { code: 'GH_ERR_UNAVAILABLE', message: 'directory unavailable' } })
      const wrong = await enroll('alice', 'wrong password')
      expect(wrong.status).toBe(503)
      expect((await enroll('zed', LOCAL_PASSWORD)).status).toBe(201)
    })

    it('the server log holds no user password and no bind password', () => {
      const text = stack.logs.text
      expect(text).toContain('GH_ERR_UNAVAILABLE')
      expectNoSecret(text)
      expect(text).not.toContain(LOCAL_PASSWORD)
    })
  })
})
