/**
 * Admin API: devices (enrollments + device states), device commands (lock, unlock, wipe, retire)
 * and revoking a device everywhere.
 */
import { NotFoundError } from '../../errors.js'
import type { CommandKind, CommandState, DeviceState } from '../../store/types.js'
import { COMMAND_KINDS } from '../commands.js'
import { getDevice, listDevices } from '../inventory.js'
import type { RouteSpec } from '../router.js'
import type { SecurityServices } from '../services.js'
import {
  adminRoute, auditAdmin, bodyOneOf, bodyStr, ID_RE, listBody, onlyFields, onlyQuery, PAGE_PARAMS, paging, param, qOneOf, qStr,
  readAll, slicePage, USER_RE,
} from './adminKit.js'
import { optionalReason } from './adminUsers.js'

const DEVICE_STATES: readonly DeviceState[] = ['active', 'locked', 'wiped', 'retired']
const COMMAND_STATES: readonly CommandState[] = ['pending', 'delivered', 'acknowledged']

export const deviceTarget = (user: string, device: string) => `device:${user}/${device}`

export function adminDeviceRoutes(s: SecurityServices): RouteSpec[] {
  return [
    adminRoute(s, {
      method: 'GET', path: '/admin/v1/devices', perm: 'read',
      async handler({ query }) {
        onlyQuery(query, ['user', 'state', 'q', ...PAGE_PARAMS])
        const p = paging(query)
        let all = await listDevices(s.store, { userName: qStr(query, 'user'), state: qOneOf(query, 'state', DEVICE_STATES) })
        const q = qStr(query, 'q')?.toLowerCase()
        if (q) all = all.filter((d) => d.deviceId.toLowerCase().includes(q) || d.userName.toLowerCase().includes(q))
        return { status: 200, body: slicePage(all, p) }
      },
    }),
    adminRoute(s, {
      method: 'GET', path: '/admin/v1/devices/:user/:device', perm: 'read',
      async handler({ params, query }) {
        onlyQuery(query, [])
        const user = param(params, 'user', USER_RE)
        const device = param(params, 'device', ID_RE)
        const d = await getDevice(s.store, user, device)
        if (!d) throw new NotFoundError('no such device')
        const [sessions, commands] = await Promise.all([
          readAll((p) => s.store.listSessions({ userName: user, deviceId: device, open: true, ...p })),
          s.store.listCommands({ userName: user, deviceId: device, limit: 100 }),
        ])
        return { status: 200, body: { ...d, openSessions: sessions, commands } }
      },
    }),
    adminRoute(s, {
      method: 'POST', path: '/admin/v1/devices/:user/:device/commands', perm: 'commands.issue',
      async handler(ctx) {
        onlyFields(ctx.body, ['kind', 'appId', 'reason'])
        const user = param(ctx.params, 'user', USER_RE)
        const device = param(ctx.params, 'device', ID_RE)
        const kind = bodyOneOf<CommandKind>(ctx.body, 'kind', COMMAND_KINDS)
        const appId = bodyStr(ctx.body, 'appId', { max: 128, re: ID_RE, optional: true })
        const reason = optionalReason(ctx.body)
        // Retiring a device ends it for good: admins only (helpdesk may lock, unlock and wipe).
        if (kind === 'retire') s.adminAuth.require(ctx.admin, 'commands.retire')
        const rec = await s.commands.issue({ userName: user, deviceId: device, appId, kind, issuedBy: `admin:${ctx.admin.name}` })
        await auditAdmin(s, ctx, 'device.command', deviceTarget(user, device), { kind, appId: appId ?? null, commandId: rec.id, reason })
        return { status: 201, body: rec }
      },
    }),
    adminRoute(s, {
      method: 'POST', path: '/admin/v1/devices/:user/:device/revoke', perm: 'revoke',
      async handler(ctx) {
        onlyFields(ctx.body, ['reason'])
        const user = param(ctx.params, 'user', USER_RE)
        const device = param(ctx.params, 'device', ID_RE)
        const reason = optionalReason(ctx.body)
        const d = await getDevice(s.store, user, device)
        if (!d) throw new NotFoundError('no such device')
        // Sessions first (so that they are counted), then enrollments, then the push.
        const closed = await s.store.closeSessionsWhere({ userName: user, deviceId: device }, Date.now())
        let revoked = 0
        for (const a of d.apps) if (a.status === 'active' && (await s.store.revokeEnrollment(a.enrollmentId))) revoked++
        await s.hub.revokeDevice(user, device)
        await auditAdmin(s, ctx, 'device.revoke', deviceTarget(user, device), { enrollmentsRevoked: revoked, sessionsClosed: closed.length, reason })
        return { status: 200, body: { user, deviceId: device, enrollmentsRevoked: revoked, sessionsClosed: closed.length } }
      },
    }),
    adminRoute(s, {
      method: 'GET', path: '/admin/v1/commands', perm: 'read',
      async handler({ query }) {
        onlyQuery(query, ['user', 'device', 'state', ...PAGE_PARAMS])
        const p = paging(query)
        const items = await s.store.listCommands({
          userName: qStr(query, 'user'), deviceId: qStr(query, 'device', ID_RE), state: qOneOf(query, 'state', COMMAND_STATES), ...p,
        })
        return { status: 200, body: listBody(items, p) }
      },
    }),
  ]
}
