/**
 * The proxy under pressure, through the real server over real TLS: bodies over the limit, dead or
 * slow upstreams, an unreachable security server, clients that vanish mid-request, and a burst of
 * requests for one uncached session (one validation call, not one per request).
 */
import { readFileSync } from 'node:fs'
import { connect as tcpConnect } from 'node:net'
import { Agent } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { GatehouseDevice } from '../../src/client/device.js'
import { ENVELOPE_MEDIA_TYPE, SESSION_HEADER } from '../../src/protocol/constants.js'
import {
  closedPort, counterValue, EnvelopeCrafter, PASSWORD, rawTls, startCountingUpstream, startRelay, startStack,
  type CountingUpstream, type Stack,
} from '../helpers/stack.js'

const CP_CALLS = 'gatehouse_proxy_control_plane_requests_total'
const MISSES = 'gatehouse_proxy_session_cache_misses_total'

describe('proxy: limits, failures and resilience', () => {
  let stack: Stack
  let up: CountingUpstream
  let agent: Agent
  let dev: GatehouseDevice
  let cr: EnvelopeCrafter

  const head = (target: string, sid: string, extra: string) =>
    `POST ${target} HTTP/1.1\r\nhost: localhost\r\n${SESSION_HEADER}: ${sid}\r\ncontent-type: ${ENVELOPE_MEDIA_TYPE}\r\n${extra}\r\n`

  beforeAll(async () => {
    up = await startCountingUpstream()
    stack = await startStack({ routes: [{ prefix: '/c/', upstream: up.url, stripPrefix: true, timeoutSeconds: 5 }] })
    agent = new Agent({ connect: { ca: stack.ca } })
    dev = stack.device()
    await dev.enroll('alice', PASSWORD)
    cr = new EnvelopeCrafter(dev, agent, () => stack.proxy.port)
  })
  afterAll(async () => {
    await agent?.close()
    await stack?.close()
    await up?.close()
  })

  it('refuses bodies over limits.maxBodyBytes with 413 GH_ERR_TOO_LARGE and keeps serving', async () => {
    const p = await stack.startProxy({ limits: { maxBodyBytes: 4096, maxResponseBytes: 1 << 20 } })
    const s = await cr.freshSession()
    const before = up.hits

    // Declared length over the limit: refused before the body is read, connection closed.
    const declared = await rawTls(p.port, { ca: stack.ca, writes: [head('/c/echo', s.sessionId, 'content-length: 100000\r\n'), Buffer.alloc(1000)] })
    expect(declared.status).toBe(413)
    expect(JSON.parse(declared.body)).toMatchObject({ error: { code: 'GH_ERR_TOO_LARGE' } })
    expect(declared.closedByServer).toBe(true)

    // A correctly sealed envelope that is simply too big.
    const big = await cr.call(s, 'POST', '/c/echo', { port: p.port, body: 'x'.repeat(5000) })
    expect([big.status, big.code]).toEqual([413, 'GH_ERR_TOO_LARGE'])

    // Chunked: no length announced, the body grows past the limit while it streams.
    const chunk = Buffer.alloc(1024, 0x47)
    const chunked = await rawTls(p.port, {
      ca: stack.ca,
      writes: [head('/c/echo', s.sessionId, 'transfer-encoding: chunked\r\n'), ...Array.from({ length: 8 }, () => Buffer.concat([Buffer.from('400\r\n'), chunk, Buffer.from('\r\n')]))],
    })
    expect(chunked.status).toBe(413)
    expect(JSON.parse(chunked.body)).toMatchObject({ error: { code: 'GH_ERR_TOO_LARGE' } })

    expect(up.hits).toBe(before)
    // The next request, on a new connection, is served.
    const ok = await cr.call(s, 'POST', '/c/echo', { port: p.port, body: 'y'.repeat(1000) })
    expect([ok.status, ok.inner]).toEqual([200, 200])
    expect(up.hits).toBe(before + 1)
  })

  it('answers 502 GH_ERR_UPSTREAM for a dead upstream and 504 GH_ERR_UPSTREAM_TIMEOUT for a slow one', async () => {
    const dead = await closedPort()
    const p = await stack.startProxy({
      routes: [
        { prefix: '/down/', upstream: `http://127.0.0.1:${dead}`, stripPrefix: true, timeoutSeconds: 5 },
        { prefix: '/demo/', upstream: `http://127.0.0.1:${stack.upstream.port}`, stripPrefix: true, timeoutSeconds: 1 },
      ],
    })
    const s = await cr.freshSession()
    const down = await cr.call(s, 'GET', '/down/hello', { port: p.port })
    expect([down.status, down.code]).toEqual([502, 'GH_ERR_UPSTREAM'])
    const t0 = Date.now()
    const slow = await cr.call(s, 'GET', '/demo/slow?ms=4000', { port: p.port })
    const took = Date.now() - t0
    expect([slow.status, slow.code]).toEqual([504, 'GH_ERR_UPSTREAM_TIMEOUT'])
    expect(took).toBeGreaterThanOrEqual(900)
    expect(took).toBeLessThan(3000)
    const ok = await cr.call(s, 'GET', '/demo/hello', { port: p.port })
    expect([ok.status, ok.inner]).toEqual([200, 200])
    expect(await counterValue(p.registry, 'gatehouse_proxy_upstream_errors_total', { route: '/down/', kind: 'GH_ERR_UPSTREAM' })).toBe(1)
    expect(await counterValue(p.registry, 'gatehouse_proxy_upstream_errors_total', { route: '/demo/', kind: 'GH_ERR_UPSTREAM_TIMEOUT' })).toBe(1)
  })

  it('answers 503 (not 401) for uncached sessions while the security server is unreachable, and serves cached ones', async () => {
    const relay = await startRelay(stack.security.ports.proxyApi)
    const p = await stack.startProxy({
      controlPlane: {
        servers: [`https://localhost:${relay.port}`],
        tls: { cert: readFileSync(stack.pki.clientCert), key: readFileSync(stack.pki.clientKey), ca: stack.ca },
        timeoutMs: 1000,
      },
    })
    const cached = await cr.freshSession()
    expect((await cr.call(cached, 'GET', '/c/hello', { port: p.port })).status).toBe(200)
    const uncached = await cr.freshSession()
    await relay.cut()
    const before = up.hits

    const a = await cr.call(uncached, 'GET', '/c/hello', { port: p.port })
    expect([a.status, a.code]).toEqual([503, 'GH_ERR_CONTROL_PLANE_UNAVAILABLE'])
    expect(a.headers['retry-after']).toBe('5')
    // Even an id the security server would refuse: we cannot know, so 503, not 401.
    const junk = await cr.post('/c/hello', { method: 'GET', sid: 'A'.repeat(22), body: cr.seal(uncached, 'GET', '/c/hello').bytes, port: p.port })
    expect([junk.status, junk.code]).toEqual([503, 'GH_ERR_CONTROL_PLANE_UNAVAILABLE'])
    expect(up.hits).toBe(before)

    const b = await cr.call(cached, 'GET', '/c/hello', { port: p.port })
    expect([b.status, b.inner]).toEqual([200, 200])
    // Still up: the uncached session keeps getting a clean 503, the cached one 200.
    expect((await cr.call(uncached, 'GET', '/c/hello', { port: p.port })).status).toBe(503)
    expect((await cr.call(cached, 'GET', '/c/hello', { port: p.port })).status).toBe(200)
    expect(up.hits).toBe(before + 2)
    expect(await counterValue(p.registry, CP_CALLS, { result: 'unavailable' })).toBeGreaterThanOrEqual(2)

    // A proxy whose only security server was never there: 503 for every session, and it stays up.
    const nowhere = await closedPort()
    const lonely = await stack.startProxy({
      controlPlane: { servers: [`https://localhost:${nowhere}`], tls: { cert: readFileSync(stack.pki.clientCert), key: readFileSync(stack.pki.clientKey), ca: stack.ca }, timeoutMs: 1000 },
    })
    for (let i = 0; i < 2; i++) {
      const c = await cr.call(cached, 'GET', '/c/hello', { port: lonely.port })
      expect([c.status, c.code]).toEqual([503, 'GH_ERR_CONTROL_PLANE_UNAVAILABLE'])
    }
    expect(up.hits).toBe(before + 2)
  })

  it('survives clients that vanish mid-body, mid-headers, mid-handshake or speak plain HTTP', async () => {
    const p = await stack.startProxy()
    const s = await cr.freshSession()
    const before = up.hits
    const e = cr.seal(s, 'POST', '/c/echo', { body: 'z'.repeat(2000) })
    // Mid-body: a full head, then part of the announced body, then gone.
    await rawTls(p.port, { ca: stack.ca, writes: [head('/c/echo', s.sessionId, `content-length: ${e.bytes.length}\r\n`), e.bytes.subarray(0, 300)], destroy: true })
    // Half of the headers, then gone.
    await rawTls(p.port, { ca: stack.ca, writes: [`POST /c/echo HTTP/1.1\r\nhost: localhost\r\n${SESSION_HEADER}: ${s.sessionId.slice(0, 10)}`], destroy: true })
    // Handshake only.
    await rawTls(p.port, { ca: stack.ca, writes: [], destroy: true })
    // Plain HTTP to the TLS port.
    await new Promise<void>((resolve) => {
      const sock = tcpConnect(p.port, '127.0.0.1', () => sock.write('GET /c/hello HTTP/1.1\r\nhost: x\r\n\r\n', () => { sock.destroy(); resolve() }))
      sock.on('error', () => resolve())
    })
    await new Promise((r) => setTimeout(r, 300))
    // Nothing reached the upstream, and the next request is served.
    expect(up.hits).toBe(before)
    const ok = await cr.call(s, 'POST', '/c/echo', { port: p.port, body: 'fine' })
    expect([ok.status, ok.inner]).toEqual([200, 200])
    // The request abandoned mid-body is accounted for (499, client closed the request).
    expect(await counterValue(p.registry, 'gatehouse_proxy_requests_total', { status: '499' })).toBe(1)
    // An abandoned request must not count as in flight for ever: shutdown does not wait for it.
    const t0 = Date.now()
    await stack.stopProxy(p, 3000)
    expect(Date.now() - t0).toBeLessThan(1500)
  })

  it('coalesces concurrent lookups of one uncached session into one validation call', async () => {
    // The link to the security server is held until every request has missed the cache, so the
    // misses really are concurrent; then it is released and must carry exactly one validation.
    const relay = await startRelay(stack.security.ports.proxyApi)
    const p = await stack.startProxy({
      controlPlane: {
        servers: [`https://localhost:${relay.port}`],
        tls: { cert: readFileSync(stack.pki.clientCert), key: readFileSync(stack.pki.clientKey), ca: stack.ca },
        timeoutMs: 5000,
      },
    })
    const s = await cr.freshSession()
    const validationsBefore = await counterValue(stack.security.registry, 'gatehouse_security_validations_total')
    const before = up.hits
    const n = 24
    relay.hold()
    const pending = Promise.all(Array.from({ length: n }, (_, i) => cr.call(s, 'GET', `/c/hello?i=${i}`, { seq: i + 1, port: p.port })))
    const deadline = Date.now() + 4000
    while (await counterValue(p.registry, MISSES) < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    expect(await counterValue(p.registry, MISSES)).toBe(n)
    relay.release()
    const answers = await pending
    expect(answers.map((a) => a.status)).toEqual(Array(n).fill(200))
    expect(await counterValue(p.registry, CP_CALLS)).toBe(1)
    expect(await counterValue(p.registry, CP_CALLS, { result: 'valid' })).toBe(1)
    expect(await counterValue(stack.security.registry, 'gatehouse_security_validations_total') - validationsBefore).toBe(1)
    expect(up.hits).toBe(before + n)
    // Later requests are cache hits: still one call.
    expect((await cr.call(s, 'GET', '/c/hello', { port: p.port })).status).toBe(200)
    expect(await counterValue(p.registry, CP_CALLS)).toBe(1)
    await relay.cut()
  })

  it('logged and answered no secret and no stack trace', async () => {
    const { secrets, errorBodies } = cr
    const logs = stack.logs.text
    expect(secrets.size).toBeGreaterThan(10)
    for (const v of [PASSWORD, ...secrets]) expect(logs.toLowerCase().includes(v.toLowerCase()), `log contains a secret (${v.length} chars)`).toBe(false)
    expect(logs).not.toMatch(/(^|\\n|\n)\s+at /)
    expect(errorBodies.length).toBeGreaterThan(3)
    for (const b of errorBodies) {
      expect(b).toMatch(/^\{"error":\{"code":"GH_ERR_[A-Z_]+","message":"[^"]*"\}\}$/)
      for (const v of secrets) expect(b.includes(v)).toBe(false)
    }
  })
})
