/**
 * Admin API sign-in and access control through the real HTTPS listener: passwords, token expiry,
 * the dashboard cookie and its CSRF header, roles, sign-in throttling, the network allow-list,
 * and hostile input. Ends by checking no password or token reached the log or the audit log.
 */
import { readFileSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLogger } from '../../src/observability/logger.js'
import { SecurityServer } from '../../src/security/server.js'
import { openStore } from '../../src/store/openStore.js'
import { newMasterKey, SecretBox } from '../../src/store/secretBox.js'
import { ADMIN_PASSWORD, AdminClient } from '../helpers/admin.js'
import { LogSink, PASSWORD, sendRaw, startStack, type Stack } from '../helpers/stack.js'

describe('admin API: sign-in, tokens, CSRF, roles', () => {
  let stack: Stack
  let c: AdminClient
  const tokens: string[] = []

  beforeAll(async () => {
    stack = await startStack({ security: { adminApi: { loginFailuresPerMinute: 5 } } })
    c = new AdminClient(stack)
    await c.addAdmin('root', 'admin')
    await c.addAdmin('hd', 'helpdesk')
    await c.addAdmin('aud', 'auditor')
    await stack.enrolledDevice()
  })
  afterAll(async () => {
    await c?.close()
    await stack?.close()
  })

  it('a wrong password and an unknown admin get the same 401; both are audited without the password', async () => {
    const wrong = await c.call('POST', '/admin/v1/login', { body: { name: 'root', password: 'not the password!' } })
    const unknown = await c.call('POST', '/admin/v1/login', { body: { name: 'nobody', password: 'not the password!' } })
    for (const r of [wrong, unknown]) {
      expect(r.status).toBe(401)
      expect(r.code).toBe('GH_ERR_AUTHENTICATION')
      expect(r.headers['set-cookie']).toBeUndefined()
    }
    expect(wrong.text).toBe(unknown.text)
    const failed = await stack.store.queryAudit({ action: 'admin.login_failed' })
    expect(failed.map((e) => e.actor).sort()).toEqual(['nobody', 'root'])
    expect(JSON.stringify(failed)).not.toContain('not the password!')
  })

  it('a good sign-in returns a 256-bit token once, stored only as a hash, and sets a strict cookie', async () => {
    const r = await c.call('POST', '/admin/v1/login', { body: { name: 'root', password: ADMIN_PASSWORD } })
    expect(r.status).toBe(200)
    expect(r.json.token).toMatch(/^gha_[A-Za-z0-9_-]{43}$/)
    expect(r.json.admin).toEqual({ name: 'root', role: 'admin' })
    tokens.push(r.json.token)
    const cookie = String(r.headers['set-cookie'])
    expect(cookie).toMatch(new RegExp(`^gh_admin=${r.json.token}; `))
    for (const attr of ['HttpOnly', 'Secure', 'SameSite=Strict', 'Path=/admin']) expect(cookie).toContain(attr)
    const dbText = readFileSync(stack.dbPath).toString('latin1')
    expect(dbText).not.toContain(r.json.token)
    const me = await c.call('GET', '/admin/v1/me', { token: r.json.token })
    expect(me.json).toMatchObject({ name: 'root', role: 'admin', via: 'bearer', csrfToken: null })
  })

  it('no token, a malformed one, a made-up one and an expired one all get 401', async () => {
    const { token: expired } = await stack.security.services.adminAuth.issueAdminToken('root', 1)
    await new Promise((r) => setTimeout(r, 10))
    const cases: Record<string, string>[] = [
      {}, { authorization: 'Bearer' }, { authorization: 'Basic cm9vdDpw' }, { authorization: 'Bearer gha_short' },
      { authorization: `Bearer gha_${'A'.repeat(43)}` }, { authorization: `Bearer ${expired}` }, { cookie: 'gh_admin=nope' },
    ]
    for (const headers of cases) {
      const r = await c.call('GET', '/admin/v1/users', { headers })
      expect(r.status, JSON.stringify(headers)).toBe(401)
      expect(r.code).toBe('GH_ERR_AUTHENTICATION')
    }
    // Control: a live token works.
    expect((await c.call('GET', '/admin/v1/users', { token: tokens[0] })).status).toBe(200)
  })

  it('cookie sessions: reads need no CSRF header; changes need the right one (403 GH_ERR_CSRF otherwise); bearer calls need none', async () => {
    const s = await c.login('root')
    expect((await c.call('GET', '/admin/v1/users', { cookie: s.cookie })).status).toBe(200)
    const me = await c.call('GET', '/admin/v1/me', { cookie: s.cookie })
    expect(me.json.csrfToken).toBe(s.csrf)
    const body = { userName: 'alice' }
    const none = await c.call('POST', '/admin/v1/activation-codes', { cookie: s.cookie, body })
    expect(none.status).toBe(403)
    expect(none.code).toBe('GH_ERR_CSRF')
    const wrong = await c.call('POST', '/admin/v1/activation-codes', { cookie: s.cookie, csrf: `${s.csrf.slice(0, -2)}xx`, body })
    expect(wrong.code).toBe('GH_ERR_CSRF')
    // Another session's CSRF value does not fit this cookie.
    const other = await c.login('root')
    expect((await c.call('POST', '/admin/v1/activation-codes', { cookie: s.cookie, csrf: other.csrf, body })).code).toBe('GH_ERR_CSRF')
    expect((await c.call('DELETE', '/admin/v1/apps/none', { cookie: s.cookie })).code).toBe('GH_ERR_CSRF')
    const ok = await c.call('POST', '/admin/v1/activation-codes', { cookie: s.cookie, csrf: s.csrf, body })
    expect(ok.status).toBe(201)
    const bearer = await c.call('POST', '/admin/v1/activation-codes', { token: s.token, body })
    expect(bearer.status).toBe(201)
  })

  it('logout ends the token and clears the cookie', async () => {
    const s = await c.login('root')
    const out = await c.call('POST', '/admin/v1/logout', { cookie: s.cookie, csrf: s.csrf })
    expect(out.status).toBe(204)
    expect(String(out.headers['set-cookie'])).toContain('gh_admin=; Path=/admin; Max-Age=0')
    expect((await c.call('GET', '/admin/v1/me', { token: s.token })).status).toBe(401)
    expect((await stack.store.queryAudit({ action: 'admin.logout', actor: 'root' })).length).toBeGreaterThanOrEqual(1)
  })

  it('roles: the auditor reads everything but changes nothing; the helpdesk locks devices but manages no apps, policies or admins', async () => {
    const aud = (await c.login('aud')).token
    const hd = (await c.login('hd')).token
    const lock = (token: string, kind = 'lock') => c.call('POST', '/admin/v1/devices/alice/dev-1/commands', { token, body: { kind } })

    const denied = await lock(aud)
    expect(denied.status).toBe(403)
    expect(denied.code).toBe('GH_ERR_FORBIDDEN')
    expect((await c.call('GET', '/admin/v1/audit', { token: aud })).status).toBe(200)
    expect((await c.call('GET', '/admin/v1/logs/errors', { token: aud })).status).toBe(200)
    expect((await c.call('POST', '/admin/v1/activation-codes', { token: aud, body: { userName: 'alice' } })).status).toBe(403)
    expect((await c.call('POST', '/admin/v1/users/alice/revoke', { token: aud })).status).toBe(403)

    expect((await c.call('PUT', '/admin/v1/apps/mail', { token: hd, body: { name: 'Mail' } })).status).toBe(403)
    expect((await c.call('PUT', '/admin/v1/policies/global', { token: hd, body: { scope: 'global' } })).status).toBe(403)
    expect((await c.call('PUT', '/admin/v1/admins/evil', { token: hd, body: { role: 'admin', password: 'x'.repeat(20) } })).status).toBe(403)
    expect((await c.call('GET', '/admin/v1/audit', { token: hd })).status).toBe(403)
    expect((await lock(hd, 'retire')).status).toBe(403)
    expect((await c.call('GET', '/admin/v1/devices', { token: hd })).status).toBe(200)
    const locked = await lock(hd)
    expect(locked.status).toBe(201)
    expect(locked.json).toMatchObject({ kind: 'lock', userName: 'alice', deviceId: 'dev-1', issuedBy: 'admin:hd' })
    expect((await lock(hd, 'unlock')).status).toBe(201)

    const deniedAudit = await stack.store.queryAudit({ action: 'admin.denied' })
    expect(deniedAudit.some((e) => e.actor === 'aud' && e.target === 'POST /admin/v1/devices/:user/:device/commands')).toBe(true)
    expect(deniedAudit.some((e) => e.actor === 'hd' && e.target === 'PUT /admin/v1/apps/:id')).toBe(true)
  })

  it('a removed admin\'s tokens stop working at once; the last admin cannot be removed or demoted', async () => {
    const root = (await c.login('root')).token
    const temp = await c.tokenFor('temp', 'admin')
    expect((await c.call('GET', '/admin/v1/me', { token: temp })).status).toBe(200)
    expect((await c.call('DELETE', '/admin/v1/admins/temp', { token: root })).status).toBe(204)
    expect((await c.call('GET', '/admin/v1/me', { token: temp })).status).toBe(401)
    const last = await c.call('DELETE', '/admin/v1/admins/root', { token: root })
    expect(last.status).toBe(409)
    expect(last.code).toBe('GH_ERR_CONFLICT')
    expect((await c.call('PUT', '/admin/v1/admins/root', { token: root, body: { role: 'auditor', password: ADMIN_PASSWORD } })).status).toBe(409)
  })

  it('sign-in is throttled per remote address and per name: 429 once over the limit, even with the right password', async () => {
    const fresh = await startStack({ security: { adminApi: { loginFailuresPerMinute: 3 } } })
    const fc = new AdminClient(fresh)
    try {
      await fc.addAdmin('ops', 'admin')
      for (let i = 0; i < 3; i++) expect((await fc.call('POST', '/admin/v1/login', { body: { name: 'ops', password: `wrong ${i} password` } })).status).toBe(401)
      const limited = await fc.call('POST', '/admin/v1/login', { body: { name: 'ops', password: ADMIN_PASSWORD } })
      expect(limited.status).toBe(429)
      expect(limited.code).toBe('GH_ERR_RATE_LIMITED')
      // Same remote, another name: the per-remote limit holds too.
      expect((await fc.call('POST', '/admin/v1/login', { body: { name: 'someone', password: 'whatever pw' } })).status).toBe(429)
      expect((await fresh.store.queryAudit({ action: 'admin.login_throttled' })).length).toBe(2)
    } finally {
      await fc.close()
      await fresh.close()
    }
  })

  it('hostile input: malformed JSON, wrong type, oversized, unknown fields and query parameters, encoded slashes, bad paging', async () => {
    const t = (await c.login('root')).token
    const bad = await c.call('POST', '/admin/v1/activation-codes', { token: t, raw: '{"userName": "alice"' })
    expect([bad.status, bad.code]).toEqual([400, 'GH_ERR_MALFORMED'])
    const array = await c.call('POST', '/admin/v1/activation-codes', { token: t, raw: '["alice"]' })
    expect([array.status, array.code]).toEqual([400, 'GH_ERR_MALFORMED'])
    const type = await c.call('POST', '/admin/v1/activation-codes', { token: t, raw: '{}', contentType: 'text/plain' })
    expect(type.status).toBe(415)
    const huge = await c.call('POST', '/admin/v1/activation-codes', { token: t, body: { userName: 'a'.repeat(64 * 1024) } })
    expect([huge.status, huge.code]).toEqual([413, 'GH_ERR_TOO_LARGE'])
    const login = await c.call('POST', '/admin/v1/login', { raw: 'x'.repeat(100_000) })
    expect(login.status).toBe(413)

    const unknown = await c.call('POST', '/admin/v1/activation-codes', { token: t, body: { userName: 'alice', isAdmin: true } })
    expect([unknown.status, unknown.code]).toEqual([400, 'GH_ERR_MALFORMED'])
    expect(unknown.json.error.message).toContain('"isAdmin"')
    const missing = await c.call('POST', '/admin/v1/activation-codes', { token: t, body: {} })
    expect(missing.json.error.message).toContain('userName')
    const wrongType = await c.call('POST', '/admin/v1/devices/alice/dev-1/commands', { token: t, body: { kind: 'explode' } })
    expect(wrongType.status).toBe(400)
    expect(wrongType.json.error.message).toContain('kind')
    const q = await c.call('GET', '/admin/v1/users?admin=1', { token: t })
    expect([q.status, q.code]).toEqual([400, 'GH_ERR_MALFORMED'])
    expect(q.json.error.message).toContain('"admin"')
    for (const p of ['limit=501', 'limit=0', 'limit=-1', 'limit=abc', 'offset=-5', 'limit=1&limit=2']) {
      const r = await c.call('GET', `/admin/v1/sessions?${p}`, { token: t })
      expect(r.status, p).toBe(400)
    }
    expect((await c.call('GET', '/admin/v1/sessions?limit=500', { token: t })).status).toBe(200)

    // Encoded slashes and dot segments in path parameters are refused, not resolved.
    for (const path of ['/admin/v1/devices/alice%2F..%2Fbob/dev-1', '/admin/v1/devices/alice/..%2F..%2Fetc', '/admin/v1/enrollments/..%2F..%2Fadmins',
      '/admin/v1/users/alice%2Fx', '/admin/v1/apps/..%2Fmail']) {
      const r = await c.call('GET', path, { token: t })
      expect(r.status, path).toBe(400)
      expect(r.code).toBe('GH_ERR_MALFORMED')
    }
    expect((await c.call('DELETE', '/admin/v1/admins/root%2Fx', { token: t })).status).toBe(400)
    expect((await c.call('DELETE', '/admin/v1/admins/root', { token: t, headers: { 'x-extra': '1' } })).status).toBe(409)
    expect((await c.call('GET', '/admin/v1/devices/alice/dev-1%', { token: t })).status).toBe(404)
    // Unknown ids: 404.
    expect((await c.call('GET', '/admin/v1/enrollments/00000000-0000-0000-0000-000000000000', { token: t })).status).toBe(404)
    expect((await c.call('GET', '/admin/v1/devices/alice/nope', { token: t })).status).toBe(404)
    expect((await c.call('GET', '/admin/v1/nothing-here', { token: t })).status).toBe(404)
  })

  it('never logs or audits a password or token', async () => {
    const text = stack.logs.text
    expect(text).not.toContain(ADMIN_PASSWORD)
    expect(text).not.toContain(PASSWORD)
    for (const t of tokens) expect(text).not.toContain(t)
    const audit = JSON.stringify(await stack.store.queryAudit({ limit: 500 }))
    expect(audit).not.toContain(ADMIN_PASSWORD)
    for (const t of tokens) expect(audit).not.toContain(t)
  })
})

