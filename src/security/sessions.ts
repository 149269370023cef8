/**
 * Sessions: opened by proof of possession of the enrollment's shared key, validated for proxies,
 * closed by the device. The session id is 128 random bits; the store keeps only its hash.
 */
import { randomBytes } from 'node:crypto'
import {
  DeviceBlockedError, EnrollmentInvalidError, MalformedError, ProofError, ReauthRequiredError, ReplayError, SessionInvalidError, StaleError,
} from '../errors.js'
import { fromBase64url } from '../protocol/bytes.js'
import { NONCE_BYTES, SESSION_ID_BYTES, SESSION_ID_LENGTH } from '../protocol/constants.js'
import { deriveSessionKeys, safeEqual, sessionAcceptProof, sessionCloseProof, sessionOpenProof } from '../protocol/keySchedule.js'
import { sessionIdHash } from '../store/sqlStore.js'
import type { SessionRecord, Store } from '../store/types.js'
import { ALL_ROUTES, type CatalogService } from './catalog.js'
import type { CommandService } from './commands.js'
import type { EffectivePolicy, PolicyService } from './policies.js'
import type { RevocationHub } from './revocationHub.js'
import type { SiteMap } from './sites.js'

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
  /** The effective policy of this user and app (policies.ts). */
  policy: EffectivePolicy
}

/**
 * The app context a proxy enforces: the route prefixes the session's app may reach ('*' = all,
 * while the catalog is empty) and whether its version is still allowed.
 */
export interface GrantAppContext {
  routes: string[] | '*'
  versionAllowed: boolean
}

/** What a proxy needs to serve a session (sent over the mutually authenticated channel only). */
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
  appContext: GrantAppContext
}

export function isSessionId(v: unknown): v is string {
  return typeof v === 'string' && v.length === SESSION_ID_LENGTH && fromBase64url(v, SESSION_ID_BYTES) !== undefined
}

export class SessionService {
  constructor(private readonly p: {
    store: Store
    policy: SessionPolicy
    proxyUrl: string
    now?: () => number
    /** Told when a device closes its session, so that proxies drop it at once. */
    hub?: Pick<RevocationHub, 'revokeSession'>
    /** Effective lifetime, idle timeout and re-sign-in interval per user and app (default: `policy`). */
    policies?: Pick<PolicyService, 'effective'>
    /** App context for the proxies (default: every route). */
    catalog?: Pick<CatalogService, 'appContext'>
    /** Device commands delivered at session open; locked devices refused (default: none). */
    commands?: Pick<CommandService, 'deliverPending' | 'blocksSessions'>
    /** Multi-site: the proxy URL follows the groups of the enrollment's last sign-in (sites.ts). */
    sites?: Pick<SiteMap, 'proxyUrlFor'>
  }) {}

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
    // either way, and a caller cannot tell whether an enrollment id exists. A revoked enrollment
    // still proves possession here, so that a wipe or retire command reaches the app it revoked.
    if (!enrollment || !safeEqual(sessionOpenProof(enrollment.sharedKey, enrollmentId, timestamp, nonce), proof)) {
      throw new EnrollmentInvalidError('enrollment unknown or revoked, or proof of possession failed')
    }
    if (Math.abs(now - timestamp) > this.p.policy.clockSkewMs) throw new StaleError('timestamp outside the allowed clock skew')
    // The nonce is remembered past the skew window, so a captured open cannot be replayed.
    const fresh = await this.p.store.rememberNonce(`open:${enrollmentId}`, nonce.toString('base64url'), now + 2 * this.p.policy.clockSkewMs)
    if (!fresh) throw new ReplayError('session-open nonce already used')
    // 403 GH_ERR_DEVICE_COMMAND with the oldest open command (lock, unlock, wipe, retire).
    await this.p.commands?.deliverPending(enrollment)
    if (enrollment.status !== 'active') throw new EnrollmentInvalidError('enrollment unknown or revoked, or proof of possession failed')
    if (await this.p.commands?.blocksSessions(enrollment)) throw new DeviceBlockedError('this device is locked, wiped or retired')

