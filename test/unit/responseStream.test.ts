/**
 * ResponseStream against a fake uWS response: the envelope it writes decodes to the upstream's
 * answer in every mode (one piece, tryEnd with the exact size, chunked writes), backpressure
 * pauses the upstream, and failures answer or cut as they should.
 */
import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { EnvelopeDecoder } from '../../src/protocol/envelope.js'
import { decodeResponseHead } from '../../src/protocol/head.js'
import { ResponseStream } from '../../src/proxy/responseStream.js'
import type { HttpResponse } from '../../src/proxy/uws.js'

const s2c = randomBytes(32)
const sessionId = randomBytes(16).toString('base64url')
const requestLine = 'GET /files/big'
const K = 65_536

/** Takes `room` bytes per tryEnd (then reports backpressure); write() always takes everything. */
class FakeRes {
  out: Buffer[] = []
  status = ''
  headers: [string, string][] = []
  offset = 0
  room = Infinity
  ended = false
  closed = false
  mode: 'end' | 'tryEnd' | 'write' | undefined
  writableHandler: ((offset: number) => boolean) | undefined
  cork(cb: () => void) { cb(); return this }
  writeStatus(s: string) { this.status = s; return this }
  writeHeader(k: string, v: string) { this.headers.push([k, v]); return this }
  write(chunk: Buffer): boolean {
    this.mode = 'write'
    this.take(chunk, chunk.length)
    return this.offset <= this.room
  }
  end(body?: Buffer, close?: boolean) {
    this.mode ??= 'end'
    if (body) this.take(body, body.length)
    this.ended = true
    this.closed = !!close
    return this
  }
  tryEnd(chunk: Buffer, total: number): [boolean, boolean] {
    this.mode = 'tryEnd'
    const n = Math.min(chunk.length, Math.max(0, this.room - this.offset))
    this.take(chunk, n)
    if (this.offset > total) throw new Error(`wrote ${this.offset} bytes, over the announced ${total}`)
    const done = this.offset === total
    if (done) this.ended = true
    return [n === chunk.length, done]
  }
  getWriteOffset() { return this.offset }
  onWritable(h: (offset: number) => boolean) { this.writableHandler = h; return this }
  /** The socket drained: room for `more` bytes. */
  drain(more: number) {
    this.room = this.offset + more
    return this.writableHandler?.(this.offset)
  }
  private take(b: Buffer, n: number) {
    this.out.push(Buffer.from(b.subarray(0, n)))
    this.offset += n
  }
  get bytes() { return Buffer.concat(this.out) }
}

function setup(o: { limit?: number; head?: boolean; joined?: boolean } = {}) {
  const res = new FakeRes()
  const events: string[] = []
  const flow = {
    pause: () => events.push('pause'),
    resume: () => events.push('resume'),
    abort: (err: Error) => { events.push(`abort ${err.message}`); sink.error(err) },
  }
  const sink = new ResponseStream({
    res: res as unknown as HttpResponse,
    statusLine: (st) => `${st} X`,
    envelope: { kind: 'response', sessionId, requestLine, key: s2c, seq: 42, timestampMs: 1_000 },
    pool: undefined,
    limit: o.limit ?? 1 << 30,
    head: o.head ?? false,
    joined: o.joined ?? false,
    gone: () => false,
    keepAlive: () => true,
    failed: (err) => events.push(`failed ${err.message}`),
    started: (st) => events.push(`started ${st}`),
    finished: (st) => events.push(`finished ${st}`),
    cut: (err) => events.push(`cut ${err.message}`),
    sent: () => undefined,
  })
  return { res, sink, flow, events }
}

function decode(bytes: Buffer) {
  const dec = new EnvelopeDecoder({ kind: 'response', sessionId, requestLine, key: s2c, requestTimestampMs: 1_000, requestSeq: 42 })
  const records = dec.push(bytes)
  dec.end()
  return { head: decodeResponseHead(records[0]!.plaintext), body: Buffer.concat(records.slice(1).map((r) => r.plaintext)), records: records.length, joined: dec.joined, wireRecords: dec.records }
}

function feed(sink: ResponseStream, body: Buffer, chunk: number) {
  for (let o = 0; o < body.length; o += chunk) sink.data(body.subarray(o, o + chunk))
}

