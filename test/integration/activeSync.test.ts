/**
 * The ActiveSync gateway through real servers: the stack (security server, proxy with real TLS)
 * plus a fake Exchange (test/helpers/fakeExchange.ts). A device enrolled through the SDK with
 * deviceId X for alice lets alice's mail client with DeviceId X through; everything else is
 * refused the way an Exchange front end refuses it, before Exchange is reached.
 */
import path from 'node:path'
import { Readable } from 'node:stream'
import { Agent } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { encodeActiveSyncQuery } from '../../src/proxy/activeSyncQuery.js'
import { PING_HEARTBEAT_EXPIRED } from '../../src/proxy/activeSync.js'
import type { ProxyServer } from '../../src/proxy/server.js'
import { activeSyncCheck } from '../../src/security/routes/activeSync.js'
import { UserFile } from '../../src/security/users.js'
import { basicAuth, PING_OK, startFakeExchange, WBXML_HEADER, type FakeExchange } from '../helpers/fakeExchange.js'
import { closedPort, counterValue, PASSWORD, rawTls, sendRaw, startRelay, startStack, type RawAnswer, type Stack } from '../helpers/stack.js'

const EAS = '/Microsoft-Server-ActiveSync'
const ALICE_PW = 'alice-mailbox-password'
const BOB_PW = 'bob-mailbox-password'
const ALICE = basicAuth('alice', ALICE_PW)
const WBXML = 'application/vnd.ms-sync.wbxml'

const plain = (cmd: string, user: string, deviceId: string) => `${EAS}?Cmd=${cmd}&User=${encodeURIComponent(user)}&DeviceId=${deviceId}&DeviceType=iPhone`