describe('admin and self-service APIs from a network outside the allow-lists', () => {
  let server: SecurityServer
  let stack: Stack
  let c: AdminClient
  const logs = new LogSink()

  beforeAll(async () => {
    stack = await startStack()
    c = new AdminClient(stack)
    await c.addAdmin('root', 'admin')
    // Same PKI, but admin and self-service only from 10.9.9.9: 127.0.0.1 is outside.
    const store = await openStore({ path: ':memory:', secretBox: new SecretBox({ version: 1, current: 'k1', keys: [{ ...newMasterKey(), id: 'k1' }] }) })
    await store.upsertAdminUser({ name: 'root', role: 'admin', passwordHash: (await stack.store.getAdminUser('root'))!.passwordHash, createdAt: Date.now() })
    server = new SecurityServer({
      store, auth: { verify: async () => null }, log: createLogger({ level: 'debug', destination: logs }),
      tls: { cert: readFileSync(stack.pki.serverCert), key: readFileSync(stack.pki.serverKey), ca: stack.ca },
      listen: { host: '127.0.0.1', port: 0 }, proxyApi: { host: '127.0.0.1', port: 0 }, proxyUrl: 'https://localhost:1',
      policy: { maxLifetimeMs: 3600_000, idleTimeoutMs: 600_000, clockSkewMs: 300_000 }, maxBodyBytes: 16 * 1024,
      access: { adminCidrs: ['10.9.9.9/32'], selfServiceCidrs: ['10.9.9.9/32'] },
    })
    await server.start()
  })
  afterAll(async () => {
    await server?.close()
    await c?.close()
    await stack?.close()
  })

  it('answers 403 alike for existing and non-existing admin and self-service paths, and logs the refusal', async () => {
    const origin = `https://localhost:${server.ports.device}`
    const token = (await c.login('root')).token // valid credentials do not help from the wrong network
    const paths: [string, string][] = [
      ['GET', '/admin/v1/users'], ['GET', '/admin/v1/does-not-exist'], ['POST', '/admin/v1/login'], ['GET', '/admin/'],
      ['GET', '/self/v1/devices'], ['POST', '/self/v1/login'], ['GET', '/self/v1/nothing'], ['GET', '/totally/unknown'], ['DELETE', '/admin/v1/admins/root'],
    ]
    const bodies = new Set<string>()
    for (const [method, path] of paths) {
      const a = await sendRaw(c.agent, origin, path, {
        method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: method === 'GET' || method === 'DELETE' ? undefined : '{"name":"root","password":"admin password 123"}',
      })
      expect(a.status, `${method} ${path}`).toBe(403)
      expect(a.code).toBe('GH_ERR_FORBIDDEN')
      bodies.add(a.text)
    }
    expect(bodies.size).toBe(1)
    expect(logs.lines.filter((l) => l.includes('"event":"network_refused"')).length).toBeGreaterThanOrEqual(paths.length)
    // Device paths stay open to every network (a 4xx of their own, not the network 403).
    const enroll = await sendRaw(c.agent, origin, '/v1/enroll', { headers: { 'content-type': 'application/json' }, body: '{}' })
    expect(enroll.status).toBe(400)
  })
})
