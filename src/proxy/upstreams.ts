/**
 * Upstreams: where a route's requests go. A route names one target (`upstream`) or several
 * (`upstreams`); each request goes to the next healthy one in turn.
 *
 *   forward ─▶ pick a healthy target (round-robin) ── none ─▶ 502 at once, no connect attempt
 *                 │
 *                 ▼
 *            attempt on the target's pool ── answer ─▶ device
 *                 │ connect failed, or reset before any byte of the answer
 *                 ▼
 *            idempotent method (GET, HEAD, OPTIONS, PUT, DELETE)? ── no ─▶ 502
 *                 │ yes, once
 *                 ▼
 *            attempt on the next healthy target ─▶ answer, or 502 / 504
 *
 * Pools are per origin (upstreamTransport.ts), so a black-holed or dead origin ties up only its
 * own connections. Health comes from real traffic and optional active checks (upstreamHealth.ts,
 * upstreamHealthCheck.ts). Every request has one deadline, `timeoutSeconds` from dispatch until
 * the answer's headers, covering the wait for a connection of a saturated pool, connecting and any
 * retry; after the headers, undici's body timeout bounds each gap in the body.
 */
import { readFileSync } from 'node:fs'
import { Readable } from 'node:stream'
import type { Counter, LabelValues } from 'prom-client'
import { ConfigError, UpstreamError, UpstreamTimeoutError } from '../errors.js'
import type { Logger } from '../observability/logger.js'
import type { ProxyMetrics, UpstreamTargetState } from './metrics.js'
import type { HealthCheckSpec, Route } from './routeTable.js'
import { TargetHealth, type Clock } from './upstreamHealth.js'
import { HealthChecker, type CheckResult } from './upstreamHealthCheck.js'
import { RoundRobin } from './upstreamSelect.js'
import type { H1Pool } from './h1Pool.js'
import { Attempt, createPool, upstreamError, type AttemptOwner, type FailureKind, type ForwardRequest, type UpstreamResponse } from './upstreamTransport.js'

export { HOP_BY_HOP, type ForwardRequest, type UpstreamResponse } from './upstreamTransport.js'

/** RFC 9110 §9.2.2: methods whose intended effect is the same when sent twice. */
export const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE'])

export const DEFAULT_CONNECT_TIMEOUT_MS = 3000
const DEFAULT_HEALTH = { unhealthyAfter: 2, healthyAfter: 1 }

interface Target {
  readonly index: number
  readonly origin: string
  readonly pool: H1Pool
  readonly health: TargetHealth
}

/** Everything about one route's upstreams, prepared once. */
interface RouteUpstreams {
  readonly label: string
  readonly targets: readonly Target[]
  readonly rr: RoundRobin<Target>
  readonly timeoutMs: number
  readonly retries: { inc(): void }
  readonly checker: HealthChecker | undefined
}

export interface UpstreamsOptions {
  connections: number
  maxResponseBytes: number
  metrics?: Pick<ProxyMetrics, 'upstreamRetries' | 'upstreamHealthChecks'>
  log?: Logger
  /** Clock of the passive backoffs (tests). */
  now?: Clock
}

/** The origins of a route: `upstreams`, else `upstream`; exactly one of the two must be set. */
export function targetsOf(route: { prefix: string; upstream?: string | undefined; upstreams?: readonly string[] | undefined }): readonly string[] {
  if (route.upstream !== undefined && route.upstreams !== undefined) throw new ConfigError(`route ${route.prefix}: set upstream or upstreams, not both`)
  const list = route.upstreams ?? (route.upstream !== undefined ? [route.upstream] : [])
  if (list.length === 0) throw new ConfigError(`route ${route.prefix}: no upstream`)
  return list
}

export class Upstreams {
  /** By Route.index (position in the config). */
  private readonly byRoute: RouteUpstreams[] = []
  private readonly pools = new Map<string, H1Pool>()

  constructor(routes: readonly Route[], private readonly o: UpstreamsOptions) {
    for (const r of routes) this.byRoute[r.index] = this.prepare(r)
  }

  private prepare(r: Route): RouteUpstreams {
    const connectTimeoutMs = r.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS
    const ca = r.upstreamCa ? readFileSync(r.upstreamCa) : undefined
    const hc: HealthCheckSpec | undefined = r.healthCheck
    const targets = targetsOf(r).map((origin, index): Target => {
      // One pool per origin, shared by routes that reach it the same way.
      const key = `${origin} ${connectTimeoutMs} ${r.upstreamCa ?? ''}`
      let pool = this.pools.get(key)
      if (!pool) this.pools.set(key, (pool = createPool(origin, { connections: this.o.connections, connectTimeoutMs, ca })))
      const health = new TargetHealth({
        unhealthyAfter: hc?.unhealthyAfter ?? DEFAULT_HEALTH.unhealthyAfter,
        healthyAfter: hc?.healthyAfter ?? DEFAULT_HEALTH.healthyAfter,
        ...(this.o.now ? { now: this.o.now } : {}),
        onChange: (up, reason) => {
          if (up) this.o.log?.info({ event: 'upstream_up', route: r.prefix, target: index, reason }, 'upstream target back in the rotation')
          else this.o.log?.warn({ event: 'upstream_down', route: r.prefix, target: index, reason }, 'upstream target out of the rotation')
        },
      })
      return { index, origin, pool, health }
    })
    const m = this.o.metrics
    let checker: HealthChecker | undefined
    if (hc?.path !== undefined) {
      const results: Record<CheckResult, { inc(): void } | undefined> = {
        success: child(m?.upstreamHealthChecks, { route: r.prefix, result: 'success' }),
        failure: child(m?.upstreamHealthChecks, { route: r.prefix, result: 'failure' }),
        timeout: child(m?.upstreamHealthChecks, { route: r.prefix, result: 'timeout' }),
      }
      checker = new HealthChecker(
        targets.map((t) => ({ origin: t.origin, health: t.health, ca })),
        { ...hc, path: hc.path },
        { connectTimeoutMs, onResult: (_i, result) => results[result]?.inc() },
      )
    }
    return {
      label: r.prefix, targets, rr: new RoundRobin(targets), timeoutMs: r.timeoutSeconds * 1000,
      retries: child(m?.upstreamRetries, { route: r.prefix }) ?? { inc() {} }, checker,
    }
  }

