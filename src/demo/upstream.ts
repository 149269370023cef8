/**
 * A small intranet application for `gatehouse start` and the tests: plain HTTP on loopback, the
 * way an internal app sits behind the proxy. It shows what the proxy tells upstreams about the
 * caller (gatehouse-user, gatehouse-device, gatehouse-app headers).
 *
 *   GET  /hello         → JSON greeting with the caller's identity
 *   POST /echo          → the request body back, with its content type
 *   GET  /bytes?n=N     → N bytes (N ≤ 64 MiB), for size tests and benchmarks
 *   GET  /status/NNN    → an empty answer with that status
 *   GET  /slow?ms=N     → answers after N ms (timeouts)
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

export class DemoUpstream {
  private server: Server | undefined
  port = 0

  constructor(private readonly at: { host: string; port: number }) {}

  async start(): Promise<number> {
    const server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://upstream')
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        const body = Buffer.concat(chunks)
        const json = (status: number, v: unknown) => {
          const s = JSON.stringify(v)
          res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s) }).end(s)
        }
        if (url.pathname === '/hello') {
          json(200, {
            message: 'Hello from the intranet',
            user: req.headers['gatehouse-user'] ?? null,
            device: req.headers['gatehouse-device'] ?? null,
            app: req.headers['gatehouse-app'] ?? null,
            method: req.method,
            time: new Date().toISOString(),
          })
        } else if (url.pathname === '/echo') {
          res.writeHead(200, { 'content-type': req.headers['content-type'] ?? 'application/octet-stream', 'content-length': body.length }).end(body)
        } else if (url.pathname === '/bytes') {
          const n = Math.min(Math.max(0, Number(url.searchParams.get('n') ?? 0) | 0), 64 * 1024 * 1024)
          res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n }).end(Buffer.alloc(n, 0x61))
        } else if (url.pathname.startsWith('/status/')) {
          const code = Number(url.pathname.slice(8))
          res.writeHead(code >= 200 && code <= 599 ? code : 400).end()
        } else if (url.pathname === '/slow') {
          setTimeout(() => json(200, { slow: true }), Math.min(Number(url.searchParams.get('ms') ?? 0), 120_000))
        } else if (url.pathname === '/headers') {
          json(200, { headers: req.headers, url: req.url })
        } else {
          json(404, { error: 'not found in the demo app' })
        }
      })
    })
    server.keepAliveTimeout = 65_000
    this.server = server
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.at.port, this.at.host, () => resolve())
    })
    this.port = (server.address() as AddressInfo).port
    return this.port
  }

  async close(): Promise<void> {
    const s = this.server
    if (!s) return
    await new Promise<void>((resolve) => {
      s.close(() => resolve())
      s.closeAllConnections()
    })
  }
}
