/**
 * Self-service API (/self/v1/…, access 'self': only from security.access.selfServiceCidrs). A
 * user signs in with the same credentials as at enrollment (the server's Authenticator), gets a
 * short-lived bearer token, sees their own devices and enrollments, and can lock, wipe or retire
 * their OWN devices (lost phone). Unlock stays with the helpdesk: a thief with the password must
 * not be able to undo a lock. Every action is audited with the user as actor.
 */
import { ForbiddenError } from '../../errors.js'
import type { CommandKind } from '../../store/types.js'
import { listDevices } from '../inventory.js'
import type { RouteContext, RouteSpec } from '../router.js'
import type { SecurityServices } from '../services.js'
import type { SelfPrincipal } from '../adminAuth.js'
import { bodyOneOf, bodyStr, ID_RE, onlyFields, onlyQuery, param, readAll } from './adminKit.js'
import { deviceTarget } from './adminDevices.js'

const SELF_KINDS: readonly CommandKind[] = ['lock', 'wipe', 'retire']

export function selfServiceRoutes(s: SecurityServices): RouteSpec[] {
  const signedIn = (ctx: RouteContext): SelfPrincipal => s.adminAuth.authenticateSelf(ctx.req)
  const audit = (me: SelfPrincipal, ctx: RouteContext, action: string, target: string, details?: Record<string, unknown>) =>
    s.audit.record({ actor: me.user, actorRole: 'user', action, target, remote: ctx.remote, details })

  return [
    {
      method: 'POST', path: '/self/v1/login', access: 'self',
      async handler({ body, remote }) {
        onlyFields(body, ['user', 'password'])
        const r = await s.adminAuth.selfLogin(body.user, body.password, remote)
        return { status: 200, body: r }
      },
    },
    {
      method: 'POST', path: '/self/v1/logout', access: 'self',
      async handler(ctx) {
        const me = signedIn(ctx)
        onlyFields(ctx.body, [])
        s.adminAuth.selfLogout(me)
        await audit(me, ctx, 'self.logout', `user:${me.user}`)
        return { status: 204 }
      },
    },
    {
      method: 'GET', path: '/self/v1/devices', access: 'self',
      async handler(ctx) {
        const me = signedIn(ctx)
        onlyQuery(ctx.query, [])
        return { status: 200, body: { items: await listDevices(s.store, { userName: me.user }) } }
      },
    },
    {
      method: 'GET', path: '/self/v1/enrollments', access: 'self',
      async handler(ctx) {
        const me = signedIn(ctx)
        onlyQuery(ctx.query, [])
        return { status: 200, body: { items: await readAll((p) => s.store.listEnrollments({ userName: me.user, ...p })) } }
      },
    },
    {
      method: 'GET', path: '/self/v1/commands', access: 'self',
      async handler(ctx) {
        const me = signedIn(ctx)
        onlyQuery(ctx.query, [])
        return { status: 200, body: { items: await s.store.listCommands({ userName: me.user, limit: 500 }) } }
      },
    },
    {
      method: 'POST', path: '/self/v1/devices/:device/commands', access: 'self',
      async handler(ctx) {
        const me = signedIn(ctx)
        onlyFields(ctx.body, ['kind', 'appId'])
        const device = param(ctx.params, 'device', ID_RE)
        const kind = bodyOneOf(ctx.body, 'kind', SELF_KINDS)
        const appId = bodyStr(ctx.body, 'appId', { max: 128, re: ID_RE, optional: true })
        // Only the user's own devices. Another user's device and an unknown one get the same 403.
        const mine = await listDevices(s.store, { userName: me.user, deviceId: device })
        if (mine.length === 0) {
          await audit(me, ctx, 'self.denied', `device:${me.user}/${device}`, { kind })
          throw new ForbiddenError('not one of your devices')
        }
        const rec = await s.commands.issue({ userName: me.user, deviceId: device, appId, kind, issuedBy: `self:${me.user}` })
        await audit(me, ctx, 'self.command', deviceTarget(me.user, device), { kind, appId: appId ?? null, commandId: rec.id })
        return { status: 201, body: rec }
      },
    },
  ]
}
