/**
 * Reload on SIGHUP: configuration and certificates, validated first, applied without dropping a
 * connection, and the old ones kept on any error.
 *
 *   SIGHUP ─▶ load + validate the config file (errors name the option path)
 *          ─▶ check every certificate and key (certCheck.ts)
 *          ─▶ target.reload(config): new uWS app on the same port, new route table and pools
 *          ─▶ success: gatehouse_proxy_config_reloads_total{result="success"}, info line
 *             failure: {result="failure"}, error line; the proxy serves on with what it had
 *
 * What a reload applies: proxy.tls (certificate, key, SNI), proxy.limits, proxy.routes,
 * proxy.upstreamConnections, proxy.accessLog, proxy.drainSeconds, proxy.shutdownDelayMs. The other
 * options need a restart; a reload that changes them says which, and applies the rest.
 */
import path from 'node:path'
import type { Registry } from 'prom-client'
import type { GatehouseConfig } from '../config/load.js'
import type { Logger } from '../observability/logger.js'
import type { CertSummary, ListenerTls } from './certCheck.js'
import { reloadMetrics, type ReloadMetrics } from './lifecycleMetrics.js'
import type { ProxyLimits } from './limits.js'
import type { RouteSpec } from './routeTable.js'

/** The part of the proxy's options that a reload replaces. */
export interface ReloadableOptions {
  tls: ListenerTls
  limits: ProxyLimits
  routes: readonly RouteSpec[]
  upstreamConnections: number
  accessLog: boolean
  drainSeconds: number
}

/** The device listener's TLS files from config (SNI paths resolved against the working directory). */
export function proxyTlsFromConfig(c: GatehouseConfig): ListenerTls {
  return {
    certFile: c.files.proxyCert,
    keyFile: c.files.proxyKey,
    sni: c.proxy.tls.sni.map((s) => ({ serverName: s.serverName, certFile: path.resolve(s.cert), keyFile: path.resolve(s.key) })),
  }
}

export function reloadableFromConfig(c: GatehouseConfig): ReloadableOptions {
  const p = c.proxy
  return {
    tls: proxyTlsFromConfig(c),
    limits: p.limits,
    routes: p.routes,
    upstreamConnections: p.upstreamConnections,
    accessLog: p.accessLog,
    drainSeconds: p.drainSeconds,
  }
}

/** Proxy options a reload applies; every other one needs a restart. */
const RELOADABLE = new Set(['tls', 'limits', 'routes', 'upstreamConnections', 'accessLog', 'drainSeconds', 'shutdownDelayMs'])

/** Option paths whose change a reload does not apply (they need a restart). */
export function restartNeeded(prev: GatehouseConfig, next: GatehouseConfig): string[] {
  const out: string[] = []
  const a = prev.proxy as unknown as Record<string, unknown>
  const b = next.proxy as unknown as Record<string, unknown>
  for (const k of Object.keys(b)) {
    if (!RELOADABLE.has(k) && JSON.stringify(a[k]) !== JSON.stringify(b[k])) out.push(`proxy.${k}`)
  }
  if (JSON.stringify(prev.log) !== JSON.stringify(next.log)) out.push('log')
  for (const f of ['proxyClientCert', 'proxyClientKey', 'controlPlaneCa'] as const) {
    if (prev.files[f] !== next.files[f]) out.push(`files.${f} (proxy.controlPlaneTls, certsDir)`)
  }
  return out
}

/** What applies a validated config: a ProxyServer, or the worker threads. */
export interface ReloadTarget {
  /** Apply the config, or throw and change nothing. Returns the certificates now served. */
  reload(config: GatehouseConfig): Promise<CertSummary[]>
}

/**
 * Runs reloads one at a time: a SIGHUP during a reload runs one more afterwards (with the file as
 * it is then), never two at once.
 */
export class ConfigReloader {
  private readonly metrics: ReloadMetrics
  private running: Promise<boolean> | undefined
  private again = false
  /** The configuration in use (the last one applied). */
  current: GatehouseConfig

  constructor(private readonly o: {
    target: ReloadTarget
    registry: Registry
    log: Logger
    /** Read and validate the configuration (loadConfig with the same file as at start). */
    load: () => GatehouseConfig
    initial: GatehouseConfig
  }) {
    this.current = o.initial
    this.metrics = reloadMetrics(o.registry)
    this.metrics.lastSuccess.set(Date.now() / 1000)
  }

  /** Reload now, or once more after the running one; resolves to whether the last run succeeded. */
  reload(): Promise<boolean> {
    if (this.running) {
      this.again = true
      return this.running
    }
    const run = async (): Promise<boolean> => {
      let ok = await this.once()
      while (this.again) {
        this.again = false
        ok = await this.once()
      }
      this.running = undefined
      return ok
    }
    return (this.running = run())
  }

  private async once(): Promise<boolean> {
    const started = performance.now()
    const log = this.o.log
    try {
      const next = this.o.load()
      const certificates = await this.o.target.reload(next)
      const restart = restartNeeded(this.current, next)
      this.current = next
      this.metrics.success.inc()
      this.metrics.lastSuccess.set(Date.now() / 1000)
      log.info({ event: 'config_reloaded', ms: Math.round(performance.now() - started), certificates }, 'configuration and certificates reloaded')
      if (restart.length) log.warn({ event: 'config_restart_needed', options: restart }, 'changed options that apply only after a restart: the previous values stay in use')
      return true
    } catch (err) {
      this.metrics.failure.inc()
      log.error({ event: 'config_reload_failed', err }, 'reload failed: still serving with the previous configuration and certificates')
      return false
    }
  }
}
