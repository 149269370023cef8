import { collectDefaultMetrics, Registry } from 'prom-client'

/** Every Gatehouse metric starts with this namespace (Prometheus naming: base units, _total). */
export const NAMESPACE = 'gatehouse'

/** A registry per server role, with the default process metrics (CPU, memory, event loop lag). */
export function createRegistry(role: string, opts: { processMetrics?: boolean } = {}): Registry {
  const registry = new Registry()
  registry.setDefaultLabels({ role })
  // Worker threads share their process: only the main thread reports process metrics.
  if (opts.processMetrics !== false) collectDefaultMetrics({ register: registry, prefix: `${NAMESPACE}_` })
  return registry
}

/** Latency buckets in seconds, from 250 µs to 10 s: proxy overhead is sub-millisecond. */
export const LATENCY_BUCKETS = [0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
