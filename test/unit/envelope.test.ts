import { randomBytes } from 'node:crypto'
import { describe, expect, it, vi } from 'vitest'
import { DecryptError, MalformedError, TooLargeError, TruncatedError } from '../../src/errors.js'
import { MAX_RECORD_PLAINTEXT } from '../../src/protocol/constants.js'
import { EnvelopeDecoder, EnvelopeEncoder, fitsJoined, splitJoined, type DecodedRecord } from '../../src/protocol/envelope.js'
import {
  MAX_HEAD_HEADERS, decodeRequestHead, decodeResponseHead, encodeRequestHead, encodeResponseHead, type HeaderList,
} from '../../src/protocol/head.js'
import { prng } from '../helpers/prng.js'

const c2s = randomBytes(32)
const s2c = randomBytes(32)
const sessionId = randomBytes(16).toString('base64url')
const LINE = 'POST /api/v1/upload?mode=full'
const TS = 1_700_000_000_000


interface RequestOpts { seq?: number; timestampMs?: number; requestLine?: string; sessionId?: string; key?: Buffer }

function encodeRequest(head: Buffer, body: Buffer | undefined, o: RequestOpts = {}): Buffer {
  const enc = new EnvelopeEncoder({
    kind: 'request', key: o.key ?? c2s, sessionId: o.sessionId ?? sessionId, requestLine: o.requestLine ?? LINE,
    seq: o.seq ?? 1, timestampMs: o.timestampMs ?? TS,
  })
  if (body === undefined) return Buffer.concat([enc.preamble, enc.record(head, true)])
  return Buffer.concat([enc.preamble, enc.record(head, false), ...enc.body(body)])
}

type DecoderParams = ConstructorParameters<typeof EnvelopeDecoder>[0]
const requestParams = (o: Partial<DecoderParams> = {}): DecoderParams => ({ kind: 'request', key: c2s, sessionId, requestLine: LINE, ...o })

function decodeChunks(params: DecoderParams, chunks: Buffer[]): DecodedRecord[] {
  const dec = new EnvelopeDecoder(params)
  const out: DecodedRecord[] = []
  for (const c of chunks) out.push(...dec.push(c))
  dec.end()
  expect(dec.done).toBe(true)
  // A joined head record reads as two: the head and one body record.
  expect(dec.records + (dec.joined ? 1 : 0)).toBe(out.length)
  return out
}

const whole = (b: Buffer): Buffer[] => [b]
const bytewise = (b: Buffer): Buffer[] => Array.from({ length: b.length }, (_, i) => b.subarray(i, i + 1))
function randomChunks(b: Buffer, seed: number, max = 9000): Buffer[] {
  const rnd = prng(seed)
  const out: Buffer[] = []
  for (let o = 0; o < b.length;) {
    const n = 1 + Math.floor(rnd() * max)
    out.push(b.subarray(o, o + n))
    o += n
  }
  return out
}

function decodeError(params: DecoderParams, env: Buffer): unknown {
  try {
    decodeChunks(params, [env])
  } catch (err) {
    return err
  }
  return undefined
}

const summary = (rs: DecodedRecord[]) => rs.map((r) => ({ index: r.index, head: r.head, final: r.final, plaintext: r.plaintext.toString('hex') }))

/** Offsets of each record of a request envelope. */
function records(env: Buffer, preamble = 20): { start: number; end: number }[] {
  const out: { start: number; end: number }[] = []
  for (let o = preamble; o < env.length;) {
    const end = o + 4 + env.readUIntBE(o + 1, 3) + 16
    out.push({ start: o, end })
    o = end
  }
  return out
}

const HEAD = encodeRequestHead({ headers: [['content-type', 'application/octet-stream']] })

