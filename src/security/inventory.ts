/**
 * Users and devices as the admin API and the self-service portal show them, assembled from what
 * the store keeps separately: enrollments (which app on which device of which user), device
 * states (lock/wipe/retire) and, for users, the local user file.
 *
 * A device is (userName, deviceId): the same hardware enrolled by two users is two devices here,
 * as it is everywhere else in Gatehouse. Listings read every matching row (pages of 500, capped):
 * fine for the thousands of devices of one company, not meant for millions.
 */
import type { DeviceState, EnrollmentSummary, Store } from '../store/types.js'
import type { Authenticator } from './enrollment.js'
import { readAll } from './routes/adminKit.js'

export interface DeviceAppView {
  enrollmentId: string
  appId: string
  appVersion: string
  status: 'active' | 'revoked'
  createdAt: number
}

export interface DeviceView {
  userName: string
  deviceId: string
  /** From the device record; 'active' when none was ever set. */
  state: DeviceState
  stateUpdatedAt: number | null
  apps: DeviceAppView[]
  /** Newest enrollment on the device, or null. */
  lastEnrolledAt: number | null
}

export interface UserView {
  name: string
  /** Where we know the user from: the local user file, enrollments, or both. */
  sources: ('local' | 'enrollments')[]
  groups: string[]
  devices: number
  activeEnrollments: number
}

/** Optional capability of an Authenticator: list the users it knows (the local user file does). */
export interface UserLister {
  listUsers(): Promise<{ name: string; groups: string[] }[]>
}

function canList(a: unknown): a is UserLister {
  return typeof (a as Partial<UserLister> | null)?.listUsers === 'function'
}

const deviceKey = (user: string, device: string) => `${user}\u0000${device}`

export async function listDevices(store: Store, filter: { userName?: string; deviceId?: string; state?: DeviceState } = {}): Promise<DeviceView[]> {
  const [enrollments, records] = await Promise.all([
    readAll((p) => store.listEnrollments({ userName: filter.userName, deviceId: filter.deviceId, ...p })),
    readAll((p) => store.listDevices({ userName: filter.userName, ...p })),
  ])
  const byKey = new Map<string, DeviceView>()
  const get = (userName: string, deviceId: string) => {
    const k = deviceKey(userName, deviceId)
    let d = byKey.get(k)
    if (!d) {
      d = { userName, deviceId, state: 'active', stateUpdatedAt: null, apps: [], lastEnrolledAt: null }
      byKey.set(k, d)
    }
    return d
  }
  for (const e of enrollments) addApp(get(e.userName, e.deviceId), e)
  for (const r of records) {
    if (filter.deviceId !== undefined && r.deviceId !== filter.deviceId) continue
    const d = get(r.userName, r.deviceId)
    d.state = r.state
    d.stateUpdatedAt = r.updatedAt
  }
  let out = [...byKey.values()]
  if (filter.state) out = out.filter((d) => d.state === filter.state)
  return out.sort((a, b) => a.userName.localeCompare(b.userName) || a.deviceId.localeCompare(b.deviceId))
}

function addApp(d: DeviceView, e: EnrollmentSummary): void {
  d.apps.push({ enrollmentId: e.id, appId: e.appId, appVersion: e.appVersion, status: e.status, createdAt: e.createdAt })
  d.lastEnrolledAt = Math.max(d.lastEnrolledAt ?? 0, e.createdAt)
}

export async function getDevice(store: Store, userName: string, deviceId: string): Promise<DeviceView | undefined> {
  return (await listDevices(store, { userName, deviceId }))[0]
}

/** Users of the local user file (when the authenticator can list) and users seen in enrollments. */
export async function listUsers(store: Store, auth: Authenticator, q?: string): Promise<UserView[]> {
  const users = new Map<string, UserView>()
  const get = (name: string) => {
    let u = users.get(name)
    if (!u) {
      u = { name, sources: [], groups: [], devices: 0, activeEnrollments: 0 }
      users.set(name, u)
    }
    return u
  }
  if (canList(auth)) {
    for (const l of await auth.listUsers()) {
      const u = get(l.name)
      u.sources.push('local')
      u.groups = [...l.groups]
    }
  }
  const devices = new Map<string, Set<string>>()
  for (const e of await readAll((p) => store.listEnrollments(p))) {
    const u = get(e.userName)
    if (!u.sources.includes('enrollments')) u.sources.push('enrollments')
    if (e.status === 'active') u.activeEnrollments++
    let set = devices.get(e.userName)
    if (!set) devices.set(e.userName, (set = new Set()))
    set.add(e.deviceId)
  }
  for (const [name, set] of devices) get(name).devices = set.size
  let out = [...users.values()]
  if (q) {
    const needle = q.toLowerCase()
    out = out.filter((u) => u.name.toLowerCase().includes(needle) || u.groups.some((g) => g.toLowerCase().includes(needle)))
  }
  return out.sort((a, b) => a.name.localeCompare(b.name))
}
