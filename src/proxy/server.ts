/**
 * The proxy: the devices' public entry point. Per request:
 *
 *   route match ─▶ session lookup (cache, else one coalesced call to the security server)
 *     ─▶ read the envelope (bounded) ─▶ decrypt + authenticate every record
 *     ─▶ timestamp and anti-replay checks ─▶ forward to the upstream (keep-alive pool)
 *     ─▶ seal the upstream's answer in a response envelope ─▶ device
 *
 * Nothing reaches an upstream unless every record authenticated. Errors are JSON
 * `{error:{code,message}}` with the status of the typed error; never a stack trace or key.
 */
import { STATUS_CODES } from 'node:http'
import type { Registry } from 'prom-client'
import {
  ControlPlaneUnavailableError, DecryptError, errorBody, GatehouseError, MalformedError, NotFoundError,
  ReplayError, SessionInvalidError, StaleError, statusOf, TooLargeError, TruncatedError, UnsupportedMediaTypeError,
} from '../errors.js'
import { AdminServer } from '../observability/adminServer.js'
import type { Logger } from '../observability/logger.js'
import { createRegistry } from '../observability/metrics.js'
import { ENVELOPE_MEDIA_TYPE, SESSION_HEADER, SESSION_ID_LENGTH } from '../protocol/constants.js'
import { EnvelopeDecoder, EnvelopeEncoder } from '../protocol/envelope.js'
import { decodeRequestHead, encodeResponseHead } from '../protocol/head.js'
import { ControlPlaneClient } from './controlPlane.js'
import { KNOWN_METHODS, proxyMetrics, type ProxyMetrics } from './metrics.js'
import { isSafePath, RouteTable, type Route, type RouteSpec } from './routeTable.js'
import { SessionCache, type SessionEntry } from './sessionCache.js'
import { HOP_BY_HOP, Upstreams, type ForwardRequest } from './upstreams.js'
import * as uws from './uws.js'

export interface ProxyServerOptions {
  log: Logger
  listen: { host: string; port: number }
  admin?: { host: string; port: number }
  tls: uws.TlsFiles
  controlPlane: { servers: readonly string[]; tls: { cert: Buffer; key: Buffer; ca: Buffer }; timeoutMs: number }
  sessionCache: { maxEntries: number; ttlSeconds: number }
  replay: { windowSize: number; maxClockSkewSeconds: number }
  limits: { maxBodyBytes: number; maxResponseBytes: number }
  upstreamConnections: number
  routes: readonly RouteSpec[]
  registry?: Registry
}

const SESSION_ID_RE = /^[A-Za-z0-9_-]{22}$/
const JSON_TYPE = 'application/json'

/** Request state gathered synchronously in the uWS handler (the HttpRequest dies after it returns). */
interface Exchange {
  res: uws.HttpResponse
  method: string
  path: string
  query: string
  route: Route | undefined
  routeLabel: string
  started: number
  aborted: boolean
  /** Counted and no longer in flight (finish() ran). */
  finished: boolean
  /** Abandons the upstream request when the device goes away. */
  cancel: (() => void) | undefined
  remote: string
}

export class ProxyServer {
  readonly registry: Registry
  readonly metrics: ProxyMetrics
  readonly sessions: SessionCache
  private readonly controlPlane: ControlPlaneClient
  private readonly routes: RouteTable
  private readonly upstreams: Upstreams
  private readonly statusLines = new Map<number, string>()
  private app: uws.TemplatedApp | undefined
  private listenSocket: uws.ListenSocket | undefined
  private admin: AdminServer | undefined
  private inflight = 0
  private draining = false
  port = 0
  adminPort = 0

  constructor(private readonly o: ProxyServerOptions) {
    this.registry = o.registry ?? createRegistry('proxy')
    this.metrics = proxyMetrics(this.registry, { sessionCacheSize: () => this.sessions?.size ?? 0 })
    this.routes = new RouteTable(o.routes)
    this.upstreams = new Upstreams(this.routes.all, { connections: o.upstreamConnections, maxResponseBytes: o.limits.maxResponseBytes })
    this.controlPlane = new ControlPlaneClient(o.controlPlane)
    const m = this.metrics
    const timedClient = {
      validate: async (sid: string) => {
        const end = m.controlPlaneDuration.startTimer()
        try {
          const g = await this.controlPlane.validate(sid)
          m.controlPlaneCalls.inc({ result: g ? 'valid' : 'invalid' })
          m.controlPlaneUp.set(1)
          return g
        } catch (err) {
          m.controlPlaneCalls.inc({ result: 'unavailable' })
          m.controlPlaneUp.set(0)
          throw err
        } finally {
          end()
        }
      },
    }
    this.sessions = new SessionCache(
      { maxEntries: o.sessionCache.maxEntries, ttlMs: o.sessionCache.ttlSeconds * 1000, replayWindowSize: o.replay.windowSize },
      timedClient,
      { hit: () => m.cacheHits.inc(), miss: () => m.cacheMisses.inc(), evicted: () => m.cacheEvictions.inc() },
    )
    // Status lines prepared once (pino-style precomputation), not formatted per response.
    for (const [code, text] of Object.entries(STATUS_CODES)) this.statusLines.set(Number(code), `${code} ${text}`)
  }

