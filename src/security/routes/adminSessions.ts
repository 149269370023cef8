/**
 * Admin API: sessions (summaries only: never keys, never ids — a session is named by the SHA-256
 * of its id) and enrollments (never the shared key), with revocation of either.
 */
import { NotFoundError } from '../../errors.js'
import type { SessionSummary } from '../../store/types.js'
import type { RouteSpec } from '../router.js'
import type { SecurityServices } from '../services.js'
import {
  adminRoute, auditAdmin, ID_RE, listBody, onlyFields, onlyQuery, PAGE_PARAMS, paging, param, qBool, qOneOf, qStr, readAll,
} from './adminKit.js'
import { optionalReason } from './adminUsers.js'

const ID_HASH_RE = /^[0-9a-f]{64}$/
const ENROLLMENT_ID_RE = /^[A-Za-z0-9-]{1,64}$/

export function adminSessionRoutes(s: SecurityServices): RouteSpec[] {
  return [
    adminRoute(s, {
      method: 'GET', path: '/admin/v1/sessions', perm: 'read',
      async handler({ query }) {
        onlyQuery(query, ['user', 'device', 'open', ...PAGE_PARAMS])
        const p = paging(query)
        const items = await s.store.listSessions({ userName: qStr(query, 'user'), deviceId: qStr(query, 'device', ID_RE), open: qBool(query, 'open'), ...p })
        return { status: 200, body: listBody(items, p) }
      },
    }),
    adminRoute(s, {
      method: 'POST', path: '/admin/v1/sessions/:idHash/revoke', perm: 'revoke',
      async handler(ctx) {
        onlyFields(ctx.body, ['reason'])
        const idHash = param(ctx.params, 'idHash', ID_HASH_RE)
        const reason = optionalReason(ctx.body)
        const open = await readAll((p) => s.store.listSessions({ open: true, ...p }))
        const session: SessionSummary | undefined = open.find((x) => x.idHash === idHash)
        if (!session) throw new NotFoundError('no open session with this id hash')
        // The store closes sessions by id or by filter; the narrowest filter that holds this
        // session is its enrollment (one app on one device). The device opens a new session
        // with its enrollment when it needs one; to keep it out, revoke the enrollment.
        const closed = await s.store.closeSessionsWhere({ enrollmentId: session.enrollmentId }, Date.now())
        for (const h of closed) await s.hub.revokeSession(h)
        await auditAdmin(s, ctx, 'session.revoke', `session:${idHash}`, {
          user: session.userName, deviceId: session.deviceId, appId: session.appId, sessionsClosed: closed.length, reason,
        })
        return { status: 200, body: { idHash, sessionsClosed: closed.length } }
      },
    }),
    adminRoute(s, {
      method: 'GET', path: '/admin/v1/enrollments', perm: 'read',
      async handler({ query }) {
        onlyQuery(query, ['user', 'device', 'app', 'status', ...PAGE_PARAMS])
        const p = paging(query)
        const items = await s.store.listEnrollments({
          userName: qStr(query, 'user'), deviceId: qStr(query, 'device', ID_RE), appId: qStr(query, 'app', ID_RE),
          status: qOneOf(query, 'status', ['active', 'revoked'] as const), ...p,
        })
        return { status: 200, body: listBody(items, p) }
      },
    }),
    adminRoute(s, {
      method: 'GET', path: '/admin/v1/enrollments/:id', perm: 'read',
      async handler({ params, query }) {
        onlyQuery(query, [])
        const id = param(params, 'id', ENROLLMENT_ID_RE)
        const e = await s.store.getEnrollment(id)
        if (!e) throw new NotFoundError('no such enrollment')
        const { sharedKey: _k, ...summary } = e
        return { status: 200, body: summary }
      },
    }),
    adminRoute(s, {
      method: 'POST', path: '/admin/v1/enrollments/:id/revoke', perm: 'revoke',
      async handler(ctx) {
        onlyFields(ctx.body, ['reason'])
        const id = param(ctx.params, 'id', ENROLLMENT_ID_RE)
        const reason = optionalReason(ctx.body)
        const e = await s.store.getEnrollment(id)
        if (!e) throw new NotFoundError('no such enrollment')
        const revoked = await s.store.revokeEnrollment(id)
        if (revoked) await s.hub.revokeEnrollment(id)
        await auditAdmin(s, ctx, 'enrollment.revoke', `enrollment:${id}`, { user: e.userName, deviceId: e.deviceId, appId: e.appId, changed: revoked, reason })
        return { status: 200, body: { id, status: 'revoked', changed: revoked } }
      },
    }),
  ]
}
