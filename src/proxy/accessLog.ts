/**
 * The access log: one pino JSON line per proxied request, at info, on the proxy's log
 * (`proxy.accessLog`, default on):
 *
 *   {"level":"info","time":"…","event":"access","route":"/mail/","method":"POST","status":200,
 *    "durationMs":12.3,"bytesIn":1480,"bytesOut":2210,"remote":"203.0.113.7","upstreamMs":9.8,
 *    "msg":"request"}
 *
 * Never the session id, the path or query string (either may carry secrets or personal data), or
 * any header: the route label is the configured prefix. The child logger is bound once (pino
 * serializes its bindings at creation), without the logger's redaction: every field is one of
 * the fixed ones below, set by the proxy, none can hold a secret, and redaction (fast-redact,
 * wildcard paths) was 80 % of the line's cost: 22 µs → 4.5 µs per line to /dev/null, measured
 * with `node` on the 2-core VM of docs/performance.md.
 */
import type { Logger } from '../observability/logger.js'

export interface AccessEntry {
  /** Route prefix, or "unmatched". */
  route: string
  /** A known method, or "OTHER". */
  method: string
  status: number
  durationMs: number
  /** Request body bytes received (the envelope as sent). */
  bytesIn: number
  /** Response bytes sent (the envelope, or the error body). */
  bytesOut: number
  remote: string
  /** Time to the upstream's answer headers; absent when the request never reached an upstream. */
  upstreamMs: number | undefined
}

/** Milliseconds with one decimal: enough for a log, shorter lines. */
export function ms(value: number): number {
  return Math.round(value * 10) / 10
}

export class AccessLog {
  private log: Logger | undefined

  constructor(private readonly parent: Logger, enabled: boolean) {
    this.log = enabled ? AccessLog.child(parent) : undefined
  }

  private static child(parent: Logger): Logger {
    return parent.child({ event: 'access' }, { redact: [] })
  }

  /** Turn it on or off (a reload); the child logger is made once per change, not per line. */
  set enabled(on: boolean) {
    if (on === (this.log !== undefined)) return
    this.log = on ? AccessLog.child(this.parent) : undefined
  }

  /** Whether a line would be written: off, or the level above info, costs one check per request. */
  get enabled(): boolean {
    return this.log !== undefined && this.log.isLevelEnabled('info')
  }

  write(e: AccessEntry): void {
    this.log?.info(e, 'request')
  }
}
