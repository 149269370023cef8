/**
 * Multi-site: one security server at the main site, a proxy at each of two sites. The second
 * site's proxy is an ordinary `gatehouse proxy` whose securityServers point to the main site.
 * The security server tells each device the proxy URL of its user's site (security.sites: first
 * site whose groups hold one of the user's groups), at enrollment and at every session open.
 *
 *   main site: gatehouse security ◀──mTLS── proxy A (site-a)
 *                                  ◀──mTLS── proxy B (site-b)
 *   bob (group site-b) ──▶ told https://…B, served by B;  alice (site-a) ──▶ A;  carol ──▶ defaultSite
 */
import { readFileSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { GatehouseDevice } from '../../src/client/device.js'
import { freePorts, httpGet, Sandbox } from '../e2e/helpers.js'
import { enrolledDevice, metricSum, PASSWORD, proxyRequests, startProxyProcess, startUpstream, type FarmUpstream, type ProxyPorts } from './farm.js'

describe('multi-site: the user\'s site decides the proxy URL', () => {
  let box: Sandbox
  let upstream: FarmUpstream
  let siteA: ProxyPorts
  let siteB: ProxyPorts
  let securityUrl: string
  const devices: GatehouseDevice[] = []
  const url = (p: ProxyPorts) => `https://localhost:${p.port}`

  const enroll = async (user: string, deviceId: string) => {
    const d = await enrolledDevice(securityUrl, box.path('certs', 'ca.crt'), user, deviceId)
    devices.push(d)
    return d
  }

  /** Requests answered by each site's proxy while `f` runs. */
  const servedBy = async (f: () => Promise<void>): Promise<{ a: number; b: number }> => {
    const before = await Promise.all([proxyRequests(siteA.adminPort), proxyRequests(siteB.adminPort)])
    await f()
    const after = await Promise.all([proxyRequests(siteA.adminPort), proxyRequests(siteB.adminPort)])
    return { a: after[0] - before[0], b: after[1] - before[1] }
  }

  beforeAll(async () => {
    box = new Sandbox('gh-ha-sites-')
    const [device, proxyApi, secAdmin, pA, aA, pB, aB] = await freePorts(7) as [number, number, number, number, number, number, number]
    siteA = { name: 'proxy-site-a', port: pA, adminPort: aA }
    siteB = { name: 'proxy-site-b', port: pB, adminPort: aB }
    securityUrl = `https://localhost:${device}`
    const init = await box.run(['certs', 'init', '--dir', 'certs'])
    expect(init.code, init.stderr).toBe(0)
    upstream = await startUpstream()
    box.writeYaml('security.yaml', {
      certsDir: 'certs',
      dataDir: 'sec-data',
      security: {
        listen: { port: device }, proxyApi: { port: proxyApi }, admin: { port: secAdmin },
        // Never told to a device here: defaultSite covers users of no site.
        proxyUrl: 'https://localhost:1',
        sites: [
          { name: 'site-a', proxyUrl: url(siteA), groups: ['site-a'] },
          { name: 'site-b', proxyUrl: url(siteB), groups: ['site-b', 'site-b-contractors'] },
        ],
        defaultSite: 'site-a',
      },
    })
    for (const [user, groups] of [['alice', ['staff', 'site-a']], ['bob', ['staff', 'site-b']], ['carol', ['staff']]] as const) {
      const add = await box.run(['users', 'add', user, ...groups.flatMap((g) => ['--group', g]), '--password-stdin', '--config', 'security.yaml'], { input: `${PASSWORD}\n` })
      expect(add.code, add.stderr).toBe(0)
    }
    const security = box.spawn(['security', '--config', 'security.yaml'])
    await security.waitFor(/gatehouse security server ready/, 60_000)
    // Both sites' proxies validate sessions against the main site's security server.
    const main = [`https://localhost:${proxyApi}`]
    await Promise.all([siteA, siteB].map((p) => startProxyProcess(box, p, { securityServers: main, upstreamPort: upstream.port, drainSeconds: 1 })))
  }, 90_000)

  afterAll(async () => {
    await Promise.all(devices.map((d) => d.close().catch(() => undefined)))
    await box?.cleanup()
    await upstream?.close()
  })

  it('a user in group site-b is told site B\'s proxy, and requests through it work', async () => {
    const bob = await enroll('bob', 'bob-phone')
    expect(bob.enrollmentState?.proxyUrl).toBe(url(siteB))
    const served = await servedBy(async () => {
      const res = await bob.request('GET', '/app/hello')
      expect(res.status).toBe(200)
      expect(res.json()).toMatchObject({ user: 'bob', device: 'bob-phone' })
    })
    expect(served).toEqual({ a: 0, b: 1 })
    // Site B's proxy asked the main site's security server about bob's session.
    const metrics = (await httpGet(`http://127.0.0.1:${siteB.adminPort}/metrics`)).text
    expect(metricSum(metrics, 'gatehouse_proxy_control_plane_requests_total', { result: 'valid' })).toBeGreaterThanOrEqual(1)
  })

  it('a user in group site-a is told site A\'s proxy', async () => {
    const alice = await enroll('alice', 'alice-phone')
    expect(alice.enrollmentState?.proxyUrl).toBe(url(siteA))
    const served = await servedBy(async () => {
      expect((await alice.request('GET', '/app/hello')).json()).toMatchObject({ user: 'alice' })
    })
    expect(served).toEqual({ a: 1, b: 0 })
  })

  it('a user of no site gets the defaultSite', async () => {
    const carol = await enroll('carol', 'carol-phone')
    expect(carol.enrollmentState?.proxyUrl).toBe(url(siteA))
    expect((await carol.request('GET', '/app/hello')).status).toBe(200)
  })

  it('session open tells the site\'s proxy again: a device holding another URL is moved back', async () => {
    const bob = devices.find((d) => d.enrollmentState?.userName === 'bob')!
    // The saved state names site A (e.g. restored from an old backup of the app's data).
    const state = { ...bob.enrollmentState!, proxyUrl: url(siteA) }
    const restored = new GatehouseDevice({
      securityUrl, ca: readFileSync(box.path('certs', 'ca.crt')), appId: state.appId, appVersion: state.appVersion, deviceId: state.deviceId, enrollment: state,
    })
    devices.push(restored)
    await restored.openSession()
    expect(restored.enrollmentState?.proxyUrl).toBe(url(siteB))
    const served = await servedBy(async () => {
      expect((await restored.request('GET', '/app/hello')).json()).toMatchObject({ user: 'bob' })
    })
    expect(served).toEqual({ a: 0, b: 1 })
  })
})