describe('ActiveSync gateway', () => {
  let stack: Stack
  let fake: FakeExchange
  let agent: Agent
  let origin: string

  const eas = (target: string, o: { method?: string; auth?: string | null; headers?: Record<string, string>; body?: Buffer | string | AsyncIterable<Buffer>; port?: number } = {}): Promise<RawAnswer> =>
    sendRaw(agent, o.port ? `https://localhost:${o.port}` : origin, target, {
      method: o.method ?? 'POST',
      headers: {
        ...(o.auth === null ? {} : { authorization: o.auth ?? ALICE }),
        'content-type': WBXML, 'ms-asprotocolversion': '14.1', 'user-agent': 'Apple-iPhone15C2/2101.123', ...o.headers,
      },
      body: o.body ?? (o.method === 'OPTIONS' ? undefined : Buffer.from([0x03, 0x01, 0x6a, 0x00, 0x45])),
    })

  /** Wait until the proxy applied every revocation logged so far. */
  async function pushed(p: ProxyServer = stack.proxy): Promise<void> {
    const seq = await stack.store.latestRevocationSeq()
    const end = Date.now() + 5000
    while ((p.revocationSeq ?? 0) < seq && Date.now() < end) await new Promise((r) => setTimeout(r, 10))
    expect(p.revocationSeq).toBeGreaterThanOrEqual(seq)
  }

  beforeAll(async () => {
    fake = await startFakeExchange({ users: { alice: ALICE_PW, bob: BOB_PW }, pingHoldMs: 300 })
    stack = await startStack({
      proxy: { activeSync: { upstream: fake.url, path: EAS, maxHoldSeconds: 5, holdMarginMs: 1000, gateCacheSeconds: 60, maxBodyBytes: 256 * 1024, outageGraceSeconds: 300 } },
    })
    await (await UserFile.load(path.join(stack.dir, 'users.json'))).add('bob', PASSWORD, [])
    agent = new Agent({ connect: { ca: stack.ca }, connections: 64 })
    origin = stack.proxyUrl
    await stack.enrolledDevice({ deviceId: 'ALICEPHONE1' })
    const bobDev = stack.device({ deviceId: 'BOBPHONE1' })
    await bobDev.enroll('bob', PASSWORD)
  })
  afterAll(async () => {
    await agent?.close()
    await stack?.close()
    await fake?.close()
  })

  it('OPTIONS reaches Exchange ungated and its ActiveSync headers come back', async () => {
    const a = await eas(EAS, { method: 'OPTIONS' })
    expect(a.status).toBe(200)
    expect(a.headers['ms-asprotocolversions']).toBe('2.5,12.0,12.1,14.0,14.1,16.0,16.1')
    expect(String(a.headers['ms-asprotocolcommands'])).toContain('Ping')
    expect(fake.byCommand.get('OPTIONS')).toBeGreaterThanOrEqual(1)
  })

  it('an enrolled device gets Sync through (plain query), headers passed and added, Authorization untouched', async () => {
    const before = fake.requests
    const body = Buffer.concat([WBXML_HEADER, Buffer.from('sync-body')])
    const a = await eas(plain('Sync', 'alice', 'ALICEPHONE1'), {
      body, headers: { 'x-ms-policykey': '3769048351', 'gatehouse-user': 'mallory', 'x-forwarded-for': '10.6.6.6' },
    })
    expect(a.status).toBe(200)
    expect(a.headers['content-type']).toBe(WBXML)
    expect(a.body.equals(Buffer.concat([WBXML_HEADER, body]))).toBe(true)
    expect(fake.requests).toBe(before + 1)
    const h = fake.lastHeaders!
    expect(h.authorization).toBe(ALICE)
    expect(h['ms-asprotocolversion']).toBe('14.1')
    expect(h['x-ms-policykey']).toBe('3769048351')
    expect(h['user-agent']).toBe('Apple-iPhone15C2/2101.123')
    expect(h['content-type']).toBe(WBXML)
    expect(h['content-length']).toBe(String(body.length))
    expect(h['x-forwarded-for']).toBe('127.0.0.1')
    expect(h['x-forwarded-proto']).toBe('https')
    expect(h['gatehouse-user']).toBeUndefined()
    expect(fake.lastUrl).toBe(plain('Sync', 'alice', 'ALICEPHONE1'))

    // Headers named in Connection are hop-by-hop too (raw bytes: undici would rewrite Connection).
    const raw = await rawTls(stack.proxy.port, {
      ca: stack.ca,
      waitMs: 1000,
      writes: [`POST ${plain('Sync', 'alice', 'ALICEPHONE1')} HTTP/1.1\r\nHost: localhost\r\nAuthorization: ${ALICE}\r\nConnection: close, X-Hop\r\nX-Hop: must-not-pass\r\nX-Kept: passes\r\nContent-Length: 2\r\n\r\nhi`],
    })
    expect(raw.status).toBe(200)
    expect(fake.lastHeaders!['x-hop']).toBeUndefined()
    expect(fake.lastHeaders!['x-kept']).toBe('passes')
  })

  it('the base64 query form: with the User parameter, and without it (the Basic user is who is gated)', async () => {
    for (const user of ['alice', undefined]) {
      const q = encodeActiveSyncQuery({ command: 'Sync', deviceId: 'ALICEPHONE1', deviceType: 'iPhone', policyKey: 1234, ...(user ? { user } : {}) })
      const a = await eas(`${EAS}?${q}`, { body: 'b64' })
      expect(a.status).toBe(200)
      expect(a.body.subarray(WBXML_HEADER.length).toString()).toBe('b64')
      expect(fake.lastUrl).toBe(`${EAS}?${q}`)
    }
  })

  it('Ping is held by Exchange and answered through the gateway', async () => {
    const t0 = Date.now()
    const a = await eas(plain('Ping', 'alice', 'ALICEPHONE1'), { body: 'hold=400' })
    expect(a.status).toBe(200)
    expect(Date.now() - t0).toBeGreaterThanOrEqual(390)
    expect(a.headers['x-fake-exchange']).toBe('ping')
    expect(a.body.equals(PING_OK)).toBe(true)
  })

  it('user names: DOMAIN\\user and user@domain are the same user, case ignored', async () => {
    const auth = basicAuth('CORP\\Alice', ALICE_PW)
    const a = await eas(plain('FolderSync', 'alice@corp.example', 'ALICEPHONE1'), { auth })
    expect(a.status).toBe(200)
    expect(a.text).toBe('FolderSync')
    expect(await activeSyncCheck(stack.security.services, 'CORP\\ALICE', 'ALICEPHONE1')).toMatchObject({ allowed: true, state: 'active' })
    expect(await activeSyncCheck(stack.security.services, 'alice', 'alicephone1')).toEqual({ allowed: false, state: 'unknown', enrollmentIds: [] })
  })

  it('unknown device: 403, Exchange never reached', async () => {
    const before = fake.requests
    const a = await eas(plain('Sync', 'alice', 'NOSUCHPHONE'))
    expect(a.status).toBe(403)
    expect(a.code).toBe('GH_ERR_DEVICE_NOT_ENROLLED')
    expect(fake.requests).toBe(before)
  })

  it("another user's device: 403; a query User other than the Basic user: 403 identity mismatch", async () => {
    const before = fake.requests
    const a = await eas(plain('Sync', 'alice', 'BOBPHONE1'))
    expect(a.status).toBe(403)
    expect(a.code).toBe('GH_ERR_DEVICE_NOT_ENROLLED')
    // bob's own client is fine…
    expect((await eas(plain('Sync', 'bob', 'BOBPHONE1'), { auth: basicAuth('bob', BOB_PW) })).status).toBe(200)
    // …but alice's credentials naming bob (to reach Exchange from bob's enrolled device) are not.
    const m = await eas(plain('Sync', 'bob', 'BOBPHONE1'))
    expect(m.status).toBe(403)
    expect(m.code).toBe('GH_ERR_IDENTITY_MISMATCH')
    expect(fake.requests).toBe(before + 1)
  })

  it('credentials: none and no User, or not Basic: 401 with a Basic challenge; no credentials but a User: gated on it', async () => {
    const q = encodeActiveSyncQuery({ command: 'Sync', deviceId: 'ALICEPHONE1', deviceType: 'iPhone' })
    const a = await eas(`${EAS}?${q}`, { auth: null })
    expect(a.status).toBe(401)
    expect(a.headers['www-authenticate']).toBe('Basic realm="ActiveSync"')
    // Plain form without credentials: the gate allows the device, Exchange asks for credentials.
    const b = await eas(plain('Sync', 'alice', 'ALICEPHONE1'), { auth: null })
    expect(b.status).toBe(401)
    expect(b.headers['www-authenticate']).toBe('Basic realm="fake-exchange"')
    expect((await eas(plain('Sync', 'alice', 'NOSUCHPHONE'), { auth: null })).status).toBe(403)
    // Other schemes cannot be tied to a user: asked for Basic, Exchange not reached.
    const before = fake.requests
    for (const auth of ['Bearer eyJhbGciOiJub25lIn0.e30.', 'NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAGAbEdAAAADw==']) {
      const c = await eas(plain('Sync', 'alice', 'ALICEPHONE1'), { auth })
      expect([c.status, c.code, c.headers['www-authenticate']]).toEqual([401, 'GH_ERR_AUTHENTICATION', 'Basic realm="ActiveSync"'])
    }
    // OPTIONS is not gated, so it may not carry a body.
    const o = await eas(EAS, { method: 'OPTIONS', body: 'x' })
    expect([o.status, o.code]).toEqual([400, 'GH_ERR_MALFORMED'])
    expect(fake.requests).toBe(before)
  })

  it('malformed queries and methods: 400 / 405 before the gate', async () => {
    const good = encodeActiveSyncQuery({ command: 'Sync', deviceId: 'ALICEPHONE1', deviceType: 'iPhone', user: 'alice' })
    const raw = Buffer.from(good, 'base64')
    const bad: [string, string][] = [
      ['truncated base64 structure', raw.subarray(0, 12).toString('base64')],
      ['device id length past the end', Buffer.concat([raw.subarray(0, 4), Buffer.from([200]), raw.subarray(5)]).toString('base64')],
      ['unknown protocol version', Buffer.concat([Buffer.from([99]), raw.subarray(1)]).toString('base64')],
      ['unknown command code', Buffer.concat([raw.subarray(0, 1), Buffer.from([77]), raw.subarray(2)]).toString('base64')],
      // 14.1 Sync, locale 0x0409, DeviceId "X1", policy key length 3, DeviceType "iPhone"
      ['policy key length 3', Buffer.from([141, 0, 0x09, 0x04, 2, 0x58, 0x31, 3, 1, 2, 3, 6, 0x69, 0x50, 0x68, 0x6f, 0x6e, 0x65]).toString('base64')],
      ['not canonical base64', `${good.slice(0, -2)}=A`],
      ['parameter runs past the end', Buffer.concat([raw, Buffer.from([0x08, 0x20, 0x61])]).toString('base64')],
      ['missing DeviceId', 'Cmd=Sync&User=alice&DeviceType=iPhone'],
      ['bad DeviceId', 'Cmd=Sync&User=alice&DeviceId=ALICE-PHONE&DeviceType=iPhone'],
      ['duplicate Cmd', 'Cmd=Sync&cmd=Ping&User=alice&DeviceId=ALICEPHONE1&DeviceType=iPhone'],
      ['empty query', ''],
    ]
    const before = fake.requests
    for (const [what, q] of bad) {
      const a = await eas(q ? `${EAS}?${q}` : EAS)
      expect([what, a.status, a.code]).toEqual([what, 400, 'GH_ERR_MALFORMED'])
    }
    const put = await eas(plain('Sync', 'alice', 'ALICEPHONE1'), { method: 'PUT' })
    expect(put.status).toBe(405)
    expect(put.headers.allow).toBe('OPTIONS, POST')
    expect(fake.requests).toBe(before)
  })

  it('oversized body: 413 by Content-Length, and 413 mid-stream for a chunked body', async () => {
    const before = fake.requests
    const big = await eas(plain('SendMail', 'alice', 'ALICEPHONE1'), { body: Buffer.alloc(300 * 1024, 1) })
    expect(big.status).toBe(413)
    expect(big.code).toBe('GH_ERR_TOO_LARGE')
    expect(fake.requests).toBe(before)
    // No Content-Length (chunked): counted while streaming.
    async function* chunks() {
      for (let i = 0; i < 20; i++) yield Buffer.alloc(32 * 1024, 2)
    }
    const streamed = await eas(plain('SendMail', 'alice', 'ALICEPHONE1'), { body: Readable.from(chunks()) })
    expect(streamed.status).toBe(413)
    expect(streamed.code).toBe('GH_ERR_TOO_LARGE')
  })

  it('bodies are streamed both ways: a 200 KiB upload, 5 MiB downloads with and without Content-Length', async () => {
    const up = await eas(plain('SendMail', 'alice', 'ALICEPHONE1'), { body: Buffer.alloc(200 * 1024, 3), headers: { 'content-type': 'message/rfc822' } })
    expect(up.status).toBe(200)
    expect(up.text).toBe(String(200 * 1024))
    for (const chunked of ['0', '1']) {
      const a = await eas(plain('GetAttachment', 'alice', 'ALICEPHONE1'), { headers: { 'x-fake-bytes': String(5 * 1024 * 1024), 'x-fake-chunked': chunked } })
      expect(a.status).toBe(200)
      expect(a.body.length).toBe(5 * 1024 * 1024)
      expect(a.body.every((b) => b === 0x61)).toBe(true)
      if (chunked === '0') expect(a.headers['content-length']).toBe(String(5 * 1024 * 1024))
      else expect(a.headers['transfer-encoding']).toBe('chunked')
    }
  })

  it('a locked device is refused at once after the revocation push (not at cache expiry); unlock lets it back', async () => {
    await stack.enrolledDevice({ deviceId: 'LOCKPHONE1' })
    expect((await eas(plain('Sync', 'alice', 'LOCKPHONE1'))).status).toBe(200)
    const hits = await counterValue(stack.proxy.registry, 'gatehouse_proxy_activesync_gate_cache_hits_total')
    expect((await eas(plain('Sync', 'alice', 'LOCKPHONE1'))).status).toBe(200)
    expect(await counterValue(stack.proxy.registry, 'gatehouse_proxy_activesync_gate_cache_hits_total')).toBe(hits + 1)

    await stack.security.services.commands.issue({ userName: 'alice', deviceId: 'LOCKPHONE1', kind: 'lock', issuedBy: 'admin' })
    await pushed()
    const before = fake.requests
    const locked = await eas(plain('Sync', 'alice', 'LOCKPHONE1'))
    expect(locked.status).toBe(403)
    expect(locked.code).toBe('GH_ERR_DEVICE_BLOCKED')
    expect(fake.requests).toBe(before)

    await stack.security.services.commands.issue({ userName: 'alice', deviceId: 'LOCKPHONE1', kind: 'unlock', issuedBy: 'admin' })
    await pushed()
    // The refusal was remembered for at most 5 s and the push dropped it: allowed again now.
    expect((await eas(plain('Sync', 'alice', 'LOCKPHONE1'))).status).toBe(200)
  })

  it('a held Ping of a device that gets locked is cut (403) and Exchange sees its request abandoned', async () => {
    await stack.enrolledDevice({ deviceId: 'CUTPHONE1' })
    const aborted = fake.aborted
    const held = eas(plain('Ping', 'alice', 'CUTPHONE1'), { body: 'hold=4000' })
    const end = Date.now() + 2000
    while (fake.inFlight === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10))
    const t0 = Date.now()
    await stack.security.services.commands.issue({ userName: 'alice', deviceId: 'CUTPHONE1', kind: 'lock', issuedBy: 'admin' })
    const a = await held
    expect(a.status).toBe(403)
    expect(a.code).toBe('GH_ERR_DEVICE_BLOCKED')
    expect(Date.now() - t0).toBeLessThan(2000)
    const until = Date.now() + 2000
    while (fake.aborted === aborted && Date.now() < until) await new Promise((r) => setTimeout(r, 10))
    expect(fake.aborted).toBe(aborted + 1)
  })

  it('a wiped device: 449 "Retry after sending a PROVISION command" for commands, 403 for its Provision', async () => {
    await stack.enrolledDevice({ deviceId: 'WIPEPHONE1' })
    expect((await eas(plain('Sync', 'alice', 'WIPEPHONE1'))).status).toBe(200)
    await stack.security.services.commands.issue({ userName: 'alice', deviceId: 'WIPEPHONE1', kind: 'wipe', issuedBy: 'admin' })
    await pushed()
    const before = fake.requests
    const a = await eas(plain('Sync', 'alice', 'WIPEPHONE1'))
    expect(a.status).toBe(449)
    expect(a.code).toBe('GH_ERR_DEVICE_BLOCKED')
    const p = await eas(plain('Provision', 'alice', 'WIPEPHONE1'))
    expect(p.status).toBe(403)
    expect(p.code).toBe('GH_ERR_DEVICE_BLOCKED')
    expect(fake.requests).toBe(before)
    expect(await activeSyncCheck(stack.security.services, 'alice', 'WIPEPHONE1')).toEqual({ allowed: false, state: 'wiped', enrollmentIds: [] })
  })

  it('a retired device: 403', async () => {
    await stack.enrolledDevice({ deviceId: 'RETIREPHONE1' })
    await stack.security.services.commands.issue({ userName: 'alice', deviceId: 'RETIREPHONE1', kind: 'retire', issuedBy: 'admin' })
    await pushed()
    const a = await eas(plain('Sync', 'alice', 'RETIREPHONE1'))
    expect(a.status).toBe(403)
    expect(a.code).toBe('GH_ERR_DEVICE_BLOCKED')
  })

  it('Exchange down: 502; Exchange slower than maxHoldSeconds: 504', async () => {
    const down = await stack.startProxy({ activeSync: { upstream: `http://127.0.0.1:${await closedPort()}`, path: EAS, maxHoldSeconds: 5, gateCacheSeconds: 60, maxBodyBytes: 1024 * 1024 } })
    const a = await eas(plain('Sync', 'alice', 'ALICEPHONE1'), { port: down.port })
    expect(a.status).toBe(502)
    expect(a.code).toBe('GH_ERR_UPSTREAM')
    expect(await counterValue(down.registry, 'gatehouse_proxy_activesync_upstream_errors_total', { kind: 'connect' })).toBe(1)
    await stack.stopProxy(down, 100)

    const slow = await stack.startProxy({ activeSync: { upstream: fake.url, path: EAS, maxHoldSeconds: 1, holdMarginMs: 200, gateCacheSeconds: 60, maxBodyBytes: 1024 * 1024 } })
    const t0 = Date.now()
    // Exchange would answer after 20 s; the proxy gives it 1 s + 200 ms. undici checks its
    // timeouts on a coarse clock (ticks of ~0.5 s), hence the loose bounds.
    const b = await eas(plain('Ping', 'alice', 'ALICEPHONE1'), { port: slow.port, body: 'hold=20000' })
    expect(b.status).toBe(504)
    expect(b.code).toBe('GH_ERR_UPSTREAM_TIMEOUT')
    expect(Date.now() - t0).toBeGreaterThanOrEqual(600)
    expect(Date.now() - t0).toBeLessThan(15_000)
    expect(await counterValue(slow.registry, 'gatehouse_proxy_activesync_upstream_errors_total', { kind: 'timeout' })).toBe(1)
    await stack.stopProxy(slow, 100)
  })

  it('security server unreachable: 503 with Retry-After for an unchecked device, a cached answer keeps working', async () => {
    const relay = await startRelay(stack.security.ports.proxyApi)
    const { readFileSync } = await import('node:fs')
    const p = await stack.startProxy({
      controlPlane: {
        servers: [`https://localhost:${relay.port}`],
        tls: { cert: readFileSync(stack.pki.clientCert), key: readFileSync(stack.pki.clientKey), ca: stack.ca },
        timeoutMs: 500,
      },
      revocations: { enabled: false, heartbeatTimeoutSeconds: 30 },
      activeSync: { upstream: fake.url, path: EAS, maxHoldSeconds: 5, gateCacheSeconds: 60, maxBodyBytes: 1024 * 1024 },
    })
    expect((await eas(plain('Sync', 'alice', 'ALICEPHONE1'), { port: p.port })).status).toBe(200)
    await relay.cut()
    const before = fake.requests
    const a = await eas(plain('Sync', 'bob', 'BOBPHONE1'), { port: p.port, auth: basicAuth('bob', BOB_PW) })
    expect(a.status).toBe(503)
    expect(a.code).toBe('GH_ERR_CONTROL_PLANE_UNAVAILABLE')
    expect(a.headers['retry-after']).toBe('5')
    expect(fake.requests).toBe(before)
    expect((await eas(plain('Sync', 'alice', 'ALICEPHONE1'), { port: p.port })).status).toBe(200)
    expect(await counterValue(p.registry, 'gatehouse_proxy_activesync_gate_decisions_total', { result: 'unavailable' })).toBe(1)
    await stack.stopProxy(p, 100)
  })

  it('metrics: requests by command and status, gate decisions; no user or device id in any label', async () => {
    const r = stack.proxy.registry
    expect(await counterValue(r, 'gatehouse_proxy_activesync_requests_total', { command: 'Sync', status: '200' })).toBeGreaterThan(0)
    expect(await counterValue(r, 'gatehouse_proxy_activesync_requests_total', { command: 'Sync', status: '403' })).toBeGreaterThan(0)
    expect(await counterValue(r, 'gatehouse_proxy_activesync_gate_decisions_total', { result: 'allowed' })).toBeGreaterThan(0)
    expect(await counterValue(r, 'gatehouse_proxy_activesync_gate_decisions_total', { result: 'locked' })).toBeGreaterThan(0)
    expect(await counterValue(r, 'gatehouse_proxy_requests_total', { route: EAS })).toBeGreaterThan(0)
    const text = await r.metrics()
    expect(text).toContain('gatehouse_proxy_activesync_requests_in_flight')
    for (const secret of ['ALICEPHONE1', 'alice', ALICE_PW, ALICE.slice(6)]) expect(text).not.toContain(secret)
    // Nor in the log.
    expect(stack.logs.text).not.toContain(ALICE_PW)
    expect(stack.logs.text).not.toContain(ALICE.slice(6))
  })

  it('the drain answers held Pings "heartbeat expired" at once and abandons them at Exchange', async () => {
    const p = await stack.startProxy({ activeSync: { upstream: fake.url, path: EAS, maxHoldSeconds: 30, gateCacheSeconds: 60, maxBodyBytes: 1024 * 1024 } })
    const aborted = fake.aborted
    const held = eas(plain('Ping', 'alice', 'ALICEPHONE1'), { port: p.port, body: 'hold=20000' })
    const end = Date.now() + 2000
    while (fake.inFlight === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10))
    const t0 = Date.now()
    const closing = stack.stopProxy(p, 5000)
    const a = await held
    expect(a.status).toBe(200)
    expect(a.headers['content-type']).toBe(WBXML)
    expect(a.body.equals(PING_HEARTBEAT_EXPIRED)).toBe(true)
    await closing
    expect(Date.now() - t0).toBeLessThan(3000)
    expect(fake.aborted).toBe(aborted + 1)
  })
})
