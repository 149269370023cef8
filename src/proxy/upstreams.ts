/**
 * Upstream connections: one undici Pool of keep-alive connections per upstream origin, created at
 * start-up from the route table. Forwarding maps undici failures onto our typed errors: 504 when
 * the upstream is slow, 502 when it is unreachable or broken.
 */
import { readFileSync } from 'node:fs'
import { Pool } from 'undici'
import { TooLargeError, UpstreamError, UpstreamTimeoutError } from '../errors.js'
import type { HeaderList } from '../protocol/head.js'
import type { Route } from './routeTable.js'

/** Hop-by-hop headers (RFC 9110 §7.6.1) and ones we set ourselves: never forwarded either way. */
export const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
  'proxy-authenticate', 'proxy-authorization', 'host', 'content-length', 'expect', 'http2-settings',
])

export interface UpstreamResponse {
  status: number
  headers: HeaderList
  body: Buffer
}

export interface ForwardRequest {
  method: string
  path: string
  headers: Record<string, string | string[]>
  body: Buffer | null
  signal: AbortSignal
}

export class Upstreams {
  private readonly pools = new Map<string, Pool>()

  constructor(routes: readonly Route[], private readonly o: { connections: number; maxResponseBytes: number }) {
    for (const r of routes) {
      if (this.pools.has(r.upstream)) continue
      this.pools.set(r.upstream, new Pool(r.upstream, {
        connections: o.connections,
        pipelining: 1,
        keepAliveTimeout: 30_000,
        connect: r.upstreamCa ? { ca: readFileSync(r.upstreamCa) } : {},
      }))
    }
  }

  async forward(route: Route, req: ForwardRequest): Promise<UpstreamResponse> {
    const pool = this.pools.get(route.upstream)!
    const timeout = route.timeoutSeconds * 1000
    let res
    try {
      res = await pool.request({
        method: req.method as 'GET',
        path: req.path,
        headers: req.headers,
        body: req.body,
        headersTimeout: timeout,
        bodyTimeout: timeout,
        signal: req.signal,
      })
    } catch (err) {
      throw mapError(err)
    }
    const chunks: Buffer[] = []
    let size = 0
    try {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        size += chunk.length
        if (size > this.o.maxResponseBytes) {
          res.body.destroy()
          throw new TooLargeError('upstream response over the limit')
        }
        chunks.push(chunk)
      }
    } catch (err) {
      if (err instanceof TooLargeError) throw new UpstreamError('upstream response too large')
      throw mapError(err)
    }
    const headers: HeaderList = []
    for (const [name, value] of Object.entries(res.headers)) {
      if (value === undefined || HOP_BY_HOP.has(name)) continue
      if (Array.isArray(value)) for (const v of value) headers.push([name, v])
      else headers.push([name, value])
    }
    return { status: res.statusCode, headers, body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks) }
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values()].map((p) => p.close()))
  }
}

function mapError(err: unknown): Error {
  const code = (err as { code?: string }).code ?? ''
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') {
    return new UpstreamTimeoutError('upstream did not answer in time')
  }
  return new UpstreamError('upstream unavailable')
}
