/**
 * The ActiveSync gateway of the proxy: native mail clients (iOS Mail, Outlook mobile, Android)
 * speak Exchange ActiveSync (MS-ASHTTP), not the Gatehouse envelope. Their requests to
 * `proxy.activeSync.path` are gated and streamed to Exchange:
 *
 *   POST /Microsoft-Server-ActiveSync?<query>  (Authorization: Basic …, passed through untouched)
 *     ─▶ parse the query strictly (plain or base64 form: activeSyncQuery.ts)      400 if malformed
 *     ─▶ who: the HTTP Basic user (what Exchange authenticates); the query's User must match it
 *     ─▶ gate: is (user, DeviceId) an enrolled, active device? (activeSyncGate.ts; cached,
 *        coalesced, dropped by pushed revocations)                    403 / 449 / 503 otherwise
 *     ─▶ relay to Exchange, streamed both ways with backpressure (activeSyncRelay.ts)
 *
 *   OPTIONS /Microsoft-Server-ActiveSync  (no DeviceId by specification) goes to Exchange ungated:
 *   it carries no mailbox data, and Exchange itself requires the credentials.
 *
 * Refusals follow what an Exchange front end answers (table in docs/operations.md, "ActiveSync
 * gateway"): unknown, not enrolled, locked or retired device 403; wiped device 449 "Retry after
 * sending a PROVISION command" (its Provision gets 403); control plane unreachable 503 with
 * Retry-After (never a refusal). Requests in flight of a device that a pushed revocation refuses
 * are cut; on shutdown, held Pings are answered "heartbeat expired" so clients re-Ping elsewhere.
 */
import { STATUS_CODES } from 'node:http'
import { readFileSync } from 'node:fs'
import type { Registry } from 'prom-client'
import {
  AuthenticationError, ControlPlaneUnavailableError, DeviceBlockedError, DeviceNotEnrolledError, errorBody, GatehouseError, IdentityMismatchError,
  MalformedError, MethodNotAllowedError, statusOf, TooLargeError, UnavailableError,
} from '../errors.js'
import type { Logger } from '../observability/logger.js'
import { activeSyncUserKey, type ActiveSyncDeviceState } from '../protocol/activeSyncIdentity.js'
import { ActiveSyncGate, gateKey, gateRevocationMatches, type GateAnswer, type GateClient } from './activeSyncGate.js'
import { activeSyncMetrics, type ActiveSyncMetrics, type GateResult } from './activeSyncMetrics.js'
import { KNOWN_COMMANDS, parseActiveSyncQuery } from './activeSyncQuery.js'
import { Relay, RequestBody } from './activeSyncRelay.js'
import { createExchangeUpstream, type ExchangeUpstream } from './activeSyncUpstream.js'
import type { Revocation } from './sessionCache.js'
import * as uws from './uws.js'

export interface ActiveSyncOptions {
  /** Exchange origin, http or https. */
  upstream: string
  /** PEM CA file for an https Exchange (default: the system store). */
  upstreamCa?: string | undefined
  /** Path the mail clients use (exact match). */
  path: string
  /** How long a request (a Ping, a Sync with Wait) may stay open waiting for Exchange. */
  maxHoldSeconds: number
  /** How long an allowed gate answer is trusted. */
  gateCacheSeconds: number
  gateCacheMaxEntries?: number
  /** Largest request body (413 above). */
  maxBodyBytes: number
  /** Keep-alive connections to Exchange; over HTTP/1.1 every held Ping holds one. Default 10 000. */
  upstreamConnections?: number
  /** Speak HTTP/2 to Exchange (https only): requests share connections (activeSyncUpstream.ts). Default false. */
  upstreamHttp2?: boolean
  /** HTTP/2: most requests at once per connection to Exchange. Default 100. */
  upstreamMaxStreams?: number
  /** Added to maxHoldSeconds for Exchange's headers and body timeouts. Default 10 000 ms. */
  holdMarginMs?: number
  /** Outage grace of allowed gate answers (the session cache's). Default 0. */
  outageGraceSeconds?: number
  /** Request body bytes buffered before reading from the client pauses. Default 64 KiB. */
  bodyHighWaterMark?: number
}

export interface ActiveSyncDeps {
  log: Logger
  registry: Registry
  controlPlane: GateClient
  /** The proxy's requests_total (route, method, status), so totals include ActiveSync. */
  countRequest(method: string, status: number): void
}

