/**
 * Admin API: session and device policies (global, per group, per app) through the PolicyService
 * (src/security/policies.ts), and the effective policy for a set of groups and an app.
 */
import { MalformedError, NotFoundError } from '../../errors.js'
import type { PolicyScope } from '../../store/types.js'
import type { RouteSpec } from '../router.js'
import type { SecurityServices } from '../services.js'
import { adminRoute, auditAdmin, bodyOneOf, bodyStr, onlyFields, onlyQuery, PAGE_PARAMS, paging, param, qStr, slicePage } from './adminKit.js'

// Control characters are what the pattern refuses.
// eslint-disable-next-line no-control-regex
const POLICY_ID_RE = /^[^\u0000-\u001f/]{1,300}$/
const LIMIT_FIELDS = ['maxSessionLifetimeSeconds', 'idleTimeoutSeconds', 'reauthIntervalSeconds', 'maxDevicesPerUser'] as const

export function adminPolicyRoutes(s: SecurityServices): RouteSpec[] {
  return [
    adminRoute(s, {
      method: 'GET', path: '/admin/v1/policies', perm: 'read',
      async handler({ query }) {
        onlyQuery(query, PAGE_PARAMS)
        return { status: 200, body: slicePage(await s.policies.list(), paging(query)) }
      },
    }),
    adminRoute(s, {
      method: 'GET', path: '/admin/v1/policies/effective', perm: 'read',
      async handler({ query }) {
        onlyQuery(query, ['groups', 'app'])
        const app = qStr(query, 'app', /^[A-Za-z0-9._:@-]{1,128}$/)
        if (!app) throw new MalformedError('app is required')
        const groups = (query.get('groups') ?? '').split(',').filter(Boolean)
        if (groups.length > 100 || groups.some((g) => g.length > 256)) throw new MalformedError('groups must be at most 100 comma-separated names')
        return { status: 200, body: await s.policies.effective({ groups, appId: app }) }
      },
    }),
    adminRoute(s, {
      method: 'PUT', path: '/admin/v1/policies/:id', perm: 'policies.write',
      async handler(ctx) {
        onlyFields(ctx.body, ['scope', 'scopeId', ...LIMIT_FIELDS])
        const id = param(ctx.params, 'id', POLICY_ID_RE)
        const scope = bodyOneOf<PolicyScope>(ctx.body, 'scope', ['global', 'group', 'app'])
        const scopeId = ctx.body.scopeId === '' ? '' : bodyStr(ctx.body, 'scopeId', { optional: true })
        const limits: Record<string, unknown> = {}
        for (const f of LIMIT_FIELDS) if (ctx.body[f] !== undefined) limits[f] = ctx.body[f]
        const policies = s.policies
        const existed = (await policies.list()).some((p) => p.id === id)
        const rec = await policies.upsert({ id, scope, scopeId, ...limits })
        await auditAdmin(s, ctx, existed ? 'policy.update' : 'policy.create', `policy:${id}`, { ...rec })
        return { status: existed ? 200 : 201, body: rec }
      },
    }),
    adminRoute(s, {
      method: 'DELETE', path: '/admin/v1/policies/:id', perm: 'policies.write',
      async handler(ctx) {
        const id = param(ctx.params, 'id', POLICY_ID_RE)
        if (!(await s.policies.remove(id))) throw new NotFoundError('no such policy')
        await auditAdmin(s, ctx, 'policy.delete', `policy:${id}`)
        return { status: 204 }
      },
    }),
  ]
}
