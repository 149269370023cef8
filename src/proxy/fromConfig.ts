import { readFileSync } from 'node:fs'
import type { GatehouseConfig } from '../config/load.js'
import type { Logger } from '../observability/logger.js'
import { ProxyServer } from './server.js'

/** Build a proxy from validated config. */
export function proxyServerFromConfig(c: GatehouseConfig, log: Logger): ProxyServer {
  const p = c.proxy
  return new ProxyServer({
    log,
    listen: p.listen,
    admin: p.admin,
    tls: { certFile: c.files.proxyCert, keyFile: c.files.proxyKey },
    controlPlane: {
      servers: p.securityServers,
      tls: { cert: readFileSync(c.files.proxyClientCert), key: readFileSync(c.files.proxyClientKey), ca: readFileSync(c.files.controlPlaneCa) },
      timeoutMs: p.controlPlaneTimeoutMs,
    },
    sessionCache: p.sessionCache,
    replay: p.replay,
    limits: p.limits,
    upstreamConnections: p.upstreamConnections,
    routes: p.routes,
  })
}
