/**
 * The proxy on every core: N worker threads (src/proxy/proxyWorker.ts), each a uWebSockets.js
 * event loop on the same port. The main thread owns the admin endpoint: /metrics aggregates the
 * workers' registries (prom-client AggregatorRegistry: counters and histograms summed, gauges as
 * each metric declares) plus the process metrics it collects once for the whole process.
 */
import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import { AggregatorRegistry, Gauge, type Registry } from 'prom-client'
import type { GatehouseConfig } from '../config/load.js'
import { AdminServer } from '../observability/adminServer.js'
import type { Logger } from '../observability/logger.js'
import { createRegistry, NAMESPACE } from '../observability/metrics.js'
import { registerCertExpiry } from '../observability/certMetrics.js'
import { checkListenerTls, type CertSummary } from './certCheck.js'
import { registerConnectionMetrics } from './connectionMetrics.js'
import { proxyCertFiles } from './fromConfig.js'
import { withDefaults } from './limits.js'
import { reloadableFromConfig } from './reload.js'
import type { FromWorker, ToWorker, WorkerData } from './threadMessages.js'
import { setMaxHeaderBytes } from './uws.js'

export function workerCount(configured: number): number {
  return configured === 0 ? availableParallelism() : configured
}

interface Thread {
  worker: Worker
  ready: boolean
  exited: boolean
}

export class ProxyThreads {
  private readonly threads: Thread[] = []
  /** The main thread's registry (its own metrics; /metrics adds the workers' aggregate). */
  readonly registry: Registry
  private readonly workersGauge: Gauge
  private readonly perWorker: Gauge<'worker'>
  private admin: AdminServer | undefined
  private draining = false
  private nextId = 1
  private readonly pending = new Map<number, { results: unknown[]; left: number; resolve: (v: unknown[]) => void }>()
  private readonly reloading = new Map<number, { errors: string[]; left: number; done: () => void }>()
  port = 0
  adminPort = 0

  constructor(private readonly config: GatehouseConfig, private readonly log: Logger, private readonly count = workerCount(config.proxy.workers)) {
    this.registry = createRegistry('proxy')
    registerCertExpiry(this.registry, proxyCertFiles(config))
    this.workersGauge = new Gauge({ name: `${NAMESPACE}_proxy_worker_threads`, help: 'Proxy worker threads serving devices.', registers: [this.registry] })
    this.perWorker = new Gauge({
      name: `${NAMESPACE}_proxy_worker_requests`, help: 'Requests served so far by each worker thread (balance across threads).',
      labelNames: ['worker'] as const, registers: [this.registry],
    })
    // The threads share the process's sockets: the kernel's connection counts, once, here.
    registerConnectionMetrics(this.registry, { listeners: [{ name: 'device', port: () => this.port }], host: config.proxy.listen.host, log })
  }

  async start(): Promise<void> {
    // Before any worker loads uWS (uws.ts): process-wide, read once at load by builds that read it.
    setMaxHeaderBytes(withDefaults(this.config.proxy.limits).maxHeaderBytes)
    // The first thread binds the configured port (maybe 0); the others join on the same port.
    this.port = await this.spawn(0, this.config.proxy.listen.port)
    await Promise.all(Array.from({ length: this.count - 1 }, (_, i) => this.spawn(i + 1, this.port)))
    this.workersGauge.set(this.count)
    this.admin = new AdminServer({
      ...this.config.proxy.admin,
      registry: { metrics: () => this.metrics(), contentType: this.registry.contentType },
      log: this.log,
      ready: () => {
        if (this.draining) return ['draining']
        const down = this.threads.filter((t) => !t.ready || t.exited).length
        return down ? [`${down} worker thread(s) not serving`] : []
      },
    })
    this.adminPort = await this.admin.start()
  }