describe('envelope round trips', () => {
  const sizes: [string, number, number][] = [
    // name, body length, records expected (head included)
    ['empty body', 0, 2],
    ['1 byte', 1, 2],
    ['exactly 64 KiB', MAX_RECORD_PLAINTEXT, 2],
    ['64 KiB + 1', MAX_RECORD_PLAINTEXT + 1, 3],
    ['1 MiB', 1 << 20, 17],
  ]
  for (const [name, size, count] of sizes) {
    it(`${name}: decodes to the same body, whole and in random chunks`, () => {
      const body = randomBytes(size)
      const env = encodeRequest(HEAD, body, { seq: 42 })
      const a = decodeChunks(requestParams(), whole(env))
      expect(a).toHaveLength(count)
      expect(a[0]!.head).toBe(true)
      expect(a[0]!.plaintext.equals(HEAD)).toBe(true)
      expect(a.map((r) => r.final)).toEqual(a.map((_, i) => i === count - 1))
      expect(a.slice(1).every((r) => !r.head && r.plaintext.length <= MAX_RECORD_PLAINTEXT)).toBe(true)
      expect(Buffer.concat(a.slice(1).map((r) => r.plaintext)).equals(body)).toBe(true)
      for (const seed of [1, 2, 3]) expect(summary(decodeChunks(requestParams(), randomChunks(env, seed)))).toEqual(summary(a))
      // Tiny chunks too (bounded so the 1 MiB case stays quick).
      expect(summary(decodeChunks(requestParams(), randomChunks(env, 4, size > 100_000 ? 64 : 7)))).toEqual(summary(a))
      if (size <= MAX_RECORD_PLAINTEXT + 1) expect(summary(decodeChunks(requestParams(), bytewise(env)))).toEqual(summary(a))
    })
  }

  it('a head-only request (GET) is one HEAD|FINAL record', () => {
    const env = encodeRequest(HEAD, undefined)
    expect(env[20]).toBe(0x03)
    const rs = decodeChunks(requestParams(), bytewise(env))
    expect(rs).toEqual([{ index: 0, head: true, final: true, plaintext: HEAD }])
  })

  it('exposes the preamble', () => {
    const dec = new EnvelopeDecoder(requestParams())
    dec.push(encodeRequest(HEAD, undefined, { seq: 9, timestampMs: TS + 5 }))
    expect(dec.preamble).toEqual({ kind: 'request', seq: 9, timestampMs: TS + 5 })
  })

  it('does not keep references to pushed chunks (callers may reuse their buffers)', () => {
    const body = randomBytes(100_000)
    const env = encodeRequest(HEAD, body)
    const expected = summary(decodeChunks(requestParams(), [env]))
    const dec = new EnvelopeDecoder(requestParams())
    const out: DecodedRecord[] = []
    const scratch = Buffer.alloc(7000)
    for (let o = 0; o < env.length; o += scratch.length) {
      const n = env.copy(scratch, 0, o, o + scratch.length)
      out.push(...dec.push(scratch.subarray(0, n)))
      scratch.fill(0xee) // what a reused receive buffer looks like
    }
    dec.end()
    expect(summary(out)).toEqual(expected)
  })

  it('byte-by-byte decoding copies each byte a bounded number of times (linear, not quadratic)', () => {
    const env = encodeRequest(HEAD, randomBytes(4 * MAX_RECORD_PLAINTEXT))
    const chunks = bytewise(env)
    let copied = 0
    const concat = Buffer.concat.bind(Buffer)
    const spy = vi.spyOn(Buffer, 'concat').mockImplementation((list: readonly Uint8Array[], total?: number) => {
      const out = concat(list, total)
      copied += out.length
      return out
    })
    try {
      decodeChunks(requestParams(), chunks)
    } finally {
      spy.mockRestore()
    }
    // ~262k pushes. Re-concatenating the pending bytes on every push would copy ~8.6 GB here.
    expect(copied).toBeGreaterThan(4 * MAX_RECORD_PLAINTEXT) // the spy saw the record merges
    expect(copied).toBeLessThan(2 * env.length)
  })

  it('a streaming body can be written in several body() calls', () => {
    const enc = new EnvelopeEncoder({ kind: 'request', key: c2s, sessionId, requestLine: LINE, seq: 3, timestampMs: TS })
    const parts = [enc.preamble, enc.record(HEAD, false), ...enc.body(Buffer.from('abc'), false), ...enc.body(Buffer.alloc(0), false), ...enc.body(Buffer.from('def'))]
    expect(enc.recordsWritten).toBe(3)
    const rs = decodeChunks(requestParams(), [Buffer.concat(parts)])
    expect(rs.map((r) => r.plaintext.toString())).toEqual([HEAD.toString(), 'abc', 'def'])
  })
})

