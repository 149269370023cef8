/**
 * Who an ActiveSync request is from, as the proxy's gate and the security server's check agree on
 * it (shared by both roles: src/proxy/activeSyncGate.ts, src/security/routes/activeSync.ts).
 *
 * Mail clients name the user the way the Exchange account was set up: `alice`, `CORP\alice`
 * (down-level logon name) or `alice@corp.example` (UPN or SMTP address). Gatehouse enrollments
 * carry the directory's user name. Both sides are reduced to one key:
 *
 *   "CORP\Alice"          → "alice"     (the part after the last backslash)
 *   "Alice@corp.example"  → "alice"     (the part before the last "@")
 *   "ALICE"               → "alice"     (lower case, Unicode default case folding)
 *
 * so user names must be unique ignoring domain and case (docs/operations.md, "ActiveSync
 * gateway"). Device ids are compared exactly.
 */

/** Longest user name accepted (characters, before reduction). */
export const MAX_ACTIVESYNC_USER_LENGTH = 256

// Control characters never belong in a user name (and must not reach a log line).
const CONTROL_RE = /\p{Cc}/u

/** The reduced, case-folded user key; undefined when nothing usable is left. */
export function activeSyncUserKey(name: string): string | undefined {
  if (name.length === 0 || name.length > MAX_ACTIVESYNC_USER_LENGTH || CONTROL_RE.test(name)) return undefined
  let user = name
  const slash = user.lastIndexOf('\\')
  if (slash >= 0) user = user.slice(slash + 1)
  const at = user.lastIndexOf('@')
  if (at >= 0) user = user.slice(0, at)
  user = user.trim().toLowerCase()
  return user.length > 0 ? user : undefined
}

/**
 * Device ids the gate accepts: letters and digits, 1 to 32 (MS-ASHTTP plain text query:
 * `device-id = 1*32(ALPHA / DIGIT)`), which is also within Gatehouse's enrollment device ids.
 */
export const ACTIVESYNC_DEVICE_ID_RE = /^[A-Za-z0-9]{1,32}$/

/** Device states the gate reports (`unknown`: no enrollment of this user has this device id). */
export type ActiveSyncDeviceState = 'active' | 'locked' | 'wiped' | 'retired' | 'unknown'

export const ACTIVESYNC_DEVICE_STATES: readonly ActiveSyncDeviceState[] = ['active', 'locked', 'wiped', 'retired', 'unknown']

/** The security server's answer to POST /v1/activesync/check. */
export interface ActiveSyncCheckAnswer {
  allowed: boolean
  state: ActiveSyncDeviceState
  /** Active enrollments that made the device allowed (the proxy drops its answer when one is revoked). */
  enrollmentIds: string[]
}