describe('ResponseStream', () => {
  it('answers a joined request with one joined record when the whole answer fits it, else with separate records', () => {
    for (const [n, joinedOnWire] of [[1000, true], [K - 100, true], [K, false], [0, false]] as const) {
      const { res, sink, flow, events } = setup({ joined: true })
      const body = randomBytes(n)
      sink.start(200, [['content-type', 'text/plain']], n, flow)
      feed(sink, body, 10_000)
      sink.end()
      const d = decode(res.bytes)
      expect(d.body.equals(body), `${n} bytes`).toBe(true)
      expect(d.joined, `${n} bytes`).toBe(joinedOnWire)
      expect(d.wireRecords, `${n} bytes`).toBe(joinedOnWire || n === 0 ? 1 : 2)
      expect(events).toEqual(['started 200', 'finished 200'])
    }
    // An unjoined request never gets a joined answer (its sender may not read one).
    const { res, sink, flow } = setup({ joined: false })
    sink.start(200, [], 10, flow)
    sink.data(Buffer.alloc(10))
    sink.end()
    expect(decode(res.bytes)).toMatchObject({ joined: false, wireRecords: 2 })
  })

  it.each([0, 1, K])('a %i-byte answer goes out in one piece when it ends (status, headers, envelope)', (n) => {
    const { res, sink, flow, events } = setup()
    const body = randomBytes(n)
    sink.start(201, [['content-type', 'text/plain']], n, flow)
    feed(sink, body, 10_000)
    expect(res.out).toHaveLength(0)
    sink.end()
    expect(res.mode).toBe('end')
    expect(res.status).toBe('201 X')
    expect(res.headers).toContainEqual(['content-type', 'application/vnd.gatehouse.envelope'])
    const d = decode(res.bytes)
    expect(d.head).toEqual({ status: 201, headers: [['content-type', 'text/plain']] })
    expect(d.body.equals(body)).toBe(true)
    expect(events).toEqual(['started 201', 'finished 201'])
  })

  it.each([K + 1, 2 * K, 5 * K + 7])('%i bytes with a content-length: tryEnd with the exact envelope size, decodes whole', (n) => {
    const { res, sink, flow, events } = setup()
    const body = randomBytes(n)
    sink.start(200, [], n, flow)
    feed(sink, body, 9_999)
    expect(res.out.length).toBeGreaterThan(0) // streaming before the end
    sink.end()
    expect(res.mode).toBe('tryEnd')
    expect(res.ended).toBe(true) // offset reached the announced total exactly
    const d = decode(res.bytes)
    expect(d.body.equals(body)).toBe(true)
    expect(d.records).toBe(1 + Math.ceil(n / K))
    expect(events).toEqual(['started 200', 'finished 200'])
  })

  it('without a content-length: chunked writes, ended after the FINAL record', () => {
    const { res, sink, flow, events } = setup()
    const body = randomBytes(3 * K + 5)
    sink.start(200, [], undefined, flow)
    feed(sink, body, 50_000)
    sink.end()
    expect(res.mode).toBe('write')
    expect(res.ended).toBe(true)
    expect(decode(res.bytes).body.equals(body)).toBe(true)
    expect(events).toEqual(['started 200', 'finished 200'])
  })

  it('pauses the upstream while uWS is backpressured and resumes when it drains, bytes intact', () => {
    const { res, sink, flow, events } = setup()
    const n = 6 * K
    const body = randomBytes(n)
    res.room = 100_000
    sink.start(200, [], n, flow)
    feed(sink, body.subarray(0, 3 * K), 20_000)
    expect(events).toEqual(['started 200', 'pause'])
    res.drain(1 << 30)
    expect(events.at(-1)).toBe('resume')
    feed(sink, body.subarray(3 * K), 20_000)
    sink.end()
    expect(decode(res.bytes).body.equals(body)).toBe(true)
    expect(events.at(-1)).toBe('finished 200')
  })

  it('fails before anything was written: an error answer; after: a cut (no FINAL record)', () => {
    const a = setup()
    a.sink.start(200, [], undefined, a.flow)
    a.sink.data(randomBytes(1000))
    a.sink.error(new Error('socket hang up'))
    expect(a.events).toEqual(['failed socket hang up'])
    expect(a.res.out).toHaveLength(0)

    const b = setup()
    b.sink.start(200, [], undefined, b.flow)
    feed(b.sink, randomBytes(3 * K), 10_000)
    b.sink.error(new Error('socket hang up'))
    expect(b.events).toEqual(['started 200', 'cut socket hang up'])
    expect(() => decode(b.res.bytes)).toThrow(/final record/)
  })

  it('refuses an answer whose content-length is over the limit before writing anything, except to HEAD', () => {
    const a = setup({ limit: 1000 })
    a.sink.start(200, [], 1001, a.flow)
    expect(a.events).toEqual(['abort upstream response too large', 'failed upstream response too large'])
    const b = setup({ limit: 1000, head: true })
    b.sink.start(200, [], 5000, b.flow)
    b.sink.end()
    expect(b.events).toEqual(['started 200', 'finished 200'])
  })

  it('an upstream sending more than its content-length is aborted', () => {
    const { sink, flow, events } = setup()
    sink.start(200, [], 10, flow)
    sink.data(randomBytes(11))
    expect(events[0]).toBe('abort upstream sent more than its content-length')
    expect(events[1]).toBe('failed upstream sent more than its content-length')
  })

  it('an answer shorter than its content-length is cut, never ended as complete', () => {
    const { res, sink, flow, events } = setup()
    sink.start(200, [], 4 * K, flow)
    feed(sink, randomBytes(2 * K), 10_000)
    sink.end()
    expect(events).toEqual(['started 200', 'cut upstream answer shorter than its content-length'])
    expect(res.ended).toBe(false)
  })
})