describe('envelope rejects', () => {
  const body = Buffer.from('hello, world')
  const good = (() => {
    const enc = new EnvelopeEncoder({ kind: 'request', key: c2s, sessionId, requestLine: LINE, seq: 7, timestampMs: TS })
    return Buffer.concat([enc.preamble, enc.record(HEAD, false), enc.record(body.subarray(0, 7), false), enc.record(body.subarray(7), true)])
  })()
  const [r0, r1, r2] = records(good) as [{ start: number; end: number }, { start: number; end: number }, { start: number; end: number }]
  const mutate = (f: (b: Buffer) => void): Buffer => {
    const b = Buffer.from(good)
    f(b)
    return b
  }

  it('the unmodified envelope is valid', () => {
    expect(decodeChunks(requestParams(), [good])).toHaveLength(3)
  })

  const cases: [string, () => Buffer, Partial<DecoderParams>, new (...a: never[]) => Error, string][] = [
    ['bad magic', () => mutate((b) => { b[0] = 0x58 }), {}, MalformedError, 'GH_ERR_MALFORMED'],
    ['bad second magic byte', () => mutate((b) => { b[1] = 0x00 }), {}, MalformedError, 'GH_ERR_MALFORMED'],
    ['wrong version', () => mutate((b) => { b[2] = 2 }), {}, MalformedError, 'GH_ERR_MALFORMED'],
    ['wrong kind', () => mutate((b) => { b[3] = 2 }), {}, MalformedError, 'GH_ERR_MALFORMED'],
    ['unknown flags', () => mutate((b) => { b[r0.start] = b[r0.start]! | 0x80 }), {}, MalformedError, 'GH_ERR_MALFORMED'],
    ['first record without HEAD', () => mutate((b) => { b[r0.start] = 0x00 }), {}, MalformedError, 'GH_ERR_MALFORMED'],
    ['HEAD on a later record', () => mutate((b) => { b[r1.start] = 0x02 }), {}, MalformedError, 'GH_ERR_MALFORMED'],
    ['flipped ciphertext bit', () => mutate((b) => { b[r1.start + 4] = b[r1.start + 4]! ^ 0x01 }), {}, DecryptError, 'GH_ERR_DECRYPT'],
    ['flipped tag bit', () => mutate((b) => { b[r2.end - 1] = b[r2.end - 1]! ^ 0x80 }), {}, DecryptError, 'GH_ERR_DECRYPT'],
    ['flipped FINAL flag (in the AAD)', () => mutate((b) => { b[r1.start] = 0x01 }), {}, DecryptError, 'GH_ERR_DECRYPT'],
    ['changed timestamp', () => mutate((b) => { b[19] = b[19]! ^ 1 }), {}, DecryptError, 'GH_ERR_DECRYPT'],
    ['changed seq', () => mutate((b) => { b[11] = b[11]! ^ 1 }), {}, DecryptError, 'GH_ERR_DECRYPT'],
    ['wrong request line in the AAD', () => good, { requestLine: 'POST /api/v1/upload?mode=part' }, DecryptError, 'GH_ERR_DECRYPT'],
    ['wrong session id', () => good, { sessionId: randomBytes(16).toString('base64url') }, DecryptError, 'GH_ERR_DECRYPT'],
    ['wrong key (s2c)', () => good, { key: s2c }, DecryptError, 'GH_ERR_DECRYPT'],
    ['swapped record order', () => Buffer.concat([good.subarray(0, r1.start), good.subarray(r2.start, r2.end), good.subarray(r1.start, r1.end)]), {}, DecryptError, 'GH_ERR_DECRYPT'],
    ['dropped record', () => Buffer.concat([good.subarray(0, r1.start), good.subarray(r2.start)]), {}, DecryptError, 'GH_ERR_DECRYPT'],
    ['duplicated record', () => Buffer.concat([good.subarray(0, r2.start), good.subarray(r1.start, r1.end), good.subarray(r2.start)]), {}, DecryptError, 'GH_ERR_DECRYPT'],
    ['truncated: no FINAL', () => good.subarray(0, r2.start), {}, TruncatedError, 'GH_ERR_TRUNCATED'],
    ['truncated: inside a record', () => good.subarray(0, r2.end - 1), {}, TruncatedError, 'GH_ERR_TRUNCATED'],
    ['truncated: inside the preamble', () => good.subarray(0, 19), {}, TruncatedError, 'GH_ERR_TRUNCATED'],
    ['data after FINAL', () => Buffer.concat([good, Buffer.from([0x00])]), {}, MalformedError, 'GH_ERR_MALFORMED'],
    ['seq 0', () => mutate((b) => { b.writeBigUInt64BE(0n, 4) }), {}, MalformedError, 'GH_ERR_MALFORMED'],
    ['seq above 2^53-1', () => mutate((b) => { b.writeBigUInt64BE(1n << 53n, 4) }), {}, MalformedError, 'GH_ERR_MALFORMED'],
    ['timestamp above 2^53-1', () => mutate((b) => { b.writeBigUInt64BE(1n << 60n, 12) }), {}, MalformedError, 'GH_ERR_MALFORMED'],
    ['record length over 64 KiB', () => Buffer.concat([good.subarray(0, 20), Buffer.from([0x03, 0x01, 0x00, 0x01])]), {}, MalformedError, 'GH_ERR_MALFORMED'],
    ['record length over 64 KiB, even with a larger configured limit', () => Buffer.concat([good.subarray(0, 20), Buffer.from([0x03, 0xff, 0xff, 0xff])]), { maxRecordPlaintext: 1 << 24 }, MalformedError, 'GH_ERR_MALFORMED'],
    ['record over maxRecordPlaintext', () => good, { maxRecordPlaintext: 8 }, TooLargeError, 'GH_ERR_TOO_LARGE'],
  ]
  for (const [name, build, params, cls, code] of cases) {
    it(`${name} → ${code}`, () => {
      const env = build()
      const err = decodeError(requestParams(params), env)
      expect(err).toBeInstanceOf(cls)
      expect((err as { code: string }).code).toBe(code)
      // Streaming does not change the verdict.
      let streamed: unknown
      try {
        decodeChunks(requestParams(params), bytewise(env))
      } catch (e) {
        streamed = e
      }
      expect(streamed).toBeInstanceOf(cls)
    })
  }

  it('refuses an oversized record from its header alone, before the record arrives', () => {
    const dec = new EnvelopeDecoder(requestParams({ maxRecordPlaintext: 1024 }))
    const header = Buffer.from([0x03, 0x00, 0x04, 0x01]) // 1025 bytes announced
    expect(() => dec.push(Buffer.concat([good.subarray(0, 20), header]))).toThrow(TooLargeError)
  })

  it('maxRecordPlaintext admits records up to the limit', () => {
    expect(decodeChunks(requestParams({ maxRecordPlaintext: HEAD.length }), [good])).toHaveLength(3)
  })

  it('data pushed after the final record is refused', () => {
    const dec = new EnvelopeDecoder(requestParams())
    expect(dec.push(good)).toHaveLength(3)
    expect(() => dec.push(Buffer.from([0]))).toThrow(MalformedError)
    expect(dec.push(Buffer.alloc(0))).toEqual([])
  })

  it('a non-envelope body fails at its first byte', () => {
    expect(() => new EnvelopeDecoder(requestParams()).push(Buffer.from('{'))).toThrow(MalformedError)
  })

  it('a non-ASCII request line cannot be bound (latin1 would make "Ł" and "A" coincide)', () => {
    expect(() => encodeRequest(HEAD, undefined, { requestLine: 'GET /Ł' })).toThrow(MalformedError)
    const env = encodeRequest(HEAD, undefined, { requestLine: 'GET /A' })
    expect(decodeError(requestParams({ requestLine: 'GET /Ł' }), env)).toBeInstanceOf(MalformedError)
    expect(decodeError(requestParams({ requestLine: 'GET /\r\nX' }), env)).toBeInstanceOf(MalformedError)
    expect(() => encodeRequest(HEAD, undefined, { sessionId: 'sess\u0000' })).toThrow(MalformedError)
  })
})

