/**
 * The store, over SQLite or PostgreSQL through SqlDb: every query written once, in the modules
 * of ./queries (one per concern), composed here.
 *
 * Secrets are sealed by the SecretBox with AAD {table, column, row = primary key}:
 * enrollments.shared_key, and sessions.keys = c2s || s2c. Session ids are stored only as their
 * SHA-256 (hex), one-time codes and admin tokens likewise by their hash.
 */
import { migrate, schemaVersion } from './migrate.js'
import { ActivationCodeQueries } from './queries/activationCodes.js'
import { AdminQueries } from './queries/admin.js'
import { AuditQueries } from './queries/audit.js'
import { CatalogQueries } from './queries/catalog.js'
import type { QueryContext } from './queries/common.js'
import { DeviceQueries } from './queries/devices.js'
import { EnrollmentQueries } from './queries/enrollments.js'
import { reencryptSecrets } from './queries/secrets.js'
import { RevocationQueries } from './queries/revocations.js'
import { SessionQueries } from './queries/sessions.js'
import { SignInQueries } from './queries/signIns.js'
import type { SecretBox } from './secretBox.js'
import type { SqlDb } from './sqlDb.js'
import type {
  ActivationCodeRecord, ActivationCodeStore, AdminStore, AdminTokenRecord, AdminUserRecord, AppPackageRecord, AppRecord,
  AuditEvent, AuditStore, DeviceCommandRecord, DeviceRecord, DeviceState, DeviceStore, EnrollmentRecord, EnrollmentStore,
  EnrollmentSummary, PolicyRecord, RevocationKind, RevocationRecord, SessionRecord, SessionStore, SessionSummary, SignInRecord, Store,
} from './types.js'

export { sessionIdHash } from './queries/sessions.js'

export interface SqlStoreOptions {
  /** Clock for the methods whose interface gives no `now` (revokeEnrollment, rememberNonce); default Date.now. */
  now?: () => number
  /** Names the database in error messages (a path, or a URL without its password). */
  where?: string
}

export class SqlStore implements Store {
  /** The database underneath (tests and tools; the store's methods are the API). */
  readonly db: SqlDb
  readonly #enrollments: EnrollmentQueries
  readonly #sessions: SessionQueries
  readonly #catalog: CatalogQueries
  readonly #codes: ActivationCodeQueries
  readonly #devices: DeviceQueries
  readonly #audit: AuditQueries
  readonly #admin: AdminQueries
  readonly #revocations: RevocationQueries
  readonly #signIns: SignInQueries
  readonly #ctx: QueryContext

  /** Over a database already migrated (see `SqlStore.open`, or `openStore` in openStore.ts). */
  constructor(db: SqlDb, box: SecretBox, opts: SqlStoreOptions = {}) {
    this.db = db
    this.#ctx = { db, box, now: opts.now ?? Date.now }
    this.#enrollments = new EnrollmentQueries(this.#ctx)
    this.#sessions = new SessionQueries(this.#ctx)
    this.#catalog = new CatalogQueries(this.#ctx)
    this.#codes = new ActivationCodeQueries(this.#ctx)
    this.#devices = new DeviceQueries(this.#ctx)
    this.#audit = new AuditQueries(this.#ctx)
    this.#admin = new AdminQueries(this.#ctx)
    this.#revocations = new RevocationQueries(this.#ctx)
    this.#signIns = new SignInQueries(this.#ctx)
  }

  /** Apply pending migrations, then return the store. Does not close `db` on failure. */
  static async open(db: SqlDb, box: SecretBox, opts: SqlStoreOptions = {}): Promise<SqlStore> {
    await migrate(db, opts.where ?? `(${db.dialect})`)
    return new SqlStore(db, box, opts)
  }

