/**
 * The device SDK: what an app links to enroll, open sessions and send requests through the proxy.
 *
 *   const device = new GatehouseDevice({ securityUrl, ca, appId, appVersion, deviceId })
 *   await device.enroll('alice', password)          // once: per-app shared key
 *   const res = await device.request('GET', '/mail/inbox')   // opens a session when needed
 *
 * Sessions are re-opened transparently when the proxy answers 401 (expired or revoked session).
 * The enrollment (which holds the shared key) can be saved with `enrollmentState` and restored.
 */
import { randomBytes } from 'node:crypto'
import { Agent, request, type Dispatcher } from 'undici'
import { fromBase64url } from '../protocol/bytes.js'
import { ENVELOPE_MEDIA_TYPE, NONCE_BYTES, SESSION_HEADER } from '../protocol/constants.js'
import { EnvelopeDecoder, EnvelopeEncoder } from '../protocol/envelope.js'
import { decodeResponseHead, encodeRequestHead, type HeaderList } from '../protocol/head.js'
import {
  deriveSessionKeys, deriveSharedKey, ecdhSecret, enrollConfirmation, generateEcdhKeyPair, safeEqual,
  sessionAcceptProof, sessionCloseProof, sessionOpenProof,
} from '../protocol/keySchedule.js'

/** An error answered by a Gatehouse server: status and stable code. */
export class GatehouseClientError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(`${status} ${code}: ${message}`)
    this.name = 'GatehouseClientError'
  }
}

export interface EnrollmentState {
  version: 1
  enrollmentId: string
  /** base64 — keep it secret (the CLI stores it in a mode 0600 file). */
  sharedKey: string
  appId: string
  appVersion: string
  deviceId: string
  userName: string
  proxyUrl: string
}

export interface DeviceOptions {
  /** Device API base URL of the security server, e.g. https://localhost:8443 */
  securityUrl: string
  /** CA certificate(s) to trust (PEM); default the system store. */
  ca?: string | Buffer
  appId: string
  appVersion: string
  deviceId: string
  /** Override the proxy URL the security server tells us (tests, benchmarks). */
  proxyUrl?: string
  enrollment?: EnrollmentState
  /** Connections per origin (the simulator raises it for load). */
  connections?: number
}

export interface DeviceResponse {
  status: number
  headers: HeaderList
  body: Buffer
  /** Convenience: first value of a header. */
  header(name: string): string | undefined
  text(): string
  json(): unknown
}

interface Session {
  sessionId: string
  c2s: Buffer
  s2c: Buffer
  seq: number
  /** ms to add to our clock to get the server's. */
  clockOffset: number
  expiresAt: number
}

export class GatehouseDevice {
  private readonly agent: Agent
  private enrollment: EnrollmentState | undefined
  private session: Session | undefined
  private opening: Promise<Session> | undefined

  constructor(private readonly o: DeviceOptions) {
    this.agent = new Agent({ connect: o.ca ? { ca: o.ca } : {}, connections: o.connections ?? 8, keepAliveTimeout: 30_000 })
    this.enrollment = o.enrollment
  }

  get enrollmentState(): EnrollmentState | undefined {
    return this.enrollment
  }

  get sessionId(): string | undefined {
    return this.session?.sessionId
  }

  private get proxyUrl(): string {
    return (this.o.proxyUrl ?? this.enrollment?.proxyUrl ?? '').replace(/\/+$/, '')
  }

