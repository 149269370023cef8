/**
 * The proxy's admin endpoint over real HTTP: Prometheus metrics after real traffic (with bounded,
 * secret-free labels), liveness, readiness, and readiness while draining.
 */
import { Agent, request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { GatehouseDevice } from '../../src/client/device.js'
import { closedPort, EnvelopeCrafter, PASSWORD, startCountingUpstream, startStack, type CountingUpstream, type Stack } from '../helpers/stack.js'

async function admin(port: number, path: string, method = 'GET') {
  const res = await request(`http://127.0.0.1:${port}${path}`, { method: method as 'GET' })
  return { status: res.statusCode, type: String(res.headers['content-type'] ?? ''), text: await res.body.text() }
}

/** Every label value in a Prometheus text exposition. */
function labelValues(text: string): Set<string> {
  const out = new Set<string>()
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue
    const m = /^[a-zA-Z_:][a-zA-Z0-9_:]*\{(.*)\} /.exec(line)
    if (!m) continue
    for (const l of m[1]!.matchAll(/[a-zA-Z_][a-zA-Z0-9_]*="((?:[^"\\]|\\.)*)"/g)) out.add(l[1]!)
  }
  return out
}

/** Value of the first sample of `name` whose labels include all of `labels`. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return undefined
}

describe('proxy admin endpoint', () => {
  let stack: Stack
  let up: CountingUpstream
  let agent: Agent
  let dev: GatehouseDevice
  let cr: EnvelopeCrafter

  beforeAll(async () => {
    up = await startCountingUpstream()
    const dead = await closedPort()
    stack = await startStack({
      routes: [
        { prefix: '/c/', upstream: up.url, stripPrefix: true, timeoutSeconds: 5 },
        { prefix: '/down/', upstream: `http://127.0.0.1:${dead}`, stripPrefix: true, timeoutSeconds: 5 },
      ],
    })
    agent = new Agent({ connect: { ca: stack.ca } })
    dev = await stack.enrolledDevice()
    cr = new EnvelopeCrafter(dev, agent, () => stack.proxy.port)
  })
  afterAll(async () => {
    await agent?.close()
    await stack?.close()
    await up?.close()
  })

  it('exposes request, cache, control-plane, decrypt, upstream and process metrics without ids in labels', async () => {
    for (let i = 0; i < 3; i++) expect((await dev.request('GET', '/c/hello')).status).toBe(200)
    await expect(dev.request('GET', '/down/hello')).rejects.toMatchObject({ status: 502, code: 'GH_ERR_UPSTREAM' })
    await expect(dev.request('GET', '/nowhere')).rejects.toMatchObject({ status: 404, code: 'GH_ERR_NOT_FOUND' })
    const s = await cr.freshSession()
    const tampered = Buffer.from(cr.seal(s, 'GET', '/c/hello').bytes)
    tampered[tampered.length - 1] = tampered[tampered.length - 1]! ^ 1
    expect((await cr.post('/c/hello', { method: 'GET', sid: s.sessionId, body: tampered })).code).toBe('GH_ERR_DECRYPT')

    const m = await admin(stack.proxy.adminPort, '/metrics')
    expect(m.status).toBe(200)
    expect(m.type).toMatch(/^text\/plain/)
    for (const name of [
      'gatehouse_proxy_requests_total', 'gatehouse_proxy_request_duration_seconds_bucket', 'gatehouse_proxy_session_cache_hits_total',
      'gatehouse_proxy_session_cache_misses_total', 'gatehouse_proxy_control_plane_requests_total', 'gatehouse_proxy_decrypt_failures_total',
      'gatehouse_proxy_upstream_errors_total', 'gatehouse_process_cpu_seconds_total',
    ]) expect(m.text, name).toMatch(new RegExp(`^${name}(\\{[^}]*\\})? [0-9.e+-]+$`, 'm'))

    expect(sample(m.text, 'gatehouse_proxy_requests_total', { route: '/c/', method: 'GET', status: '200' })).toBe(3)
    expect(sample(m.text, 'gatehouse_proxy_requests_total', { route: '/down/', status: '502' })).toBe(1)
    expect(sample(m.text, 'gatehouse_proxy_requests_total', { route: 'unmatched', status: '404' })).toBe(1)
    expect(sample(m.text, 'gatehouse_proxy_request_duration_seconds_count', { route: '/c/' })).toBe(4)
    expect(sample(m.text, 'gatehouse_proxy_session_cache_hits_total')).toBeGreaterThanOrEqual(2)
    expect(sample(m.text, 'gatehouse_proxy_session_cache_misses_total')).toBeGreaterThanOrEqual(2)
    expect(sample(m.text, 'gatehouse_proxy_control_plane_requests_total', { result: 'valid' })).toBe(2)
    expect(sample(m.text, 'gatehouse_proxy_decrypt_failures_total', { reason: 'auth' })).toBe(1)
    expect(sample(m.text, 'gatehouse_proxy_upstream_errors_total', { route: '/down/', kind: 'GH_ERR_UPSTREAM' })).toBe(1)
    expect(sample(m.text, 'gatehouse_process_cpu_seconds_total')).toBeGreaterThan(0)

    const values = labelValues(m.text)
    expect(values.has('/c/')).toBe(true) // control: the parser sees label values
    const ids = [dev.sessionId!, s.sessionId, 'alice', dev.enrollmentState!.enrollmentId, dev.enrollmentState!.deviceId]
    for (const id of ids) expect(values.has(id), `label value ${id}`).toBe(false)
    for (const id of [dev.sessionId!, s.sessionId, dev.enrollmentState!.enrollmentId]) expect(m.text.includes(id)).toBe(false)
  })

  it('answers /healthz and /readyz with 200, refuses other methods and paths', async () => {
    const h = await admin(stack.proxy.adminPort, '/healthz')
    expect([h.status, JSON.parse(h.text)]).toEqual([200, { status: 'ok' }])
    const r = await admin(stack.proxy.adminPort, '/readyz')
    expect([r.status, JSON.parse(r.text)]).toEqual([200, { status: 'ready' }])
    expect((await admin(stack.proxy.adminPort, '/metrics', 'POST')).status).toBe(405)
    const nf = await admin(stack.proxy.adminPort, '/nothing')
    expect([nf.status, JSON.parse(nf.text).error.code]).toEqual([404, 'GH_ERR_NOT_FOUND'])
  })

  it('reports not ready while draining, and lets the in-flight request finish', async () => {
    const p = await stack.startProxy()
    const s = await cr.freshSession()
    const inflight = cr.call(s, 'GET', '/c/slow?ms=800', { port: p.port })
    const deadline = Date.now() + 3000
    while (!up.paths.includes('/slow?ms=800') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    expect(up.paths).toContain('/slow?ms=800')
    const closing = stack.stopProxy(p, 5000)
    const r = await admin(p.adminPort, '/readyz')
    expect([r.status, JSON.parse(r.text)]).toEqual([503, { status: 'not ready', reasons: ['draining'] }])
    const done = await inflight
    expect([done.status, done.inner]).toEqual([200, 200])
    await closing
    await expect(admin(p.adminPort, '/healthz')).rejects.toThrow()
  })

  it('keeps secrets out of the log', () => {
    const logs = stack.logs.text
    for (const v of [PASSWORD, ...cr.secrets]) expect(logs.toLowerCase().includes(v.toLowerCase())).toBe(false)
    expect(logs).not.toMatch(/(^|\\n|\n)\s+at /)
  })
})