  async start(): Promise<void> {
    const app = uws.createTlsApp(this.o.tls)
    app.any('/*', (res, req) => this.onRequest(res, req))
    const { socket, port } = await uws.listen(app, this.o.listen.host, this.o.listen.port)
    this.app = app
    this.listenSocket = socket
    this.port = port
    if (this.o.admin) {
      this.admin = new AdminServer({
        ...this.o.admin, registry: this.registry, log: this.o.log,
        ready: () => (this.draining ? ['draining'] : this.listenSocket ? [] : ['not listening']),
      })
      this.adminPort = await this.admin.start()
    }
  }

  /** Stop accepting, let in-flight requests finish (up to `drainMs`), then close everything. */
  async close(drainMs = 10_000): Promise<void> {
    this.draining = true
    if (this.listenSocket) uws.closeListenSocket(this.listenSocket)
    this.listenSocket = undefined
    const deadline = Date.now() + drainMs
    while (this.inflight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    if (this.app) uws.closeApp(this.app)
    this.app = undefined
    await Promise.all([this.admin?.close(), this.upstreams.close(), this.controlPlane.close()])
  }

  private onRequest(res: uws.HttpResponse, req: uws.HttpRequest): void {
    const method = req.getCaseSensitiveMethod().toUpperCase()
    const path = req.getUrl()
    const query = req.getQuery() ?? ''
    const route = this.routes.match(path)
    const x: Exchange = {
      res, method, path, query, route, routeLabel: route ? route.prefix : 'unmatched',
      started: performance.now(), aborted: false, finished: false, cancel: undefined, remote: '',
    }
    this.inflight++
    res.onAborted(() => {
      x.aborted = true
      x.cancel?.()
      // The client is gone: a body or session lookup still pending will never reach finish().
      this.finish(x, 499)
    })
    try {
      if (!route) throw new NotFoundError('no route for this path')
      if (!isSafePath(path)) throw new MalformedError('path has dot segments or encoded separators')
      const sid = req.getHeader(SESSION_HEADER)
      if (sid.length !== SESSION_ID_LENGTH || !SESSION_ID_RE.test(sid)) throw new SessionInvalidError('missing or malformed session id')
      if (!req.getHeader('content-type').startsWith(ENVELOPE_MEDIA_TYPE)) throw new UnsupportedMediaTypeError(`content-type must be ${ENVELOPE_MEDIA_TYPE}`)
      const declared = req.getHeader('content-length')
      if (declared && Number(declared) > this.o.limits.maxBodyBytes) throw new TooLargeError('body over the limit')
      x.remote = uws.remoteAddress(res)
      this.readBody(x, sid)
    } catch (err) {
      this.fail(x, err, true)
    }
  }

  /** Collect the body (bounded) while the session is looked up; both must finish to go on. */
  private readBody(x: Exchange, sid: string): void {
    const chunks: Buffer[] = []
    let size = 0
    let bodyDone = false
    let entry: SessionEntry | undefined
    let sessionDone = false
    let failed = false
    const proceed = () => {
      if (failed || !bodyDone || !sessionDone || x.aborted) return
      this.handle(x, sid, entry!, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)).catch((err: unknown) => this.fail(x, err))
    }
    x.res.onData((chunk, isLast) => {
      if (failed) return
      size += chunk.byteLength
      if (size > this.o.limits.maxBodyBytes) {
        failed = true
        this.fail(x, new TooLargeError('body over the limit'), true)
        return
      }
      if (chunk.byteLength > 0) chunks.push(uws.copyChunk(chunk))
      if (isLast) {
        bodyDone = true
        proceed()
      }
    })
    const cached = this.sessions.peek(sid)
    if (cached) {
      this.metrics.cacheHits.inc()
      entry = cached
      sessionDone = true
      return
    }
    this.sessions.get(sid).then(
      (e) => {
        if (failed) return
        if (!e) {
          failed = true
          this.fail(x, new SessionInvalidError('session unknown or expired'), !bodyDone)
          return
        }
        entry = e
        sessionDone = true
        proceed()
      },
      (err: unknown) => {
        if (failed) return
        failed = true
        this.fail(x, err instanceof GatehouseError ? err : new ControlPlaneUnavailableError('control plane unavailable'), !bodyDone)
      },
    )
  }

