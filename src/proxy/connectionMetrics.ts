/**
 * The proxy's connections as the kernel sees them (socketTable.ts), uWebSockets.js giving no
 * connection events: gatehouse_proxy_connections_active and gatehouse_proxy_listen_queue, read
 * at scrape time. Registered once per process by whatever serves its /metrics (the proxy in the
 * main thread, or ProxyThreads for the worker threads: they share the process's sockets, so the
 * connections are counted once, not once per thread). Absent where there is no /proc.
 *
 * A reading costs ~9 µs of CPU per descriptor of the process and ~2–4 µs per line of the
 * namespace's TCP table (160–205 ms at 10,000 connections, docs/metrics.md), so it is cached: at
 * most one per second, longer when it kept the event loop busy (ConnectionReader.maxAgeMs).
 */
import { Gauge, type Registry } from 'prom-client'
import type { Logger } from '../observability/logger.js'
import { NAMESPACE } from '../observability/metrics.js'
import { procAvailable, procSource, readPorts, type PortCounts, type ProcSource } from './socketTable.js'

/** A listener whose connections are counted; `port` is 0 until it listens. */
export interface WatchedListener {
  /** The `listener` label: a fixed word ("device"), never an address. */
  name: string
  port: () => number
}

/** Readings of the socket table for some ports, cached and coalesced across concurrent scrapes. */
export class ConnectionReader {
  private last: { at: number; key: string; counts: Map<number, PortCounts> } | undefined
  private pending: Promise<Map<number, PortCounts>> | undefined
  /** Time the last reading held the event loop (ms; waits for the thread pool not included). */
  lastBusyMs = 0
  readings = 0

  constructor(private readonly o: { source: ProcSource; minIntervalMs?: number; maxIntervalMs?: number; now?: () => number }) {}

  /**
   * How long a reading is reused: at least minIntervalMs (1 s), and 20× the time it held the event
   * loop (≤ 5 % of it), up to maxIntervalMs (5 s) so that the gauges are never older than that.
   * Wall time would not do: a reading waiting for a busy thread pool (password hashing) would be
   * kept for long for no cost of its own.
   */
  get maxAgeMs(): number {
    return Math.min(this.o.maxIntervalMs ?? 5000, Math.max(this.o.minIntervalMs ?? 1000, 20 * this.lastBusyMs))
  }

  async counts(ports: readonly number[]): Promise<Map<number, PortCounts>> {
    const now = this.o.now?.() ?? performance.now()
    const key = ports.join(',')
    if (this.last && this.last.key === key && now - this.last.at < this.maxAgeMs) return this.last.counts
    this.pending ??= (async () => {
      try {
        const busy = { ms: 0 }
        const counts = await readPorts(ports, this.o.source, busy)
        this.lastBusyMs = busy.ms
        this.readings++
        this.last = { at: this.o.now?.() ?? performance.now(), key, counts }
        return counts
      } finally {
        this.pending = undefined
      }
    })()
    return this.pending
  }
}

const name = (n: string) => `${NAMESPACE}_proxy_${n}`

/**
 * Register the two gauges for `listeners` (all on `host`), or log once and register nothing
 * where /proc cannot be read. Returns the reader (tests, benchmarks).
 */
export function registerConnectionMetrics(registry: Registry, o: {
  listeners: readonly WatchedListener[]
  host: string
  log: Logger
  source?: ProcSource
  minIntervalMs?: number
}): ConnectionReader | undefined {
  const source = o.source ?? procSource(o.host)
  if (!procAvailable(source)) {
    o.log.info({ event: 'connection_metrics_unavailable' }, 'no /proc socket table (not Linux): gatehouse_proxy_connections_active and gatehouse_proxy_listen_queue are not exported')
    return undefined
  }
  const reader = new ConnectionReader({ source, ...(o.minIntervalMs === undefined ? {} : { minIntervalMs: o.minIntervalMs }) })
  let failing = false
  /** Set `gauge` from a reading; on failure the gauge has no sample this scrape (logged once). */
  const fill = async (gauge: Gauge<'listener'>, pick: (c: PortCounts) => number) => {
    gauge.reset()
    const open = o.listeners.map((l) => ({ l, port: l.port() })).filter((x) => x.port > 0)
    if (open.length === 0) return
    let counts: Map<number, PortCounts>
    try {
      counts = await reader.counts(open.map((x) => x.port))
      failing = false
    } catch (err) {
      if (!failing) o.log.warn({ event: 'connection_metrics_failed', err }, 'cannot read the socket table: connection gauges left out')
      failing = true
      return
    }
    for (const { l, port } of open) gauge.set({ listener: l.name }, pick(counts.get(port)!))
  }
  new Gauge({
    name: name('connections_active'),
    help: 'TCP connections accepted on the listener and held open by this process (any state but LISTEN: ESTABLISHED, CLOSE_WAIT, …), from /proc/net/tcp at scrape time (cached ≥ 1 s).',
    labelNames: ['listener'] as const, registers: [registry],
    async collect() { await fill(this, (c) => c.connections) },
  })
  new Gauge({
    name: name('listen_queue'),
    help: 'Connections completed by the kernel and waiting to be accepted by the listener (accept backlog of this process\'s listening sockets), from /proc/net/tcp at scrape time.',
    labelNames: ['listener'] as const, registers: [registry],
    async collect() { await fill(this, (c) => c.listenQueue) },
  })
  return reader
}