describe('responses', () => {
  const REQ_TS = TS + 1234
  const RESP_HEAD = encodeResponseHead({ status: 200, headers: [['content-type', 'text/plain']] })
  function encodeResponse(o: { seq?: number; ts?: number; line?: string; salt?: Buffer; body?: Buffer } = {}): Buffer {
    const enc = new EnvelopeEncoder({
      kind: 'response', key: s2c, sessionId, requestLine: o.line ?? LINE, seq: o.seq ?? 5, timestampMs: o.ts ?? REQ_TS,
      ...(o.salt ? { salt: o.salt } : {}),
    })
    return Buffer.concat([enc.preamble, enc.record(RESP_HEAD, false), ...enc.body(o.body ?? Buffer.from('ok'))])
  }
  const responseParams = (o: Partial<DecoderParams> = {}): DecoderParams =>
    ({ kind: 'response', key: s2c, sessionId, requestLine: LINE, requestTimestampMs: REQ_TS, requestSeq: 5, ...o })

  it('round trips, whole and byte by byte', () => {
    const env = encodeResponse({ body: randomBytes(70_000) })
    expect(env.subarray(0, 4)).toEqual(Buffer.from([0x47, 0x48, 0x01, 0x02]))
    const a = decodeChunks(responseParams(), [env])
    expect(a).toHaveLength(3)
    expect(decodeResponseHead(a[0]!.plaintext)).toEqual({ status: 200, headers: [['content-type', 'text/plain']] })
    expect(summary(decodeChunks(responseParams(), bytewise(env)))).toEqual(summary(a))
    const dec = new EnvelopeDecoder(responseParams())
    dec.push(env)
    expect(dec.preamble).toMatchObject({ kind: 'response', seq: 5, timestampMs: REQ_TS })
    expect(dec.preamble!.salt).toEqual(env.subarray(12, 28))
  })

  it('is bound to its request: another request line, timestamp or session fails authentication', () => {
    const env = encodeResponse()
    expect(decodeError(responseParams({ requestLine: 'POST /api/v1/other' }), env)).toBeInstanceOf(DecryptError)
    expect(decodeError(responseParams({ requestTimestampMs: REQ_TS + 1 }), env)).toBeInstanceOf(DecryptError)
    expect(decodeError(responseParams({ sessionId: randomBytes(16).toString('base64url') }), env)).toBeInstanceOf(DecryptError)
    expect(decodeError(responseParams({ key: c2s }), env)).toBeInstanceOf(DecryptError)
  })

  it('a response to another seq is refused when requestSeq is given', () => {
    const env = encodeResponse({ seq: 6 })
    expect(decodeError(responseParams(), env)).toBeInstanceOf(MalformedError)
    expect(decodeChunks(responseParams({ requestSeq: 6 }), [env])).toHaveLength(2)
  })

  it('a tampered salt fails authentication (the response key changes)', () => {
    const env = encodeResponse()
    env[12] = env[12]! ^ 1
    expect(decodeError(responseParams(), env)).toBeInstanceOf(DecryptError)
  })

  it('a request envelope is not a response (kind), and vice versa', () => {
    expect(decodeError(responseParams(), encodeRequest(HEAD, undefined, { seq: 5 }))).toBeInstanceOf(MalformedError)
    expect(decodeError(requestParams(), encodeResponse())).toBeInstanceOf(MalformedError)
  })

  it('two responses to the same seq use different salts, hence different keys and ciphertexts', () => {
    const a = encodeResponse()
    const b = encodeResponse()
    expect(a.subarray(12, 28).equals(b.subarray(12, 28))).toBe(false)
    expect(a.length).toBe(b.length)
    // Same preamble prefix, same plaintexts and nonces, yet every record differs.
    for (const [ra, rb] of records(a, 28).map((r, i) => [a.subarray(r.start + 4, r.end), b.subarray(records(b, 28)[i]!.start + 4, records(b, 28)[i]!.end)])) {
      expect(ra!.equals(rb!)).toBe(false)
    }
    expect(summary(decodeChunks(responseParams(), [a]))).toEqual(summary(decodeChunks(responseParams(), [b])))
  })

  it('a fixed salt gives a deterministic envelope', () => {
    const salt = randomBytes(16)
    expect(encodeResponse({ salt }).equals(encodeResponse({ salt }))).toBe(true)
  })
})

