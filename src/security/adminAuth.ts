/**
 * Who may use the admin and self-service APIs, and as what.
 *
 * Admins (store: admin_users, scrypt hashes) sign in with `POST /admin/v1/login` and get a bearer
 * token: 256 random bits, only its SHA-256 stored, with an expiry. The same token is set as an
 * HttpOnly Secure SameSite=Strict cookie for the dashboard. A cookie-authenticated call that
 * changes state must carry `x-gatehouse-csrf` equal to HMAC-SHA256(token, "gatehouse admin csrf
 * v1") — a double-submit value bound to the cookie, handed to the page at login (and by
 * `GET /admin/v1/me`), compared in constant time. Bearer calls need no CSRF header: a browser
 * never adds an Authorization header on its own.
 *
 * Self-service users sign in with their directory credentials (the server's Authenticator) and
 * get a short-lived bearer token held in memory only (lost on restart: they sign in again).
 *
 * Roles:
 *   admin     everything
 *   helpdesk  read users/devices/sessions/enrollments/apps/policies/codes/commands;
 *             lock/unlock/wipe commands; activation codes
 *   auditor   read everything, including the audit log and the server log view; change nothing
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { AuthenticationError, CsrfError, ForbiddenError, MalformedError } from '../errors.js'
import type { Logger } from '../observability/logger.js'
import type { AdminRole, AdminStore } from '../store/types.js'
import type { AuditLog } from './audit.js'
import type { Authenticator } from './enrollment.js'
import { LoginLimiter } from './loginLimiter.js'
import { hashPassword, verifyPassword } from './users.js'

export const ADMIN_ROLES: readonly AdminRole[] = ['admin', 'helpdesk', 'auditor']

export type Permission =
  | 'read' | 'audit.read' | 'logs.read'
  | 'commands.issue' | 'commands.retire' | 'codes.issue'
  | 'catalog.write' | 'policies.write' | 'admins.manage' | 'revoke'

const ALL: readonly Permission[] = ['read', 'audit.read', 'logs.read', 'commands.issue', 'commands.retire', 'codes.issue', 'catalog.write', 'policies.write', 'admins.manage', 'revoke']
const ROLE_PERMISSIONS: Record<AdminRole, ReadonlySet<Permission>> = {
  admin: new Set(ALL),
  helpdesk: new Set<Permission>(['read', 'commands.issue', 'codes.issue']),
  auditor: new Set<Permission>(['read', 'audit.read', 'logs.read']),
}

export function can(role: AdminRole, perm: Permission): boolean {
  return ROLE_PERMISSIONS[role].has(perm)
}

export const ADMIN_COOKIE = 'gh_admin'
export const CSRF_HEADER = 'x-gatehouse-csrf'
const ADMIN_TOKEN_RE = /^gha_[A-Za-z0-9_-]{43}$/
const SELF_TOKEN_RE = /^ghs_[A-Za-z0-9_-]{43}$/
export const NAME_RE = /^[A-Za-z0-9._@-]{1,128}$/
export const MIN_ADMIN_PASSWORD = 12
const MAX_PASSWORD = 1024

export const sha256Hex = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex')
const newToken = (prefix: string) => `${prefix}${randomBytes(32).toString('base64url')}`
/** The CSRF value bound to an admin token. */
export const csrfFor = (token: string) => createHmac('sha256', token).update('gatehouse admin csrf v1').digest('base64url')

function safeEqualStr(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8')
  const y = Buffer.from(b, 'utf8')
  return x.length === y.length && timingSafeEqual(x, y)
}

export interface AdminPrincipal {
  name: string
  role: AdminRole
  tokenHash: string
  via: 'bearer' | 'cookie'
  /** Only for cookie sessions: what the page must echo in x-gatehouse-csrf. */
  csrfToken?: string
  expiresAt: number
}

export interface SelfPrincipal {
  user: string
  groups: string[]
  tokenHash: string
  expiresAt: number
}

export interface AdminAuthOptions {
  store: AdminStore
  auth: Authenticator
  audit: AuditLog
  log: Logger
  /** Dashboard/API sign-in token lifetime (default 8 h). */
  adminTokenTtlMs?: number
  /** Self-service token lifetime (default 15 min). */
  selfTokenTtlMs?: number
  /** Failed sign-ins allowed per remote and per name within a minute (default 10). */
  loginFailuresPerMinute?: number
  now?: () => number
}

function bearerOf(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization
  if (typeof h !== 'string') return undefined
  const m = /^Bearer +(\S+)\s*$/i.exec(h)
  return m ? m[1] : ''
}

