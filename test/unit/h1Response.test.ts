/**
 * H1ResponseParser alone (src/proxy/h1Response.ts): framing of valid answers, the same events
 * whatever the reads' boundaries (every split point, byte at a time, random splits), and every
 * hostile or malformed answer refused with an H1ParseError that names the reason.
 */
import { describe, expect, it } from 'vitest'
import { UpstreamError } from '../../src/errors.js'
import { H1ParseError, H1ResponseParser } from '../../src/proxy/h1Response.js'
import { prng as rng } from '../helpers/prng.js'

type Ev =
  | { t: 'head'; status: number; headers: Record<string, string | string[]> }
  | { t: 'data'; chunk: string }
  | { t: 'end'; reusable: boolean }
  | { t: 'extra'; bytes: string }

/** A parser and what it emitted; consecutive data (and extra bytes) merged so that read boundaries do not show. */
function make(o: { head?: boolean; maxHeaderBytes?: number } = {}) {
  const events: Ev[] = []
  const push = (e: Ev) => {
    const last = events[events.length - 1]
    if (e.t === 'data' && last?.t === 'data') last.chunk += e.chunk
    else if (e.t === 'extra' && last?.t === 'extra') last.bytes += e.bytes
    else events.push(e)
  }
  const parser = new H1ResponseParser(o.head ?? false, { maxHeaderBytes: o.maxHeaderBytes ?? 16 * 1024 }, {
    head: (status, headers) => push({ t: 'head', status, headers }),
    data: (chunk) => {
      expect(chunk.length).toBeGreaterThan(0)
      push({ t: 'data', chunk: chunk.toString('latin1') })
    },
    end: (reusable) => push({ t: 'end', reusable }),
  })
  const feed = (s: string | Buffer) => {
    const extra = parser.execute(typeof s === 'string' ? Buffer.from(s, 'latin1') : s)
    if (extra !== undefined && extra.length > 0) push({ t: 'extra', bytes: extra.toString('latin1') })
    return extra
  }
  return { parser, events, feed }
}

/** Parse `msg` fed in the given pieces (then close() if asked); the events, or the error thrown. */
function parsePieces(pieces: Buffer[], o: { head?: boolean; close?: boolean } = {}): Ev[] | Error {
  const p = make(o)
  try {
    for (const piece of pieces) p.feed(piece)
    if (o.close) p.parser.close()
  } catch (err) {
    return err as Error
  }
  return p.events
}

function parseAll(msg: string, o: { head?: boolean; close?: boolean } = {}): Ev[] {
  const r = parsePieces([Buffer.from(msg, 'latin1')], o)
  if (r instanceof Error) throw r
  return r
}

/** The H1ParseError that parsing `msg` (in one piece, then close() if asked) throws. */
function parseError(msg: string | Buffer, o: { head?: boolean; close?: boolean; maxHeaderBytes?: number } = {}): H1ParseError {
  const p = make(o)
  try {
    p.feed(msg)
    if (o.close) p.parser.close()
  } catch (err) {
    expect(err).toBeInstanceOf(H1ParseError)
    expect(err).toBeInstanceOf(UpstreamError)
    return err as H1ParseError
  }
  throw new Error(`no error for ${JSON.stringify(msg.toString())}; events ${JSON.stringify(p.events)}`)
}


