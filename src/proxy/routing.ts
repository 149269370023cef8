/**
 * The route table and the upstream pools behind it, as one unit that a reload replaces:
 *
 *   generation 1: RouteTable#1 + Upstreams#1 ──reload──▶ generation 2: RouteTable#2 + Upstreams#2
 *
 * New requests match in the newest table. A request that matched a route of an older table and
 * reaches forward() after the reload is sent through the newest generation's route of the same
 * prefix (its pools are open, the old ones are closing); if the reload removed that prefix, it
 * gets 404. The old pools close gracefully: requests they hold finish within `graceMs`, then are
 * cut. The route objects carry everything upstreamPath() needs, so it works for either table.
 */
import { readFileSync } from 'node:fs'
import { ConfigError, NotFoundError } from '../errors.js'
import type { Logger } from '../observability/logger.js'
import type { ProxyMetrics, UpstreamTargetState } from './metrics.js'
import { RouteTable, type Route, type RouteSpec } from './routeTable.js'
import { Upstreams, type ForwardRequest, type UpstreamResponse } from './upstreams.js'

export interface RoutingOptions {
  connections: number
  maxResponseBytes: number
  metrics?: Pick<ProxyMetrics, 'upstreamRetries' | 'upstreamHealthChecks'>
  log?: Logger
}

interface Generation {
  readonly table: RouteTable
  readonly upstreams: Upstreams
  /** The routes of this table, to tell a current route from one of an older table. */
  readonly routes: ReadonlySet<Route>
  readonly byPrefix: ReadonlyMap<string, Route>
}

/** Build a generation; a CA file that cannot be read is a ConfigError naming the option. */
function generation(specs: readonly RouteSpec[], o: RoutingOptions): Generation {
  specs.forEach((s, i) => {
    if (s.upstreamCa === undefined) return
    try {
      readFileSync(s.upstreamCa)
    } catch (err) {
      throw new ConfigError(`proxy.routes[${i}].upstreamCa cannot be read: ${(err as NodeJS.ErrnoException).code ?? 'error'} (${s.upstreamCa})`)
    }
  })
  const table = new RouteTable(specs)
  return {
    table,
    upstreams: new Upstreams(table.all, o),
    routes: new Set(table.all),
    byPrefix: new Map(table.all.map((r) => [r.prefix, r])),
  }
}

export class Routing {
  private gen: Generation
  private readonly closing = new Set<Promise<void>>()
  private started = false

  constructor(specs: readonly RouteSpec[], private o: RoutingOptions) {
    this.gen = generation(specs, o)
  }

  /** The route for `path` in the newest table. */
  match(path: string): Route | undefined {
    return this.gen.table.match(path)
  }

  upstreamPath(route: Route, path: string, query: string): string {
    return this.gen.table.upstreamPath(route, path, query)
  }

  get all(): readonly Route[] {
    return this.gen.table.all
  }

  forward(route: Route, req: ForwardRequest): Promise<UpstreamResponse> {
    const g = this.gen
    if (g.routes.has(route)) return g.upstreams.forward(route, req)
    // Matched before a reload: the same prefix in the newest table, if it is still there.
    const now = g.byPrefix.get(route.prefix)
    if (!now) return Promise.reject(new NotFoundError('no route for this path'))
    return g.upstreams.forward(now, req)
  }

  start(): void {
    this.started = true
    this.gen.upstreams.start()
  }

  targetStates(): Iterable<UpstreamTargetState> {
    return this.gen.upstreams.targetStates()
  }

  /**
   * Build the next generation (throws, changing nothing, if it cannot be built). `commit()`
   * swaps it in and closes the old pools within `graceMs`; `discard()` drops it unused.
   */
  prepare(specs: readonly RouteSpec[], o: RoutingOptions): { commit(graceMs: number): void; discard(): Promise<void> } {
    const next = generation(specs, o)
    return {
      commit: (graceMs) => {
        const old = this.gen
        this.gen = next
        this.o = o
        if (this.started) next.upstreams.start()
        const p = old.upstreams.close(graceMs).catch((err: unknown) => this.o.log?.error({ err }, 'closing the previous upstream pools failed'))
        this.closing.add(p)
        void p.finally(() => this.closing.delete(p))
      },
      discard: () => next.upstreams.close(0),
    }
  }

  /** Close the pools (and wait for older generations still closing). */
  async close(graceMs?: number): Promise<void> {
    await Promise.all([this.gen.upstreams.close(graceMs), ...this.closing])
  }
}
