/**
 * The ActiveSync gateway with HTTP/2 to Exchange (`upstreamHttp2`, src/proxy/activeSyncUpstream.ts):
 * the stack (security server, proxy with real TLS) in front of a fake Exchange serving HTTP/2 over
 * TLS (test/helpers/fakeExchange.ts). The same answers as over HTTP/1.1, held Pings sharing a few
 * connections, streamed bodies both ways, and a hostile Exchange: dying mid-Ping, RST_STREAM and
 * GOAWAY in the middle of a body, no h2 at all.
 */
import { readFileSync } from 'node:fs'
import { Readable } from 'node:stream'
import { Agent } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ActiveSyncOptions } from '../../src/proxy/activeSync.js'
import type { ProxyServer } from '../../src/proxy/server.js'
import { basicAuth, PING_OK, startFakeExchange, WBXML_HEADER, type FakeExchange } from '../helpers/fakeExchange.js'
import { makeTestPki } from '../helpers/pki.js'
import { counterValue, rawTls, sendRaw, startStack, type RawAnswer, type Stack } from '../helpers/stack.js'

const EAS = '/Microsoft-Server-ActiveSync'
const PW = 'alice-mailbox-password'
const ALICE = basicAuth('alice', PW)
const WBXML = 'application/vnd.ms-sync.wbxml'
const cmd = (c: string, deviceId = 'H2PHONE1') => `${EAS}?Cmd=${c}&User=alice&DeviceId=${deviceId}&DeviceType=iPhone`

async function until(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10))
}

