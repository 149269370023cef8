/**
 * The proxy's operations on real `gatehouse start` processes, the way an operator drives them:
 *
 * - SIGTERM under load: 50 slow requests in flight all complete with 200; /readyz turns 503
 *   first, then new connections are refused; the process exits 0 within proxy.drainSeconds. A
 *   request still running when the window ends is cut, and the process still exits 0 on time.
 * - SIGHUP: a new certificate on disk is served to new connections while an established
 *   keep-alive connection goes on; a bad certificate or an invalid config is refused with the
 *   option path in the log, the previous certificate stays, the process lives on; the reloads
 *   are counted. With one event-loop thread and with worker threads.
 */
import { X509Certificate } from 'node:crypto'
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs'
import { connect as tcpConnect } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { Client } from 'undici'
import { afterEach, describe, expect, it } from 'vitest'
import { parse as parseYaml } from 'yaml'
import { GatehouseDevice } from '../../src/client/device.js'
import { issuePki } from '../../src/pki/issue.js'
import { EnvelopeCrafter } from '../helpers/stack.js'
import { freePorts, httpGet, metricSample, Sandbox, type GatehouseProcess } from './helpers.js'

interface Ports { device: number; proxyApi: number; secAdmin: number; proxy: number; proxyAdmin: number; upstream: number }

/** `gatehouse start` in a fresh sandbox with `proxy` options; resolves once it is ready. */
async function startGatehouse(box: Sandbox, proxy: Record<string, unknown>, certs = 'certs'): Promise<{ gh: GatehouseProcess; ports: Ports }> {
  const [device, proxyApi, secAdmin, proxyPort, proxyAdmin, upstream] = await freePorts(6) as [number, number, number, number, number, number]
  const ports = { device, proxyApi, secAdmin, proxy: proxyPort, proxyAdmin, upstream }
  box.writeYaml('cfg.yaml', {
    certsDir: certs,
    security: { listen: { port: device }, proxyApi: { port: proxyApi }, admin: { port: secAdmin } },
    proxy: { listen: { port: proxyPort }, admin: { port: proxyAdmin }, ...proxy },
    demo: { upstream: { port: upstream } },
  })
  const gh = box.spawn(['start', '--config', 'cfg.yaml'])
  await gh.waitFor(/Gatehouse is ready/)
  return { gh, ports }
}

/** An enrolled demo-user device of the sandbox's Gatehouse. */
async function demoDevice(box: Sandbox, ports: Ports, connections = 8): Promise<GatehouseDevice> {
  const demo = JSON.parse(readFileSync(box.path('data/demo-user.json'), 'utf8')) as { user: string; password: string }
  const d = new GatehouseDevice({
    securityUrl: `https://localhost:${ports.device}`, ca: readFileSync(box.path('certs/ca.crt')), appId: 'app', appVersion: '1.0.0',
    deviceId: `lifecycle-${Math.random().toString(36).slice(2, 8)}`, proxyUrl: `https://localhost:${ports.proxy}`, connections,
  })
  await d.enroll(demo.user, demo.password)
  await d.openSession()
  return d
}

/** Resolves true once a TCP connection to `port` is refused (within `timeoutMs`), false otherwise. */
async function refusedWithin(port: number, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs
  while (performance.now() < deadline) {
    const refused = await new Promise<boolean>((resolve) => {
      const s = tcpConnect(port, '127.0.0.1')
      s.once('connect', () => { s.destroy(); resolve(false) })
      s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'))
    })
    if (refused) return true
    await new Promise((r) => setTimeout(r, 20))
  }
  return false
}

function peerFingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false }, () => {
      resolve(s.getPeerX509Certificate()!.fingerprint256)
      s.destroy()
    })
    s.once('error', reject)
  })
}

const fingerprint = (pem: string | Buffer) => new X509Certificate(pem).fingerprint256