  async enroll(user: string, password: string): Promise<EnrollmentState> {
    const eph = generateEcdhKeyPair()
    const body = await this.postJson('/v1/enroll', {
      user, password, appId: this.o.appId, appVersion: this.o.appVersion, deviceId: this.o.deviceId,
      devicePublicKey: eph.publicKey.toString('base64url'),
    }) as Record<string, unknown>
    const serverPublicKey = fromBase64url(body.serverPublicKey, 65)
    const salt = fromBase64url(body.salt, 32)
    const confirmation = fromBase64url(body.confirmation, 32)
    if (!serverPublicKey || !salt || !confirmation || typeof body.enrollmentId !== 'string' || typeof body.proxyUrl !== 'string') {
      throw new GatehouseClientError(0, 'GH_CLIENT_BAD_ANSWER', 'malformed enrollment answer')
    }
    const z = ecdhSecret(eph.privateKey, serverPublicKey)
    const sharedKey = deriveSharedKey(z, { appId: this.o.appId, deviceId: this.o.deviceId, devicePublicKey: eph.publicKey, serverPublicKey, salt })
    if (!safeEqual(enrollConfirmation(sharedKey, body.enrollmentId), confirmation)) {
      throw new GatehouseClientError(0, 'GH_CLIENT_KEY_CONFIRMATION', 'the server did not prove the shared key')
    }
    this.enrollment = {
      version: 1, enrollmentId: body.enrollmentId, sharedKey: sharedKey.toString('base64'), appId: this.o.appId,
      appVersion: this.o.appVersion, deviceId: this.o.deviceId, userName: user, proxyUrl: body.proxyUrl,
    }
    this.session = undefined
    return this.enrollment
  }

  /** Open a session (proof of possession of the shared key). Concurrent callers share one open. */
  openSession(): Promise<Session> {
    this.opening ??= this.doOpen().finally(() => { this.opening = undefined })
    return this.opening
  }

  private async doOpen(): Promise<Session> {
    const e = this.enrollment
    if (!e) throw new GatehouseClientError(0, 'GH_CLIENT_NOT_ENROLLED', 'enroll first')
    const sharedKey = Buffer.from(e.sharedKey, 'base64')
    const nonce = randomBytes(NONCE_BYTES)
    const timestamp = Date.now() + (this.session?.clockOffset ?? 0)
    const body = await this.postJson('/v1/sessions', {
      enrollmentId: e.enrollmentId, timestamp, nonce: nonce.toString('base64url'),
      proof: sessionOpenProof(sharedKey, e.enrollmentId, timestamp, nonce).toString('base64url'),
    }) as Record<string, unknown>
    const serverNonce = fromBase64url(body.serverNonce, NONCE_BYTES)
    const proof = fromBase64url(body.proof, 32)
    const sessionId = body.sessionId
    if (typeof sessionId !== 'string' || !serverNonce || !proof || typeof body.serverTime !== 'number') {
      throw new GatehouseClientError(0, 'GH_CLIENT_BAD_ANSWER', 'malformed session answer')
    }
    if (!safeEqual(sessionAcceptProof(sharedKey, sessionId, nonce, serverNonce), proof)) {
      throw new GatehouseClientError(0, 'GH_CLIENT_SERVER_PROOF', 'the server did not prove the shared key')
    }
    const keys = deriveSessionKeys(sharedKey, sessionId, nonce, serverNonce)
    this.session = {
      sessionId, c2s: keys.c2s, s2c: keys.s2c, seq: 0, clockOffset: body.serverTime - Date.now(),
      expiresAt: typeof body.expiresAt === 'number' ? body.expiresAt : 0,
    }
    if (typeof body.proxyUrl === 'string' && this.enrollment) this.enrollment.proxyUrl = body.proxyUrl
    return this.session
  }

  async closeSession(): Promise<void> {
    const s = this.session
    if (!s) return
    this.session = undefined
    const timestamp = Date.now() + s.clockOffset
    await this.postJson('/v1/sessions/close', {
      sessionId: s.sessionId, timestamp, proof: sessionCloseProof(s.c2s, s.sessionId, timestamp).toString('base64url'),
    })
  }

