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

/** What admin listings show of an enrollment: never the key. */
export type EnrollmentSummary = Omit<EnrollmentRecord, 'sharedKey'>
/** What admin listings show of a session: never the keys or the id (only its SHA-256, hex). */
export interface SessionSummary {
  idHash: string
  enrollmentId: string
  userName: string
  deviceId: string
  appId: string
  appVersion: string
  createdAt: number
  expiresAt: number
  lastSeenAt: number
  closedAt: number | null
}

export interface Page {
  limit?: number
  offset?: number
}

export interface EnrollmentStore {
  createEnrollment(rec: EnrollmentRecord): Promise<void>
  getEnrollment(id: string): Promise<EnrollmentRecord | undefined>
  /** false if unknown or already revoked. Also closes the enrollment's open sessions. */
  revokeEnrollment(id: string): Promise<boolean>
  countActiveEnrollments(): Promise<number>
  listEnrollments(filter: { userName?: string; deviceId?: string; appId?: string; status?: 'active' | 'revoked' } & Page): Promise<EnrollmentSummary[]>
  /** Distinct device ids with at least one active enrollment for this user. */
  activeDeviceIds(userName: string): Promise<string[]>
}

export interface SessionStore {
  createSession(rec: SessionRecord): Promise<void>
  getSession(id: string): Promise<SessionRecord | undefined>
  touchSession(id: string, now: number): Promise<void>
  /** false if unknown or already closed. */
  closeSession(id: string, now: number): Promise<boolean>
  /** Close every open session matching the filter (at least one field set); returns the closed sessions' id hashes. */
  closeSessionsWhere(filter: { userName?: string; deviceId?: string; enrollmentId?: string }, now: number): Promise<string[]>
  listSessions(filter: { userName?: string; deviceId?: string; open?: boolean } & Page): Promise<SessionSummary[]>
  /** Remember a one-time value (e.g. a session-open nonce) until expiresAt; false if it was already remembered and not expired. */
  rememberNonce(scope: string, nonce: string, expiresAt: number): Promise<boolean>
  /** Delete expired sessions and nonces; returns rows removed. */
  purgeExpired(now: number): Promise<number>
}

/** An app in the catalog. */
export interface AppRecord {
  id: string
  name: string
  /** Lowest version allowed (dotted numeric compare), or null. */
  minVersion: string | null
  /** Exact versions allowed; empty = any version >= minVersion. */
  allowedVersions: string[]
  /** Proxy route prefixes this app may reach (e.g. "/mail/"); empty = none. */
  routes: string[]
  /** Directory groups whose users may enroll this app; empty = every user. */
  groups: string[]
  createdAt: number
  updatedAt: number
}

export interface AppPackageRecord {
  appId: string
  version: string
  fileName: string
  sha256: string
  size: number
  createdAt: number
}

export interface AppStore {
  upsertApp(app: AppRecord): Promise<void>
  getApp(id: string): Promise<AppRecord | undefined>
  listApps(): Promise<AppRecord[]>
  deleteApp(id: string): Promise<boolean>
  addPackage(p: AppPackageRecord): Promise<void>
  listPackages(appId: string): Promise<AppPackageRecord[]>
  getPackage(appId: string, version: string): Promise<AppPackageRecord | undefined>
}

export type PolicyScope = 'global' | 'group' | 'app'

/** Session and device limits for everyone, a directory group or an app; null = not set here. */
export interface PolicyRecord {
  id: string
  scope: PolicyScope
  /** '' for global, the group name or the app id. */
  scopeId: string
  maxSessionLifetimeSeconds: number | null
  idleTimeoutSeconds: number | null
  reauthIntervalSeconds: number | null
  maxDevicesPerUser: number | null
  updatedAt: number
}

export interface PolicyStore {
  upsertPolicy(p: PolicyRecord): Promise<void>
  listPolicies(): Promise<PolicyRecord[]>
  deletePolicy(id: string): Promise<boolean>
}

/** One-time enrollment code; only its SHA-256 (hex) is stored. */
export interface ActivationCodeRecord {
  codeHash: string
  userName: string
  /** Restricts the code to one app, or null for any app. */
  appId: string | null
  expiresAt: number
  usedAt: number | null
  createdBy: string
  createdAt: number
}

export interface ActivationCodeStore {
  createActivationCode(c: ActivationCodeRecord): Promise<void>
  /** Atomically mark an unused, unexpired code as used and return it; undefined otherwise. */
  consumeActivationCode(codeHash: string, now: number): Promise<ActivationCodeRecord | undefined>
  listActivationCodes(filter: { userName?: string } & Page): Promise<ActivationCodeRecord[]>
}

export type DeviceState = 'active' | 'locked' | 'wiped' | 'retired'
export interface DeviceRecord {
  userName: string
  deviceId: string
  state: DeviceState
  updatedAt: number
}

