/**
 * The proxy's connection-level limits against hostile clients on raw TLS sockets, through the real
 * proxy (uWebSockets.js, real TLS): oversized headers (431), slowloris headers (closed by uWS in
 * 8–12 s), an idle keep-alive connection (closed in 8–12 s), a body that stops mid-way (408, the
 * streamed upstream request aborted), too many requests in flight (503), a slow upstream (504);
 * and the access log those requests leave. The measured times are printed (docs/operations.md).
 */
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { GatehouseDevice } from '../../src/client/device.js'
import { ENVELOPE_MEDIA_TYPE, SESSION_HEADER } from '../../src/protocol/constants.js'
import type { ProxyServer } from '../../src/proxy/server.js'
import { counterValue, startStack, type Stack } from '../helpers/stack.js'

/** What a raw TLS conversation got: the bytes, the first status, and when the server closed. */
interface Conversation {
  text: string
  status: number | undefined
  code: string | undefined
  /** Milliseconds from the last write to the server closing the connection; undefined if it did not. */
  closedAfterMs: number | undefined
}

/**
 * Connect over TLS and play `steps`: a string or Buffer is written, a number is a pause in ms.
 * Then wait up to `waitMs` for the server to close. `socket` gives access to the open connection.
 */
async function converse(port: number, ca: Buffer, steps: (string | Buffer | number)[], waitMs: number, onSocket?: (s: TLSSocket) => void): Promise<Conversation> {
  const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca })
  onSocket?.(socket)
  const chunks: Buffer[] = []
  let closedAt: number | undefined
  const closed = new Promise<void>((resolve) => {
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('error', () => undefined)
    socket.on('close', () => {
      closedAt = performance.now()
      resolve()
    })
  })
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', () => resolve())
    socket.once('error', reject)
  })
  let lastWrite = performance.now()
  for (const step of steps) {
    if (closedAt !== undefined) break
    if (typeof step === 'number') await new Promise((r) => setTimeout(r, step))
    else {
      await new Promise<void>((resolve) => socket.write(step, () => resolve()))
      lastWrite = performance.now()
    }
  }
  let timer: NodeJS.Timeout | undefined
  await Promise.race([closed, new Promise<void>((r) => { timer = setTimeout(r, waitMs) })])
  clearTimeout(timer)
  socket.destroy()
  const text = Buffer.concat(chunks).toString('latin1')
  const m = /^HTTP\/1\.1 (\d{3})/.exec(text)
  const code = /"code":"(GH_ERR_[A-Z_]+)"/.exec(text)?.[1]
  return { text, status: m ? Number(m[1]) : undefined, code, closedAfterMs: closedAt === undefined ? undefined : Math.round(closedAt - lastWrite) }
}

const envelopeHead = (method: string, target: string, sid: string, length: number) =>
  `${method} ${target} HTTP/1.1\r\nhost: localhost\r\n${SESSION_HEADER}: ${sid}\r\ncontent-type: ${ENVELOPE_MEDIA_TYPE}\r\ncontent-length: ${length}\r\n\r\n`

/** An upstream that records how each request ended: its whole body read, or aborted mid-way. */
interface RecordingUpstream { url: string; seen: { path: string; bytes: number; ended: 'complete' | 'aborted' | 'open' }[]; close(): Promise<void> }

async function startRecordingUpstream(): Promise<RecordingUpstream> {
  const seen: RecordingUpstream['seen'] = []
  const server: Server = createServer((req: IncomingMessage, res) => {
    const rec = { path: req.url ?? '', bytes: 0, ended: 'open' as 'complete' | 'aborted' | 'open' }
    seen.push(rec)
    req.on('data', (c: Buffer) => { rec.bytes += c.length })
    req.on('end', () => {
      rec.ended = 'complete'
      res.writeHead(200, { 'content-type': 'text/plain' }).end(`got ${rec.bytes}`)
    })
    req.on('close', () => { if (rec.ended === 'open') rec.ended = 'aborted' })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    }),
  }
}

const IN_FLIGHT = 'gatehouse_proxy_requests_in_flight'
const REFUSALS = 'gatehouse_proxy_limit_refusals_total'

async function gauge(p: ProxyServer, name: string): Promise<number> {
  const m = p.registry.getSingleMetric(name)
  return (await m!.get()).values.reduce((sum, v) => sum + v.value, 0)
}

