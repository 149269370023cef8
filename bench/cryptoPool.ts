/**
 * Record crypto inline versus in the piscina pool (src/proxy/cryptoPool.ts), for 1 KiB, 16 KiB
 * and 64 KiB records: one at a time (latency) and 16 in flight (throughput), sealing and opening.
 * What decides proxy.crypto.poolThresholdBytes is the event loop's cost per record, since the
 * proxy's event loop is what saturates: inline that is the whole AES-256-GCM; with the pool it is
 * the copying, messaging and promise handling around a task (event-loop utilisation × time / n).
 *
 * Usage: npm run bench:crypto-pool [-- --threads 2 --iterations 4000]
 */
import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { CryptoPool } from '../src/proxy/cryptoPool.js'
import { EnvelopeDecoder, EnvelopeEncoder, openRecordJob, sealRecordJob, type OpenJob, type SealJob } from '../src/protocol/envelope.js'

const { values } = parseArgs({ options: { threads: { type: 'string', default: '1' }, iterations: { type: 'string', default: '4000' } } })
const threads = Number(values.threads)
const N = Number(values.iterations)
const CONCURRENCY = 16
const SIZES = [1024, 16 * 1024, 64 * 1024]

const key = randomBytes(32)
const sessionId = randomBytes(16).toString('base64url')

/** A seal job and an open job of one record of `size` bytes (as the proxy prepares them). */
function jobs(size: number): { seal: SealJob; open: OpenJob } {
  const enc = new EnvelopeEncoder({ kind: 'request', sessionId, requestLine: 'POST /bench', key, seq: 1, timestampMs: Date.now() })
  const head = enc.record(Buffer.from('{"h":[]}'), false)
  const seal = enc.prepare(randomBytes(size), true)
  const record = sealRecordJob(seal)
  const dec = new EnvelopeDecoder({ kind: 'request', sessionId, requestLine: 'POST /bench', key })
  const framed = dec.pushFramed(Buffer.concat([enc.preamble, head, record]))
  return { seal, open: framed[1]!.job }
}

interface Figure { wallUs: number; loopUs: number }

/** Time n operations, `concurrency` in flight: wall time and event-loop busy time per operation. */
async function measure(n: number, concurrency: number, op: () => unknown): Promise<Figure> {
  for (let i = 0; i < Math.min(500, n); i++) await op()
  const elu0 = performance.eventLoopUtilization()
  const t0 = performance.now()
  let started = 0
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (started < n) {
      started++
      await op()
    }
  }))
  const wall = performance.now() - t0
  const elu = performance.eventLoopUtilization(elu0)
  return { wallUs: (wall * 1000) / n, loopUs: (elu.active * 1000) / n }
}

const pool = CryptoPool.acquire({ thresholdBytes: 1, threads })!
const rows: string[] = []
let firstWin: number | undefined
for (const size of SIZES) {
  const { seal, open } = jobs(size)
  const inlineSeal = await measure(N, 1, () => sealRecordJob(seal))
  const inlineOpen = await measure(N, 1, () => openRecordJob(open))
  const poolSeal1 = await measure(N / 2, 1, () => pool.seal(seal))
  const poolSealC = await measure(N, CONCURRENCY, () => pool.seal(seal))
  const poolOpen1 = await measure(N / 2, 1, () => pool.open(open))
  const poolOpenC = await measure(N, CONCURRENCY, () => pool.open(open))
  const f = (x: number) => x.toFixed(1)
  rows.push(`| ${size / 1024} KiB | seal | ${f(inlineSeal.wallUs)} | ${f(poolSeal1.wallUs)} | ${f(poolSealC.wallUs)} | ${f(poolSealC.loopUs)} |`)
  rows.push(`| ${size / 1024} KiB | open | ${f(inlineOpen.wallUs)} | ${f(poolOpen1.wallUs)} | ${f(poolOpenC.wallUs)} | ${f(poolOpenC.loopUs)} |`)
  // The pool pays when it saves the event loop time: its loop cost per record below the inline cost.
  if (firstWin === undefined && poolSealC.loopUs < inlineSeal.wallUs && poolOpenC.loopUs < inlineOpen.wallUs) firstWin = size
}
await pool.release()

console.log(`\npiscina pool: ${threads} thread(s), ${CONCURRENCY} tasks in flight for "concurrent"; µs per record, ${N} records per cell\n`)
console.log('| record | op | inline | pool, one at a time | pool, concurrent (wall) | pool, concurrent (event loop) |')
console.log('|---|---|---:|---:|---:|---:|')
for (const r of rows) console.log(r)
console.log(firstWin === undefined
  ? '\nThe pool never costs the event loop less than inline crypto here: keep proxy.crypto.poolThresholdBytes at 0 (off).'
  : `\nThe pool costs the event loop less than inline crypto from ${firstWin / 1024} KiB records: proxy.crypto.poolThresholdBytes ${firstWin} is worth trying.`)
