/**
 * The proxy's client for the security server's proxy API: mutually authenticated TLS (our client
 * certificate, their CA), keep-alive, an ordered list of servers tried in turn.
 *
 * Answers: a grant (valid session), `undefined` (the server says the session is not valid), or
 * ControlPlaneUnavailableError when no server could answer — which the proxy turns into 503 for
 * sessions it has not cached, never 401 (a 401 makes a device drop its session).
 */
import { Agent, request, type Dispatcher } from 'undici'
import { ControlPlaneUnavailableError } from '../errors.js'
import { ACTIVESYNC_DEVICE_STATES, type ActiveSyncCheckAnswer, type ActiveSyncDeviceState } from '../protocol/activeSyncIdentity.js'
import { isGrantAppContext, type GrantAppContext } from './appContext.js'

export interface SessionGrant {
  enrollmentId: string
  userName: string
  deviceId: string
  appId: string
  appVersion: string
  c2sKey: string
  s2cKey: string
  expiresAt: number
  idleTimeoutMs: number
  /** Routes the app may reach and whether its version is allowed (absent from servers without a catalog: everything). */
  appContext?: GrantAppContext
}

export interface ControlPlaneOptions {
  servers: readonly string[]
  tls: { cert: Buffer; key: Buffer; ca: Buffer }
  timeoutMs: number
  /** Active health checks of every server (GET /v1/health); 0 = none. */
  healthCheckIntervalMs?: number
}

export class ControlPlaneClient {
  private readonly agent: Agent
  /** Index of the server that answered last; tried first next time. */
  private preferred = 0
  /** Health of each server from the last check (all presumed healthy until checked). */
  private readonly healthy: boolean[]
  private healthTimer: NodeJS.Timeout | undefined
  connected = false

  constructor(private readonly o: ControlPlaneOptions) {
    this.agent = new Agent({
      connect: { cert: o.tls.cert, key: o.tls.key, ca: o.tls.ca, timeout: o.timeoutMs },
      keepAliveTimeout: 30_000,
      connections: 32,
      headersTimeout: o.timeoutMs,
      bodyTimeout: o.timeoutMs,
    })
    this.healthy = o.servers.map(() => true)
    if (o.healthCheckIntervalMs && o.healthCheckIntervalMs > 0) {
      this.healthTimer = setInterval(() => void this.checkHealth(), o.healthCheckIntervalMs)
      this.healthTimer.unref()
    }
  }

  /** Servers that passed their last health check. */
  get healthyCount(): number {
    return this.healthy.filter(Boolean).length
  }

  /**
   * Ask every server GET /v1/health (it answers 200 only when its database answers too). Healthy
   * servers are tried first, in configured order, so a dead primary costs no timeout per request.
   */
  async checkHealth(): Promise<void> {
    await Promise.all(this.o.servers.map(async (base, i) => {
      try {
        const res = await request(`${base}/v1/health`, { dispatcher: this.agent, signal: AbortSignal.timeout(this.o.timeoutMs) })
        await res.body.dump()
        this.healthy[i] = res.statusCode === 200
      } catch {
        this.healthy[i] = false
      }
    }))
    if (this.healthyCount > 0) this.connected = true
  }

  /** Order in which to try the servers: the preferred one, then the healthy ones, then the rest. */
  private order(): number[] {
    const n = this.o.servers.length
    const all = Array.from({ length: n }, (_, i) => (this.preferred + i) % n)
    return [...all.filter((i) => this.healthy[i]), ...all.filter((i) => !this.healthy[i])]
  }

  async validate(sessionId: string): Promise<SessionGrant | undefined> {
    for (const idx of this.order()) {
      const base = this.o.servers[idx]!
      try {
        const res = await request(`${base}/v1/sessions/validate`, {
          method: 'POST',
          dispatcher: this.agent,
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ sessionId }),
          signal: AbortSignal.timeout(this.o.timeoutMs),
        })
        const text = await res.body.text()
        if (res.statusCode === 200) {
          const grant = parseGrant(text)
          if (!grant) throw new Error('malformed validation answer')
          this.preferred = idx
          this.connected = true
          return grant
        }
        if (res.statusCode === 401 || res.statusCode === 400) {
          this.preferred = idx
          this.connected = true
          return undefined
        }
        // 5xx: this server cannot answer now; try the next one.
      } catch {
        // Connection refused, TLS failure or timeout: try the next server.
      }
    }
    this.connected = false
    throw new ControlPlaneUnavailableError('control plane unavailable')
  }

  /**
   * The ActiveSync gate's question (POST /v1/activesync/check): may this user's device reach
   * Exchange? Same failover as validate(); ControlPlaneUnavailableError when no server answers.
   */
  async activeSyncCheck(user: string, deviceId: string): Promise<ActiveSyncCheckAnswer> {
    for (const idx of this.order()) {
      try {
        const res = await request(`${this.o.servers[idx]!}/v1/activesync/check`, {
          method: 'POST',
          dispatcher: this.agent,
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ user, deviceId }),
          signal: AbortSignal.timeout(this.o.timeoutMs),
        })
        const text = await res.body.text()
        if (res.statusCode === 200) {
          const answer = parseCheckAnswer(text)
          if (!answer) throw new Error('malformed check answer')
          this.preferred = idx
          this.connected = true
          return answer
        }
        // 400: the server refuses the question itself (a name it cannot take): not allowed.
        if (res.statusCode === 400) {
          this.preferred = idx
          this.connected = true
          return { allowed: false, state: 'unknown', enrollmentIds: [] }
        }
      } catch {
        // Connection refused, TLS failure, timeout or a malformed answer: try the next server.
      }
    }
    this.connected = false
    throw new ControlPlaneUnavailableError('control plane unavailable')
  }

  /** The mutually authenticated connection pool, shared with the revocation feed (one TLS setup). */
  get dispatcher(): Dispatcher {
    return this.agent
  }

  close(): Promise<void> {
    clearInterval(this.healthTimer)
    return this.agent.close()
  }
}

function parseGrant(text: string): SessionGrant | undefined {
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch {
    return undefined
  }
  const s = (v as { session?: Record<string, unknown> } | null)?.session
  if (!s || typeof s !== 'object') return undefined
  const strs = ['enrollmentId', 'userName', 'deviceId', 'appId', 'appVersion', 'c2sKey', 's2cKey'] as const
  for (const k of strs) if (typeof s[k] !== 'string') return undefined
  if (typeof s.expiresAt !== 'number' || typeof s.idleTimeoutMs !== 'number') return undefined
  if (s.appContext !== undefined && !isGrantAppContext(s.appContext)) return undefined
  return s as unknown as SessionGrant
}

function parseCheckAnswer(text: string): ActiveSyncCheckAnswer | undefined {
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch {
    return undefined
  }
  if (!v || typeof v !== 'object') return undefined
  const { allowed, state, enrollmentIds } = v as Record<string, unknown>
  if (typeof allowed !== 'boolean' || !ACTIVESYNC_DEVICE_STATES.includes(state as ActiveSyncDeviceState)) return undefined
  if (!Array.isArray(enrollmentIds) || !enrollmentIds.every((e) => typeof e === 'string')) return undefined
  // Allowed only ever together with the active state: anything else is a refusal.
  return { allowed: allowed && state === 'active', state: state as ActiveSyncDeviceState, enrollmentIds: enrollmentIds as string[] }
}
