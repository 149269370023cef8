/**
 * Device API: acknowledging a device command (lock, unlock, wipe, retire) received at session
 * open. The body proves possession of the enrollment's shared key (docs/protocol.md §Device
 * commands); the enrollment may already be revoked by the command itself.
 *
 *   POST /v1/commands/:id/ack {enrollmentId, timestamp, proof}   204
 */
import type { RouteSpec } from '../router.js'
import type { SecurityServices } from '../services.js'

export function commandRoutes(s: SecurityServices): RouteSpec[] {
  return [
    {
      method: 'POST', path: '/v1/commands/:id/ack', access: 'device',
      async handler({ params, body, log, remote }) {
        const c = await s.commands.acknowledge(params.id!, body)
        log.info({ event: 'command_acknowledged', commandId: c.id, kind: c.kind, user: c.userName, deviceId: c.deviceId }, 'device command acknowledged')
        await s.audit.record({
          actor: c.userName, actorRole: 'device', action: 'device.command.acknowledge', target: `${c.userName}/${c.deviceId}`, remote,
          details: { commandId: c.id, kind: c.kind, appId: c.appId },
        })
        return { status: 204 }
      },
    },
  ]
}
