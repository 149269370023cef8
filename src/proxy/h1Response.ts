/**
 * An incremental parser of one HTTP/1.1 answer on a kept-alive upstream connection (RFC 9112),
 * strict where leniency lets an upstream smuggle or confuse framing:
 *
 *   status line   HTTP/1.1 or HTTP/1.0, three digits, optional reason; bare CR or LF refused
 *   header block  at most maxHeaderBytes up to the empty line; token names, no space before ':',
 *                 no obs-fold, no control characters in values
 *   framing       no body for HEAD, 1xx, 204 and 304; Transfer-Encoding with Content-Length
 *                 refused; a final `chunked` coding is decoded (chunk size line and trailers
 *                 bounded); another coding, or no length at all, reads to the end of the connection
 *   1xx           skipped (100 Continue, 103 Early Hints); 101 refused (we never ask to upgrade)
 *
 * The parser knows nothing of sockets: the pool (h1Pool.ts) feeds it what the socket reads and
 * tells it when the connection ended. Bytes after a complete answer (we never pipeline) make the
 * connection unusable. Every failure is an H1ParseError, and ends the connection.
 *
 *   state:  head ─▶ length | chunk-size ⇄ chunk-data | to-close ─▶ done
 *                              └─▶ trailers ─▶ done
 */
import { UpstreamError } from '../errors.js'
import { BAD_FIELD_VALUE_RE as BAD_VALUE_RE, TOKEN_RE } from '../protocol/head.js'

/** The upstream's answer does not parse as HTTP/1.1: the connection is closed, the request fails. */
export class H1ParseError extends UpstreamError {
  constructor(reason: string) {
    super(`upstream sent an invalid HTTP response: ${reason}`)
  }
}

export interface H1ResponseEvents {
  /** A final (non-1xx) status, its headers (names lower-case, repeated ones as arrays) and reason phrase. */
  head(status: number, headers: Record<string, string | string[]>, reason: string): void
  data(chunk: Buffer): void
  /** The answer is complete; `reusable`: the connection may carry another request. */
  end(reusable: boolean): void
}

export interface H1ResponseLimits {
  /** Status line and headers up to the empty line (undici and Node: 16 KiB). */
  maxHeaderBytes: number
}

type State = 'head' | 'length' | 'chunk-size' | 'chunk-data' | 'chunk-crlf' | 'trailers' | 'to-close' | 'done'

const CRLF = Buffer.from('\r\n')
const CRLFCRLF = Buffer.from('\r\n\r\n')
const LFLF = Buffer.from('\n\n')
const STATUS_RE = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: ([\t\x20-\x7e\x80-\xff]*))?$/
const LENGTH_RE = /^\d{1,15}$/
const CHUNK_SIZE_RE = /^([0-9A-Fa-f]{1,13})[\t ]*(?:;[\t\x20-\x7e\x80-\xff]*)?$/
/** A chunk-size line with extensions: more than this is hostile. */
const MAX_CHUNK_LINE = 4096
const EMPTY = Buffer.alloc(0)

export class H1ResponseParser {
  private state: State = 'head'
  /** Bytes of an incomplete head, chunk-size line or trailer section. */
  private pending: Buffer = EMPTY
  /** Body bytes left: of the content-length, or of the current chunk. */
  private remaining = 0
  private crlfSeen = 0
  private reusable = true
  private trailerBytes = 0

  constructor(
    /** No body whatever the headers say (the request was HEAD). */
    private headRequest: boolean,
    private readonly limits: H1ResponseLimits,
    private readonly on: H1ResponseEvents,
  ) {}

  /** Ready for the next answer on the same connection (one parser per connection, not per request). */
  reset(headRequest: boolean): void {
    this.headRequest = headRequest
    this.state = 'head'
    this.pending = EMPTY
    this.remaining = 0
    this.crlfSeen = 0
    this.reusable = true
    this.trailerBytes = 0
  }

  /** The answer ended (reset() starts the next one). */
  get complete(): boolean {
    return this.state === 'done'
  }

  /** The answer's head was parsed: the status line arrived. */
  get started(): boolean {
    return this.state !== 'head'
  }

