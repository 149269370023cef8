/**
 * The app catalog: which apps may enroll (by directory group), which versions are allowed, which
 * proxy routes each app may reach, and the app packages devices update from.
 *
 * Development mode: while the catalog is EMPTY every app may enroll, in any version, and reach
 * every route, so that `npm start` + `npm run demo` work without setup. Adding the first app
 * switches enforcement on for every app: an app not in the catalog can no longer enroll, and its
 * sessions reach nothing.
 *
 * Packages are files under `<packagesDir>/<appId>/<version>/<fileName>`, written to a temporary
 * name and renamed into place, with their SHA-256 and size recorded in the store. Every path part
 * is checked against a strict pattern (no separators, no dot segments) and the joined path is
 * checked to stay under packagesDir.
 */
import { createHash, randomUUID } from 'node:crypto'
import { createReadStream, type ReadStream } from 'node:fs'
import { mkdir, rename, rm, stat, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { AppNotAllowedError, AppVersionError, ExistsError, MalformedError, NotFoundError } from '../errors.js'
import type { AppPackageRecord, AppRecord, AppStore } from '../store/types.js'
import { compareVersions, isVersion, versionAllowed } from './versions.js'

/** App ids: the same alphabet enrollment accepts, minus ':' and '@' so an id is always a safe directory name. */
const APP_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/
/** Package versions: dotted numeric (plus an optional -pre / +build suffix), safe as a directory name. */
const PACKAGE_VERSION_RE = /^[0-9][0-9A-Za-z.+-]{0,31}$/
/** File names: no separators, no leading dot. */
const FILE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/
/** Route prefixes, as in proxy.routes[].prefix. */
const ROUTE_RE = /^\/([A-Za-z0-9._~!$&'()*+,;=:@%-]+\/)*$/
const GROUP_RE = /^[^\p{Cc}]{1,256}$/u
const MAX_LIST = 256

/** "Every route": the app context of any app while the catalog is empty. */
export const ALL_ROUTES = '*'

export interface AppInput {
  id: string
  name?: string
  minVersion?: string | null
  allowedVersions?: string[]
  routes?: string[]
  groups?: string[]
}

/** What a device learns from an update check. */
export interface UpdateInfo {
  appId: string
  version: string
  fileName: string
  sha256: string
  size: number
  /** Device API path of the package: GET it with the session header. */
  downloadPath: string
}

/** App context: whether this app and version may be used, and the routes it may reach ('*' = all). */
export interface AppContext {
  allowed: boolean
  /** Why not: GH_ERR_APP_NOT_ALLOWED (unknown app) or GH_ERR_APP_VERSION. */
  code?: string
  /** Route prefixes; ['*'] = every route (empty catalog). */
  routes: string[]
}

export interface CatalogOptions {
  store: AppStore
  packagesDir: string
  now?: () => number
  /** Told after an app changed or was deleted, so proxies re-validate (RevocationHub.policyChanged). */
  onChange?: (appId: string) => Promise<unknown>
}

export function isAppId(v: unknown): v is string {
  return typeof v === 'string' && APP_ID_RE.test(v)
}

function stringList(v: unknown, name: string, check: (s: string) => boolean, hint: string): string[] {
  if (v === undefined) return []
  if (!Array.isArray(v) || v.length > MAX_LIST) throw new MalformedError(`${name} must be an array of at most ${MAX_LIST} strings`)
  const out: string[] = []
  v.forEach((s, i) => {
    if (typeof s !== 'string' || !check(s)) throw new MalformedError(`${name}[${i}] must ${hint}`)
    if (!out.includes(s)) out.push(s)
  })
  return out
}

/** Validate an app as given by an admin; throws MalformedError naming the field. */
export function parseAppInput(o: AppInput): Omit<AppRecord, 'createdAt' | 'updatedAt'> {
  if (!isAppId(o.id)) throw new MalformedError('id must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}')
  const name = o.name ?? o.id
  if (typeof name !== 'string' || name.length === 0 || name.length > 256) throw new MalformedError('name must be a string of 1..256 characters')
  const minVersion = o.minVersion ?? null
  if (minVersion !== null && (typeof minVersion !== 'string' || !isVersion(minVersion))) {
    throw new MalformedError('minVersion must be a dotted numeric version such as 1.4.0')
  }
  return {
    id: o.id,
    name,
    minVersion,
    allowedVersions: stringList(o.allowedVersions, 'allowedVersions', (s) => PACKAGE_VERSION_RE.test(s), 'be a version such as 1.4.0'),
    routes: stringList(o.routes, 'routes', (s) => ROUTE_RE.test(s), 'be a route prefix starting and ending with "/"'),
    groups: stringList(o.groups, 'groups', (s) => GROUP_RE.test(s), 'be a group name of 1..256 printable characters'),
  }
}

export class CatalogService {
  readonly packagesDir: string

  constructor(private readonly o: CatalogOptions) {
    this.packagesDir = path.resolve(o.packagesDir)
  }

  private now(): number {
    return this.o.now ? this.o.now() : Date.now()
  }

  /** True while no app is in the catalog (development mode: everything allowed). */
  async isOpen(): Promise<boolean> {
    return (await this.o.store.listApps()).length === 0
  }

  async upsertApp(input: AppInput): Promise<AppRecord> {
    const a = parseAppInput(input)
    const now = this.now()
    const existing = await this.o.store.getApp(a.id)
    const rec: AppRecord = { ...a, createdAt: existing?.createdAt ?? now, updatedAt: now }
    await this.o.store.upsertApp(rec)
    await this.o.onChange?.(a.id)
    return rec
  }

  getApp(id: string): Promise<AppRecord | undefined> {
    return isAppId(id) ? this.o.store.getApp(id) : Promise.resolve(undefined)
  }

  listApps(): Promise<AppRecord[]> {
    return this.o.store.listApps()
  }

  /** Removes the app, its package records and its package files. */
  async deleteApp(id: string): Promise<boolean> {
    if (!isAppId(id)) return false
    const removed = await this.o.store.deleteApp(id)
    if (removed) {
      await rm(this.safeJoin(id), { recursive: true, force: true })
      await this.o.onChange?.(id)
    }
    return removed
  }

  /** Store a package file and record its SHA-256 and size. ExistsError when that version is there already. */
  async addPackage(appId: string, version: string, fileName: string, bytes: Buffer): Promise<AppPackageRecord> {
    if (!isAppId(appId)) throw new MalformedError('appId must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}')
    if (typeof version !== 'string' || !PACKAGE_VERSION_RE.test(version) || !isVersion(version)) {
      throw new MalformedError('version must be a dotted numeric version such as 1.4.0')
    }
    if (typeof fileName !== 'string' || !FILE_NAME_RE.test(fileName) || fileName.includes('..')) {
      throw new MalformedError('fileName must match [A-Za-z0-9][A-Za-z0-9._-]{0,127} without ".."')
    }
    if (!Buffer.isBuffer(bytes) || bytes.length === 0) throw new MalformedError('the package must not be empty')
    if (!(await this.o.store.getApp(appId))) throw new NotFoundError('no such app in the catalog')
    if (await this.o.store.getPackage(appId, version)) throw new ExistsError('package version already exists')
    const dir = this.safeJoin(appId, version)
    const file = this.safeJoin(appId, version, fileName)
    await mkdir(dir, { recursive: true, mode: 0o750 })
    const tmp = path.join(dir, `.upload-${randomUUID()}`)
    await writeFile(tmp, bytes, { mode: 0o640 })
    await rename(tmp, file)
    const rec: AppPackageRecord = {
      appId, version, fileName, sha256: createHash('sha256').update(bytes).digest('hex'), size: bytes.length, createdAt: this.now(),
    }
    try {
      await this.o.store.addPackage(rec)
    } catch (err) {
      await rm(dir, { recursive: true, force: true })
      throw err
    }
    return rec
  }

  listPackages(appId: string): Promise<AppPackageRecord[]> {
    return isAppId(appId) ? this.o.store.listPackages(appId) : Promise.resolve([])
  }

  /** The package's record and a stream of its file; undefined when unknown or the file is gone. */
  async packageFile(appId: string, version: string): Promise<{ record: AppPackageRecord; path: string; open(): ReadStream } | undefined> {
    if (!isAppId(appId) || typeof version !== 'string' || !PACKAGE_VERSION_RE.test(version)) return undefined
    const record = await this.o.store.getPackage(appId, version)
    if (!record || !FILE_NAME_RE.test(record.fileName)) return undefined
    const file = this.safeJoin(appId, version, record.fileName)
    const st = await stat(file).catch(() => undefined)
    if (!st?.isFile() || st.size !== record.size) return undefined
    return { record, path: file, open: () => createReadStream(file) }
  }

  /**
   * The newest package of the app whose version is newer than `currentVersion` and allowed by
   * the catalog; undefined when there is none (or the app is unknown).
   */
  async checkUpdate(appId: string, currentVersion: string): Promise<UpdateInfo | undefined> {
    const app = await this.getApp(appId)
    if (!app) return undefined
    let best: AppPackageRecord | undefined
    for (const p of await this.o.store.listPackages(appId)) {
      if (!versionAllowed(app, p.version)) continue
      // A current version we cannot compare (not dotted numeric) is older than any package.
      const newer = compareVersions(p.version, currentVersion) ?? 1
      if (newer <= 0) continue
      if (!best || (compareVersions(p.version, best.version) ?? 0) > 0) best = p
    }
    if (!best) return undefined
    return {
      appId, version: best.version, fileName: best.fileName, sha256: best.sha256, size: best.size,
      downloadPath: `/v1/catalog/${encodeURIComponent(appId)}/packages/${encodeURIComponent(best.version)}`,
    }
  }

  /** May a user of these groups enroll this app? Always, while the catalog is empty. */
  async mayEnroll(appId: string, groups: readonly string[]): Promise<boolean> {
    const app = await this.getApp(appId)
    if (!app) return this.isOpen()
    return app.groups.length === 0 || app.groups.some((g) => groups.includes(g))
  }

  /** The app context of an app version (see AppContext). */
  async appContext(appId: string, appVersion: string): Promise<AppContext> {
    const app = await this.getApp(appId)
    if (!app) {
      if (await this.isOpen()) return { allowed: true, routes: [ALL_ROUTES] }
      return { allowed: false, code: 'GH_ERR_APP_NOT_ALLOWED', routes: [] }
    }
    if (!versionAllowed(app, appVersion)) return { allowed: false, code: 'GH_ERR_APP_VERSION', routes: [...app.routes] }
    return { allowed: true, routes: [...app.routes] }
  }

  /**
   * Enrollment check: throws AppNotAllowedError (unknown app, or groups not allowed) or
   * AppVersionError (version not allowed).
   */
  async assertMayEnroll(appId: string, appVersion: string, groups: readonly string[]): Promise<void> {
    const app = await this.getApp(appId)
    if (!app) {
      if (await this.isOpen()) return
      throw new AppNotAllowedError('this app may not be enrolled')
    }
    if (app.groups.length > 0 && !app.groups.some((g) => groups.includes(g))) throw new AppNotAllowedError('this app may not be enrolled')
    if (!versionAllowed(app, appVersion)) throw new AppVersionError('this app version is not allowed: update the app')
  }

  /** packagesDir joined with checked parts; throws if the result would leave packagesDir. */
  private safeJoin(...parts: string[]): string {
    const p = path.resolve(this.packagesDir, ...parts)
    if (!p.startsWith(this.packagesDir + path.sep)) throw new MalformedError('path leaves the packages folder')
    return p
  }
}
