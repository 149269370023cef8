/**
 * JSON request/response helpers for the node:http(s) listeners of the security server and the
 * admin endpoints. Every body is bounded; every failure maps to a typed error with a stable code.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { errorBody, GatehouseError, MalformedError, statusOf, TooLargeError, UnsupportedMediaTypeError } from '../errors.js'

/** Read and parse a JSON object body of at most `limit` bytes. */
export function readJson(req: IncomingMessage, limit: number): Promise<Record<string, unknown>> {
  const type = req.headers['content-type'] ?? ''
  if (!/^application\/json\s*(;|$)/i.test(type)) {
    req.resume()
    return Promise.reject(new UnsupportedMediaTypeError('content-type must be application/json'))
  }
  return readBody(req, limit).then((raw) => {
    let v: unknown
    try {
      v = JSON.parse(raw.toString('utf8'))
    } catch {
      throw new MalformedError('body is not valid JSON')
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new MalformedError('body must be a JSON object')
    return v as Record<string, unknown>
  })
}

/** The raw request body, at most `limit` bytes: 413 beyond, by content-length or as it arrives. */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    if (Number(req.headers['content-length'] ?? 0) > limit) {
      req.resume()
      reject(new TooLargeError(`body over ${limit} bytes`))
      return
    }
    const chunks: Buffer[] = []
    let size = 0
    let failed = false
    req.on('data', (c: Buffer) => {
      if (failed) return
      size += c.length
      if (size > limit) {
        failed = true
        reject(new TooLargeError(`body over ${limit} bytes`))
        return
      }
      chunks.push(c)
    })
    req.on('error', (err) => {
      if (!failed) reject(new MalformedError('request body could not be read', { cause: err }))
      failed = true
    })
    req.on('end', () => {
      if (!failed) resolve(Buffer.concat(chunks, size))
    })
  })
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const payload = body === undefined ? '' : JSON.stringify(body)
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(payload),
    'cache-control': 'no-store',
    ...headers,
  })
  res.end(payload)
}

/** Answer with the typed error's status and `{error:{code,message}}`; never a stack trace. */
export function sendError(res: ServerResponse, err: unknown): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  sendJson(res, statusOf(err), errorBody(err))
}

export function isExpected(err: unknown): boolean {
  return err instanceof GatehouseError && err.status < 500
}

/** Field readers that name the field in their error. */
export function str(o: Record<string, unknown>, key: string, max = 256): string {
  const v = o[key]
  if (typeof v !== 'string' || v.length === 0) throw new MalformedError(`${key} must be a non-empty string`)
  if (v.length > max) throw new MalformedError(`${key} must be at most ${max} characters`)
  return v
}

export function int(o: Record<string, unknown>, key: string): number {
  const v = o[key]
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new MalformedError(`${key} must be a non-negative integer`)
  return v
}
