/**
 * Routes with several upstream targets, through the whole stack over real TLS with the SDK
 * device: a target killed under load, POSTs that are not retried, a black-holed target that stalls
 * nothing else, health checks taking a target out and bringing it back, and a route whose targets
 * are all down answering 502 at once.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer as createHttpServer, type Server } from 'node:http'
import { createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { GatehouseClientError, type GatehouseDevice } from '../../src/client/device.js'
import type { ProxyServer } from '../../src/proxy/server.js'
import type { RouteSpec } from '../../src/proxy/routeTable.js'
import { closedPort, counterValue, startStack, type Stack } from '../helpers/stack.js'

const UP = 'gatehouse_proxy_upstream_up'
const RETRIES = 'gatehouse_proxy_upstream_retries_total'
const CHECKS = 'gatehouse_proxy_upstream_health_checks_total'

/** An in-process node:http target: answers `{ target, method }`, counts what it served, can stop and start again on its port. */
interface Target {
  name: string
  port: number
  url: string
  hits: { GET: number; POST: number; health: number }
  stop(): Promise<void>
  restart(): Promise<void>
}

async function startTarget(name: string, o: { delayMs?: number } = {}): Promise<Target> {
  let server: Server | undefined
  const t: Target = {
    name, port: 0, url: '', hits: { GET: 0, POST: 0, health: 0 },
    stop: () => new Promise<void>((resolve) => {
      const s = server
      server = undefined
      if (!s) return resolve()
      s.close(() => resolve())
      s.closeAllConnections()
    }),
    restart: () => listen(t.port),
  }
  const listen = (port: number) => new Promise<void>((resolve, reject) => {
    const s = createHttpServer((req, res) => {
      req.resume()
      req.on('end', () => {
        if (req.url === '/health') {
          t.hits.health++
          res.writeHead(200, { 'content-length': 2 }).end('ok')
          return
        }
        if (req.method === 'GET' || req.method === 'POST') t.hits[req.method]++
        const body = JSON.stringify({ target: name, method: req.method })
        const answer = () => res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body)
        if (o.delayMs) setTimeout(answer, o.delayMs)
        else answer()
      })
    })
    s.once('error', reject)
    s.listen(port, '127.0.0.1', () => {
      server = s
      t.port = (s.address() as AddressInfo).port
      t.url = `http://127.0.0.1:${t.port}`
      resolve()
    })
  })
  await listen(0)
  return t
}

/** A node:http target in its own process, answering after `delayMs`, to be killed with SIGKILL. */
async function startTargetProcess(name: string, delayMs: number): Promise<{ url: string; child: ChildProcess }> {
  const script = `
    const http = require('node:http')
    const s = http.createServer((req, res) => {
      req.resume()
      req.on('end', () => setTimeout(() => {
        const b = JSON.stringify({ target: ${JSON.stringify(name)}, method: req.method })
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(b) }).end(b)
      }, ${delayMs}))
    })
    s.listen(0, '127.0.0.1', () => process.stdout.write(s.address().port + '\\n'))`
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())))
    child.once('exit', (code) => reject(new Error(`target process exited (${code})`)))
  })
  return { url: `http://127.0.0.1:${port}`, child }
}

/** Accepts connections and never answers; remembers the request lines it was sent. */
async function startBlackHole(): Promise<{ url: string; requestLines: string[]; close(): Promise<void> }> {
  const sockets = new Set<Socket>()
  const requestLines: string[] = []
  const server = createTcpServer((sock) => {
    sockets.add(sock)
    sock.once('data', (d: Buffer) => requestLines.push(d.toString('latin1').split('\r\n')[0] ?? ''))
    sock.on('error', () => sock.destroy())
    sock.on('close', () => sockets.delete(sock))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requestLines,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy()
      server.close(() => resolve())
    }),
  }
}

/** One request through the device: the upstream's status and JSON, or the proxy's error status and code. */
async function call(dev: GatehouseDevice, method: string, path: string): Promise<{ status: number; code?: string; target?: string; ms: number }> {
  const t0 = performance.now()
  try {
    const r = await dev.request(method, path, method === 'POST' ? { body: 'x' } : {})
    return { status: r.status, target: (r.json() as { target?: string }).target, ms: performance.now() - t0 }
  } catch (err) {
    if (err instanceof GatehouseClientError) return { status: err.status, code: err.code, ms: performance.now() - t0 }
    throw err
  }
}