export type CommandKind = 'lock' | 'unlock' | 'wipe' | 'retire'
export type CommandState = 'pending' | 'delivered' | 'acknowledged'
export interface DeviceCommandRecord {
  id: string
  userName: string
  deviceId: string
  /** wipe of one app's data and enrollment; null = the whole device. */
  appId: string | null
  kind: CommandKind
  state: CommandState
  issuedBy: string
  issuedAt: number
  deliveredAt: number | null
  acknowledgedAt: number | null
}

export interface DeviceStore {
  /** undefined when the device has never had a state set (treat as 'active'). */
  getDevice(userName: string, deviceId: string): Promise<DeviceRecord | undefined>
  setDeviceState(userName: string, deviceId: string, state: DeviceState, now: number): Promise<void>
  listDevices(filter: { userName?: string; state?: DeviceState } & Page): Promise<DeviceRecord[]>
  createCommand(c: DeviceCommandRecord): Promise<void>
  /** Commands not yet acknowledged for this device (and app, when given: its own plus whole-device ones). */
  openCommands(userName: string, deviceId: string, appId?: string): Promise<DeviceCommandRecord[]>
  markCommandDelivered(id: string, now: number): Promise<void>
  /** false if unknown or already acknowledged. */
  acknowledgeCommand(id: string, now: number): Promise<boolean>
  listCommands(filter: { userName?: string; deviceId?: string; state?: CommandState } & Page): Promise<DeviceCommandRecord[]>
}

/** Append-only audit record. */
export interface AuditEvent {
  /** Assigned by the store. */
  id?: number
  at: number
  actor: string
  actorRole: string
  action: string
  target: string
  remote: string
  details: Record<string, unknown>
}

export interface AuditStore {
  appendAudit(e: AuditEvent): Promise<number>
  queryAudit(filter: { actor?: string; action?: string; target?: string; since?: number; until?: number } & Page): Promise<AuditEvent[]>
}

export type AdminRole = 'admin' | 'helpdesk' | 'auditor'
export interface AdminUserRecord {
  name: string
  /** scrypt hash as produced by hashPassword in src/security/users.ts */
  passwordHash: string
  role: AdminRole
  createdAt: number
}
export interface AdminTokenRecord {
  /** SHA-256 hex of the bearer token; the token itself is never stored. */
  tokenHash: string
  adminName: string
  expiresAt: number
  createdAt: number
}

export interface AdminStore {
  upsertAdminUser(u: AdminUserRecord): Promise<void>
  getAdminUser(name: string): Promise<AdminUserRecord | undefined>
  listAdminUsers(): Promise<Omit<AdminUserRecord, 'passwordHash'>[]>
  deleteAdminUser(name: string): Promise<boolean>
  createAdminToken(t: AdminTokenRecord): Promise<void>
  getAdminToken(tokenHash: string): Promise<AdminTokenRecord | undefined>
  deleteAdminToken(tokenHash: string): Promise<boolean>
}

export type RevocationKind = 'session' | 'enrollment' | 'device' | 'user' | 'policy'
/**
 * One entry of the revocation log that proxies follow (and replay after a reconnect).
 * target: session = SHA-256 hex of the session id; enrollment = its id; device = "<user>\u0000<deviceId>";
 * user = the user name; policy = the policy id.
 */
export interface RevocationRecord {
  seq: number
  at: number
  kind: RevocationKind
  target: string
}

export interface RevocationStore {
  appendRevocation(kind: RevocationKind, target: string, now: number): Promise<number>
  revocationsSince(seq: number, limit: number): Promise<RevocationRecord[]>
  latestRevocationSeq(): Promise<number>
}

export type SignInMethod = 'password' | 'code' | 'password+code'
/**
 * An enrollment's last sign-in: when its user last proved their credentials (password and/or
 * activation code) and the directory groups they had then. Group policies and the re-sign-in
 * interval (policy reauthIntervalSeconds) are evaluated from it at session open.
 */
export interface SignInRecord {
  enrollmentId: string
  method: SignInMethod
  groups: string[]
  /** ms since epoch */
  at: number
}

export interface SignInStore {
  /** Insert or replace the enrollment's last sign-in. */
  recordSignIn(s: SignInRecord): Promise<void>
  lastSignIn(enrollmentId: string): Promise<SignInRecord | undefined>
}

export interface Store extends EnrollmentStore, SessionStore, AppStore, PolicyStore, ActivationCodeStore, DeviceStore, AuditStore, AdminStore, RevocationStore, SignInStore {
  /** Re-seal every stored secret under the box's current key id; returns rows rewritten. Safe while serving. */
  reencryptSecrets(): Promise<number>
  schemaVersion(): Promise<number>
  close(): Promise<void>
}