/** MS-ASHTTP 2.2.2.1.1: the status asking a client to provision (used for a wiped device). */
const PROVISION_REQUIRED = 449
const STATUS_449 = '449 Retry after sending a PROVISION command'

/**
 * WBXML of `<Ping xmlns="Ping:"><Status>1</Status></Ping>`: "the heartbeat interval expired before
 * any changes occurred" (MS-ASCMD Ping Status 1). Sent to held Pings on shutdown: the client
 * simply Pings again (through another proxy), and Exchange still reports changes made meanwhile.
 *
 *   03 01 6A 00   WBXML 1.3, unknown public id, UTF-8, empty string table
 *   00 0D         SWITCH_PAGE 13 (Ping)
 *   45            <Ping> (0x05 | content)
 *   47 03 31 00 01  <Status> STR_I "1" </Status>
 *   01            </Ping>
 */
export const PING_HEARTBEAT_EXPIRED = Buffer.from([0x03, 0x01, 0x6a, 0x00, 0x00, 0x0d, 0x45, 0x47, 0x03, 0x31, 0x00, 0x01, 0x01])
const WBXML_TYPE = 'application/vnd.ms-sync.wbxml'

/** Request headers never forwarded (hop-by-hop, RFC 9110 §7.6.1; ours; what undici sets). */
const REQUEST_SKIP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
  'proxy-authenticate', 'proxy-authorization', 'host', 'content-length', 'expect', 'http2-settings',
  'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'forwarded',
])

/** One request at the gateway. */
interface Exchange {
  res: uws.HttpResponse
  method: string
  command: string
  /** Metric label: a known command or OTHER. */
  label: string
  started: number
  aborted: boolean
  /** Answered by us or relayed completely (accounted). */
  finished: boolean
  key: string | undefined
  answer: GateAnswer | undefined
  body: RequestBody | null
  relay: Relay | undefined
  /** The body was not read to its end: the connection is closed after answering. */
  unread: boolean
}

export class ActiveSyncGateway {
  readonly gate: ActiveSyncGate
  readonly metrics: ActiveSyncMetrics
  private readonly upstream: ExchangeUpstream
  private readonly origin: string
  private readonly timeoutMs: number
  private readonly inFlight = new Set<Exchange>()
  /** Gated exchanges by gate key, so that a revocation can re-check and cut them. */
  private readonly byKey = new Map<string, Set<Exchange>>()
  private readonly gateCounters: Record<GateResult, { inc(): void }>
  private readonly statusLines = new Map<number, string>()
  private closing = false
  private noHttp2LoggedAt = 0

  constructor(private readonly o: ActiveSyncOptions, private readonly d: ActiveSyncDeps) {
    this.metrics = activeSyncMetrics(d.registry, {
      inFlight: () => this.inFlight.size, gateEntries: () => this.gate.size, upstreamConnections: () => this.upstream.connections(),
    })
    const m = this.metrics
    this.gate = new ActiveSyncGate(
      { ttlMs: o.gateCacheSeconds * 1000, maxEntries: o.gateCacheMaxEntries ?? 100_000, graceMs: (o.outageGraceSeconds ?? 0) * 1000 },
      d.controlPlane,
      { hit: () => m.gateHits.inc(), miss: () => m.gateMisses.inc(), grace: () => m.gateGrace.inc() },
    )
    // Label children resolved once.
    this.gateCounters = Object.fromEntries((['allowed', 'unknown', 'locked', 'wiped', 'retired', 'identity_mismatch', 'unavailable'] as const)
      .map((r) => [r, m.gate.labels({ result: r })])) as Record<GateResult, { inc(): void }>
    this.origin = new URL(o.upstream).origin
    this.timeoutMs = o.maxHoldSeconds * 1000 + (o.holdMarginMs ?? 10_000)
    this.upstream = createExchangeUpstream({
      origin: this.origin,
      http2: o.upstreamHttp2 ?? false,
      ca: o.upstreamCa ? readFileSync(o.upstreamCa) : undefined,
      maxConnections: o.upstreamConnections ?? 10_000,
      maxStreams: o.upstreamMaxStreams ?? 100,
      wholeBodyMax: o.bodyHighWaterMark ?? 64 * 1024,
      onNoHttp2: () => {
        if (Date.now() - this.noHttp2LoggedAt < 60_000) return
        this.noHttp2LoggedAt = Date.now()
        d.log.warn({ event: 'activesync_no_http2' }, 'Exchange did not negotiate HTTP/2 (ALPN): requests fail with 502 while proxy.activeSync.upstreamHttp2 is on')
      },
    })
    for (const [code, text] of Object.entries(STATUS_CODES)) this.statusLines.set(Number(code), `${code} ${text}`)
    this.statusLines.set(PROVISION_REQUIRED, STATUS_449)
  }

