/**
 * The proxy on several worker threads sharing one port (SO_REUSEPORT): connections spread across
 * threads, /metrics aggregates them, SIGTERM drains every thread and exits 0.
 */
import { readFileSync } from 'node:fs'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { GatehouseDevice } from '../../src/client/device.js'
import { freePorts, httpGet, metricSample, Sandbox, type GatehouseProcess } from './helpers.js'

describe('proxy worker threads', () => {
  let box: Sandbox
  let gh: GatehouseProcess
  let ports: number[]

  beforeAll(async () => {
    box = new Sandbox('gh-e2e-threads-')
    ports = await freePorts(6)
    const [device, proxyApi, secAdmin, proxy, proxyAdmin, upstream] = ports as [number, number, number, number, number, number]
    box.writeYaml('cfg.yaml', {
      log: { level: 'warn' },
      security: { listen: { port: device }, proxyApi: { port: proxyApi }, admin: { port: secAdmin } },
      proxy: { listen: { port: proxy }, admin: { port: proxyAdmin }, workers: 3 },
      demo: { upstream: { port: upstream } },
    })
    gh = box.spawn(['start', '--config', 'cfg.yaml'])
    await gh.waitFor(/Gatehouse is ready/)
  })
  afterAll(async () => { await box?.cleanup() })

  it('spreads connections over the threads and aggregates their metrics', async () => {
    const [device, , , proxy, proxyAdmin] = ports as [number, number, number, number, number]
    const demo = JSON.parse(readFileSync(box.path('data/demo-user.json'), 'utf8')) as { user: string; password: string }
    const ca = readFileSync(box.path('certs/ca.crt'))
    let requests = 0
    // Each device has its own connections, so the kernel picks a thread per device.
    for (let i = 0; i < 24; i++) {
      const d = new GatehouseDevice({ securityUrl: `https://localhost:${device}`, ca, appId: 'app', appVersion: '1.0.0', deviceId: `t-${i}`, proxyUrl: `https://localhost:${proxy}` })
      await d.enroll(demo.user, demo.password)
      const r = await d.request('GET', '/demo/hello')
      expect(r.status).toBe(200)
      requests++
      await d.close()
    }
    const m = await httpGet(`http://127.0.0.1:${proxyAdmin}/metrics`)
    expect(metricSample(m.text, 'gatehouse_proxy_worker_threads')).toBe(3)
    expect(metricSample(m.text, 'gatehouse_proxy_requests_total', { route: '/demo/', method: 'GET', status: '200' })).toBe(requests)
    const perThread = [0, 1, 2].map((w) => metricSample(m.text, 'gatehouse_proxy_worker_requests', { worker: String(w) }) ?? 0)
    expect(perThread.reduce((a, b) => a + b, 0)).toBe(requests)
    // 24 connections over 3 threads: the chance that one thread gets none is (2/3)^24 * 3 < 0.2 %.
    expect(perThread.filter((n) => n > 0).length).toBeGreaterThanOrEqual(2)
    // Process metrics appear once, not once per thread.
    expect(m.text.match(/^gatehouse_process_cpu_seconds_total/gm)?.length).toBe(1)
    expect((await httpGet(`http://127.0.0.1:${proxyAdmin}/readyz`)).status).toBe(200)
  })

  it('counts the connections of every thread once, from the kernel\'s socket table', async () => {
    const [, , , proxy, proxyAdmin] = ports as [number, number, number, number, number]
    const ca = readFileSync(box.path('certs/ca.crt'))
    const active = async () => metricSample((await httpGet(`http://127.0.0.1:${proxyAdmin}/metrics`)).text, 'gatehouse_proxy_connections_active', { listener: 'device' })
    /** Scrape until the gauge is `want` (readings are cached 1 s); its last value otherwise. */
    const until = async (want: number) => {
      let v: number | undefined
      for (const end = Date.now() + 6000; Date.now() < end; await new Promise((r) => setTimeout(r, 200))) if ((v = await active()) === want) break
      return v
    }
    expect(await until(0)).toBe(0)
    // TLS connections with no request yet: accepted by the threads, open until uWS's 8–12 s timeout.
    const n = 9
    const sockets = await Promise.all(Array.from({ length: n }, () => new Promise<TLSSocket>((resolve, reject) => {
      const s = tlsConnect({ host: '127.0.0.1', port: proxy, servername: 'localhost', ca }, () => resolve(s)).once('error', reject)
    })))
    try {
      expect(await until(n)).toBe(n)
      const m = (await httpGet(`http://127.0.0.1:${proxyAdmin}/metrics`)).text
      expect(m.match(/^gatehouse_proxy_connections_active\{/gm)?.length).toBe(1)
      expect(metricSample(m, 'gatehouse_proxy_listen_queue', { listener: 'device' })).toBe(0)
    } finally {
      sockets.forEach((s) => s.destroy())
    }
    expect(await until(0)).toBe(0)
  })

  it('exports certificate expiry for the proxy and the security server', async () => {
    const [, , secAdmin, , proxyAdmin] = ports as [number, number, number, number, number]
    const now = Date.now() / 1000
    const proxyMetrics = (await httpGet(`http://127.0.0.1:${proxyAdmin}/metrics`)).text
    const secMetrics = (await httpGet(`http://127.0.0.1:${secAdmin}/metrics`)).text
    const server = metricSample(proxyMetrics, 'gatehouse_cert_expiry_timestamp_seconds', { cert: 'proxy_server' })
    // The development server certificate is valid for 397 days.
    expect(server! - now).toBeGreaterThan(396 * 86400)
    expect(server! - now).toBeLessThan(398 * 86400)
    expect(metricSample(proxyMetrics, 'gatehouse_cert_expiry_timestamp_seconds', { cert: 'proxy_client' })).toBeGreaterThan(now)
    expect(metricSample(secMetrics, 'gatehouse_cert_expiry_timestamp_seconds', { cert: 'security_server' })).toBe(server)
    expect(metricSample(secMetrics, 'gatehouse_cert_expiry_timestamp_seconds', { cert: 'ca' })! - now).toBeGreaterThan(3000 * 86400)
  })

  it('drains every thread on SIGTERM and exits 0', async () => {
    gh.child.kill('SIGTERM')
    const exit = await gh.waitExit(20_000)
    expect(exit.code).toBe(0)
    expect(gh.stderr).not.toMatch(/Assertion failed|uv_loop_close/)
  })
})
