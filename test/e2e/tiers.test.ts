/**
 * A real deployment's tiers as separate processes: `gatehouse security` and `gatehouse proxy`
 * sharing a PKI made by `gatehouse certs init`, an intranet upstream (here, in the test process),
 * a user added with `gatehouse users add`, and the device CLI. Then the security server dies:
 * cached sessions keep working through the proxy, new enrollments fail clearly, the proxy stays
 * up; the security server comes back and everything works again. SIGTERM drains the proxy.
 */
import { readFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { GatehouseDevice, type EnrollmentState } from '../../src/client/device.js'
import { freePorts, httpGet, metricSample, Sandbox, type GatehouseProcess } from './helpers.js'

const BOB_PASSWORD = 'bob-has-a-long-passphrase'
const DRAIN_SECONDS = 3

/** The intranet app: who is calling (headers set by the proxy), and an echo. */
function startUpstream(port: number): Promise<Server> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = JSON.stringify({
        path: req.url, method: req.method, user: req.headers['gatehouse-user'] ?? null,
        device: req.headers['gatehouse-device'] ?? null, body: Buffer.concat(chunks).toString('utf8'),
      })
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body)
    })
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve(server))
  })
}

describe('security server and proxy as separate processes', () => {
  let box: Sandbox
  let upstream: Server | undefined
  let device: GatehouseDevice | undefined
  let security: GatehouseProcess
  let proxy: GatehouseProcess
  let p: { device: number; proxyApi: number; secAdmin: number; proxy: number; proxyAdmin: number; upstream: number }
  const sec = '--config=sec.yaml'

  const startSecurity = async () => {
    const s = box.spawn(['security', '--config', 'sec.yaml'])
    await s.waitFor(/gatehouse security server ready/)
    return s
  }

  beforeAll(async () => {
    box = new Sandbox('gh-e2e-tiers-')
    const [device, proxyApi, secAdmin, proxyPort, proxyAdmin, up] = await freePorts(6) as [number, number, number, number, number, number]
    p = { device, proxyApi, secAdmin, proxy: proxyPort, proxyAdmin, upstream: up }
    upstream = await startUpstream(up)
    box.writeYaml('sec.yaml', {
      certsDir: 'certs',
      dataDir: 'sec-data',
      security: {
        listen: { port: device },
        proxyApi: { port: proxyApi },
        admin: { port: secAdmin },
        proxyUrl: `https://localhost:${proxyPort}`,
      },
    })
    box.writeYaml('proxy.yaml', {
      certsDir: 'certs',
      dataDir: 'proxy-data',
      proxy: {
        listen: { port: proxyPort },
        admin: { port: proxyAdmin },
        securityServers: [`https://localhost:${proxyApi}`],
        controlPlaneTimeoutMs: 1000,
        sessionCache: { ttlSeconds: 300 },
        routes: [{ prefix: '/app/', upstream: `http://127.0.0.1:${up}`, stripPrefix: true }],
      },
    })
  })

  afterAll(async () => {
    await device?.close().catch(() => undefined)
    await box?.cleanup()
    if (upstream) {
      const u = upstream
      await new Promise<void>((resolve) => { u.close(() => resolve()); u.closeAllConnections() })
    }
  })

  it('certs init, then security and proxy start from the shared PKI', async () => {
    const init = await box.run(['certs', 'init', '--dir', 'certs'])
    expect(init.code, init.stderr).toBe(0)
    ;[security, proxy] = await Promise.all([
      startSecurity(),
      (async () => {
        const x = box.spawn(['proxy', '--config', 'proxy.yaml', '--drain', String(DRAIN_SECONDS)])
        await x.waitFor(/gatehouse proxy ready/)
        return x
      })(),
    ])
    expect(security.stdout).not.toContain('created a development PKI')
    expect(proxy.stdout).not.toContain('created a development PKI')
  })

  it('a user added with `users add` enrolls and sends requests through the proxy', async () => {
    const add = await box.run(['users', 'add', 'bob', '--password-stdin', sec], { input: `${BOB_PASSWORD}\n` })
    expect(add.code, add.stderr).toBe(0)

    const enroll = await box.run(['device', 'enroll', '--user', 'bob', '--password-stdin', sec], { input: `${BOB_PASSWORD}\n` })
    expect(enroll.code, enroll.stderr).toBe(0)
    expect(enroll.stdout).toContain('for bob')

    const get = await box.run(['device', 'request', 'GET', '/app/whoami?x=1', sec])
    expect(get.code, get.stderr).toBe(0)
    expect(JSON.parse(get.stdout)).toMatchObject({ path: '/whoami?x=1', method: 'GET', user: 'bob' })

    const post = await box.run(['device', 'request', 'POST', '/app/echo', '--data', 'hello intranet', sec])
    expect(post.code, post.stderr).toBe(0)
    expect(JSON.parse(post.stdout)).toMatchObject({ path: '/echo', method: 'POST', user: 'bob', body: 'hello intranet' })
  })

  it('security server killed: a cached session still works, enrollment fails clearly, the proxy stays up', async () => {
    // A device app holding an open session (the CLI opens and closes one per command).
    const state = JSON.parse(readFileSync(box.path('sec-data', 'device.json'), 'utf8')) as EnrollmentState
    device = new GatehouseDevice({
      securityUrl: `https://localhost:${p.device}`, ca: readFileSync(box.path('certs', 'ca.crt')),
      appId: state.appId, appVersion: state.appVersion, deviceId: state.deviceId, enrollment: state,
    })
    const before = await device.request('GET', '/app/cached')
    expect(before.status).toBe(200)
    expect(before.json()).toMatchObject({ user: 'bob', path: '/cached' })

    security.signal('SIGKILL')
    expect((await security.waitExit(5000)).signal).toBe('SIGKILL')

    const after = await device.request('GET', '/app/cached-again')
    expect(after.status).toBe(200)
    expect(after.json()).toMatchObject({ user: 'bob', path: '/cached-again' })

    const enroll = await box.run(['device', 'enroll', '--user', 'bob', '--password-stdin', '--state', 'other-device.json', sec], { input: `${BOB_PASSWORD}\n` })
    expect(enroll.code).not.toBe(0)
    expect(enroll.stderr).toMatch(/cannot reach Gatehouse/)
    expect(enroll.stderr).not.toContain('    at ')
    expect(enroll.stderr).not.toContain(BOB_PASSWORD)

    expect(proxy.alive, proxy.describe()).toBe(true)
    expect((await httpGet(`http://127.0.0.1:${p.proxyAdmin}/healthz`)).status).toBe(200)
    const metrics = await httpGet(`http://127.0.0.1:${p.proxyAdmin}/metrics`)
    expect(metricSample(metrics.text, 'gatehouse_proxy_session_cache_hits_total')).toBeGreaterThanOrEqual(1)
  })

  it('security server restarted: enrollments made before still work, new ones too', async () => {
    security = await startSecurity()

    const get = await box.run(['device', 'request', 'GET', '/app/back', sec])
    expect(get.code, get.stderr).toBe(0)
    expect(JSON.parse(get.stdout)).toMatchObject({ user: 'bob', path: '/back' })

    const enroll = await box.run(['device', 'enroll', '--user', 'bob', '--password-stdin', '--state', 'other-device.json', sec], { input: `${BOB_PASSWORD}\n` })
    expect(enroll.code, enroll.stderr).toBe(0)
    const other = await box.run(['device', 'request', 'GET', '/app/other', '--state', 'other-device.json', sec])
    expect(other.code, other.stderr).toBe(0)
    expect(JSON.parse(other.stdout)).toMatchObject({ user: 'bob', path: '/other' })
  })

  it('SIGTERM drains the proxy: exit 0 within the drain window', async () => {
    await device?.close()
    device = undefined
    proxy.signal('SIGTERM')
    const exit = await proxy.waitExit(DRAIN_SECONDS * 1000 + 2000)
    expect(exit, proxy.describe()).toEqual({ code: 0, signal: null })
    expect(proxy.stderr).toBe('')

    security.signal('SIGTERM')
    expect(await security.waitExit(10_000)).toEqual({ code: 0, signal: null })
    for (const x of [proxy, security]) expect(x.stdout + x.stderr).not.toContain(BOB_PASSWORD)
  })
})
