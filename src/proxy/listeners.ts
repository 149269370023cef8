/**
 * The device listener's uWebSockets.js apps. A reload replaces the certificates without dropping
 * a connection:
 *
 *   open():    app#1 (cert A) ── listen :9443
 *   replace(): app#2 (cert B) ── listen :9443 too (SO_REUSEPORT) ── close app#1's listen socket
 *              new connections ─▶ app#2; connections already on app#1 go on there (cert A was
 *              only used for their handshake), with the new routes and limits
 *   sweep():   app#1 closes once it has no request in flight and none started for idleCloseMs
 *              (by then uWS's own 8–12 s idle timeout closed every connection it had)
 *
 * Verified with this uWS build: both apps listen on one explicit port in one thread, new
 * connections go to the newest listen socket once the old one is closed, an established
 * connection keeps working on the old app, and app.close() ends the connections of that app only.
 */
import type { Logger } from '../observability/logger.js'
import type { ListenerTls } from './certCheck.js'
import * as uws from './uws.js'

export interface ListenerSpec {
  host: string
  port: number
  tls: ListenerTls
}

/** One uWS app: its listen socket while it accepts, what it serves. */
export class Listener {
  socket: uws.ListenSocket | undefined
  /** Requests admitted on this app and not finished (maintained by the server). */
  inflight = 0
  /** When the last request started on this app (performance.now()). */
  lastRequestAt = performance.now()
  retiredAt: number | undefined

  constructor(readonly id: number, readonly app: uws.TemplatedApp, readonly tls: ListenerTls) {}
}

/**
 * Registers the handlers of one router of `app` (the default one, then one per SNI name); every
 * handler must call `touch()` when a request starts (see touching()).
 */
export type AttachRoutes = (app: uws.TemplatedApp, listener: Listener) => void

/**
 * `app` whose `any()` handlers first record the request start on `l`: for route modules that
 * register their own handlers (the ActiveSync gateway), so that an old app is not closed under
 * a request they serve. Used at registration only, never per request.
 */
export function touching(app: uws.TemplatedApp, l: Listener): uws.TemplatedApp {
  return new Proxy(app, {
    get(target, prop) {
      if (prop === 'any') {
        return (pattern: string, handler: (res: uws.HttpResponse, req: uws.HttpRequest) => void) => {
          target.any(pattern, (res, req) => {
            l.lastRequestAt = performance.now()
            handler(res, req)
          })
          return target
        }
      }
      const v = Reflect.get(target, prop) as unknown
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
    },
  })
}

export class Listeners {
  private current: Listener | undefined
  private readonly retired = new Set<Listener>()
  private timer: NodeJS.Timeout | undefined
  private nextId = 1
  private host = ''
  port = 0

  constructor(private readonly o: {
    attach: AttachRoutes
    log: Logger
    /** A retired app closes when idle this long (≥ uWS's 12 s idle timeout, plus any long poll). */
    idleCloseMs: () => number
  }) {}

  /** Listen on the configured address (port 0: a free port, bound explicitly). */
  async open(spec: ListenerSpec): Promise<number> {
    const l = this.build(spec.tls)
    try {
      const { socket, port } = await uws.listen(l.app, spec.host, spec.port)
      l.socket = socket
      this.host = spec.host
      this.port = port
    } catch (err) {
      uws.closeApp(l.app)
      throw err
    }
    this.current = l
    this.timer ??= setInterval(() => this.sweep(performance.now()), 1000).unref()
    return this.port
  }

  /**
   * A new app with `tls` on the same address; the old one stops accepting and is retired. On
   * failure (the new app cannot listen) nothing changes and the error is thrown.
   */
  async replace(tls: ListenerTls): Promise<Listener> {
    const old = this.current
    if (!old?.socket) throw new Error('the device listener is not open')
    const l = this.build(tls)
    try {
      l.socket = (await uws.listen(l.app, this.host, this.port)).socket
    } catch (err) {
      uws.closeApp(l.app)
      throw err
    }
    // The new socket is listening: closing the old one loses no connection attempt.
    uws.closeListenSocket(old.socket)
    old.socket = undefined
    old.retiredAt = performance.now()
    this.retired.add(old)
    this.current = l
    this.o.log.debug({ event: 'listener_replaced', listener: l.id, retired: old.id }, 'device listener replaced')
    return l
  }

  private build(tls: ListenerTls): Listener {
    const app = uws.createTlsApp(tls)
    const l = new Listener(this.nextId++, app, tls)
    try {
      this.o.attach(app, l)
      for (const s of tls.sni ?? []) this.o.attach(uws.addServerName(app, s.serverName, s), l)
    } catch (err) {
      uws.closeApp(app)
      throw err
    }
    return l
  }

  /** Accepting new connections (the newest app has its listen socket). */
  get accepting(): boolean {
    return this.current?.socket !== undefined
  }

  /** Apps open: the accepting one and those retired by a reload, still serving their connections. */
  get count(): number {
    return (this.current ? 1 : 0) + this.retired.size
  }

  get active(): Listener | undefined {
    return this.current
  }

  /** Stop accepting (drain): new connections are refused, established ones go on. */
  stopAccepting(): void {
    const l = this.current
    if (l?.socket) {
      uws.closeListenSocket(l.socket)
      l.socket = undefined
    }
  }

  /** Close the retired apps that have nothing left to serve (called every second). */
  sweep(now: number): void {
    const idleMs = this.o.idleCloseMs()
    for (const l of this.retired) {
      if (l.inflight === 0 && now - l.lastRequestAt >= idleMs) {
        this.retired.delete(l)
        uws.closeApp(l.app)
        this.o.log.debug({ event: 'listener_closed', listener: l.id }, 'retired device listener closed')
      }
    }
  }

  /** Close every app and its connections (end of the drain). */
  closeAll(): void {
    clearInterval(this.timer)
    this.timer = undefined
    this.stopAccepting()
    for (const l of [...this.retired, ...(this.current ? [this.current] : [])]) uws.closeApp(l.app)
    this.retired.clear()
    this.current = undefined
  }
}
