/**
 * The security server: device API (HTTPS), proxy API (mutually authenticated TLS: node:https with
 * requestCert + rejectUnauthorized, because the uWebSockets.js build we use cannot refuse clients
 * without a certificate) and the admin endpoint.
 *
 *   device ──HTTPS──▶ :8443  POST /v1/enroll · POST /v1/sessions · POST /v1/sessions/close
 *   proxy  ──mTLS───▶ :8444  POST /v1/sessions/validate · GET /v1/revocations (NDJSON stream)
 *                            POST /v1/activesync/check (the proxy's ActiveSync gate)
 *   SRE    ──HTTP───▶ :8445  /metrics /healthz /readyz
 */
import { readFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createServer, type Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { Registry } from 'prom-client'
import { ForbiddenError, GatehouseError, MethodNotAllowedError, NotFoundError } from '../errors.js'
import { readJson, sendError, sendJson } from '../http/json.js'
import { AdminServer } from '../observability/adminServer.js'
import { recentErrorsOf, type Logger } from '../observability/logger.js'
import { createRegistry } from '../observability/metrics.js'
import type { Store } from '../store/types.js'
import { CidrList, normaliseIp } from '../http/cidr.js'
import { ActivationCodeService } from './activationCodes.js'
import { AdminAuth } from './adminAuth.js'
import { AuditLog } from './audit.js'
import { CatalogService } from './catalog.js'
import { CommandService } from './commands.js'
import { Enroller, type Authenticator, type EnrollmentMode } from './enrollment.js'
import { PolicyService } from './policies.js'
import { Router, type Access, type RouteSpec } from './router.js'
import { adminRoutes } from './routes/admin.js'
import { catalogRoutes } from './routes/catalog.js'
import { commandRoutes } from './routes/commands.js'
import { dashboardRoutes } from './routes/dashboard.js'
import { deviceRoutes } from './routes/device.js'
import { proxyApiRoutes } from './routes/proxyApi.js'
import { activeSyncRoutes } from './routes/activeSync.js'
import { revocationStreamRoutes } from './routes/revocationStream.js'
import { selfServiceRoutes } from './routes/selfService.js'
import { RevocationHub } from './revocationHub.js'
import { BackupScheduler, type BackupScheduleOptions } from './backupScheduler.js'
import type { SecurityServices } from './services.js'
import { securityMetrics, type SecurityMetrics } from './metrics.js'
import { SessionService, type SessionPolicy } from './sessions.js'
import { SiteMap, type Site } from './sites.js'

export interface SecurityServerOptions {
  store: Store
  auth: Authenticator
  log: Logger
  tls: { cert: string | Buffer; key: string | Buffer; ca: string | Buffer }
  listen: { host: string; port: number }
  proxyApi: { host: string; port: number }
  admin?: { host: string; port: number }
  proxyUrl: string
  policy: SessionPolicy
  maxBodyBytes: number
  /** CIDR allow-lists for the admin and self-service APIs (default: loopback and private ranges). */
  access?: { adminCidrs: readonly string[]; selfServiceCidrs: readonly string[] }
  /** Revocation stream timing (tests shorten it): heartbeat line interval, poll for other servers' records. */
  revocations?: { heartbeatIntervalMs?: number; pollIntervalMs?: number }
  registry?: Registry
  /** Admin and self-service sign-in: token lifetimes and failed sign-ins allowed per minute (tests shorten them). */
  adminApi?: { adminTokenTtlMs?: number; selfTokenTtlMs?: number; loginFailuresPerMinute?: number }
  /** Folder of app packages (security.packagesDir). Default data/packages under the working directory. */
  packagesDir?: string
  /** Credentials enrollment takes (security.enrollment.mode). Default 'password-or-code'. */
  enrollmentMode?: EnrollmentMode
  /** Multi-site: the proxy URL told to devices follows the user's groups (security.sites, sites.ts). Default: `proxyUrl` for all. */
  sites?: { sites: readonly Site[]; defaultSite?: string }
  /** Scheduled encrypted backups (security.backup); none when absent. */
  backup?: BackupScheduleOptions
}

/** Loopback and private networks: the default reach of the admin and self-service APIs. */
export const DEFAULT_PRIVATE_CIDRS = ['127.0.0.0/8', '::1/128', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7']

/** Route modules, each a function of the shared services; listed once here. */
const ROUTE_MODULES: ((s: SecurityServices) => RouteSpec[])[] = [deviceRoutes, proxyApiRoutes, revocationStreamRoutes, adminRoutes, selfServiceRoutes, dashboardRoutes, catalogRoutes, commandRoutes, activeSyncRoutes]

const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH'])

export class SecurityServer {
  readonly sessions: SessionService
  readonly enroller: Enroller
  readonly registry: Registry
  readonly metrics: SecurityMetrics
  readonly services: SecurityServices
  readonly hub: RevocationHub
  /** Scheduled backups, when configured (backupScheduler.ts). */
  readonly backups: BackupScheduler | undefined
  private readonly router = new Router()
  /** Open streaming answers (revocation streams), ended by close(). */
  private readonly streams = new Set<ServerResponse>()
  private readonly adminCidrs: CidrList
  private readonly selfCidrs: CidrList
  private device: Server | undefined
  private proxy: Server | undefined
  private admin: AdminServer | undefined
  private purgeTimer: NodeJS.Timeout | undefined
  private closing = false
  ports = { device: 0, proxyApi: 0, admin: 0 }

  constructor(private readonly o: SecurityServerOptions) {
    this.registry = o.registry ?? createRegistry('security')
    this.metrics = securityMetrics(this.registry)
    this.hub = new RevocationHub({ store: o.store, log: o.log, ...o.revocations })
    // Catalog and policy changes make every proxy re-validate its cached sessions (new app context, limits).
    const catalog = new CatalogService({ store: o.store, packagesDir: o.packagesDir ?? 'data/packages', onChange: (id) => this.hub.policyChanged(`catalog:${id}`) })
    const policies = new PolicyService({
      store: o.store, onChange: (id) => this.hub.policyChanged(id),
      defaults: { maxSessionLifetimeSeconds: Math.floor(o.policy.maxLifetimeMs / 1000), idleTimeoutSeconds: Math.floor(o.policy.idleTimeoutMs / 1000) },
    })
    const activationCodes = new ActivationCodeService({ store: o.store })
    const commands = new CommandService({ store: o.store, hub: () => this.hub, clockSkewMs: o.policy.clockSkewMs })
    const sites = new SiteMap(o.sites?.sites ?? [], { defaultSite: o.sites?.defaultSite, proxyUrl: o.proxyUrl })
    this.sessions = new SessionService({ store: o.store, policy: o.policy, proxyUrl: o.proxyUrl, hub: this.hub, policies, catalog, commands, sites })
    this.enroller = new Enroller({ store: o.store, auth: o.auth, proxyUrl: o.proxyUrl, mode: o.enrollmentMode, codes: activationCodes, catalog, policies, sites })
    const audit = new AuditLog({ store: o.store, log: o.log })
    const adminAuth = new AdminAuth({ store: o.store, auth: o.auth, audit, log: o.log, ...o.adminApi })
    this.services = {
      store: o.store, sessions: this.sessions, enroller: this.enroller, metrics: this.metrics, log: o.log, hub: this.hub,
      audit, adminAuth, auth: o.auth, recentErrors: recentErrorsOf(o.log), catalog, policies, activationCodes, commands, sites,
    }
    for (const mod of ROUTE_MODULES) this.router.add(...mod(this.services))
    this.adminCidrs = new CidrList(o.access?.adminCidrs ?? DEFAULT_PRIVATE_CIDRS, 'security.access.adminCidrs')
    this.selfCidrs = new CidrList(o.access?.selfServiceCidrs ?? DEFAULT_PRIVATE_CIDRS, 'security.access.selfServiceCidrs')
    this.backups = o.backup ? new BackupScheduler({ ...o.backup, log: o.log, metrics: this.metrics }) : undefined
  }

  private allowed(access: Access, remote: string): boolean {
    if (access === 'device' || access === 'proxy') return true
    return access === 'admin' ? this.adminCidrs.has(remote) : this.selfCidrs.has(remote)
  }

  private dispatcher(api: 'device' | 'proxy') {
    const router = this.router.forListener(api)
    return (req: IncomingMessage, res: ServerResponse) => {
      const started = process.hrtime.bigint()
      const url = req.url ?? '/'
      const q = url.indexOf('?')
      const path = q === -1 ? url : url.slice(0, q)
      const remote = normaliseIp(req.socket.remoteAddress ?? '')
      const found = router.match(req.method ?? 'GET', path)
      const route = found && 'route' in found ? found.route : undefined
      let label = route ? (route.label ?? route.path) : 'unmatched'
      res.on('finish', () => {
        this.metrics.requests.inc({ api, route: label, status: String(res.statusCode) })
        this.metrics.duration.observe({ api, route: label }, Number(process.hrtime.bigint() - started) / 1e9)
      })
      const run = async () => {
        // Outside the allow-lists, every non-device path is 403 alike, existing or not.
        if (api === 'device' && !router.isDevicePath(path) && !this.adminCidrs.has(remote) && !this.selfCidrs.has(remote)) {
          label = 'forbidden_network'
          this.o.log.warn({ event: 'network_refused', remote, method: req.method }, 'request from a network outside the allow-lists')
          throw new ForbiddenError('forbidden')
        }
        if (!found) throw new NotFoundError('not found')
        if (!route) {
          const allowed = (found as { methodMismatch: string[] }).methodMismatch
          res.setHeader('allow', allowed.join(', '))
          throw new MethodNotAllowedError(`use ${allowed.join(' or ')}`)
        }
        if (!this.allowed(route.access, remote)) {
          this.o.log.warn({ event: 'network_refused', remote, route: label }, 'request from a network outside the allow-list')
          throw new ForbiddenError('forbidden')
        }
        const body = BODY_METHODS.has(route.method) && !route.rawBody ? await readJson(req, this.o.maxBodyBytes) : {}
        const out = await route.handler({
          req, body, params: (found as { params: Record<string, string> }).params,
          query: new URLSearchParams(q === -1 ? '' : url.slice(q + 1)), remote, log: this.o.log,
        })
        if (out.stream) {
          res.writeHead(out.status, { 'cache-control': 'no-store', ...out.headers })
          res.flushHeaders()
          this.streams.add(res)
          res.on('close', () => this.streams.delete(res))
          if (this.closing) res.end()
          else out.stream(res)
        } else if (out.raw !== undefined) {
          res.writeHead(out.status, { 'cache-control': 'no-store', ...out.headers }).end(out.raw)
        } else if (out.body === undefined) {
          res.writeHead(out.status, out.headers).end()
        } else {
          sendJson(res, out.status, out.body, out.headers)
        }
      }
      run().catch((err: unknown) => {
        if (err instanceof GatehouseError && err.status < 500) {
          this.o.log.info({ api, route: label, code: err.code, status: err.status, remote }, 'request refused')
        } else {
          this.o.log.error({ api, route: label, err }, 'request failed')
        }
        if (!req.complete) res.setHeader('connection', 'close')
        sendError(res, err)
      })
    }
  }

  async start(): Promise<void> {
    const { tls } = this.o
    this.device = createServer({ cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2' }, this.dispatcher('device'))
    this.proxy = createServer(
      { cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' },
      this.dispatcher('proxy'),
    )
    for (const s of [this.device, this.proxy]) {
      s.headersTimeout = 10_000
      s.requestTimeout = 30_000
      s.keepAliveTimeout = 65_000
      s.maxHeadersCount = 100
      s.on('tlsClientError', (err: Error & { code?: string }, socket: TLSSocket) => {
        this.o.log.debug({ code: err.code, remote: socket.remoteAddress }, 'TLS handshake failed')
      })
    }
    await this.hub.start()
    this.ports.device = await listen(this.device, this.o.listen)
    this.ports.proxyApi = await listen(this.proxy, this.o.proxyApi)
    if (this.o.admin) {
      this.admin = new AdminServer({ ...this.o.admin, registry: this.registry, log: this.o.log, ready: () => (this.closing ? ['shutting down'] : []) })
      this.ports.admin = await this.admin.start()
    }
    // Expired sessions and nonces are removed in the background, not on the request path.
    this.purgeTimer = setInterval(() => {
      this.o.store.purgeExpired(Date.now()).catch((err: unknown) => this.o.log.error({ err }, 'purge failed'))
    }, 60_000).unref()
    await this.backups?.start()
  }

  /** Stop accepting, let in-flight requests finish, then close the store. */
  async close(): Promise<void> {
    this.closing = true
    clearInterval(this.purgeTimer)
    // Long-lived streams end first, so that their connections do not hold the drain open.
    this.hub.close()
    for (const res of this.streams) res.end()
    await Promise.all([closeServer(this.device), closeServer(this.proxy), this.admin?.close(), this.backups?.close()])
    await this.o.store.close()
  }
}

function listen(server: Server, at: { host: string; port: number }): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(at.port, at.host, () => {
      server.off('error', reject)
      resolve((server.address() as AddressInfo).port)
    })
  })
}

function closeServer(server: Server | undefined): Promise<void> {
  if (!server) return Promise.resolve()
  return new Promise((resolve) => {
    server.close(() => resolve())
    server.closeIdleConnections()
    // Connections still busy after the drain window are cut.
    setTimeout(() => server.closeAllConnections(), 5000).unref()
  })
}

/** Read TLS files once at start-up. */
export function readTlsFiles(files: { cert: string; key: string; ca: string }) {
  return { cert: readFileSync(files.cert), key: readFileSync(files.key), ca: readFileSync(files.ca) }
}
