/**
 * The proxy's follower of the security server's revocation log: one long-lived NDJSON stream
 * (GET /v1/revocations, see src/security/routes/revocationStream.ts) over the control plane's
 * mutually authenticated connection pool, to the first server of the ordered list that answers.
 *
 *   connect(since=last seq) ──200──▶ read lines ──▶ record: apply, remember seq
 *        ▲                    │                  └─▶ heartbeat: still there (and its seq)
 *        │                    └─410 (gap)──▶ clear the cache, follow from now on
 *        └── backoff 100 ms … 5 s, jittered ◀── stream ended, failed or silent too long
 *
 * The last seq survives reconnects, so records logged while disconnected are replayed by the
 * server. Without a seq (first connect, or after a gap) the proxy cannot know what it missed: it
 * clears its whole session cache, which is safe because entries are simply validated again.
 */
import { request, type Dispatcher } from 'undici'
import { TooLargeError } from '../errors.js'
import type { Logger } from '../observability/logger.js'
import { NdjsonLineReader } from './ndjsonLines.js'
import type { RevocationKind } from './sessionCache.js'

/** One revocation as the stream carries it. */
export interface RevocationLine {
  seq: number
  kind: RevocationKind
  target: string
  /** ms since epoch, when it was logged. */
  at: number
}

export interface RevocationFeedOptions {
  /** Proxy API base URLs, in order of preference. */
  servers: readonly string[]
  /** The control plane's mutual-TLS pool. */
  dispatcher: Dispatcher
  /** Time allowed for a server to answer the stream request with headers. */
  connectTimeoutMs: number
  /** Reconnect when no line (record or heartbeat) arrived for this long. */
  heartbeatTimeoutMs: number
  log: Logger
  apply(r: RevocationLine): void
  /** Drop every cached session: the proxy cannot know what it missed. */
  reset(reason: 'first_connect' | 'gap' | 'apply_failed'): void
  onState?(up: boolean): void
  /** Reconnect delays; default 100 ms doubling to 5 s. */
  backoff?: { initialMs: number; maxMs: number }
  /** Longest line accepted; default 64 KiB. */
  maxLineBytes?: number
}

const KINDS = new Set<string>(['session', 'enrollment', 'device', 'user', 'policy'])
const MAX_TARGET_LENGTH = 4096

type Parsed = { heartbeat: number } | { record: RevocationLine } | undefined

