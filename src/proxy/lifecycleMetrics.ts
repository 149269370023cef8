/**
 * Metrics of the proxy's connection-level limits, listeners and reloads (limits.ts,
 * listeners.ts, reload.ts). Labels are bounded: `limit` and `result` take the fixed words below.
 *
 * uWebSockets.js has no hook per connection or per handshake in this build: connections open and
 * the accept backlog are read from the kernel instead (connectionMetrics.ts); connections accepted
 * and TLS handshake failures are not exported (docs/metrics.md says why and what to use).
 */
import { Counter, Gauge, type Registry } from 'prom-client'
import { NAMESPACE } from '../observability/metrics.js'

const name = (n: string) => `${NAMESPACE}_proxy_${n}`

/** Registered by each ProxyServer (one per event-loop thread; summed across threads). */
export function lifecycleMetrics(registry: Registry, gauges: { inflight: () => number; listeners: () => number }) {
  const refusals = new Counter({
    name: name('limit_refusals_total'),
    help: 'Requests refused by a connection-level limit: header_bytes (431, proxy.limits.maxHeaderBytes), body_timeout (408, proxy.limits.bodyTimeoutSeconds). Concurrency refusals are counted in requests_overflow_total.',
    labelNames: ['limit'] as const, registers: [registry],
  })
  const headerBytes = refusals.labels({ limit: 'header_bytes' })
  const bodyTimeout = refusals.labels({ limit: 'body_timeout' })
  headerBytes.inc(0)
  bodyTimeout.inc(0)
  return {
    inflight: new Gauge({
      name: name('requests_in_flight'), help: 'Requests received and not yet answered (or abandoned), on the device listener.',
      registers: [registry], collect() { this.set(gauges.inflight()) },
    }),
    overflow: new Counter({
      name: name('requests_overflow_total'),
      help: 'Requests refused with 503 GH_ERR_OVERLOADED because proxy.limits.maxConcurrentRequests were already in flight on their thread.',
      registers: [registry],
    }),
    // Label children resolved once; present at 0 from the start.
    headerBytes,
    bodyTimeout,
    listeners: new Gauge({
      name: name('listeners'),
      help: 'uWebSockets.js apps open on the device port: 1, plus one per reload whose previous app still serves connections accepted before it.',
      registers: [registry], collect() { this.set(gauges.listeners()) },
    }),
  }
}

export type LifecycleMetrics = ReturnType<typeof lifecycleMetrics>

/**
 * Registered once per process, by whatever applies a reload (the proxy in the main thread, or
 * the main thread of the worker threads): a reload is counted once, not once per thread.
 */
export function reloadMetrics(registry: Registry) {
  const reloads = new Counter({
    name: name('config_reloads_total'),
    help: 'Reloads of configuration and certificates (SIGHUP), by result: success, or failure (the previous configuration and certificates stay in use).',
    labelNames: ['result'] as const, registers: [registry],
  })
  const success = reloads.labels({ result: 'success' })
  const failure = reloads.labels({ result: 'failure' })
  success.inc(0)
  failure.inc(0)
  return {
    success, failure,
    lastSuccess: new Gauge({
      name: name('config_last_reload_success_timestamp_seconds'),
      help: 'When the configuration and certificates in use were loaded (start or last successful reload), as a Unix timestamp.',
      registers: [registry],
    }),
  }
}

export type ReloadMetrics = ReturnType<typeof reloadMetrics>
