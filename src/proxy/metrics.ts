import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { LATENCY_BUCKETS, NAMESPACE } from '../observability/metrics.js'

const subsystem = 'proxy'

/** Methods we label by name; anything else is "OTHER" so a client cannot grow the label set. */
export const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])

/** Revocation lag: milliseconds when streaming, minutes when records are replayed after an outage. */
const REVOCATION_LAG_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]

/**
 * Proxy metrics, registered once per process. Labels are bounded: route (the configured prefix,
 * or "unmatched"), method, status, result, reason. Never a user, device or session id.
 */
export function proxyMetrics(registry: Registry, gauges: { sessionCacheSize: () => number; upstreamTargets?: () => Iterable<UpstreamTargetState> }) {
  const name = (n: string) => `${NAMESPACE}_${subsystem}_${n}`
  return {
    requests: new Counter({ name: name('requests_total'), help: 'Requests by route, method and status.', labelNames: ['route', 'method', 'status'] as const, registers: [registry] }),
    duration: new Histogram({ name: name('request_duration_seconds'), help: 'Time from request to response end, by route.', labelNames: ['route'] as const, buckets: LATENCY_BUCKETS, registers: [registry] }),
    cacheHits: new Counter({ name: name('session_cache_hits_total'), help: 'Session lookups answered from the cache.', registers: [registry] }),
    cacheMisses: new Counter({ name: name('session_cache_misses_total'), help: 'Session lookups not in the cache.', registers: [registry] }),
    cacheEvictions: new Counter({ name: name('session_cache_evictions_total'), help: 'Sessions evicted from the cache to stay within its bound.', registers: [registry] }),
    graceServed: new Counter({ name: name('session_grace_served_total'), help: 'Requests served from a stale cache entry because no security server answered (outage grace).', registers: [registry] }),
    cacheSize: new Gauge({ name: name('session_cache_entries'), help: 'Sessions in the cache.', registers: [registry], collect() { this.set(gauges.sessionCacheSize()) } }),
    controlPlaneCalls: new Counter({ name: name('control_plane_requests_total'), help: 'Session validations asked of the security server, by result.', labelNames: ['result'] as const, registers: [registry] }),
    controlPlaneDuration: new Histogram({ name: name('control_plane_request_duration_seconds'), help: 'Duration of session validation calls.', buckets: LATENCY_BUCKETS, registers: [registry] }),
    controlPlaneUp: new Gauge({ name: name('control_plane_up'), help: '1 when the last call to the security server got an answer, else 0.', registers: [registry] }),
    decryptFailures: new Counter({ name: name('decrypt_failures_total'), help: 'Request envelopes refused, by reason.', labelNames: ['reason'] as const, registers: [registry] }),
    replayRejections: new Counter({ name: name('replay_rejections_total'), help: 'Requests refused as replayed or stale.', labelNames: ['reason'] as const, registers: [registry] }),
    upstreamErrors: new Counter({ name: name('upstream_errors_total'), help: 'Upstream failures by route and kind.', labelNames: ['route', 'kind'] as const, registers: [registry] }),
    // Targets are labelled by their position in the route, not by URL: bounded, and nothing of the
    // intranet's layout in the label set. Across worker threads the minimum: 0 when any thread has
    // the target out of the rotation.
    upstreamUp: new Gauge({
      name: name('upstream_up'), help: '1 while an upstream target is in the rotation (not failed by health checks, not in a passive backoff), else 0.',
      labelNames: ['route', 'target_index'] as const, aggregator: 'min', registers: [registry],
      collect() {
        for (const t of gauges.upstreamTargets?.() ?? []) this.set({ route: t.route, target_index: String(t.index) }, t.up ? 1 : 0)
      },
    }),
    upstreamHealthChecks: new Counter({ name: name('upstream_health_checks_total'), help: 'Active health checks of upstream targets, by route and result (success, failure, timeout).', labelNames: ['route', 'result'] as const, registers: [registry] }),
    upstreamRetries: new Counter({ name: name('upstream_retries_total'), help: 'Requests of idempotent methods sent again, once, to another target after a connection failure, by route.', labelNames: ['route'] as const, registers: [registry] }),
    upstreamDuration: new Histogram({ name: name('upstream_duration_seconds'), help: 'Time the upstream took to answer, by route.', labelNames: ['route'] as const, buckets: LATENCY_BUCKETS, registers: [registry] }),
    bytesIn: new Counter({ name: name('received_bytes_total'), help: 'Request body bytes received from devices.', registers: [registry] }),
    bytesOut: new Counter({ name: name('sent_bytes_total'), help: 'Response body bytes sent to devices.', registers: [registry] }),
    revocationsApplied: new Counter({ name: name('revocations_applied_total'), help: 'Pushed revocations applied to the session cache, by kind.', labelNames: ['kind'] as const, registers: [registry] }),
    revocationStreamUp: new Gauge({ name: name('revocation_stream_up'), help: '1 while the revocation stream from a security server is connected, else 0.', registers: [registry] }),
    revocationLag: new Histogram({ name: name('revocation_lag_seconds'), help: 'Time from a revocation being logged to this proxy applying it.', buckets: REVOCATION_LAG_BUCKETS, registers: [registry] }),
    responsesCut: new Counter({ name: name('responses_cut_total'), help: 'Response envelopes cut after their status line was sent (connection closed, no FINAL record: the device sees the truncation), by reason: upstream (failed mid-body), too_large (over maxResponseBytes), revoked, request (the streamed request body failed).', labelNames: ['reason'] as const, registers: [registry] }),
  }
}

/** Gauges of the crypto worker pool (cryptoPool.ts), registered only when the pool is on. */
export function cryptoPoolMetrics(registry: Registry, pool: { readonly queueDepth: number; readonly utilization: number }): void {
  const name = (n: string) => `${NAMESPACE}_${subsystem}_${n}`
  new Gauge({ name: name('crypto_pool_queue_depth'), help: 'Record seal/open tasks waiting for a crypto worker thread.', registers: [registry], collect() { this.set(pool.queueDepth) } })
  new Gauge({
    name: name('crypto_pool_utilization'), help: 'Share of the crypto pool\'s thread capacity spent on tasks since it started (0..1).',
    aggregator: 'average', registers: [registry], collect() { this.set(pool.utilization) },
  })
}

export type ProxyMetrics = ReturnType<typeof proxyMetrics>

/** One upstream target as the upstream_up gauge shows it. */
export interface UpstreamTargetState {
  route: string
  index: number
  up: boolean
}