  /**
   * Send a request through the proxy. `path` may carry a query. Re-opens the session once on 401.
   */
  async request(method: string, path: string, opts: { headers?: HeaderList; body?: Buffer | string } = {}): Promise<DeviceResponse> {
    let s = this.session ?? await this.openSession()
    try {
      return await this.send(s, method, path, opts)
    } catch (err) {
      if (!(err instanceof GatehouseClientError) || err.status !== 401) throw err
      if (this.session === s) this.session = undefined
      s = this.session ?? await this.openSession()
      return this.send(s, method, path, opts)
    }
  }

  /** Build the sealed request bytes (exposed for tests and the simulator's hostile modes). */
  seal(s: { sessionId: string; c2s: Buffer }, seq: number, timestampMs: number, requestLine: string, opts: { headers?: HeaderList; body?: Buffer | string }): Buffer {
    const body = typeof opts.body === 'string' ? Buffer.from(opts.body) : opts.body ?? Buffer.alloc(0)
    const enc = new EnvelopeEncoder({ kind: 'request', sessionId: s.sessionId, requestLine, key: s.c2s, seq, timestampMs })
    const parts = [enc.preamble, enc.record(encodeRequestHead({ headers: opts.headers ?? [] }), body.length === 0)]
    if (body.length) parts.push(...enc.body(body))
    return Buffer.concat(parts)
  }

  /** The current session's keys (tests use them to craft hostile envelopes). */
  get currentSession(): Readonly<Session> | undefined {
    return this.session
  }

  private async send(s: Session, method: string, path: string, opts: { headers?: HeaderList; body?: Buffer | string }): Promise<DeviceResponse> {
    const seq = ++s.seq
    const timestampMs = Date.now() + s.clockOffset
    const requestLine = `${method} ${path}`
    const sealed = this.seal(s, seq, timestampMs, requestLine, opts)
    const res = await request(`${this.proxyUrl}${path}`, {
      method: method as Dispatcher.HttpMethod,
      dispatcher: this.agent,
      headers: { [SESSION_HEADER]: s.sessionId, 'content-type': ENVELOPE_MEDIA_TYPE },
      body: sealed,
    })
    const raw = Buffer.from(await res.body.arrayBuffer())
    const type = String(res.headers['content-type'] ?? '')
    if (!type.startsWith(ENVELOPE_MEDIA_TYPE)) throw errorFrom(res.statusCode, raw)
    const dec = new EnvelopeDecoder({ kind: 'response', sessionId: s.sessionId, requestLine, key: s.s2c, requestTimestampMs: timestampMs, requestSeq: seq })
    const records = dec.push(raw)
    dec.end()
    const head = decodeResponseHead(records[0]!.plaintext)
    return makeResponse(head.status, head.headers, Buffer.concat(records.slice(1).map((r) => r.plaintext)))
  }

  private async postJson(path: string, body: unknown): Promise<unknown> {
    const res = await request(`${this.o.securityUrl.replace(/\/+$/, '')}${path}`, {
      method: 'POST', dispatcher: this.agent, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
    })
    const raw = Buffer.from(await res.body.arrayBuffer())
    if (res.statusCode >= 300) throw errorFrom(res.statusCode, raw)
    return raw.length ? JSON.parse(raw.toString('utf8')) : undefined
  }

  async close(): Promise<void> {
    await this.agent.close()
  }
}

function errorFrom(status: number, raw: Buffer): GatehouseClientError {
  try {
    const e = (JSON.parse(raw.toString('utf8')) as { error?: { code?: string; message?: string } }).error
    if (e?.code) return new GatehouseClientError(status, e.code, e.message ?? '')
  } catch {
    // not JSON: fall through
  }
  return new GatehouseClientError(status, 'GH_CLIENT_UNEXPECTED', `unexpected answer (${raw.length} bytes)`)
}

function makeResponse(status: number, headers: HeaderList, body: Buffer): DeviceResponse {
  return {
    status, headers, body,
    header: (name) => headers.find(([n]) => n.toLowerCase() === name.toLowerCase())?.[1],
    text: () => body.toString('utf8'),
    json: () => JSON.parse(body.toString('utf8')) as unknown,
  }
}