async function waitFor(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 8000): Promise<number> {
  const t0 = Date.now()
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
  return Date.now() - t0
}

/** Requests of a route by time at the proxy, from gatehouse_proxy_request_duration_seconds. */
async function latencyCounts(p: ProxyServer, route: string): Promise<{ total: number; within50ms: number; within250ms: number }> {
  const { values } = await p.registry.getSingleMetric('gatehouse_proxy_request_duration_seconds')!.get()
  const isBucket = (v: object) => (v as { metricName?: string }).metricName?.endsWith('_bucket') === true
  const bucket = (le: string) => values.find((v) => isBucket(v) && v.labels.route === route && String(v.labels.le) === le)?.value ?? 0
  return { total: bucket('+Inf'), within50ms: bucket('0.05'), within250ms: bucket('0.25') }
}

const route = (prefix: string, o: Partial<RouteSpec>): RouteSpec => ({ prefix, stripPrefix: true, timeoutSeconds: 5, ...o })
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const fmt = (xs: number[]) => `median ${median(xs).toFixed(1)} ms, max ${Math.max(...xs).toFixed(1)} ms`

describe('upstreams: several targets, health, retries and timeouts (whole stack)', () => {
  let stack: Stack
  const cleanup: (() => Promise<unknown> | void)[] = []
  const figures: string[] = []

  beforeAll(async () => {
    stack = await startStack()
  })
  afterAll(async () => {
    await stack?.close()
    for (const f of cleanup.reverse()) await f()
    if (figures.length) console.log(`upstream failover figures:\n  ${figures.join('\n  ')}`)
  })

  async function proxyWith(routes: RouteSpec[]): Promise<{ p: ProxyServer; dev: GatehouseDevice }> {
    const p = await stack.startProxy({ routes })
    const dev = await stack.enrolledDevice({ proxyUrl: `https://localhost:${p.port}`, connections: 64 })
    return { p, dev }
  }

  it('a target killed under load: no GET fails (retried once on the other target), then it is left out', async () => {
    const a = await startTargetProcess('A', 30)
    cleanup.push(() => { a.child.kill('SIGKILL') })
    const b = await startTarget('B', { delayMs: 5 })
    cleanup.push(() => b.stop())
    const { p, dev } = await proxyWith([route('/lb/', { upstreams: [a.url, b.url] })])

    const n = 200
    let answeredByA = 0
    const pending = Array.from({ length: n }, (_, i) => call(dev, 'GET', `/lb/item/${i}`).then((r) => {
      if (r.target === 'A') answeredByA++
      return r
    }))
    // Kill A once it is serving, with requests in flight on it and queued for it.
    await waitFor('answers from A', () => answeredByA >= 8)
    a.child.kill('SIGKILL')
    const answers = await Promise.all(pending)
    const failed = answers.filter((r) => r.status !== 200)
    const fromA = answers.filter((r) => r.target === 'A').length
    const retries = await counterValue(p.registry, RETRIES, { route: '/lb/' })
    figures.push(`kill under load: ${n} GETs, ${failed.length} failed, ${fromA} answered by A before the kill, ${n - fromA} by B, ${retries} retried`)
    expect(failed, JSON.stringify(failed.slice(0, 5))).toEqual([])
    expect(fromA).toBeGreaterThan(0)
    expect(retries).toBeGreaterThan(0) // requests really were caught by the kill
    expect(retries).toBeLessThanOrEqual(n)

    // A is out of the rotation: the next requests all go to B, without a retry.
    expect(await counterValue(p.registry, UP, { route: '/lb/', target_index: '0' })).toBe(0)
    expect(await counterValue(p.registry, UP, { route: '/lb/', target_index: '1' })).toBe(1)
    const more = await Promise.all(Array.from({ length: 10 }, (_, i) => call(dev, 'GET', `/lb/after/${i}`)))
    expect(more.map((r) => [r.status, r.target])).toEqual(Array(10).fill([200, 'B']))
    // At most one probe of A (if its 1 s backoff ran out meanwhile), retried on B.
    expect(await counterValue(p.registry, RETRIES, { route: '/lb/' })).toBeLessThanOrEqual(retries + 1)
    expect(stack.logs.text).toContain('"event":"upstream_down"')
  })

  it('retries a GET that hit a dead target on the next one, never a POST (502 GH_ERR_UPSTREAM)', async () => {
    const dead = `http://127.0.0.1:${await closedPort()}`
    const b = await startTarget('B')
    cleanup.push(() => b.stop())
    const { p, dev } = await proxyWith([route('/post/', { upstreams: [dead, b.url] }), route('/get/', { upstreams: [dead, b.url] })])

    // Round-robin starts with the first target: the dead one.
    const post = await call(dev, 'POST', '/post/submit')
    expect([post.status, post.code]).toEqual([502, 'GH_ERR_UPSTREAM'])
    expect(b.hits.POST).toBe(0)
    expect(await counterValue(p.registry, RETRIES, { route: '/post/' })).toBe(0)
    // The dead target is now in its backoff: the next POST goes to B.
    const post2 = await call(dev, 'POST', '/post/submit')
    expect([post2.status, post2.target]).toEqual([200, 'B'])
    expect(b.hits.POST).toBe(1)

    const get = await call(dev, 'GET', '/get/read')
    expect([get.status, get.target]).toEqual([200, 'B'])
    expect(await counterValue(p.registry, RETRIES, { route: '/get/' })).toBe(1)
    expect(await counterValue(p.registry, UP, { route: '/get/', target_index: '0' })).toBe(0)
    figures.push(`dead first target: POST → ${post.status} ${post.code} in ${post.ms.toFixed(1)} ms, GET → 200 after one retry in ${get.ms.toFixed(1)} ms`)
  })

  it('a black-holed target answers 504 after timeoutSeconds, queued requests too, while another route stays fast', async () => {
    const hole = await startBlackHole()
    cleanup.push(() => hole.close())
    const b = await startTarget('B')
    cleanup.push(() => b.stop())
    // 8 connections per origin (stack default): 20 requests means 12 wait in the pool's queue.
    const { p, dev } = await proxyWith([route('/bh/', { upstream: hole.url, timeoutSeconds: 1 }), route('/fast/', { upstream: b.url })])
    await call(dev, 'GET', '/fast/warm')

    const t0 = performance.now()
    const stalled = Promise.all(Array.from({ length: 20 }, (_, i) => call(dev, 'GET', `/bh/wait/${i}`)))
    const fast: number[] = []
    while (performance.now() - t0 < 900) {
      const r = await call(dev, 'GET', '/fast/ping')
      expect(r.status).toBe(200)
      fast.push(r.ms)
    }
    const answers = await stalled
    const took = answers.map((r) => r.ms)
    figures.push(`black hole (timeoutSeconds 1): 20 × 504 in ${fmt(took)}; other route during the stall: ${fast.length} GETs, ${fmt(fast)}`)
    expect(answers.map((r) => [r.status, r.code])).toEqual(Array(20).fill([504, 'GH_ERR_UPSTREAM_TIMEOUT']))
    expect(Math.min(...took)).toBeGreaterThanOrEqual(950)
    expect(Math.max(...took)).toBeLessThan(2000) // queued requests did not wait for a connection first
    expect(fast.length).toBeGreaterThanOrEqual(5) // a stalled route would manage one
    // A stall would show as the hole's 1 s; the margin is for a suite sharing two cores.
    expect(median(fast)).toBeLessThan(100)
    expect(Math.max(...fast)).toBeLessThan(500)
    expect(hole.requestLines.length).toBeGreaterThan(0)
    expect(await counterValue(p.registry, 'gatehouse_proxy_upstream_errors_total', { route: '/bh/', kind: 'GH_ERR_UPSTREAM_TIMEOUT' })).toBe(20)
    // The hole never refused a connection: it stays in the rotation, and no request was retried.
    expect(await counterValue(p.registry, RETRIES)).toBe(0)
  })

  it('health checks take a stopped target out and bring it back once it answers again, without traffic', async () => {
    const a = await startTarget('A')
    const b = await startTarget('B')
    cleanup.push(() => a.stop(), () => b.stop())
    const { p, dev } = await proxyWith([route('/hc/', {
      upstreams: [a.url, b.url],
      healthCheck: { path: '/health', intervalSeconds: 1, timeoutMs: 300, unhealthyAfter: 1, healthyAfter: 1 },
    })])
    const up = (i: number) => counterValue(p.registry, UP, { route: '/hc/', target_index: String(i) })
    await waitFor('first checks', () => a.hits.health > 0 && b.hits.health > 0)
    expect([await up(0), await up(1)]).toEqual([1, 1])

    await a.stop()
    const outMs = await waitFor('A out of the rotation', async () => (await up(0)) === 0)
    const aGets = a.hits.GET
    const during = await Promise.all(Array.from({ length: 10 }, (_, i) => call(dev, 'GET', `/hc/x/${i}`)))
    expect(during.map((r) => [r.status, r.target])).toEqual(Array(10).fill([200, 'B']))

    await a.restart()
    const backMs = await waitFor('A back in the rotation', async () => (await up(0)) === 1)
    const after = await Promise.all(Array.from({ length: 10 }, (_, i) => call(dev, 'GET', `/hc/y/${i}`)))
    expect(after.every((r) => r.status === 200)).toBe(true)
    expect(after.filter((r) => r.target === 'A').length).toBe(5)
    expect(a.hits.GET).toBe(aGets + 5)
    expect(await counterValue(p.registry, RETRIES, { route: '/hc/' })).toBe(0)
    expect(await counterValue(p.registry, CHECKS, { route: '/hc/', result: 'failure' })).toBeGreaterThanOrEqual(1)
    expect(await counterValue(p.registry, CHECKS, { route: '/hc/', result: 'success' })).toBeGreaterThanOrEqual(3)
    expect(stack.logs.text).toMatch(/"event":"upstream_up".*"reason":"check_succeeded"/)
    figures.push(`health checks (interval 1 s): target out ${outMs} ms after it stopped, back ${backMs} ms after it restarted`)
  })

  it('a route whose targets are all down answers 502 at once, without trying them', async () => {
    const holes = [await startBlackHole(), await startBlackHole()]
    cleanup.push(...holes.map((h) => () => h.close()))
    const deadPorts = [await closedPort(), await closedPort()]
    const { p, dev } = await proxyWith([
      route('/checked/', { upstreams: holes.map((h) => h.url), healthCheck: { path: '/health', intervalSeconds: 1, timeoutMs: 100, unhealthyAfter: 1, healthyAfter: 1 } }),
      route('/passive/', { upstreams: deadPorts.map((port) => `http://127.0.0.1:${port}`) }),
    ])
    // Health checks time out against the black holes: both out.
    await waitFor('black holes out of the rotation', async () => await counterValue(p.registry, UP, { route: '/checked/' }) === 0)
    const checked: Awaited<ReturnType<typeof call>>[] = []
    for (let i = 0; i < 10; i++) checked.push(await call(dev, 'GET', '/checked/x'))
    expect(checked.map((r) => [r.status, r.code])).toEqual(Array(10).fill([502, 'GH_ERR_UPSTREAM']))
    for (const h of holes) expect(h.requestLines.every((l) => l === 'GET /health HTTP/1.1')).toBe(true)

    // Passive: the first request finds both dead (one retry), the next ones do not try.
    const first = await call(dev, 'GET', '/passive/x')
    expect([first.status, first.code]).toEqual([502, 'GH_ERR_UPSTREAM'])
    const passive: number[] = []
    for (let i = 0; i < 10; i++) {
      const r = await call(dev, 'GET', '/passive/x')
      expect([r.status, r.code]).toEqual([502, 'GH_ERR_UPSTREAM'])
      passive.push(r.ms)
    }
    expect(await counterValue(p.registry, RETRIES, { route: '/passive/' })).toBe(1)
    const ms = checked.map((r) => r.ms)
    // At the proxy (request in to answer out, without the device's TLS and sealing): under 50 ms.
    const checkedAtProxy = await latencyCounts(p, '/checked/')
    const passiveAtProxy = await latencyCounts(p, '/passive/')
    figures.push(`all targets down: at the device, checked route ${fmt(ms)}, passive route first ${first.ms.toFixed(1)} ms then ${fmt(passive)}; ` +
      `at the proxy, answered within 50 ms: ${checkedAtProxy.within50ms}/${checkedAtProxy.total} and ${passiveAtProxy.within50ms}/${passiveAtProxy.total}`)
    expect(checkedAtProxy).toMatchObject({ total: 10, within250ms: 10 })
    expect(passiveAtProxy).toMatchObject({ total: 11, within250ms: 11 })
    expect(checkedAtProxy.within50ms).toBeGreaterThanOrEqual(9)
    expect(passiveAtProxy.within50ms).toBeGreaterThanOrEqual(10)
    // At the device too, far from the route's 5 s timeout (loose: the suite shares two cores).
    expect(median(ms)).toBeLessThan(250)
    expect(median(passive)).toBeLessThan(250)
  })
})
