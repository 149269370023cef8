/**
 * What the high-availability tests share: the real processes of a deployment (security server,
 * proxies) started with the CLI in a sandbox, an intranet upstream in this process, devices
 * driven by the SDK, and a load loop that counts every failed request.
 */
import { readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { GatehouseDevice } from '../../src/client/device.js'
import { httpGet, type GatehouseProcess, type Sandbox } from '../e2e/helpers.js'

export const PASSWORD = 'a-long-passphrase-for-the-farm'

export interface ProxyPorts { name: string; port: number; adminPort: number }

/**
 * The intranet app behind the proxies. `GET|POST /slow?ms=N` answers after N ms; anything else
 * answers at once with who called. Every request is counted by method and URL, so a test can
 * tell whether a request reached it twice.
 */
export interface FarmUpstream {
  port: number
  /** "METHOD /url" → times received. */
  seen: Map<string, number>
  close(): Promise<void>
}

export async function startUpstream(): Promise<FarmUpstream> {
  const seen = new Map<string, number>()
  const server = createServer((req, res) => {
    const key = `${req.method} ${req.url}`
    seen.set(key, (seen.get(key) ?? 0) + 1)
    req.resume()
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://upstream')
      const body = JSON.stringify({ user: req.headers['gatehouse-user'] ?? null, device: req.headers['gatehouse-device'] ?? null, method: req.method, path: url.pathname })
      const answer = () => res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body)
      if (url.pathname === '/slow') setTimeout(answer, Math.min(Number(url.searchParams.get('ms') ?? 0), 5000))
      else answer()
    })
  })
  server.keepAliveTimeout = 65_000
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    close: () => new Promise<void>((resolve) => { server.close(() => resolve()); server.closeAllConnections() }),
  }
}

/** Write `<name>.yaml` for a `gatehouse proxy` (one thread) and start it. */
export async function startProxyProcess(box: Sandbox, p: ProxyPorts, o: {
  securityServers: string[]
  upstreamPort: number
  shutdownDelayMs?: number
  drainSeconds?: number
}): Promise<GatehouseProcess> {
  box.writeYaml(`${p.name}.yaml`, {
    certsDir: 'certs',
    dataDir: `${p.name}-data`,
    proxy: {
      listen: { port: p.port },
      admin: { port: p.adminPort },
      workers: 1,
      shutdownDelayMs: o.shutdownDelayMs ?? 0,
      securityServers: o.securityServers,
      controlPlaneTimeoutMs: 2000,
      routes: [{ prefix: '/app/', upstream: `http://127.0.0.1:${o.upstreamPort}`, stripPrefix: true, timeoutSeconds: 10 }],
    },
  })
  const proc = box.spawn(['proxy', '--config', `${p.name}.yaml`, '--drain', String(o.drainSeconds ?? 5)])
  await proc.waitFor(/gatehouse proxy ready/, 60_000)
  return proc
}

/** Sum of every sample of a counter in Prometheus text (all label sets). */
export function metricSum(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return sum
}

/** Device requests a proxy has answered so far (gatehouse_proxy_requests_total, all labels). */
export async function proxyRequests(adminPort: number): Promise<number> {
  return metricSum((await httpGet(`http://127.0.0.1:${adminPort}/metrics`)).text, 'gatehouse_proxy_requests_total')
}

/** A device of `user`, enrolled with the SDK; the proxy URL is the one the security server told it. */
export async function enrolledDevice(securityUrl: string, caFile: string, user: string, deviceId: string): Promise<GatehouseDevice> {
  const d = new GatehouseDevice({ securityUrl, ca: readFileSync(caFile), appId: 'mail', appVersion: '1.0.0', deviceId, connections: 4 })
  await d.enroll(user, PASSWORD)
  await d.openSession()
  return d
}

export interface Failure { device: number; method: string; atMs: number; error: string }

export interface LoadResult {
  requests: number
  byMethod: Record<string, number>
  failures: Failure[]
  /** Longest single request, and its start time from the beginning of the run. */
  maxLatencyMs: number
  maxLatencyAtMs: number
}

/**
 * Every device loops requests (method per device) for `durationMs`; `event` runs once at
 * `eventAtMs`. A request fails when it throws or its (decrypted) status is not 200.
 */
export async function runLoad(devices: GatehouseDevice[], o: {
  durationMs: number
  method: (deviceIndex: number) => 'GET' | 'POST'
  eventAtMs?: number
  event?: () => void | Promise<void>
}): Promise<LoadResult> {
  const started = performance.now()
  const end = started + o.durationMs
  const r: LoadResult = { requests: 0, byMethod: {}, failures: [], maxLatencyMs: 0, maxLatencyAtMs: 0 }
  let eventDone: Promise<void> = Promise.resolve()
  const timer = o.event && setTimeout(() => { eventDone = Promise.resolve(o.event!()) }, o.eventAtMs ?? 0)
  await Promise.all(devices.map(async (d, i) => {
    const method = o.method(i)
    let n = 0
    while (performance.now() < end) {
      const t0 = performance.now()
      n++
      try {
        // The upstream holds each answer 20 ms, so that requests are in flight when a proxy goes.
        const res = method === 'GET'
          ? await d.request('GET', `/app/slow?ms=20&d=${i}&n=${n}`)
          : await d.request('POST', `/app/slow?ms=20&d=${i}&n=${n}`, { body: `device ${i} request ${n}`, headers: [['content-type', 'text/plain']] })
        if (res.status !== 200) r.failures.push({ device: i, method, atMs: Math.round(t0 - started), error: `status ${res.status}` })
      } catch (err) {
        r.failures.push({ device: i, method, atMs: Math.round(t0 - started), error: (err as Error).message.slice(0, 200) })
      }
      const ms = performance.now() - t0
      if (ms > r.maxLatencyMs) {
        r.maxLatencyMs = Math.round(ms)
        r.maxLatencyAtMs = Math.round(t0 - started)
      }
      r.requests++
      r.byMethod[method] = (r.byMethod[method] ?? 0) + 1
    }
  }))
  if (timer) clearTimeout(timer)
  await eventDone
  return r
}
