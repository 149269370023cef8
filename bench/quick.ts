/**
 * A quick figure for the demo route: the same 1 KiB GET and POST through Gatehouse (TLS + session
 * check + AES-256-GCM both ways) and straight to the upstream (plain HTTP, the ceiling), measured
 * in one run with autocannon. Usage: npm run bench:quick [-- --duration 10 --connections 50]
 */
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'
import { benchDevice, startGatehouse } from './lib.js'

const { values } = parseArgs({ options: { duration: { type: 'string', default: '10' }, connections: { type: 'string', default: '50' } } })
const duration = Number(values.duration)
const connections = Number(values.connections)

interface Row { name: string; rps: number; p50: number; p99: number; errors: number; non2xx: number }

function run(name: string, opts: autocannon.Options): Promise<Row> {
  return new Promise((resolve, reject) => {
    autocannon({ duration, connections, pipelining: 1, ...opts }, (err, r) => {
      if (err) reject(err)
      else resolve({ name, rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, errors: r.errors, non2xx: r.non2xx })
    })
  })
}

const g = await startGatehouse()
try {
  const dev = await benchDevice(g)
  const up = `http://127.0.0.1:${g.ports.appUpstream}`
  const proxy = `https://localhost:${g.ports.proxy}`
  const body = Buffer.alloc(1024, 0x62)
  const headers = { 'gatehouse-session': dev.sessionId, 'content-type': 'application/vnd.gatehouse.envelope' }
  const rows: Row[] = []
  rows.push(await run('upstream direct  GET 1 KiB', { url: `${up}/bytes?n=1024` }))
  rows.push(await run('gatehouse        GET 1 KiB', {
    url: proxy, tlsOptions: { ca: dev.ca },
    requests: [{ method: 'GET', path: '/app/bytes?n=1024', setupRequest: (req) => ({ ...req, headers, body: dev.seal('GET', '/app/bytes?n=1024') }) }],
  }))
  rows.push(await run('upstream direct  POST 1 KiB', { url: `${up}/echo`, method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } }))
  rows.push(await run('gatehouse        POST 1 KiB', {
    url: proxy, tlsOptions: { ca: dev.ca },
    requests: [{ method: 'POST', path: '/app/echo', setupRequest: (req) => ({ ...req, headers, body: dev.seal('POST', '/app/echo', body) }) }],
  }))
  console.log(`\n${connections} connections, ${duration} s each, one run (noisy shared machine: compare ratios, not absolutes)\n`)
  console.log('| scenario | req/s | p50 ms | p99 ms | errors | non-2xx |')
  console.log('|---|---:|---:|---:|---:|---:|')
  for (const r of rows) console.log(`| ${r.name} | ${Math.round(r.rps)} | ${r.p50} | ${r.p99} | ${r.errors} | ${r.non2xx} |`)
  console.log(`\nGET ratio gatehouse/upstream: ${(rows[1]!.rps / rows[0]!.rps).toFixed(2)}; POST: ${(rows[3]!.rps / rows[2]!.rps).toFixed(2)}`)
  await dev.device.close()
} finally {
  await g.stop()
}