function cookieOf(req: IncomingMessage, name: string): string | undefined {
  const h = req.headers.cookie
  if (typeof h !== 'string') return undefined
  for (const part of h.split(';')) {
    const eq = part.indexOf('=')
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim()
  }
  return undefined
}

const SAFE_METHODS = new Set(['GET', 'HEAD'])

export class AdminAuth {
  readonly adminTokenTtlMs: number
  readonly selfTokenTtlMs: number
  private readonly limiter: LoginLimiter
  private readonly selfTokens = new Map<string, SelfPrincipal>()
  private dummyHash: Promise<string> | undefined

  constructor(private readonly o: AdminAuthOptions) {
    this.adminTokenTtlMs = o.adminTokenTtlMs ?? 8 * 3600_000
    this.selfTokenTtlMs = o.selfTokenTtlMs ?? 15 * 60_000
    this.limiter = new LoginLimiter({ max: o.loginFailuresPerMinute ?? 10, windowMs: 60_000, now: o.now })
  }

  private now(): number {
    return this.o.now ? this.o.now() : Date.now()
  }

  /** A real hash to check unknown names against, so they take as long as known ones. */
  private dummy(): Promise<string> {
    return (this.dummyHash ??= hashPassword(randomBytes(16).toString('hex')))
  }

  private async signInGuard(kind: 'admin' | 'self', name: string, remote: string, verify: () => Promise<boolean>): Promise<void> {
    const keys = [`${kind}:remote:${remote}`, `${kind}:name:${name.toLowerCase()}`]
    try {
      this.limiter.check(keys)
    } catch (err) {
      await this.o.audit.record({ actor: name, actorRole: kind === 'admin' ? 'anonymous' : 'user', action: `${kind}.login_throttled`, target: `${kind}:${name}`, remote })
      throw err
    }
    if (await verify()) return
    this.limiter.fail(keys)
    await this.o.audit.record({ actor: name, actorRole: kind === 'admin' ? 'anonymous' : 'user', action: `${kind}.login_failed`, target: `${kind}:${name}`, remote })
    throw new AuthenticationError('invalid credentials')
  }

  /** Sign an admin in; the token is returned once and never stored. */
  async login(name: unknown, password: unknown, remote: string): Promise<{ token: string; csrfToken: string; expiresAt: number; admin: { name: string; role: AdminRole } }> {
    if (typeof name !== 'string' || !NAME_RE.test(name)) throw new MalformedError('name must be 1-128 characters of A-Z a-z 0-9 . _ @ -')
    if (typeof password !== 'string' || password.length === 0 || password.length > MAX_PASSWORD) throw new MalformedError(`password must be a string of 1..${MAX_PASSWORD} characters`)
    let role: AdminRole | undefined
    await this.signInGuard('admin', name, remote, async () => {
      const user = await this.o.store.getAdminUser(name)
      const ok = await verifyPassword(password, user ? user.passwordHash : await this.dummy())
      role = ok && user ? user.role : undefined
      return role !== undefined
    })
    const { token, expiresAt } = await this.issueAdminToken(name, this.adminTokenTtlMs)
    await this.o.audit.record({ actor: name, actorRole: role!, action: 'admin.login', target: `admin:${name}`, remote })
    return { token, csrfToken: csrfFor(token), expiresAt, admin: { name, role: role! } }
  }

  /** A new bearer token for an existing admin (sign-in, `gatehouse admin token`). */
  async issueAdminToken(name: string, ttlMs: number): Promise<{ token: string; expiresAt: number }> {
    const token = newToken('gha_')
    const now = this.now()
    const expiresAt = now + ttlMs
    await this.o.store.createAdminToken({ tokenHash: sha256Hex(token), adminName: name, expiresAt, createdAt: now })
    return { token, expiresAt }
  }

  /**
   * The admin behind a request: `Authorization: Bearer` first, else the dashboard cookie (then a
   * state-changing method needs the CSRF header). 401 without valid credentials.
   */
  async authenticate(req: IncomingMessage, method: string): Promise<AdminPrincipal> {
    const bearer = bearerOf(req)
    const cookie = bearer === undefined ? cookieOf(req, ADMIN_COOKIE) : undefined
    const token = bearer ?? cookie
    if (!token || !ADMIN_TOKEN_RE.test(token)) throw new AuthenticationError('sign in first (missing or invalid admin token)')
    const tokenHash = sha256Hex(token)
    const rec = await this.o.store.getAdminToken(tokenHash)
    if (!rec || rec.expiresAt <= this.now()) {
      if (rec) await this.o.store.deleteAdminToken(tokenHash)
      throw new AuthenticationError('sign in first (missing or invalid admin token)')
    }
    // The role is read on every call: a changed or removed admin takes effect at once.
    const user = await this.o.store.getAdminUser(rec.adminName)
    if (!user) throw new AuthenticationError('sign in first (missing or invalid admin token)')
    const via = bearer !== undefined ? 'bearer' : 'cookie'
    const csrfToken = via === 'cookie' ? csrfFor(token) : undefined
    if (csrfToken && !SAFE_METHODS.has(method)) {
      const sent = req.headers[CSRF_HEADER]
      if (typeof sent !== 'string' || !safeEqualStr(sent, csrfToken)) throw new CsrfError(`${CSRF_HEADER} header missing or wrong`)
    }
    return { name: user.name, role: user.role, tokenHash, via, csrfToken, expiresAt: rec.expiresAt }
  }