describe('EnvelopeEncoder', () => {
  const make = (seq = 1) => new EnvelopeEncoder({ kind: 'request', key: c2s, sessionId, requestLine: LINE, seq, timestampMs: TS })

  it('refuses records after the final one', () => {
    const enc = make()
    enc.record(HEAD, true)
    expect(() => enc.record(Buffer.alloc(0), true)).toThrow(/finished/)
    expect(() => enc.body(Buffer.from('x'))).toThrow(/finished/)
  })

  it('refuses records over 64 KiB, seq < 1 and bad salts', () => {
    expect(() => make().record(Buffer.alloc(MAX_RECORD_PLAINTEXT + 1), true)).toThrow(RangeError)
    expect(() => make().record(Buffer.alloc(MAX_RECORD_PLAINTEXT), true)).not.toThrow()
    expect(() => make(0)).toThrow(RangeError)
    expect(() => make(1.5)).toThrow(RangeError)
    expect(() => new EnvelopeEncoder({ kind: 'response', key: s2c, sessionId, requestLine: LINE, seq: 1, timestampMs: TS, salt: Buffer.alloc(15) })).toThrow(RangeError)
  })

  it('marks only record 0 HEAD and only the last FINAL', () => {
    const enc = make()
    const flags = [enc.record(HEAD, false), enc.record(Buffer.from('a'), false), enc.record(Buffer.from('b'), true)].map((r) => r[0])
    expect(flags).toEqual([0x02, 0x00, 0x01])
  })

  it('uses counter nonces: the same plaintext in two envelopes of different seq encrypts differently', () => {
    const a = make(1).record(HEAD, true)
    const b = make(2).record(HEAD, true)
    expect(a.equals(b)).toBe(false)
    expect(make(1).record(HEAD, true).equals(a)).toBe(true)
  })
})

