/**
 * Enrollment: a signed-in user's app on a device agrees on a per-app shared key with us by
 * ECDH P-256 + HKDF-SHA256 (docs/protocol.md §Enrollment). The key is stored sealed at rest.
 *
 * Sign-in is by password, activation code or both (security.enrollment.mode). Then, in order:
 * the app catalog (app known, user's groups allowed, version allowed; catalog.ts), the device
 * (not locked) and the policy's device limit (policies.ts). The sign-in (time, groups) is
 * recorded with the enrollment: session opens apply group policies and the re-sign-in interval
 * from it.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { AuthenticationError, DeviceBlockedError, DeviceLimitError, MalformedError } from '../errors.js'
import { fromBase64url } from '../protocol/bytes.js'
import { deriveSharedKey, ecdhSecret, enrollConfirmation, generateEcdhKeyPair } from '../protocol/keySchedule.js'
import type { SignInMethod, Store } from '../store/types.js'
import type { ActivationCodeService } from './activationCodes.js'
import type { CatalogService } from './catalog.js'
import type { PolicyService } from './policies.js'
import type { SiteMap } from './sites.js'

export interface EnrollRequest {
  user: string
  password?: string
  /** One-time code issued by an admin (activationCodes.ts). */
  activationCode?: string
  appId: string
  appVersion: string
  deviceId: string
  devicePublicKey: string
}

export interface EnrollResponse {
  enrollmentId: string
  serverPublicKey: string
  salt: string
  confirmation: string
  proxyUrl: string
}

/** Something that checks a user name and password: the local user file now, LDAP later. */
export interface Authenticator {
  verify(name: string, password: string): Promise<{ name: string; groups: string[] } | null>
  /**
   * The user and groups without a password (enrollment by activation code alone); null when the
   * user is unknown. Providers without it: such enrollments get no groups.
   */
  lookup?(name: string): Promise<{ name: string; groups: string[] } | null>
}

/** Which credentials enrollment takes (security.enrollment.mode). */
export type EnrollmentMode = 'password' | 'code' | 'password+code' | 'password-or-code'
export const ENROLLMENT_MODES: readonly EnrollmentMode[] = ['password', 'code', 'password+code', 'password-or-code']

const ID_RE = /^[A-Za-z0-9._:@-]{1,128}$/
const VERSION_RE = /^[0-9A-Za-z.+-]{1,32}$/

export function parseEnrollRequest(o: Record<string, unknown>): EnrollRequest {
  const get = (k: string, max: number) => {
    const v = o[k]
    if (typeof v !== 'string' || v.length === 0 || v.length > max) throw new MalformedError(`${k} must be a string of 1..${max} characters`)
    return v
  }
  const opt = (k: string, max: number) => (o[k] === undefined ? undefined : get(k, max))
  const r: EnrollRequest = {
    user: get('user', 256),
    password: opt('password', 1024),
    activationCode: opt('activationCode', 64),
    appId: get('appId', 128),
    appVersion: get('appVersion', 32),
    deviceId: get('deviceId', 128),
    devicePublicKey: get('devicePublicKey', 100),
  }
  if (!ID_RE.test(r.appId)) throw new MalformedError('appId must match [A-Za-z0-9._:@-]{1,128}')
  if (!ID_RE.test(r.deviceId)) throw new MalformedError('deviceId must match [A-Za-z0-9._:@-]{1,128}')
  if (!VERSION_RE.test(r.appVersion)) throw new MalformedError('appVersion must match [0-9A-Za-z.+-]{1,32}')
  return r
}

export class Enroller {
  constructor(private readonly p: {
    store: Store
    auth: Authenticator
    proxyUrl: string
    /** Default 'password-or-code'. */
    mode?: EnrollmentMode
    codes?: Pick<ActivationCodeService, 'consume'>
    catalog?: Pick<CatalogService, 'assertMayEnroll'>
    policies?: Pick<PolicyService, 'effective'>
    /** Multi-site: the proxy URL follows the user's groups (sites.ts); default `proxyUrl` for all. */
    sites?: Pick<SiteMap, 'proxyUrlFor'>
    now?: () => number
  }) {}

