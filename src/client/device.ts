/**
 * The device SDK: what an app links to enroll, open sessions and send requests through the proxy.
 * Several security servers (`securityUrls`, in order) are tried in turn: see DeviceOptions.
 *
 *   const device = new GatehouseDevice({ securityUrl, ca, appId, appVersion, deviceId })
 *   await device.enroll('alice', password)          // once: per-app shared key
 *   const res = await device.request('GET', '/mail/inbox')   // opens a session when needed
 *   const up = await device.requestStream('PUT', '/files/a.bin', { body: createReadStream(path) })
 *   for await (const chunk of up.body) …                      // bodies of any size, both ways
 *
 * Sessions are re-opened transparently when the proxy answers 401 (expired or revoked session).
 * The enrollment (which holds the shared key) can be saved with `enrollmentState` and restored.
 *
 * Device commands (lock, unlock, wipe, retire) arrive when a session opens: the SDK calls
 * `onCommand`, acknowledges the command (proof of possession of the shared key), erases its
 * enrollment on wipe or retire, re-opens after unlock, and otherwise rejects with
 * DeviceCommandError carrying the command.
 */
import { createHash, randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { Agent, request, type Dispatcher } from 'undici'
import { TruncatedError } from '../errors.js'
import { fromBase64url } from '../protocol/bytes.js'
import { ENVELOPE_MEDIA_TYPE, NONCE_BYTES, SESSION_HEADER } from '../protocol/constants.js'
import { EnvelopeDecoder, EnvelopeEncoder, fitsJoined } from '../protocol/envelope.js'
import { decodeResponseHead, encodeRequestHead, type HeaderList } from '../protocol/head.js'
import { openResponse, sealRequest, type BodySource } from './envelopeStreams.js'
import {
  commandAckProof, deriveSessionKeys, deriveSharedKey, ecdhSecret, enrollConfirmation, generateEcdhKeyPair, safeEqual,
  sessionAcceptProof, sessionCloseProof, sessionOpenProof,
} from '../protocol/keySchedule.js'

/** An error answered by a Gatehouse server: status and stable code. */
export class GatehouseClientError extends Error {
  constructor(readonly status: number, readonly code: string, message: string, readonly command?: DeviceCommand) {
    super(`${status} ${code}: ${message}`)
    this.name = 'GatehouseClientError'
  }
}

/** A command from the security server (docs/protocol.md §4.1). */
export interface DeviceCommand {
  id: string
  kind: 'lock' | 'unlock' | 'wipe' | 'retire'
  /** wipe: the app whose data and enrollment to erase; null = the whole device. */
  appId: string | null
}

/**
 * Session open was answered with a command the app must carry out (already acknowledged, and on
 * wipe/retire the enrollment already erased): the session is not open.
 */
export class DeviceCommandError extends GatehouseClientError {
  constructor(override readonly command: DeviceCommand, message: string) {
    super(403, 'GH_ERR_DEVICE_COMMAND', message, command)
    this.name = 'DeviceCommandError'
  }
}

/** The session policy returned at session open (security server policies). */
export interface SessionPolicyInfo {
  maxSessionLifetimeSeconds: number
  idleTimeoutSeconds: number
  reauthIntervalSeconds: number | null
  maxDevicesPerUser: number | null
}

/** An app update offered by the catalog. */
export interface AppUpdate {
  appId: string
  version: string
  fileName: string
  sha256: string
  size: number
  downloadPath: string
}

const COMMAND_KINDS = new Set(['lock', 'unlock', 'wipe', 'retire'])
/** Commands handled in a row by one session open before giving up (each is acknowledged). */
const MAX_COMMANDS_PER_OPEN = 8

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
  /** Device API base URL of the security server, e.g. https://localhost:8443 (or use `securityUrls`). */
  securityUrl?: string
  /**
   * Device API base URLs of several security servers sharing one database, in order of
   * preference; wins over `securityUrl`. A call that cannot connect, fails in transit or gets a
   * 5xx answer goes to the next server (a session open with a fresh nonce and proof); the server
   * that answered is tried first from then on. A 4xx answer is final. An enrollment whose answer
   * was lost may have been recorded by the first server: the one sent again creates a second,
   * and only that one is used.
   */
  securityUrls?: readonly string[]
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
  /**
   * Called with each command received at session open, before it is acknowledged: lock the app,
   * or erase its data on wipe/retire (the SDK erases the enrollment itself afterwards).
   */
  onCommand?: (command: DeviceCommand) => void | Promise<void>
}