describe('head records', () => {
  const headers: HeaderList = [['accept', 'application/json'], ['x-trace', 'a b\tc'], ['x-latin', 'caf\u00e9']]

  it('request head round trips', () => {
    const buf = encodeRequestHead({ headers })
    expect(JSON.parse(buf.toString('utf8'))).toEqual({ h: headers })
    expect(decodeRequestHead(buf)).toEqual({ headers })
  })

  it('response head round trips', () => {
    const buf = encodeResponseHead({ status: 404, headers })
    expect(JSON.parse(buf.toString('utf8'))).toEqual({ s: 404, h: headers })
    expect(decodeResponseHead(buf)).toEqual({ status: 404, headers })
  })

  it('absent h means no headers; unknown members are ignored', () => {
    expect(decodeRequestHead(Buffer.from('{}'))).toEqual({ headers: [] })
    expect(decodeResponseHead(Buffer.from('{"s":204,"x":1}'))).toEqual({ status: 204, headers: [] })
  })

  const bad = (json: string) => () => decodeRequestHead(Buffer.from(json, 'utf8'))

  it('rejects non-JSON and non-objects', () => {
    for (const s of ['', 'not json', '{"h":[]', '\u0000']) expect(bad(s)).toThrow(MalformedError)
    for (const s of ['null', '[]', '"h"', '42', 'true']) expect(bad(s)).toThrow(MalformedError)
    expect(() => decodeRequestHead(Buffer.from([0xff, 0xfe]))).toThrow(MalformedError)
  })

  it('rejects wrong types', () => {
    for (const s of ['{"h":{}}', '{"h":"a: b"}', '{"h":[["a"]]}', '{"h":[["a","b","c"]]}', '{"h":[["a",1]]}', '{"h":[[1,"b"]]}', '{"h":["a:b"]}', '{"h":[null]}']) {
      expect(bad(s), s).toThrow(MalformedError)
    }
  })

  it(`accepts ${MAX_HEAD_HEADERS} headers, rejects ${MAX_HEAD_HEADERS + 1}`, () => {
    const many = (n: number): HeaderList => Array.from({ length: n }, (_, i) => [`x-h${i}`, String(i)])
    expect(decodeRequestHead(encodeRequestHead({ headers: many(MAX_HEAD_HEADERS) })).headers).toHaveLength(MAX_HEAD_HEADERS)
    expect(() => decodeRequestHead(encodeRequestHead({ headers: many(MAX_HEAD_HEADERS + 1) }))).toThrow(MalformedError)
  })

  it('rejects CR, LF and NUL in values (header injection) and characters beyond latin1', () => {
    for (const v of ['a\r\nx-injected: 1', 'a\nb', 'a\rb', 'a\u0000b', '\u20ac', 'a\u007fb']) {
      expect(() => decodeRequestHead(encodeRequestHead({ headers: [['x-v', v]] })), JSON.stringify(v)).toThrow(MalformedError)
    }
  })

  it('rejects invalid names', () => {
    for (const n of ['', 'x y', 'x:y', 'x\r\n', 'é', '(x)', 'x/y', 'x"y']) {
      expect(() => decodeRequestHead(encodeRequestHead({ headers: [[n, 'v']] })), JSON.stringify(n)).toThrow(MalformedError)
    }
    expect(decodeRequestHead(encodeRequestHead({ headers: [["!#$%&'*+.^_`|~-Az09", 'v']] })).headers).toHaveLength(1)
  })

  it('response status must be an integer in 100..599', () => {
    for (const s of [100, 200, 599]) expect(decodeResponseHead(encodeResponseHead({ status: s, headers: [] })).status).toBe(s)
    for (const s of ['99', '600', '200.5', '"200"', 'null', '-200', '1e3']) {
      expect(() => decodeResponseHead(Buffer.from(`{"s":${s},"h":[]}`)), s).toThrow(MalformedError)
    }
    expect(() => decodeResponseHead(Buffer.from('{"h":[]}'))).toThrow(MalformedError)
  })
})

