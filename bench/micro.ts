/**
 * Micro-benchmarks of the proxy's hot functions with tinybench: envelope encode and decode
 * (1 KiB and 16 KiB bodies), the replay window, the session cache lookup (a hit), the route
 * match, the upstream answer parser (a 1 KiB answer with six headers, whole and chunked). tinybench reports time per operation; it does not count allocations, so each task is
 * also run alone for a fixed number of iterations with the heap measured before and after (GC
 * forced first when node runs with --expose-gc): bytes of heap growth per operation, a lower bound
 * of what it allocates (young-generation garbage collected during the loop is not seen; the run
 * uses a large young generation to make that rare).
 *
 * Usage: npm run bench:micro [-- --time 500]
 */
import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import { Bench } from 'tinybench'
import { EnvelopeDecoder, EnvelopeEncoder } from '../src/protocol/envelope.js'
import { encodeRequestHead } from '../src/protocol/head.js'
import { ReplayWindow } from '../src/protocol/replayWindow.js'
import type { SessionGrant } from '../src/proxy/controlPlane.js'
import { H1ResponseParser } from '../src/proxy/h1Response.js'
import { RouteTable } from '../src/proxy/routeTable.js'
import { SessionCache } from '../src/proxy/sessionCache.js'

const { values } = parseArgs({ options: { time: { type: 'string', default: '500' } } })
const key = randomBytes(32)
const sessionId = randomBytes(16).toString('base64url')
const head = encodeRequestHead({ headers: [['content-type', 'application/octet-stream']] })

function sealed(body: Buffer, seq: number): Buffer {
  const enc = new EnvelopeEncoder({ kind: 'request', sessionId, requestLine: 'POST /app/echo', key, seq, timestampMs: Date.now() })
  return Buffer.concat([enc.preamble, enc.record(head, false), ...enc.body(body)])
}

/** Head and body joined in one record (FLAG_JOINED), as the SDK sends small requests. */
function sealedJoined(body: Buffer, seq: number): Buffer {
  const enc = new EnvelopeEncoder({ kind: 'request', sessionId, requestLine: 'POST /app/echo', key, seq, timestampMs: Date.now() })
  return Buffer.concat([enc.preamble, enc.joined(head, body, true)])
}

const kib1 = randomBytes(1024)
const kib16 = randomBytes(16 * 1024)
const sealed1 = sealed(kib1, 1)
const joined1 = sealedJoined(kib1, 1)
const sealed16 = sealed(kib16, 1)
let seq = 0
const window = new ReplayWindow(1024)
const routes = new RouteTable(Array.from({ length: 20 }, (_, i) => ({ prefix: `/app${i}/`, upstream: `http://127.0.0.1:${9000 + i}`, stripPrefix: true, timeoutSeconds: 30 })))
const grant: SessionGrant = {
  enrollmentId: 'e1', userName: 'alice', deviceId: 'd1', appId: 'mail', appVersion: '1.0', c2sKey: key.toString('base64'),
  s2cKey: key.toString('base64'), expiresAt: Date.now() + 3600_000, idleTimeoutMs: 600_000,
}
const cache = new SessionCache({ maxEntries: 100_000, ttlMs: 600_000, replayWindowSize: 1024 }, { validate: async () => grant })
const ids = Array.from({ length: 10_000 }, () => randomBytes(16).toString('base64url'))
for (const id of ids) await cache.get(id)
let k = 0
const answerHead = 'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ndate: Mon, 23 Nov 2026 22:00:00 GMT\r\n' +
  'cache-control: no-store\r\nx-request-id: 4f1c2a\r\nkeep-alive: timeout=5\r\nconnection: keep-alive\r\n'
const answer1 = Buffer.concat([Buffer.from(`${answerHead}content-length: 1024\r\n\r\n`), kib1])
const answerChunked = Buffer.concat([Buffer.from(`${answerHead}transfer-encoding: chunked\r\n\r\n400\r\n`), kib1, Buffer.from('\r\n0\r\n\r\n')])
const sinkEvents = { head: () => undefined, data: () => undefined, end: () => undefined }
function parseAnswer(bytes: Buffer): H1ResponseParser {
  const p = new H1ResponseParser(false, { maxHeaderBytes: 16 * 1024 }, sinkEvents)
  p.execute(bytes)
  return p
}

const tasks: [string, () => unknown][] = [
  ['envelope encode 1 KiB request', () => sealed(kib1, ++seq)],
  ['envelope decode 1 KiB request', () => {
    const d = new EnvelopeDecoder({ kind: 'request', sessionId, requestLine: 'POST /app/echo', key })
    const r = d.push(sealed1)
    d.end()
    return r
  }],
  ['envelope encode 1 KiB request, joined', () => sealedJoined(kib1, ++seq)],
  ['envelope decode 1 KiB request, joined', () => {
    const d = new EnvelopeDecoder({ kind: 'request', sessionId, requestLine: 'POST /app/echo', key })
    const r = d.push(joined1)
    d.end()
    return r
  }],
  ['envelope encode 16 KiB request', () => sealed(kib16, ++seq)],
  ['envelope decode 16 KiB request', () => {
    const d = new EnvelopeDecoder({ kind: 'request', sessionId, requestLine: 'POST /app/echo', key })
    const r = d.push(sealed16)
    d.end()
    return r
  }],
  ['replay window accept (in order)', () => window.accept(++seq)],
  ['session cache lookup (hit, 10,000 cached)', () => cache.get(ids[k++ % ids.length]!)],
  ['route match (20 prefixes)', () => routes.match(`/app${k++ % 20}/inbox/123`)],
  ['upstream answer parse, 1 KiB, content-length', () => parseAnswer(answer1)],
  ['upstream answer parse, 1 KiB, chunked', () => parseAnswer(answerChunked)],
]

const bench = new Bench({ time: Number(values.time), warmupTime: 100 })
for (const [name, fn] of tasks) {
  if (name.startsWith('session cache')) bench.add(name, async () => { await fn() })
  else bench.add(name, fn)
}
await bench.run()

/** Heap growth per operation over `n` runs, GC forced first when exposed. */
async function heapPerOp(fn: () => unknown, n: number): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc
  for (let i = 0; i < 1000; i++) await fn()
  gc?.()
  const before = process.memoryUsage().heapUsed
  for (let i = 0; i < n; i++) await fn()
  return (process.memoryUsage().heapUsed - before) / n
}

console.log(`\ntinybench ${values.time} ms per task; heap growth per op over 2,000 ops${(globalThis as { gc?: unknown }).gc ? ' (GC forced before)' : ' (run with --expose-gc for steadier figures)'}\n`)
console.log('| function | ops/s (1 / mean) | mean µs | p99 µs | ± % | heap growth per op (bytes) |')
console.log('|---|---:|---:|---:|---:|---:|')
for (const [i, t] of bench.tasks.entries()) {
  const r = t.result as unknown as { latency?: { mean: number; p99?: number; rme: number }; throughput?: { mean: number } }
  const heap = await heapPerOp(tasks[i]![1], 2000)
  console.log(`| ${t.name} | ${Math.round(1000 / (r.latency?.mean ?? Infinity)).toLocaleString('en')} | ${((r.latency?.mean ?? 0) * 1000).toFixed(2)} | ${((r.latency?.p99 ?? 0) * 1000).toFixed(2)} | ${(r.latency?.rme ?? 0).toFixed(1)} | ${Math.round(heap).toLocaleString('en')} |`)
}
