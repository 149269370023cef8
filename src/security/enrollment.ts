/**
 * Enrollment: a signed-in user's app on a device agrees on a per-app shared key with us by
 * ECDH P-256 + HKDF-SHA256 (docs/protocol.md §Enrollment). The key is stored sealed at rest.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { AuthenticationError, MalformedError } from '../errors.js'
import { fromBase64url } from '../protocol/bytes.js'
import { deriveSharedKey, ecdhSecret, enrollConfirmation, generateEcdhKeyPair } from '../protocol/keySchedule.js'
import type { Store } from '../store/types.js'

export interface EnrollRequest {
  user: string
  password: string
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
}

const ID_RE = /^[A-Za-z0-9._:@-]{1,128}$/
const VERSION_RE = /^[0-9A-Za-z.+-]{1,32}$/

export function parseEnrollRequest(o: Record<string, unknown>): EnrollRequest {
  const get = (k: string, max: number) => {
    const v = o[k]
    if (typeof v !== 'string' || v.length === 0 || v.length > max) throw new MalformedError(`${k} must be a string of 1..${max} characters`)
    return v
  }
  const r: EnrollRequest = {
    user: get('user', 256),
    password: get('password', 1024),
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
  constructor(private readonly p: { store: Store; auth: Authenticator; proxyUrl: string }) {}

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
    const user = await this.p.auth.verify(r.user, r.password)
    if (!user) throw new AuthenticationError('invalid credentials')

    const salt = randomBytes(32)
    const sharedKey = deriveSharedKey(z, { appId: r.appId, deviceId: r.deviceId, devicePublicKey, serverPublicKey: server.publicKey, salt })
    const enrollmentId = randomUUID()
    await this.p.store.createEnrollment({
      id: enrollmentId, userName: user.name, deviceId: r.deviceId, appId: r.appId, appVersion: r.appVersion,
      sharedKey, createdAt: Date.now(), status: 'active',
    })
    return {
      enrollmentId,
      serverPublicKey: server.publicKey.toString('base64url'),
      salt: salt.toString('base64url'),
      confirmation: enrollConfirmation(sharedKey, enrollmentId).toString('base64url'),
      proxyUrl: this.p.proxyUrl,
      userName: user.name,
    }
  }
}
