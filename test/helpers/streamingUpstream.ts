/**
 * A plain-HTTP upstream for streaming tests: it hashes what it receives and what it sends, and
 * tells complete requests from aborted ones (the proxy must abort, never complete, a request
 * whose envelope failed after it started streaming).
 *
 *   POST|PUT /sink[?readDelayMs=N]  read the body (pausing N ms after each chunk), answer {bytes, sha256}
 *   GET /stream?n=N[&chunked=1][&dieAfter=K][&delayMs=N]
 *                                    N bytes of a fixed pseudo-random pattern, with a content-length
 *                                    unless chunked; dieAfter: destroy the socket after K bytes
 *   POST /echo                       the body back, streamed (chunked)
 */
import { createHash, randomBytes } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

/** The pattern /stream sends: a random block of an odd size, repeated (never aligned with records). */
export const PATTERN = randomBytes(65_536 + 4099)

/** The first `n` bytes of the endless repetition of PATTERN, as chunks of at most `max` bytes. */
export function* patternChunks(n: number, max = 256 * 1024): Generator<Buffer> {
  let off = 0
  while (off < n) {
    const at = off % PATTERN.length
    const k = Math.min(max, n - off, PATTERN.length - at)
    yield PATTERN.subarray(at, at + k)
    off += k
  }
}

export function patternSha256(n: number): string {
  const h = createHash('sha256')
  for (const c of patternChunks(n)) h.update(c)
  return h.digest('hex')
}

export interface SinkRecord {
  method: string
  url: string
  bytes: number
  sha256: string
  /** The whole body arrived ('end'). */
  complete: boolean
  /** The connection broke before the body ended. */
  aborted: boolean
  /** /stream: bytes of the answer handed to the socket so far. */
  sent: number
  headers: IncomingMessage['headers']
}

export interface StreamingUpstream {
  readonly url: string
  readonly port: number
  /** Every request seen, in arrival order (filled in as its body arrives). */
  readonly requests: SinkRecord[]
  /** Resolves when the request at `index` has completed or aborted. */
  settled(index: number, timeoutMs?: number): Promise<SinkRecord>
  close(): Promise<void>
}

export async function startStreamingUpstream(): Promise<StreamingUpstream> {
  const requests: SinkRecord[] = []
  const waiters = new Map<number, () => void>()
  const settle = (i: number) => waiters.get(i)?.()

  const sink = (req: IncomingMessage, res: ServerResponse, rec: SinkRecord, i: number, delayMs: number) => {
    const h = createHash('sha256')
    req.on('data', (c: Buffer) => {
      rec.bytes += c.length
      h.update(c)
      if (delayMs > 0) {
        req.pause()
        setTimeout(() => req.resume(), delayMs)
      }
    })
    req.on('end', () => {
      rec.complete = true
      rec.sha256 = h.digest('hex')
      settle(i)
      const s = JSON.stringify({ bytes: rec.bytes, sha256: rec.sha256 })
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s) }).end(s)
    })
  }

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://upstream')
    const rec: SinkRecord = { method: req.method ?? '', url: req.url ?? '', bytes: 0, sha256: '', complete: false, aborted: false, sent: 0, headers: req.headers }
    const i = requests.push(rec) - 1
    req.on('close', () => {
      if (!rec.complete) {
        rec.aborted = true
        settle(i)
      }
    })
    if (url.pathname === '/sink') return sink(req, res, rec, i, Number(url.searchParams.get('readDelayMs') ?? 0))
    if (url.pathname === '/echo') {
      res.writeHead(200, { 'content-type': req.headers['content-type'] ?? 'application/octet-stream' })
      req.on('data', (c: Buffer) => { rec.bytes += c.length })
      req.on('end', () => { rec.complete = true; settle(i) })
      req.pipe(res)
      return
    }
    if (url.pathname === '/stream') {
      const n = Number(url.searchParams.get('n') ?? 0)
      const dieAfter = url.searchParams.has('dieAfter') ? Number(url.searchParams.get('dieAfter')) : undefined
      const delayMs = Number(url.searchParams.get('delayMs') ?? 0)
      req.resume()
      req.on('end', () => {
        rec.complete = true
        settle(i)
        res.writeHead(200, url.searchParams.get('chunked') === '1'
          ? { 'content-type': 'application/octet-stream' }
          : { 'content-type': 'application/octet-stream', 'content-length': n })
        const it = patternChunks(n, 64 * 1024)
        let sent = 0
        const pump = () => {
          for (;;) {
            const next = it.next()
            if (next.done) return void res.end()
            let c = next.value
            if (dieAfter !== undefined && sent + c.length >= dieAfter) {
              c = c.subarray(0, dieAfter - sent)
              res.write(c, () => setTimeout(() => res.socket?.destroy(), 20))
              return
            }
            sent += c.length
            rec.sent = sent
            if (!res.write(c)) return void res.once('drain', () => (delayMs ? setTimeout(pump, delayMs) : pump()))
            if (delayMs) return void setTimeout(pump, delayMs)
          }
        }
        pump()
      })
      return
    }
    req.resume()
    res.writeHead(404).end()
  })
  server.keepAliveTimeout = 30_000
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  const port = (server.address() as AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    settled(index, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const done = () => resolve(requests[index]!)
        const r = requests[index]
        if (r && (r.complete || r.aborted)) return done()
        const t = setTimeout(() => reject(new Error(`upstream request ${index} did not settle`)), timeoutMs)
        waiters.set(index, () => {
          clearTimeout(t)
          done()
        })
      })
    },
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    }),
  }
}