  /**
   * Feed bytes read from the connection. Returns the bytes past the end of the answer (the
   * connection must then not be reused), or undefined. Throws H1ParseError.
   */
  execute(chunk: Buffer): Buffer | undefined {
    let buf = chunk
    while (buf.length > 0) {
      switch (this.state) {
        case 'head': {
          const rest = this.readHead(buf)
          if (rest === undefined) return undefined
          buf = rest
          break
        }
        case 'length':
          buf = this.body(buf)
          if (this.remaining === 0) this.done()
          break
        case 'chunk-size': {
          const rest = this.readChunkSize(buf)
          if (rest === undefined) return undefined
          buf = rest
          break
        }
        case 'chunk-data':
          buf = this.body(buf)
          if (this.remaining === 0) {
            this.state = 'chunk-crlf'
            this.crlfSeen = 0
          }
          break
        case 'chunk-crlf': {
          while (this.crlfSeen < 2 && buf.length > 0) {
            if (buf[0] !== CRLF[this.crlfSeen]) throw new H1ParseError('chunk data not followed by CRLF')
            this.crlfSeen++
            buf = buf.subarray(1)
          }
          if (this.crlfSeen === 2) this.state = 'chunk-size'
          break
        }
        case 'trailers': {
          const rest = this.readTrailers(buf)
          if (rest === undefined) return undefined
          buf = rest
          break
        }
        case 'to-close':
          this.on.data(buf)
          return undefined
        case 'done':
          return buf
      }
    }
    return undefined
  }

  /**
   * The connection ended (the upstream closed it). Completes an answer read to the end of the
   * connection; anything else unfinished is an error.
   */
  close(): void {
    if (this.state === 'done') return
    if (this.state === 'to-close') {
      this.state = 'done'
      this.on.end(false)
      return
    }
    throw new H1ParseError(this.state === 'head' && this.pending.length === 0 ? 'connection closed before an answer' : 'connection closed in the middle of the answer')
  }

  /** Hand on up to `remaining` bytes as body (a view, no copy); returns the bytes after them. */
  private body(buf: Buffer): Buffer {
    const n = Math.min(this.remaining, buf.length)
    this.remaining -= n
    if (n === buf.length) {
      this.on.data(buf)
      return EMPTY
    }
    this.on.data(buf.subarray(0, n))
    return buf.subarray(n)
  }

  private done(): void {
    this.state = 'done'
    this.pending = EMPTY
    this.on.end(this.reusable)
  }

