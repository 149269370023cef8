/** Device API: enroll, open and close sessions. Open to every network. */
import { GatehouseError } from '../../errors.js'
import { sessionIdHash } from '../../store/sqlStore.js'
import { PendingCommandError } from '../commands.js'
import { parseEnrollRequest } from '../enrollment.js'
import type { RouteSpec } from '../router.js'
import type { SecurityServices } from '../services.js'

export function deviceRoutes(s: SecurityServices): RouteSpec[] {
  const m = s.metrics
  return [
    {
      method: 'POST', path: '/v1/enroll', access: 'device',
      async handler({ body, remote, log }) {
        try {
          const r = await s.enroller.enroll(parseEnrollRequest(body))
          m.enrollments.inc({ result: 'ok' })
          log.info({ event: 'enrolled', user: r.userName, appId: body.appId, deviceId: body.deviceId, remote }, 'device enrolled')
          await s.audit.record({ actor: r.userName, actorRole: 'user', action: 'device.enroll', target: `enrollment:${r.enrollmentId}`, remote, details: { deviceId: body.deviceId, appId: body.appId, appVersion: body.appVersion } })
          const { userName: _u, ...out } = r
          return { status: 201, body: out }
        } catch (err) {
          m.enrollments.inc({ result: err instanceof GatehouseError ? err.code : 'error' })
          throw err
        }
      },
    },
    {
      method: 'POST', path: '/v1/sessions', access: 'device',
      async handler({ body, log, remote }) {
        try {
          const r = await s.sessions.open(body)
          m.sessionOpens.inc({ result: 'ok' })
          log.info({ event: 'session_opened', user: r.userName, appId: r.appId, deviceId: r.deviceId }, 'session opened')
          await s.audit.record({ actor: r.userName, actorRole: 'user', action: 'session.open', target: `session:${sessionIdHash(r.sessionId)}`, remote, details: { deviceId: r.deviceId, appId: r.appId, enrollmentId: body.enrollmentId } })
          const { userName: _u, deviceId: _d, appId: _a, ...out } = r
          return { status: 201, body: out }
        } catch (err) {
          m.sessionOpens.inc({ result: err instanceof GatehouseError ? err.code : 'error' })
          // A waiting command is an answer, not a failure: 403 with the command (docs/protocol.md §4.1).
          if (err instanceof PendingCommandError) {
            log.info({ event: 'command_delivered', commandId: err.command.id, kind: err.command.kind, user: err.command.userName, deviceId: err.command.deviceId }, 'device command delivered')
            await s.audit.record({ actor: err.command.userName, actorRole: 'user', action: 'command.delivered', target: `device:${err.command.userName}/${err.command.deviceId}`, remote, details: { commandId: err.command.id, kind: err.command.kind } })
            return { status: 403, body: err.body() }
          }
          throw err
        }
      },
    },
    {
      method: 'POST', path: '/v1/sessions/close', access: 'device',
      async handler({ body, log, remote }) {
        await s.sessions.close(body)
        log.info({ event: 'session_closed' }, 'session closed')
        // close() accepted the id, so it is a well-formed session id; the audit names its hash only.
        await s.audit.record({ actor: 'device', actorRole: 'device', action: 'session.close', target: `session:${sessionIdHash(String(body.sessionId))}`, remote })
        return { status: 204 }
      },
    },
  ]
}