  private async handle(x: Exchange, sid: string, s: SessionEntry, body: Buffer): Promise<void> {
    const m = this.metrics
    m.bytesIn.inc(body.length)
    const requestLine = x.query ? `${x.method} ${x.path}?${x.query}` : `${x.method} ${x.path}`
    const decoder = new EnvelopeDecoder({ kind: 'request', sessionId: sid, requestLine, key: s.c2s })
    let records
    try {
      records = decoder.push(body)
      decoder.end()
    } catch (err) {
      m.decryptFailures.inc({ reason: err instanceof DecryptError ? 'auth' : err instanceof TruncatedError ? 'truncated' : 'malformed' })
      throw err
    }
    const { seq, timestampMs } = decoder.preamble!
    // Checked only now that every record authenticated: junk cannot burn sequence numbers.
    if (Math.abs(Date.now() - timestampMs) > this.o.replay.maxClockSkewSeconds * 1000) {
      m.replayRejections.inc({ reason: 'stale_timestamp' })
      throw new StaleError('timestamp outside the allowed clock skew')
    }
    const verdict = s.replay.window.accept(seq)
    if (verdict !== 'ok') {
      m.replayRejections.inc({ reason: verdict })
      throw new ReplayError(verdict === 'replay' ? 'sequence number already used' : 'sequence number behind the replay window')
    }
    const head = decodeRequestHead(records[0]!.plaintext)
    const payload = records.length > 1 ? Buffer.concat(records.slice(1).map((r) => r.plaintext)) : null

    const headers: Record<string, string | string[]> = {}
    for (const [name, value] of head.headers) {
      const n = name.toLowerCase()
      // Identity headers come from us only; a device cannot set them.
      if (HOP_BY_HOP.has(n) || n.startsWith('gatehouse-')) continue
      const prev = headers[n]
      headers[n] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value]
    }
    headers['x-forwarded-for'] = x.remote
    headers['x-forwarded-proto'] = 'https'
    headers['gatehouse-user'] = s.userName
    headers['gatehouse-device'] = s.deviceId
    headers['gatehouse-app'] = s.appId
    headers['gatehouse-app-version'] = s.appVersion
    if (payload) headers['content-length'] = String(payload.length)

    const route = x.route!
    const upstreamStarted = performance.now()
    const fwd: ForwardRequest = { method: x.method, path: this.routes.upstreamPath(route, x.path, x.query), headers, body: payload }
    let up
    try {
      const pending = this.upstreams.forward(route, fwd)
      x.cancel = () => fwd.cancel?.()
      up = await pending
    } catch (err) {
      m.upstreamErrors.inc({ route: route.prefix, kind: err instanceof GatehouseError ? err.code : 'error' })
      throw err
    }
    m.upstreamDuration.observe({ route: route.prefix }, (performance.now() - upstreamStarted) / 1000)
    if (x.aborted) return this.finish(x, 499)

    const enc = new EnvelopeEncoder({
      kind: 'response', sessionId: sid, requestLine, key: s.s2c, seq, timestampMs, salt: s.replay.responseSalt, responseKey: s.replay.responseKey,
    })
    const parts = [enc.preamble, enc.record(encodeResponseHead({ status: up.status, headers: up.headers }), up.body.length === 0), ...(up.body.length ? enc.body(up.body) : [])]
    const out = Buffer.concat(parts)
    m.bytesOut.inc(out.length)
    x.res.cork(() => {
      x.res.writeStatus(this.statusLines.get(up.status) ?? String(up.status))
        .writeHeader('content-type', ENVELOPE_MEDIA_TYPE)
        .writeHeader('cache-control', 'no-store')
        .end(out)
    })
    this.finish(x, up.status)
  }

  private fail(x: Exchange, err: unknown, closeConnection = false): void {
    const status = statusOf(err)
    if (status >= 500 && !(err instanceof GatehouseError)) this.o.log.error({ err, route: x.routeLabel }, 'request failed')
    else this.o.log.debug({ code: (err as GatehouseError).code, status, route: x.routeLabel }, 'request refused')
    if (!x.aborted) {
      const body = JSON.stringify(errorBody(err))
      x.res.cork(() => {
        x.res.writeStatus(this.statusLines.get(status) ?? String(status)).writeHeader('content-type', JSON_TYPE)
        if (status === 503) x.res.writeHeader('retry-after', '5')
        // A body we did not read cannot be skipped reliably: close after answering.
        x.res.end(body, closeConnection)
      })
    }
    this.finish(x, status)
  }

  private finish(x: Exchange, status: number): void {
    if (x.finished) return
    x.finished = true
    this.inflight--
    const method = KNOWN_METHODS.has(x.method) ? x.method : 'OTHER'
    this.metrics.requests.inc({ route: x.routeLabel, method, status: String(status) })
    this.metrics.duration.observe({ route: x.routeLabel }, (performance.now() - x.started) / 1000)
  }
}
