import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { LATENCY_BUCKETS, NAMESPACE } from '../observability/metrics.js'

const subsystem = 'proxy'

/** Methods we label by name; anything else is "OTHER" so a client cannot grow the label set. */
export const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])

/**
 * Proxy metrics, registered once per process. Labels are bounded: route (the configured prefix,
 * or "unmatched"), method, status, result, reason. Never a user, device or session id.
 */
export function proxyMetrics(registry: Registry, gauges: { sessionCacheSize: () => number }) {
  const name = (n: string) => `${NAMESPACE}_${subsystem}_${n}`
  return {
    requests: new Counter({ name: name('requests_total'), help: 'Requests by route, method and status.', labelNames: ['route', 'method', 'status'] as const, registers: [registry] }),
    duration: new Histogram({ name: name('request_duration_seconds'), help: 'Time from request to response end, by route.', labelNames: ['route'] as const, buckets: LATENCY_BUCKETS, registers: [registry] }),
    cacheHits: new Counter({ name: name('session_cache_hits_total'), help: 'Session lookups answered from the cache.', registers: [registry] }),
    cacheMisses: new Counter({ name: name('session_cache_misses_total'), help: 'Session lookups not in the cache.', registers: [registry] }),
    cacheEvictions: new Counter({ name: name('session_cache_evictions_total'), help: 'Sessions evicted from the cache to stay within its bound.', registers: [registry] }),
    cacheSize: new Gauge({ name: name('session_cache_entries'), help: 'Sessions in the cache.', registers: [registry], collect() { this.set(gauges.sessionCacheSize()) } }),
    controlPlaneCalls: new Counter({ name: name('control_plane_requests_total'), help: 'Session validations asked of the security server, by result.', labelNames: ['result'] as const, registers: [registry] }),
    controlPlaneDuration: new Histogram({ name: name('control_plane_request_duration_seconds'), help: 'Duration of session validation calls.', buckets: LATENCY_BUCKETS, registers: [registry] }),
    controlPlaneUp: new Gauge({ name: name('control_plane_up'), help: '1 when the last call to the security server got an answer, else 0.', registers: [registry] }),
    decryptFailures: new Counter({ name: name('decrypt_failures_total'), help: 'Request envelopes refused, by reason.', labelNames: ['reason'] as const, registers: [registry] }),
    replayRejections: new Counter({ name: name('replay_rejections_total'), help: 'Requests refused as replayed or stale.', labelNames: ['reason'] as const, registers: [registry] }),
    upstreamErrors: new Counter({ name: name('upstream_errors_total'), help: 'Upstream failures by route and kind.', labelNames: ['route', 'kind'] as const, registers: [registry] }),
    upstreamDuration: new Histogram({ name: name('upstream_duration_seconds'), help: 'Time the upstream took to answer, by route.', labelNames: ['route'] as const, buckets: LATENCY_BUCKETS, registers: [registry] }),
    bytesIn: new Counter({ name: name('received_bytes_total'), help: 'Request body bytes received from devices.', registers: [registry] }),
    bytesOut: new Counter({ name: name('sent_bytes_total'), help: 'Response body bytes sent to devices.', registers: [registry] }),
  }
}

export type ProxyMetrics = ReturnType<typeof proxyMetrics>
