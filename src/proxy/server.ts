/**
 * The proxy: the devices' public entry point. Per request:
 *
 *   route match ─▶ session lookup (cache, else one coalesced call to the security server)
 *     ─▶ read the envelope (bounded) ─▶ decrypt + authenticate the records
 *     ─▶ timestamp and anti-replay checks ─▶ forward to the upstream (keep-alive pool)
 *     ─▶ seal the upstream's answer in a response envelope ─▶ device
 *
 * Two ways in: an envelope of at most 64 KiB (the common case), or one complete before the
 * session lookup finished, is decrypted in one go and nothing reaches the upstream unless every
 * record authenticated (handle). A larger one streams record by record
 * (requestStream.ts): nothing reaches the upstream before the head record and one record of body
 * authenticated, and a later record that fails, or a body cut short, aborts the upstream request
 * mid-body. Answers always stream back record by record (responseStream.ts). Errors are JSON
 * `{error:{code,message}}` with the status of the typed error; never a stack trace or key.
 *
 * Revocations pushed by the security server (revocationFeed.ts) drop the cached session and cut
 * its requests in flight: the upstream request is abandoned and the device gets 401.
 */
import { STATUS_CODES } from 'node:http'
import type { Registry } from 'prom-client'
import type { Readable } from 'node:stream'
import {
  ControlPlaneUnavailableError, errorBody, RequestTimeoutError, GatehouseError, MalformedError, NotFoundError,
  ReplayError, SessionInvalidError, StaleError, statusOf, TooLargeError, UnsupportedMediaTypeError, UpstreamError,
} from '../errors.js'
import { AdminServer } from '../observability/adminServer.js'
import type { Logger } from '../observability/logger.js'
import { createRegistry } from '../observability/metrics.js'
import { ENVELOPE_MEDIA_TYPE, SESSION_HEADER, SESSION_ID_LENGTH } from '../protocol/constants.js'
import { EnvelopeDecoder, type Preamble } from '../protocol/envelope.js'
import { decodeRequestHead, type RequestHead } from '../protocol/head.js'
import { ActiveSyncGateway, type ActiveSyncOptions } from './activeSync.js'
import { checkListenerTls, type CertSummary, type ListenerTls } from './certCheck.js'
import { registerConnectionMetrics } from './connectionMetrics.js'
import { lifecycleMetrics } from './lifecycleMetrics.js'
import type { ProxyLimits } from './limits.js'
import { Listeners, touching, type Listener } from './listeners.js'
import type { ReloadableOptions } from './reload.js'
import { RequestWatch } from './requestWatch.js'
import { Routing } from './routing.js'
import { checkAppGate } from './appContext.js'
import { ControlPlaneClient } from './controlPlane.js'
import { CryptoPool } from './cryptoPool.js'
import { cryptoPoolMetrics, KNOWN_METHODS, proxyMetrics, type ProxyMetrics } from './metrics.js'
import { refusalReason, RequestStream, STREAM_AFTER_BYTES, STREAM_HIGH_WATER_BYTES } from './requestStream.js'
import { ResponseStream } from './responseStream.js'
import { RevocationFeed, type RevocationLine } from './revocationFeed.js'
import { isSafePath, type Route, type RouteSpec } from './routeTable.js'
import { revocationMatches, SessionCache, type RevocationKind, type SessionEntry } from './sessionCache.js'
import { HOP_BY_HOP, type ForwardRequest } from './upstreams.js'
import * as uws from './uws.js'

export interface ProxyServerOptions {
  log: Logger
  listen: { host: string; port: number }
  admin?: { host: string; port: number }
  /** Certificate and key files, and SNI ones; reloaded by reload(). */
  tls: ListenerTls
  controlPlane: { servers: readonly string[]; tls: { cert: Buffer; key: Buffer; ca: Buffer }; timeoutMs: number; healthCheckIntervalMs?: number }
  sessionCache: { maxEntries: number; ttlSeconds: number; outageGraceSeconds?: number }
  replay: { windowSize: number; maxClockSkewSeconds: number }
  /** Size and time limits (limits.ts; the optional ones default to LIMIT_DEFAULTS). */
  limits: ProxyLimits
  /** One info line per request (accessLog.ts); default true. */
  accessLog?: boolean
  /** Drain window of close() when none is given; default 25. */
  drainSeconds?: number
  /** Records of at least poolThresholdBytes sealed and opened in a worker pool (cryptoPool.ts); absent or 0 = inline. */
  crypto?: { poolThresholdBytes: number; poolThreads: number }
  upstreamConnections: number
  routes: readonly RouteSpec[]
  /** Follow the security server's revocation stream (default: enabled, 30 s heartbeat timeout). */
  revocations?: { enabled: boolean; heartbeatTimeoutSeconds: number }
  /** The ActiveSync gateway for native mail clients (activeSync.ts); absent = off. */
  activeSync?: ActiveSyncOptions
  registry?: Registry
}

