/**
 * A proxy farm behind a real HAProxy, configured by config/haproxy.cfg as shipped (rendered for
 * loopback ports): two `gatehouse proxy` processes, a `gatehouse security` process, an upstream,
 * and devices (SDK) told the HAProxy URL by the security server.
 *
 *   (iii) one session always lands on the same proxy (per-proxy request counters in /metrics);
 *   (ii)  SIGTERM to a proxy under load: /readyz turns 503, HAProxy takes it out, it drains and
 *         exits; no request fails, GET or POST;
 *   (i)   kill -9 of a proxy under load: GETs retried on the other proxy; the failed requests
 *         are counted and reported. The same with POSTs: those caught on the dead proxy fail
 *         and are never replayed (the upstream sees no POST twice).
 *
 * The figures (detection time, retries, longest request) are printed for docs/deployment.md.
 * GH_HAPROXY_LOG=<file> keeps HAProxy's request log of the run in that file.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { GatehouseClientError, GatehouseDevice } from '../../src/client/device.js'
import { freePorts, httpGet, Sandbox, type GatehouseProcess } from '../e2e/helpers.js'
import { haproxyAvailable, startHaproxy, type HaproxyProcess } from '../helpers/haproxy.js'
import { skipWithout } from '../helpers/services.js'
import { enrolledDevice, PASSWORD, proxyRequests, runLoad, startProxyProcess, startUpstream, type FarmUpstream, type ProxyPorts } from './farm.js'

const skip = skipWithout('haproxy', haproxyAvailable(), 'PATH (Debian package haproxy; .ci/services.sh installs it)')

/** HAProxy: inter 500ms, fall 2 (config/haproxy.cfg). Worst-case detection: inter × (fall + 1). */
const DETECTION_BOUND_MS = 1500
/** proxy.shutdownDelayMs: above the detection bound (docs/deployment.md, "Proxy farm"). */
const SHUTDOWN_DELAY_MS = 2000
const DRAIN_SECONDS = 5
const LOAD_MS = 5000
const EVENT_AT_MS = 1500
const DEVICES = 16
const LOAD_DEVICES = 10

