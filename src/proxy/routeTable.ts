/**
 * The route table, built once from config: the longest prefix that matches a path wins.
 * Matching is a scan over prefixes sorted longest first; route tables are short (tens of
 * entries), where a scan of `startsWith` beats a trie's allocation and pointer chasing.
 */
export interface RouteSpec {
  prefix: string
  /** One upstream origin; or set `upstreams` instead (exactly one of the two). */
  upstream?: string | undefined
  /** Several upstream origins, round-robin over the healthy ones (src/proxy/upstreams.ts). */
  upstreams?: readonly string[] | undefined
  stripPrefix: boolean
  timeoutSeconds: number
  /** Time allowed to connect to a target (default 3000 ms). */
  connectTimeoutMs?: number | undefined
  /** Active health checks of each target; without `path`, passive checks only. */
  healthCheck?: HealthCheckSpec | undefined
  upstreamCa?: string | undefined
}

export interface HealthCheckSpec {
  /** Path asked with GET; a 2xx or 3xx answer within timeoutMs is a success. Undefined: no active checks. */
  path?: string | undefined
  intervalSeconds: number
  timeoutMs: number
  /** Consecutive failed checks that take an up target out of the rotation. */
  unhealthyAfter: number
  /** Consecutive successful checks that bring a down target back. */
  healthyAfter: number
}

export interface Route extends RouteSpec {
  /** Index in the config, for error messages. */
  index: number
}

export class RouteTable {
  private readonly routes: Route[]

  constructor(specs: readonly RouteSpec[]) {
    this.routes = specs.map((s, index) => ({ ...s, index })).sort((a, b) => b.prefix.length - a.prefix.length)
  }

  /** The route for `path` (no query), or undefined. "/demo" matches the prefix "/demo/" too. */
  match(path: string): Route | undefined {
    for (const r of this.routes) {
      if (path.startsWith(r.prefix) || path.length === r.prefix.length - 1 && r.prefix.startsWith(path)) return r
    }
    return undefined
  }

  /** The path to send upstream. */
  upstreamPath(route: Route, path: string, query: string): string {
    let p = path
    if (route.stripPrefix) p = '/' + path.slice(Math.min(path.length, route.prefix.length))
    return query ? `${p}?${query}` : p
  }

  get all(): readonly Route[] {
    return this.routes
  }
}

// Dot segments (plain or percent-encoded), encoded slashes and backslashes would let a path
// that matches one prefix reach another once the upstream normalises it: refuse them.
const UNSAFE_PATH_RE = /(^|\/)\.\.?(\/|$)|%2e|%2f|%5c|\\|%00/i

export function isSafePath(path: string): boolean {
  return path.charCodeAt(0) === 47 /* '/' */ && !UNSAFE_PATH_RE.test(path)
}