  /** Register the path on the uWS app (before the catch-all route). */
  register(app: uws.TemplatedApp): void {
    app.any(this.o.path, (res, req) => this.onRequest(res, req))
  }

  private statusLine = (status: number, reason?: string): string =>
    reason ? `${status} ${reason}` : (this.statusLines.get(status) ?? String(status))

  private onRequest(res: uws.HttpResponse, req: uws.HttpRequest): void {
    const method = req.getCaseSensitiveMethod().toUpperCase()
    const query = req.getQuery() ?? ''
    const headers: [string, string][] = []
    req.forEach((k, v) => headers.push([k, v]))
    const x: Exchange = {
      res, method, command: method === 'OPTIONS' ? 'OPTIONS' : 'OTHER', label: method === 'OPTIONS' ? 'OPTIONS' : 'OTHER',
      started: performance.now(), aborted: false, finished: false, key: undefined, answer: undefined, body: null, relay: undefined, unread: true,
    }
    this.inFlight.add(x)
    res.onAborted(() => {
      x.aborted = true
      x.relay?.abort(new UnavailableError('client gone'))
      x.body?.destroy()
      this.finish(x, 499)
    })
    try {
      if (this.closing) throw new UnavailableError('shutting down')
      if (method !== 'POST' && method !== 'OPTIONS') throw new MethodNotAllowedError('use OPTIONS or POST')
      const header = (name: string) => headers.find(([k]) => k === name)?.[1]
      const declared = header('content-length')
      if (declared !== undefined) {
        if (!/^\d{1,15}$/.test(declared)) throw new MalformedError('bad Content-Length')
        if (Number(declared) > this.o.maxBodyBytes) throw new TooLargeError('body over the limit')
      }
      const remote = uws.remoteAddress(res)
      const hasBody = (declared !== undefined && declared !== '0') || header('transfer-encoding') !== undefined
      const fwdHeaders = forwardHeaders(headers, remote)
      if (declared !== undefined && hasBody) fwdHeaders['content-length'] = declared
      if (hasBody) {
        x.body = new RequestBody(res, {
          limit: this.o.maxBodyBytes,
          highWaterMark: this.o.bodyHighWaterMark ?? 64 * 1024,
          live: () => !x.aborted && !x.finished,
          onTooLarge: () => {
            x.relay?.abort(new TooLargeError('body over the limit'))
            x.body?.destroy()
            this.fail(x, new TooLargeError('body over the limit'))
          },
          onBytes: (n) => this.metrics.bytesIn.inc(n),
        })
      }
      res.onData((chunk, isLast) => {
        if (isLast) x.unread = false
        x.body?.push(chunk, isLast)
      })
      if (method === 'OPTIONS') {
        // OPTIONS is not gated: it must not carry anything for Exchange to act on.
        if (hasBody) throw new MalformedError('OPTIONS carries no body')
        this.forward(x, query, fwdHeaders)
        return
      }
      const q = parseActiveSyncQuery(query)
      x.command = q.command
      x.label = KNOWN_COMMANDS.has(q.command) ? q.command : 'OTHER'
      const key = this.identify(x, q.user, header('authorization'))
      if (key === undefined) return
      x.key = gateKey(key, q.deviceId)
      const cached = this.gate.peek(x.key)
      if (cached) {
        this.decide(x, cached, query, fwdHeaders)
        return
      }
      this.gate.check(x.key).then(
        (a) => this.decide(x, a, query, fwdHeaders),
        (err: unknown) => {
          this.gateCounters.unavailable.inc()
          this.fail(x, err instanceof GatehouseError ? err : new ControlPlaneUnavailableError('control plane unavailable'))
        },
      )
    } catch (err) {
      this.fail(x, err)
    }
  }

