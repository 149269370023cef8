/**
 * Proxy API (mutual TLS): the ActiveSync gate's question. A native mail client names a user and a
 * DeviceId; the proxy asks whether that is an enrolled, active device of that user:
 *
 *   POST /v1/activesync/check {user, deviceId}
 *     → 200 {allowed, state: active|locked|wiped|retired|unknown, enrollmentIds}
 *
 * Users are matched by their reduced, case-folded key (src/protocol/activeSyncIdentity.ts:
 * "CORP\Alice", "alice@corp.example" and "alice" are one user); device ids exactly. The device is
 * allowed when one of the matching users has an active enrollment with this device id and the
 * device's state is active (or was never set). Otherwise the answer names the state that refuses
 * it — wiped before locked before retired, so that a wiped device is told so — or `unknown`. The
 * spellings of one user are one person: a locked device under any of them is refused.
 */
import { MalformedError } from '../../errors.js'
import { ACTIVESYNC_DEVICE_ID_RE, activeSyncUserKey, type ActiveSyncCheckAnswer } from '../../protocol/activeSyncIdentity.js'
import type { DeviceState } from '../../store/types.js'
import type { RouteSpec } from '../router.js'
import type { SecurityServices } from '../services.js'

/** Enrollments of one device id looked at, at most (a device id is shared by a handful at most). */
const MAX_ENROLLMENTS = 200

/** Which refusal wins when several users match: the one that must reach the device first. */
const REFUSAL_ORDER: readonly DeviceState[] = ['wiped', 'locked', 'retired']

export async function activeSyncCheck(s: Pick<SecurityServices, 'store'>, user: string, deviceId: string): Promise<ActiveSyncCheckAnswer> {
  const key = activeSyncUserKey(user)
  if (key === undefined) throw new MalformedError('user must be a user name')
  if (!ACTIVESYNC_DEVICE_ID_RE.test(deviceId)) throw new MalformedError('deviceId must be 1 to 32 letters or digits')
  // By device id, then by reduced user: the store compares user names exactly.
  const enrollments = (await s.store.listEnrollments({ deviceId, limit: MAX_ENROLLMENTS }))
    .filter((e) => e.deviceId === deviceId && activeSyncUserKey(e.userName) === key)
  if (enrollments.length === 0) return { allowed: false, state: 'unknown', enrollmentIds: [] }
  const states = new Set<DeviceState>()
  const allowedIds: string[] = []
  for (const userName of new Set(enrollments.map((e) => e.userName))) {
    const state = (await s.store.getDevice(userName, deviceId))?.state ?? 'active'
    states.add(state)
    if (state === 'active') {
      for (const e of enrollments) if (e.userName === userName && e.status === 'active') allowedIds.push(e.id)
    }
  }
  // The spellings of one user are one person: a refusal under any of them refuses (fail closed).
  const refusal = REFUSAL_ORDER.find((st) => states.has(st))
  if (refusal) return { allowed: false, state: refusal, enrollmentIds: [] }
  if (allowedIds.length > 0) return { allowed: true, state: 'active', enrollmentIds: allowedIds }
  return { allowed: false, state: 'unknown', enrollmentIds: [] }
}

export function activeSyncRoutes(s: SecurityServices): RouteSpec[] {
  return [
    {
      method: 'POST', path: '/v1/activesync/check', access: 'proxy',
      async handler({ body }) {
        const { user, deviceId } = body
        if (typeof user !== 'string' || typeof deviceId !== 'string') throw new MalformedError('user and deviceId must be strings')
        return { status: 200, body: await activeSyncCheck(s, user, deviceId) }
      },
    },
  ]
}
