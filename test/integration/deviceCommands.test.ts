/**
 * Device commands end to end: lock → the next proxied request fails, the session open delivers
 * the lock, the SDK acknowledges, the admin view shows it; unlock restores; a selective wipe
 * removes one app's enrollment only; retire; forged acknowledgements.
 */
import { randomBytes } from 'node:crypto'
import { existsSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { PassThrough } from 'node:stream'
import { Agent } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DeviceCommandError, GatehouseClientError, type DeviceCommand, type GatehouseDevice } from '../../src/client/device.js'
import { deviceRequest } from '../../src/cli/cmd/device.js'
import { commandAckProof } from '../../src/protocol/keySchedule.js'
import { PASSWORD, sendRaw, startStack, type Stack } from '../helpers/stack.js'

async function failure(p: Promise<unknown>): Promise<unknown> {
  return p.then(() => { throw new Error('expected a failure') }, (e: unknown) => e)
}

describe('device commands', () => {
  let stack: Stack
  let agent: Agent
  beforeAll(async () => {
    stack = await startStack()
    agent = new Agent({ connect: { ca: stack.ca } })
  })
  afterAll(async () => {
    await agent?.close()
    await stack?.close()
  })

  /** The revocation push reaches the proxy asynchronously: wait until it dropped the session. */
  async function droppedAtProxy(dev: GatehouseDevice): Promise<void> {
    const end = Date.now() + 5000
    while (stack.proxy.sessions.peek(dev.sessionId!) && Date.now() < end) await new Promise((r) => setTimeout(r, 20))
    expect(stack.proxy.sessions.peek(dev.sessionId!)).toBeUndefined()
  }

  it('lock: next request fails, the lock is delivered and acknowledged; the device stays blocked; unlock restores', async () => {
    const received: DeviceCommand[] = []
    const dev = await stack.enrolledDevice({ deviceId: 'phone-lock', onCommand: (c) => { received.push(c) } })
    expect((await dev.request('GET', '/demo/hello')).status).toBe(200)
    const oldSession = dev.sessionId!

    const lock = await stack.security.services.commands.issue({ userName: 'alice', deviceId: 'phone-lock', kind: 'lock', issuedBy: 'admin' })
    expect(await stack.store.getDevice('alice', 'phone-lock')).toMatchObject({ state: 'locked' })
    expect((await stack.store.getSession(oldSession))!.closedAt).not.toBeNull()
    await droppedAtProxy(dev)

    const err = await failure(dev.request('GET', '/demo/hello'))
    expect(err).toBeInstanceOf(DeviceCommandError)
    expect((err as DeviceCommandError).command).toEqual({ id: lock.id, kind: 'lock', appId: null })
    expect(received).toEqual([{ id: lock.id, kind: 'lock', appId: null }])
    const [cmd] = await stack.security.services.commands.list({ userName: 'alice', deviceId: 'phone-lock' })
    expect(cmd).toMatchObject({ id: lock.id, state: 'acknowledged', issuedBy: 'admin' })
    expect(cmd!.deliveredAt).not.toBeNull()
    expect(cmd!.acknowledgedAt).not.toBeNull()
    expect(await stack.security.services.commands.openFor('alice', 'phone-lock')).toEqual([])
    // Still locked, nothing left to deliver: 403 GH_ERR_DEVICE_BLOCKED; the enrollment is kept.
    const blocked = await failure(dev.openSession())
    expect(blocked).toBeInstanceOf(GatehouseClientError)
    expect([(blocked as GatehouseClientError).status, (blocked as GatehouseClientError).code]).toEqual([403, 'GH_ERR_DEVICE_BLOCKED'])
    expect(dev.enrollmentState).toBeDefined()
    // A locked device cannot enroll other apps either.
    const other = await failure(stack.device({ deviceId: 'phone-lock', appId: 'notes' }).enroll('alice', PASSWORD))
    expect((other as GatehouseClientError).code).toBe('GH_ERR_DEVICE_BLOCKED')

    const unlock = await stack.security.services.commands.issue({ userName: 'alice', deviceId: 'phone-lock', kind: 'unlock', issuedBy: 'admin' })
    expect((await dev.request('GET', '/demo/hello')).status).toBe(200)
    expect(received.map((c) => c.kind)).toEqual(['lock', 'unlock'])
    expect(await stack.store.getDevice('alice', 'phone-lock')).toMatchObject({ state: 'active' })
    const all = await stack.security.services.commands.list({ deviceId: 'phone-lock' })
    expect(all.map((c) => [c.id, c.kind, c.state])).toEqual([[lock.id, 'lock', 'acknowledged'], [unlock.id, 'unlock', 'acknowledged']])
  })

  it('a session of a device with an open command is "not valid" for the proxies', async () => {
    const dev = await stack.enrolledDevice({ deviceId: 'phone-race' })
    // A command recorded without the session being closed (e.g. by another server mid-open).
    await stack.store.createCommand({
      id: 'cmd-race', userName: 'alice', deviceId: 'phone-race', appId: null, kind: 'lock', state: 'pending',
      issuedBy: 'admin', issuedAt: Date.now(), deliveredAt: null, acknowledgedAt: null,
    })
    const v = await failure(stack.security.sessions.validate(dev.sessionId))
    expect((v as { code: string }).code).toBe('GH_ERR_SESSION_INVALID')
    stack.proxy.sessions.clear()
    const err = await failure(dev.request('GET', '/demo/hello'))
    expect((err as DeviceCommandError).command).toEqual({ id: 'cmd-race', kind: 'lock', appId: null })
  })

  it('selective wipe: only that app\'s enrollment goes; the SDK erases it; other apps keep working', async () => {
    const wiped: DeviceCommand[] = []
    const mail = await stack.enrolledDevice({ deviceId: 'phone-wipe', appId: 'mail', onCommand: (c) => { wiped.push(c) } })
    const notes = await stack.enrolledDevice({ deviceId: 'phone-wipe', appId: 'notes' })
    const mailEnrollment = mail.enrollmentState!.enrollmentId
    const notesEnrollment = notes.enrollmentState!.enrollmentId

    const wipe = await stack.security.services.commands.issue({ userName: 'alice', deviceId: 'phone-wipe', appId: 'mail', kind: 'wipe', issuedBy: 'helpdesk' })
    expect(await stack.store.getEnrollment(mailEnrollment)).toMatchObject({ status: 'revoked' })
    expect(await stack.store.getEnrollment(notesEnrollment)).toMatchObject({ status: 'active' })
    expect(await stack.store.getDevice('alice', 'phone-wipe')).toBeUndefined()
    await droppedAtProxy(mail)

    const err = await failure(mail.request('GET', '/demo/hello'))
    expect((err as DeviceCommandError).command).toEqual({ id: wipe.id, kind: 'wipe', appId: 'mail' })
    expect(wiped).toEqual([{ id: wipe.id, kind: 'wipe', appId: 'mail' }])
    expect(mail.enrollmentState).toBeUndefined()
    expect((await stack.security.services.commands.list({ deviceId: 'phone-wipe' }))[0]).toMatchObject({ state: 'acknowledged' })
    // The other app is untouched, and never sees the command.
    expect((await notes.request('GET', '/demo/hello')).status).toBe(200)
    expect(await stack.security.services.commands.openFor('alice', 'phone-wipe', 'notes')).toEqual([])
    // The wiped app can enroll again.
    await mail.enroll('alice', PASSWORD)
    expect((await mail.request('GET', '/demo/hello')).status).toBe(200)
  })

  it('retire: every enrollment of the device revoked; delivered to each app with its revoked key', async () => {
    const a = await stack.enrolledDevice({ deviceId: 'phone-retire', appId: 'mail' })
    const b = await stack.enrolledDevice({ deviceId: 'phone-retire', appId: 'notes' })
    const retire = await stack.security.services.commands.issue({ userName: 'alice', deviceId: 'phone-retire', kind: 'retire', issuedBy: 'admin' })
    expect((await stack.store.listEnrollments({ deviceId: 'phone-retire', status: 'active' }))).toEqual([])
    expect(await stack.store.getDevice('alice', 'phone-retire')).toMatchObject({ state: 'retired' })
    await droppedAtProxy(a)
    const err = await failure(a.request('GET', '/demo/hello'))
    expect((err as DeviceCommandError).command).toEqual({ id: retire.id, kind: 'retire', appId: null })
    expect(a.enrollmentState).toBeUndefined()
    // Acknowledged by the first app: the second now has a revoked enrollment and nothing to receive.
    stack.proxy.sessions.clear()
    const errB = await failure(b.request('GET', '/demo/hello'))
    expect((errB as GatehouseClientError).code).toBe('GH_ERR_ENROLLMENT_INVALID')
    // A retired device starts afresh when its user enrolls again with the password.
    await a.enroll('alice', PASSWORD)
    expect((await a.request('GET', '/demo/hello')).status).toBe(200)
    expect(await stack.store.getDevice('alice', 'phone-retire')).toMatchObject({ state: 'active' })
  })

  it('acknowledgements must prove possession of the key of the command\'s device', async () => {
    const dev = await stack.enrolledDevice({ deviceId: 'phone-ack' })
    const stranger = await stack.enrolledDevice({ deviceId: 'phone-stranger' })
    const cmd = await stack.security.services.commands.issue({ userName: 'alice', deviceId: 'phone-ack', kind: 'lock', issuedBy: 'admin' })
    const e = dev.enrollmentState!
    const s = stranger.enrollmentState!
    const ack = (id: string, enrollmentId: string, key: string, timestamp = Date.now()) => sendRaw(agent, stack.securityUrl, `/v1/commands/${id}/ack`, {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ enrollmentId, timestamp, proof: commandAckProof(Buffer.from(key, 'base64'), id, enrollmentId, timestamp).toString('base64url') }),
    })
    const wrongKey = await ack(cmd.id, e.enrollmentId, randomBytes(32).toString('base64'))
    const foreign = await ack(cmd.id, s.enrollmentId, s.sharedKey)
    const unknown = await ack('no-such-command', e.enrollmentId, e.sharedKey)
    for (const a of [wrongKey, foreign, unknown]) expect([a.status, a.code]).toEqual([401, 'GH_ERR_PROOF'])
    const stale = await ack(cmd.id, e.enrollmentId, e.sharedKey, Date.now() - 3600_000)
    expect([stale.status, stale.code]).toEqual([409, 'GH_ERR_STALE'])
    expect((await stack.security.services.commands.openFor('alice', 'phone-ack')).map((c) => c.id)).toEqual([cmd.id])
    const good = await ack(cmd.id, e.enrollmentId, e.sharedKey)
    expect(good.status).toBe(204)
    expect(await stack.security.services.commands.openFor('alice', 'phone-ack')).toEqual([])
    expect((await ack(cmd.id, e.enrollmentId, e.sharedKey)).status).toBe(204)
    expect(stack.logs.text).not.toContain(e.sharedKey)
  })

  it('the simulator (`gatehouse device request`) prints the command and acts: lock keeps the state file, wipe removes it', async () => {
    const dev = await stack.enrolledDevice({ deviceId: 'sim-phone' })
    const stateFile = path.join(stack.dir, 'sim-device.json')
    writeFileSync(stateFile, JSON.stringify(dev.enrollmentState), { mode: 0o600 })
    const run = async () => {
      const stdout = new PassThrough()
      let out = ''
      stdout.on('data', (c: Buffer) => { out += c.toString('utf8') })
      const code = await deviceRequest.run({
        args: [], positionals: ['GET', '/demo/hello'], stdout, stderr: new PassThrough(), stdin: new PassThrough(), env: {},
        values: { state: stateFile, 'security-url': stack.securityUrl, 'proxy-url': stack.proxyUrl, ca: stack.pki.caCert },
      })
      return { code, out }
    }
    expect((await run()).code).toBe(0)
    const lock = await stack.security.services.commands.issue({ userName: 'alice', deviceId: 'sim-phone', kind: 'lock', issuedBy: 'admin' })
    const locked = await run()
    expect(locked.code).toBe(1)
    expect(locked.out).toContain(`device command received: lock (command ${lock.id})`)
    expect(locked.out).toContain('device locked')
    expect(existsSync(stateFile)).toBe(true)
    const wipe = await stack.security.services.commands.issue({ userName: 'alice', deviceId: 'sim-phone', kind: 'wipe', issuedBy: 'admin' })
    const wiped = await run()
    expect(wiped.code).toBe(1)
    expect(wiped.out).toContain(`device command received: wipe of the whole device (command ${wipe.id})`)
    expect(wiped.out).toContain(`enrollment erased: removed ${stateFile}`)
    expect(existsSync(stateFile)).toBe(false)
    expect((await stack.security.services.commands.list({ deviceId: 'sim-phone' })).map((c) => [c.kind, c.state])).toEqual([['lock', 'acknowledged'], ['wipe', 'acknowledged']])
  })

  it('commands are refused for unknown devices and malformed input', async () => {
    const c = stack.security.services.commands
    await expect(c.issue({ userName: 'alice', deviceId: 'never-seen', kind: 'lock', issuedBy: 'admin' })).rejects.toMatchObject({ code: 'GH_ERR_NOT_FOUND' })
    await expect(c.issue({ userName: 'alice', deviceId: 'phone-ack', kind: 'explode' as never, issuedBy: 'admin' })).rejects.toMatchObject({ code: 'GH_ERR_MALFORMED' })
    await expect(c.issue({ userName: 'alice', deviceId: 'phone-ack', appId: 'mail', kind: 'lock', issuedBy: 'admin' })).rejects.toMatchObject({ code: 'GH_ERR_MALFORMED' })
  })
})