  /**
   * The user key the gate checks: the HTTP Basic user when there is one (it is who Exchange
   * signs in; the query's User must be the same person), else the query's User. Answers 401
   * itself and returns undefined when there is neither.
   */
  private identify(x: Exchange, queryUser: string | undefined, authorization: string | undefined): string | undefined {
    const basic = basicUser(authorization)
    if (basic === null) throw new MalformedError('malformed Basic credentials')
    if (authorization !== undefined && basic === undefined) {
      // Bearer, NTLM, Negotiate: the gate cannot tell whom Exchange will sign in, so it cannot
      // tie the request to the user whose device it checks. Ask for Basic credentials instead.
      this.challenge(x, 'only HTTP Basic credentials are accepted here')
      return undefined
    }
    const basicKey = basic === undefined ? undefined : activeSyncUserKey(basic)
    if (basic !== undefined && basicKey === undefined) throw new MalformedError('malformed Basic user name')
    const queryKey = queryUser === undefined ? undefined : activeSyncUserKey(queryUser)
    if (queryUser !== undefined && queryKey === undefined) throw new MalformedError('ActiveSync query: User must be a user name')
    if (basicKey !== undefined && queryKey !== undefined && basicKey !== queryKey) {
      this.gateCounters.identity_mismatch.inc()
      throw new IdentityMismatchError('the User of the query is not the user signing in')
    }
    const key = basicKey ?? queryKey
    if (key === undefined) {
      // Neither: nothing to gate on. Ask for credentials the way Exchange would.
      this.challenge(x, 'credentials required')
      return undefined
    }
    return key
  }

  private challenge(x: Exchange, message: string): void {
    this.answer(x, 401, errorBody(new AuthenticationError(message)), { 'www-authenticate': 'Basic realm="ActiveSync"' })
  }

  private decide(x: Exchange, a: GateAnswer, query: string, fwdHeaders: Record<string, string | string[]>): void {
    if (x.finished) return
    x.answer = a
    if (a.allowed) {
      this.gateCounters.allowed.inc()
      this.track(x)
      this.forward(x, query, fwdHeaders)
      return
    }
    this.gateCounters[a.state === 'active' ? 'unknown' : a.state].inc()
    this.d.log.info({ event: 'activesync_refused', state: a.state, command: x.label }, 'ActiveSync request refused by the gate')
    this.refuse(x, a.state)
  }

  /** Answer a refused device the way an Exchange front end would (docs/operations.md). */
  private refuse(x: Exchange, state: ActiveSyncDeviceState): void {
    x.relay?.abort(new DeviceBlockedError('device refused'))
    x.body?.destroy()
    if (state === 'wiped' && x.command !== 'Provision') {
      const err = new DeviceBlockedError('this device was wiped: provision again')
      this.answer(x, PROVISION_REQUIRED, errorBody(err))
      return
    }
    this.fail(x, state === 'unknown' || state === 'active'
      ? new DeviceNotEnrolledError('this device is not enrolled for this user')
      : new DeviceBlockedError(`this device is ${state}`))
  }

  private forward(x: Exchange, query: string, headers: Record<string, string | string[]>): void {
    if (x.finished) return
    const relay = new Relay(x.res, {
      gone: () => x.aborted || x.finished,
      started: () => undefined,
      finished: (status, bytes) => {
        this.metrics.bytesOut.inc(bytes)
        this.finish(x, status)
      },
      failed: (err) => this.fail(x, err),
      truncated: (err) => {
        this.d.log.warn({ event: 'activesync_truncated', command: x.label, code: (err as GatehouseError).code }, 'ActiveSync answer cut short')
        this.finish(x, 502)
      },
      upstreamError: (kind) => this.metrics.upstreamErrors.inc({ kind }),
    }, this.statusLine)
    x.relay = relay
    const length = headers['content-length']
    relay.start(this.upstream, {
      origin: this.origin, method: x.method, path: query ? `${this.o.path}?${query}` : this.o.path,
      headers, body: x.body, bodyLength: typeof length === 'string' ? Number(length) : undefined, timeoutMs: this.timeoutMs,
    })
  }

  private track(x: Exchange): void {
    let set = this.byKey.get(x.key!)
    if (!set) this.byKey.set(x.key!, (set = new Set()))
    set.add(x)
  }

  /** A pushed revocation: drop gate answers, re-check the devices of requests in flight, cut refused ones. */
  revoke(r: Revocation): void {
    this.gate.revoke(r)
    for (const [key, set] of this.byKey) {
      const any = set.values().next().value
      if (!any || !gateRevocationMatches(r, key, any.answer)) continue
      this.gate.check(key).then(
        (a) => {
          if (a.allowed) return
          for (const x of [...set]) {
            if (x.finished) continue
            this.metrics.cut.inc({ reason: 'revoked' })
            if (x.relay?.responding) {
              x.relay.abort(new DeviceBlockedError('device refused'))
              x.res.close()
            } else {
              this.refuse(x, a.state)
            }
          }
        },
        // The control plane is down: keep them (the same answer as for a new request's grace).
        () => undefined,
      )
    }
  }