describe('SIGTERM: drain under load', () => {
  let box: Sandbox
  const devices: GatehouseDevice[] = []
  afterEach(async () => {
    await Promise.all(devices.splice(0).map((d) => d.close().catch(() => undefined)))
    await box?.cleanup()
  })

  it('50 slow requests in flight all complete with 200; readiness fails first, then new connections are refused; exit 0 within drainSeconds', async () => {
    box = new Sandbox('gh-e2e-drain-')
    const DRAIN_SECONDS = 6
    const { gh, ports } = await startGatehouse(box, { drainSeconds: DRAIN_SECONDS, workers: 1 })
    const dev = await demoDevice(box, ports, 64)
    devices.push(dev)
    const inFlight = Array.from({ length: 50 }, () => dev.request('GET', '/demo/slow?ms=1500').then((r) => r.status, (e: Error) => e.message))
    const metrics = () => httpGet(`http://127.0.0.1:${ports.proxyAdmin}/metrics`).then((m) => metricSample(m.text, 'gatehouse_proxy_requests_in_flight'))
    await expect.poll(metrics, { timeout: 5000, interval: 50 }).toBe(50)

    const sigterm = performance.now()
    gh.signal('SIGTERM')
    await expect.poll(async () => (await httpGet(`http://127.0.0.1:${ports.proxyAdmin}/readyz`).catch(() => ({ status: 0 }))).status, { timeout: 2000, interval: 10 }).toBe(503)
    expect(await refusedWithin(ports.proxy, 1000), 'new connections refused once draining').toBe(true)
    const statuses = await Promise.all(inFlight)
    expect(statuses).toEqual(Array(50).fill(200))
    const exit = await gh.waitExit(DRAIN_SECONDS * 1000 + 3000)
    const exitedAfter = performance.now() - sigterm
    expect(exit, gh.describe()).toEqual({ code: 0, signal: null })
    expect(exitedAfter).toBeLessThan(DRAIN_SECONDS * 1000)
    console.log(`drain: 50 × /demo/slow?ms=1500 in flight at SIGTERM, all 200; exit 0 after ${Math.round(exitedAfter)} ms (window ${DRAIN_SECONDS} s)`)
  }, 60_000)

  it('a request still running when the drain window ends is cut, and the process exits 0 on time', async () => {
    box = new Sandbox('gh-e2e-cut-')
    const DRAIN_SECONDS = 2
    const { gh, ports } = await startGatehouse(box, { drainSeconds: DRAIN_SECONDS, workers: 1 })
    const dev = await demoDevice(box, ports)
    devices.push(dev)
    const long = dev.request('GET', '/demo/slow?ms=15000').then((r) => `status ${r.status}`, (e: Error & { code?: string }) => `error ${e.code ?? e.message}`)
    await expect.poll(() => httpGet(`http://127.0.0.1:${ports.proxyAdmin}/metrics`).then((m) => metricSample(m.text, 'gatehouse_proxy_requests_in_flight')), { timeout: 5000 }).toBe(1)
    const sigterm = performance.now()
    gh.signal('SIGTERM')
    const outcome = await long
    const cutAfter = performance.now() - sigterm
    expect(outcome).toMatch(/^error /)
    expect(cutAfter).toBeGreaterThan(DRAIN_SECONDS * 1000 - 200)
    const exit = await gh.waitExit(5000)
    expect(exit, gh.describe()).toEqual({ code: 0, signal: null })
    expect(performance.now() - sigterm).toBeLessThan(DRAIN_SECONDS * 1000 + 2000)
    expect(gh.stdout).toContain('"event":"drain_cut"')
    console.log(`drain cut: a 15 s request cut ${Math.round(cutAfter)} ms after SIGTERM (window ${DRAIN_SECONDS} s): ${outcome}`)
  }, 60_000)
})

