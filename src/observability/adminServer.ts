/**
 * The admin endpoint every role exposes on a separate, private port: Prometheus `/metrics`,
 * liveness `/healthz` (the process answers) and readiness `/readyz` (it can do its job now).
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Logger } from './logger.js'

/** Where /metrics comes from: a prom-client Registry, or an aggregate over worker threads. */
export interface MetricsSource {
  metrics(): Promise<string>
  contentType: string
}

export interface Readiness {
  /** Empty when ready; otherwise the reasons (safe to show: no secrets). */
  (): string[]
}

export class AdminServer {
  private server: Server | undefined

  constructor(private readonly p: { host: string; port: number; registry: MetricsSource; ready: Readiness; log: Logger }) {}

  async start(): Promise<number> {
    const server = createServer((req, res) => {
      const url = (req.url ?? '/').split('?')[0]
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end()
        return
      }
      if (url === '/metrics') {
        this.p.registry.metrics().then(
          (text) => res.writeHead(200, { 'content-type': this.p.registry.contentType }).end(text),
          (err: unknown) => {
            this.p.log.error({ err }, 'metrics collection failed')
            res.writeHead(500).end()
          },
        )
      } else if (url === '/healthz') {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}')
      } else if (url === '/readyz') {
        const reasons = this.p.ready()
        res.writeHead(reasons.length === 0 ? 200 : 503, { 'content-type': 'application/json' })
          .end(JSON.stringify(reasons.length === 0 ? { status: 'ready' } : { status: 'not ready', reasons }))
      } else {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"code":"GH_ERR_NOT_FOUND","message":"not found"}}')
      }
    })
    server.keepAliveTimeout = 5000
    this.server = server
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.p.port, this.p.host, () => resolve())
    })
    return (server.address() as AddressInfo).port
  }

  async close(): Promise<void> {
    const s = this.server
    if (!s) return
    this.server = undefined
    await new Promise<void>((resolve) => {
      s.close(() => resolve())
      s.closeIdleConnections()
    })
  }
}
