/**
 * The fake Exchange of test/helpers/fakeExchange.ts as a process of its own, for
 * bench/activesyncPings.ts. Usage: node fakeExchangeMain.js PORT STATS_PORT USER PASSWORD
 * Prints "fake exchange ready" once listening; GET http://127.0.0.1:STATS_PORT/ answers its
 * counters as JSON (requests, inFlight, maxInFlight, aborted, rss); POST there answers every held
 * Ping now.
 */
import { createServer } from 'node:http'
import { startFakeExchange } from '../test/helpers/fakeExchange.js'

const [port, statsPort, user, password] = process.argv.slice(2)
const fake = await startFakeExchange({ users: { [user!]: password! }, port: Number(port), pingHoldMs: 30_000 })
const stats = createServer((req, res) => {
  if (req.method === 'POST') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ released: fake.releasePings() }))
    return
  }
  const body = JSON.stringify({ requests: fake.requests, inFlight: fake.inFlight, maxInFlight: fake.maxInFlight, aborted: fake.aborted, rss: process.memoryUsage().rss })
  res.writeHead(200, { 'content-type': 'application/json' }).end(body)
})
await new Promise<void>((resolve) => stats.listen(Number(statsPort), '127.0.0.1', () => resolve()))
console.log(`fake exchange ready on ${fake.port}`)
process.on('SIGINT', () => {
  stats.close()
  void fake.close().then(() => process.exit(0))
})
