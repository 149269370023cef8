/**
 * The persistence contract of the security server. Async throughout so a PostgreSQL
 * implementation can follow without changing callers; the SQLite one answers synchronously inside.
 *
 * Secrets (`sharedKey`, `c2sKey`, `s2cKey`) are plaintext here and sealed by the implementation;
 * session ids are stored only as a hash.
 */

export interface EnrollmentRecord {
  id: string
  userName: string
  deviceId: string
  appId: string
  appVersion: string
  sharedKey: Buffer
  /** ms since epoch */
  createdAt: number
  status: 'active' | 'revoked'
}

export interface SessionRecord {
  /** The session id as the device knows it (base64url). Never stored in clear. */
  id: string
  enrollmentId: string
  userName: string
  deviceId: string
  appId: string
  appVersion: string
  c2sKey: Buffer
  s2cKey: Buffer
  /** ms since epoch */
  createdAt: number
  /** ms since epoch: absolute lifetime end */
  expiresAt: number
  idleTimeoutMs: number
  /** ms since epoch */
  lastSeenAt: number
  /** ms since epoch, null while open */
  closedAt: number | null
}

export interface Store {
  createEnrollment(rec: EnrollmentRecord): Promise<void>
  getEnrollment(id: string): Promise<EnrollmentRecord | undefined>
  /** false if unknown or already revoked. */
  revokeEnrollment(id: string): Promise<boolean>
  countActiveEnrollments(): Promise<number>
  createSession(rec: SessionRecord): Promise<void>
  getSession(id: string): Promise<SessionRecord | undefined>
  touchSession(id: string, now: number): Promise<void>
  /** false if unknown or already closed. */
  closeSession(id: string, now: number): Promise<boolean>
  /** Remember a one-time value (e.g. a session-open nonce) until expiresAt; false if it was already remembered and not expired. */
  rememberNonce(scope: string, nonce: string, expiresAt: number): Promise<boolean>
  /** Delete expired sessions and nonces; returns rows removed. */
  purgeExpired(now: number): Promise<number>
  schemaVersion(): Promise<number>
  close(): Promise<void>
}