/** A streamed answer (requestStream): status and headers, the body as it downloads. */
export interface DeviceStreamResponse {
  status: number
  headers: HeaderList
  /** Decrypted record by record; fails with TruncatedError (GH_ERR_TRUNCATED) when the answer is cut. */
  body: Readable
  /** Convenience: first value of a header. */
  header(name: string): string | undefined
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
  policy: SessionPolicyInfo | undefined
}

/**
 * Every envelope request has a body, GET and DELETE included. undici closes the connection after
 * a GET/HEAD/DELETE that carries a body unless told otherwise (a guard against servers that do
 * not expect one); the proxy always reads the envelope, so keep the connection: without this,
 * every GET paid a new TCP + TLS handshake.
 */
const RESET_CONNECTION = false

export class GatehouseDevice {
  private readonly agent: Agent
  /** Security server base URLs, in order; `preferred` indexes the one that answered last. */
  private readonly securityBases: readonly string[]
  private preferred = 0
  private enrollment: EnrollmentState | undefined
  private session: Session | undefined
  private opening: Promise<Session> | undefined
  private commandHandler: ((command: DeviceCommand) => void | Promise<void>) | undefined
  /** ms to add to our clock to get the server's (kept across sessions). */
  private clockOffset = 0

  constructor(private readonly o: DeviceOptions) {
    this.securityBases = (o.securityUrls?.length ? o.securityUrls : o.securityUrl !== undefined ? [o.securityUrl] : []).map((u) => u.replace(/\/+$/, ''))
    if (this.securityBases.length === 0) throw new TypeError('GatehouseDevice needs securityUrl or securityUrls')
    this.agent = new Agent({ connect: o.ca ? { ca: o.ca } : {}, connections: o.connections ?? 8, keepAliveTimeout: 30_000 })
    this.enrollment = o.enrollment
    this.commandHandler = o.onCommand
  }

  /** Set (or replace) the command handler: see DeviceOptions.onCommand. */
  onCommand(handler: (command: DeviceCommand) => void | Promise<void>): this {
    this.commandHandler = handler
    return this
  }

