/**
 * Admin API: one-time activation codes for enrollment (ActivationCodeService,
 * src/security/activationCodes.ts). The code is in the answer to the POST only; listings and the
 * audit log never show it (the store keeps its hash).
 */
import type { RouteSpec } from '../router.js'
import type { SecurityServices } from '../services.js'
import { adminRoute, auditAdmin, bodyInt, bodyReqStr, bodyStr, ID_RE, listBody, onlyFields, onlyQuery, PAGE_PARAMS, paging, qStr, USER_RE } from './adminKit.js'

export function adminCodeRoutes(s: SecurityServices): RouteSpec[] {
  return [
    adminRoute(s, {
      method: 'GET', path: '/admin/v1/activation-codes', perm: 'read',
      async handler({ query }) {
        onlyQuery(query, ['user', ...PAGE_PARAMS])
        const p = paging(query)
        const items = await s.activationCodes.list({ userName: qStr(query, 'user'), ...p })
        // The hash is not secret, but nothing needs it: a code is named by user and times.
        return { status: 200, body: listBody(items.map(({ codeHash: _h, ...rest }) => rest), p) }
      },
    }),
    adminRoute(s, {
      method: 'POST', path: '/admin/v1/activation-codes', perm: 'codes.issue',
      async handler(ctx) {
        onlyFields(ctx.body, ['userName', 'appId', 'ttlSeconds'])
        const userName = bodyReqStr(ctx.body, 'userName', { re: USER_RE })
        const appId = bodyStr(ctx.body, 'appId', { max: 128, re: ID_RE, optional: true })
        const ttlSeconds = bodyInt(ctx.body, 'ttlSeconds', 60, 30 * 86400)
        const r = await s.activationCodes.issue({ userName, appId, ttlSeconds, createdBy: `admin:${ctx.admin.name}` })
        await auditAdmin(s, ctx, 'activation_code.issue', `user:${userName}`, { appId: appId ?? null, expiresAt: r.expiresAt })
        return { status: 201, body: { code: r.code, expiresAt: r.expiresAt, userName, appId: appId ?? null } }
      },
    }),
  ]
}
