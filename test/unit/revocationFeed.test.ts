/**
 * The proxy's revocation follower, below the TLS layer: the NDJSON line reader, line parsing, and
 * RevocationFeed against a scripted plain-HTTP server (reconnect with since, gap, silence,
 * oversized and junk lines, the ordered server list).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Writable } from 'node:stream'
import { Agent } from 'undici'
import { afterEach, describe, expect, it } from 'vitest'
import { TooLargeError } from '../../src/errors.js'
import { createLogger } from '../../src/observability/logger.js'
import { NdjsonLineReader } from '../../src/proxy/ndjsonLines.js'
import { parseRevocationLine, RevocationFeed, type RevocationLine } from '../../src/proxy/revocationFeed.js'
import { closedPort } from '../helpers/stack.js'

describe('NdjsonLineReader', () => {
  it('reassembles lines split anywhere across chunks, multi-byte characters included', () => {
    const text = '{"a":"é€😀"}\n{"b":2}\r\n\n{"c":3}\n{"partial":'
    const bytes = Buffer.from(text, 'utf8')
    const r = new NdjsonLineReader(1024)
    const lines: string[] = []
    for (let i = 0; i < bytes.length; i++) lines.push(...r.push(bytes.subarray(i, i + 1)))
    expect(lines).toEqual(['{"a":"é€😀"}', '{"b":2}', '{"c":3}'])
    expect(r.pending).toBe(Buffer.byteLength('{"partial":'))
    expect(r.push(Buffer.from('4}\n'))).toEqual(['{"partial":4}'])
    expect(r.pending).toBe(0)
  })

  it('gives several lines of one chunk in order', () => {
    const r = new NdjsonLineReader(64)
    expect(r.push(Buffer.from('1\n2\n3\n4'))).toEqual(['1', '2', '3'])
    expect(r.push(Buffer.from('\n'))).toEqual(['4'])
  })

  it('refuses a line longer than the bound, within one chunk or growing over several', () => {
    const ok = new NdjsonLineReader(8)
    expect(ok.push(Buffer.from('12345678\n'))).toEqual(['12345678'])
    expect(() => new NdjsonLineReader(8).push(Buffer.from('123456789\n'))).toThrow(TooLargeError)
    const growing = new NdjsonLineReader(8)
    expect(growing.push(Buffer.from('1234'))).toEqual([])
    expect(growing.push(Buffer.from('5678'))).toEqual([])
    expect(() => growing.push(Buffer.from('9'))).toThrow(TooLargeError)
  })
})

describe('parseRevocationLine', () => {
  it('accepts records and heartbeats', () => {
    expect(parseRevocationLine('{"seq":3,"kind":"device","target":"a\\u0000b","at":5}')).toEqual({ record: { seq: 3, kind: 'device', target: 'a\u0000b', at: 5 } })
    expect(parseRevocationLine('{"heartbeat":0}')).toEqual({ heartbeat: 0 })
  })

  it.each([
    'not json', '[1]', 'null', '"x"', '{"heartbeat":-1}', '{"heartbeat":"7"}', '{"seq":0,"kind":"user","target":"u","at":1}',
    '{"seq":1.5,"kind":"user","target":"u","at":1}', '{"seq":1,"kind":"group","target":"u","at":1}', '{"seq":1,"kind":"user","target":5,"at":1}',
    '{"seq":1,"kind":"user","target":"u"}', `{"seq":1,"kind":"user","target":"${'x'.repeat(5000)}","at":1}`,
  ])('refuses %s', (line) => {
    expect(parseRevocationLine(line)).toBeUndefined()
  })
})

// ---------------------------------------------------------------------------------------------

class Sink extends Writable {
  lines: string[] = []
  override _write(c: Buffer, _e: string, cb: () => void) { this.lines.push(...c.toString().split('\n').filter(Boolean)); cb() }
  events(): Record<string, unknown>[] { return this.lines.map((l) => JSON.parse(l) as Record<string, unknown>) }
}

type Script = (req: IncomingMessage, res: ServerResponse, n: number) => void

/** A plain-HTTP stand-in for the security server's stream endpoint; `script` answers connection n (0-based). */
async function scriptedServer(script: Script): Promise<{ url: string; urls: string[]; server: Server; open: Set<ServerResponse> }> {
  const urls: string[] = []
  const open = new Set<ServerResponse>()
  const server = createServer((req, res) => {
    urls.push(req.url ?? '')
    open.add(res)
    res.on('close', () => open.delete(res))
    script(req, res, urls.length - 1)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, urls, server, open }
}

const rec = (seq: number, kind = 'user', target = `u${seq}`) => `${JSON.stringify({ seq, kind, target, at: Date.now() })}\n`
const ndjson = (res: ServerResponse) => {
  res.writeHead(200, { 'content-type': 'application/x-ndjson' })
  res.flushHeaders()
}

describe('RevocationFeed', () => {
  const cleanup: (() => Promise<unknown> | void)[] = []
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f()
  })

  function feedFor(servers: string[], over: { heartbeatTimeoutMs?: number; maxLineBytes?: number } = {}) {
    const sink = new Sink()
    const applied: RevocationLine[] = []
    const resets: string[] = []
    const states: boolean[] = []
    const agent = new Agent()
    const feed = new RevocationFeed({
      servers, dispatcher: agent, connectTimeoutMs: 1000, heartbeatTimeoutMs: over.heartbeatTimeoutMs ?? 5000,
      log: createLogger({ level: 'debug', destination: sink }), maxLineBytes: over.maxLineBytes,
      backoff: { initialMs: 20, maxMs: 100 },
      apply: (r) => applied.push(r), reset: (why) => resets.push(why), onState: (up) => states.push(up),
    })
    cleanup.push(() => agent.close(), () => feed.close())
    return { feed, sink, applied, resets, states }
  }

  it('applies records, ignores junk lines with a warning, and resumes with since=<last seq> after the stream ends', async () => {
    const srv = await scriptedServer((_req, res, n) => {
      ndjson(res)
      if (n === 0) {
        res.write('{"heartbeat":10}\n')
        res.write(rec(11) + 'this is not json\n' + rec(12, 'session', 'ab'.repeat(32)))
        res.write(rec(12)) // a repeat: ignored
        setTimeout(() => res.end(), 50)
      } else {
        res.write(rec(13, 'device', 'alice\u0000d1') + '{"heartbeat":13}\n')
      }
    })
    cleanup.push(() => new Promise((r) => { srv.server.close(r); srv.server.closeAllConnections() }))
    const { feed, sink, applied, resets, states } = feedFor([srv.url])
    await feed.start()
    await expect.poll(() => applied.length, { timeout: 3000 }).toBe(3)
    expect(srv.urls).toEqual(['/v1/revocations', '/v1/revocations?since=12'])
    expect(applied.map((r) => [r.seq, r.kind, r.target])).toEqual([[11, 'user', 'u11'], [12, 'session', 'ab'.repeat(32)], [13, 'device', 'alice\u0000d1']])
    expect(feed.lastSeq).toBe(13)
    // Cleared once, on the first connect only (a resume knows what it missed).
    expect(resets).toEqual(['first_connect'])
    expect(states).toEqual([true, false, true])
    const ignored = sink.events().filter((e) => e.event === 'revocation_line_ignored')
    expect(ignored).toHaveLength(1)
    expect(ignored[0]).toMatchObject({ level: 'warn', bytes: 16 })
    expect(sink.lines.join('\n')).not.toContain('this is not json')
  })

  it('on 410 (the log does not reach back) clears the cache and follows from now on', async () => {
    const srv = await scriptedServer((req, res, n) => {
      if (n === 0) { ndjson(res); res.end('{"heartbeat":500}\n'); return }
      if (req.url?.includes('since=')) {
        res.writeHead(410, { 'content-type': 'application/json' }).end('{"error":{"code":"GH_ERR_REVOCATION_GAP","message":"gap"}}')
        return
      }
      ndjson(res)
      res.write('{"heartbeat":3}\n')
    })
    cleanup.push(() => new Promise((r) => { srv.server.close(r); srv.server.closeAllConnections() }))
    const { feed, resets } = feedFor([srv.url])
    await feed.start()
    await expect.poll(() => srv.urls.length, { timeout: 3000 }).toBe(3)
    await expect.poll(() => feed.lastSeq).toBe(3)
    expect(srv.urls).toEqual(['/v1/revocations', '/v1/revocations?since=500', '/v1/revocations'])
    expect(resets).toEqual(['first_connect', 'gap', 'first_connect'])
  })

  it('reconnects when the stream is silent past the heartbeat timeout, or sends an oversized line', async () => {
    const srv = await scriptedServer((_req, res, n) => {
      ndjson(res)
      if (n === 0) res.write('{"heartbeat":1}\n') // then silence
      else if (n === 1) res.write(`{"heartbeat":1,"pad":"${'x'.repeat(300)}"}\n`)
      else res.write(rec(2))
    })
    cleanup.push(() => new Promise((r) => { srv.server.close(r); srv.server.closeAllConnections() }))
    const { feed, sink, applied } = feedFor([srv.url], { heartbeatTimeoutMs: 150, maxLineBytes: 256 })
    const t0 = Date.now()
    await feed.start()
    await expect.poll(() => applied.length, { timeout: 3000 }).toBe(1)
    expect(Date.now() - t0).toBeGreaterThanOrEqual(150)
    expect(srv.urls).toEqual(['/v1/revocations', '/v1/revocations?since=1', '/v1/revocations?since=1'])
    const lost = sink.events().filter((e) => e.event === 'revocation_stream_lost').map((e) => e.reason)
    expect(lost).toEqual(['no heartbeat', 'line too long'])
  })

  it('uses the first server of the list that answers, and start() returns even when none does', async () => {
    const dead = `http://127.0.0.1:${await closedPort()}`
    const srv = await scriptedServer((_req, res) => { ndjson(res); res.write('{"heartbeat":7}\n') })
    cleanup.push(() => new Promise((r) => { srv.server.close(r); srv.server.closeAllConnections() }))
    const { feed } = feedFor([dead, srv.url])
    await feed.start()
    expect(feed.connected).toBe(true)
    await expect.poll(() => feed.lastSeq).toBe(7)

    const alone = feedFor([dead])
    const t0 = Date.now()
    await alone.feed.start()
    expect(Date.now() - t0).toBeLessThan(1000)
    expect(alone.feed.connected).toBe(false)
    // Retries with backoff, warning once per outage.
    await new Promise((r) => setTimeout(r, 300))
    const warnings = alone.sink.events().filter((e) => e.event === 'revocation_stream_unavailable' && e.level === 'warn')
    const retries = alone.sink.events().filter((e) => e.event === 'revocation_stream_unavailable')
    expect(warnings).toHaveLength(1)
    expect(retries.length).toBeGreaterThan(2)
    await alone.feed.close()
  })

  it('close() ends the stream at once', async () => {
    const srv = await scriptedServer((_req, res) => { ndjson(res); res.write('{"heartbeat":1}\n') })
    cleanup.push(() => new Promise((r) => { srv.server.close(r); srv.server.closeAllConnections() }))
    const { feed } = feedFor([srv.url])
    await feed.start()
    await expect.poll(() => srv.open.size).toBe(1)
    const t0 = Date.now()
    await feed.close()
    expect(Date.now() - t0).toBeLessThan(500)
    expect(feed.connected).toBe(false)
    await expect.poll(() => srv.open.size).toBe(0)
    expect(srv.urls).toHaveLength(1)
  })
})