describe('H1ResponseParser: valid answers', () => {
  it('reads a content-length body and ends reusable', () => {
    const ev = parseAll('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\nX-Empty:\r\nX-Pad: \t spaced \t\r\n\r\nhello')
    expect(ev).toEqual([
      { t: 'head', status: 200, headers: { 'content-length': '5', 'x-a': ['1', '2'], 'x-empty': '', 'x-pad': 'spaced' } },
      { t: 'data', chunk: 'hello' },
      { t: 'end', reusable: true },
    ])
  })

  it('accepts a status line without a reason phrase, and a repeated identical content-length', () => {
    expect(parseAll('HTTP/1.1 404\r\ncontent-length: 2, 2\r\nContent-Length: 2\r\n\r\nno')).toEqual([
      { t: 'head', status: 404, headers: { 'content-length': ['2, 2', '2'] } },
      { t: 'data', chunk: 'no' },
      { t: 'end', reusable: true },
    ])
  })

  it('content-length: 0 ends at the head', () => {
    const p = make()
    expect(p.parser.complete).toBe(false)
    expect(p.parser.started).toBe(false)
    p.feed('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n')
    expect(p.events).toEqual([{ t: 'head', status: 200, headers: { 'content-length': '0' } }, { t: 'end', reusable: true }])
    expect(p.parser.complete).toBe(true)
    expect(p.parser.started).toBe(true)
    p.parser.close() // a complete answer: closing is no error
  })

  it('decodes a chunked body with chunk extensions and trailers (trailers are not forwarded)', () => {
    const msg = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'
      + '5;name=value;q="x y"\r\nhello\r\n'
      + 'A  ;ext\r\n, world!!\n\r\n'
      + '1\r\n.\r\n'
      + '0;last\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n'
    expect(parseAll(msg)).toEqual([
      { t: 'head', status: 200, headers: { 'transfer-encoding': 'chunked' } },
      { t: 'data', chunk: 'hello, world!!\n.' },
      { t: 'end', reusable: true },
    ])
  })

  it('a chunked answer without trailers, and hex sizes in either case', () => {
    expect(parseAll('HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\nb\r\n0123456789a\r\nB\r\n0123456789b\r\n0\r\n\r\n')).toEqual([
      { t: 'head', status: 200, headers: { 'transfer-encoding': 'gzip, chunked' } },
      { t: 'data', chunk: '0123456789a0123456789b' },
      { t: 'end', reusable: true },
    ])
  })

  it('reads to the end of the connection without a length: close() completes it, not reusable', () => {
    const p = make()
    p.feed('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nsome')
    p.feed(' more')
    expect(p.parser.complete).toBe(false)
    p.parser.close()
    expect(p.parser.complete).toBe(true)
    expect(p.events).toEqual([
      { t: 'head', status: 200, headers: { 'content-type': 'text/plain' } },
      { t: 'data', chunk: 'some more' },
      { t: 'end', reusable: false },
    ])
  })

  it('a final coding other than chunked reads to the end of the connection', () => {
    expect(parseAll('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n5\r\nabcde\r\n', { close: true })).toEqual([
      { t: 'head', status: 200, headers: { 'transfer-encoding': 'chunked, gzip' } },
      { t: 'data', chunk: '5\r\nabcde\r\n' },
      { t: 'end', reusable: false },
    ])
  })

  it('HTTP/1.0 is not reusable, with or without a length', () => {
    expect(parseAll('HTTP/1.0 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok')).toEqual([
      { t: 'head', status: 200, headers: { 'content-length': '2', connection: 'keep-alive' } },
      { t: 'data', chunk: 'ok' },
      { t: 'end', reusable: false },
    ])
    expect(parseAll('HTTP/1.0 200 OK\r\n\r\nuntil close', { close: true }).at(-1)).toEqual({ t: 'end', reusable: false })
  })

  it('connection: close (any case, in a list) is not reusable', () => {
    expect(parseAll('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: Close\r\n\r\nok').at(-1)).toEqual({ t: 'end', reusable: false })
    expect(parseAll('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: upgrade, close\r\n\r\nok').at(-1)).toEqual({ t: 'end', reusable: false })
    expect(parseAll('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok').at(-1)).toEqual({ t: 'end', reusable: true })
    expect(parseAll('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n0\r\n\r\n').at(-1)).toEqual({ t: 'end', reusable: false })
  })

  it('HEAD, 204 and 304 have no body even with a content-length (or transfer-encoding)', () => {
    const head = make({ head: true })
    // Bytes after the head of a HEAD answer are not its body: they are returned as extra.
    expect(head.feed('HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n')).toBeUndefined()
    expect(head.events).toEqual([{ t: 'head', status: 200, headers: { 'content-length': '1234' } }, { t: 'end', reusable: true }])
    expect(head.parser.complete).toBe(true)

    expect(parseAll('HTTP/1.1 204 No Content\r\ncontent-length: 10\r\n\r\n')).toEqual([
      { t: 'head', status: 204, headers: { 'content-length': '10' } }, { t: 'end', reusable: true },
    ])
    expect(parseAll('HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\netag: "x"\r\n\r\n')).toEqual([
      { t: 'head', status: 304, headers: { 'content-length': '10', etag: '"x"' } }, { t: 'end', reusable: true },
    ])
    expect(parseAll('HTTP/1.1 204 No Content\r\ntransfer-encoding: chunked\r\n\r\n')).toEqual([
      { t: 'head', status: 204, headers: { 'transfer-encoding': 'chunked' } }, { t: 'end', reusable: true },
    ])
    // The HEAD answer without any length is still complete at its head, and reusable.
    expect(parseAll('HTTP/1.1 200 OK\r\n\r\n', { head: true })).toEqual([{ t: 'head', status: 200, headers: {} }, { t: 'end', reusable: true }])
  })

  it('skips 100 Continue and 103 Early Hints before the final answer', () => {
    const p = make()
    p.feed('HTTP/1.1 100 Continue\r\n\r\n')
    expect(p.events).toEqual([])
    expect(p.parser.started).toBe(false)
    p.feed('HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 3\r\n\r\nyes')
    expect(p.events).toEqual([
      { t: 'head', status: 201, headers: { 'content-length': '3' } },
      { t: 'data', chunk: 'yes' },
      { t: 'end', reusable: true },
    ])
  })

  it('returns the bytes after a complete answer from execute()', () => {
    const p = make()
    const extra = p.feed('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil')
    expect(extra?.toString()).toBe('HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil')
    expect(p.events.filter((e) => e.t === 'data')).toEqual([{ t: 'data', chunk: 'ok' }])
    // And in a later read, after the end: all of it is extra.
    expect(p.feed('more')?.toString()).toBe('more')

    for (const [msg, rest] of [
      ['HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\nJUNK', 'JUNK'],
      ['HTTP/1.1 204 No Content\r\n\r\n\r\n', '\r\n'],
      ['HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\nX', 'X'],
    ] as const) {
      const q = make()
      expect(q.feed(msg)?.toString()).toBe(rest)
      expect(q.events.filter((e) => e.t === 'end')).toEqual([{ t: 'end', reusable: true }])
    }
    const h = make({ head: true })
    expect(h.feed('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello')?.toString()).toBe('hello')
  })

  it('passes the reason phrase with the head (empty without one; 1xx reasons are not passed)', () => {
    const reasons: string[] = []
    const parse = (msg: string) => new H1ResponseParser(false, { maxHeaderBytes: 1024 }, {
      head: (_s, _h, reason) => reasons.push(reason), data: () => {}, end: () => {},
    }).execute(Buffer.from(msg, 'latin1'))
    parse('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n')
    parse('HTTP/1.1 200\r\ncontent-length: 0\r\n\r\n')
    parse('HTTP/1.1 200 \r\ncontent-length: 0\r\n\r\n')
    parse('HTTP/1.0 503 Service \tUn\xe9available \r\ncontent-length: 0\r\n\r\n')
    expect(reasons).toEqual(['Not Found', '', '', 'Service \tUn\xe9available '])
  })

  it('accepts obs-text (bytes 0x80-0xff) and tabs in values and the reason phrase', () => {
    const ev = parseAll('HTTP/1.1 200 \xe9t\xe9\tok\r\nX-L: caf\xe9\tbar\r\ncontent-length: 0\r\n\r\n')
    expect(ev[0]).toEqual({ t: 'head', status: 200, headers: { 'x-l': 'caf\xe9\tbar', 'content-length': '0' } })
  })
})