const REVOCATION_KINDS: readonly RevocationKind[] = ['session', 'enrollment', 'device', 'user', 'policy']

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
  sid: string
  /** The session once looked up; the exchange is then in `bySession` until finish(). */
  session: SessionEntry | undefined
  /** The status line of the answer was written: a failure from now on can only cut the connection. */
  responding: boolean
  /** The request body was read to its end. */
  bodyDone: boolean
  /** Streamed requests: true once the envelope's FINAL record arrived (the rest is HTTP framing). */
  envelopeDone?: () => boolean
  /** Reading the body is paused (uWS res.pause) until the upstream takes what waits. */
  paused: boolean
  /** The device joined its head record (FLAG_JOINED): a small answer goes back joined too. */
  joined: boolean
}

export class ProxyServer {
  readonly registry: Registry
  readonly metrics: ProxyMetrics
  readonly sessions: SessionCache
  private readonly controlPlane: ControlPlaneClient
  /** Route table and upstream pools (routing.ts), replaced as one by a reload. */
  private readonly routes: Routing
  /** The same object as `routes`: the request path forwards through it. */
  private readonly upstreams: Routing
  private readonly statusLines = new Map<number, string>()
  /** The uWS apps of the device port (listeners.ts): one, plus the ones a reload retired. */
  private readonly listeners: Listeners
  /** Admission limits, body timeout, access log (requestWatch.ts). */
  private readonly watch: RequestWatch<Exchange>
  private admin: AdminServer | undefined
  private inflight = 0
  /** Exchanges in flight per session id, so that a revocation can cut them. */
  private readonly bySession = new Map<string, Set<Exchange>>()
  private readonly revocationFeed: RevocationFeed | undefined
  private readonly activeSync: ActiveSyncGateway | undefined
  private readonly appliedByKind: Record<RevocationKind, { inc(): void }>
  private readonly cryptoPool: CryptoPool | undefined
  private draining = false
  port = 0
  adminPort = 0

