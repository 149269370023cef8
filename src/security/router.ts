/**
 * Routes of the security server's HTTPS listeners, registered by the modules in routes/.
 *
 * Access classes:
 *   device  — the paths devices use; open to every network.
 *   admin   — admin API and dashboard; only from security.access.adminCidrs.
 *   self    — self-service API; only from security.access.selfServiceCidrs.
 *   proxy   — the proxy API listener (mutual TLS); no CIDR check beyond the client certificate.
 *
 * A request from outside every allow-list to any non-device path gets 403 whatever the path, so
 * that the answer does not reveal which paths exist.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from '../observability/logger.js'

export type Access = 'device' | 'admin' | 'self' | 'proxy'

export interface RouteContext {
  req: IncomingMessage
  /** Parsed JSON body for methods with a body; {} otherwise. */
  body: Record<string, unknown>
  params: Record<string, string>
  query: URLSearchParams
  /** Client address (IPv4-mapped IPv6 normalised). */
  remote: string
  log: Logger
}

export interface RouteResult {
  status: number
  /** JSON-serialised unless `raw` is set. */
  body?: unknown
  /** A ready body (HTML, files) sent with `headers['content-type']`. */
  raw?: Buffer | string
  /**
   * A long-lived answer (e.g. NDJSON): the server writes status and headers, flushes them, then
   * hands the response over; `stream` writes and ends it. On close() the server ends every stream
   * still open (its 'close' event fires), so a stream needs no shutdown hook of its own.
   */
  stream?: (res: ServerResponse) => void
  headers?: Record<string, string>
}

export interface RouteSpec {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'
  /** Exact path, with `:name` segments for parameters: `/admin/v1/devices/:user/:device`. */
  path: string
  access: Access
  /** Label for metrics (defaults to the path pattern). */
  label?: string
  /** The handler reads the request body itself from `req` (uploads); `body` is then {}. */
  rawBody?: boolean
  handler(ctx: RouteContext): Promise<RouteResult>
}

interface Compiled extends RouteSpec {
  segments: string[]
}

export interface Match {
  route: RouteSpec
  params: Record<string, string>
}

export class Router {
  private readonly routes: Compiled[] = []

  add(...specs: RouteSpec[]): this {
    for (const s of specs) this.routes.push({ ...s, segments: s.path.split('/') })
    return this
  }

  /** Routes for one listener. */
  forListener(listener: 'device' | 'proxy'): Router {
    const r = new Router()
    r.add(...this.routes.filter((x) => (listener === 'proxy') === (x.access === 'proxy')))
    return r
  }

  /** The route for a method and path; `methodMismatch` lists the allowed methods when only the method differs. */
  match(method: string, path: string): Match | { methodMismatch: string[] } | undefined {
    const parts = path.split('/')
    const allowed: string[] = []
    for (const r of this.routes) {
      const params = matchSegments(r.segments, parts)
      if (!params) continue
      if (r.method === method) return { route: r, params }
      allowed.push(r.method)
    }
    return allowed.length ? { methodMismatch: allowed } : undefined
  }

  /** True when `path` is one of the device paths (open to every network). */
  isDevicePath(path: string): boolean {
    const parts = path.split('/')
    return this.routes.some((r) => r.access === 'device' && matchSegments(r.segments, parts) !== undefined)
  }
}

function matchSegments(pattern: string[], parts: string[]): Record<string, string> | undefined {
  if (pattern.length !== parts.length) return undefined
  const params: Record<string, string> = {}
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i]!
    const v = parts[i]!
    if (p.startsWith(':')) {
      if (!v) return undefined
      let decoded: string
      try {
        decoded = decodeURIComponent(v)
      } catch {
        return undefined
      }
      params[p.slice(1)] = decoded
    } else if (p !== v) {
      return undefined
    }
  }
  return params
}