    // Group policies use the groups of the enrollment's last sign-in (the directory is asked at
    // sign-in only); the re-sign-in interval runs from that sign-in.
    const signIn = await this.p.store.lastSignIn(enrollmentId)
    const signedInAt = signIn?.at ?? enrollment.createdAt
    const policy: EffectivePolicy = this.p.policies
      ? await this.p.policies.effective({ groups: signIn?.groups ?? [], appId: enrollment.appId })
      : {
          maxSessionLifetimeSeconds: Math.floor(this.p.policy.maxLifetimeMs / 1000), idleTimeoutSeconds: Math.floor(this.p.policy.idleTimeoutMs / 1000),
          reauthIntervalSeconds: null, maxDevicesPerUser: null,
        }
    const reauthBy = policy.reauthIntervalSeconds === null ? Infinity : signedInAt + policy.reauthIntervalSeconds * 1000
    if (now >= reauthBy) throw new ReauthRequiredError('sign in again: enroll with the password')

    const sessionId = randomBytes(SESSION_ID_BYTES).toString('base64url')
    const serverNonce = randomBytes(NONCE_BYTES)
    const keys = deriveSessionKeys(enrollment.sharedKey, sessionId, nonce, serverNonce)
    // A session never outlives the sign-in it rests on.
    const expiresAt = Math.min(now + policy.maxSessionLifetimeSeconds * 1000, reauthBy)
    const idleTimeoutMs = policy.idleTimeoutSeconds * 1000
    await this.p.store.createSession({
      id: sessionId, enrollmentId, userName: enrollment.userName, deviceId: enrollment.deviceId, appId: enrollment.appId,
      appVersion: enrollment.appVersion, c2sKey: keys.c2s, s2cKey: keys.s2c, createdAt: now, expiresAt,
      idleTimeoutMs, lastSeenAt: now, closedAt: null,
    })
    return {
      sessionId,
      serverNonce: serverNonce.toString('base64url'),
      proof: sessionAcceptProof(enrollment.sharedKey, sessionId, nonce, serverNonce).toString('base64url'),
      expiresAt,
      idleTimeoutSeconds: policy.idleTimeoutSeconds,
      serverTime: now,
      proxyUrl: this.p.sites ? this.p.sites.proxyUrlFor(signIn?.groups ?? []) : this.p.proxyUrl,
      policy,
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

  /**
   * Proxy call: is the session valid, and with what keys and app context. Counts as activity
   * (the proxies' re-validations are what keeps lastSeenAt, and so the idle timeout, current).
   * A session of a device with an open command, or locked/wiped/retired, is "not valid": the
   * device re-opens and receives the command at session open.
   */
  async validate(sessionId: unknown): Promise<SessionGrant> {
    const s = await this.live(sessionId)
    if (await this.p.commands?.blocksSessions(s)) throw new SessionInvalidError('session unknown or expired')
    await this.p.store.touchSession(s.id, this.now())
    const ctx = this.p.catalog ? await this.p.catalog.appContext(s.appId, s.appVersion) : { routes: [ALL_ROUTES], code: undefined }
    return {
      enrollmentId: s.enrollmentId, userName: s.userName, deviceId: s.deviceId, appId: s.appId, appVersion: s.appVersion,
      c2sKey: s.c2sKey.toString('base64'), s2cKey: s.s2cKey.toString('base64'),
      expiresAt: s.expiresAt, idleTimeoutMs: s.idleTimeoutMs,
      appContext: {
        routes: ctx.routes.includes(ALL_ROUTES) ? ALL_ROUTES : ctx.routes,
        versionAllowed: ctx.code !== 'GH_ERR_APP_VERSION',
      },
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
    // Closed in the store first: a proxy that drops the session on the push and asks again gets "not valid".
    if (await this.p.store.closeSession(s.id, this.now())) await this.p.hub?.revokeSession(sessionIdHash(s.id))
  }
}