describe('H1ResponseParser: reads split anywhere give the same events', () => {
  const messages: { name: string; msg: string; head?: boolean; close?: boolean }[] = [
    { name: 'content-length', msg: 'HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-A: a\r\n\r\nhello world' },
    {
      name: 'chunked with extensions and trailers',
      msg: 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4;a=b\r\nwiki\r\n5 ;c\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\nX-U: 22\r\n\r\n',
    },
    { name: '100 and 103 then a body', msg: 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nlink: <a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc' },
    { name: 'to close', msg: 'HTTP/1.1 200 OK\r\nx: y\r\n\r\nuntil the end', close: true },
    { name: 'HTTP/1.0 with a length and extra bytes', msg: 'HTTP/1.0 200 OK\r\ncontent-length: 4\r\n\r\nabcdEXTRA' },
    { name: 'HEAD', msg: 'HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n', head: true },
    { name: '304 then extra', msg: 'HTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.1 200 OK\r\n\r\n' },
    { name: 'chunked then extra', msg: 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\nnext' },
  ]

  for (const m of messages) {
    it(`${m.name}: every split point, byte at a time, random splits`, () => {
      const whole = Buffer.from(m.msg, 'latin1')
      const expected = parseAll(m.msg, m)
      expect(expected.some((e) => e.t === 'end')).toBe(true)
      // Every split in two, and every split in three around it.
      for (let i = 0; i <= whole.length; i++) {
        expect(parsePieces([whole.subarray(0, i), whole.subarray(i)], m), `split at ${i}`).toEqual(expected)
        const j = Math.min(whole.length, i + 1 + (i % 7))
        expect(parsePieces([whole.subarray(0, i), whole.subarray(i, j), whole.subarray(j)], m), `split at ${i}, ${j}`).toEqual(expected)
      }
      // Byte at a time.
      const bytes = [...whole].map((b) => Buffer.from([b]))
      expect(parsePieces(bytes, m), 'byte at a time').toEqual(expected)
      // Random splits (seeded), into copies so that no piece shares memory with another.
      const rand = rng(0x5eed + m.msg.length)
      for (let round = 0; round < 200; round++) {
        const pieces: Buffer[] = []
        for (let at = 0; at < whole.length;) {
          const n = 1 + Math.floor(rand() * 12)
          pieces.push(Buffer.from(whole.subarray(at, at + n)))
          at += n
        }
        expect(parsePieces(pieces, m), `round ${round}: ${pieces.map((p) => p.length).join(',')}`).toEqual(expected)
      }
    })
  }

  it('hostile answers fail the same way whatever the split', () => {
    const bad = [
      'HTTP/1.1 200 OK\r\nX-A: a\0b\r\ncontent-length: 1\r\n\r\nx',
      'HTTP/1.1 200 OK\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n',
      'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n',
      'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n',
    ]
    for (const msg of bad) {
      const whole = Buffer.from(msg, 'latin1')
      const first = parsePieces([whole])
      expect(first).toBeInstanceOf(H1ParseError)
      for (let i = 0; i <= whole.length; i++) {
        const r = parsePieces([whole.subarray(0, i), whole.subarray(i)])
        expect(r, `${JSON.stringify(msg)} split at ${i}`).toBeInstanceOf(H1ParseError)
        expect((r as Error).message).toBe((first as Error).message)
      }
    }
  })
})

describe('H1ResponseParser: hostile and malformed answers', () => {
  it('refuses a head with bare LF line endings at once, not at the headers timeout', () => {
    expect(parseError('HTTP/1.1 200 OK\ncontent-length: 0\n\n').message).toMatch(/bare LF line endings/)
    expect(parseError('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\n').message).toMatch(/bare LF line endings/)
    // Split across reads too.
    const p = make()
    p.feed('HTTP/1.1 200 OK\r\nx: 1\n')
    expect(() => p.feed('\nrest')).toThrow(/bare LF line endings/)
  })

  it('takes headers named like Object.prototype members as plain headers', () => {
    const ev = parseAll('HTTP/1.1 200 OK\r\nconstructor: a\r\n__proto__: b\r\ntoString: c\r\nconstructor: d\r\ncontent-length: 0\r\n\r\n')
    const head = ev[0] as { t: 'head'; headers: Record<string, string | string[]> }
    expect(head.headers['constructor']).toEqual(['a', 'd'])
    expect(head.headers['__proto__']).toBe('b')
    expect(head.headers['tostring']).toBe('c')
    expect(Object.getPrototypeOf(head.headers)).toBeNull()
  })

  it('refuses a bad status line', () => {
    for (const line of [
      'HTTP/2.0 200 OK', 'HTTP/1.2 200 OK', 'HTTP/1.1 20 OK', 'HTTP/1.1 2000 OK', 'HTTP/1.1 099 Low', 'HTTP/1.1200 OK', 'HTTP/1.1  200 OK',
      'HTTP/1.1 200OK', 'http/1.1 200 OK', 'HTTP/1.1 abc OK', ' HTTP/1.1 200 OK', 'HTTP/1.1 200 O\x01K', 'ICY 200 OK', '',
    ]) {
      expect(parseError(`${line}\r\ncontent-length: 0\r\n\r\n`).message, line).toMatch(/bad status line/)
    }
  })

  it('refuses a header line without a colon', () => {
    expect(parseError('HTTP/1.1 200 OK\r\nX-No-Colon\r\ncontent-length: 0\r\n\r\n').message).toMatch(/header line without a name/)
    expect(parseError('HTTP/1.1 200 OK\r\n: no name\r\n\r\n').message).toMatch(/header line without a name/)
  })

  it('refuses white space before the colon and other non-token names', () => {
    expect(parseError('HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello').message).toMatch(/invalid header name/)
    expect(parseError('HTTP/1.1 200 OK\r\nContent-Length\t: 5\r\n\r\nhello').message).toMatch(/invalid header name/)
    expect(parseError('HTTP/1.1 200 OK\r\nX(y): 5\r\n\r\n').message).toMatch(/invalid header name/)
    expect(parseError('HTTP/1.1 200 OK\r\nX\xe9: 5\r\n\r\n').message).toMatch(/invalid header name/)
  })

  it('refuses obs-fold (a line starting with white space)', () => {
    expect(parseError('HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\ncontent-length: 0\r\n\r\n').message).toMatch(/obsolete line folding/)
    expect(parseError('HTTP/1.1 200 OK\r\nX-A: one\r\n\ttwo\r\n\r\n').message).toMatch(/obsolete line folding/)
    // A folded line that holds a colon is still a fold (not a header named " two").
    expect(parseError('HTTP/1.1 200 OK\r\nX-A: one\r\n two: three\r\n\r\n').message).toMatch(/obsolete line folding/)
  })

  it('refuses a bare LF or CR inside the head', () => {
    expect(parseError('HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n').message).toMatch(/bad status line/)
    expect(parseError('HTTP/1.1 200 OK\rContent-Length: 0\r\n\r\n').message).toMatch(/bad status line/)
    expect(parseError('HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 5\r\n\r\nhello').message).toMatch(/invalid header value/)
    expect(parseError('HTTP/1.1 200 OK\r\nX-A: 1\rContent-Length: 5\r\n\r\nhello').message).toMatch(/invalid header value/)
    expect(parseError('HTTP/1.1 200 OK\r\nX-A: 1\r\r\n\r\n').message).toMatch(/invalid header value/)
    expect(parseError('HTTP/1.1 200 OK\r\nX\nContent-Length: 5\r\n\r\nhello').message).toMatch(/header line without a name|invalid header name/)
    // Bare-LF line ends only: never a head end, so it runs into the size limit.
    expect(parseError('HTTP/1.1 200 OK\ncontent-length: 0\n\n' + 'x'.repeat(200), { maxHeaderBytes: 128 }).message).toMatch(/header block too large/)
  })

  it('refuses NUL and other control characters in a value', () => {
    for (const c of ['\0', '\x01', '\x08', '\x0b', '\x0c', '\x1f', '\x7f']) {
      expect(parseError(`HTTP/1.1 200 OK\r\nX-A: a${c}b\r\ncontent-length: 0\r\n\r\n`).message, JSON.stringify(c)).toMatch(/invalid header value/)
    }
  })

  it('refuses a header block over maxHeaderBytes, with and without its empty line', () => {
    const big = `HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(300)}\r\ncontent-length: 0\r\n\r\n`
    // Whole, with the empty line.
    expect(parseError(big, { maxHeaderBytes: 256 }).message).toMatch(/header block too large/)
    // Never terminated: refused once it passes the limit, without waiting for the end.
    const p = make({ maxHeaderBytes: 256 })
    p.feed('HTTP/1.1 200 OK\r\n')
    let thrown: unknown
    try {
      for (let i = 0; i < 100; i++) p.feed('X-More: aaaaaaaaaaaaaaaa\r\n')
    } catch (err) {
      thrown = err
    }
    expect(thrown).toBeInstanceOf(H1ParseError)
    expect((thrown as Error).message).toMatch(/header block too large/)
    // In pieces that each fit, the last one bringing the empty line.
    const q = make({ maxHeaderBytes: 256 })
    q.feed(big.slice(0, 200))
    expect(() => q.feed(big.slice(200))).toThrow(/header block too large/)
    // Exactly at the limit is accepted.
    const exact = 'HTTP/1.1 200 OK\r\ncontent-length: 0\r\nX-Pad: '
    const fill = 'p'.repeat(256 - exact.length - 4)
    const over = make({ maxHeaderBytes: 256 })
    expect(() => over.feed(exact + fill + 'p\r\n\r\n')).toThrow(/header block too large/)
    const at = make({ maxHeaderBytes: 256 })
    at.feed(exact + fill + '\r\n\r\n')
    expect(at.events.at(-1)).toEqual({ t: 'end', reusable: true })
  })

  it('refuses an invalid, negative or huge content-length', () => {
    for (const v of ['abc', '-1', '+5', '1.5', '0x10', '1234567890123456', '99999999999999999999', '', '5 5', '1e3']) {
      expect(parseError(`HTTP/1.1 200 OK\r\ncontent-length: ${v}\r\n\r\n`).message, v).toMatch(/invalid content-length/)
    }
    // 15 digits is the most accepted.
    expect(parseAll('HTTP/1.1 200 OK\r\ncontent-length: 100000000000000\r\n\r\nabc')[1]).toEqual({ t: 'data', chunk: 'abc' })
  })

  it('refuses two different content-lengths, as two lines or one list', () => {
    expect(parseError('HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!').message).toMatch(/conflicting content-length/)
    expect(parseError('HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello!').message).toMatch(/conflicting content-length/)
    expect(parseError('HTTP/1.1 200 OK\r\ncontent-length: 5,\r\n\r\nhello').message).toMatch(/invalid content-length/)
  })

  it('refuses transfer-encoding together with content-length (in any order, even for HEAD and 204)', () => {
    expect(parseError('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n').message).toMatch(/both transfer-encoding and content-length/)
    expect(parseError('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n').message).toMatch(/both transfer-encoding and content-length/)
    expect(parseError('HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: identity\r\n\r\n', { head: true }).message).toMatch(/both transfer-encoding/)
    expect(parseError('HTTP/1.1 204 No Content\r\ncontent-length: 0\r\ntransfer-encoding: chunked\r\n\r\n').message).toMatch(/both transfer-encoding/)
  })

  it('refuses an invalid chunk size', () => {
    const te = 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n'
    for (const line of ['zz', '-1', '0x5', ' 5', '', '5 x', '12345678901234', '+5', '5\0']) {
      expect(parseError(`${te}${line}\r\nhello\r\n0\r\n\r\n`).message, JSON.stringify(line)).toMatch(/invalid chunk size/)
    }
    // A bare LF ends no chunk-size line.
    expect(parseError(`${te}5\nhello\r\n0\r\n\r\n`).message).toMatch(/invalid chunk size/)
  })

  it('refuses a chunk size line over 4 KiB (whole, or still without its CRLF)', () => {
    const te = 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n'
    expect(parseError(`${te}5;${'e'.repeat(5000)}\r\nhello\r\n0\r\n\r\n`).message).toMatch(/chunk size line too long/)
    const p = make()
    p.feed(te)
    p.feed('5;' + 'e'.repeat(4000))
    expect(() => p.feed('e'.repeat(200))).toThrow(/chunk size line too long/)
    // Just under the limit is accepted.
    const ok = parseAll(`${te}5;${'e'.repeat(4000)}\r\nhello\r\n0\r\n\r\n`)
    expect(ok.at(-1)).toEqual({ t: 'end', reusable: true })
  })

  it('refuses chunk data not followed by CRLF', () => {
    const te = 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n'
    expect(parseError(`${te}3\r\nabcd\r\n0\r\n\r\n`).message).toMatch(/chunk data not followed by CRLF/)
    expect(parseError(`${te}3\r\nabc\n0\r\n\r\n`).message).toMatch(/chunk data not followed by CRLF/)
    expect(parseError(`${te}3\r\nabc\r0\r\n\r\n`).message).toMatch(/chunk data not followed by CRLF/)
  })

  it('refuses a trailer section over maxHeaderBytes, with or without its end', () => {
    const te = 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n'
    expect(parseError(`${te}X-T: ${'t'.repeat(300)}\r\n\r\n`, { maxHeaderBytes: 256 }).message).toMatch(/trailer section too large/)
    const p = make({ maxHeaderBytes: 256 })
    p.feed(te)
    let thrown: unknown
    try {
      for (let i = 0; i < 100; i++) p.feed('X-T: tttttttt\r\n')
    } catch (err) {
      thrown = err
    }
    expect((thrown as Error).message).toMatch(/trailer section too large/)
    const q = make({ maxHeaderBytes: 256 })
    q.feed(te)
    expect(() => q.feed('X-T: ' + 't'.repeat(300))).toThrow(/trailer section too large/)
  })

  it('refuses an invalid trailer line', () => {
    const te = 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n'
    for (const line of ['no colon', ': empty name', 'X T: v', 'X-T : v', 'X-T: a\0b', ' folded: v']) {
      expect(parseError(`${te}${line}\r\n\r\n`).message, line).toMatch(/invalid trailer field/)
    }
  })

  it('refuses 101 Switching Protocols (never asked for)', () => {
    expect(parseError('HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n').message).toMatch(/101 Switching Protocols/)
    // Also after another 1xx.
    expect(parseError('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\r\n').message).toMatch(/101/)
  })

  it('close() before or in the middle of an answer is an error (truncated)', () => {
    const cases: [string, RegExp][] = [
      ['', /connection closed before an answer/],
      ['HTTP/1.1 100 Continue\r\n\r\n', /connection closed before an answer/],
      ['HTTP/1.1 200 OK\r\ncontent-le', /connection closed in the middle of the answer/],
      ['HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf', /connection closed in the middle of the answer/],
      ['HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n', /connection closed in the middle of the answer/],
      ['HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel', /connection closed in the middle of the answer/],
      ['HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello', /connection closed in the middle of the answer/],
      ['HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r', /connection closed in the middle of the answer/],
      ['HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n', /connection closed in the middle of the answer/],
      ['HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n', /connection closed in the middle of the answer/],
    ]
    for (const [msg, re] of cases) {
      const p = make()
      if (msg) p.feed(msg)
      let thrown: unknown
      try {
        p.parser.close()
      } catch (err) {
        thrown = err
      }
      expect(thrown, JSON.stringify(msg)).toBeInstanceOf(H1ParseError)
      expect((thrown as Error).message, JSON.stringify(msg)).toMatch(re)
      expect(p.events.filter((e) => e.t === 'end')).toEqual([])
    }
  })

  it('H1ParseError is an UpstreamError with its code and a message naming the reason', () => {
    const e = parseError('HTTP/2.0 200 OK\r\n\r\n')
    expect(e.code).toBe('GH_ERR_UPSTREAM')
    expect(e.status).toBe(502)
    expect(e.message).toBe('upstream sent an invalid HTTP response: bad status line')
  })
})
