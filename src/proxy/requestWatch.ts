/**
 * Watches every request of the device listener from outside the request path (server.ts calls
 * it at five points: admission, start, body bytes, answer bytes and upstream time, end):
 *
 *   admit()  header block over maxHeaderBytes ─▶ 431 ┐ answered here, counted in requests_total,
 *            maxConcurrentRequests in flight ─▶ 503 ┘ the access log and a limit counter; closed
 *   start()  noted (InFlight): listener, client address, body progress
 *   sweep    no body byte for bodyTimeoutSeconds ─▶ server's bodyTimedOut(x): 408, upstream aborted
 *   end()    one access-log line; the listener's count of requests in flight
 */
import { STATUS_CODES } from 'node:http'
import { errorBody, type GatehouseError } from '../errors.js'
import type { Logger } from '../observability/logger.js'
import { AccessLog, ms } from './accessLog.js'
import { InFlight, type BodyState } from './inFlight.js'
import type { LifecycleMetrics } from './lifecycleMetrics.js'
import { admissionError, withDefaults, type ProxyLimits } from './limits.js'
import type { Listener } from './listeners.js'
import { KNOWN_METHODS, type ProxyMetrics } from './metrics.js'
import * as uws from './uws.js'

/** What the watch reads of a request (server.ts Exchange). */
export interface Watched extends BodyState {
  readonly res: uws.HttpResponse
  readonly method: string
  readonly routeLabel: string
  readonly started: number
  /** Client address; set here when the access log read it already (one native call less). */
  remote: string
}

const JSON_TYPE = 'application/json'

export class RequestWatch<X extends Watched> {
  limits: Required<ProxyLimits>
  readonly accessLog: AccessLog
  private readonly inFlight: InFlight<X>
  /** The listener and client address of the request being admitted, for start(). */
  private admitting: { listener: Listener; remote: string } | undefined

  constructor(private readonly o: {
    limits: ProxyLimits
    accessLog: boolean
    log: Logger
    metrics: Pick<ProxyMetrics, 'requests'>
    life: LifecycleMetrics
    /** Route label of a path (for requests refused before the request path). */
    routeOf: (path: string) => string
    bodyTimedOut: (x: X) => void
  }) {
    this.limits = withDefaults(o.limits)
    this.accessLog = new AccessLog(o.log, o.accessLog)
    this.inFlight = new InFlight<X>({
      bodyTimeoutMs: () => this.limits.bodyTimeoutSeconds * 1000,
      bodyTimedOut: (x) => {
        o.life.bodyTimeout.inc()
        o.bodyTimedOut(x)
      },
    })
  }

  start(): void {
    this.inFlight.start()
  }

  close(): void {
    this.inFlight.close()
  }

  /** Apply reloaded limits and access-log setting to the requests that start from now on. */
  update(limits: ProxyLimits, accessLog: boolean): void {
    this.limits = withDefaults(limits)
    this.accessLog.enabled = accessLog
  }

  /**
   * Check the limits that apply before the request path; answer and return false when one is
   * exceeded, else remember `listener` for start() and return true.
   */
  admit(res: uws.HttpResponse, req: uws.HttpRequest, listener: Listener, inflight: number): boolean {
    const started = performance.now()
    listener.lastRequestAt = started
    const remote = this.accessLog.enabled ? uws.remoteAddress(res) : ''
    const method = req.getCaseSensitiveMethod().toUpperCase()
    const url = req.getUrl()
    const err = admissionError(this.limits, inflight, req, method, url, req.getQuery() ?? '')
    if (!err) {
      this.admitting = { listener, remote }
      return true
    }
    if (err.status === 503) this.o.life.overflow.inc()
    else this.o.life.headerBytes.inc()
    this.refuse(res, err)
    const route = this.o.routeOf(url)
    const m = KNOWN_METHODS.has(method) ? method : 'OTHER'
    this.o.metrics.requests.inc({ route, method: m, status: String(err.status) })
    if (this.accessLog.enabled) {
      this.accessLog.write({ route, method: m, status: err.status, durationMs: ms(performance.now() - started), bytesIn: 0, bytesOut: 0, remote, upstreamMs: undefined })
    }
    return false
  }

  /** Answer a refusal at once and close the connection: its body, if any, is not read. */
  private refuse(res: uws.HttpResponse, err: GatehouseError): void {
    const body = JSON.stringify(errorBody(err))
    res.cork(() => {
      res.writeStatus(`${err.status} ${STATUS_CODES[err.status] ?? ''}`).writeHeader('content-type', JSON_TYPE)
      if (err.status === 503) res.writeHeader('retry-after', '1')
      res.end(body, true)
    })
  }

  /** A request entered the request path (called from the handler admit() let through). */
  begin(x: X): void {
    const a = this.admitting
    this.admitting = undefined
    if (a?.remote) x.remote = a.remote
    this.inFlight.add(x, a?.remote ?? '', a?.listener)
  }

  body(x: X, n: number): void {
    this.inFlight.body(x, n)
  }

  sent(x: X, n: number): void {
    this.inFlight.sent(x, n)
  }

  upstream(x: X, msSpent: number): void {
    this.inFlight.upstream(x, msSpent)
  }

  end(x: X, status: number): void {
    const note = this.inFlight.end(x)
    if (!note || !this.accessLog.enabled) return
    this.accessLog.write({
      route: x.routeLabel, method: KNOWN_METHODS.has(x.method) ? x.method : 'OTHER', status,
      durationMs: ms(performance.now() - x.started), bytesIn: note.bytesIn, bytesOut: note.bytesOut,
      remote: note.remote || x.remote, upstreamMs: note.upstreamMs === undefined ? undefined : ms(note.upstreamMs),
    })
  }

  /** Requests noted in flight (tests). */
  get size(): number {
    return this.inFlight.size
  }
}
