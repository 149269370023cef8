/**
 * The proxy's client for the security server's proxy API: mutually authenticated TLS (our client
 * certificate, their CA), keep-alive, an ordered list of servers tried in turn.
 *
 * Answers: a grant (valid session), `undefined` (the server says the session is not valid), or
 * ControlPlaneUnavailableError when no server could answer — which the proxy turns into 503 for
 * sessions it has not cached, never 401 (a 401 makes a device drop its session).
 */
import { Agent, request } from 'undici'
import { ControlPlaneUnavailableError } from '../errors.js'

export interface SessionGrant {
  userName: string
  deviceId: string
  appId: string
  appVersion: string
  c2sKey: string
  s2cKey: string
  expiresAt: number
  idleTimeoutMs: number
}

export interface ControlPlaneOptions {
  servers: readonly string[]
  tls: { cert: Buffer; key: Buffer; ca: Buffer }
  timeoutMs: number
}

export class ControlPlaneClient {
  private readonly agent: Agent
  /** Index of the server that answered last; tried first next time. */
  private preferred = 0
  connected = false

  constructor(private readonly o: ControlPlaneOptions) {
    this.agent = new Agent({
      connect: { cert: o.tls.cert, key: o.tls.key, ca: o.tls.ca, timeout: o.timeoutMs },
      keepAliveTimeout: 30_000,
      connections: 32,
      headersTimeout: o.timeoutMs,
      bodyTimeout: o.timeoutMs,
    })
  }

  async validate(sessionId: string): Promise<SessionGrant | undefined> {
    const n = this.o.servers.length
    for (let i = 0; i < n; i++) {
      const idx = (this.preferred + i) % n
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

  close(): Promise<void> {
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
  const strs = ['userName', 'deviceId', 'appId', 'appVersion', 'c2sKey', 's2cKey'] as const
  for (const k of strs) if (typeof s[k] !== 'string') return undefined
  if (typeof s.expiresAt !== 'number' || typeof s.idleTimeoutMs !== 'number') return undefined
  return s as unknown as SessionGrant
}