  // --- enrollments ---------------------------------------------------------------------------
  createEnrollment(rec: EnrollmentRecord): Promise<void> { return this.#enrollments.createEnrollment(rec) }
  getEnrollment(id: string): Promise<EnrollmentRecord | undefined> { return this.#enrollments.getEnrollment(id) }
  revokeEnrollment(id: string): Promise<boolean> { return this.#enrollments.revokeEnrollment(id) }
  countActiveEnrollments(): Promise<number> { return this.#enrollments.countActiveEnrollments() }
  listEnrollments(filter: Parameters<EnrollmentStore['listEnrollments']>[0]): Promise<EnrollmentSummary[]> { return this.#enrollments.listEnrollments(filter) }
  activeDeviceIds(userName: string): Promise<string[]> { return this.#enrollments.activeDeviceIds(userName) }

  // --- sessions and nonces -------------------------------------------------------------------
  createSession(rec: SessionRecord): Promise<void> { return this.#sessions.createSession(rec) }
  getSession(id: string): Promise<SessionRecord | undefined> { return this.#sessions.getSession(id) }
  touchSession(id: string, now: number): Promise<void> { return this.#sessions.touchSession(id, now) }
  closeSession(id: string, now: number): Promise<boolean> { return this.#sessions.closeSession(id, now) }
  closeSessionsWhere(filter: Parameters<SessionStore['closeSessionsWhere']>[0], now: number): Promise<string[]> { return this.#sessions.closeSessionsWhere(filter, now) }
  listSessions(filter: Parameters<SessionStore['listSessions']>[0]): Promise<SessionSummary[]> { return this.#sessions.listSessions(filter) }
  rememberNonce(scope: string, nonce: string, expiresAt: number): Promise<boolean> { return this.#sessions.rememberNonce(scope, nonce, expiresAt) }
  purgeExpired(now: number): Promise<number> { return this.#sessions.purgeExpired(now) }

  // --- catalog and policies ------------------------------------------------------------------
  upsertApp(app: AppRecord): Promise<void> { return this.#catalog.upsertApp(app) }
  getApp(id: string): Promise<AppRecord | undefined> { return this.#catalog.getApp(id) }
  listApps(): Promise<AppRecord[]> { return this.#catalog.listApps() }
  deleteApp(id: string): Promise<boolean> { return this.#catalog.deleteApp(id) }
  addPackage(p: AppPackageRecord): Promise<void> { return this.#catalog.addPackage(p) }
  listPackages(appId: string): Promise<AppPackageRecord[]> { return this.#catalog.listPackages(appId) }
  getPackage(appId: string, version: string): Promise<AppPackageRecord | undefined> { return this.#catalog.getPackage(appId, version) }
  upsertPolicy(p: PolicyRecord): Promise<void> { return this.#catalog.upsertPolicy(p) }
  listPolicies(): Promise<PolicyRecord[]> { return this.#catalog.listPolicies() }
  deletePolicy(id: string): Promise<boolean> { return this.#catalog.deletePolicy(id) }

  // --- activation codes ----------------------------------------------------------------------
  createActivationCode(c: ActivationCodeRecord): Promise<void> { return this.#codes.createActivationCode(c) }
  consumeActivationCode(codeHash: string, now: number): Promise<ActivationCodeRecord | undefined> { return this.#codes.consumeActivationCode(codeHash, now) }
  listActivationCodes(filter: Parameters<ActivationCodeStore['listActivationCodes']>[0]): Promise<ActivationCodeRecord[]> { return this.#codes.listActivationCodes(filter) }

  // --- devices and commands ------------------------------------------------------------------
  getDevice(userName: string, deviceId: string): Promise<DeviceRecord | undefined> { return this.#devices.getDevice(userName, deviceId) }
  setDeviceState(userName: string, deviceId: string, state: DeviceState, now: number): Promise<void> { return this.#devices.setDeviceState(userName, deviceId, state, now) }
  listDevices(filter: Parameters<DeviceStore['listDevices']>[0]): Promise<DeviceRecord[]> { return this.#devices.listDevices(filter) }
  createCommand(c: DeviceCommandRecord): Promise<void> { return this.#devices.createCommand(c) }
  openCommands(userName: string, deviceId: string, appId?: string): Promise<DeviceCommandRecord[]> { return this.#devices.openCommands(userName, deviceId, appId) }
  markCommandDelivered(id: string, now: number): Promise<void> { return this.#devices.markCommandDelivered(id, now) }
  acknowledgeCommand(id: string, now: number): Promise<boolean> { return this.#devices.acknowledgeCommand(id, now) }
  listCommands(filter: Parameters<DeviceStore['listCommands']>[0]): Promise<DeviceCommandRecord[]> { return this.#devices.listCommands(filter) }

  // --- audit ---------------------------------------------------------------------------------
  appendAudit(e: AuditEvent): Promise<number> { return this.#audit.appendAudit(e) }
  queryAudit(filter: Parameters<AuditStore['queryAudit']>[0]): Promise<AuditEvent[]> { return this.#audit.queryAudit(filter) }

  // --- administrators ------------------------------------------------------------------------
  upsertAdminUser(u: AdminUserRecord): Promise<void> { return this.#admin.upsertAdminUser(u) }
  getAdminUser(name: string): Promise<AdminUserRecord | undefined> { return this.#admin.getAdminUser(name) }
  listAdminUsers(): ReturnType<AdminStore['listAdminUsers']> { return this.#admin.listAdminUsers() }
  deleteAdminUser(name: string): Promise<boolean> { return this.#admin.deleteAdminUser(name) }
  createAdminToken(t: AdminTokenRecord): Promise<void> { return this.#admin.createAdminToken(t) }
  getAdminToken(tokenHash: string): Promise<AdminTokenRecord | undefined> { return this.#admin.getAdminToken(tokenHash) }
  deleteAdminToken(tokenHash: string): Promise<boolean> { return this.#admin.deleteAdminToken(tokenHash) }

  // --- revocations ---------------------------------------------------------------------------
  appendRevocation(kind: RevocationKind, target: string, now: number): Promise<number> { return this.#revocations.appendRevocation(kind, target, now) }
  revocationsSince(seq: number, limit: number): Promise<RevocationRecord[]> { return this.#revocations.revocationsSince(seq, limit) }
  latestRevocationSeq(): Promise<number> { return this.#revocations.latestRevocationSeq() }

  // --- sign-ins ------------------------------------------------------------------------------
  recordSignIn(s: SignInRecord): Promise<void> { return this.#signIns.recordSignIn(s) }
  lastSignIn(enrollmentId: string): Promise<SignInRecord | undefined> { return this.#signIns.lastSignIn(enrollmentId) }

  // --- maintenance ---------------------------------------------------------------------------
  /**
   * Re-seal every enrollments.shared_key and sessions.keys row whose key id is not the box's
   * current one, 500 rows per short transaction; returns rows rewritten. Until it has run, rows
   * sealed with an older key still open (the ring keeps old keys).
   */
  reencryptSecrets(): Promise<number> { return reencryptSecrets(this.#ctx) }
  schemaVersion(): Promise<number> { return schemaVersion(this.db) }
  close(): Promise<void> { return this.db.close() }
}
