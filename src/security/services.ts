import type { Logger } from '../observability/logger.js'
import type { RecentErrors } from '../observability/recentErrors.js'
import type { Store } from '../store/types.js'
import type { AdminAuth } from './adminAuth.js'
import type { ActivationCodeService } from './activationCodes.js'
import type { AuditLog } from './audit.js'
import type { CatalogService } from './catalog.js'
import type { CommandService } from './commands.js'
import type { Authenticator, Enroller } from './enrollment.js'
import type { SecurityMetrics } from './metrics.js'
import type { PolicyService } from './policies.js'
import type { RevocationHub } from './revocationHub.js'
import type { SessionService } from './sessions.js'
import type { SiteMap } from './sites.js'

/** What the route modules in routes/ get from the server: built once at start-up. */
export interface SecurityServices {
  store: Store
  sessions: SessionService
  enroller: Enroller
  metrics: SecurityMetrics
  log: Logger
  /** Revocation log + push to the proxies (revocationHub.ts). */
  hub: RevocationHub
  /** Append-only audit log (audit.ts). */
  audit: AuditLog
  /** Admin and self-service sign-in, tokens, roles (adminAuth.ts). */
  adminAuth: AdminAuth
  /** The server's sign-in provider (local users, LDAP): self-service login, user listing. */
  auth: Authenticator
  /** Recent warn/error log lines of this process (admin log view); undefined for a foreign logger. */
  recentErrors: RecentErrors | undefined
  /** App catalog: apps, versions, routes, packages, update checks (catalog.ts). */
  catalog: CatalogService
  /** Session and device policies per global/group/app (policies.ts). */
  policies: PolicyService
  /** One-time enrollment codes (activationCodes.ts). */
  activationCodes: ActivationCodeService
  /** Lock, unlock, wipe, retire (commands.ts). */
  commands: CommandService
  /** Multi-site: the site and proxy URL of a user's groups (sites.ts). */
  sites: SiteMap
}
