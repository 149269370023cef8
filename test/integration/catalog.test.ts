/**
 * The app catalog through the real servers: enrollment refused by app, group and version; the
 * proxy's app context (routes, version) refusing without calling the upstream; update check and
 * package download with the right SHA-256.
 */
import { createHash, randomBytes } from 'node:crypto'
import { Agent } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { GatehouseClientError, type GatehouseDevice } from '../../src/client/device.js'
import { PASSWORD, sendRaw, startCountingUpstream, startStack, type CountingUpstream, type Stack } from '../helpers/stack.js'

async function refusal(p: Promise<unknown>): Promise<{ status: number; code: string }> {
  const err = await p.then(() => undefined, (e: unknown) => e)
  expect(err).toBeInstanceOf(GatehouseClientError)
  return { status: (err as GatehouseClientError).status, code: (err as GatehouseClientError).code }
}

/** Retry until the proxy has applied the catalog change pushed by the security server. */
async function eventually<T>(f: () => Promise<T>, ok: (v: T) => boolean, ms = 5000): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const v = await f()
    if (ok(v) || Date.now() > end) return v
    await new Promise((r) => setTimeout(r, 50))
  }
}

describe('app catalog', () => {
  let stack: Stack
  let mailUpstream: CountingUpstream
  let crmUpstream: CountingUpstream
  let agent: Agent
  /** Enrolled while the catalog was empty. */
  let devMode: GatehouseDevice

  beforeAll(async () => {
    mailUpstream = await startCountingUpstream()
    crmUpstream = await startCountingUpstream()
    stack = await startStack({
      routes: [
        { prefix: '/mail/', upstream: mailUpstream.url, stripPrefix: true, timeoutSeconds: 5 },
        { prefix: '/crm/', upstream: crmUpstream.url, stripPrefix: true, timeoutSeconds: 5 },
      ],
    })
    agent = new Agent({ connect: { ca: stack.ca } })
  })
  afterAll(async () => {
    await agent?.close()
    await stack?.close()
    await mailUpstream?.close()
    await crmUpstream?.close()
  })

  it('an empty catalog allows every app and route (development mode)', async () => {
    devMode = await stack.enrolledDevice({ appId: 'anything' })
    expect((await devMode.request('GET', '/crm/x')).status).toBe(200)
    expect((await devMode.request('GET', '/mail/x')).status).toBe(200)
  })

  describe('with apps in the catalog', () => {
    beforeAll(async () => {
      const c = stack.security.services.catalog
      await c.upsertApp({ id: 'mail', name: 'Mail', minVersion: '1.0', routes: ['/mail/'] })
      await c.upsertApp({ id: 'crm', name: 'CRM', routes: ['/crm/'], groups: ['sales'] })
    })

    it('enrollment: unknown app, group not allowed → 403 GH_ERR_APP_NOT_ALLOWED; old version → 403 GH_ERR_APP_VERSION', async () => {
      expect(await refusal(stack.device({ appId: 'unknown' }).enroll('alice', PASSWORD))).toEqual({ status: 403, code: 'GH_ERR_APP_NOT_ALLOWED' })
      expect(await refusal(stack.device({ appId: 'crm' }).enroll('alice', PASSWORD))).toEqual({ status: 403, code: 'GH_ERR_APP_NOT_ALLOWED' })
      expect(await refusal(stack.device({ appId: 'mail', appVersion: '0.9.9' }).enroll('alice', PASSWORD))).toEqual({ status: 403, code: 'GH_ERR_APP_VERSION' })
      // Nothing was stored for the refused ones.
      expect((await stack.store.listEnrollments({ userName: 'alice' })).map((e) => e.appId)).not.toContain('crm')
      // A wrong password is still 401 first: a caller learns nothing about the catalog.
      expect(await refusal(stack.device({ appId: 'crm' }).enroll('alice', 'wrong password!'))).toEqual({ status: 401, code: 'GH_ERR_AUTHENTICATION' })
      await expect(stack.device({ appId: 'mail', appVersion: '1.0.1' }).enroll('alice', PASSWORD)).resolves.toBeDefined()
    })

    it("the proxy refuses a route outside the app's routes with 403 GH_ERR_APP_CONTEXT, without calling the upstream", async () => {
      const dev = await stack.enrolledDevice({ appId: 'mail', appVersion: '1.2' })
      expect((await dev.request('GET', '/mail/inbox')).status).toBe(200)
      const before = crmUpstream.hits
      expect(await refusal(dev.request('GET', '/crm/accounts'))).toEqual({ status: 403, code: 'GH_ERR_APP_CONTEXT' })
      expect(crmUpstream.hits).toBe(before)
      // The session is still good for its own routes.
      expect((await dev.request('GET', '/mail/inbox')).status).toBe(200)
    })

    it('an app enrolled in development mode reaches nothing once the catalog does not list it', async () => {
      // The catalog change was pushed to the proxy, which re-validates: the app context is now "no routes".
      const before = mailUpstream.hits + crmUpstream.hits
      const r = await eventually(() => refusal(devMode.request('GET', '/mail/x')).catch(() => ({ status: 200, code: '' })), (v) => v.status === 403)
      expect(r).toEqual({ status: 403, code: 'GH_ERR_APP_CONTEXT' })
      expect(await refusal(devMode.request('GET', '/crm/x'))).toEqual({ status: 403, code: 'GH_ERR_APP_CONTEXT' })
      expect(mailUpstream.hits + crmUpstream.hits).toBe(before)
    })

    it('raising minVersion cuts the old version at the proxy: 403 GH_ERR_APP_VERSION, upstream not called', async () => {
      await stack.security.services.catalog.upsertApp({ id: 'legacy-mail', routes: ['/mail/'] })
      const dev = await stack.enrolledDevice({ appId: 'legacy-mail', appVersion: '1.0' })
      expect((await dev.request('GET', '/mail/a')).status).toBe(200)
      await stack.security.services.catalog.upsertApp({ id: 'legacy-mail', routes: ['/mail/'], minVersion: '2.0' })
      const before = mailUpstream.hits
      const r = await eventually(() => refusal(dev.request('GET', '/mail/a')).catch(() => ({ status: 200, code: '' })), (v) => v.status === 403)
      expect(r).toEqual({ status: 403, code: 'GH_ERR_APP_VERSION' })
      expect(mailUpstream.hits).toBe(before)
    })

    it('update check and package download: newest allowed version, streamed with its SHA-256', async () => {
      const c = stack.security.services.catalog
      const v11 = randomBytes(300 * 1024)
      await c.addPackage('mail', '1.1.0', 'mail-1.1.0.apk', randomBytes(1000))
      await c.addPackage('mail', '1.10.0', 'mail-1.10.0.apk', v11)
      await c.addPackage('mail', '0.5', 'mail-0.5.apk', randomBytes(10))
      const dev = await stack.enrolledDevice({ appId: 'mail', appVersion: '1.2.0' })
      const update = await dev.checkUpdate()
      expect(update).toEqual({
        appId: 'mail', version: '1.10.0', fileName: 'mail-1.10.0.apk', size: v11.length,
        sha256: createHash('sha256').update(v11).digest('hex'), downloadPath: '/v1/catalog/mail/packages/1.10.0',
      })
      expect(await dev.downloadPackage(update!)).toEqual(v11)
      expect(await dev.checkUpdate('1.10')).toBeUndefined()

      // The raw answer: content-length and x-gatehouse-sha256 headers.
      const sid = dev.sessionId!
      const raw = await sendRaw(agent, stack.securityUrl, update!.downloadPath, { method: 'GET', headers: { 'gatehouse-session': sid } })
      expect(raw.status).toBe(200)
      expect(raw.headers['content-length']).toBe(String(v11.length))
      expect(raw.headers['x-gatehouse-sha256']).toBe(update!.sha256)
      expect(createHash('sha256').update(raw.body).digest('hex')).toBe(update!.sha256)
    })

    it('catalog paths need a live session of that same app', async () => {
      const noSession = await sendRaw(agent, stack.securityUrl, '/v1/catalog/mail/update?version=1.0', { method: 'GET' })
      expect([noSession.status, noSession.code]).toEqual([401, 'GH_ERR_SESSION_INVALID'])
      const forged = await sendRaw(agent, stack.securityUrl, '/v1/catalog/mail/packages/1.10.0', { method: 'GET', headers: { 'gatehouse-session': 'A'.repeat(22) } })
      expect([forged.status, forged.code]).toEqual([401, 'GH_ERR_SESSION_INVALID'])
      const other: GatehouseDevice = await stack.enrolledDevice({ appId: 'legacy-mail', appVersion: '3.0' })
      const foreign = await sendRaw(agent, stack.securityUrl, '/v1/catalog/mail/packages/1.10.0', { method: 'GET', headers: { 'gatehouse-session': other.sessionId! } })
      expect([foreign.status, foreign.code]).toEqual([403, 'GH_ERR_APP_CONTEXT'])
      const dev = await stack.enrolledDevice({ appId: 'mail', appVersion: '1.0' })
      const missing = await sendRaw(agent, stack.securityUrl, '/v1/catalog/mail/packages/9.9', { method: 'GET', headers: { 'gatehouse-session': dev.sessionId! } })
      expect([missing.status, missing.code]).toEqual([404, 'GH_ERR_NOT_FOUND'])
      const traversal = await sendRaw(agent, stack.securityUrl, '/v1/catalog/mail/packages/..%2F..%2Fmaster.key', { method: 'GET', headers: { 'gatehouse-session': dev.sessionId! } })
      expect(traversal.status).toBe(404)
    })
  })
})
