/**
 * Streaming through the proxy: upload and download 100 MiB and 1 GiB with the device SDK's
 * streaming API (requestStream), through a real `gatehouse start` process, to a demo upstream in
 * its own process that hashes and discards uploads (/sink) and generates downloads (/stream).
 * The proxy process's RSS (VmRSS in /proc/<pid>/status) is sampled every 200 ms: with bodies
 * streamed record by record it must stay flat whatever the size. Bytes are checked end to end
 * (SHA-256 at the upstream and at the device). The same transfers straight to the upstream (plain
 * HTTP, no proxy) give the ceiling.
 *
 * Usage: npm run bench:streaming [-- --sizes 100,1024 (MiB) --workers 1 --pool-threshold 0]
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { Readable } from 'node:stream'
import { parseArgs } from 'node:util'
import { request } from 'undici'
import { demoPattern } from '../src/demo/upstream.js'
import { benchDevice, startGatehouse } from './lib.js'

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '100,1024' },
    workers: { type: 'string', default: '1' },
    'pool-threshold': { type: 'string', default: '0' },
    'pool-threads': { type: 'string', default: '1' },
  },
})
const MiB = 1024 * 1024
const sizes = values.sizes.split(',').map((s) => Number(s) * MiB)

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) : 0
}

/** Sample a process's RSS every 200 ms while `run` goes; start is the sample just before. */
async function sampled<T>(pid: number, run: () => Promise<T>): Promise<{ result: T; startMiB: number; peakMiB: number; seconds: number }> {
  const start = rssKiB(pid)
  let peak = start
  const timer = setInterval(() => { peak = Math.max(peak, rssKiB(pid)) }, 200)
  const t0 = performance.now()
  try {
    const result = await run()
    const seconds = (performance.now() - t0) / 1000
    peak = Math.max(peak, rssKiB(pid))
    return { result, startMiB: start / 1024, peakMiB: peak / 1024, seconds }
  } finally {
    clearInterval(timer)
  }
}

function expectedSha256(n: number): string {
  const h = createHash('sha256')
  for (const c of demoPattern(n)) h.update(c)
  return h.digest('hex')
}

async function drain(body: AsyncIterable<Buffer>): Promise<{ bytes: number; sha256: string }> {
  const h = createHash('sha256')
  let bytes = 0
  for await (const c of body) {
    bytes += c.length
    h.update(c)
  }
  return { bytes, sha256: h.digest('hex') }
}

const limit = 4 * 1024 * MiB
const g = await startGatehouse({
  proxyYaml: `  workers: ${values.workers}
  limits: { maxBodyBytes: ${limit}, maxResponseBytes: ${limit} }
  crypto: { poolThresholdBytes: ${values['pool-threshold']}, poolThreads: ${values['pool-threads']} }`,
})
const rows: string[] = []
try {
  const dev = await benchDevice(g)
  const pid = g.proc.pid!
  const up = `http://127.0.0.1:${g.ports.appUpstream}`
  // Warm-up (JIT, connections, session in the proxy's cache): 8 MiB each way, not reported.
  await drain((await dev.device.requestStream('POST', '/app/sink', { body: Readable.from(demoPattern(8 * MiB)) })).body as AsyncIterable<Buffer>)
  await drain((await dev.device.requestStream('GET', `/app/stream?n=${8 * MiB}`)).body as AsyncIterable<Buffer>)
  for (const n of sizes) {
    const label = n >= 1024 * MiB ? `${n / (1024 * MiB)} GiB` : `${n / MiB} MiB`
    const want = expectedSha256(n)

    const up1 = await sampled(pid, async () => {
      const res = await dev.device.requestStream('POST', '/app/sink', {
        headers: [['content-type', 'application/octet-stream']], body: Readable.from(demoPattern(n)),
      })
      const chunks: Buffer[] = []
      for await (const c of res.body) chunks.push(c as Buffer)
      return { status: res.status, answer: JSON.parse(Buffer.concat(chunks).toString('utf8')) as { bytes: number; sha256: string } }
    })
    if (up1.result.status !== 200 || up1.result.answer.bytes !== n || up1.result.answer.sha256 !== want) {
      throw new Error(`upload ${label}: ${JSON.stringify(up1.result)}`)
    }
    const down = await sampled(pid, async () => {
      const res = await dev.device.requestStream('GET', `/app/stream?n=${n}`)
      return { status: res.status, ...(await drain(res.body as AsyncIterable<Buffer>)) }
    })
    if (down.result.status !== 200 || down.result.bytes !== n || down.result.sha256 !== want) throw new Error(`download ${label}: ${JSON.stringify(down.result)}`)

    // The ceiling: the same bytes straight to the upstream, plain HTTP.
    const directUp = await sampled(pid, async () => {
      const res = await request(`${up}/sink`, { method: 'POST', body: Readable.from(demoPattern(n)) })
      return res.body.json()
    })
    void directUp.result
    const directDown = await sampled(pid, async () => {
      const res = await request(`${up}/stream?n=${n}`)
      return drain(res.body as AsyncIterable<Buffer>)
    })

    const mbs = (s: { seconds: number }) => (n / 1e6 / s.seconds).toFixed(0)
    const mib = (x: number) => x.toFixed(0)
    rows.push(`| ${label} | upload | ${mbs(up1)} | ${mib(up1.startMiB)} | ${mib(up1.peakMiB)} | ${mib(up1.peakMiB - up1.startMiB)} | ${mbs(directUp)} |`)
    rows.push(`| ${label} | download | ${mbs(down)} | ${mib(down.startMiB)} | ${mib(down.peakMiB)} | ${mib(down.peakMiB - down.startMiB)} | ${mbs(directDown)} |`)
  }
  await dev.device.close()
} finally {
  await g.stop()
}
console.log(`\nproxy.workers ${values.workers}, crypto pool threshold ${values['pool-threshold']}; RSS of the gatehouse start process (security server + proxy), MiB; SHA-256 checked end to end\n`)
console.log('| size | direction | through Gatehouse MB/s | RSS start | RSS peak | RSS growth | upstream direct MB/s |')
console.log('|---|---|---:|---:|---:|---:|---:|')
for (const r of rows) console.log(r)
