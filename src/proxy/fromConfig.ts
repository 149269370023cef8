import { readFileSync } from 'node:fs'
import type { GatehouseConfig } from '../config/load.js'
import type { Registry } from 'prom-client'
import type { Logger } from '../observability/logger.js'
import { registerCertExpiry, type CertFile } from '../observability/certMetrics.js'
import { createRegistry } from '../observability/metrics.js'
import { proxyTlsFromConfig } from './reload.js'
import { ProxyServer } from './server.js'

/** The certificates a proxy uses, for gatehouse_cert_expiry_timestamp_seconds. */
export function proxyCertFiles(c: GatehouseConfig): CertFile[] {
  return [
    { cert: 'proxy_server', path: c.files.proxyCert },
    { cert: 'proxy_client', path: c.files.proxyClientCert },
    { cert: 'control_plane_ca', path: c.files.controlPlaneCa },
    // Label by position, like upstream targets: bounded, no host names in the label set.
    ...(proxyTlsFromConfig(c).sni ?? []).map((s, i) => ({ cert: `proxy_sni_${i}`, path: s.certFile })),
  ]
}

/**
 * Build a proxy from validated config. A worker thread passes `admin: false` (the main thread
 * serves the admin endpoint for all threads) and a registry without process metrics.
 */
export function proxyServerFromConfig(c: GatehouseConfig, log: Logger, opts: { admin?: boolean; registry?: Registry; listenPort?: number } = {}): ProxyServer {
  const p = c.proxy
  let registry = opts.registry
  if (!registry && opts.admin !== false) {
    registry = createRegistry('proxy')
    registerCertExpiry(registry, proxyCertFiles(c))
  }
  return new ProxyServer({
    log,
    listen: opts.listenPort === undefined ? p.listen : { host: p.listen.host, port: opts.listenPort },
    ...(opts.admin === false ? {} : { admin: p.admin }),
    ...(registry ? { registry } : {}),
    tls: proxyTlsFromConfig(c),
    controlPlane: {
      servers: p.securityServers,
      tls: { cert: readFileSync(c.files.proxyClientCert), key: readFileSync(c.files.proxyClientKey), ca: readFileSync(c.files.controlPlaneCa) },
      timeoutMs: p.controlPlaneTimeoutMs,
      healthCheckIntervalMs: p.controlPlaneHealthCheckSeconds * 1000,
    },
    sessionCache: p.sessionCache,
    revocations: p.revocations,
    replay: p.replay,
    limits: p.limits,
    accessLog: p.accessLog,
    drainSeconds: p.drainSeconds,
    crypto: p.crypto,
    upstreamConnections: p.upstreamConnections,
    routes: p.routes,
    ...(p.activeSync.enabled && p.activeSync.upstream ? {
      activeSync: {
        upstream: p.activeSync.upstream, upstreamCa: p.activeSync.upstreamCa, path: p.activeSync.path,
        maxHoldSeconds: p.activeSync.maxHoldSeconds, gateCacheSeconds: p.activeSync.gateCacheSeconds,
        gateCacheMaxEntries: p.activeSync.gateCacheMaxEntries, maxBodyBytes: p.activeSync.maxBodyBytes,
        upstreamConnections: p.activeSync.upstreamConnections, outageGraceSeconds: p.sessionCache.outageGraceSeconds,
        upstreamHttp2: p.activeSync.upstreamHttp2, upstreamMaxStreams: p.activeSync.upstreamMaxStreams,
      },
    } : {}),
  })
}