  require(p: AdminPrincipal, perm: Permission): void {
    if (!can(p.role, perm)) throw new ForbiddenError(`role ${p.role} may not do this`)
  }

  async logout(p: AdminPrincipal): Promise<void> {
    await this.o.store.deleteAdminToken(p.tokenHash)
  }

  /** Set-Cookie value for the dashboard session. */
  loginCookie(token: string, expiresAt: number): string {
    const maxAge = Math.max(0, Math.floor((expiresAt - this.now()) / 1000))
    return `${ADMIN_COOKIE}=${token}; Path=/admin; Max-Age=${maxAge}; HttpOnly; Secure; SameSite=Strict`
  }

  clearCookie(): string {
    return `${ADMIN_COOKIE}=; Path=/admin; Max-Age=0; HttpOnly; Secure; SameSite=Strict`
  }

  /** Create or replace an admin (validated; the password is hashed here). */
  async putAdmin(name: string, role: AdminRole, password: string): Promise<void> {
    validateAdmin(name, role, password)
    await this.o.store.upsertAdminUser({ name, role, passwordHash: await hashPassword(password), createdAt: this.now() })
  }

  // --- self-service -------------------------------------------------------------------------

  async selfLogin(user: unknown, password: unknown, remote: string): Promise<{ token: string; expiresAt: number; user: string }> {
    if (typeof user !== 'string' || user.length === 0 || user.length > 256) throw new MalformedError('user must be a string of 1..256 characters')
    if (typeof password !== 'string' || password.length === 0 || password.length > MAX_PASSWORD) throw new MalformedError(`password must be a string of 1..${MAX_PASSWORD} characters`)
    let who: { name: string; groups: string[] } | null = null
    await this.signInGuard('self', user, remote, async () => {
      who = await this.o.auth.verify(user, password)
      return who !== null
    })
    const { name, groups } = who as unknown as { name: string; groups: string[] }
    const token = newToken('ghs_')
    const now = this.now()
    this.sweepSelf(now)
    const principal: SelfPrincipal = { user: name, groups, tokenHash: sha256Hex(token), expiresAt: now + this.selfTokenTtlMs }
    this.selfTokens.set(principal.tokenHash, principal)
    await this.o.audit.record({ actor: name, actorRole: 'user', action: 'self.login', target: `user:${name}`, remote })
    return { token, expiresAt: principal.expiresAt, user: name }
  }

  authenticateSelf(req: IncomingMessage): SelfPrincipal {
    const token = bearerOf(req)
    if (!token || !SELF_TOKEN_RE.test(token)) throw new AuthenticationError('sign in first (missing or invalid token)')
    const p = this.selfTokens.get(sha256Hex(token))
    if (!p || p.expiresAt <= this.now()) throw new AuthenticationError('sign in first (missing or invalid token)')
    return p
  }

  selfLogout(p: SelfPrincipal): void {
    this.selfTokens.delete(p.tokenHash)
  }

  /** Drop expired self-service tokens; bound the table (oldest first) so it cannot grow without end. */
  private sweepSelf(now: number): void {
    for (const [k, v] of this.selfTokens) if (v.expiresAt <= now) this.selfTokens.delete(k)
    while (this.selfTokens.size >= 50_000) this.selfTokens.delete(this.selfTokens.keys().next().value!)
  }
}

export function validateAdmin(name: unknown, role: unknown, password: unknown): void {
  if (typeof name !== 'string' || !NAME_RE.test(name)) throw new MalformedError('name must be 1-128 characters of A-Z a-z 0-9 . _ @ -')
  if (typeof role !== 'string' || !(ADMIN_ROLES as readonly string[]).includes(role)) throw new MalformedError(`role must be one of ${ADMIN_ROLES.join(', ')}`)
  if (typeof password !== 'string' || password.length < MIN_ADMIN_PASSWORD || password.length > MAX_PASSWORD) {
    throw new MalformedError(`password must be ${MIN_ADMIN_PASSWORD} to ${MAX_PASSWORD} characters`)
  }
}