  /** Start the active health checks. */
  start(): void {
    for (const u of this.byRoute) u?.checker?.start()
  }

  /**
   * Send one request and collect the answer: 502 GH_ERR_UPSTREAM when no target could answer,
   * 504 GH_ERR_UPSTREAM_TIMEOUT when none answered within the route's timeoutSeconds.
   */
  forward(route: Route, req: ForwardRequest): Promise<UpstreamResponse> {
    const u = this.byRoute[route.index]!
    const first = u.rr.pick()
    if (!first) return Promise.reject(new UpstreamError('no healthy upstream for this route'))
    return new Promise((resolve, reject) => {
      new Forwarding(u, req, this.o.maxResponseBytes, resolve, reject).start(first)
    })
  }

  /** Every target's state, for the upstream_up gauge. */
  *targetStates(): Iterable<UpstreamTargetState> {
    for (const u of this.byRoute) {
      if (u) for (const t of u.targets) yield { route: u.label, index: t.index, up: t.health.up }
    }
  }

  /**
   * Stop the checks and close the pools. Called once the proxy has drained: a request still held
   * by an upstream after a short grace is cut rather than waited for.
   */
  async close(graceMs = 1000): Promise<void> {
    await Promise.all(this.byRoute.map((u) => u?.checker?.close()))
    await Promise.all([...this.pools.values()].map(async (p) => {
      let timer: NodeJS.Timeout | undefined
      const late = new Promise<'late'>((resolve) => { timer = setTimeout(() => resolve('late'), graceMs).unref() })
      if (await Promise.race([p.close(), late]) === 'late') await p.destroy()
      clearTimeout(timer)
    }))
  }
}

function child<L extends string>(c: Counter<L> | undefined, labels: LabelValues<L>): { inc(): void } | undefined {
  if (!c) return undefined
  const ch = c.labels(labels)
  ch.inc(0) // present from the start: rate() and alerts see 0, not an absent series
  return ch
}

/** One request across its attempts (at most two), its deadline and its cancellation. */
class Forwarding implements AttemptOwner<Target> {
  private timer: NodeJS.Timeout | undefined
  private attempt: Attempt<Target> | undefined
  private retried = false
  private done = false
  private headersIn = false

  constructor(
    private readonly u: RouteUpstreams,
    private readonly req: ForwardRequest,
    private readonly limit: number,
    private readonly resolve: (r: UpstreamResponse) => void,
    private readonly reject: (err: Error) => void,
  ) {}

  start(first: Target): void {
    // One timer per request: setTimeout + clearTimeout measured at ~0.5 µs a pair (Node 20, 2-core
    // dev VM, 1e6 pairs), against ~170 µs of proxy work per request (docs/performance.md).
    // A streamed body: the deadline runs from its end, since the upload itself may take long.
    const body = this.req.body
    if (body instanceof Readable) body.once('end', () => this.arm())
    else this.arm()
    this.req.cancel = () => this.abandon(new UpstreamError('request abandoned'))
    this.send(first)
  }

  private arm(): void {
    if (this.done || this.headersIn) return
    this.timer = setTimeout(() => this.abandon(new UpstreamTimeoutError('upstream did not answer in time')), this.u.timeoutMs)
  }

  private send(t: Target): void {
    const a = new Attempt(t, t.health.claim(), this.limit, this)
    this.attempt = a
    a.dispatch(t.pool, this.req, this.u.timeoutMs)
  }

  answered(a: Attempt<Target>): void {
    a.target.health.answered()
    // Headers are in: from here the body timeout alone bounds the exchange.
    if (a !== this.attempt) return
    this.headersIn = true
    clearTimeout(this.timer)
    // Streamed answer: the caller goes on at the headers; the body goes to its sink.
    if (this.req.sink) this.finish(undefined, a)
  }

  ended(a: Attempt<Target>, err: Error | undefined, kind: FailureKind | undefined): void {
    const t = a.target
    if (kind === 'connect') t.health.connectFailed()
    else if (a.probe) t.health.released()
    if (this.done || a !== this.attempt) return
    if (!err) return this.finish(undefined, a)
    if (!this.retried && (kind === 'connect' || kind === 'reset') && IDEMPOTENT_METHODS.has(this.req.method) && !(this.req.body instanceof Readable)) {
      const next = this.u.rr.pickAfter(t)
      if (next) {
        this.retried = true
        this.u.retries.inc()
        return this.send(next)
      }
    }
    this.finish(upstreamError(err, kind), undefined)
  }

  /** Deadline passed or the device went away: answer now, and drop the attempt in flight. */
  private abandon(err: Error): void {
    // A streamed answer resolved at its headers: abandoning now drops the rest of its body.
    if (this.done) return this.attempt?.abort(err)
    this.finish(err, undefined)
    this.attempt?.abort(err)
  }

  private finish(err: Error | undefined, a: Attempt<Target> | undefined): void {
    if (this.done) return
    this.done = true
    clearTimeout(this.timer)
    if (err) this.reject(err)
    else this.resolve(a!)
  }
}
