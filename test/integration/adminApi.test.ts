/**
 * Admin API resources against a whole Gatehouse (security server, proxy, demo upstream, real
 * devices): users, devices, sessions, enrollments, commands, revocations, apps and packages,
 * policies, activation codes, admins, the audit log and the recent-errors view. Every action
 * must leave an audit record naming who, what, the target and where from.
 */
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { GatehouseDevice } from '../../src/client/device.js'
import { AdminClient } from '../helpers/admin.js'
import { PASSWORD, startStack, type Stack } from '../helpers/stack.js'

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex')

describe('admin API resources', () => {
  let stack: Stack
  let c: AdminClient
  let t: string
  let dev: GatehouseDevice
  let packagesDir: string
  const audited = async (action: string, target?: string) => {
    const rows = await stack.store.queryAudit({ action, target, limit: 50 })
    expect(rows.length, `audit ${action} ${target ?? ''}`).toBeGreaterThan(0)
    const e = rows[0]!
    expect(e.remote).toBe('127.0.0.1')
    expect(e.at).toBeGreaterThan(Date.now() - 60_000)
    return e
  }

  beforeAll(async () => {
    packagesDir = mkdtempSync(path.join(os.tmpdir(), 'gh-packages-'))
    stack = await startStack({ security: { packagesDir } })
    c = new AdminClient(stack)
    t = await c.tokenFor('root', 'admin')
    dev = await stack.enrolledDevice()
  })
  afterAll(async () => {
    await c?.close()
    await stack?.close()
    rmSync(packagesDir, { recursive: true, force: true })
  })

  it('users: the local user file and users seen in enrollments, searchable, with details; 404 for unknown', async () => {
    const list = await c.call('GET', '/admin/v1/users', { token: t })
    expect(list.status).toBe(200)
    expect(list.json).toMatchObject({ limit: 100, offset: 0, nextOffset: null })
    expect(list.json.items).toEqual([{ name: 'alice', sources: ['local', 'enrollments'], groups: ['staff'], devices: 1, activeEnrollments: 1 }])
    expect((await c.call('GET', '/admin/v1/users?q=ALI', { token: t })).json.items).toHaveLength(1)
    expect((await c.call('GET', '/admin/v1/users?q=zzz', { token: t })).json.items).toHaveLength(0)
    expect((await c.call('GET', '/admin/v1/users?q=staff', { token: t })).json.items).toHaveLength(1)
    const one = await c.call('GET', '/admin/v1/users/alice', { token: t })
    expect(one.json.deviceList).toHaveLength(1)
    expect(one.json.openSessions).toHaveLength(1)
    expect((await c.call('GET', '/admin/v1/users/mallory', { token: t })).status).toBe(404)
  })

  it('devices: listed from enrollments and device states, filterable; details with sessions and commands', async () => {
    const list = await c.call('GET', '/admin/v1/devices', { token: t })
    expect(list.json.items).toHaveLength(1)
    expect(list.json.items[0]).toMatchObject({ userName: 'alice', deviceId: 'dev-1', state: 'active', apps: [{ appId: 'mail', appVersion: '1.0.0', status: 'active' }] })
    expect((await c.call('GET', '/admin/v1/devices?state=locked', { token: t })).json.items).toHaveLength(0)
    expect((await c.call('GET', '/admin/v1/devices?user=bob', { token: t })).json.items).toHaveLength(0)
    expect((await c.call('GET', '/admin/v1/devices?state=melted', { token: t })).status).toBe(400)
    const d = await c.call('GET', '/admin/v1/devices/alice/dev-1', { token: t })
    expect(d.json.openSessions).toHaveLength(1)
    expect(d.json.commands).toEqual([])
  })

  it('sessions: summaries only (id hash, never the id or keys), filterable, with paging', async () => {
    const second = await stack.enrolledDevice()
    const r = await c.call('GET', '/admin/v1/sessions?open=true', { token: t })
    expect(r.json.items).toHaveLength(2)
    const keys = Object.keys(r.json.items[0]).sort()
    expect(keys).toEqual(['appId', 'appVersion', 'closedAt', 'createdAt', 'deviceId', 'enrollmentId', 'expiresAt', 'idHash', 'lastSeenAt', 'userName'])
    const sid = second.sessionId!
    expect(r.text).not.toContain(sid)
    expect(r.json.items.map((x: { idHash: string }) => x.idHash)).toContain(sha256(sid))
    const page1 = await c.call('GET', '/admin/v1/sessions?limit=1', { token: t })
    expect(page1.json).toMatchObject({ limit: 1, offset: 0, nextOffset: 1 })
    const page2 = await c.call('GET', '/admin/v1/sessions?limit=1&offset=1', { token: t })
    expect(page2.json.items[0].idHash).not.toBe(page1.json.items[0].idHash)
    expect((await c.call('GET', '/admin/v1/sessions?device=dev-2', { token: t })).json.items).toHaveLength(1)
  })

  it('revoking a session closes it at once: the device\'s next request through the proxy is refused; audited', async () => {
    const victim = await stack.enrolledDevice()
    expect((await victim.request('GET', '/demo/hello')).status).toBe(200)
    const idHash = sha256(victim.sessionId!)
    const r = await c.call('POST', `/admin/v1/sessions/${idHash}/revoke`, { token: t, body: { reason: 'test' } })
    expect(r.status).toBe(200)
    expect(r.json).toEqual({ idHash, sessionsClosed: 1 })
    const staleId = victim.sessionId!
    await expect(stack.security.sessions.validate(staleId)).rejects.toMatchObject({ code: 'GH_ERR_SESSION_INVALID' })
    const e = await audited('session.revoke', `session:${idHash}`)
    expect(e).toMatchObject({ actor: 'root', actorRole: 'admin', details: { user: 'alice', reason: 'test', sessionsClosed: 1 } })
    expect((await c.call('POST', `/admin/v1/sessions/${idHash}/revoke`, { token: t })).status).toBe(404)
    expect((await c.call('POST', '/admin/v1/sessions/not-a-hash/revoke', { token: t })).status).toBe(400)
  })

  it('enrollments: list, one (never the key), revoke (sessions end; the device must enroll again); 404 for unknown', async () => {
    const d = await stack.enrolledDevice()
    const id = d.enrollmentState!.enrollmentId
    const list = await c.call('GET', '/admin/v1/enrollments?user=alice', { token: t })
    expect(list.status).toBe(200)
    const one = await c.call('GET', `/admin/v1/enrollments/${id}`, { token: t })
    expect(one.json).toMatchObject({ id, userName: 'alice', appId: 'mail', status: 'active' })
    expect(one.json.sharedKey).toBeUndefined()
    expect(one.text).not.toContain(d.enrollmentState!.sharedKey)
    const r = await c.call('POST', `/admin/v1/enrollments/${id}/revoke`, { token: t })
    expect(r.json).toEqual({ id, status: 'revoked', changed: true })
    await expect(d.openSession()).rejects.toMatchObject({ code: 'GH_ERR_ENROLLMENT_INVALID' })
    expect((await c.call('GET', '/admin/v1/enrollments?status=revoked', { token: t })).json.items.map((e: { id: string }) => e.id)).toContain(id)
    expect((await c.call('POST', `/admin/v1/enrollments/${id}/revoke`, { token: t })).json.changed).toBe(false)
    expect((await c.call('POST', '/admin/v1/enrollments/00000000-0000-0000-0000-000000000000/revoke', { token: t })).status).toBe(404)
    await audited('enrollment.revoke', `enrollment:${id}`)
  })

  it('commands: lock blocks the device, unlock frees it; listed with their state; audited', async () => {
    const r = await c.call('POST', '/admin/v1/devices/alice/dev-1/commands', { token: t, body: { kind: 'lock', reason: 'lost' } })
    expect(r.status).toBe(201)
    expect(r.json).toMatchObject({ kind: 'lock', state: 'pending', issuedBy: 'admin:root', appId: null })
    expect((await c.call('GET', '/admin/v1/devices?state=locked', { token: t })).json.items.map((x: { deviceId: string }) => x.deviceId)).toEqual(['dev-1'])
    const listed = await c.call('GET', '/admin/v1/commands?device=dev-1', { token: t })
    expect(listed.json.items.map((x: { id: string }) => x.id)).toContain(r.json.id)
    expect((await c.call('GET', '/admin/v1/commands?state=pending', { token: t })).json.items.length).toBeGreaterThan(0)
    const e = await audited('device.command', 'device:alice/dev-1')
    expect(e.details).toMatchObject({ kind: 'lock', commandId: r.json.id, reason: 'lost' })
    expect((await c.call('POST', '/admin/v1/devices/alice/dev-1/commands', { token: t, body: { kind: 'unlock' } })).status).toBe(201)
    expect((await c.call('GET', '/admin/v1/devices/alice/dev-1', { token: t })).json.state).toBe('active')
    expect((await c.call('POST', '/admin/v1/devices/alice/unknown-dev/commands', { token: t, body: { kind: 'lock' } })).status).toBe(404)
  })

  it('revoking a device and a user ends their enrollments and sessions; audited', async () => {
    const d = await stack.enrolledDevice({ deviceId: 'to-revoke' })
    const r = await c.call('POST', '/admin/v1/devices/alice/to-revoke/revoke', { token: t })
    expect(r.json).toMatchObject({ enrollmentsRevoked: 1, sessionsClosed: 1 })
    await expect(stack.security.sessions.validate(d.sessionId!)).rejects.toMatchObject({ code: 'GH_ERR_SESSION_INVALID' })
    await audited('device.revoke', 'device:alice/to-revoke')
    expect((await c.call('POST', '/admin/v1/devices/alice/never-seen/revoke', { token: t })).status).toBe(404)

    const u = await c.call('POST', '/admin/v1/users/alice/revoke', { token: t })
    expect(u.status).toBe(200)
    expect(u.json.enrollmentsRevoked).toBeGreaterThanOrEqual(1)
    expect((await stack.store.listEnrollments({ userName: 'alice', status: 'active' }))).toHaveLength(0)
    await audited('user.revoke', 'user:alice')
    expect((await c.call('POST', '/admin/v1/users/nobody/revoke', { token: t })).status).toBe(404)
    // A fresh enrollment works again (the user was not blocked in the directory).
    dev = await stack.enrolledDevice()
    expect((await dev.request('GET', '/demo/hello')).status).toBe(200)
  })

  it('apps and packages: create, read, update, upload, download, delete; audited', async () => {
    const put = await c.call('PUT', '/admin/v1/apps/mail', { token: t, body: { name: 'Mail', minVersion: '1.0.0', routes: ['/demo/'], groups: [] } })
    expect(put.status).toBe(201)
    expect(put.json).toMatchObject({ id: 'mail', name: 'Mail', minVersion: '1.0.0', routes: ['/demo/'] })
    expect((await c.call('GET', '/admin/v1/apps/mail', { token: t })).json.name).toBe('Mail')
    const upd = await c.call('PUT', '/admin/v1/apps/mail', { token: t, body: { name: 'Mail 2', routes: ['/demo/'] } })
    expect(upd.status).toBe(200)
    expect((await c.call('GET', '/admin/v1/apps', { token: t })).json.items).toHaveLength(1)
    expect((await c.call('PUT', '/admin/v1/apps/mail', { token: t, body: { routes: ['no-slash'] } })).status).toBe(400)
    await audited('app.create', 'app:mail')
    await audited('app.update', 'app:mail')

    const bytes = Buffer.from('fake package bytes '.repeat(1000))
    const up = await c.call('PUT', '/admin/v1/apps/mail/packages/1.2.0?fileName=mail-1.2.0.apk', { token: t, raw: bytes, contentType: 'application/octet-stream' })
    expect(up.status).toBe(201)
    expect(up.json).toMatchObject({ appId: 'mail', version: '1.2.0', size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') })
    expect((await c.call('PUT', '/admin/v1/apps/mail/packages/1.3.0?fileName=x.apk', { token: t, raw: bytes, contentType: 'application/json' })).status).toBe(415)
    expect((await c.call('PUT', '/admin/v1/apps/mail/packages/1.3.0', { token: t, raw: bytes, contentType: 'application/octet-stream' })).status).toBe(400)
    expect((await c.call('PUT', '/admin/v1/apps/mail/packages/1.3.0?fileName=..%2F..%2Fx', { token: t, raw: bytes, contentType: 'application/octet-stream' })).status).toBe(400)
    const pk = await c.call('GET', '/admin/v1/apps/mail/packages', { token: t })
    expect(pk.json.items.map((p: { version: string }) => p.version)).toEqual(['1.2.0'])
    const dl = await c.call('GET', '/admin/v1/apps/mail/packages/1.2.0', { token: t })
    expect(dl.status).toBe(200)
    expect(dl.body.equals(bytes)).toBe(true)
    expect((await c.call('GET', '/admin/v1/apps/mail/packages/9.9.9', { token: t })).status).toBe(404)
    await audited('package.add', 'app:mail')

    // The device still reaches its route while its app is in the catalog.
    expect((await dev.request('GET', '/demo/hello')).status).toBe(200)
    expect((await c.call('DELETE', '/admin/v1/apps/mail', { token: t })).status).toBe(204)
    expect((await c.call('GET', '/admin/v1/apps/mail', { token: t })).status).toBe(404)
    expect((await c.call('DELETE', '/admin/v1/apps/mail', { token: t })).status).toBe(404)
    await audited('app.delete', 'app:mail')
  })

  it('policies: create, list, effective, update, delete; audited', async () => {
    const put = await c.call('PUT', '/admin/v1/policies/group:staff', { token: t, body: { scope: 'group', scopeId: 'staff', idleTimeoutSeconds: 600, maxDevicesPerUser: 5 } })
    expect(put.status).toBe(201)
    expect(put.json).toMatchObject({ id: 'group:staff', scope: 'group', scopeId: 'staff', idleTimeoutSeconds: 600, maxDevicesPerUser: 5 })
    expect((await c.call('GET', '/admin/v1/policies', { token: t })).json.items).toHaveLength(1)
    const eff = await c.call('GET', '/admin/v1/policies/effective?groups=staff&app=mail', { token: t })
    expect(eff.json).toMatchObject({ idleTimeoutSeconds: 600, maxDevicesPerUser: 5 })
    expect((await c.call('GET', '/admin/v1/policies/effective?groups=staff', { token: t })).status).toBe(400)
    expect((await c.call('PUT', '/admin/v1/policies/group:staff', { token: t, body: { scope: 'group', scopeId: 'staff', idleTimeoutSeconds: 1 } })).status).toBe(400)
    expect((await c.call('PUT', '/admin/v1/policies/group:staff', { token: t, body: { scope: 'group', scopeId: 'staff', idleTimeoutSeconds: 900 } })).status).toBe(200)
    await audited('policy.create', 'policy:group:staff')
    await audited('policy.update', 'policy:group:staff')
    expect((await c.call('DELETE', '/admin/v1/policies/group:staff', { token: t })).status).toBe(204)
    expect((await c.call('DELETE', '/admin/v1/policies/group:staff', { token: t })).status).toBe(404)
    await audited('policy.delete', 'policy:group:staff')
  })

  it('activation codes: issued once (never listed or audited), listed by user', async () => {
    const r = await c.call('POST', '/admin/v1/activation-codes', { token: t, body: { userName: 'alice', appId: 'mail', ttlSeconds: 3600 } })
    expect(r.status).toBe(201)
    expect(typeof r.json.code).toBe('string')
    const list = await c.call('GET', '/admin/v1/activation-codes?user=alice', { token: t })
    expect(list.json.items.length).toBeGreaterThan(0)
    expect(list.text).not.toContain(r.json.code)
    expect(list.json.items[0].codeHash).toBeUndefined()
    const e = await audited('activation_code.issue', 'user:alice')
    expect(JSON.stringify(await stack.store.queryAudit({ limit: 500 }))).not.toContain(r.json.code)
    expect(e.details).toMatchObject({ appId: 'mail' })
    expect((await c.call('POST', '/admin/v1/activation-codes', { token: t, body: { userName: 'alice', ttlSeconds: 5 } })).status).toBe(400)
  })

  it('admins: create, update, list (never hashes), delete; audited', async () => {
    const put = await c.call('PUT', '/admin/v1/admins/helen', { token: t, body: { role: 'helpdesk', password: 'helpdesk password 1' } })
    expect(put.status).toBe(201)
    expect((await c.call('PUT', '/admin/v1/admins/helen', { token: t, body: { role: 'auditor', password: 'helpdesk password 1' } })).status).toBe(200)
    expect((await c.call('PUT', '/admin/v1/admins/weak', { token: t, body: { role: 'admin', password: 'short' } })).status).toBe(400)
    expect((await c.call('PUT', '/admin/v1/admins/x', { token: t, body: { role: 'superuser', password: 'long enough password' } })).status).toBe(400)
    const list = await c.call('GET', '/admin/v1/admins', { token: t })
    expect(list.json.items.map((a: { name: string; role: string }) => `${a.name}:${a.role}`)).toEqual(['helen:auditor', 'root:admin'])
    expect(list.text).not.toContain('scrypt')
    expect((await c.login('helen', 'helpdesk password 1')).token).toMatch(/^gha_/)
    expect((await c.call('DELETE', '/admin/v1/admins/helen', { token: t })).status).toBe(204)
    expect((await c.call('DELETE', '/admin/v1/admins/helen', { token: t })).status).toBe(404)
    await audited('admin.create', 'admin:helen')
    await audited('admin.update', 'admin:helen')
    await audited('admin.delete', 'admin:helen')
  })

  it('audit log: device events recorded too; filters by actor, action, target and time; paging', async () => {
    await audited('device.enroll')
    await audited('session.open')
    const byActor = await c.call('GET', '/admin/v1/audit?actor=alice&limit=500', { token: t })
    expect(byActor.json.items.length).toBeGreaterThan(0)
    expect(byActor.json.items.every((e: { actor: string }) => e.actor === 'alice')).toBe(true)
    const byAction = await c.call('GET', '/admin/v1/audit?action=admin.login', { token: t })
    expect(byAction.json.items.every((e: { action: string }) => e.action === 'admin.login')).toBe(true)
    const byTarget = await c.call('GET', '/admin/v1/audit?target=app:mail', { token: t })
    expect(byTarget.json.items.map((e: { action: string }) => e.action)).toEqual(expect.arrayContaining(['app.create', 'app.delete', 'package.add']))
    const future = await c.call('GET', `/admin/v1/audit?since=${Date.now() + 60_000}`, { token: t })
    expect(future.json.items).toEqual([])
    const iso = await c.call('GET', `/admin/v1/audit?until=${encodeURIComponent(new Date(Date.now() + 1000).toISOString())}&limit=2`, { token: t })
    expect(iso.json.items).toHaveLength(2)
    expect(iso.json.nextOffset).toBe(2)
    expect((await c.call('GET', '/admin/v1/audit?since=yesterday', { token: t })).status).toBe(400)
    expect((await c.call('GET', '/admin/v1/audit?since=2000&until=1000', { token: t })).status).toBe(400)
    // The audit log never holds a password, whatever was sent.
    expect(JSON.stringify(await stack.store.queryAudit({ limit: 500 }))).not.toContain(PASSWORD)
  })

  it('recent errors: warnings and errors of the server log, redacted, newest first, with `after` for polling', async () => {
    const before = await c.call('GET', '/admin/v1/logs/errors', { token: t })
    const last = before.json.items[0]?.seq ?? 0
    stack.security.services.log.error({ event: 'test_failure', password: 'hunter2-secret', err: new Error('disk on fire') }, 'something broke')
    stack.security.services.log.info({ event: 'not_kept' }, 'routine line')
    const r = await c.call('GET', `/admin/v1/logs/errors?after=${last}`, { token: t })
    expect(r.json.items).toHaveLength(1)
    expect(r.json.items[0]).toMatchObject({ level: 'error', msg: 'something broke', fields: { event: 'test_failure', password: '[redacted]', err: { message: 'disk on fire' } } })
    expect(r.text).not.toContain('hunter2-secret')
    // A request from outside the allow-list is a warning, and shows up too.
    const warn = await c.call('GET', '/admin/v1/logs/errors?level=warn', { token: t })
    expect(warn.json.items.every((e: { level: string }) => e.level === 'warn')).toBe(true)
    expect((await c.call('GET', '/admin/v1/logs/errors?level=info', { token: t })).status).toBe(400)
  })

  it('the dashboard page is served under a strict CSP with its script and stylesheet, and /admin redirects to it', async () => {
    const page = await c.call('GET', '/admin/')
    expect(page.status).toBe(200)
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8')
    const csp = String(page.headers['content-security-policy'])
    expect(csp).toContain("default-src 'none'")
    expect(csp).toContain("script-src 'self'")
    expect(csp).toContain("frame-ancestors 'none'")
    expect(csp).not.toContain('unsafe')
    expect(page.text).not.toMatch(/<script>(?!<)/)
    expect(page.text).not.toMatch(/https?:\/\//)
    const js = await c.call('GET', '/admin/dashboard.js')
    expect(js.headers['content-type']).toContain('javascript')
    expect(js.text).not.toContain('innerHTML')
    expect(js.text).toContain('x-gatehouse-csrf')
    expect((await c.call('GET', '/admin/dashboard.css')).status).toBe(200)
    const redirect = await c.call('GET', '/admin')
    expect(redirect.status).toBe(308)
    expect(redirect.headers.location).toBe('/admin/')
  })
})
