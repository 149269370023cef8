/**
 * The plain Node baseline: a TLS-terminating reverse proxy as a Node developer would write it by
 * hand, node:https in front and an undici Pool of keep-alive connections behind, bodies streamed
 * both ways. Same routes as the Gatehouse proxy and nginx in the suite: /app/* (prefix stripped)
 * and the ActiveSync path. One thread, no envelope, no session check.
 *
 * Usage: node nodeProxyMain.js PORT CERT KEY APP_ORIGIN EXCHANGE_ORIGIN; prints "node proxy ready".
 */
import { readFileSync } from 'node:fs'
import type { IncomingHttpHeaders } from 'node:http'
import { createServer } from 'node:https'
import { pipeline } from 'node:stream'
import { Pool, type Dispatcher } from 'undici'

const [port, cert, key, appOrigin, exchangeOrigin] = process.argv.slice(2)
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'host'])
const app = new Pool(appOrigin!, { connections: 64, pipelining: 1 })
const exchange = new Pool(exchangeOrigin!, { connections: 256, pipelining: 1, headersTimeout: 3_600_000, bodyTimeout: 3_600_000 })

function forwardHeaders(h: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (const [k, v] of Object.entries(h)) if (v !== undefined && !HOP.has(k)) out[k] = v
  return out
}

const server = createServer({ cert: readFileSync(cert!), key: readFileSync(key!) }, (req, res) => {
  const url = req.url ?? '/'
  let pool: Pool
  let path: string
  if (url.startsWith('/app/')) {
    pool = app
    path = url.slice(4)
  } else if (url.startsWith('/Microsoft-Server-ActiveSync')) {
    pool = exchange
    path = url
  } else {
    res.writeHead(404).end()
    return
  }
  const method = (req.method ?? 'GET') as Dispatcher.HttpMethod
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined
  pool.request({ method, path, headers: forwardHeaders(req.headers), body: hasBody ? req : null }).then((up) => {
    const headers: Record<string, string | string[]> = {}
    for (const [k, v] of Object.entries(up.headers)) if (v !== undefined && !HOP.has(k)) headers[k] = v as string | string[]
    res.writeHead(up.statusCode, headers)
    pipeline(up.body, res, () => {})
  }, () => {
    if (!res.headersSent) res.writeHead(502).end()
    else res.destroy()
  })
})
server.keepAliveTimeout = 75_000
server.headersTimeout = 60_000
server.requestTimeout = 0
server.listen(Number(port), '127.0.0.1', () => console.log('node proxy ready'))
process.on('SIGINT', () => {
  server.close()
  server.closeAllConnections()
  void Promise.all([app.close(), exchange.close()]).then(() => process.exit(0))
})
