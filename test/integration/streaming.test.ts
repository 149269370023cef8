/**
 * Bodies streamed through the proxy record by record, both ways, over real TLS: integrity at
 * every record boundary, what the upstream sees when a streamed envelope fails half-way (an
 * aborted request, never a complete one), truncated answers reported by the device SDK,
 * backpressure both ways, limits, and memory that does not grow with the body.
 */
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { Agent, type Dispatcher } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { GatehouseDevice } from '../../src/client/device.js'
import { ENVELOPE_MEDIA_TYPE, MAX_RECORD_PLAINTEXT, SESSION_HEADER } from '../../src/protocol/constants.js'
import { EnvelopeEncoder } from '../../src/protocol/envelope.js'
import { encodeRequestHead } from '../../src/protocol/head.js'
import type { ProxyServer } from '../../src/proxy/server.js'
import { counterValue, EnvelopeCrafter, PASSWORD, startStack, type SessionKeys, type Stack } from '../helpers/stack.js'
import { PATTERN, patternChunks, patternSha256, startStreamingUpstream, type StreamingUpstream } from '../helpers/streamingUpstream.js'

const KiB = 1024
const MiB = 1024 * KiB

async function digest(body: AsyncIterable<unknown>): Promise<{ bytes: number; sha256: string }> {
  const h = createHash('sha256')
  let bytes = 0
  for await (const c of body) {
    const b = c as Buffer
    bytes += b.length
    h.update(b)
  }
  return { bytes, sha256: h.digest('hex') }
}

async function text(body: AsyncIterable<unknown>): Promise<string> {
  const parts: Buffer[] = []
  for await (const c of body) parts.push(c as Buffer)
  return Buffer.concat(parts).toString('utf8')
}

/** A request envelope as separate parts: [preamble + head record, body record 1, 2, …]. */
function envelopeParts(s: SessionKeys, method: string, target: string, body: Buffer, o: { seq: number; ts?: number }) {
  const enc = new EnvelopeEncoder({ kind: 'request', sessionId: s.sessionId, requestLine: `${method} ${target}`, key: s.c2s, seq: o.seq, timestampMs: o.ts ?? Date.now() })
  const parts: Buffer[] = [Buffer.concat([enc.preamble, enc.record(encodeRequestHead({ headers: [['content-type', 'application/octet-stream']] }), false)])]
  parts.push(...enc.body(body))
  return parts
}

/** A full garbage collection (V8's gc(), enabled at run time): what stays is what is retained. */
setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

/**
 * Peak growth while `run` goes, in MiB: of live memory (heap and buffers right after a full
 * collection, sampled every 100 ms: garbage not yet collected does not count) and of RSS.
 */
async function memoryGrowth<T>(run: () => Promise<T>): Promise<{ result: T; live: number; rss: number }> {
  const live = () => {
    gc()
    const m = process.memoryUsage()
    // external includes arrayBuffers (Buffers' memory)
    return { js: m.heapUsed + m.external, rss: m.rss }
  }
  const base = live()
  const peak = { ...base }
  const timer = setInterval(() => {
    const m = live()
    peak.js = Math.max(peak.js, m.js)
    peak.rss = Math.max(peak.rss, m.rss)
  }, 100)
  try {
    const result = await run()
    return { result, live: (peak.js - base.js) / MiB, rss: (peak.rss - base.rss) / MiB }
  } finally {
    clearInterval(timer)
  }
}

