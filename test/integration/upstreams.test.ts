/**
 * src/proxy/upstreams.ts against real loopback servers, without the rest of the proxy: which
 * failures are retried and where, what marks a target down and what must not, cancellation, and
 * the answers of one active health check.
 */
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net'
import { Registry } from 'prom-client'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { proxyMetrics } from '../../src/proxy/metrics.js'
import type { Route } from '../../src/proxy/routeTable.js'
import { TargetHealth } from '../../src/proxy/upstreamHealth.js'
import { HealthChecker } from '../../src/proxy/upstreamHealthCheck.js'
import { Upstreams, type ForwardRequest } from '../../src/proxy/upstreams.js'
import { closedPort, counterValue } from '../helpers/stack.js'

const closers: (() => Promise<unknown>)[] = []
afterAll(async () => {
  for (const c of closers.reverse()) await c()
})

/** A plain HTTP server; `handle` returns false to have the connection destroyed without an answer. */
async function server(handle: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; hits: { n: number; methods: string[] } }> {
  const hits = { n: 0, methods: [] as string[] }
  const s = createHttpServer((req, res) => {
    hits.n++
    hits.methods.push(req.method ?? '')
    req.resume()
    req.on('end', () => handle(req, res))
  })
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', () => resolve()))
  closers.push(() => new Promise<void>((resolve) => { s.close(() => resolve()); s.closeAllConnections() }))
  return { url: `http://127.0.0.1:${(s.address() as AddressInfo).port}`, hits }
}

const ok = (name: string) => (_req: IncomingMessage, res: ServerResponse) => res.writeHead(200, { 'content-length': name.length }).end(name)
const reset = (req: IncomingMessage) => req.socket.destroy()

async function blackHole(): Promise<string> {
  const sockets = new Set<Socket>()
  const s = createTcpServer((sock) => { sockets.add(sock); sock.on('error', () => sock.destroy()) })
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', () => resolve()))
  closers.push(() => new Promise<void>((resolve) => { for (const x of sockets) x.destroy(); s.close(() => resolve()) }))
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`
}

let open: Upstreams[] = []
afterEach(async () => {
  await Promise.all(open.map((u) => u.close(100)))
  open = []
})

function setup(upstreams: string[], o: { timeoutSeconds?: number; maxResponseBytes?: number } = {}) {
  const registry = new Registry()
  const metrics = proxyMetrics(registry, { sessionCacheSize: () => 0 })
  const route: Route = { prefix: '/r/', upstreams, stripPrefix: false, timeoutSeconds: o.timeoutSeconds ?? 5, index: 0 }
  const u = new Upstreams([route], { connections: 4, maxResponseBytes: o.maxResponseBytes ?? 1 << 20, metrics })
  open.push(u)
  const states = () => [...u.targetStates()].map((t) => t.up)
  const send = async (method: string, headers: Record<string, string> = {}) => {
    try {
      const r = await u.forward(route, { method, path: '/x', headers, body: method === 'POST' ? Buffer.from('x') : null })
      return { status: r.status, body: r.body.toString() }
    } catch (err) {
      return { error: (err as { code?: string }).code, message: (err as Error).message }
    }
  }
  return { u, route, registry, send, states, retries: () => counterValue(registry, 'gatehouse_proxy_upstream_retries_total') }
}

describe('Upstreams: retries', () => {
  it('a connection reset before any answer: GET retried on the next target, POST answered 502; the target stays in', async () => {
    const x = await server((req) => reset(req))
    const y = await server(ok('y'))
    const { send, states, retries } = setup([x.url, y.url])
    expect(await send('GET')).toEqual({ status: 200, body: 'y' })
    expect(await retries()).toBe(1)
    expect(states()).toEqual([true, true]) // it accepted the connection: not a connect failure
    expect(await send('POST')).toEqual({ status: 200, body: 'y' }) // round-robin: y's turn
    expect(await send('POST')).toEqual({ error: 'GH_ERR_UPSTREAM', message: 'upstream unavailable' }) // x's turn: not retried
    expect(y.hits.methods).toEqual(['GET', 'POST'])
    expect(await retries()).toBe(1)
  })

  it('every idempotent method is retried once, and only once', async () => {
    const x = await server((req) => reset(req))
    const z = await server((req) => reset(req))
    const { send, retries } = setup([x.url, z.url])
    for (const m of ['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']) expect((await send(m)).error, m).toBe('GH_ERR_UPSTREAM')
    expect(await retries()).toBe(5)
    expect(x.hits.n + z.hits.n).toBe(10)
    expect((await send('PATCH')).error).toBe('GH_ERR_UPSTREAM')
    expect(x.hits.n + z.hits.n).toBe(11)
  })

  it('a single target that reset a kept-alive connection gets the GET again', async () => {
    let n = 0
    const x = await server((req, res) => (++n === 1 ? reset(req) : ok('x')(req, res)))
    const { send, retries } = setup([x.url])
    expect(await send('GET')).toEqual({ status: 200, body: 'x' })
    expect(await retries()).toBe(1)
  })

  it('a refused connection takes the target out; with every target out the answer comes at once', async () => {
    const dead = `http://127.0.0.1:${await closedPort()}`
    const y = await server(ok('y'))
    const { send, states } = setup([dead, y.url])
    expect(await send('GET')).toEqual({ status: 200, body: 'y' })
    expect(states()).toEqual([false, true])
    const alone = setup([dead])
    expect(await alone.send('GET')).toEqual({ error: 'GH_ERR_UPSTREAM', message: 'upstream unavailable' })
    const t0 = performance.now()
    expect(await alone.send('GET')).toEqual({ error: 'GH_ERR_UPSTREAM', message: 'no healthy upstream for this route' })
    expect(performance.now() - t0).toBeLessThan(50)
  })
})