  /** Collect the head; parse it once the empty line is in. Returns the bytes after it. */
  private readHead(chunk: Buffer): Buffer | undefined {
    const from = Math.max(0, this.pending.length - 3)
    const buf = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk])
    const end = buf.indexOf(CRLFCRLF, from)
    if (end < 0) {
      if (buf.length > this.limits.maxHeaderBytes) throw new H1ParseError('header block too large')
      // A head with bare LF line endings would otherwise wait for CRLFCRLF until the timeout.
      if (buf.indexOf(LFLF, from) >= 0) throw new H1ParseError('bare LF line endings')
      // Copied: the socket's chunk may be reused by the caller (it is not today; cheap insurance).
      this.pending = this.pending.length === 0 ? Buffer.from(buf) : buf
      return undefined
    }
    if (end + 4 > this.limits.maxHeaderBytes) throw new H1ParseError('header block too large')
    this.pending = EMPTY
    const rest = buf.subarray(end + 4)
    this.parseHead(buf.toString('latin1', 0, end))
    return rest
  }

  private parseHead(text: string): void {
    const lines = text.split('\r\n')
    const m = STATUS_RE.exec(lines[0]!)
    if (!m) throw new H1ParseError('bad status line')
    const minor = m[1]!
    const status = Number(m[2])
    // No prototype: a header named `constructor` or `__proto__` is just a header.
    const headers = Object.create(null) as Record<string, string | string[]>
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!
      // Checked first: a folded line that holds a colon is still a fold, not a header named " x".
      if (line[0] === ' ' || line[0] === '\t') throw new H1ParseError('obsolete line folding')
      const colon = line.indexOf(':')
      if (colon <= 0) throw new H1ParseError('header line without a name')
      const name = line.slice(0, colon)
      if (!TOKEN_RE.test(name)) throw new H1ParseError('invalid header name')
      const value = trimOws(line.slice(colon + 1))
      // Also catches a bare CR or LF inside the block, which split() left in a line.
      if (BAD_VALUE_RE.test(value)) throw new H1ParseError('invalid header value')
      const key = name.toLowerCase()
      const prev = headers[key]
      if (prev === undefined) headers[key] = value
      else if (typeof prev === 'string') headers[key] = [prev, value]
      else prev.push(value)
    }
    if (status < 200) {
      if (status === 101) throw new H1ParseError('101 Switching Protocols was not asked for')
      // Informational: the real answer follows on the same connection.
      return
    }
    const connection = headers['connection']
    if (minor === '0' || (connection !== undefined && hasToken(connection, 'close'))) this.reusable = false
    const te = headers['transfer-encoding']
    const cl = headers['content-length']
    let length: number | undefined
    if (cl !== undefined) {
      const values = typeof cl === 'string' ? cl.split(',') : cl.flatMap((v) => v.split(','))
      for (const v of values) {
        const t = v.trim()
        if (!LENGTH_RE.test(t)) throw new H1ParseError('invalid content-length')
        if (length !== undefined && Number(t) !== length) throw new H1ParseError('conflicting content-length values')
        length = Number(t)
      }
    }
    if (te !== undefined && cl !== undefined) throw new H1ParseError('both transfer-encoding and content-length')
    this.on.head(status, headers, m[3] ?? '')
    if (this.headRequest || status === 204 || status === 304) return this.done()
    if (te !== undefined) {
      const codings = (typeof te === 'string' ? te : te.join(',')).split(',')
      if (codings[codings.length - 1]!.trim().toLowerCase() === 'chunked') {
        this.state = 'chunk-size'
        return
      }
      // Another final coding: the body runs to the end of the connection (RFC 9112 §6.3).
    } else if (length !== undefined) {
      if (length === 0) return this.done()
      this.state = 'length'
      this.remaining = length
      return
    }
    this.reusable = false
    this.state = 'to-close'
  }

  private readChunkSize(chunk: Buffer): Buffer | undefined {
    const buf = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk])
    const end = buf.indexOf(CRLF)
    if (end < 0) {
      if (buf.length > MAX_CHUNK_LINE) throw new H1ParseError('chunk size line too long')
      this.pending = this.pending.length === 0 ? Buffer.from(buf) : buf
      return undefined
    }
    if (end > MAX_CHUNK_LINE) throw new H1ParseError('chunk size line too long')
    this.pending = EMPTY
    const m = CHUNK_SIZE_RE.exec(buf.toString('latin1', 0, end))
    if (!m) throw new H1ParseError('invalid chunk size')
    const size = parseInt(m[1]!, 16)
    if (size === 0) {
      this.state = 'trailers'
      this.trailerBytes = 0
    } else {
      this.state = 'chunk-data'
      this.remaining = size
    }
    return buf.subarray(end + 2)
  }

  /** Trailer fields after the last chunk, up to an empty line: bounded, checked, not forwarded. */
  private readTrailers(chunk: Buffer): Buffer | undefined {
    let buf = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk])
    for (;;) {
      const end = buf.indexOf(CRLF)
      if (end < 0) {
        if (this.trailerBytes + buf.length > this.limits.maxHeaderBytes) throw new H1ParseError('trailer section too large')
        this.pending = this.pending.length === 0 ? Buffer.from(buf) : buf
        return undefined
      }
      this.trailerBytes += end + 2
      if (this.trailerBytes > this.limits.maxHeaderBytes) throw new H1ParseError('trailer section too large')
      const line = buf.toString('latin1', 0, end)
      buf = buf.subarray(end + 2)
      if (line.length === 0) {
        this.pending = EMPTY
        this.done()
        return buf
      }
      const colon = line.indexOf(':')
      if (colon <= 0 || !TOKEN_RE.test(line.slice(0, colon)) || BAD_VALUE_RE.test(line.slice(colon + 1))) throw new H1ParseError('invalid trailer field')
    }
  }
}

function trimOws(s: string): string {
  let a = 0
  let b = s.length
  while (a < b && (s.charCodeAt(a) === 32 || s.charCodeAt(a) === 9)) a++
  while (b > a && (s.charCodeAt(b - 1) === 32 || s.charCodeAt(b - 1) === 9)) b--
  return a === 0 && b === s.length ? s : s.slice(a, b)
}

function hasToken(v: string | string[], token: string): boolean {
  const all = typeof v === 'string' ? v : v.join(',')
  for (const t of all.split(',')) if (t.trim().toLowerCase() === token) return true
  return false
}
