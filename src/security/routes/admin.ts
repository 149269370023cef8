/**
 * The admin API (/admin/v1/…, access 'admin': only from security.access.adminCidrs), one module
 * per resource. docs/admin-api.md describes every endpoint.
 */
import type { RouteSpec } from '../router.js'
import type { SecurityServices } from '../services.js'
import { adminAuditRoutes } from './adminAudit.js'
import { adminCatalogRoutes } from './adminCatalog.js'
import { adminCodeRoutes } from './adminCodes.js'
import { adminDeviceRoutes } from './adminDevices.js'
import { adminPolicyRoutes } from './adminPolicies.js'
import { adminSessionRoutes } from './adminSessions.js'
import { adminSignInRoutes, adminUserRoutes } from './adminUsers.js'

export function adminRoutes(s: SecurityServices): RouteSpec[] {
  return [
    ...adminSignInRoutes(s),
    ...adminUserRoutes(s),
    ...adminDeviceRoutes(s),
    ...adminSessionRoutes(s),
    ...adminCatalogRoutes(s),
    ...adminPolicyRoutes(s),
    ...adminCodeRoutes(s),
    ...adminAuditRoutes(s),
  ]
}
