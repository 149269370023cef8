/**
 * Admin API: the audit log (query with filters and paging) and the server's recent warnings and
 * errors (an in-memory ring fed by the logger after redaction: src/observability/recentErrors.ts).
 */
import { MalformedError } from '../../errors.js'
import type { RouteSpec } from '../router.js'
import type { SecurityServices } from '../services.js'
import { adminRoute, listBody, onlyQuery, PAGE_PARAMS, paging, qOneOf, qStr, qTime } from './adminKit.js'

// Control characters are what the pattern refuses.
// eslint-disable-next-line no-control-regex
const FILTER_RE = /^[^\u0000-\u001f]{1,300}$/

export function adminAuditRoutes(s: SecurityServices): RouteSpec[] {
  return [
    adminRoute(s, {
      method: 'GET', path: '/admin/v1/audit', perm: 'audit.read',
      async handler({ query }) {
        onlyQuery(query, ['actor', 'action', 'target', 'since', 'until', ...PAGE_PARAMS])
        const p = paging(query)
        const since = qTime(query, 'since')
        const until = qTime(query, 'until')
        if (since !== undefined && until !== undefined && since > until) throw new MalformedError('since must not be after until')
        const items = await s.audit.query({
          actor: qStr(query, 'actor', FILTER_RE), action: qStr(query, 'action', FILTER_RE), target: qStr(query, 'target', FILTER_RE), since, until, ...p,
        })
        return { status: 200, body: listBody(items, p) }
      },
    }),
    adminRoute(s, {
      method: 'GET', path: '/admin/v1/logs/errors', perm: 'logs.read',
      async handler({ query }) {
        onlyQuery(query, ['limit', 'after', 'level'])
        const { limit } = paging(new URLSearchParams(query.has('limit') ? { limit: query.get('limit')! } : {}))
        const after = query.get('after')
        if (after !== null && !/^\d{1,15}$/.test(after)) throw new MalformedError('after must be a non-negative integer (a seq seen before)')
        const level = qOneOf(query, 'level', ['warn', 'error', 'fatal'] as const)
        const ring = s.recentErrors
        const items = ring ? ring.list({ limit, after: after === null ? undefined : Number(after), levels: level ? [level] : undefined }) : []
        return { status: 200, body: { items, capacity: ring?.capacity ?? 0, total: ring?.total ?? 0 } }
      },
    }),
  ]
}