describe('ActiveSync gateway over HTTP/2 to Exchange', () => {
  let pki: Awaited<ReturnType<typeof makeTestPki>>
  let tls: { cert: Buffer; key: Buffer }
  let fake: FakeExchange
  let stack: Stack
  let agent: Agent
  const extra: FakeExchange[] = []

  const h2Options = (upstream: string, over: Partial<ActiveSyncOptions> = {}): ActiveSyncOptions => ({
    upstream, upstreamCa: pki.caCert, upstreamHttp2: true, path: EAS, maxHoldSeconds: 30, holdMarginMs: 1000,
    gateCacheSeconds: 60, maxBodyBytes: 8 * 1024 * 1024, ...over,
  })

  const eas = (target: string, o: { method?: string; headers?: Record<string, string>; body?: Buffer | string | AsyncIterable<Buffer>; port?: number; signal?: AbortSignal } = {}): Promise<RawAnswer> =>
    sendRaw(agent, `https://localhost:${o.port ?? stack.proxy.port}`, target, {
      method: o.method ?? 'POST',
      headers: { authorization: ALICE, 'content-type': WBXML, 'ms-asprotocolversion': '14.1', ...o.headers },
      body: o.body ?? (o.method === 'OPTIONS' ? undefined : Buffer.from([0x03, 0x01, 0x6a, 0x00, 0x45])),
    })

  beforeAll(async () => {
    pki = await makeTestPki()
    tls = { cert: readFileSync(pki.serverCert), key: readFileSync(pki.serverKey) }
    fake = await startFakeExchange({ users: { alice: PW }, tls, http2: true, pingHoldMs: 300 })
    stack = await startStack({ proxy: { activeSync: h2Options(fake.url) } })
    await stack.enrolledDevice({ deviceId: 'H2PHONE1' })
    agent = new Agent({ connect: { ca: stack.ca }, connections: 256 })
  })
  afterAll(async () => {
    await agent?.close()
    await stack?.close()
    await fake?.close()
    for (const f of extra) await f.close()
    pki?.cleanup()
  })

  it('OPTIONS, Sync and a held Ping travel over HTTP/2, headers passed both ways', async () => {
    const o = await eas(EAS, { method: 'OPTIONS' })
    expect(o.status).toBe(200)
    expect(o.headers['ms-asprotocolversions']).toBe('2.5,12.0,12.1,14.0,14.1,16.0,16.1')
    expect(fake.lastHttpVersion).toBe('2.0')

    const body = Buffer.concat([WBXML_HEADER, Buffer.from('sync-over-h2')])
    const s = await eas(cmd('Sync'), { body, headers: { 'x-ms-policykey': '3769048351' } })
    expect(s.status).toBe(200)
    expect(s.headers['content-type']).toBe(WBXML)
    expect(s.body.equals(Buffer.concat([WBXML_HEADER, body]))).toBe(true)
    expect(fake.lastHttpVersion).toBe('2.0')
    const h = fake.lastHeaders!
    expect([h.authorization, h['x-ms-policykey'], h['content-length'], h['x-forwarded-proto'], h[':method'], h[':path']])
      .toEqual([ALICE, '3769048351', String(body.length), 'https', 'POST', cmd('Sync')])

    const t0 = Date.now()
    const p = await eas(cmd('Ping'), { body: 'hold=400' })
    expect(p.status).toBe(200)
    expect(Date.now() - t0).toBeGreaterThanOrEqual(390)
    expect(p.headers['x-fake-exchange']).toBe('ping')
    expect(p.body.equals(PING_OK)).toBe(true)
    expect(await counterValue(stack.proxy.registry, 'gatehouse_proxy_activesync_upstream_connections')).toBe(1)
  })

  it('hop-by-hop headers of the client (Connection, Keep-Alive, TE, Transfer-Encoding) never reach HTTP/2', async () => {
    // Raw bytes: a chunked body and every connection-specific header HTTP/2 forbids (RFC 9113 §8.2.2).
    const raw = await rawTls(stack.proxy.port, {
      ca: stack.ca,
      waitMs: 2000,
      writes: [`POST ${cmd('Sync')} HTTP/1.1\r\nHost: localhost\r\nAuthorization: ${ALICE}\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n`
        + `Proxy-Connection: keep-alive\r\nTE: trailers\r\nX-Hop: no\r\nX-Kept: yes\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`],
    })
    expect(raw.status).toBe(200)
    expect(raw.body).toContain('hello')
    const h = fake.lastHeaders!
    for (const name of ['connection', 'keep-alive', 'proxy-connection', 'te', 'transfer-encoding', 'x-hop']) expect([name, h[name]]).toEqual([name, undefined])
    expect(h['x-kept']).toBe('yes')
    expect(fake.lastHttpVersion).toBe('2.0')
  })

  it('bodies are streamed both ways: 200 KiB and chunked uploads, 5 MiB downloads with and without Content-Length', async () => {
    const up = await eas(cmd('SendMail'), { body: Buffer.alloc(200 * 1024, 3), headers: { 'content-type': 'message/rfc822' } })
    expect([up.status, up.text]).toEqual([200, String(200 * 1024)])
    expect(fake.lastHttpVersion).toBe('2.0')
    async function* chunks() {
      for (let i = 0; i < 20; i++) yield Buffer.alloc(16 * 1024, 4)
    }
    const chunked = await eas(cmd('SendMail'), { body: Readable.from(chunks()) })
    expect([chunked.status, chunked.text]).toEqual([200, String(320 * 1024)])
    expect(fake.lastHeaders!['content-length']).toBeUndefined()
    for (const c of ['0', '1']) {
      const a = await eas(cmd('GetAttachment'), { headers: { 'x-fake-bytes': String(5 * 1024 * 1024), 'x-fake-chunked': c } })
      expect(a.status).toBe(200)
      expect(a.body.length).toBe(5 * 1024 * 1024)
      expect(a.body.every((b) => b === 0x61)).toBe(true)
      if (c === '0') expect(a.headers['content-length']).toBe(String(5 * 1024 * 1024))
      else expect(a.headers['transfer-encoding']).toBe('chunked')
    }
  })

  it('a device that does not read pauses its own stream only: a Ping on the same connection is answered meanwhile', async () => {
    const total = 8 * 1024 * 1024
    const connections = fake.connectionsTotal
    const res = await agent.request({
      origin: stack.proxyUrl, path: cmd('GetAttachment'), method: 'POST',
      headers: { authorization: ALICE, 'x-fake-bytes': String(total) }, body: 'x',
    })
    expect(res.statusCode).toBe(200)
    // Not read for 1.5 s: uWS backpressure pauses the relay, which pauses the HTTP/2 stream.
    await new Promise((r) => setTimeout(r, 300))
    const t0 = Date.now()
    const ping = await eas(cmd('Ping'), { body: 'hold=200' })
    expect(ping.status).toBe(200)
    expect(Date.now() - t0).toBeLessThan(1500)
    await new Promise((r) => setTimeout(r, 1000))
    const body = Buffer.from(await res.body.arrayBuffer())
    expect(body.length).toBe(total)
    expect(fake.connectionsTotal).toBe(connections)
  })

  it('a blocked or unknown device gets the same answer as over HTTP/1.1, and Exchange is not reached', async () => {
    await stack.enrolledDevice({ deviceId: 'H2LOCKED1' })
    const h1 = await stack.startProxy({ activeSync: { ...h2Options(fake.url), upstreamHttp2: false } })
    try {
      expect((await eas(cmd('Sync', 'H2LOCKED1'))).status).toBe(200)
      await stack.security.services.commands.issue({ userName: 'alice', deviceId: 'H2LOCKED1', kind: 'lock', issuedBy: 'admin' })
      const seq = await stack.store.latestRevocationSeq()
      await until(() => (stack.proxy.revocationSeq ?? 0) >= seq && (h1.revocationSeq ?? 0) >= seq, 5000)
      const before = fake.requests
      for (const deviceId of ['H2LOCKED1', 'NOSUCHPHONE']) {
        const a2 = await eas(cmd('Sync', deviceId))
        const a1 = await eas(cmd('Sync', deviceId), { port: h1.port })
        expect([a2.status, a2.code, a2.headers['content-type']]).toEqual([a1.status, a1.code, a1.headers['content-type']])
        expect(a2.status).toBe(403)
      }
      expect(fake.requests).toBe(before)
    } finally {
      await stack.stopProxy(h1, 100)
    }
  })

  it('50 concurrent held Pings share the connection already open; with upstreamMaxStreams 10 they open exactly 5', async () => {
    for (const streams of [undefined, 10]) {
      const proxy: ProxyServer = streams === undefined ? stack.proxy : await stack.startProxy({ activeSync: h2Options(fake.url, { upstreamMaxStreams: streams }) })
      try {
        const total = fake.connectionsTotal
        const gauge = await counterValue(proxy.registry, 'gatehouse_proxy_activesync_upstream_connections')
        // All 50 sent at once: a burst must not open a connection per request while the first is set up.
        const all = Array.from({ length: 50 }, () => eas(cmd('Ping'), { body: 'hold=60000', port: proxy.port }))
        await until(() => fake.inFlight >= 50, 20_000)
        expect(fake.inFlight).toBe(50)
        const opened = streams === undefined ? 0 : 5
        expect(fake.connectionsTotal - total).toBe(opened)
        expect(await counterValue(proxy.registry, 'gatehouse_proxy_activesync_upstream_connections')).toBe(gauge + opened)
        expect(fake.releasePings()).toBe(50)
        const answers = await Promise.all(all)
        expect(answers.filter((a) => a.status === 200 && a.body.equals(PING_OK)).length).toBe(50)
      } finally {
        if (streams !== undefined) await stack.stopProxy(proxy, 100)
      }
    }
  }, 60_000)

  it('a device that leaves abandons its request at Exchange (RST_STREAM), the shared connection stays', async () => {
    expect((await eas(cmd('Sync'))).status).toBe(200)
    const aborted = fake.aborted
    const connections = fake.connectionsTotal
    const ac = new AbortController()
    const held = agent.request({ origin: stack.proxyUrl, path: cmd('Ping'), method: 'POST', headers: { authorization: ALICE }, body: 'hold=20000', signal: ac.signal }).catch((e: unknown) => e)
    await until(() => fake.inFlight === 1, 5000)
    ac.abort()
    expect(await held).toBeInstanceOf(Error)
    await until(() => fake.aborted > aborted, 5000)
    expect(fake.aborted).toBe(aborted + 1)
    expect((await eas(cmd('Sync'))).status).toBe(200)
    expect(fake.connectionsTotal).toBe(connections)
  })

  it('RST_STREAM in the middle of an answer cuts that answer only; in the middle of an upload: 502', async () => {
    const resets = await counterValue(stack.proxy.registry, 'gatehouse_proxy_activesync_upstream_errors_total', { kind: 'reset' })
    // A body read whole (shared connection): Exchange resets the stream on its first bytes.
    const small = await eas(cmd('SendMail'), { body: Buffer.alloc(1000, 5), headers: { 'x-fake-fault': 'rst' } })
    expect([small.status, small.code]).toEqual([502, 'GH_ERR_UPSTREAM'])
    const held = eas(cmd('Ping'), { body: 'hold=1500' })
    await until(() => fake.inFlight === 1, 5000)
    const cut = await eas(cmd('GetAttachment'), { headers: { 'x-fake-bytes': String(1024 * 1024), 'x-fake-fault': 'rst' } }).catch((e: unknown) => e)
    // The status line was relayed already: the device's connection is closed mid-body.
    expect(cut).toBeInstanceOf(Error)
    // A streamed upload (its own connection): 502 while the device still sends, then its connection is closed.
    const up = await eas(cmd('SendMail'), { body: Buffer.alloc(300 * 1024, 5), headers: { 'x-fake-fault': 'rst' } }).catch((e: unknown) => e)
    expect(up instanceof Error ? 'closed' : [(up as RawAnswer).status, (up as RawAnswer).code]).toSatisfy((v: unknown) => v === 'closed' || JSON.stringify(v) === '[502,"GH_ERR_UPSTREAM"]')
    const ping = await held
    expect([ping.status, ping.body.equals(PING_OK)]).toEqual([200, true])
    expect(await counterValue(stack.proxy.registry, 'gatehouse_proxy_activesync_upstream_errors_total', { kind: 'reset' })).toBe(resets + 3)
    expect((await eas(cmd('Sync'))).status).toBe(200)
  })

  it('GOAWAY in the middle of an answer: that answer is cut, held Pings on the connection get 502, the next request uses a new connection', async () => {
    const held = eas(cmd('Ping'), { body: 'hold=20000' })
    await until(() => fake.inFlight === 1, 5000)
    const total = fake.connectionsTotal
    const cut = await eas(cmd('GetAttachment'), { headers: { 'x-fake-bytes': String(1024 * 1024), 'x-fake-fault': 'goaway' } }).catch((e: unknown) => e)
    expect(cut).toBeInstanceOf(Error)
    const ping = await held
    expect([ping.status, ping.code]).toEqual([502, 'GH_ERR_UPSTREAM'])
    const after = await eas(cmd('Ping'), { body: 'hold=10' })
    expect([after.status, after.body.equals(PING_OK)]).toEqual([200, true])
    expect(fake.connectionsTotal).toBe(total + 1)
  })

  it('a graceful GOAWAY from Exchange also ends the held Pings on that connection (undici 7): 502 at once, not a hang', async () => {
    const held = Array.from({ length: 5 }, () => eas(cmd('Ping'), { body: 'hold=20000' }))
    await until(() => fake.inFlight === 5, 5000)
    const t0 = Date.now()
    expect(fake.goaway()).toBeGreaterThanOrEqual(1)
    const answers = await Promise.all(held)
    expect(answers.map((a) => a.status)).toEqual([502, 502, 502, 502, 502])
    expect(Date.now() - t0).toBeLessThan(2000)
    const pings = fake.byCommand.get('Ping')!
    expect((await eas(cmd('Ping'), { body: 'hold=10' })).status).toBe(200)
    // Marked idempotent to share connections, but never sent again by undici: one new Ping only.
    expect(fake.byCommand.get('Ping')).toBe(pings + 1)
  })

  it('Exchange dying mid-Ping: the device gets 502 and the proxy stays up (a restarted Exchange is used again)', async () => {
    const dying = await startFakeExchange({ users: { alice: PW }, tls, http2: true })
    const proxy = await stack.startProxy({ activeSync: h2Options(dying.url) })
    try {
      const held = eas(cmd('Ping'), { body: 'hold=20000', port: proxy.port })
      await until(() => dying.inFlight === 1, 5000)
      const t0 = Date.now()
      await dying.close()
      const a = await held
      expect([a.status, a.code]).toEqual([502, 'GH_ERR_UPSTREAM'])
      expect(Date.now() - t0).toBeLessThan(2000)
      const again = await startFakeExchange({ users: { alice: PW }, tls, http2: true, port: dying.port })
      extra.push(again)
      const s = await eas(cmd('Sync'), { port: proxy.port, body: 'back' })
      expect([s.status, s.body.subarray(WBXML_HEADER.length).toString()]).toEqual([200, 'back'])
      expect(again.lastHttpVersion).toBe('2.0')
    } finally {
      await stack.stopProxy(proxy, 100)
    }
  })

  it('an Exchange that does not select h2 by ALPN: 502, a warning in the log, nothing sent to it', async () => {
    const h1only = await startFakeExchange({ users: { alice: PW }, tls })
    extra.push(h1only)
    const proxy = await stack.startProxy({ activeSync: h2Options(h1only.url) })
    try {
      const a = await eas(cmd('Sync'), { port: proxy.port })
      expect([a.status, a.code]).toEqual([502, 'GH_ERR_UPSTREAM'])
      expect(h1only.requests).toBe(0)
      expect(stack.logs.text).toContain('activesync_no_http2')
    } finally {
      await stack.stopProxy(proxy, 100)
    }
  })

  it('an http upstream with upstreamHttp2 is refused at start', async () => {
    await expect(stack.startProxy({ activeSync: h2Options('http://127.0.0.1:1') })).rejects.toThrow(/HTTP\/2 to Exchange needs an https upstream/)
  })
})