describe('joined head records (FLAG_JOINED)', () => {
  const HEAD_JSON = encodeRequestHead({ headers: [['content-type', 'application/json']] })
  const joinedRequest = (body: Buffer, seq = 11) => {
    const enc = new EnvelopeEncoder({ kind: 'request', key: c2s, sessionId, requestLine: LINE, seq, timestampMs: TS })
    return Buffer.concat([enc.preamble, enc.joined(HEAD_JSON, body, true)])
  }

  it('one record with HEAD | FINAL | JOINED that reads as the head and one body record, however it is chunked', () => {
    const body = randomBytes(3000)
    const env = joinedRequest(body)
    expect(env[20]).toBe(0x07)
    for (const chunks of [whole(env), bytewise(env), randomChunks(env, 7, 300)]) {
      const dec = new EnvelopeDecoder(requestParams())
      const got: DecodedRecord[] = []
      for (const c of chunks) got.push(...dec.push(c))
      dec.end()
      expect(dec.joined).toBe(true)
      expect(dec.records).toBe(1)
      expect(got.map((r) => [r.head, r.final])).toEqual([[true, false], [false, true]])
      expect(got[0]!.plaintext.equals(HEAD_JSON)).toBe(true)
      expect(got[1]!.plaintext.equals(body)).toBe(true)
    }
  })

  it('is smaller than the head and body as two records (one record header and tag less)', () => {
    const body = randomBytes(1024)
    const two = encodeRequest(HEAD_JSON, body)
    expect(two.length - joinedRequest(body).length).toBe(4 + 16 - 2)
  })

  it('a joined head may be followed by more body records', () => {
    const enc = new EnvelopeEncoder({ kind: 'request', key: c2s, sessionId, requestLine: LINE, seq: 12, timestampMs: TS })
    const env = Buffer.concat([enc.preamble, enc.joined(HEAD_JSON, Buffer.from('abc'), false), enc.record(Buffer.from('def'), true)])
    const got = decodeChunks(requestParams(), [env]).map((r) => [r.head, r.final, r.plaintext.toString()])
    expect(got).toEqual([[true, false, HEAD_JSON.toString()], [false, false, 'abc'], [false, true, 'def']])
  })

  it('an unjoined envelope reports joined false', () => {
    const dec = new EnvelopeDecoder(requestParams())
    dec.push(encodeRequest(HEAD_JSON, Buffer.from('x')))
    expect(dec.joined).toBe(false)
  })

  it('fitsJoined is exact at the 64 KiB record limit, and the encoder refuses what does not fit or comes late', () => {
    expect(fitsJoined(HEAD_JSON.length, MAX_RECORD_PLAINTEXT - 2 - HEAD_JSON.length)).toBe(true)
    expect(fitsJoined(HEAD_JSON.length, MAX_RECORD_PLAINTEXT - 1 - HEAD_JSON.length)).toBe(false)
    const enc = () => new EnvelopeEncoder({ kind: 'request', key: c2s, sessionId, requestLine: LINE, seq: 13, timestampMs: TS })
    const max = joinedRequest(Buffer.alloc(MAX_RECORD_PLAINTEXT - 2 - HEAD_JSON.length))
    expect(decodeChunks(requestParams(), [max])[1]!.plaintext).toHaveLength(MAX_RECORD_PLAINTEXT - 2 - HEAD_JSON.length)
    expect(() => enc().joined(HEAD_JSON, Buffer.alloc(MAX_RECORD_PLAINTEXT - 1 - HEAD_JSON.length), true)).toThrow(RangeError)
    const later = enc()
    later.record(HEAD_JSON, false)
    expect(() => later.joined(HEAD_JSON, Buffer.from('x'), true)).toThrow(/only the head record/)
  })

  it('splitJoined refuses a head length past the record and a record shorter than the prefix', () => {
    expect(splitJoined(Buffer.from([0, 2, 0x7b, 0x7d, 0x41])).map((b) => b.toString())).toEqual(['{}', 'A'])
    expect(() => splitJoined(Buffer.from([0, 3, 0x7b, 0x7d]))).toThrow(MalformedError)
    expect(() => splitJoined(Buffer.from([0]))).toThrow(MalformedError)
    expect(() => splitJoined(Buffer.alloc(0))).toThrow(MalformedError)
  })

  it('pushFramed marks the joined head record for the crypto pool, which splits it after opening', () => {
    const body = randomBytes(500)
    const framed = new EnvelopeDecoder(requestParams()).pushFramed(joinedRequest(body))
    expect(framed.map((r) => [r.head, r.joined, r.final])).toEqual([[true, true, true]])
  })
})

describe('joined head record with an empty body', () => {
  it('reads as a head-only record (a GET), inline and after the pool split alike', () => {
    const head = encodeRequestHead({ headers: [] })
    const enc = new EnvelopeEncoder({ kind: 'request', key: c2s, sessionId, requestLine: LINE, seq: 21, timestampMs: TS })
    const env = Buffer.concat([enc.preamble, enc.joined(head, Buffer.alloc(0), true)])
    const dec = new EnvelopeDecoder(requestParams())
    const got = dec.push(env)
    dec.end()
    expect(dec.joined).toBe(true)
    expect(got.map((r) => [r.head, r.final, r.plaintext.toString()])).toEqual([[true, true, head.toString()]])
  })
})
