/**
 * The fake Exchange of test/helpers/fakeExchange.ts as a process of its own, for
 * bench/activesyncPings.ts. Usage: node fakeExchangeMain.js PORT STATS_PORT USER PASSWORD [CERT KEY]
 * With CERT and KEY (PEM files) it serves HTTP/2 over TLS (HTTP/1.1 still accepted), else plain
 * HTTP/1.1. Prints "fake exchange ready" once listening; GET http://127.0.0.1:STATS_PORT/ answers
 * its counters as JSON (requests, inFlight, maxInFlight, aborted, connections open, their peak and
 * total, rss); POST there answers every held Ping now.
 */
import { readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { startFakeExchange } from '../test/helpers/fakeExchange.js'

const [port, statsPort, user, password, cert, key] = process.argv.slice(2)
const tls = cert && key ? { cert: readFileSync(cert), key: readFileSync(key) } : undefined
const fake = await startFakeExchange({ users: { [user!]: password! }, port: Number(port), pingHoldMs: 30_000, ...(tls ? { tls, http2: true } : {}) })
const stats = createServer((req, res) => {
  if (req.method === 'POST') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ released: fake.releasePings() }))
    return
  }
  const body = JSON.stringify({
    requests: fake.requests, inFlight: fake.inFlight, maxInFlight: fake.maxInFlight, aborted: fake.aborted,
    connections: fake.connections, maxConnections: fake.maxConnections, connectionsTotal: fake.connectionsTotal, rss: process.memoryUsage().rss,
  })
  res.writeHead(200, { 'content-type': 'application/json' }).end(body)
})
await new Promise<void>((resolve) => stats.listen(Number(statsPort), '127.0.0.1', () => resolve()))
console.log(`fake exchange ready on ${fake.port}${tls ? ' (HTTP/2 over TLS)' : ''}`)
process.on('SIGINT', () => {
  stats.close()
  void fake.close().then(() => process.exit(0))
})
