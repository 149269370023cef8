/**
 * Policies and activation codes through the real servers: the effective lifetime and idle timeout
 * applied to sessions and returned to the device, the device limit, the re-sign-in interval, and
 * enrollment with a one-time activation code.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { GatehouseClientError } from '../../src/client/device.js'
import { PASSWORD, startStack, type Stack } from '../helpers/stack.js'

async function refusal(p: Promise<unknown>): Promise<{ status: number; code: string }> {
  const err = await p.then(() => undefined, (e: unknown) => e)
  expect(err).toBeInstanceOf(GatehouseClientError)
  return { status: (err as GatehouseClientError).status, code: (err as GatehouseClientError).code }
}

describe('policies', () => {
  let stack: Stack
  beforeAll(async () => {
    stack = await startStack()
  })
  afterAll(async () => {
    await stack?.close()
  })
  afterEach(async () => {
    for (const p of await stack.security.services.policies.list()) await stack.security.services.policies.remove(p.id)
  })

  it('without policies a session gets the configured lifetime and idle timeout', async () => {
    const before = Date.now()
    const dev = await stack.enrolledDevice()
    expect(dev.sessionPolicy).toEqual({ maxSessionLifetimeSeconds: 3600, idleTimeoutSeconds: 600, reauthIntervalSeconds: null, maxDevicesPerUser: null })
    expect(dev.currentSession!.expiresAt).toBeGreaterThanOrEqual(before + 3600_000)
  })

  it('group and app policies set the session lifetime and idle timeout, and the device is told', async () => {
    const p = stack.security.services.policies
    await p.upsert({ scope: 'global', maxSessionLifetimeSeconds: 1800 })
    await p.upsert({ scope: 'group', scopeId: 'staff', maxSessionLifetimeSeconds: 900, idleTimeoutSeconds: 300 })
    await p.upsert({ scope: 'app', scopeId: 'mail', idleTimeoutSeconds: 120 })
    const before = Date.now()
    const dev = await stack.enrolledDevice({ appId: 'mail' })
    const after = Date.now()
    expect(dev.sessionPolicy).toEqual({ maxSessionLifetimeSeconds: 900, idleTimeoutSeconds: 120, reauthIntervalSeconds: null, maxDevicesPerUser: null })
    const expiresAt = dev.currentSession!.expiresAt
    expect(expiresAt).toBeGreaterThanOrEqual(before + 900_000)
    expect(expiresAt).toBeLessThanOrEqual(after + 900_000)
    const stored = await stack.store.getSession(dev.sessionId!)
    expect(stored).toMatchObject({ expiresAt, idleTimeoutMs: 120_000 })
    // The proxy serves it, and the grant carries the same limits.
    expect((await dev.request('GET', '/demo/hello')).status).toBe(200)
    const grant = await stack.security.sessions.validate(dev.sessionId)
    expect(grant).toMatchObject({ expiresAt, idleTimeoutMs: 120_000, appContext: { routes: '*', versionAllowed: true } })
    // Another app of the same user: no app policy, the group's idle timeout.
    const other = await stack.enrolledDevice({ appId: 'notes' })
    expect(other.sessionPolicy!.idleTimeoutSeconds).toBe(300)
  })

  it('maxDevicesPerUser: a new device beyond the limit is refused (403 GH_ERR_DEVICE_LIMIT); known devices may enroll more apps', async () => {
    // Room for exactly one more device than alice has now (earlier tests enrolled some).
    const existing = (await stack.store.activeDeviceIds('alice')).length
    await stack.security.services.policies.upsert({ scope: 'group', scopeId: 'staff', maxDevicesPerUser: existing + 1 })
    const first = stack.device({ deviceId: 'limit-a' })
    await first.enroll('alice', PASSWORD)
    expect(await refusal(stack.device({ deviceId: 'limit-b' }).enroll('alice', PASSWORD))).toEqual({ status: 403, code: 'GH_ERR_DEVICE_LIMIT' })
    await expect(stack.device({ deviceId: 'limit-a', appId: 'notes' }).enroll('alice', PASSWORD)).resolves.toBeDefined()
    // Freeing a device makes room.
    for (const e of await stack.store.listEnrollments({ deviceId: 'limit-a', status: 'active' })) await stack.store.revokeEnrollment(e.id)
    await expect(stack.device({ deviceId: 'limit-b' }).enroll('alice', PASSWORD)).resolves.toBeDefined()
  })

  it('reauthIntervalSeconds: a session open too long after the sign-in is 401 GH_ERR_REAUTH_REQUIRED until the user enrolls again', async () => {
    await stack.security.services.policies.upsert({ scope: 'global', reauthIntervalSeconds: 3600 })
    const dev = stack.device({ deviceId: 'reauth-1' })
    await dev.enroll('alice', PASSWORD)
    const fresh = await dev.openSession()
    // The session never outlives the sign-in it rests on.
    expect(fresh.expiresAt).toBeLessThanOrEqual(Date.now() + 3600_000)
    const { enrollmentId } = dev.enrollmentState!
    const signIn = await stack.store.lastSignIn(enrollmentId)
    expect(signIn).toMatchObject({ enrollmentId, method: 'password', groups: ['staff'] })
    await stack.store.recordSignIn({ ...signIn!, at: Date.now() - 3601_000 })
    await dev.closeSession()
    expect(await refusal(dev.openSession())).toEqual({ status: 401, code: 'GH_ERR_REAUTH_REQUIRED' })
    await dev.enroll('alice', PASSWORD)
    await expect(dev.openSession()).resolves.toBeDefined()
  })

  it('a policy change makes the proxies re-validate (hub push): cached sessions are dropped', async () => {
    const dev = await stack.enrolledDevice()
    expect((await dev.request('GET', '/demo/hello')).status).toBe(200)
    expect(stack.proxy.sessions.peek(dev.sessionId!)).toBeDefined()
    await stack.security.services.policies.upsert({ scope: 'app', scopeId: 'mail', idleTimeoutSeconds: 60 })
    const end = Date.now() + 5000
    while (stack.proxy.sessions.peek(dev.sessionId!) && Date.now() < end) await new Promise((r) => setTimeout(r, 20))
    expect(stack.proxy.sessions.peek(dev.sessionId!)).toBeUndefined()
    expect(await stack.store.revocationsSince(0, 1000)).toContainEqual(expect.objectContaining({ kind: 'policy', target: 'app:mail' }))
  })
})

describe('activation codes', () => {
  let stack: Stack
  beforeAll(async () => {
    stack = await startStack()
  })
  afterAll(async () => {
    await stack?.close()
  })

  it('enrollment with a code alone works once; the second use is 401 like a wrong password', async () => {
    const { code } = await stack.security.services.activationCodes.issue({ userName: 'alice', appId: 'mail', createdBy: 'test-admin' })
    const dev = stack.device({ deviceId: 'code-1' })
    const state = await dev.enroll('alice', { activationCode: code })
    expect(state.userName).toBe('alice')
    expect((await dev.request('GET', '/demo/hello')).status).toBe(200)
    expect(await stack.store.lastSignIn(state.enrollmentId)).toMatchObject({ method: 'code', groups: ['staff'] })
    const again = await refusal(stack.device({ deviceId: 'code-2' }).enroll('alice', { activationCode: code }))
    expect(again).toEqual({ status: 401, code: 'GH_ERR_AUTHENTICATION' })
    const wrongPassword = await refusal(stack.device({ deviceId: 'code-3' }).enroll('alice', 'not the password'))
    expect(again).toEqual(wrongPassword)
    // Only the hash is stored, and the code appears in no log line.
    expect(JSON.stringify(await stack.store.listActivationCodes({ userName: 'alice' }))).not.toContain(code.replaceAll('-', ''))
    expect(stack.logs.text).not.toContain(code)
    expect(stack.logs.text).not.toContain(code.replaceAll('-', ''))
  })

  it('a code for another app or user is refused (401)', async () => {
    const forCrm = await stack.security.services.activationCodes.issue({ userName: 'alice', appId: 'crm', createdBy: 'test-admin' })
    expect(await refusal(stack.device({ appId: 'mail' }).enroll('alice', { activationCode: forCrm.code }))).toEqual({ status: 401, code: 'GH_ERR_AUTHENTICATION' })
    const forBob = await stack.security.services.activationCodes.issue({ userName: 'bob', createdBy: 'test-admin' })
    expect(await refusal(stack.device().enroll('alice', { activationCode: forBob.code }))).toEqual({ status: 401, code: 'GH_ERR_AUTHENTICATION' })
    // bob is not in the user file: a code alone does not make him a user.
    const forBob2 = await stack.security.services.activationCodes.issue({ userName: 'bob', createdBy: 'test-admin' })
    expect(await refusal(stack.device().enroll('bob', { activationCode: forBob2.code }))).toEqual({ status: 401, code: 'GH_ERR_AUTHENTICATION' })
  })
})

describe('enrollment mode password+code', () => {
  let stack: Stack
  beforeAll(async () => {
    stack = await startStack({ security: { enrollmentMode: 'password+code' } })
  })
  afterAll(async () => {
    await stack?.close()
  })

  it('needs both; a wrong password does not spend the code', async () => {
    const codes = stack.security.services.activationCodes
    const { code } = await codes.issue({ userName: 'alice', createdBy: 'test-admin' })
    expect(await refusal(stack.device().enroll('alice', PASSWORD))).toEqual({ status: 400, code: 'GH_ERR_MALFORMED' })
    expect(await refusal(stack.device().enroll('alice', { activationCode: code }))).toEqual({ status: 400, code: 'GH_ERR_MALFORMED' })
    expect(await refusal(stack.device().enroll('alice', { password: 'wrong password', activationCode: code }))).toEqual({ status: 401, code: 'GH_ERR_AUTHENTICATION' })
    const dev = stack.device()
    const state = await dev.enroll('alice', { password: PASSWORD, activationCode: code })
    expect(await stack.store.lastSignIn(state.enrollmentId)).toMatchObject({ method: 'password+code' })
    expect(await refusal(stack.device().enroll('alice', { password: PASSWORD, activationCode: code }))).toEqual({ status: 401, code: 'GH_ERR_AUTHENTICATION' })
  })
})
