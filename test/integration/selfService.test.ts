/**
 * Self-service API: a user signs in with directory credentials, sees only their own devices and
 * enrollments, and locks, wipes or retires only their own devices; every action is audited with
 * the user as actor.
 */
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { UserFile } from '../../src/security/users.js'
import { AdminClient } from '../helpers/admin.js'
import { PASSWORD, startStack, type Stack } from '../helpers/stack.js'

describe('self-service API', () => {
  let stack: Stack
  let c: AdminClient
  let alice: string
  let bob: string

  const login = async (user: string, password = PASSWORD) => {
    const r = await c.call('POST', '/self/v1/login', { body: { user, password } })
    expect(r.status, r.text).toBe(200)
    return r.json.token as string
  }

  beforeAll(async () => {
    stack = await startStack()
    c = new AdminClient(stack)
    await (await UserFile.load(path.join(stack.dir, 'users.json'))).add('bob', PASSWORD, [])
    await stack.enrolledDevice({ deviceId: 'alice-phone' })
    await stack.enrolledDevice({ deviceId: 'alice-tablet' })
    const b = stack.device({ deviceId: 'bob-phone' })
    await b.enroll('bob', PASSWORD)
    alice = await login('alice')
    bob = await login('bob')
  })
  afterAll(async () => {
    await c?.close()
    await stack?.close()
  })

  it('sign-in: wrong password 401 (audited), token short-lived and bearer-only; admin tokens do not work here', async () => {
    const wrong = await c.call('POST', '/self/v1/login', { body: { user: 'alice', password: 'nope nope nope' } })
    expect([wrong.status, wrong.code]).toEqual([401, 'GH_ERR_AUTHENTICATION'])
    expect((await stack.store.queryAudit({ action: 'self.login_failed', actor: 'alice' })).length).toBe(1)
    expect(alice).toMatch(/^ghs_/)
    expect((await c.call('GET', '/self/v1/devices')).status).toBe(401)
    const adminToken = await c.tokenFor('root', 'admin')
    expect((await c.call('GET', '/self/v1/devices', { token: adminToken })).status).toBe(401)
    // …and a self-service token is no admin token.
    expect((await c.call('GET', '/admin/v1/users', { token: alice })).status).toBe(401)
    expect((await c.call('POST', '/self/v1/login', { body: { user: 'alice', password: PASSWORD, role: 'admin' } })).status).toBe(400)
  })

  it('lists only the user\'s own devices and enrollments', async () => {
    const d = await c.call('GET', '/self/v1/devices', { token: alice })
    expect(d.json.items.map((x: { deviceId: string }) => x.deviceId).sort()).toEqual(['alice-phone', 'alice-tablet'])
    const e = await c.call('GET', '/self/v1/enrollments', { token: bob })
    expect(e.json.items.map((x: { deviceId: string }) => x.deviceId)).toEqual(['bob-phone'])
    expect(e.text).not.toContain('sharedKey')
  })

  it('lock, wipe and retire the user\'s own devices; another user\'s device or an unknown one is 403; unlock is not offered', async () => {
    const cmd = (token: string, device: string, body: unknown) => c.call('POST', `/self/v1/devices/${encodeURIComponent(device)}/commands`, { token, body })
    const other = await cmd(bob, 'alice-phone', { kind: 'wipe' })
    expect([other.status, other.code]).toEqual([403, 'GH_ERR_FORBIDDEN'])
    const unknown = await cmd(bob, 'nobody-phone', { kind: 'lock' })
    expect(unknown.status).toBe(403)
    expect(unknown.text).toBe(other.text)
    expect((await stack.store.getDevice('alice', 'alice-phone'))?.state ?? 'active').toBe('active')
    expect((await cmd(alice, 'alice-phone', { kind: 'unlock' })).status).toBe(400)
    expect((await cmd(alice, 'alice-phone', { kind: 'lock', force: true })).status).toBe(400)

    const lock = await cmd(alice, 'alice-phone', { kind: 'lock' })
    expect(lock.status).toBe(201)
    expect(lock.json).toMatchObject({ kind: 'lock', userName: 'alice', deviceId: 'alice-phone', issuedBy: 'self:alice' })
    expect((await stack.store.getDevice('alice', 'alice-phone'))?.state).toBe('locked')
    const retire = await cmd(alice, 'alice-tablet', { kind: 'retire' })
    expect(retire.status).toBe(201)
    expect((await stack.store.listEnrollments({ userName: 'alice', deviceId: 'alice-tablet', status: 'active' }))).toHaveLength(0)
    const mine = await c.call('GET', '/self/v1/commands', { token: alice })
    expect(mine.json.items.map((x: { kind: string }) => x.kind).sort()).toEqual(['lock', 'retire'])

    const audit = await stack.store.queryAudit({ actor: 'alice', limit: 100 })
    const actions = audit.map((e) => `${e.action} ${e.target}`)
    expect(actions).toEqual(expect.arrayContaining(['self.login user:alice', 'self.command device:alice/alice-phone', 'self.command device:alice/alice-tablet']))
    expect(audit.every((e) => e.actorRole === 'user')).toBe(true)
    expect((await stack.store.queryAudit({ action: 'self.denied', actor: 'bob' })).map((e) => e.target)).toEqual(expect.arrayContaining(['device:bob/alice-phone']))
  })

  it('logout ends the token', async () => {
    const t = await login('bob')
    expect((await c.call('POST', '/self/v1/logout', { token: t })).status).toBe(204)
    expect((await c.call('GET', '/self/v1/devices', { token: t })).status).toBe(401)
  })

  it('tokens expire', async () => {
    const short = await startStack({ security: { adminApi: { selfTokenTtlMs: 50 } } })
    const sc = new AdminClient(short)
    try {
      const r = await sc.call('POST', '/self/v1/login', { body: { user: 'alice', password: PASSWORD } })
      expect((await sc.call('GET', '/self/v1/devices', { token: r.json.token })).status).toBe(200)
      await new Promise((resolve) => setTimeout(resolve, 80))
      expect((await sc.call('GET', '/self/v1/devices', { token: r.json.token })).status).toBe(401)
    } finally {
      await sc.close()
      await short.close()
    }
  })
})