describe.skipIf(skip)('proxy farm behind HAProxy', () => {
  let box: Sandbox
  let upstream: FarmUpstream
  let haproxy: HaproxyProcess
  let security: GatehouseProcess
  const procs = new Map<string, GatehouseProcess>()
  let proxies: ProxyPorts[]
  let devices: GatehouseDevice[] = []
  /** device index → name of the proxy its session lands on (test iii). */
  const home = new Map<number, string>()
  let ports: { device: number; proxyApi: number; secAdmin: number; front: number; stats: number }

  const startProxy = (p: ProxyPorts) => startProxyProcess(box, p, {
    securityServers: [`https://localhost:${ports.proxyApi}`], upstreamPort: upstream.port,
    shutdownDelayMs: SHUTDOWN_DELAY_MS, drainSeconds: DRAIN_SECONDS,
  }).then((proc) => { procs.set(p.name, proc); return proc })

  /** The proxy holding most of the load devices' sessions (so that its loss matters). */
  const busiest = (): ProxyPorts => {
    const count = (name: string) => [...home.entries()].filter(([i, n]) => i < LOAD_DEVICES && n === name).length
    return proxies.reduce((a, b) => (count(b.name) > count(a.name) ? b : a))
  }

  beforeAll(async () => {
    box = new Sandbox('gh-ha-farm-')
    const [device, proxyApi, secAdmin, front, stats, p1, a1, p2, a2] = await freePorts(9) as [number, number, number, number, number, number, number, number, number]
    ports = { device, proxyApi, secAdmin, front, stats }
    proxies = [{ name: 'proxy1', port: p1, adminPort: a1 }, { name: 'proxy2', port: p2, adminPort: a2 }]
    // The proxies' certificate names gatehouse-proxy.internal, which HAProxy verifies (verifyhost).
    const init = await box.run(['certs', 'init', '--dir', 'certs', '--name', 'gatehouse-proxy.internal'])
    expect(init.code, init.stderr).toBe(0)
    upstream = await startUpstream()
    box.writeYaml('security.yaml', {
      certsDir: 'certs',
      dataDir: 'sec-data',
      security: {
        listen: { port: device }, proxyApi: { port: proxyApi }, admin: { port: secAdmin },
        // Devices are told the load balancer, never a proxy.
        proxyUrl: `https://localhost:${front}`,
      },
    })
    const add = await box.run(['users', 'add', 'alice', '--password-stdin', '--config', 'security.yaml'], { input: `${PASSWORD}\n` })
    expect(add.code, add.stderr).toBe(0)
    security = box.spawn(['security', '--config', 'security.yaml'])
    await security.waitFor(/gatehouse security server ready/, 60_000)
    await Promise.all(proxies.map(startProxy))
    haproxy = await startHaproxy({
      dir: box.dir, certsDir: box.path('certs'), serverCert: box.path('certs', 'server.crt'), serverKey: box.path('certs', 'server.key'),
      frontendPort: front, statsPort: stats, servers: proxies,
    })
    const securityUrl = `https://localhost:${device}`
    devices = await Promise.all(Array.from({ length: DEVICES }, (_, i) => enrolledDevice(securityUrl, box.path('certs', 'ca.crt'), 'alice', `farm-${i}`)))
  }, 120_000)

  afterAll(async () => {
    await Promise.all(devices.map((d) => d.close().catch(() => undefined)))
    if (process.env.GH_HAPROXY_LOG) (await import('node:fs')).writeFileSync(process.env.GH_HAPROXY_LOG, haproxy?.output ?? '')
    await haproxy?.close()
    await box?.cleanup()
    await upstream?.close()
  })

  it('devices are told the HAProxy URL and reach the upstream through it', async () => {
    for (const d of devices) expect(d.enrollmentState?.proxyUrl).toBe(`https://localhost:${ports.front}`)
    const res = await devices[0]!.request('GET', '/app/hello')
    expect(res.status).toBe(200)
    expect(res.json()).toMatchObject({ user: 'alice', device: 'farm-0' })
  })

  it('(iii) every request of a session lands on the same proxy, and sessions spread over both', async () => {
    for (const [i, d] of devices.entries()) {
      const before = await Promise.all(proxies.map((p) => proxyRequests(p.adminPort)))
      for (let n = 0; n < 5; n++) expect((await d.request('GET', `/app/hello?n=${n}`)).status).toBe(200)
      const after = await Promise.all(proxies.map((p) => proxyRequests(p.adminPort)))
      const deltas = after.map((a, k) => a - before[k]!)
      expect(deltas.slice().sort(), `device ${i}: requests per proxy ${JSON.stringify(deltas)}`).toEqual([0, 5])
      home.set(i, proxies[deltas.indexOf(5)]!.name)
    }
    const perProxy = proxies.map((p) => [...home.values()].filter((n) => n === p.name).length)
    console.log(`[farm] sessions per proxy (of ${DEVICES}): ${proxies.map((p, k) => `${p.name}=${perProxy[k]}`).join(', ')}`)
    expect(Math.min(...perProxy), 'consistent hashing put every session on one proxy').toBeGreaterThan(0)
  })

  it('SIGHUP (systemctl reload) does not end a proxy: it stays in the rotation', async () => {
    const p = proxies[1]!
    const proc = procs.get(p.name)!
    proc.signal('SIGHUP')
    await proc.waitFor(/SIGHUP/, 10_000)
    await new Promise((r) => setTimeout(r, 300))
    expect(proc.alive, proc.describe()).toBe(true)
    expect((await httpGet(`http://127.0.0.1:${p.adminPort}/readyz`)).status).toBe(200)
    expect((await haproxy.serverStates())[p.name]).toBe('UP')
  })

  it('(ii) SIGTERM under load: the proxy leaves the rotation before it stops accepting; no request fails', async () => {
    const victim = busiest()
    const proc = procs.get(victim.name)!
    let signalledAt = 0
    let downAfterMs = NaN
    const counters = async () => ({ retries: await haproxy.backendCounter('wretr'), redispatches: await haproxy.backendCounter('wredis'), connectErrors: await haproxy.backendCounter('econ'), responseErrors: await haproxy.backendCounter('eresp') })
    const before = await counters()
    const result = await runLoad(devices.slice(0, LOAD_DEVICES), {
      durationMs: LOAD_MS,
      // Half the devices POST: a graceful stop must not need retries at all.
      method: (i) => (i % 2 === 0 ? 'GET' : 'POST'),
      eventAtMs: EVENT_AT_MS,
      event: async () => {
        signalledAt = performance.now()
        proc.signal('SIGTERM')
        downAfterMs = await haproxy.waitStates((s) => s[victim.name] === 'DOWN', 10_000)
      },
    })
    const exit = await proc.waitExit(SHUTDOWN_DELAY_MS + DRAIN_SECONDS * 1000 + 5000)
    const stoppedAfterMs = performance.now() - signalledAt
    const after = await counters()
    const haproxyErrors = Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - before[k as keyof typeof before]]))
    console.log(`[farm] SIGTERM ${victim.name}: ${result.requests} requests (${JSON.stringify(result.byMethod)}), failed ${result.failures.length}, ` +
      `HAProxy marked it DOWN after ${Math.round(downAfterMs)} ms (shutdownDelayMs ${SHUTDOWN_DELAY_MS}), process exited after ${Math.round(stoppedAfterMs)} ms, ` +
      `HAProxy ${JSON.stringify(haproxyErrors)}, longest request ${result.maxLatencyMs} ms`)
    expect(result.failures, JSON.stringify(result.failures.slice(0, 5))).toEqual([])
    expect(exit, proc.describe()).toEqual({ code: 0, signal: null })
    // What makes it true: HAProxy notices the 503 before the proxy closes its port (seen from
    // here by polling the stats page, so a little late on a busy machine).
    expect(downAfterMs).toBeLessThan(SHUTDOWN_DELAY_MS)
    expect(result.byMethod.POST).toBeGreaterThan(20)
    // Nothing was sent to a closed port: no connection error, no retry, no redispatch.
    expect(haproxyErrors, 'nothing needed a retry').toEqual({ retries: 0, redispatches: 0, connectErrors: 0, responseErrors: 0 })
  }, 60_000)

  /** Start the stopped proxy again; its sessions hash back to it (a cache miss there, then served). */
  const restartStopped = async (why: string) => {
    const victim = proxies.find((p) => !procs.get(p.name)!.alive)!
    await startProxy(victim)
    const upAfterMs = await haproxy.waitStates((s) => s[victim.name] === 'UP')
    console.log(`[farm] ${victim.name} restarted after ${why}: UP in HAProxy ${Math.round(upAfterMs)} ms after "ready" (rise 2 × inter 500ms)`)
    const i = [...home.entries()].find(([, name]) => name === victim.name)![0]
    const before = await proxyRequests(victim.adminPort)
    expect((await devices[i]!.request('GET', '/app/hello')).status).toBe(200)
    expect(await proxyRequests(victim.adminPort)).toBe(before + 1)
  }

  it('the stopped proxy comes back into the rotation when started again', () => restartStopped('SIGTERM'), 30_000)

  it('(i) kill -9 under load: GETs are retried on the other proxy; failed requests counted', async () => {
    const victim = busiest()
    const proc = procs.get(victim.name)!
    let downAfterMs = NaN
    const before = { retries: await haproxy.backendCounter('wretr'), redispatches: await haproxy.backendCounter('wredis') }
    const result = await runLoad(devices.slice(0, LOAD_DEVICES), {
      durationMs: LOAD_MS,
      method: () => 'GET',
      eventAtMs: EVENT_AT_MS,
      event: async () => {
        proc.killGroup('SIGKILL')
        downAfterMs = await haproxy.waitStates((s) => s[victim.name] === 'DOWN', 10_000)
      },
    })
    expect((await proc.waitExit(5000)).signal).toBe('SIGKILL')
    const retries = (await haproxy.backendCounter('wretr')) - before.retries
    const redispatches = (await haproxy.backendCounter('wredis')) - before.redispatches
    const reasons = result.failures.map((f) => f.error)
    console.log(`[farm] kill -9 ${victim.name}: ${result.requests} GETs, failed ${result.failures.length}${reasons.length ? ` (${[...new Set(reasons)].join('; ')})` : ''}, ` +
      `HAProxy marked it DOWN after ${Math.round(downAfterMs)} ms, retries ${retries}, redispatches ${redispatches}, ` +
      `longest request ${result.maxLatencyMs} ms (at ${result.maxLatencyAtMs} ms; kill at ${EVENT_AT_MS} ms)`)
    expect(downAfterMs, `detected within inter × (fall + 1) = ${DETECTION_BOUND_MS} ms, plus polling`).toBeLessThan(DETECTION_BOUND_MS + 1000)
    // The goal is none: a GET caught on the dead proxy is retried on the other one.
    expect(result.failures, JSON.stringify(result.failures.slice(0, 5))).toEqual([])
    // Retried on the other proxy: a retry with `option redispatch 1` counts as a redispatch.
    expect(retries + redispatches, 'the requests caught on the killed proxy were sent again').toBeGreaterThan(0)
    expect(result.requests).toBeGreaterThan(50)
  }, 60_000)

  it('(i, POST) kill -9 under POST load: POSTs caught on the dead proxy fail (502), none reaches the upstream twice', async () => {
    await restartStopped('kill -9')
    const victim = busiest()
    const proc = procs.get(victim.name)!
    upstream.seen.clear()
    const result = await runLoad(devices.slice(0, LOAD_DEVICES), {
      durationMs: 3000,
      method: () => 'POST',
      eventAtMs: 1000,
      event: async () => {
        proc.killGroup('SIGKILL')
        await haproxy.waitStates((s) => s[victim.name] === 'DOWN', 10_000)
      },
    })
    await proc.waitExit(5000)
    const twice = [...upstream.seen.entries()].filter(([k, n]) => k.startsWith('POST ') && n > 1)
    console.log(`[farm] kill -9 ${victim.name} under POST load: ${result.requests} POSTs, failed ${result.failures.length} ` +
      `(${[...new Set(result.failures.map((f) => f.error))].join('; ') || 'none'}), delivered twice ${twice.length}`)
    // Not replayed: at most the one request in flight per device fails. HAProxy answers 502, or
    // (the proxy connection was a reused one) closes the device's connection without an answer.
    expect(twice).toEqual([])
    expect(result.failures.length).toBeLessThanOrEqual(LOAD_DEVICES)
    for (const f of result.failures) expect(f.error).toMatch(/^(status )?50[23]\b|other side closed|socket hang up|ECONNRESET/)
  }, 60_000)

  it('after the kill, the surviving proxy serves every session', async () => {
    const alive = proxies.filter((p) => procs.get(p.name)!.alive)
    expect(alive).toHaveLength(1)
    const before = await proxyRequests(alive[0]!.adminPort)
    const answers = await Promise.all(devices.map((d) => d.request('GET', '/app/hello').catch((e: GatehouseClientError) => e)))
    expect(answers.map((a) => ('status' in a ? a.status : a))).toEqual(devices.map(() => 200))
    expect(await proxyRequests(alive[0]!.adminPort)).toBe(before + DEVICES)
  })
})
