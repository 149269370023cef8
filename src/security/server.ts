/**
 * The security server: device API (HTTPS), proxy API (mutually authenticated TLS: node:https with
 * requestCert + rejectUnauthorized, because the uWebSockets.js build we use cannot refuse clients
 * without a certificate) and the admin endpoint.
 *
 *   device ──HTTPS──▶ :8443  POST /v1/enroll · POST /v1/sessions · POST /v1/sessions/close
 *   proxy  ──mTLS───▶ :8444  POST /v1/sessions/validate
 *   SRE    ──HTTP───▶ :8445  /metrics /healthz /readyz
 */
import { readFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createServer, type Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { Registry } from 'prom-client'
import { GatehouseError, MethodNotAllowedError, NotFoundError } from '../errors.js'
import { readJson, sendError, sendJson } from '../http/json.js'
import { AdminServer } from '../observability/adminServer.js'
import type { Logger } from '../observability/logger.js'
import { createRegistry } from '../observability/metrics.js'
import type { Store } from '../store/types.js'
import { Enroller, parseEnrollRequest, type Authenticator } from './enrollment.js'
import { securityMetrics, type SecurityMetrics } from './metrics.js'
import { SessionService, type SessionPolicy } from './sessions.js'

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
  registry?: Registry
}

type Handler = (body: Record<string, unknown>, req: IncomingMessage) => Promise<{ status: number; body?: unknown }>
interface Route { method: string; handler: Handler }

export class SecurityServer {
  readonly sessions: SessionService
  readonly enroller: Enroller
  readonly registry: Registry
  readonly metrics: SecurityMetrics
  private device: Server | undefined
  private proxy: Server | undefined
  private admin: AdminServer | undefined
  private purgeTimer: NodeJS.Timeout | undefined
  private closing = false
  ports = { device: 0, proxyApi: 0, admin: 0 }

  constructor(private readonly o: SecurityServerOptions) {
    this.registry = o.registry ?? createRegistry('security')
    this.metrics = securityMetrics(this.registry)
    this.sessions = new SessionService({ store: o.store, policy: o.policy, proxyUrl: o.proxyUrl })
    this.enroller = new Enroller({ store: o.store, auth: o.auth, proxyUrl: o.proxyUrl })
  }

  private deviceRoutes(): Map<string, Route> {
    const m = this.metrics
    return new Map<string, Route>([
      ['/v1/enroll', {
        method: 'POST',
        handler: async (body, req) => {
          try {
            const r = await this.enroller.enroll(parseEnrollRequest(body))
            m.enrollments.inc({ result: 'ok' })
            this.o.log.info({ event: 'enrolled', user: r.userName, appId: body.appId, deviceId: body.deviceId, remote: req.socket.remoteAddress }, 'device enrolled')
            const { userName: _u, ...out } = r
            return { status: 201, body: out }
          } catch (err) {
            m.enrollments.inc({ result: err instanceof GatehouseError ? err.code : 'error' })
            throw err
          }
        },
      }],
      ['/v1/sessions', {
        method: 'POST',
        handler: async (body) => {
          try {
            const r = await this.sessions.open(body)
            m.sessionOpens.inc({ result: 'ok' })
            this.o.log.info({ event: 'session_opened', user: r.userName, appId: r.appId, deviceId: r.deviceId }, 'session opened')
            const { userName: _u, deviceId: _d, appId: _a, ...out } = r
            return { status: 201, body: out }
          } catch (err) {
            m.sessionOpens.inc({ result: err instanceof GatehouseError ? err.code : 'error' })
            throw err
          }
        },
      }],
      ['/v1/sessions/close', {
        method: 'POST',
        handler: async (body) => {
          await this.sessions.close(body)
          this.o.log.info({ event: 'session_closed' }, 'session closed')
          return { status: 204 }
        },
      }],
    ])
  }

  private proxyRoutes(): Map<string, Route> {
    return new Map<string, Route>([
      ['/v1/sessions/validate', {
        method: 'POST',
        handler: async (body) => {
          try {
            const grant = await this.sessions.validate(body.sessionId)
            this.metrics.validations.inc({ result: 'valid' })
            return { status: 200, body: { session: grant } }
          } catch (err) {
            this.metrics.validations.inc({ result: err instanceof GatehouseError ? err.code : 'error' })
            throw err
          }
        },
      }],
    ])
  }

  private dispatcher(api: 'device' | 'proxy', routes: Map<string, Route>) {
    return (req: IncomingMessage, res: ServerResponse) => {
      const started = process.hrtime.bigint()
      const path = (req.url ?? '/').split('?')[0] ?? '/'
      const route = routes.get(path)
      const label = route ? path : 'unmatched'
      res.on('finish', () => {
        this.metrics.requests.inc({ api, route: label, status: String(res.statusCode) })
        this.metrics.duration.observe({ api, route: label }, Number(process.hrtime.bigint() - started) / 1e9)
      })
      const run = async () => {
        if (!route) throw new NotFoundError('not found')
        if (req.method !== route.method) {
          res.setHeader('allow', route.method)
          throw new MethodNotAllowedError(`use ${route.method}`)
        }
        const body = await readJson(req, this.o.maxBodyBytes)
        const out = await route.handler(body, req)
        if (out.body === undefined) res.writeHead(out.status).end()
        else sendJson(res, out.status, out.body)
      }
      run().catch((err: unknown) => {
        if (err instanceof GatehouseError && err.status < 500) {
          this.o.log.info({ api, route: label, code: err.code, status: err.status, remote: req.socket.remoteAddress }, 'request refused')
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
    this.device = createServer({ cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2' }, this.dispatcher('device', this.deviceRoutes()))
    this.proxy = createServer(
      { cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' },
      this.dispatcher('proxy', this.proxyRoutes()),
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
  }

  /** Stop accepting, let in-flight requests finish, then close the store. */
  async close(): Promise<void> {
    this.closing = true
    clearInterval(this.purgeTimer)
    await Promise.all([closeServer(this.device), closeServer(this.proxy), this.admin?.close()])
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
