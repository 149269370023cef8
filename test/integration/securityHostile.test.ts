/**
 * Hostile input at the security server, through the real HTTPS listeners: enrollment with bad
 * credentials or junk, session opens that are forged, replayed or stale, the proxy API without
 * (or with a foreign) client certificate. Ends by checking that no secret reached the log, an
 * error body or the SQLite file.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { Agent } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { GatehouseDevice } from '../../src/client/device.js'
import { generateEcdhKeyPair, sessionCloseProof, sessionOpenProof } from '../../src/protocol/keySchedule.js'
import { makeTestPki } from '../helpers/pki.js'
import { PASSWORD, rawTls, sendRaw, spellings, startStack, type RawAnswer, type Stack } from '../helpers/stack.js'

const INVALID_CREDENTIALS = '{"error":{"code":"GH_ERR_AUTHENTICATION","message":"invalid credentials"}}'

describe('security server: hostile input', () => {
  let stack: Stack
  let agent: Agent
  let dev: GatehouseDevice
  let sharedKey: Buffer
  const secrets = new Set<string>()
  const secretBytes: Buffer[] = []
  const errorBodies: string[] = []

  const keep = (b: Buffer) => {
    secretBytes.push(b)
    for (const v of spellings(b)) secrets.add(v)
  }
  const api = async (path: string, o: { method?: string; body?: string | Buffer; contentType?: string | null } = {}): Promise<RawAnswer> => {
    const headers: Record<string, string> = {}
    if (o.contentType !== null) headers['content-type'] = o.contentType ?? 'application/json'
    const a = await sendRaw(agent, stack.securityUrl, path, { method: o.method ?? 'POST', headers, body: o.body })
    if (a.status >= 400) errorBodies.push(a.text)
    return a
  }
  const enrollBody = (over: Record<string, unknown> = {}) => JSON.stringify({
    user: 'alice', password: PASSWORD, appId: 'mail', appVersion: '1.0.0', deviceId: 'hostile-1',
    devicePublicKey: generateEcdhKeyPair().publicKey.toString('base64url'), ...over,
  })
  const openBody = (o: { enrollmentId?: string; key?: Buffer; timestamp?: number; nonce?: Buffer } = {}) => {
    const enrollmentId = o.enrollmentId ?? dev.enrollmentState!.enrollmentId
    const timestamp = o.timestamp ?? Date.now()
    const nonce = o.nonce ?? randomBytes(16)
    const proof = sessionOpenProof(o.key ?? sharedKey, enrollmentId, timestamp, nonce)
    return JSON.stringify({ enrollmentId, timestamp, nonce: nonce.toString('base64url'), proof: proof.toString('base64url') })
  }

  beforeAll(async () => {
    stack = await startStack()
    agent = new Agent({ connect: { ca: stack.ca } })
    dev = stack.device()
    await dev.enroll('alice', PASSWORD)
    sharedKey = Buffer.from(dev.enrollmentState!.sharedKey, 'base64')
    keep(sharedKey)
  })
  afterAll(async () => {
    await agent?.close()
    await stack?.close()
  })

  it('answers a wrong password and an unknown user with the same 401 bytes', async () => {
    const wrong = await api('/v1/enroll', { body: enrollBody({ password: `${PASSWORD}!` }) })
    const unknown = await api('/v1/enroll', { body: enrollBody({ user: 'mallory' }) })
    const empty = await api('/v1/enroll', { body: enrollBody({ user: 'alice', password: ' ' }) })
    for (const a of [wrong, unknown, empty]) {
      expect(a.status).toBe(401)
      expect(a.text).toBe(INVALID_CREDENTIALS)
    }
    expect(wrong.headers['content-length']).toBe(unknown.headers['content-length'])
    // Control: the right password enrolls.
    const ok = await api('/v1/enroll', { body: enrollBody() })
    expect(ok.status).toBe(201)
  })

  it('refuses malformed enrollment requests with 400 GH_ERR_MALFORMED and stores nothing', async () => {
    const enrollmentsBefore = await stack.store.countActiveEnrollments()
    const point = (first: number, fill: number, n = 65) => { const b = Buffer.alloc(n, fill); b[0] = first; return b.toString('base64url') }
    const cases: [string, string][] = [
      ['not JSON', '{"user":'],
      ['text', 'hello'],
      ['empty', ''],
      ['array', '[1,2,3]'],
      ['string', '"alice"'],
      ['null', 'null'],
      ['number', '42'],
      ['empty object', '{}'],
      ['no password', JSON.stringify({ ...JSON.parse(enrollBody()), password: undefined })],
      ['no key', JSON.stringify({ ...JSON.parse(enrollBody()), devicePublicKey: undefined })],
      ['user not a string', enrollBody({ user: 42 })],
      ['password null', enrollBody({ password: null })],
      ['password object', enrollBody({ password: { $ne: '' } })],
      ['long user', enrollBody({ user: 'a'.repeat(257) })],
      ['long password', enrollBody({ password: 'p'.repeat(1025) })],
      ['long appId', enrollBody({ appId: 'm'.repeat(129) })],
      ['long appVersion', enrollBody({ appVersion: '1'.repeat(33) })],
      ['long deviceId', enrollBody({ deviceId: 'd'.repeat(129) })],
      ['long key', enrollBody({ devicePublicKey: 'A'.repeat(101) })],
      ['appId charset', enrollBody({ appId: 'mail app' })],
      ['deviceId charset', enrollBody({ deviceId: '../etc' })],
      ['appVersion charset', enrollBody({ appVersion: '1.0 beta' })],
      ['key not base64url', enrollBody({ devicePublicKey: '!'.repeat(87) })],
      ['key 64 bytes', enrollBody({ devicePublicKey: point(0x04, 1, 64) })],
      ['key compressed', enrollBody({ devicePublicKey: point(0x02, 1, 33) })],
      ['key 65 bytes, not 0x04', enrollBody({ devicePublicKey: point(0x05, 1) })],
      ['key not on the curve', enrollBody({ devicePublicKey: point(0x04, 1) })],
      ['key all zero', enrollBody({ devicePublicKey: point(0x04, 0) })],
    ]
    for (const [name, body] of cases) {
      const a = await api('/v1/enroll', { body })
      expect({ name, status: a.status, code: a.code }).toEqual({ name, status: 400, code: 'GH_ERR_MALFORMED' })
    }
    expect(await stack.store.countActiveEnrollments()).toBe(enrollmentsBefore)
  })

  it('refuses other media types (415), big bodies (413), unknown paths (404) and wrong methods (405)', async () => {
    for (const contentType of ['text/plain', 'application/x-www-form-urlencoded', 'application/jsonp', null]) {
      const a = await api('/v1/enroll', { body: enrollBody(), contentType })
      expect({ contentType, status: a.status, code: a.code }).toEqual({ contentType, status: 415, code: 'GH_ERR_MEDIA_TYPE' })
    }
    const big = await api('/v1/enroll', { body: enrollBody({ password: 'p'.repeat(20_000) }) })
    expect([big.status, big.code]).toEqual([413, 'GH_ERR_TOO_LARGE'])
    // No length announced: the limit holds while the body streams in.
    async function* chunks() { for (let i = 0; i < 40; i++) yield Buffer.from(`${i === 0 ? '{"user":"' : ''}${'a'.repeat(1024)}`) }
    const streamed = await sendRaw(agent, stack.securityUrl, '/v1/enroll', { headers: { 'content-type': 'application/json' }, body: chunks() })
    errorBodies.push(streamed.text)
    expect([streamed.status, streamed.code]).toEqual([413, 'GH_ERR_TOO_LARGE'])
    // The proxy-only validation route is not on the device listener.
    for (const path of ['/', '/v1', '/v1/enroll/', '/v1/nothing', '/v1/sessions/validate', '/metrics']) {
      const a = await api(path, { body: '{}' })
      expect({ path, status: a.status, code: a.code }).toEqual({ path, status: 404, code: 'GH_ERR_NOT_FOUND' })
    }
    for (const [method, path] of [['GET', '/v1/enroll'], ['PUT', '/v1/sessions'], ['DELETE', '/v1/sessions/close'], ['GET', '/v1/sessions']]) {
      const a = await api(path!, { method, body: method === 'GET' ? undefined : '{}' })
      expect({ method, path, status: a.status, code: a.code }).toEqual({ method, path, status: 405, code: 'GH_ERR_METHOD_NOT_ALLOWED' })
      expect(a.headers.allow).toBe('POST')
    }
    // Still serving.
    expect((await api('/v1/sessions', { body: openBody() })).status).toBe(201)
  })

  it('refuses forged, unknown, replayed and stale session opens', async () => {
    // Forged proof (wrong key), unknown enrollment and revoked enrollment: the same 401 bytes, so
    // a caller cannot tell whether an enrollment id exists.
    const forged = await api('/v1/sessions', { body: openBody({ key: randomBytes(32) }) })
    const unknown = await api('/v1/sessions', { body: openBody({ enrollmentId: randomUUID() }) })
    const other = stack.device()
    const otherEnrollment = await other.enroll('alice', PASSWORD)
    keep(Buffer.from(otherEnrollment.sharedKey, 'base64'))
    await stack.store.revokeEnrollment(otherEnrollment.enrollmentId)
    const revoked = await api('/v1/sessions', { body: openBody({ enrollmentId: otherEnrollment.enrollmentId, key: Buffer.from(otherEnrollment.sharedKey, 'base64') }) })
    for (const a of [forged, unknown, revoked]) expect([a.status, a.code]).toEqual([401, 'GH_ERR_ENROLLMENT_INVALID'])
    expect(new Set([forged.text, unknown.text, revoked.text]).size).toBe(1)

    const body = openBody()
    const first = await api('/v1/sessions', { body })
    const replay = await api('/v1/sessions', { body })
    expect(first.status).toBe(201)
    const opened = JSON.parse(first.text) as { sessionId: string }
    secrets.add(opened.sessionId)
    expect([replay.status, replay.code]).toEqual([409, 'GH_ERR_REPLAY'])

    for (const timestamp of [Date.now() - 600_000, Date.now() + 600_000]) {
      const stale = await api('/v1/sessions', { body: openBody({ timestamp }) })
      expect([stale.status, stale.code]).toEqual([409, 'GH_ERR_STALE'])
    }
    // A stale open with a forged proof learns nothing about the clock: the proof is checked first.
    const staleForged = await api('/v1/sessions', { body: openBody({ timestamp: Date.now() - 600_000, key: randomBytes(32) }) })
    expect([staleForged.status, staleForged.code]).toEqual([401, 'GH_ERR_ENROLLMENT_INVALID'])

    for (const [name, b] of [
      ['short nonce', JSON.stringify({ ...JSON.parse(openBody()), nonce: randomBytes(8).toString('base64url') })],
      ['timestamp string', JSON.stringify({ ...JSON.parse(openBody()), timestamp: String(Date.now()) })],
      ['long enrollmentId', openBody({ enrollmentId: 'e'.repeat(65) })],
      ['proof hex', JSON.stringify({ ...JSON.parse(openBody()), proof: randomBytes(32).toString('hex') })],
    ] as const) {
      const a = await api('/v1/sessions', { body: b })
      expect({ name, status: a.status, code: a.code }).toEqual({ name, status: 400, code: 'GH_ERR_MALFORMED' })
    }
  })

  it('refuses session closes with a bad proof or an unknown session', async () => {
    const s = await dev.openSession()
    secrets.add(s.sessionId)
    keep(Buffer.from(s.c2s))
    keep(Buffer.from(s.s2c))
    const timestamp = Date.now()
    const bad = await api('/v1/sessions/close', { body: JSON.stringify({ sessionId: s.sessionId, timestamp, proof: randomBytes(32).toString('base64url') }) })
    expect([bad.status, bad.code]).toEqual([401, 'GH_ERR_PROOF'])
    const unknownId = randomBytes(16).toString('base64url')
    const unknown = await api('/v1/sessions/close', { body: JSON.stringify({ sessionId: unknownId, timestamp, proof: sessionCloseProof(s.c2s, unknownId, timestamp).toString('base64url') }) })
    expect([unknown.status, unknown.code]).toEqual([401, 'GH_ERR_SESSION_INVALID'])
    // Control: the real close works once, then the session is gone.
    const good = JSON.stringify({ sessionId: s.sessionId, timestamp, proof: sessionCloseProof(s.c2s, s.sessionId, timestamp).toString('base64url') })
    expect((await api('/v1/sessions/close', { body: good })).status).toBe(204)
    const again = await api('/v1/sessions/close', { body: good })
    expect([again.status, again.code]).toEqual([401, 'GH_ERR_SESSION_INVALID'])
  })

  it('refuses the proxy API at the TLS handshake without a client certificate or with a foreign one', async () => {
    const port = stack.security.ports.proxyApi
    const url = `https://localhost:${port}`
    const body = JSON.stringify({ sessionId: 'A'.repeat(22) })
    const headers = { 'content-type': 'application/json' }
    // Control: with the proxy's client certificate the API answers.
    const proxyAgent = new Agent({ connect: { ca: stack.ca, cert: readFileSync(stack.pki.clientCert), key: readFileSync(stack.pki.clientKey) } })
    const foreignPki = await makeTestPki()
    const foreignAgent = new Agent({ connect: { ca: stack.ca, cert: readFileSync(foreignPki.clientCert), key: readFileSync(foreignPki.clientKey) } })
    const bareAgent = new Agent({ connect: { ca: stack.ca } })
    try {
      const ok = await sendRaw(proxyAgent, url, '/v1/sessions/validate', { headers, body })
      expect([ok.status, ok.code]).toEqual([401, 'GH_ERR_SESSION_INVALID'])

      for (const [name, agentX] of [['no certificate', bareAgent], ['foreign CA', foreignAgent]] as const) {
        const err = await sendRaw(agentX, url, '/v1/sessions/validate', { headers, body }).then(
          (a) => new Error(`${name}: got an HTTP answer ${a.status}`),
          (e: unknown) => e as Error & { code?: string },
        )
        expect(err.message).not.toMatch(/got an HTTP answer/)
        expect(err).toHaveProperty('code')
      }
      // Byte level: the connection dies in the handshake and not one byte of HTTP comes back. Without
      // a certificate OpenSSL sends an alert; a certificate from another CA is dropped by Node.
      const request = `POST /v1/sessions/validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`
      const bare = await rawTls(port, { ca: stack.ca, writes: [request], waitMs: 2000 })
      expect(bare.text).toBe('')
      expect(bare.closedByServer).toBe(true)
      expect(bare.error?.code).toBe('ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED')
      const foreign = await rawTls(port, { ca: stack.ca, cert: readFileSync(foreignPki.clientCert), key: readFileSync(foreignPki.clientKey), writes: [request], waitMs: 2000 })
      expect(foreign.text).toBe('')
      expect(foreign.closedByServer).toBe(true)
      // Control for the byte-level check: the proxy's own certificate gets an HTTP answer.
      const good = await rawTls(port, { ca: stack.ca, cert: readFileSync(stack.pki.clientCert), key: readFileSync(stack.pki.clientKey), writes: [request], waitMs: 500 })
      expect(good.status).toBe(401)
    } finally {
      await Promise.all([proxyAgent.close(), foreignAgent.close(), bareAgent.close()])
      foreignPki.cleanup()
    }
  })

  it('logged, answered and stored no secret and no stack trace', async () => {
    const logs = stack.logs.text
    expect(stack.logs.lines.length).toBeGreaterThan(20)
    expect(secrets.size).toBeGreaterThanOrEqual(11)
    for (const v of [PASSWORD, ...secrets]) expect(logs.toLowerCase().includes(v.toLowerCase()), `log contains a secret (${v.length} chars)`).toBe(false)
    expect(logs).not.toMatch(/(^|\\n|\n)\s+at /)
    expect(errorBodies.length).toBeGreaterThan(40)
    for (const b of errorBodies) {
      expect(b).toMatch(/^\{"error":\{"code":"GH_ERR_[A-Z_]+","message":"[^"]*"\}\}$/)
      expect(b.includes(PASSWORD)).toBe(false)
      for (const v of secrets) expect(b.includes(v)).toBe(false)
    }
    // At rest: the shared key is sealed and sessions are stored by hash.
    const files = [stack.dbPath, `${stack.dbPath}-wal`].filter((f) => existsSync(f))
    expect(files.length).toBeGreaterThanOrEqual(1)
    const raw = Buffer.concat(files.map((f) => readFileSync(f)))
    expect(raw.length).toBeGreaterThan(4096)
    expect(raw.includes(Buffer.from('alice'))).toBe(true) // control: the file is readable as bytes
    for (const b of secretBytes) expect(raw.includes(b)).toBe(false)
    for (const v of [PASSWORD, ...secrets]) expect(raw.includes(Buffer.from(v))).toBe(false)
  })
})