  private spawn(index: number, port: number): Promise<number> {
    const data: WorkerData = { configFile: this.config.source, index, port }
    const worker = new Worker(new URL('./proxyWorker.js', import.meta.url), { workerData: data })
    const t: Thread = { worker, ready: false, exited: false }
    this.threads.push(t)
    return new Promise((resolve, reject) => {
      worker.on('message', (m: FromWorker) => {
        if (m.type === 'ready') {
          t.ready = true
          resolve(m.port)
        } else if (m.type === 'failed') {
          reject(new Error(`proxy worker ${index} failed to start: ${m.message}`))
        } else if (m.type === 'metrics') {
          const p = this.pending.get(m.id)
          if (p) {
            p.results.push(m.metrics)
            this.perWorker.set({ worker: String(m.index) }, requestsIn(m.metrics))
            if (--p.left === 0) {
              this.pending.delete(m.id)
              p.resolve(p.results)
            }
          }
        } else if (m.type === 'draining') {
          t.ready = false
        } else if (m.type === 'reloaded') {
          const r = this.reloading.get(m.id)
          if (r) {
            if (m.error !== undefined) r.errors.push(`worker ${m.index}: ${m.error}`)
            if (--r.left === 0) r.done()
          }
        }
      })
      worker.on('error', (err) => {
        this.log.error({ err, worker: index }, 'proxy worker thread crashed')
        reject(err)
      })
      worker.on('exit', (code) => {
        t.exited = true
        t.ready = false
        if (!this.draining) this.log.error({ worker: index, code }, 'proxy worker thread exited')
      })
    })
  }

  /** Aggregated metrics of every live worker, plus this process's own. */
  async metrics(): Promise<string> {
    const live = this.threads.filter((t) => !t.exited)
    const results = await new Promise<unknown[]>((resolve) => {
      if (live.length === 0) return resolve([])
      const id = this.nextId++
      this.pending.set(id, { results: [], left: live.length, resolve })
      for (const t of live) t.worker.postMessage({ type: 'metrics', id } satisfies ToWorker)
      // A worker that does not answer in time is left out rather than stalling the scrape.
      setTimeout(() => {
        const p = this.pending.get(id)
        if (p) {
          this.pending.delete(id)
          resolve(p.results)
        }
      }, 2000).unref()
    })
    const aggregated = AggregatorRegistry.aggregate(results as object[])
    return (await this.registry.metrics()) + (await aggregated.metrics())
  }

  /**
   * Reload (reload.ts): the certificates are checked here, once, then every worker applies the
   * options (ProxyServer.reload). Throws when a worker failed; the others then run the new ones.
   */
  async reload(config: GatehouseConfig): Promise<CertSummary[]> {
    const options = reloadableFromConfig(config)
    const certificates = checkListenerTls(options.tls)
    const live = this.threads.filter((t) => !t.exited)
    const id = this.nextId++
    const errors = await new Promise<string[]>((resolve) => {
      const r = { errors: [] as string[], left: live.length, done: () => resolve(r.errors) }
      if (live.length === 0) return resolve([])
      this.reloading.set(id, r)
      for (const t of live) t.worker.postMessage({ type: 'reload', id, options } satisfies ToWorker)
      setTimeout(() => {
        r.errors.push(`${r.left} worker thread(s) did not answer within 10 s`)
        resolve(r.errors)
      }, 10_000).unref()
    })
    this.reloading.delete(id)
    if (errors.length) throw new Error(`reload failed in ${errors.join('; ')}`)
    return certificates
  }

  /** Fail readiness while the threads keep serving (see ProxyServer.beginDrain). */
  beginDrain(): void {
    this.draining = true
  }

  /** Readiness fails at once; each thread drains its in-flight requests, then exits. */
  async close(drainMs = 10_000): Promise<void> {
    this.draining = true
    await Promise.all(this.threads.filter((t) => !t.exited).map((t) => new Promise<void>((resolve) => {
      t.worker.once('exit', () => resolve())
      t.worker.postMessage({ type: 'close', drainMs } satisfies ToWorker)
      // A thread stuck past the drain window is terminated.
      setTimeout(() => void t.worker.terminate(), drainMs + 2000).unref()
    })))
    await this.admin?.close()
  }
}

/** Sum of gatehouse_proxy_requests_total in one worker's getMetricsAsJSON() output. */
function requestsIn(metrics: unknown): number {
  const list = Array.isArray(metrics) ? (metrics as { name?: string; values?: { value?: number }[] }[]) : []
  const m = list.find((x) => x.name === `${NAMESPACE}_proxy_requests_total`)
  return (m?.values ?? []).reduce((sum, v) => sum + (v.value ?? 0), 0)
}
