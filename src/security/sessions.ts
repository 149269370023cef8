/**
 * Sessions: opened by proof of possession of the enrollment's shared key, validated for proxies,
 * closed by the device. The session id is 128 random bits; the store keeps only its hash.
 */
import { randomBytes } from 'node:crypto'
import { EnrollmentInvalidError, MalformedError, ProofError, ReplayError, SessionInvalidError, StaleError } from '../errors.js'
import { fromBase64url } from '../protocol/bytes.js'
import { NONCE_BYTES, SESSION_ID_BYTES, SESSION_ID_LENGTH } from '../protocol/constants.js'
import { deriveSessionKeys, safeEqual, sessionAcceptProof, sessionCloseProof, sessionOpenProof } from '../protocol/keySchedule.js'
import type { SessionRecord, Store } from '../store/types.js'

export interface SessionPolicy {
  maxLifetimeMs: number
  idleTimeoutMs: number
  clockSkewMs: number
}

export interface OpenedSession {
  sessionId: string
  serverNonce: string
  proof: string
  expiresAt: number
  idleTimeoutSeconds: number
  serverTime: number
  proxyUrl: string
}

/** What a proxy needs to serve a session (sent over the mutually authenticated channel only). */
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

export function isSessionId(v: unknown): v is string {
  return typeof v === 'string' && v.length === SESSION_ID_LENGTH && fromBase64url(v, SESSION_ID_BYTES) !== undefined
}

export class SessionService {
  constructor(private readonly p: { store: Store; policy: SessionPolicy; proxyUrl: string; now?: () => number }) {}

  private now(): number {
    return this.p.now ? this.p.now() : Date.now()
  }

  async open(o: Record<string, unknown>): Promise<OpenedSession & { userName: string; deviceId: string; appId: string }> {
    const enrollmentId = o.enrollmentId
    const timestamp = o.timestamp
    const nonce = fromBase64url(o.nonce, NONCE_BYTES)
    const proof = fromBase64url(o.proof, 32)
    if (typeof enrollmentId !== 'string' || enrollmentId.length === 0 || enrollmentId.length > 64) throw new MalformedError('enrollmentId must be a string')
    if (typeof timestamp !== 'number' || !Number.isSafeInteger(timestamp) || timestamp < 0) throw new MalformedError('timestamp must be milliseconds since the epoch')
    if (!nonce) throw new MalformedError('nonce must be 16 bytes, base64url')
    if (!proof) throw new MalformedError('proof must be 32 bytes, base64url')

    const now = this.now()
    const enrollment = await this.p.store.getEnrollment(enrollmentId)
    // Unknown enrollment and wrong proof give the same answer: the device must enroll again
    // either way, and a caller cannot tell whether an enrollment id exists.
    if (!enrollment || enrollment.status !== 'active' ||
      !safeEqual(sessionOpenProof(enrollment.sharedKey, enrollmentId, timestamp, nonce), proof)) {
      throw new EnrollmentInvalidError('enrollment unknown or revoked, or proof of possession failed')
    }
    if (Math.abs(now - timestamp) > this.p.policy.clockSkewMs) throw new StaleError('timestamp outside the allowed clock skew')
    // The nonce is remembered past the skew window, so a captured open cannot be replayed.
    const fresh = await this.p.store.rememberNonce(`open:${enrollmentId}`, nonce.toString('base64url'), now + 2 * this.p.policy.clockSkewMs)
    if (!fresh) throw new ReplayError('session-open nonce already used')

    const sessionId = randomBytes(SESSION_ID_BYTES).toString('base64url')
    const serverNonce = randomBytes(NONCE_BYTES)
    const keys = deriveSessionKeys(enrollment.sharedKey, sessionId, nonce, serverNonce)
    const expiresAt = now + this.p.policy.maxLifetimeMs
    await this.p.store.createSession({
      id: sessionId, enrollmentId, userName: enrollment.userName, deviceId: enrollment.deviceId, appId: enrollment.appId,
      appVersion: enrollment.appVersion, c2sKey: keys.c2s, s2cKey: keys.s2c, createdAt: now, expiresAt,
      idleTimeoutMs: this.p.policy.idleTimeoutMs, lastSeenAt: now, closedAt: null,
    })
    return {
      sessionId,
      serverNonce: serverNonce.toString('base64url'),
      proof: sessionAcceptProof(enrollment.sharedKey, sessionId, nonce, serverNonce).toString('base64url'),
      expiresAt,
      idleTimeoutSeconds: Math.floor(this.p.policy.idleTimeoutMs / 1000),
      serverTime: now,
      proxyUrl: this.p.proxyUrl,
      userName: enrollment.userName,
      deviceId: enrollment.deviceId,
      appId: enrollment.appId,
    }
  }

  /** The live session, or SessionInvalidError (unknown, closed, expired, idle). */
  async live(sessionId: unknown): Promise<SessionRecord> {
    if (!isSessionId(sessionId)) throw new SessionInvalidError('session unknown or expired')
    const s = await this.p.store.getSession(sessionId)
    const now = this.now()
    if (!s || s.closedAt !== null || s.expiresAt <= now || s.lastSeenAt + s.idleTimeoutMs <= now) {
      throw new SessionInvalidError('session unknown or expired')
    }
    const enrollment = await this.p.store.getEnrollment(s.enrollmentId)
    if (!enrollment || enrollment.status !== 'active') throw new SessionInvalidError('session unknown or expired')
    return s
  }

  /** Proxy call: is the session valid, and with what keys and context. Counts as activity. */
  async validate(sessionId: unknown): Promise<SessionGrant> {
    const s = await this.live(sessionId)
    await this.p.store.touchSession(s.id, this.now())
    return {
      userName: s.userName, deviceId: s.deviceId, appId: s.appId, appVersion: s.appVersion,
      c2sKey: s.c2sKey.toString('base64'), s2cKey: s.s2cKey.toString('base64'),
      expiresAt: s.expiresAt, idleTimeoutMs: s.idleTimeoutMs,
    }
  }

  async close(o: Record<string, unknown>): Promise<void> {
    const timestamp = o.timestamp
    const proof = fromBase64url(o.proof, 32)
    if (typeof timestamp !== 'number' || !Number.isSafeInteger(timestamp) || timestamp < 0) throw new MalformedError('timestamp must be milliseconds since the epoch')
    if (!proof) throw new MalformedError('proof must be 32 bytes, base64url')
    const s = await this.live(o.sessionId)
    if (!safeEqual(sessionCloseProof(s.c2sKey, s.id, timestamp), proof)) throw new ProofError('proof of possession failed')
    if (Math.abs(this.now() - timestamp) > this.p.policy.clockSkewMs) throw new StaleError('timestamp outside the allowed clock skew')
    await this.p.store.closeSession(s.id, this.now())
  }
}
