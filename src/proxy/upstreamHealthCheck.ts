/**
 * Active health checks of the targets of one route: `GET <path>` to each target every
 * `intervalSeconds`, the first right at start. A 2xx or 3xx answer within `timeoutMs` (connect,
 * headers and body) is a success; anything else a failure or a timeout.
 *
 * Checks use their own connection per target, never the route's pool: a pool whose connections
 * are all held by long requests (long polls) would make checks queue and fail although the target
 * is fine. Each check opens a fresh connection and closes it (`connection: close`), so a server
 * closing an idle kept-alive connection under a check cannot fail it.
 */
import { Client } from 'undici'
import type { HealthCheckSpec } from './routeTable.js'
import type { TargetHealth } from './upstreamHealth.js'

export type CheckResult = 'success' | 'failure' | 'timeout'

export interface CheckedTarget {
  origin: string
  health: TargetHealth
  ca?: Buffer | undefined
}

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT'])

export class HealthChecker {
  private readonly clients: Client[]
  private readonly timers: (NodeJS.Timeout | undefined)[]
  private closed = false
  private readonly running = new Set<Promise<void>>()
  private readonly onResult: ((index: number, result: CheckResult) => void) | undefined

  constructor(
    private readonly targets: readonly CheckedTarget[],
    private readonly spec: HealthCheckSpec & { path: string },
    o: { connectTimeoutMs: number; onResult?: (index: number, result: CheckResult) => void },
  ) {
    this.onResult = o.onResult
    const timeout = Math.min(o.connectTimeoutMs, spec.timeoutMs)
    this.clients = targets.map((t) => new Client(t.origin, {
      pipelining: 1,
      connect: t.ca ? { timeout, ca: t.ca } : { timeout },
    }))
    this.timers = targets.map(() => undefined)
  }

  start(): void {
    this.targets.forEach((_t, i) => this.run(i))
  }

  /** One check of target `index` (exposed for tests). */
  async checkOnce(index: number): Promise<CheckResult> {
    const client = this.clients[index]!
    const signal = AbortSignal.timeout(this.spec.timeoutMs)
    try {
      const res = await client.request({
        method: 'GET', path: this.spec.path, headers: { 'user-agent': 'gatehouse-health-check' }, reset: true, signal,
        headersTimeout: this.spec.timeoutMs, bodyTimeout: this.spec.timeoutMs,
      })
      await res.body.dump({ limit: 64 * 1024, signal })
      return res.statusCode >= 200 && res.statusCode < 400 ? 'success' : 'failure'
    } catch (err) {
      const code = (err as { code?: unknown }).code
      return signal.aborted || (typeof code === 'string' && TIMEOUT_CODES.has(code)) ? 'timeout' : 'failure'
    }
  }

  private run(index: number): void {
    this.timers[index] = undefined
    if (this.closed) return
    const p = this.checkOnce(index).then((result) => {
      if (this.closed) return
      const health = this.targets[index]!.health
      if (result === 'success') health.checkSucceeded()
      else health.checkFailed()
      this.onResult?.(index, result)
      this.timers[index] = setTimeout(() => this.run(index), this.spec.intervalSeconds * 1000).unref()
    })
    this.running.add(p)
    void p.finally(() => this.running.delete(p))
  }

  /** Stop checking; waits for the checks in flight (each bounded by timeoutMs). */
  async close(): Promise<void> {
    this.closed = true
    for (const t of this.timers) clearTimeout(t)
    await Promise.all([...this.running])
    await Promise.all(this.clients.map((c) => c.close()))
  }
}