describe.each([1, 2])('SIGHUP: reload certificates and config (workers: %i)', (workers) => {
  let box: Sandbox
  const clients: Client[] = []
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.destroy()))
    await box?.cleanup()
  })

  it('serves a new certificate to new connections, keeps an established one, refuses bad ones and keeps serving', async () => {
    box = new Sandbox('gh-e2e-hup-')
    // The development PKI first, so that the proxy's own files can be copies we replace later.
    await box.run(['certs', 'init', '--dir', 'certs'])
    copyFileSync(box.path('certs/server.crt'), box.path('proxy.crt'))
    copyFileSync(box.path('certs/server.key'), box.path('proxy.key'))
    const proxyOptions = { workers, tls: { cert: 'proxy.crt', key: 'proxy.key' } }
    const { gh, ports } = await startGatehouse(box, proxyOptions)
    const oldCa = readFileSync(box.path('certs/ca.crt'))
    const next = await issuePki()
    const ca = [oldCa, Buffer.from(next.ca.cert)]
    const metric = async (result: string) => metricSample((await httpGet(`http://127.0.0.1:${ports.proxyAdmin}/metrics`)).text, 'gatehouse_proxy_config_reloads_total', { result })
    expect(await peerFingerprint(ports.proxy)).toBe(fingerprint(readFileSync(box.path('proxy.crt'))))

    // An established keep-alive connection with a request answered.
    const dev = await demoDevice(box, ports)
    const kept = new Client(`https://localhost:${ports.proxy}`, { connect: { ca }, keepAliveTimeout: 60_000 })
    clients.push(kept)
    let connects = 0
    kept.on('connect', () => { connects++ })
    const cr = new EnvelopeCrafter(dev, kept, () => ports.proxy)
    const keys = await cr.freshSession()
    let seq = 10
    const echo = async () => (await cr.call(keys, 'POST', '/demo/echo', { seq: ++seq, body: 'ping' })).inner
    expect(await echo()).toBe(200)

    // A new certificate on disk, then SIGHUP.
    writeFileSync(box.path('proxy.crt'), next.server.cert)
    writeFileSync(box.path('proxy.key'), next.server.key)
    gh.signal('SIGHUP')
    await gh.waitFor(/"event":"config_reloaded"/)
    // New connections (several: with worker threads, the kernel spreads them over the threads).
    for (let i = 0; i < 8; i++) expect(await peerFingerprint(ports.proxy)).toBe(fingerprint(next.server.cert))
    expect(await echo()).toBe(200)
    expect(connects, 'the established connection was kept').toBe(1)
    expect(await metric('success')).toBe(1)

    // A key that does not match the certificate: refused, the new certificate stays.
    writeFileSync(box.path('proxy.key'), readFileSync(box.path('certs/server.key')))
    gh.signal('SIGHUP')
    await gh.waitFor(/"event":"config_reload_failed".*proxy\.tls\.key does not match proxy\.tls\.cert/)
    expect(await peerFingerprint(ports.proxy)).toBe(fingerprint(next.server.cert))
    expect(await echo()).toBe(200)
    expect(await metric('failure')).toBe(1)

    // An invalid config: refused with the option path.
    writeFileSync(box.path('proxy.key'), next.server.key)
    const cfg = readConfig(box)
    box.writeYaml('cfg.yaml', { ...cfg, proxy: { ...(cfg.proxy as object), limits: { maxHeaderBytes: 10 } } })
    gh.signal('SIGHUP')
    await gh.waitFor(/"event":"config_reload_failed".*proxy\.limits\.maxHeaderBytes must be >= 1024, got 10/)
    expect(await metric('failure')).toBe(2)
    expect(gh.alive, gh.describe()).toBe(true)
    const fresh = new Client(`https://localhost:${ports.proxy}`, { connect: { ca } })
    clients.push(fresh)
    expect((await new EnvelopeCrafter(dev, fresh, () => ports.proxy).call(keys, 'POST', '/demo/echo', { seq: ++seq, body: 'ping' })).inner).toBe(200)
  }, 60_000)
})

/** The sandbox's cfg.yaml as written by startGatehouse. */
function readConfig(box: Sandbox): Record<string, unknown> {
  return parseYaml(readFileSync(box.path('cfg.yaml'), 'utf8')) as Record<string, unknown>
}
