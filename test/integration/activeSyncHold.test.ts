/**
 * Long-held ActiveSync requests through the real proxy (uWS, TLS) and a fake Exchange:
 *
 * - a Ping held 35 s is answered: neither uWS (no idle timeout while a response is pending)
 *   nor undici (headersTimeout = maxHoldSeconds + margin) cuts it;
 * - 1,000 concurrent Pings, all held at Exchange at the same time for 2 s, all complete; the RSS
 *   growth of this process with all held is printed;
 * - a held Ping whose client disconnects abandons its request at Exchange at once.
 */
import { Agent } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { basicAuth, PING_OK, startFakeExchange, type FakeExchange } from '../helpers/fakeExchange.js'
import { startStack, type Stack } from '../helpers/stack.js'

const EAS = '/Microsoft-Server-ActiveSync'
const PW = 'alice-mailbox-password'
const PING = `${EAS}?Cmd=Ping&User=alice&DeviceId=HOLDPHONE1&DeviceType=iPhone`
const headers = { authorization: basicAuth('alice', PW), 'content-type': 'application/vnd.ms-sync.wbxml', 'ms-asprotocolversion': '14.1' }

async function until(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10))
}

describe('ActiveSync: held requests', () => {
  let stack: Stack
  let fake: FakeExchange
  let agent: Agent

  beforeAll(async () => {
    fake = await startFakeExchange({ users: { alice: PW }, pingHoldMs: 2000 })
    stack = await startStack({ proxy: { activeSync: { upstream: fake.url, path: EAS, maxHoldSeconds: 40, holdMarginMs: 2000, gateCacheSeconds: 60, maxBodyBytes: 64 * 1024 } } })
    await stack.enrolledDevice({ deviceId: 'HOLDPHONE1' })
    agent = new Agent({ connect: { ca: stack.ca }, connections: 2000, keepAliveTimeout: 60_000 })
  })
  afterAll(async () => {
    await agent?.close()
    await stack?.close()
    await fake?.close()
  })

  const ping = (body?: string, signal?: AbortSignal) =>
    agent.request({ origin: stack.proxyUrl, path: PING, method: 'POST', headers, body: body ?? '', signal, headersTimeout: 60_000, bodyTimeout: 60_000 })

  it('a Ping held 35 s gets its answer (uWS and undici leave it alone)', async () => {
    const t0 = Date.now()
    const res = await ping('hold=35000')
    const body = Buffer.from(await res.body.arrayBuffer())
    const ms = Date.now() - t0
    console.log(`held Ping answered after ${ms} ms`)
    expect(res.statusCode).toBe(200)
    expect(body.equals(PING_OK)).toBe(true)
    expect(ms).toBeGreaterThanOrEqual(35_000)
  }, 60_000)

  it('1,000 concurrent Pings held 2 s all complete', async () => {
    // Warm up one, so the gate answer and TLS state exist before measuring.
    await (await ping('hold=1')).body.dump()
    const N = 1000
    const rssBefore = process.memoryUsage().rss
    fake.maxInFlight = fake.inFlight
    const started = Date.now()
    // Held until all N are at Exchange (the TLS ramp takes seconds on a busy machine), then 2 s more.
    const all = Array.from({ length: N }, () => ping('hold=120000').then(async (r) => ({ status: r.statusCode, body: Buffer.from(await r.body.arrayBuffer()) })))
    await until(() => fake.inFlight >= N, 60_000)
    const ramp = Date.now() - started
    expect(fake.inFlight).toBe(N)
    const rssHeld = process.memoryUsage().rss
    await new Promise((r) => setTimeout(r, 2000))
    expect(fake.inFlight).toBe(N)
    expect(fake.releasePings()).toBe(N)
    const results = await Promise.all(all)
    const delta = rssHeld - rssBefore
    console.log(`${N} Pings held at once after a ${ramp} ms ramp, for 2 s, all answered ${Date.now() - started} ms after the first was sent; RSS of this process (proxy + security server + fake Exchange + ${N} clients) +${(delta / 1048576).toFixed(1)} MiB with all held, ${(delta / N / 1024).toFixed(1)} KiB per held Ping`)
    expect(fake.maxInFlight).toBe(N)
    expect(results.filter((r) => r.status === 200 && r.body.equals(PING_OK)).length).toBe(N)
  }, 120_000)

  it('a held Ping whose client disconnects is abandoned at Exchange at once', async () => {
    const aborted = fake.aborted
    const ac = new AbortController()
    const p = ping('hold=20000', ac.signal).catch((e: unknown) => e)
    await until(() => fake.inFlight === 1, 5000)
    expect(fake.inFlight).toBe(1)
    const t0 = Date.now()
    ac.abort()
    expect(await p).toBeInstanceOf(Error)
    await until(() => fake.aborted > aborted, 5000)
    expect(fake.aborted).toBe(aborted + 1)
    expect(fake.inFlight).toBe(0)
    expect(Date.now() - t0).toBeLessThan(1000)
    expect(await stack.proxy.registry.getSingleMetric('gatehouse_proxy_activesync_requests_in_flight')!.get()).toMatchObject({ values: [{ value: 0 }] })
  })
})
