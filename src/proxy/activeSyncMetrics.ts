/**
 * Metrics of the ActiveSync gateway, registered once per proxy (thread) on the proxy's registry.
 * Labels are bounded: command (the known ActiveSync command names, else OTHER), status (the HTTP
 * status sent), result (gate outcomes), kind (failure kinds). Never a user or device id.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { NAMESPACE } from '../observability/metrics.js'

/** Ping and Sync with Wait are held up to maxHoldSeconds (30 min by default): buckets reach an hour. */
export const HOLD_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600]

/** Gate outcomes: the device states, plus what refuses before the state is known. */
export const GATE_RESULTS = ['allowed', 'unknown', 'locked', 'wiped', 'retired', 'identity_mismatch', 'unavailable'] as const
export type GateResult = (typeof GATE_RESULTS)[number]

export function activeSyncMetrics(registry: Registry, gauges: { inFlight: () => number; gateEntries: () => number; upstreamConnections: () => number }) {
  const name = (n: string) => `${NAMESPACE}_proxy_activesync_${n}`
  return {
    requests: new Counter({ name: name('requests_total'), help: 'ActiveSync requests by command and the HTTP status sent to the client.', labelNames: ['command', 'status'] as const, registers: [registry] }),
    duration: new Histogram({ name: name('request_duration_seconds'), help: 'ActiveSync request time, from request to the end of the response (a Ping is held up to maxHoldSeconds), by command.', labelNames: ['command'] as const, buckets: HOLD_BUCKETS, registers: [registry] }),
    inFlight: new Gauge({ name: name('requests_in_flight'), help: 'ActiveSync requests open now (held Pings included).', registers: [registry], collect() { this.set(gauges.inFlight()) } }),
    gate: new Counter({ name: name('gate_decisions_total'), help: 'Gate decisions by result.', labelNames: ['result'] as const, registers: [registry] }),
    gateHits: new Counter({ name: name('gate_cache_hits_total'), help: 'Gate answers served from the cache.', registers: [registry] }),
    gateMisses: new Counter({ name: name('gate_cache_misses_total'), help: 'Gate answers not in the cache (one call to the security server per coalesced miss).', registers: [registry] }),
    gateGrace: new Counter({ name: name('gate_grace_served_total'), help: 'Requests let through on a stale allowed answer because no security server answered (outage grace).', registers: [registry] }),
    gateEntries: new Gauge({ name: name('gate_cache_entries'), help: 'Answers in the gate cache.', registers: [registry], collect() { this.set(gauges.gateEntries()) } }),
    cut: new Counter({ name: name('requests_cut_total'), help: 'Requests in flight ended because a pushed revocation refused their device, or by shutdown.', labelNames: ['reason'] as const, registers: [registry] }),
    upstreamConnections: new Gauge({ name: name('upstream_connections'), help: 'Connections to Exchange open now (HTTP/1.1: one per request in flight; HTTP/2: shared).', registers: [registry], collect() { this.set(gauges.upstreamConnections()) } }),
    upstreamErrors: new Counter({ name: name('upstream_errors_total'), help: 'Exchange failures by kind (connect, timeout, reset, …).', labelNames: ['kind'] as const, registers: [registry] }),
    bytesIn: new Counter({ name: name('received_bytes_total'), help: 'Request body bytes received from mail clients.', registers: [registry] }),
    bytesOut: new Counter({ name: name('sent_bytes_total'), help: 'Response body bytes relayed from Exchange to mail clients.', registers: [registry] }),
  }
}

export type ActiveSyncMetrics = ReturnType<typeof activeSyncMetrics>
