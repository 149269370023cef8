/**
 * The head record's plaintext: the inner request or response metadata, JSON.
 *   request head:  {"h": [["name", "value"], ...]}
 *   response head: {"s": 200, "h": [["name", "value"], ...]}
 * Only headers inside the head are forwarded: outer HTTP headers are not authenticated.
 */
import { MalformedError } from '../errors.js'

export type HeaderList = [string, string][]

export interface RequestHead {
  headers: HeaderList
}

export interface ResponseHead {
  status: number
  headers: HeaderList
}

export const MAX_HEAD_HEADERS = 100
// RFC 9110 token characters for names (and methods); values: visible ASCII, space, tab and
// obs-text, no CR/LF/NUL. Shared with the upstream HTTP/1.1 client (h1Pool.ts, h1Response.ts).
export const TOKEN_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
/** Matches a character a field value must not hold. */
export const BAD_FIELD_VALUE_RE = /[^\t\x20-\x7e\x80-\xff]/

export function encodeRequestHead(head: RequestHead): Buffer {
  return Buffer.from(JSON.stringify({ h: head.headers }), 'utf8')
}

export function encodeResponseHead(head: ResponseHead): Buffer {
  return Buffer.from(JSON.stringify({ s: head.status, h: head.headers }), 'utf8')
}

function parse(buf: Buffer): Record<string, unknown> {
  let v: unknown
  try {
    v = JSON.parse(buf.toString('utf8'))
  } catch {
    throw new MalformedError('head record is not JSON')
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new MalformedError('head record is not an object')
  return v as Record<string, unknown>
}

function headers(v: unknown): HeaderList {
  if (v === undefined) return []
  if (!Array.isArray(v)) throw new MalformedError('head.h must be an array')
  if (v.length > MAX_HEAD_HEADERS) throw new MalformedError(`head.h has more than ${MAX_HEAD_HEADERS} headers`)
  const out: HeaderList = []
  for (let i = 0; i < v.length; i++) {
    const pair: unknown = v[i]
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') {
      throw new MalformedError(`head.h[${i}] must be a [name, value] pair of strings`)
    }
    if (!TOKEN_RE.test(pair[0])) throw new MalformedError(`head.h[${i}] has an invalid header name`)
    if (BAD_FIELD_VALUE_RE.test(pair[1])) throw new MalformedError(`head.h[${i}] has an invalid header value`)
    out.push([pair[0], pair[1]])
  }
  return out
}

export function decodeRequestHead(buf: Buffer): RequestHead {
  return { headers: headers(parse(buf).h) }
}

export function decodeResponseHead(buf: Buffer): ResponseHead {
  const o = parse(buf)
  const s = o.s
  if (typeof s !== 'number' || !Number.isInteger(s) || s < 100 || s > 599) throw new MalformedError('head.s must be an HTTP status')
  return { status: s, headers: headers(o.h) }
}