/** A record or a heartbeat, or undefined for anything else. */
export function parseRevocationLine(line: string): Parsed {
  let v: unknown
  try {
    v = JSON.parse(line)
  } catch {
    return undefined
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined
  const o = v as Record<string, unknown>
  if ('heartbeat' in o) return Number.isSafeInteger(o.heartbeat) && (o.heartbeat as number) >= 0 ? { heartbeat: o.heartbeat as number } : undefined
  const { seq, kind, target, at } = o
  if (!Number.isSafeInteger(seq) || (seq as number) < 1) return undefined
  if (typeof kind !== 'string' || !KINDS.has(kind)) return undefined
  if (typeof target !== 'string' || target.length > MAX_TARGET_LENGTH) return undefined
  if (typeof at !== 'number' || !Number.isFinite(at)) return undefined
  return { record: { seq: seq as number, kind: kind as RevocationKind, target, at } }
}

type Outcome = 'streamed' | 'unreachable' | 'gap'

export class RevocationFeed {
  /** Highest seq applied (or announced by a heartbeat); undefined until the first connect. */
  lastSeq: number | undefined
  connected = false
  private stopped = false
  private current: AbortController | undefined
  private wake: (() => void) | undefined
  private loop: Promise<void> | undefined
  /** Failures are logged once per outage, not once per attempt. */
  private quiet = false
  private firstAttempt: (() => void) | undefined

  constructor(private readonly o: RevocationFeedOptions) {}

  /** Start following; resolves after the first attempt (connected or not), at most `connectTimeoutMs` later. */
  start(): Promise<void> {
    if (this.loop) return Promise.resolve()
    const first = new Promise<void>((resolve) => { this.firstAttempt = resolve })
    this.loop = this.run()
    let timer: NodeJS.Timeout | undefined
    return Promise.race([first, new Promise<void>((resolve) => { timer = setTimeout(resolve, this.o.connectTimeoutMs) })])
      .finally(() => clearTimeout(timer))
  }

  async close(): Promise<void> {
    this.stopped = true
    this.current?.abort()
    this.wake?.()
    await this.loop
  }

  private async run(): Promise<void> {
    const { initialMs, maxMs } = this.o.backoff ?? { initialMs: 100, maxMs: 5000 }
    let delay = initialMs
    while (!this.stopped) {
      const outcome = await this.attempt()
      this.firstAttempt?.()
      this.firstAttempt = undefined
      if (this.stopped) break
      // A gap is answered by reconnecting from now on, at once.
      if (outcome === 'gap') continue
      if (outcome === 'streamed') delay = initialMs
      // Jitter in [delay/2, delay): proxies cut off together do not come back together.
      await this.sleep(delay / 2 + Math.random() * (delay / 2))
      if (outcome === 'unreachable') delay = Math.min(delay * 2, maxMs)
    }
  }

  /** Try the servers in order; follow the first that answers until its stream ends. */
  private async attempt(): Promise<Outcome> {
    for (const base of this.o.servers) {
      if (this.stopped) return 'streamed'
      const since = this.lastSeq
      const ac = new AbortController()
      this.current = ac
      let res: Dispatcher.ResponseData
      try {
        res = await request(`${base}/v1/revocations${since === undefined ? '' : `?since=${since}`}`, {
          dispatcher: this.o.dispatcher,
          signal: ac.signal,
          headersTimeout: this.o.connectTimeoutMs,
          // Silence is watched by the heartbeat timer below, not by undici.
          bodyTimeout: 0,
        })
      } catch (err) {
        this.failed(base, err)
        continue
      }
      if (res.statusCode === 410) {
        await res.body.dump().catch(() => undefined)
        this.o.log.warn({ event: 'revocation_gap', server: base, since }, 'revocation log does not reach back to our last seq: clearing the session cache')
        this.lastSeq = undefined
        this.o.reset('gap')
        return 'gap'
      }
      if (res.statusCode !== 200) {
        await res.body.dump().catch(() => undefined)
        this.failed(base, new Error(`status ${res.statusCode}`))
        continue
      }
      if (since === undefined) this.o.reset('first_connect')
      this.setConnected(true)
      this.quiet = false
      this.firstAttempt?.()
      this.firstAttempt = undefined
      this.o.log.info({ event: 'revocation_stream_connected', server: base, since: since ?? null }, 'following the revocation log')
      const why = await this.follow(res.body, ac)
      this.setConnected(false)
      if (!this.stopped) this.o.log.warn({ event: 'revocation_stream_lost', server: base, reason: why, lastSeq: this.lastSeq ?? null }, 'revocation stream lost; reconnecting')
      return 'streamed'
    }
    return 'unreachable'
  }

  /** Read lines until the stream ends; returns why it ended. */
  private async follow(body: Dispatcher.ResponseData['body'], ac: AbortController): Promise<string> {
    const reader = new NdjsonLineReader(this.o.maxLineBytes ?? 64 * 1024)
    let why = 'ended by the server'
    const silence = setTimeout(() => {
      why = 'no heartbeat'
      ac.abort()
    }, this.o.heartbeatTimeoutMs)
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        for (const line of reader.push(chunk)) {
          silence.refresh()
          this.onLine(line)
        }
      }
    } catch (err) {
      if (err instanceof TooLargeError) {
        why = 'line too long'
        ac.abort()
      } else if (why === 'ended by the server') {
        why = this.stopped ? 'closing' : 'connection failed'
      }
    } finally {
      clearTimeout(silence)
      body.destroy()
    }
    return why
  }

  private onLine(line: string): void {
    const p = parseRevocationLine(line)
    if (!p) {
      // Never logged verbatim: a line could carry anything.
      this.o.log.warn({ event: 'revocation_line_ignored', bytes: Buffer.byteLength(line) }, 'ignored a line of the revocation stream that is not a record or heartbeat')
      return
    }
    if ('heartbeat' in p) {
      if (this.lastSeq === undefined || p.heartbeat > this.lastSeq) this.lastSeq = p.heartbeat
      return
    }
    const r = p.record
    if (this.lastSeq !== undefined && r.seq <= this.lastSeq) return
    try {
      this.o.apply(r)
    } catch (err) {
      // Cannot tell what stayed cached: drop everything (entries are validated again).
      this.o.log.error({ err, seq: r.seq, kind: r.kind }, 'applying a revocation failed: clearing the session cache')
      this.o.reset('apply_failed')
    }
    this.lastSeq = r.seq
  }

  private failed(server: string, err: unknown): void {
    if (this.stopped) return
    const code = (err as { code?: string }).code
    const message = err instanceof Error ? err.message : String(err)
    if (this.quiet) this.o.log.debug({ event: 'revocation_stream_unavailable', server, code, message }, 'revocation stream unavailable')
    else this.o.log.warn({ event: 'revocation_stream_unavailable', server, code, message }, 'revocation stream unavailable; retrying with backoff')
    if (server === this.o.servers[this.o.servers.length - 1]) this.quiet = true
  }

  private setConnected(up: boolean): void {
    this.connected = up
    this.o.onState?.(up)
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.wake = undefined; resolve() }, ms)
      this.wake = () => { clearTimeout(timer); this.wake = undefined; resolve() }
    })
  }
}
