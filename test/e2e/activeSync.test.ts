/**
 * The ActiveSync gateway as a user deploys it: `gatehouse security` and `gatehouse proxy` (two
 * worker threads) from a YAML config with `proxy.activeSync` enabled, a user added with
 * `gatehouse users add`, a device enrolled through the SDK, and a fake Exchange in the test
 * process. A mail client's Sync gets through for the enrolled device only; the proxy's /metrics
 * shows it; SIGTERM answers a held Ping "heartbeat expired" instead of dropping it.
 */
import { readFileSync } from 'node:fs'
import { Agent } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { GatehouseDevice } from '../../src/client/device.js'
import { PING_HEARTBEAT_EXPIRED } from '../../src/proxy/activeSync.js'
import { basicAuth, startFakeExchange, WBXML_HEADER, type FakeExchange } from '../helpers/fakeExchange.js'
import { sendRaw } from '../helpers/stack.js'
import { freePorts, httpGet, metricSample, Sandbox, type GatehouseProcess } from './helpers.js'

const PASSWORD = 'carol-has-a-long-passphrase'
const MAILBOX = 'carol-mailbox-password'

describe('ActiveSync gateway from the CLI', () => {
  let box: Sandbox
  let fake: FakeExchange
  let proxy: GatehouseProcess
  let agent: Agent
  let p: Record<'device' | 'proxyApi' | 'secAdmin' | 'proxy' | 'proxyAdmin', number>
  const eas = (q: string, o: { body?: string } = {}) => sendRaw(agent, `https://localhost:${p.proxy}`, `/Microsoft-Server-ActiveSync?${q}`, {
    headers: { authorization: basicAuth('carol', MAILBOX), 'content-type': 'application/vnd.ms-sync.wbxml', 'ms-asprotocolversion': '14.1' },
    body: o.body ?? 'sync-body',
  })

  beforeAll(async () => {
    box = new Sandbox('gh-e2e-eas-')
    fake = await startFakeExchange({ users: { carol: MAILBOX } })
    const [device, proxyApi, secAdmin, proxyPort, proxyAdmin] = await freePorts(5) as [number, number, number, number, number]
    p = { device, proxyApi, secAdmin, proxy: proxyPort, proxyAdmin }
    box.writeYaml('gh.yaml', {
      certsDir: 'certs',
      dataDir: 'data',
      security: { listen: { port: device }, proxyApi: { port: proxyApi }, admin: { port: secAdmin }, proxyUrl: `https://localhost:${proxyPort}` },
      proxy: {
        listen: { port: proxyPort }, admin: { port: proxyAdmin }, securityServers: [`https://localhost:${proxyApi}`], workers: 2,
        activeSync: { enabled: true, upstream: fake.url, maxHoldSeconds: 60 },
      },
    })
    expect((await box.run(['certs', 'init', '--dir', 'certs'])).code).toBe(0)
    const add = await box.run(['users', 'add', 'carol', '--password-stdin', '--config', 'gh.yaml'], { input: `${PASSWORD}\n` })
    expect(add.code, add.stderr).toBe(0)
    const security = box.spawn(['security', '--config', 'gh.yaml'])
    proxy = box.spawn(['proxy', '--config', 'gh.yaml', '--drain', '5'])
    await Promise.all([security.waitFor(/gatehouse security server ready/), proxy.waitFor(/gatehouse proxy ready/)])
    const ca = readFileSync(box.path('certs', 'ca.crt'))
    agent = new Agent({ connect: { ca } })
    const dev = new GatehouseDevice({ securityUrl: `https://localhost:${device}`, ca, appId: 'mail', appVersion: '1.0.0', deviceId: 'E2EPHONE1', proxyUrl: `https://localhost:${proxyPort}` })
    await dev.enroll('carol', PASSWORD)
    await dev.close()
  })

  afterAll(async () => {
    await agent?.close()
    await box?.cleanup()
    await fake?.close()
  })

  it('the enrolled device syncs through the proxy (two worker threads); an unknown one is refused', async () => {
    for (let i = 0; i < 4; i++) {
      const a = await eas('Cmd=Sync&User=carol&DeviceId=E2EPHONE1&DeviceType=iPhone')
      expect(a.status).toBe(200)
      expect(a.body.equals(Buffer.concat([WBXML_HEADER, Buffer.from('sync-body')]))).toBe(true)
    }
    const refused = await eas('Cmd=Sync&User=carol&DeviceId=OTHERPHONE&DeviceType=iPhone')
    expect([refused.status, refused.code]).toEqual([403, 'GH_ERR_DEVICE_NOT_ENROLLED'])
    const metrics = (await httpGet(`http://127.0.0.1:${p.proxyAdmin}/metrics`)).text
    expect(metricSample(metrics, 'gatehouse_proxy_activesync_requests_total', { command: 'Sync', status: '200' })).toBe(4)
    expect(metricSample(metrics, 'gatehouse_proxy_activesync_gate_decisions_total', { result: 'unknown' })).toBe(1)
  })

  it('SIGTERM: a held Ping is answered "heartbeat expired" and the proxy exits cleanly', async () => {
    const held = eas('Cmd=Ping&User=carol&DeviceId=E2EPHONE1&DeviceType=iPhone', { body: 'hold=30000' })
    const end = Date.now() + 10_000
    while (fake.inFlight === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 20))
    expect(fake.inFlight).toBe(1)
    proxy.signal('SIGTERM')
    const a = await held
    expect(a.status).toBe(200)
    expect(a.body.equals(PING_HEARTBEAT_EXPIRED)).toBe(true)
    expect((await proxy.waitExit(15_000)).code).toBe(0)
  })
})