describe('Upstreams: what must not take a target out', () => {
  it('an answer over maxResponseBytes: 502, not retried, target still in', async () => {
    const big = await server((_req, res) => res.writeHead(200, { 'content-length': 5000 }).end(Buffer.alloc(5000)))
    const { send, states, retries } = setup([big.url], { maxResponseBytes: 1024 })
    expect(await send('GET')).toEqual({ error: 'GH_ERR_UPSTREAM', message: 'upstream response too large' })
    expect(states()).toEqual([true])
    expect(await retries()).toBe(0)
  })

  it('a request undici refuses (header value with a line break): 502, not retried, target still in', async () => {
    const y = await server(ok('y'))
    const { send, states, retries } = setup([y.url])
    expect((await send('GET', { 'x-evil': 'a\r\nb' })).error).toBe('GH_ERR_UPSTREAM')
    expect(states()).toEqual([true])
    expect(await retries()).toBe(0)
    expect(y.hits.n).toBe(0)
    expect(await send('GET')).toEqual({ status: 200, body: 'y' })
  })

  it('a timeout: 504, not retried, target still in', async () => {
    const hole = await blackHole()
    const { send, states, retries } = setup([hole], { timeoutSeconds: 1 })
    expect(await send('GET')).toEqual({ error: 'GH_ERR_UPSTREAM_TIMEOUT', message: 'upstream did not answer in time' })
    expect(states()).toEqual([true])
    expect(await retries()).toBe(0)
  })
})

describe('Upstreams: cancellation', () => {
  it('cancel() answers at once and drops the upstream request', async () => {
    const hole = await blackHole()
    const { u, route } = setup([hole], { timeoutSeconds: 30 })
    const req: ForwardRequest = { method: 'GET', path: '/x', headers: {}, body: null }
    const pending = u.forward(route, req)
    await new Promise((r) => setTimeout(r, 50))
    const t0 = performance.now()
    req.cancel!()
    await expect(pending).rejects.toThrow('request abandoned')
    expect(performance.now() - t0).toBeLessThan(250) // not the route's 30 s
    const t1 = performance.now()
    await u.close(5000)
    expect(performance.now() - t1).toBeLessThan(2000) // nothing left hanging on the hole (close would wait 5 s)
    open = []
  })
})

describe('HealthChecker: one check', () => {
  it('2xx and 3xx succeed; other statuses and refused connections fail; silence times out', async () => {
    const status = (code: number) => server((_req, res) => res.writeHead(code, { 'content-length': 0 }).end())
    const targets = [await status(204), await status(302), await status(500), { url: `http://127.0.0.1:${await closedPort()}` }, { url: await blackHole() }]
    const checker = new HealthChecker(
      targets.map((t) => ({ origin: t.url, health: new TargetHealth({ unhealthyAfter: 1, healthyAfter: 1 }) })),
      { path: '/healthz', intervalSeconds: 60, timeoutMs: 200, unhealthyAfter: 1, healthyAfter: 1 },
      { connectTimeoutMs: 1000 },
    )
    closers.push(() => checker.close())
    const t0 = performance.now()
    const results = await Promise.all(targets.map((_t, i) => checker.checkOnce(i)))
    expect(results).toEqual(['success', 'success', 'failure', 'failure', 'timeout'])
    expect(performance.now() - t0).toBeLessThan(1000)
  })
})