  /** Drop every gate answer (the revocation stream cannot tell what was missed). */
  clearGate(): void {
    this.gate.clear()
  }

  /**
   * Stop taking requests; answer held Pings "heartbeat expired" at once; let the other requests
   * finish until `drainMs`, then cut them.
   */
  async drain(drainMs: number): Promise<void> {
    this.closing = true
    for (const x of this.inFlight) {
      if (x.command === 'Ping' && !x.finished && !x.aborted && !x.relay?.responding) {
        x.relay?.abort(new UnavailableError('shutting down'))
        x.body?.destroy()
        this.metrics.cut.inc({ reason: 'shutdown' })
        this.answer(x, 200, PING_HEARTBEAT_EXPIRED, { 'content-type': WBXML_TYPE })
      }
    }
    const deadline = Date.now() + drainMs
    while (this.inFlight.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    for (const x of [...this.inFlight]) {
      this.metrics.cut.inc({ reason: 'shutdown' })
      x.relay?.abort(new UnavailableError('shutting down'))
      if (!x.aborted && !x.finished) x.res.close()
    }
  }

  async close(): Promise<void> {
    this.closing = true
    await this.upstream.close()
  }

  private fail(x: Exchange, err: unknown): void {
    if (x.finished || x.aborted) return
    const status = statusOf(err)
    if (status >= 500 && !(err instanceof GatehouseError)) this.d.log.error({ err, command: x.label }, 'ActiveSync request failed')
    else this.d.log.debug({ code: (err as GatehouseError).code, status, command: x.label }, 'ActiveSync request refused')
    const extra: Record<string, string> = {}
    if (status === 503) extra['retry-after'] = '5'
    if (status === 405) extra.allow = 'OPTIONS, POST'
    this.answer(x, status, errorBody(err), extra)
  }

  /** Answer from the gateway itself (refusals, errors, the shutdown Ping answer). */
  private answer(x: Exchange, status: number, body: unknown, headers: Record<string, string> = {}): void {
    if (x.finished || x.aborted) return
    if (x.relay?.responding) {
      // Exchange's answer has started: it can only be cut.
      x.relay.abort(new UnavailableError('cut'))
      x.res.close()
      this.finish(x, status)
      return
    }
    const bytes = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body))
    // A body not read to its end cannot be skipped reliably: close after answering.
    const close = x.unread || (x.body !== null && !x.body.complete)
    x.res.cork(() => {
      x.res.writeStatus(this.statusLine(status))
      if (!headers['content-type']) x.res.writeHeader('content-type', 'application/json')
      for (const [k, v] of Object.entries(headers)) x.res.writeHeader(k, v)
      x.res.writeHeader('cache-control', 'private')
      x.res.end(bytes, close)
    })
    this.finish(x, status)
  }

  private finish(x: Exchange, status: number): void {
    if (x.finished) return
    x.finished = true
    this.inFlight.delete(x)
    if (x.key !== undefined) {
      const set = this.byKey.get(x.key)
      if (set?.delete(x) && set.size === 0) this.byKey.delete(x.key)
    }
    this.metrics.requests.inc({ command: x.label, status: String(status) })
    this.metrics.duration.observe({ command: x.label }, (performance.now() - x.started) / 1000)
    this.d.countRequest(x.method, status)
  }
}

/** The user of `Authorization: Basic …`: undefined without Basic credentials, null when malformed. */
export function basicUser(authorization: string | undefined): string | undefined | null {
  if (authorization === undefined || !/^basic\s/i.test(authorization)) return undefined
  const b64 = authorization.slice(6).trim()
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) return null
  const decoded = Buffer.from(b64, 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  return colon <= 0 ? null : decoded.slice(0, colon)
}

/** The client's end-to-end headers, plus X-Forwarded-For/Proto; Authorization passes untouched. */
function forwardHeaders(list: readonly [string, string][], remote: string): Record<string, string | string[]> {
  const drop = new Set(REQUEST_SKIP)
  for (const [k, v] of list) {
    // Headers the client lists in Connection are hop-by-hop too.
    if (k === 'connection') for (const t of v.split(',')) drop.add(t.trim().toLowerCase())
  }
  const out: Record<string, string | string[]> = {}
  for (const [k, v] of list) {
    if (drop.has(k) || k.startsWith('gatehouse-')) continue
    const prev = out[k]
    out[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v]
  }
  out['x-forwarded-for'] = remote
  out['x-forwarded-proto'] = 'https'
  return out
}
