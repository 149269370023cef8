/**
 * Upstream connections: one undici Pool of keep-alive connections per upstream origin, created at
 * start-up from the route table. Forwarding maps undici failures onto our typed errors: 504 when
 * the upstream is slow, 502 when it is unreachable or broken.
 */
import { readFileSync } from 'node:fs'
import { Pool, type Dispatcher } from 'undici'
import { UpstreamError, UpstreamTimeoutError } from '../errors.js'
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
  /** Set by forward(): call it to abandon the upstream request (the device went away). */
  cancel?: () => void
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

  /**
   * Send one request and collect the answer. Uses undici's handler-level `dispatch` rather than
   * `request()`: no Readable stream, promise chain or AbortSignal per request. Measured with
   * bench/quick.ts on the 2-core dev machine (see docs/performance.md).
   */
  forward(route: Route, req: ForwardRequest): Promise<UpstreamResponse> {
    const pool = this.pools.get(route.upstream)!
    const timeout = route.timeoutSeconds * 1000
    const limit = this.o.maxResponseBytes
    return new Promise((resolve, reject) => {
      let status = 0
      let headers: HeaderList = []
      const chunks: Buffer[] = []
      let size = 0
      let done = false
      const finish = (err: Error | undefined) => {
        if (done) return
        done = true
        if (err) reject(err)
        else resolve({ status, headers, body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size) })
      }
      const handler: Dispatcher.DispatchHandler = {
        onRequestStart(controller) {
          req.cancel = () => controller.abort(new UpstreamError('request abandoned'))
        },
        onResponseStart(controller, statusCode, h) {
          if (statusCode < 200) return // 1xx informational: the real answer follows
          status = statusCode
          headers = toHeaderList(h)
        },
        onResponseData(controller, chunk) {
          size += chunk.length
          if (size > limit) {
            controller.abort(new UpstreamError('upstream response too large'))
            return
          }
          chunks.push(chunk)
        },
        onResponseEnd() {
          finish(undefined)
        },
        onResponseError(_controller, err) {
          finish(err instanceof UpstreamError ? err : mapError(err))
        },
      }
      pool.dispatch({
        origin: route.upstream, method: req.method as Dispatcher.HttpMethod, path: req.path, headers: req.headers, body: req.body,
        headersTimeout: timeout, bodyTimeout: timeout,
      }, handler)
    })
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

function toHeaderList(h: Record<string, string | string[] | undefined>): HeaderList {
  const out: HeaderList = []
  for (const name in h) {
    const value = h[name]
    if (value === undefined || HOP_BY_HOP.has(name)) continue
    if (Array.isArray(value)) for (const v of value) out.push([name, v])
    else out.push([name, value])
  }
  return out
}