  /**
   * Check the credentials the mode asks for. Every failure is the same 401 "invalid credentials"
   * (wrong password, unknown user, used/expired/foreign code). The password is checked before the
   * code is spent, so a wrong password does not burn a code.
   */
  private async signIn(r: EnrollRequest): Promise<{ name: string; groups: string[]; method: SignInMethod }> {
    const mode = this.p.mode ?? 'password-or-code'
    const usePassword = mode !== 'code' && r.password !== undefined
    const useCode = mode !== 'password' && r.activationCode !== undefined
    if (mode === 'password' && r.password === undefined) throw new MalformedError('password is required')
    if (mode === 'code' && r.activationCode === undefined) throw new MalformedError('activationCode is required')
    if (mode === 'password+code' && (r.password === undefined || r.activationCode === undefined)) throw new MalformedError('password and activationCode are required')
    if (!usePassword && !useCode) throw new MalformedError('password or activationCode is required')
    let user: { name: string; groups: string[] } | null = null
    if (usePassword) {
      user = await this.p.auth.verify(r.user, r.password!)
      if (!user) throw new AuthenticationError('invalid credentials')
    }
    if (useCode) {
      const name = user?.name ?? r.user
      if (!this.p.codes || !(await this.p.codes.consume(r.activationCode, { userName: name, appId: r.appId }))) {
        throw new AuthenticationError('invalid credentials')
      }
      if (!user) {
        user = this.p.auth.lookup ? await this.p.auth.lookup(name) : { name, groups: [] }
        if (!user) throw new AuthenticationError('invalid credentials')
      }
    }
    return { ...user!, method: usePassword && useCode ? 'password+code' : usePassword ? 'password' : 'code' }
  }

  async enroll(r: EnrollRequest): Promise<EnrollResponse & { userName: string }> {
    const devicePublicKey = fromBase64url(r.devicePublicKey, 65)
    if (!devicePublicKey || devicePublicKey[0] !== 0x04) throw new MalformedError('devicePublicKey must be an uncompressed P-256 point (65 bytes, base64url)')
    // Check the point before the (deliberately slow) password check so junk costs us little.
    const server = generateEcdhKeyPair()
    let z: Buffer
    try {
      z = ecdhSecret(server.privateKey, devicePublicKey)
    } catch {
      throw new MalformedError('devicePublicKey is not a point on P-256')
    }
    const user = await this.signIn(r)
    await this.p.catalog?.assertMayEnroll(r.appId, r.appVersion, user.groups)
    const device = await this.p.store.getDevice(user.name, r.deviceId)
    if (device?.state === 'locked') throw new DeviceBlockedError('this device is locked')
    const policy = await this.p.policies?.effective({ groups: user.groups, appId: r.appId })
    if (policy?.maxDevicesPerUser != null) {
      const devices = await this.p.store.activeDeviceIds(user.name)
      if (!devices.includes(r.deviceId) && devices.length >= policy.maxDevicesPerUser) {
        throw new DeviceLimitError(`at most ${policy.maxDevicesPerUser} devices per user: remove one first`)
      }
    }

    const salt = randomBytes(32)
    const sharedKey = deriveSharedKey(z, { appId: r.appId, deviceId: r.deviceId, devicePublicKey, serverPublicKey: server.publicKey, salt })
    const enrollmentId = randomUUID()
    const now = this.p.now ? this.p.now() : Date.now()
    await this.p.store.createEnrollment({
      id: enrollmentId, userName: user.name, deviceId: r.deviceId, appId: r.appId, appVersion: r.appVersion,
      sharedKey, createdAt: now, status: 'active',
    })
    await this.p.store.recordSignIn({ enrollmentId, method: user.method, groups: user.groups, at: now })
    // A wiped or retired device starts afresh once its user signed in again (a locked one was refused above).
    if (device && device.state !== 'active') await this.p.store.setDeviceState(user.name, r.deviceId, 'active', now)
    return {
      enrollmentId,
      serverPublicKey: server.publicKey.toString('base64url'),
      salt: salt.toString('base64url'),
      confirmation: enrollConfirmation(sharedKey, enrollmentId).toString('base64url'),
      proxyUrl: this.p.sites ? this.p.sites.proxyUrlFor(user.groups) : this.p.proxyUrl,
      userName: user.name,
    }
  }
}
