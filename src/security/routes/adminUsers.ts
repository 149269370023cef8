/**
 * Admin API: sign-in (login, logout, me), administrators, and users (local user file + users seen
 * in enrollments), including revoking a user everywhere.
 */
import { ConflictError, MalformedError, NotFoundError } from '../../errors.js'
import type { AdminRole } from '../../store/types.js'
import { NAME_RE, validateAdmin } from '../adminAuth.js'
import { listDevices, listUsers } from '../inventory.js'
import type { RouteSpec } from '../router.js'
import type { SecurityServices } from '../services.js'
import {
  adminRoute, auditAdmin, onlyFields, onlyQuery, PAGE_PARAMS, paging, param, qStr, readAll, slicePage, USER_RE,
} from './adminKit.js'

export function adminSignInRoutes(s: SecurityServices): RouteSpec[] {
  return [
    {
      method: 'POST', path: '/admin/v1/login', access: 'admin',
      async handler({ body, remote }) {
        onlyFields(body, ['name', 'password'])
        const r = await s.adminAuth.login(body.name, body.password, remote)
        return {
          status: 200,
          body: { token: r.token, csrfToken: r.csrfToken, expiresAt: r.expiresAt, admin: r.admin },
          headers: { 'set-cookie': s.adminAuth.loginCookie(r.token, r.expiresAt) },
        }
      },
    },
    adminRoute(s, {
      method: 'POST', path: '/admin/v1/logout', perm: 'read',
      async handler(ctx) {
        onlyFields(ctx.body, [])
        await s.adminAuth.logout(ctx.admin)
        await auditAdmin(s, ctx, 'admin.logout', `admin:${ctx.admin.name}`)
        return { status: 204, headers: { 'set-cookie': s.adminAuth.clearCookie() } }
      },
    }),
    adminRoute(s, {
      method: 'GET', path: '/admin/v1/me', perm: 'read',
      async handler({ admin, query }) {
        onlyQuery(query, [])
        return { status: 200, body: { name: admin.name, role: admin.role, via: admin.via, expiresAt: admin.expiresAt, csrfToken: admin.csrfToken ?? null } }
      },
    }),
  ]
}

export function adminUserRoutes(s: SecurityServices): RouteSpec[] {
  return [
    // --- administrators -------------------------------------------------------------------
    adminRoute(s, {
      method: 'GET', path: '/admin/v1/admins', perm: 'read',
      async handler({ query }) {
        onlyQuery(query, PAGE_PARAMS)
        return { status: 200, body: slicePage(await s.store.listAdminUsers(), paging(query)) }
      },
    }),
    adminRoute(s, {
      method: 'PUT', path: '/admin/v1/admins/:name', perm: 'admins.manage',
      async handler(ctx) {
        onlyFields(ctx.body, ['role', 'password'])
        const name = param(ctx.params, 'name', NAME_RE)
        validateAdmin(name, ctx.body.role, ctx.body.password)
        const role = ctx.body.role as AdminRole
        const existing = await s.store.getAdminUser(name)
        if (existing?.role === 'admin' && role !== 'admin') await assertAnotherAdmin(s, name)
        await s.adminAuth.putAdmin(name, role, ctx.body.password as string)
        await auditAdmin(s, ctx, existing ? 'admin.update' : 'admin.create', `admin:${name}`, { role })
        const saved = await s.store.getAdminUser(name)
        return { status: existing ? 200 : 201, body: { name, role, createdAt: saved?.createdAt ?? null } }
      },
    }),
    adminRoute(s, {
      method: 'DELETE', path: '/admin/v1/admins/:name', perm: 'admins.manage',
      async handler(ctx) {
        const name = param(ctx.params, 'name', NAME_RE)
        const existing = await s.store.getAdminUser(name)
        if (!existing) throw new NotFoundError('no such admin')
        if (existing.role === 'admin') await assertAnotherAdmin(s, name)
        await s.store.deleteAdminUser(name)
        await auditAdmin(s, ctx, 'admin.delete', `admin:${name}`, { role: existing.role })
        return { status: 204 }
      },
    }),

    // --- users ----------------------------------------------------------------------------
    adminRoute(s, {
      method: 'GET', path: '/admin/v1/users', perm: 'read',
      async handler({ query }) {
        onlyQuery(query, ['q', ...PAGE_PARAMS])
        const p = paging(query)
        return { status: 200, body: slicePage(await listUsers(s.store, s.auth, qStr(query, 'q')), p) }
      },
    }),
    adminRoute(s, {
      method: 'GET', path: '/admin/v1/users/:user', perm: 'read',
      async handler({ params, query }) {
        onlyQuery(query, [])
        const user = param(params, 'user', USER_RE)
        const known = (await listUsers(s.store, s.auth)).find((u) => u.name === user)
        if (!known) throw new NotFoundError('no such user')
        const [devices, sessions] = await Promise.all([
          listDevices(s.store, { userName: user }),
          readAll((p) => s.store.listSessions({ userName: user, open: true, ...p })),
        ])
        return { status: 200, body: { ...known, deviceList: devices, openSessions: sessions } }
      },
    }),
    adminRoute(s, {
      method: 'POST', path: '/admin/v1/users/:user/revoke', perm: 'revoke',
      async handler(ctx) {
        onlyFields(ctx.body, ['reason'])
        const user = param(ctx.params, 'user', USER_RE)
        const reason = optionalReason(ctx.body)
        const enrollments = await readAll((p) => s.store.listEnrollments({ userName: user, status: 'active', ...p }))
        const devices = await listDevices(s.store, { userName: user })
        if (enrollments.length === 0 && devices.length === 0) throw new NotFoundError('no such user in enrollments')
        // State first (enrollments revoked, sessions closed), then the push: a proxy that drops
        // the sessions and asks again hears "not valid".
        const closed = await s.store.closeSessionsWhere({ userName: user }, Date.now())
        let revoked = 0
        for (const e of enrollments) if (await s.store.revokeEnrollment(e.id)) revoked++
        await s.hub.revokeUser(user)
        await auditAdmin(s, ctx, 'user.revoke', `user:${user}`, { enrollmentsRevoked: revoked, sessionsClosed: closed.length, reason })
        return { status: 200, body: { user, enrollmentsRevoked: revoked, sessionsClosed: closed.length } }
      },
    }),
  ]
}

export function optionalReason(body: Record<string, unknown>): string | undefined {
  const r = body.reason
  if (r === undefined) return undefined
  if (typeof r !== 'string' || r.length > 500) throw new MalformedError('reason must be a string of at most 500 characters')
  return r
}

/** Refuse to demote or remove the last admin: nobody could manage admins any more. */
async function assertAnotherAdmin(s: SecurityServices, name: string): Promise<void> {
  const others = (await s.store.listAdminUsers()).filter((a) => a.role === 'admin' && a.name !== name)
  if (others.length === 0) throw new ConflictError('this is the last admin; create another admin first')
}