describe('proxy: connection-level limits against hostile clients', () => {
  let stack: Stack
  let up: RecordingUpstream
  let dev: GatehouseDevice
  let demo: string
  const figures: string[] = []
  let seq = 5000

  /** Seal a request for the device's current session with our own sequence numbers. */
  const seal = (method: string, target: string, body?: Buffer) => {
    const s = dev.currentSession!
    return dev.seal(s, ++seq, Date.now() + s.clockOffset, `${method} ${target}`, body ? { body, headers: [['content-type', 'application/octet-stream']] } : {})
  }
  const sid = () => dev.currentSession!.sessionId

  beforeAll(async () => {
    up = await startRecordingUpstream()
    stack = await startStack()
    demo = `http://127.0.0.1:${stack.upstream.port}`
    dev = await stack.enrolledDevice({ connections: 16 })
  })

  afterAll(async () => {
    console.log(`\nproxy limits, measured:\n  ${figures.join('\n  ')}\n`)
    await stack?.close()
    await up?.close()
  })

  it('answers 431 GH_ERR_HEADERS_TOO_LARGE to a header block over maxHeaderBytes, and closes', async () => {
    const p = await stack.startProxy({ limits: { maxBodyBytes: 1 << 20, maxResponseBytes: 1 << 20, maxHeaderBytes: 4096 } })
    const pad = (n: number) => `x-pad: ${'a'.repeat(n)}\r\n`
    const over = await converse(p.port, stack.ca, [`GET /demo/hello HTTP/1.1\r\nhost: localhost\r\n${pad(5000)}\r\n`], 3000)
    expect([over.status, over.code]).toEqual([431, 'GH_ERR_HEADERS_TOO_LARGE'])
    expect(over.closedAfterMs, 'closed at once').toBeLessThan(1000)
    // Just under the limit: it reaches the request path (no session: 401).
    const under = await converse(p.port, stack.ca, [`GET /demo/hello HTTP/1.1\r\nhost: localhost\r\n${pad(3900)}\r\n`], 3000)
    expect([under.status, under.code]).toEqual([401, 'GH_ERR_SESSION_INVALID'])
    // A session and a sealed request with the same padding over the limit: refused before the
    // session is looked up or the body read.
    const body = seal('GET', '/demo/hello')
    const sealed = await converse(p.port, stack.ca, [envelopeHead('GET', '/demo/hello', sid(), body.length).replace('\r\n\r\n', `\r\n${pad(5000)}\r\n`), body], 3000)
    expect(sealed.status).toBe(431)
    expect(await counterValue(p.registry, REFUSALS, { limit: 'header_bytes' })).toBe(2)
    expect(await counterValue(p.registry, 'gatehouse_proxy_requests_total', { route: '/demo/', status: '431' })).toBe(2)
    await stack.stopProxy(p, 100)
  })

  it('uWS closes, without an answer, a header block over 4 KiB split over two reads (this build ignores UWS_HTTP_MAX_HEADERS_SIZE)', async () => {
    const p = await stack.startProxy({ limits: { maxBodyBytes: 1 << 20, maxResponseBytes: 1 << 20, maxHeaderBytes: 65536 } })
    expect(process.env.UWS_HTTP_MAX_HEADERS_SIZE, 'exported before uWS loaded, for builds that read it').toMatch(/^\d+$/)
    const split = await converse(p.port, stack.ca, ['GET /demo/hello HTTP/1.1\r\nhost: localhost\r\nx-pad: ', 200, `${'a'.repeat(5000)}\r\n\r\n`], 3000)
    expect(split.status).toBeUndefined()
    expect(split.closedAfterMs).toBeLessThan(1000)
    // The same bytes in one read pass through uWS (and our 64 KiB limit): 401, no session.
    const whole = await converse(p.port, stack.ca, [`GET /demo/hello HTTP/1.1\r\nhost: localhost\r\nx-pad: ${'a'.repeat(5000)}\r\n\r\n`], 3000)
    expect(whole.status).toBe(401)
    await stack.stopProxy(p, 100)
  })

  it('slowloris: header bytes trickled every 500 ms are cut by uWS within 8–15 s, holding nothing, while others are served', async () => {
    const p = stack.proxy
    const trickle = (n: number) => {
      const steps: (string | number)[] = []
      for (const ch of `GET /demo/hello HTTP/1.1\r\nhost: localhost\r\nx-slow-${n}: ${'b'.repeat(60)}\r\n\r\n`) steps.push(ch, 500)
      return steps
    }
    const started = performance.now()
    const attackers = Array.from({ length: 20 }, (_, i) => converse(p.port, stack.ca, trickle(i), 20_000))
    await new Promise((r) => setTimeout(r, 2000))
    // Served meanwhile; the trickling requests never reached the request path.
    const ok = await dev.request('GET', '/demo/hello')
    expect(ok.status).toBe(200)
    expect(await gauge(p, IN_FLIGHT)).toBe(0)
    const results = await Promise.all(attackers)
    const cutAfter = Math.round(performance.now() - started)
    for (const r of results) expect(r.status, r.text).toBeUndefined()
    // Each was cut while still trickling: fewer bytes sent than the whole header block.
    expect(cutAfter).toBeGreaterThan(7000)
    expect(cutAfter).toBeLessThan(15_000)
    figures.push(`slowloris: 20 connections trickling a header byte every 500 ms, all closed without an answer after ${(cutAfter / 1000).toFixed(1)} s`)
  }, 30_000)

  it('closes an idle keep-alive connection after 8–12 s (uWS), after a request it answered', async () => {
    const body = seal('GET', '/demo/hello')
    const c = await converse(stack.proxy.port, stack.ca, [envelopeHead('GET', '/demo/hello', sid(), body.length), body], 20_000)
    expect(c.status).toBe(200)
    expect(c.closedAfterMs).toBeGreaterThan(7000)
    expect(c.closedAfterMs).toBeLessThan(13_000)
    figures.push(`idle keep-alive connection closed ${((c.closedAfterMs ?? 0) / 1000).toFixed(1)} s after its answer`)
  }, 30_000)

  it('a body that stops mid-way gets 408 GH_ERR_REQUEST_TIMEOUT after bodyTimeoutSeconds; the streamed upstream request is aborted', async () => {
    const p = await stack.startProxy({
      limits: { maxBodyBytes: 1 << 20, maxResponseBytes: 1 << 20, bodyTimeoutSeconds: 2 },
      routes: [{ prefix: '/rec/', upstream: up.url, stripPrefix: true, timeoutSeconds: 30 }],
    })
    // Five records of body: the proxy streams once the head and one body record authenticated.
    const payload = Buffer.alloc(300_000, 0x61)
    const body = seal('POST', '/rec/upload', payload)
    const half = body.subarray(0, 150_000)
    const before = up.seen.length
    const started = performance.now()
    const c = await converse(p.port, stack.ca, [envelopeHead('POST', '/rec/upload', sid(), body.length), half], 10_000)
    const tookMs = Math.round(performance.now() - started)
    expect([c.status, c.code]).toEqual([408, 'GH_ERR_REQUEST_TIMEOUT'])
    expect(c.closedAfterMs).toBeGreaterThanOrEqual(1900)
    expect(c.closedAfterMs).toBeLessThan(3500)
    await expect.poll(() => up.seen.slice(before).map((r) => [r.path, r.ended])).toEqual([['/upload', 'aborted']])
    expect(up.seen.at(-1)!.bytes).toBeLessThan(payload.length)
    expect(await counterValue(p.registry, REFUSALS, { limit: 'body_timeout' })).toBe(1)
    expect(await counterValue(p.registry, 'gatehouse_proxy_requests_total', { route: '/rec/', status: '408' })).toBe(1)
    // Control: the same request sent whole reaches the upstream complete.
    const whole = seal('POST', '/rec/upload', payload)
    const done = await converse(p.port, stack.ca, [envelopeHead('POST', '/rec/upload', sid(), whole.length), whole], 1500)
    expect(done.status).toBe(200)
    expect(up.seen.at(-1)).toMatchObject({ ended: 'complete', bytes: payload.length })
    figures.push(`body stalled after 150 kB (bodyTimeoutSeconds 2): 408 ${((c.closedAfterMs ?? 0) / 1000).toFixed(1)} s after the last byte (${tookMs} ms in all), upstream request aborted`)
    await stack.stopProxy(p, 100)
  }, 20_000)

  it('answers 503 GH_ERR_OVERLOADED (Retry-After: 1) past maxConcurrentRequests in flight, and recovers', async () => {
    const p = await stack.startProxy({
      limits: { maxBodyBytes: 1 << 20, maxResponseBytes: 1 << 20, maxConcurrentRequests: 4 },
      routes: [{ prefix: '/demo/', upstream: demo, stripPrefix: true, timeoutSeconds: 10 }],
    })
    const slow = Array.from({ length: 4 }, () => {
      const b = seal('GET', '/demo/slow?ms=1500')
      return converse(p.port, stack.ca, [envelopeHead('GET', '/demo/slow?ms=1500', sid(), b.length), b], 3000)
    })
    await expect.poll(() => gauge(p, IN_FLIGHT)).toBe(4)
    // A fifth, even without a session: refused before any work, connection closed.
    const refused = await converse(p.port, stack.ca, ['GET /demo/hello HTTP/1.1\r\nhost: localhost\r\n\r\n'], 3000)
    expect([refused.status, refused.code]).toEqual([503, 'GH_ERR_OVERLOADED'])
    expect(refused.text).toMatch(/\r\nretry-after: 1\r\n/i)
    expect(refused.closedAfterMs).toBeLessThan(1000)
    expect((await Promise.all(slow)).map((r) => r.status)).toEqual([200, 200, 200, 200])
    expect(await counterValue(p.registry, 'gatehouse_proxy_requests_overflow_total')).toBe(1)
    const b = seal('GET', '/demo/hello')
    expect((await converse(p.port, stack.ca, [envelopeHead('GET', '/demo/hello', sid(), b.length), b], 500)).status).toBe(200)
    await stack.stopProxy(p, 100)
  })

  it('answers 504 GH_ERR_UPSTREAM_TIMEOUT when the route\'s upstream exceeds timeoutSeconds', async () => {
    const p = await stack.startProxy({ routes: [{ prefix: '/demo/', upstream: demo, stripPrefix: true, timeoutSeconds: 1 }] })
    const b = seal('GET', '/demo/slow?ms=3000')
    const started = performance.now()
    const c = await converse(p.port, stack.ca, [envelopeHead('GET', '/demo/slow?ms=3000', sid(), b.length), b], 2500)
    const ms = performance.now() - started
    expect([c.status, c.code]).toEqual([504, 'GH_ERR_UPSTREAM_TIMEOUT'])
    expect(ms).toBeGreaterThan(900)
    expect(ms).toBeLessThan(4000)
    await stack.stopProxy(p, 100)
  })

  it('logs one access line per request: route, method, status, times, bytes, address; no session id, query or header', async () => {
    // Another device: this one's sequence numbers were taken over by seal() above.
    const d = await stack.enrolledDevice()
    const r = await d.request('GET', '/demo/hello?token=s3cr3t-in-query', { headers: [['x-secret-header', 'hdr-v4lue']] })
    expect(r.status).toBe(200)
    const lines = stack.logs.lines.filter((l) => l.includes('"event":"access"')).map((l) => JSON.parse(l) as Record<string, unknown>)
    const line = lines.filter((l) => l.route === '/demo/' && l.status === 200).at(-1)!
    expect(Object.keys(line).sort()).toEqual(['bytesIn', 'bytesOut', 'durationMs', 'event', 'level', 'method', 'msg', 'pid', 'remote', 'route', 'status', 'time', 'upstreamMs'])
    expect(line).toMatchObject({ level: 'info', method: 'GET', remote: '127.0.0.1', msg: 'request' })
    expect(line.bytesIn as number).toBeGreaterThan(0)
    expect(line.bytesOut as number).toBeGreaterThan(0)
    expect(line.upstreamMs as number).toBeLessThanOrEqual(line.durationMs as number)
    // Refusals too (431, 503, 408 above, 401 here), with the address.
    expect(lines.some((l) => l.status === 431 && l.remote === '127.0.0.1')).toBe(true)
    expect(lines.some((l) => l.status === 503)).toBe(true)
    const text = stack.logs.text
    expect(text).not.toContain('s3cr3t-in-query')
    expect(text).not.toContain('hdr-v4lue')
    expect(text).not.toContain(d.currentSession!.sessionId)
    expect(text).not.toContain(dev.currentSession!.sessionId)
  })
})