  /** The policy the security server returned with the current session. */
  get sessionPolicy(): SessionPolicyInfo | undefined {
    return this.session?.policy
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

  /** Enroll with the password, or `{ activationCode }`, or both (per the server's enrollment mode). */
  async enroll(user: string, credentials: string | { password?: string; activationCode?: string }): Promise<EnrollmentState> {
    const creds = typeof credentials === 'string' ? { password: credentials } : credentials
    const eph = generateEcdhKeyPair()
    const body = await this.postJson('/v1/enroll', {
      user, ...creds, appId: this.o.appId, appVersion: this.o.appVersion, deviceId: this.o.deviceId,
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
    this.opening ??= this.openHandlingCommands().finally(() => { this.opening = undefined })
    return this.opening
  }

  /** Session open; commands in the answer are handled and acknowledged (see the module comment). */
  private async openHandlingCommands(): Promise<Session> {
    for (let i = 0; ; i++) {
      try {
        return await this.doOpen()
      } catch (err) {
        const command = err instanceof GatehouseClientError && err.code === 'GH_ERR_DEVICE_COMMAND' ? err.command : undefined
        if (!command) throw err
        await this.carryOut(command)
        if (command.kind !== 'unlock' || i >= MAX_COMMANDS_PER_OPEN) {
          throw new DeviceCommandError(command, `device ${command.kind}${command.appId ? ` (${command.appId})` : ''} command received`)
        }
      }
    }
  }

  /** Tell the app, acknowledge, then erase the enrollment when the command says so. */
  private async carryOut(command: DeviceCommand): Promise<void> {
    await this.commandHandler?.(command)
    await this.acknowledgeCommand(command)
    if (command.kind === 'wipe' || command.kind === 'retire') {
      this.session = undefined
      this.enrollment = undefined
    }
  }

  /** `POST /v1/commands/:id/ack` with HMAC(sharedKey, LP("gatehouse/v1 command-ack", id, enrollmentId, u64 ts)). */
  async acknowledgeCommand(command: Pick<DeviceCommand, 'id'>): Promise<void> {
    const e = this.enrollment
    if (!e) throw new GatehouseClientError(0, 'GH_CLIENT_NOT_ENROLLED', 'enroll first')
    const timestamp = Date.now() + this.clockOffset
    await this.postJson(`/v1/commands/${encodeURIComponent(command.id)}/ack`, {
      enrollmentId: e.enrollmentId, timestamp,
      proof: commandAckProof(Buffer.from(e.sharedKey, 'base64'), command.id, e.enrollmentId, timestamp).toString('base64url'),
    })
  }

  /** Ask the catalog for a newer allowed version of this app; undefined when there is none. */
  async checkUpdate(currentVersion = this.enrollment?.appVersion ?? this.o.appVersion): Promise<AppUpdate | undefined> {
    const s = this.session ?? await this.openSession()
    const res = await this.atSecurityServer(async (base) => {
      const r = await request(`${base}/v1/catalog/${encodeURIComponent(this.o.appId)}/update?version=${encodeURIComponent(currentVersion)}`, {
        method: 'GET', dispatcher: this.agent, headers: { [SESSION_HEADER]: s.sessionId },
      })
      const raw = Buffer.from(await r.body.arrayBuffer())
      if (r.statusCode !== 200 && r.statusCode !== 204) throw errorFrom(r.statusCode, raw)
      return { statusCode: r.statusCode, raw }
    })
    const raw = res.raw
    if (res.statusCode === 204) return undefined
    const u = (JSON.parse(raw.toString('utf8')) as { update?: AppUpdate }).update
    if (!u || typeof u.version !== 'string' || typeof u.sha256 !== 'string' || typeof u.downloadPath !== 'string' || !u.downloadPath.startsWith('/v1/catalog/')) {
      throw new GatehouseClientError(0, 'GH_CLIENT_BAD_ANSWER', 'malformed update answer')
    }
    return u
  }

  /** Download a package and check its size and SHA-256 against the update check's answer. */
  async downloadPackage(update: AppUpdate): Promise<Buffer> {
    const s = this.session ?? await this.openSession()
    const { res, raw } = await this.atSecurityServer(async (base) => {
      const r = await request(`${base}${update.downloadPath}`, {
        method: 'GET', dispatcher: this.agent, headers: { [SESSION_HEADER]: s.sessionId },
      })
      const bytes = Buffer.from(await r.body.arrayBuffer())
      if (r.statusCode !== 200) throw errorFrom(r.statusCode, bytes)
      return { res: r, raw: bytes }
    })
    const sha256 = createHash('sha256').update(raw).digest('hex')
    if (raw.length !== update.size || sha256 !== update.sha256 || res.headers['x-gatehouse-sha256'] !== update.sha256) {
      throw new GatehouseClientError(0, 'GH_CLIENT_PACKAGE_CORRUPT', 'package size or SHA-256 does not match the catalog')
    }
    return raw
  }

  /**
   * `call` against the security servers in turn, from the one that answered last: the next one
   * after a transport failure or a 5xx answer; any other answer (success or 4xx) is final and
   * makes that server the preferred one.
   */
  private async atSecurityServer<T>(call: (base: string) => Promise<T>): Promise<T> {
    const n = this.securityBases.length
    let failure: unknown
    for (let i = 0; i < n; i++) {
      const idx = (this.preferred + i) % n
      try {
        const out = await call(this.securityBases[idx]!)
        this.preferred = idx
        return out
      } catch (err) {
        if (err instanceof GatehouseClientError && (err.status === 0 || err.status < 500)) {
          this.preferred = idx
          throw err
        }
        failure = err
      }
    }
    throw failure
  }

  private async doOpen(): Promise<Session> {
    const e = this.enrollment
    if (!e) throw new GatehouseClientError(0, 'GH_CLIENT_NOT_ENROLLED', 'enroll first')
    const sharedKey = Buffer.from(e.sharedKey, 'base64')
    // A fresh nonce per server tried: a server that failed may have remembered the first one.
    const { body, nonce } = await this.atSecurityServer(async (base) => {
      const nonce = randomBytes(NONCE_BYTES)
      const timestamp = Date.now() + this.clockOffset
      const body = await this.postJsonTo(base, '/v1/sessions', {
        enrollmentId: e.enrollmentId, timestamp, nonce: nonce.toString('base64url'),
        proof: sessionOpenProof(sharedKey, e.enrollmentId, timestamp, nonce).toString('base64url'),
      }) as Record<string, unknown>
      return { body, nonce }
    })
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
    this.clockOffset = body.serverTime - Date.now()
    this.session = {
      sessionId, c2s: keys.c2s, s2c: keys.s2c, seq: 0, clockOffset: this.clockOffset,
      expiresAt: typeof body.expiresAt === 'number' ? body.expiresAt : 0,
      policy: isPolicy(body.policy) ? body.policy : undefined,
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

  /**
   * Send a request whose body streams (sealed record by record as it is read, chunked on the
   * wire) and get the answer as a stream (decrypted record by record as it downloads). Neither
   * side is held whole in memory. Re-opens the session once on 401 when there is no body; with
   * a body, a 401 is thrown (the body was consumed), so open the session first when unsure.
   */
  async requestStream(method: string, path: string, opts: { headers?: HeaderList; body?: BodySource } = {}): Promise<DeviceStreamResponse> {
    let s = this.session ?? await this.openSession()
    try {
      return await this.sendStream(s, method, path, opts)
    } catch (err) {
      if (opts.body !== undefined || !(err instanceof GatehouseClientError) || err.status !== 401) throw err
      if (this.session === s) this.session = undefined
      s = this.session ?? await this.openSession()
      return this.sendStream(s, method, path, opts)
    }
  }

  private async sendStream(s: Session, method: string, path: string, opts: { headers?: HeaderList; body?: BodySource }): Promise<DeviceStreamResponse> {
    const seq = ++s.seq
    const timestampMs = Date.now() + s.clockOffset
    const requestLine = `${method} ${path}`
    const enc = new EnvelopeEncoder({ kind: 'request', sessionId: s.sessionId, requestLine, key: s.c2s, seq, timestampMs })
    const res = await request(`${this.proxyUrl}${path}`, {
      method: method as Dispatcher.HttpMethod,
      dispatcher: this.agent,
      headers: { [SESSION_HEADER]: s.sessionId, 'content-type': ENVELOPE_MEDIA_TYPE },
      body: Readable.from(sealRequest(enc, opts.headers ?? [], opts.body), { objectMode: false, highWaterMark: 64 * 1024 }),
      reset: RESET_CONNECTION,
    })
    const type = String(res.headers['content-type'] ?? '')
    if (!type.startsWith(ENVELOPE_MEDIA_TYPE)) throw errorFrom(res.statusCode, Buffer.from(await res.body.arrayBuffer()))
    const dec = new EnvelopeDecoder({ kind: 'response', sessionId: s.sessionId, requestLine, key: s.s2c, requestTimestampMs: timestampMs, requestSeq: seq })
    const opened = openResponse(dec, res.body)
    const head = await opened.head
    return {
      status: head.status, headers: head.headers, body: opened.body,
      header: (name) => head.headers.find(([n]) => n.toLowerCase() === name.toLowerCase())?.[1],
    }
  }

  /**
   * Build the sealed request bytes (exposed for tests and the simulator's hostile modes). A body
   * that fits one record with the head goes joined to it (FLAG_JOINED: one record, half the
   * AES-GCM work on both sides) unless `joined: false`. A request without a body is joined too
   * (2 bytes more): that tells the proxy to answer joined, and most GETs' answers are small.
   */
  seal(s: { sessionId: string; c2s: Buffer }, seq: number, timestampMs: number, requestLine: string, opts: { headers?: HeaderList; body?: Buffer | string; joined?: boolean }): Buffer {
    const body = typeof opts.body === 'string' ? Buffer.from(opts.body) : opts.body ?? Buffer.alloc(0)
    const enc = new EnvelopeEncoder({ kind: 'request', sessionId: s.sessionId, requestLine, key: s.c2s, seq, timestampMs })
    const head = encodeRequestHead({ headers: opts.headers ?? [] })
    if (opts.joined !== false && fitsJoined(head.length, body.length)) return Buffer.concat([enc.preamble, enc.joined(head, body, true)])
    if (body.length === 0) return Buffer.concat([enc.preamble, enc.record(head, true)])
    return Buffer.concat([enc.preamble, enc.record(head, false), ...enc.body(body)])
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
      reset: RESET_CONNECTION,
    })
    const type = String(res.headers['content-type'] ?? '')
    let raw: Buffer
    try {
      raw = Buffer.from(await res.body.arrayBuffer())
    } catch (err) {
      // The proxy closes the connection without a FINAL record when an answer fails mid-body.
      if (type.startsWith(ENVELOPE_MEDIA_TYPE)) throw new TruncatedError('response ended before its final record', { cause: err })
      throw err
    }
    if (!type.startsWith(ENVELOPE_MEDIA_TYPE)) throw errorFrom(res.statusCode, raw)
    const dec = new EnvelopeDecoder({ kind: 'response', sessionId: s.sessionId, requestLine, key: s.s2c, requestTimestampMs: timestampMs, requestSeq: seq })
    const records = dec.push(raw)
    dec.end()
    const head = decodeResponseHead(records[0]!.plaintext)
    return makeResponse(head.status, head.headers, Buffer.concat(records.slice(1).map((r) => r.plaintext)))
  }

  private postJson(path: string, body: unknown): Promise<unknown> {
    return this.atSecurityServer((base) => this.postJsonTo(base, path, body))
  }

  private async postJsonTo(base: string, path: string, body: unknown): Promise<unknown> {
    const res = await request(`${base}${path}`, {
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

function isPolicy(v: unknown): v is SessionPolicyInfo {
  const p = v as Record<string, unknown> | null
  return !!p && typeof p === 'object' && typeof p.maxSessionLifetimeSeconds === 'number' && typeof p.idleTimeoutSeconds === 'number'
}

function isCommand(v: unknown): v is DeviceCommand {
  const c = v as Record<string, unknown> | null
  return !!c && typeof c === 'object' && typeof c.id === 'string' && typeof c.kind === 'string' && COMMAND_KINDS.has(c.kind) &&
    (c.appId === null || typeof c.appId === 'string')
}

function errorFrom(status: number, raw: Buffer): GatehouseClientError {
  try {
    const v = JSON.parse(raw.toString('utf8')) as { error?: { code?: string; message?: string }; command?: unknown }
    const e = v.error
    if (e?.code) return new GatehouseClientError(status, e.code, e.message ?? '', isCommand(v.command) ? v.command : undefined)
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
