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
 *   POST /sink          → reads the body without keeping it: {bytes, sha256} (streaming benchmarks)
 *   GET  /stream?n=N    → N bytes of demoPattern, written with backpressure (any size)
 */
import { createHash } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

/** The bytes of /stream: a fixed pattern whose period (65521, prime) never lines up with 64 KiB records. */
const PERIOD = 65_521
let block: Buffer | undefined

/** The first `n` bytes of the pattern /stream sends, as chunks of up to ~1 MiB (views of one block). */
export function* demoPattern(n: number): Generator<Buffer> {
  block ??= Buffer.from(Array.from({ length: PERIOD * 16 }, (_, i) => ((i % PERIOD) * 31 + 7) & 0xff))
  let sent = 0
  while (sent < n) {
    const at = sent % PERIOD
    const k = Math.min(n - sent, block.length - at)
    yield block.subarray(at, at + k)
    sent += k
  }
}

export class DemoUpstream {
  private server: Server | undefined
  port = 0

  constructor(private readonly at: { host: string; port: number }) {}

  async start(): Promise<number> {
    const server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://upstream')
      if (url.pathname === '/sink') {
        const h = createHash('sha256')
        let bytes = 0
        req.on('data', (c: Buffer) => {
          bytes += c.length
          h.update(c)
        })
        req.on('end', () => {
          const s = JSON.stringify({ bytes, sha256: h.digest('hex') })
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s) }).end(s)
        })
        return
      }
      if (url.pathname === '/stream') {
        const n = Math.max(0, Math.floor(Number(url.searchParams.get('n') ?? 0)) || 0)
        req.resume()
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n })
        const chunks = demoPattern(n)
        const pump = () => {
          for (let next = chunks.next(); !next.done; next = chunks.next()) {
            if (!res.write(next.value)) return void res.once('drain', pump)
          }
          res.end()
        }
        pump()
        return
      }
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
          // unref: a slow answer still pending must not hold `gatehouse start` open after a stop.
          setTimeout(() => json(200, { slow: true }), Math.min(Number(url.searchParams.get('ms') ?? 0), 120_000)).unref()
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