  constructor(private readonly o: ProxyServerOptions) {
    this.registry = o.registry ?? createRegistry('proxy')
    this.metrics = proxyMetrics(this.registry, { sessionCacheSize: () => this.sessions?.size ?? 0, upstreamTargets: () => this.upstreams?.targetStates() ?? [] })
    this.routes = this.upstreams = new Routing(o.routes, { connections: o.upstreamConnections, maxResponseBytes: o.limits.maxResponseBytes, metrics: this.metrics, log: o.log })
    this.listeners = new Listeners({
      attach: (app, l) => this.attach(app, l), log: o.log,
      // uWS closes idle connections after 8–12 s; an ActiveSync Ping may be held maxHoldSeconds.
      idleCloseMs: () => 15_000 + (this.o.activeSync ? this.o.activeSync.maxHoldSeconds * 1000 + 10_000 : 0),
    })
    this.watch = new RequestWatch<Exchange>({
      limits: o.limits, accessLog: o.accessLog ?? true, log: o.log, metrics: this.metrics,
      life: lifecycleMetrics(this.registry, { inflight: () => this.inflight, listeners: () => this.listeners.count }),
      routeOf: (path) => this.routes.match(path)?.prefix ?? 'unmatched',
      bodyTimedOut: (x) => this.bodyTimedOut(x),
    })
    // For uWS builds that read it at load (this one does not: limits.ts enforces the size).
    uws.setMaxHeaderBytes(this.watch.limits.maxHeaderBytes)
    // Process-wide gauges from the kernel: counted by whoever serves the process's /metrics (a
    // worker thread has no admin endpoint; ProxyThreads counts for all threads).
    if (o.admin) registerConnectionMetrics(this.registry, { listeners: [{ name: 'device', port: () => this.port }], host: o.listen.host, log: o.log })
    this.controlPlane = new ControlPlaneClient(o.controlPlane)
    this.cryptoPool = o.crypto && CryptoPool.acquire({ thresholdBytes: o.crypto.poolThresholdBytes, threads: o.crypto.poolThreads })
    if (this.cryptoPool) cryptoPoolMetrics(this.registry, this.cryptoPool)
    this.activeSync = o.activeSync && new ActiveSyncGateway(o.activeSync, {
      log: o.log, registry: this.registry, controlPlane: this.controlPlane,
      countRequest: (method, status) => this.metrics.requests.inc({ route: o.activeSync!.path, method: KNOWN_METHODS.has(method) ? method : 'OTHER', status: String(status) }),
    })
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
      {
        maxEntries: o.sessionCache.maxEntries, ttlMs: o.sessionCache.ttlSeconds * 1000, replayWindowSize: o.replay.windowSize,
        graceMs: (o.sessionCache.outageGraceSeconds ?? 0) * 1000,
      },
      timedClient,
      { hit: () => m.cacheHits.inc(), miss: () => m.cacheMisses.inc(), evicted: () => m.cacheEvictions.inc(), grace: () => m.graceServed.inc() },
    )
    // Label children resolved once.
    this.appliedByKind = Object.fromEntries(REVOCATION_KINDS.map((kind) => {
      const child = m.revocationsApplied.labels({ kind })
      child.inc(0)
      return [kind, child]
    })) as Record<RevocationKind, { inc(): void }>
    if (o.revocations?.enabled !== false) {
      this.revocationFeed = new RevocationFeed({
        servers: o.controlPlane.servers,
        dispatcher: this.controlPlane.dispatcher,
        connectTimeoutMs: o.controlPlane.timeoutMs,
        heartbeatTimeoutMs: (o.revocations?.heartbeatTimeoutSeconds ?? 30) * 1000,
        log: o.log,
        apply: (r) => this.applyRevocation(r),
        reset: () => {
          this.sessions.softClear()
          this.activeSync?.clearGate()
        },
        onState: (up) => m.revocationStreamUp.set(up ? 1 : 0),
      })
    }
    m.revocationStreamUp.set(0)
    // Status lines prepared once (pino-style precomputation), not formatted per response.
    for (const [code, text] of Object.entries(STATUS_CODES)) this.statusLines.set(Number(code), `${code} ${text}`)
  }

  async start(): Promise<void> {
    // Checked with node:crypto first: uWS says only "App construction failed", or crashes (SNI).
    checkListenerTls(this.o.tls)
    this.port = await this.listeners.open({ host: this.o.listen.host, port: this.o.listen.port, tls: this.o.tls })
    this.upstreams.start()
    this.watch.start()
    if (this.o.admin) {
      this.admin = new AdminServer({
        ...this.o.admin, registry: this.registry, log: this.o.log,
        ready: () => (this.draining ? ['draining'] : this.listeners.accepting ? [] : ['not listening']),
      })
      this.adminPort = await this.admin.start()
    }
    // Waits for the first connection attempt (bounded), so that the cache is not cleared under
    // the first requests; readiness does not depend on the stream.
    await this.revocationFeed?.start()
  }

  /** The revocation stream is connected (tests, diagnostics). */
  get revocationStreamConnected(): boolean {
    return this.revocationFeed?.connected ?? false
  }

  /** Highest revocation seq seen on the stream (tests, diagnostics). */
  get revocationSeq(): number | undefined {
    return this.revocationFeed?.lastSeq
  }

  /** Drop what the revocation names from the cache and cut its requests in flight. */
  private applyRevocation(r: RevocationLine): void {
    this.sessions.revoke(r)
    this.activeSync?.revoke(r)
    this.appliedByKind[r.kind].inc()
    this.metrics.revocationLag.observe(Math.max(0, Date.now() - r.at) / 1000)
    if (r.kind === 'policy') return
    // Matched by the entries the exchanges hold, so a session evicted meanwhile is cut as well.
    for (const set of this.bySession.values()) {
      for (const x of set) {
        if (x.session && revocationMatches(r, x.session)) this.cut(x)
      }
    }
  }

  /** End a request whose session was revoked: abandon the upstream call, answer 401 if nothing was sent. */
  private cut(x: Exchange): void {
    if (x.finished) return
    x.cancel?.()
    this.o.log.info({ event: 'request_cut', route: x.routeLabel }, 'request cut: its session was revoked')
    this.fail(x, new SessionInvalidError('session revoked'), true)
  }

  private track(x: Exchange, session: SessionEntry): void {
    x.session = session
    let set = this.bySession.get(x.sid)
    if (!set) this.bySession.set(x.sid, (set = new Set()))
    set.add(x)
  }

  /**
   * Fail readiness (/readyz 503) while still serving: a load balancer takes the proxy out of its
   * rotation before close() stops accepting (proxy.shutdownDelayMs, docs/deployment.md).
   */
  beginDrain(): void {
    this.draining = true
  }

  /**
   * Stop accepting, let in-flight requests finish (up to `drainMs`, default drainSeconds), then
   * close every connection (a request still running is cut: its upstream request is abandoned).
   */
  async close(drainMs = (this.o.drainSeconds ?? 25) * 1000): Promise<void> {
    this.draining = true
    await this.revocationFeed?.close()
    this.listeners.stopAccepting()
    const deadline = Date.now() + drainMs
    const activeSyncDrained = this.activeSync?.drain(drainMs)
    while (this.inflight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    await activeSyncDrained
    if (this.inflight > 0) this.o.log.warn({ event: 'drain_cut', inflight: this.inflight, drainMs }, 'drain window over: cutting the requests still in flight')
    this.listeners.closeAll()
    this.watch.close()
    await Promise.all([this.admin?.close(), this.upstreams.close(), this.controlPlane.close(), this.activeSync?.close(), this.cryptoPool?.release()])
  }

  /**
   * Apply reloaded options (reload.ts): certificates first checked, then a new uWS app on the
   * same port with the new route table and pools; new requests get the new routes and limits,
   * established connections go on. On any error nothing changes and the error is thrown.
   */
  async reload(next: ReloadableOptions): Promise<CertSummary[]> {
    if (this.draining) throw new Error('the proxy is draining')
    const certificates = checkListenerTls(next.tls)
    const routing = this.routes.prepare(next.routes, {
      connections: next.upstreamConnections, maxResponseBytes: next.limits.maxResponseBytes, metrics: this.metrics, log: this.o.log,
    })
    try {
      await this.listeners.replace(next.tls)
    } catch (err) {
      await routing.discard()
      throw err
    }
    const drainMs = next.drainSeconds * 1000
    // Pools of the old routes: what they hold may finish, as in a drain.
    routing.commit(Math.max(drainMs, ...this.routes.all.map((r) => r.timeoutSeconds * 1000)))
    Object.assign(this.o, { tls: next.tls, limits: next.limits, routes: next.routes, upstreamConnections: next.upstreamConnections, accessLog: next.accessLog, drainSeconds: next.drainSeconds })
    this.watch.update(next.limits, next.accessLog)
    return certificates
  }

  /** Register the handlers of one router of a device-listener app (reload: of each new app). */
  private attach(app: uws.TemplatedApp, l: Listener): void {
    // The ActiveSync path first: uWS matches the most specific pattern, '/*' catches the rest.
    this.activeSync?.register(touching(app, l))
    app.any('/*', (res, req) => {
      if (this.watch.admit(res, req, l, this.inflight)) this.onRequest(res, req)
    })
  }

  /** No body byte for bodyTimeoutSeconds: abandon the upstream request, answer 408, close. */
  private bodyTimedOut(x: Exchange): void {
    if (x.finished) return
    // Answered first, so that the abort below cannot answer 502 in its place.
    this.fail(x, new RequestTimeoutError('request body not received in time'), true)
    x.cancel?.()
  }

  private onRequest(res: uws.HttpResponse, req: uws.HttpRequest): void {
    const method = req.getCaseSensitiveMethod().toUpperCase()
    const path = req.getUrl()
    const query = req.getQuery() ?? ''
    const route = this.routes.match(path)
    const x: Exchange = {
      res, method, path, query, route, routeLabel: route ? route.prefix : 'unmatched',
      started: performance.now(), aborted: false, finished: false, cancel: undefined, remote: '', sid: '', session: undefined,
      responding: false, bodyDone: false, paused: false, joined: false,
    }
    this.inflight++
    this.watch.begin(x)
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
      // Already read by the access log's admission (requestWatch.ts) when it is on.
      x.remote ||= uws.remoteAddress(res)
      x.sid = sid
      this.readBody(x, sid)
    } catch (err) {
      this.fail(x, err, true)
    }
  }

  /**
   * Read the body while the session is looked up. A body complete within its first 64 KiB
   * (STREAM_AFTER_BYTES: small requests, however they are split into reads), or complete by the
   * time the session is known, goes to handle() whole; a larger one streams (stream()) from then
   * on. Bounded by maxBodyBytes in total; while the session is pending, reading pauses past the
   * stream high-water mark.
   */
  private readBody(x: Exchange, sid: string): void {
    let chunks: Buffer[] = []
    let size = 0
    let entry: SessionEntry | undefined
    let stream: RequestStream | undefined
    let failed = false
    const proceed = () => {
      if (failed || x.finished) return
      if (x.bodyDone) {
        const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)
        chunks = []
        this.handle(x, sid, entry!, body).catch((err: unknown) => this.fail(x, err))
        return
      }
      try {
        stream = this.stream(x, sid, entry!)
      } catch (err) {
        failed = true
        return this.fail(x, err, true)
      }
      const held = chunks
      chunks = []
      // Paused while the session was looked up; the stream pauses again itself if it must.
      this.resumeDevice(x)
      for (const c of held) stream.push(c, false)
    }
    x.res.onData((chunk, isLast) => {
      if (failed || x.finished) return
      this.watch.body(x, chunk.byteLength)
      size += chunk.byteLength
      if (size > this.o.limits.maxBodyBytes) {
        failed = true
        // Stop a streamed body first: the upstream sees an aborted request.
        stream?.abort(new TooLargeError('body over the limit'))
        this.fail(x, new TooLargeError('body over the limit'), true)
        return
      }
      if (isLast) x.bodyDone = true
      if (stream) {
        this.metrics.bytesIn.inc(chunk.byteLength)
        // A view of uWS's memory: the stream copies what it keeps before push() returns.
        return stream.push(Buffer.from(chunk), isLast)
      }
      if (chunk.byteLength > 0) chunks.push(uws.copyChunk(chunk))
      // Small bodies are read whole whatever their chunking: they stream only past STREAM_AFTER_BYTES.
      if (entry && (isLast || size > STREAM_AFTER_BYTES)) proceed()
      else if (!entry && !isLast && size > STREAM_HIGH_WATER_BYTES) this.pauseDevice(x)
    })
    const cached = this.sessions.peek(sid)
    if (cached) {
      this.metrics.cacheHits.inc()
      entry = cached
      this.track(x, cached)
      return
    }
    this.sessions.get(sid).then(
      (e) => {
        if (failed || x.finished) return
        if (!e) {
          failed = true
          this.fail(x, new SessionInvalidError('session unknown or expired'), !x.bodyDone)
          return
        }
        entry = e
        this.track(x, e)
        if (x.bodyDone || size > STREAM_AFTER_BYTES) proceed()
      },
      (err: unknown) => {
        if (failed || x.finished) return
        failed = true
        this.fail(x, err instanceof GatehouseError ? err : new ControlPlaneUnavailableError('control plane unavailable'), !x.bodyDone)
      },
    )
  }

  private requestLine(x: Exchange): string {
    return x.query ? `${x.method} ${x.path}?${x.query}` : `${x.method} ${x.path}`
  }

  /** The whole envelope is in: authenticate every record, then forward. */
  private async handle(x: Exchange, sid: string, s: SessionEntry, body: Buffer): Promise<void> {
    // App context first (403 GH_ERR_APP_VERSION / GH_ERR_APP_CONTEXT): a refused request costs a
    // Set lookup, no crypto, no sequence number, and never reaches the upstream.
    checkAppGate(s.app, x.route!.prefix, x.path)
    const m = this.metrics
    m.bytesIn.inc(body.length)
    const requestLine = this.requestLine(x)
    const decoder = new EnvelopeDecoder({ kind: 'request', sessionId: sid, requestLine, key: s.c2s })
    let records
    try {
      records = decoder.push(body)
      decoder.end()
    } catch (err) {
      m.decryptFailures.inc({ reason: refusalReason(err) ?? 'malformed' })
      throw err
    }
    const preamble = decoder.preamble!
    // Checked only now that every record authenticated: junk cannot burn sequence numbers.
    this.checkFresh(s, preamble)
    x.joined = decoder.joined
    const head = decodeRequestHead(records[0]!.plaintext)
    const payload = records.length === 2 ? records[1]!.plaintext : records.length > 2 ? Buffer.concat(records.slice(1).map((r) => r.plaintext)) : null
    await this.forward(x, sid, s, requestLine, preamble, this.forwardHeaders(x, s, head), payload)
  }

  /**
   * The envelope streams in: records are authenticated as they arrive, the head first, and the
   * body follows them to the upstream (requestStream.ts). Throws when the app may not use the route.
   */
  private stream(x: Exchange, sid: string, s: SessionEntry): RequestStream {
    checkAppGate(s.app, x.route!.prefix, x.path)
    const m = this.metrics
    const requestLine = this.requestLine(x)
    let preamble: Preamble | undefined
    let headers: Record<string, string | string[]> = {}
    const rs = new RequestStream({
      sessionId: sid, requestLine, key: s.c2s, pool: this.cryptoPool,
      pauseDevice: () => this.pauseDevice(x),
      resumeDevice: () => this.resumeDevice(x),
      head: (p, plaintext) => {
        // The head record authenticated: only now may the seq count (junk cannot burn numbers).
        this.checkFresh(s, p)
        preamble = p
        x.joined = rs.joined
        headers = this.forwardHeaders(x, s, decodeRequestHead(plaintext))
      },
      start: (body) => {
        this.forward(x, sid, s, requestLine, preamble!, headers, body).catch((err: unknown) => {
          this.fail(x, err, !x.bodyDone)
          // Stop reading a body still streaming in.
          x.cancel?.()
        })
      },
      fail: (err) => {
        const reason = refusalReason(err)
        if (reason) m.decryptFailures.inc({ reason })
        if (rs.upstreamStarted) this.o.log.info({ event: 'upstream_request_aborted', route: x.routeLabel, code: (err as GatehouseError).code }, 'streamed request failed after it reached the upstream: upstream request aborted')
        this.fail(x, err, !x.bodyDone)
        x.cancel?.()
      },
    })
    x.cancel = () => rs.abort(new UpstreamError('request abandoned'))
    x.envelopeDone = () => rs.envelopeComplete
    return rs
  }

  /** Timestamp within the skew, seq accepted by the replay window (after authentication only). */
  private checkFresh(s: SessionEntry, p: Preamble): void {
    const m = this.metrics
    if (Math.abs(Date.now() - p.timestampMs) > this.o.replay.maxClockSkewSeconds * 1000) {
      m.replayRejections.inc({ reason: 'stale_timestamp' })
      throw new StaleError('timestamp outside the allowed clock skew')
    }
    const verdict = s.replay.window.accept(p.seq)
    if (verdict !== 'ok') {
      m.replayRejections.inc({ reason: verdict })
      throw new ReplayError(verdict === 'replay' ? 'sequence number already used' : 'sequence number behind the replay window')
    }
  }

  /** The head's headers for the upstream, without hop-by-hop ones, plus ours. */
  private forwardHeaders(x: Exchange, s: SessionEntry, head: RequestHead): Record<string, string | string[]> {
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
    return headers
  }

  /**
   * Send the request upstream (the pool frames it: a whole body with its content-length, a
   * streamed one chunked)
   * and stream the answer back in a response envelope (responseStream.ts).
   */
  private async forward(
    x: Exchange, sid: string, s: SessionEntry, requestLine: string, p: Preamble,
    headers: Record<string, string | string[]>, body: Buffer | null | Readable,
  ): Promise<void> {
    if (x.finished) return
    const m = this.metrics
    const route = x.route!
    const kind = (err: Error) => (err instanceof GatehouseError ? err.code : 'error')
    const sink = new ResponseStream({
      res: x.res,
      statusLine: (status) => this.statusLines.get(status) ?? String(status),
      envelope: {
        kind: 'response', sessionId: sid, requestLine, key: s.s2c, seq: p.seq, timestampMs: p.timestampMs,
        salt: s.replay.responseSalt, responseKey: s.replay.responseKey,
      },
      pool: this.cryptoPool,
      limit: this.o.limits.maxResponseBytes,
      head: x.method === 'HEAD',
      joined: x.joined,
      gone: () => x.finished,
      // The connection can carry the next request once the whole envelope is in, even if uWS has
      // not yet reported the end of a chunked body: closing here raced the answer's last bytes.
      keepAlive: () => x.bodyDone || (x.envelopeDone?.() ?? false),
      failed: (err) => {
        m.upstreamErrors.inc({ route: route.prefix, kind: kind(err) })
        this.fail(x, err, !x.bodyDone)
        x.cancel?.()
      },
      started: () => {
        x.responding = true
        this.watch.upstream(x, performance.now() - upstreamStarted)
      },
      finished: (status) => {
        this.finish(x, status)
        // Answered before the whole body came in (the connection closes after the answer): stop
        // handing the rest of the body to the upstream.
        if (!x.bodyDone) x.cancel?.()
      },
      cut: (err) => {
        m.upstreamErrors.inc({ route: route.prefix, kind: kind(err) })
        this.fail(x, err, true)
        x.cancel?.()
      },
      sent: (n) => {
        m.bytesOut.inc(n)
        this.watch.sent(x, n)
      },
    })
    const fwd: ForwardRequest = { method: x.method, path: this.routes.upstreamPath(route, x.path, x.query), headers, body, sink }
    const upstreamStarted = performance.now()
    try {
      const pending = this.upstreams.forward(route, fwd)
      const abortBody = x.cancel
      x.cancel = () => {
        abortBody?.()
        fwd.cancel?.()
      }
      await pending
    } catch (err) {
      // Cut by a revocation (or the device left): already answered, not an upstream failure.
      if (x.finished) return
      m.upstreamErrors.inc({ route: route.prefix, kind: kind(err as Error) })
      throw err
    }
    m.upstreamDuration.observe({ route: route.prefix }, (performance.now() - upstreamStarted) / 1000)
  }

  private pauseDevice(x: Exchange): void {
    if (x.paused || x.finished) return
    x.paused = true
    x.res.pause()
  }

  private resumeDevice(x: Exchange): void {
    if (!x.paused || x.finished) return
    x.paused = false
    x.res.resume()
  }

  private fail(x: Exchange, err: unknown, closeConnection = false): void {
    // Answered already (a revocation cut it) or abandoned by the device: nothing more to send.
    if (x.finished) return
    const status = statusOf(err)
    if (status >= 500 && !(err instanceof GatehouseError)) this.o.log.error({ err, route: x.routeLabel }, 'request failed')
    else this.o.log.debug({ code: (err as GatehouseError).code, status, route: x.routeLabel }, 'request refused')
    if (x.responding && !x.aborted) {
      // The answer already started: all that is left is to cut it (the device sees no FINAL record).
      this.metrics.responsesCut.inc({ reason: cutReason(err) })
      this.o.log.info({ event: 'response_cut', route: x.routeLabel, code: (err as GatehouseError).code }, 'response cut after it started')
      this.finish(x, status)
      x.res.close()
      return
    }
    if (!x.aborted) {
      this.resumeDevice(x)
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
    if (x.session) {
      const set = this.bySession.get(x.sid)
      if (set?.delete(x) && set.size === 0) this.bySession.delete(x.sid)
    }
    const method = KNOWN_METHODS.has(x.method) ? x.method : 'OTHER'
    this.metrics.requests.inc({ route: x.routeLabel, method, status: String(status) })
    this.metrics.duration.observe({ route: x.routeLabel }, (performance.now() - x.started) / 1000)
    this.watch.end(x, status)
  }
}

/** Label of gatehouse_proxy_responses_cut_total. */
function cutReason(err: unknown): 'revoked' | 'too_large' | 'upstream' | 'request' {
  if (err instanceof SessionInvalidError) return 'revoked'
  if (err instanceof UpstreamError && /too large/.test(err.message)) return 'too_large'
  if (err instanceof GatehouseError && err.status < 500) return 'request'
  return 'upstream'
}