describe('proxy: streamed bodies', () => {
  let stack: Stack
  let up: StreamingUpstream
  let agent: Agent
  let dev: GatehouseDevice
  let cr: EnvelopeCrafter
  let seq = 0

  /** Send envelope parts to the proxy, `gapMs` apart (so the proxy reads them as they come). */
  const sendParts = async (p: ProxyServer, s: SessionKeys, method: string, target: string, parts: Iterable<Buffer> | AsyncIterable<Buffer>) => {
    const res = await agent.request({
      origin: `https://localhost:${p.port}`, path: target, method: method as Dispatcher.HttpMethod,
      headers: { [SESSION_HEADER]: s.sessionId, 'content-type': ENVELOPE_MEDIA_TYPE },
      body: Readable.from(parts, { objectMode: false }),
    })
    const raw = Buffer.from(await res.body.arrayBuffer().catch(() => new ArrayBuffer(0)))
    let code: string | undefined
    try {
      code = (JSON.parse(raw.toString('utf8')) as { error?: { code?: string } }).error?.code
    } catch {
      code = undefined
    }
    return { status: res.statusCode, code, type: String(res.headers['content-type'] ?? '') }
  }

  async function* slowly(parts: Buffer[], gapMs = 40, after?: () => Promise<void>): AsyncGenerator<Buffer> {
    for (const part of parts) {
      yield part
      await sleep(gapMs)
    }
    await after?.()
  }

  beforeAll(async () => {
    up = await startStreamingUpstream()
    stack = await startStack({
      routes: [{ prefix: '/s/', upstream: up.url, stripPrefix: true, timeoutSeconds: 10 }],
      proxy: { limits: { maxBodyBytes: 256 * MiB, maxResponseBytes: 256 * MiB } },
    })
    agent = new Agent({ connect: { ca: stack.ca } })
    dev = await stack.enrolledDevice()
    const crafterDevice = stack.device()
    await crafterDevice.enroll('alice', PASSWORD)
    cr = new EnvelopeCrafter(crafterDevice, agent, () => stack.proxy.port)
  })
  afterAll(async () => {
    await agent?.close()
    await stack?.close()
    await up?.close()
  })

  it.each([1, 64 * KiB, 64 * KiB + 1, 5 * MiB])('uploads %i bytes streamed, intact, and the upstream gets exactly them', async (n) => {
    const before = up.requests.length
    const res = await dev.requestStream('POST', '/s/sink', { headers: [['content-type', 'application/octet-stream']], body: Readable.from(patternChunks(n, 10_000)) })
    expect(res.status).toBe(200)
    expect(JSON.parse(await text(res.body))).toEqual({ bytes: n, sha256: patternSha256(n) })
    expect(up.requests.length).toBe(before + 1)
    const seen = up.requests[before]!
    expect(seen).toMatchObject({ complete: true, aborted: false, bytes: n })
    expect(seen.headers['gatehouse-user']).toBe('alice')
    // Large bodies reach the upstream as they come (chunked), not after the proxy read them whole.
    if (n === 5 * MiB) expect([seen.headers['transfer-encoding'], seen.headers['content-length']]).toEqual(['chunked', undefined])
  })

  it.each([1, 64 * KiB, 64 * KiB + 1, 5 * MiB])('downloads %i bytes streamed, intact, with and without a content-length', async (n) => {
    for (const chunked of ['0', '1']) {
      const res = await dev.requestStream('GET', `/s/stream?n=${n}&chunked=${chunked}`)
      expect(res.status).toBe(200)
      expect(await digest(res.body)).toEqual({ bytes: n, sha256: patternSha256(n) })
    }
    // The buffered SDK call reads the same streamed answer.
    const whole = await dev.request('GET', `/s/stream?n=${n}`)
    expect(whole.body.equals(Buffer.concat([...patternChunks(n)]))).toBe(true)
  })

  it('echoes 5 MiB streamed up and down at once', async () => {
    const n = 5 * MiB
    const res = await dev.requestStream('POST', '/s/echo', { headers: [['content-type', 'application/x-test']], body: Readable.from(patternChunks(n, 100_000)) })
    expect(res.status).toBe(200)
    expect(res.header('content-type')).toBe('application/x-test')
    expect(await digest(res.body)).toEqual({ bytes: n, sha256: patternSha256(n) })
  })

  it('a record that fails authentication mid-body aborts the upstream request (never completed) and answers 400 GH_ERR_DECRYPT', async () => {
    const s = await cr.freshSession()
    const body = Buffer.concat([...patternChunks(10 * MAX_RECORD_PLAINTEXT)])
    const parts = envelopeParts(s, 'POST', '/s/sink', body, { seq: ++seq })
    // Record 6 of 10: flip one ciphertext byte.
    parts[6] = Buffer.from(parts[6]!)
    parts[6][100] = parts[6][100]! ^ 0x01
    const before = up.requests.length
    const failuresBefore = await counterValue(stack.proxy.registry, 'gatehouse_proxy_decrypt_failures_total', { reason: 'auth' })
    const a = await sendParts(stack.proxy, s, 'POST', '/s/sink', slowly(parts, 40, () => sleep(2000)))
    expect([a.status, a.code]).toEqual([400, 'GH_ERR_DECRYPT'])
    expect(up.requests.length).toBe(before + 1)
    const seen = await up.settled(before)
    // The upstream got the first records' plaintext, then an aborted request: never a complete one.
    expect(seen.aborted).toBe(true)
    expect(seen.complete).toBe(false)
    expect(seen.bytes).toBeGreaterThan(0)
    expect(seen.bytes).toBeLessThan(6 * MAX_RECORD_PLAINTEXT)
    expect(await counterValue(stack.proxy.registry, 'gatehouse_proxy_decrypt_failures_total', { reason: 'auth' })).toBe(failuresBefore + 1)
  })

  it('a body cut mid-record (the connection drops) aborts the upstream request', async () => {
    const s = await cr.freshSession()
    const parts = envelopeParts(s, 'POST', '/s/sink', Buffer.concat([...patternChunks(8 * MAX_RECORD_PLAINTEXT)]), { seq: ++seq })
    const before = up.requests.length
    async function* cutShort(): AsyncGenerator<Buffer> {
      yield* slowly(parts.slice(0, 5), 40)
      yield parts[5]!.subarray(0, 1000)
      await sleep(100)
      throw new Error('device lost its network')
    }
    await expect(sendParts(stack.proxy, s, 'POST', '/s/sink', cutShort())).rejects.toThrow()
    const seen = await up.settled(before)
    expect(seen).toMatchObject({ aborted: true, complete: false })
    expect(seen.bytes).toBeGreaterThan(0)
  })

  it('a body that ends before its FINAL record answers 400 GH_ERR_TRUNCATED and aborts the upstream request', async () => {
    const s = await cr.freshSession()
    const parts = envelopeParts(s, 'POST', '/s/sink', Buffer.concat([...patternChunks(6 * MAX_RECORD_PLAINTEXT)]), { seq: ++seq })
    const before = up.requests.length
    const a = await sendParts(stack.proxy, s, 'POST', '/s/sink', slowly(parts.slice(0, 4), 40))
    expect([a.status, a.code]).toEqual([400, 'GH_ERR_TRUNCATED'])
    const seen = await up.settled(before)
    expect(seen).toMatchObject({ aborted: true, complete: false })
  })

  it('checks timestamp and replay on the head record: refused before any byte reaches the upstream', async () => {
    const s = await cr.freshSession()
    const body = Buffer.concat([...patternChunks(4 * MAX_RECORD_PLAINTEXT)])
    const before = up.requests.length
    const stale = envelopeParts(s, 'POST', '/s/sink', body, { seq: ++seq, ts: Date.now() - 600_000 })
    const a = await sendParts(stack.proxy, s, 'POST', '/s/sink', slowly(stale, 40, () => sleep(1000)))
    expect([a.status, a.code]).toEqual([409, 'GH_ERR_STALE'])
    expect(up.requests.length).toBe(before)

    const good = envelopeParts(s, 'POST', '/s/sink', body, { seq: ++seq })
    const ok = await sendParts(stack.proxy, s, 'POST', '/s/sink', slowly(good, 20))
    expect(ok.status).toBe(200)
    expect(up.requests.length).toBe(before + 1)
    const again = await sendParts(stack.proxy, s, 'POST', '/s/sink', slowly(good, 20, () => sleep(1000)))
    expect([again.status, again.code]).toEqual([409, 'GH_ERR_REPLAY'])
    expect(up.requests.length).toBe(before + 1)
  })

  it('a streamed body over limits.maxBodyBytes answers 413 and aborts the upstream request', async () => {
    const p = await stack.startProxy({ limits: { maxBodyBytes: 1 * MiB, maxResponseBytes: 8 * MiB } })
    const s = await cr.freshSession()
    const parts = envelopeParts(s, 'POST', '/s/sink', Buffer.concat([...patternChunks(2 * MiB)]), { seq: ++seq })
    const before = up.requests.length
    const a = await sendParts(p, s, 'POST', '/s/sink', slowly(parts, 15, () => sleep(1000)))
    expect([a.status, a.code]).toEqual([413, 'GH_ERR_TOO_LARGE'])
    const seen = await up.settled(before)
    expect(seen).toMatchObject({ aborted: true, complete: false })
    expect(seen.bytes).toBeLessThan(1 * MiB)
    await stack.stopProxy(p)
  })

  it('an upstream that dies mid-answer: the device SDK reports the truncation (no FINAL record)', async () => {
    const cutBefore = await counterValue(stack.proxy.registry, 'gatehouse_proxy_responses_cut_total', { reason: 'upstream' })
    for (const chunked of ['0', '1']) {
      const target = `/s/stream?n=${4 * MiB}&dieAfter=${1 * MiB + 123}&chunked=${chunked}`
      const res = await dev.requestStream('GET', target)
      expect(res.status).toBe(200)
      await expect(digest(res.body)).rejects.toMatchObject({ name: 'TruncatedError', code: 'GH_ERR_TRUNCATED' })
      await expect(dev.request('GET', target)).rejects.toMatchObject({ name: 'TruncatedError', code: 'GH_ERR_TRUNCATED' })
    }
    expect(await counterValue(stack.proxy.registry, 'gatehouse_proxy_responses_cut_total', { reason: 'upstream' })).toBe(cutBefore + 4)
    // The device's connections recover: the next request is served.
    expect((await dev.request('GET', `/s/stream?n=${100 * KiB}`)).status).toBe(200)
  })

  it('an answer over limits.maxResponseBytes: 502 when its length says so, cut when it streams past the limit', async () => {
    const p = await stack.startProxy({ limits: { maxBodyBytes: 1 * MiB, maxResponseBytes: 1 * MiB } })
    const d = await stack.enrolledDevice({ proxyUrl: `https://localhost:${p.port}` })
    await expect(d.requestStream('GET', `/s/stream?n=${2 * MiB}`)).rejects.toMatchObject({ status: 502, code: 'GH_ERR_UPSTREAM' })
    const res = await d.requestStream('GET', `/s/stream?n=${2 * MiB}&chunked=1`)
    await expect(digest(res.body)).rejects.toMatchObject({ code: 'GH_ERR_TRUNCATED' })
    expect(await counterValue(p.registry, 'gatehouse_proxy_responses_cut_total', { reason: 'too_large' })).toBe(1)
    // Within the limit: fine.
    const ok = await d.requestStream('GET', `/s/stream?n=${1 * MiB}&chunked=1`)
    expect(await digest(ok.body)).toEqual({ bytes: MiB, sha256: patternSha256(MiB) })
    await stack.stopProxy(p)
  })

  it('holds the upstream back while a device reads slowly: 32 MiB never pile up in the proxy', async () => {
    const n = 32 * MiB
    const before = up.requests.length
    const res = await dev.requestStream('GET', `/s/stream?n=${n}`)
    const h = createHash('sha256')
    let read = 0
    let lead = 0
    for await (const c of res.body) {
      h.update(c as Buffer)
      read += (c as Buffer).length
      // Twice, after 4 and 8 MiB, stop reading for a while: the upstream must stall too.
      if ((read >= 4 * MiB && read - (c as Buffer).length < 4 * MiB) || (read >= 8 * MiB && read - (c as Buffer).length < 8 * MiB)) {
        await sleep(700)
        lead = Math.max(lead, up.requests[before]!.sent - read)
      }
    }
    expect({ read, sha256: h.digest('hex') }).toEqual({ read: n, sha256: patternSha256(n) })
    // How far the upstream got ahead of the device: the kernel's socket buffers on both legs (about
    // 12 MiB measured here) plus a record or two in the proxy. A proxy that kept reading from the
    // upstream while the device did not would let it send the rest of the body (28 MiB).
    expect(lead).toBeLessThan(20 * MiB)
  })

  it('pauses a fast device while the upstream reads slowly: a 32 MiB upload arrives whole', async () => {
    const n = 32 * MiB
    // Without pausing the device the proxy would buffer what the upstream has not read yet, up to
    // its cap (8 MiB), and then refuse the request with 503 GH_ERR_UPSTREAM_BACKPRESSURE.
    // One connection: the requests after the upload must travel on the connection it used.
    const d = await stack.enrolledDevice({ connections: 1 })
    const res = await d.requestStream('POST', '/s/sink?readDelayMs=2', { body: Readable.from(patternChunks(n, 256 * KiB)) })
    expect(res.status).toBe(200)
    expect(JSON.parse(await text(res.body))).toEqual({ bytes: n, sha256: patternSha256(n) })
    // The last records came in while the device was paused: the connection must not stay paused.
    for (let i = 0; i < 3; i++) expect((await d.request('GET', `/s/stream?n=${1000}`)).status).toBe(200)
  })

  it('64 MiB up and 64 MiB down: memory grows well under the body size, SHA-256 equal at both ends', async () => {
    const n = 64 * MiB
    const upload = await memoryGrowth(async () => {
      const res = await dev.requestStream('POST', '/s/sink', { body: Readable.from(patternChunks(n, 1 * MiB)) })
      return JSON.parse(await text(res.body)) as unknown
    })
    expect(upload.result).toEqual({ bytes: n, sha256: patternSha256(n) })
    const download = await memoryGrowth(async () => digest((await dev.requestStream('GET', `/s/stream?n=${n}`)).body))
    expect(download.result).toEqual({ bytes: n, sha256: patternSha256(n) })
    // The whole process (device, proxy and upstream together) stays far below one body.
    for (const m of [upload, download]) {
      expect(m.live).toBeLessThan(48)
      expect(m.rss).toBeLessThan(48)
    }
  })

  it('with the crypto pool on: streamed bodies round-trip, tampering is refused, pool gauges are exported', async () => {
    const p = await stack.startProxy({ crypto: { poolThresholdBytes: 16 * KiB, poolThreads: 1 } })
    const d = await stack.enrolledDevice({ proxyUrl: `https://localhost:${p.port}` })
    const n = 5 * MiB + 17
    const upRes = await d.requestStream('POST', '/s/sink', { body: Readable.from(patternChunks(n, 100_000)) })
    expect(JSON.parse(await text(upRes.body))).toEqual({ bytes: n, sha256: patternSha256(n) })
    const downRes = await d.requestStream('GET', `/s/stream?n=${n}`)
    expect(await digest(downRes.body)).toEqual({ bytes: n, sha256: patternSha256(n) })
    // Small records stay inline; the answer is the same.
    expect((await d.request('GET', `/s/stream?n=${1000}`)).body.equals(PATTERN.subarray(0, 1000))).toBe(true)

    const s = await cr.freshSession()
    const parts = envelopeParts(s, 'POST', '/s/sink', Buffer.concat([...patternChunks(6 * MAX_RECORD_PLAINTEXT)]), { seq: ++seq })
    parts[4] = Buffer.from(parts[4]!)
    parts[4][50] = parts[4][50]! ^ 0x80
    const before = up.requests.length
    const a = await sendParts(p, s, 'POST', '/s/sink', slowly(parts, 30, () => sleep(1000)))
    expect([a.status, a.code]).toEqual([400, 'GH_ERR_DECRYPT'])
    expect(await up.settled(before)).toMatchObject({ aborted: true, complete: false })

    const metrics = await p.registry.metrics()
    expect(metrics).toMatch(/^gatehouse_proxy_crypto_pool_queue_depth(\{[^}]*\})? \d+$/m)
    const utilization = Number(/^gatehouse_proxy_crypto_pool_utilization(?:\{[^}]*\})? (\S+)$/m.exec(metrics)?.[1])
    expect(utilization).toBeGreaterThan(0)
    expect(utilization).toBeLessThanOrEqual(1)
    // Off by default: the main proxy exports no pool gauges.
    expect(await stack.proxy.registry.metrics()).not.toContain('crypto_pool')
    await stack.stopProxy(p)
  })
})
