/** The app catalog (apps and their packages) and the session/device policies. */
import type { AppPackageRecord, AppRecord, AppStore, PolicyRecord, PolicyScope, PolicyStore } from '../types.js'
import { insertOrExists, parseStringArray, toJson, type QueryContext } from './common.js'

interface AppRow {
  id: string
  name: string
  min_version: string | null
  allowed_versions: string
  routes: string
  user_groups: string
  created_at: number
  updated_at: number
}

interface PackageRow {
  app_id: string
  version: string
  file_name: string
  sha256: string
  size: number
  created_at: number
}

interface PolicyRow {
  id: string
  scope: PolicyScope
  scope_id: string
  max_session_lifetime_seconds: number | null
  idle_timeout_seconds: number | null
  reauth_interval_seconds: number | null
  max_devices_per_user: number | null
  updated_at: number
}

const APP_COLUMNS = 'id, name, min_version, allowed_versions, routes, user_groups, created_at, updated_at'
const PACKAGE_COLUMNS = 'app_id, version, file_name, sha256, size, created_at'
const POLICY_COLUMNS = `id, scope, scope_id, max_session_lifetime_seconds, idle_timeout_seconds, reauth_interval_seconds,
  max_devices_per_user, updated_at`

function app(r: AppRow): AppRecord {
  return {
    id: r.id, name: r.name, minVersion: r.min_version, allowedVersions: parseStringArray(r.allowed_versions),
    routes: parseStringArray(r.routes), groups: parseStringArray(r.user_groups), createdAt: r.created_at, updatedAt: r.updated_at,
  }
}

function pkg(r: PackageRow): AppPackageRecord {
  return { appId: r.app_id, version: r.version, fileName: r.file_name, sha256: r.sha256, size: r.size, createdAt: r.created_at }
}

function policy(r: PolicyRow): PolicyRecord {
  return {
    id: r.id, scope: r.scope, scopeId: r.scope_id, maxSessionLifetimeSeconds: r.max_session_lifetime_seconds,
    idleTimeoutSeconds: r.idle_timeout_seconds, reauthIntervalSeconds: r.reauth_interval_seconds,
    maxDevicesPerUser: r.max_devices_per_user, updatedAt: r.updated_at,
  }
}

export class CatalogQueries implements AppStore, PolicyStore {
  constructor(private readonly c: QueryContext) {}

  /** Insert or replace; an existing app keeps its createdAt. */
  async upsertApp(a: AppRecord): Promise<void> {
    await this.c.db.run(
      `INSERT INTO apps (${APP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET name = excluded.name, min_version = excluded.min_version,
         allowed_versions = excluded.allowed_versions, routes = excluded.routes, user_groups = excluded.user_groups,
         updated_at = excluded.updated_at`,
      [a.id, a.name, a.minVersion, toJson(a.allowedVersions), toJson(a.routes), toJson(a.groups), a.createdAt, a.updatedAt],
    )
  }

  async getApp(id: string): Promise<AppRecord | undefined> {
    const r = await this.c.db.get<AppRow>(`SELECT ${APP_COLUMNS} FROM apps WHERE id = ?`, [id])
    return r && app(r)
  }

  /** By id. */
  async listApps(): Promise<AppRecord[]> {
    return (await this.c.db.all<AppRow>(`SELECT ${APP_COLUMNS} FROM apps ORDER BY id`)).map(app)
  }

  /** Its packages go with it. */
  async deleteApp(id: string): Promise<boolean> {
    return (await this.c.db.run('DELETE FROM apps WHERE id = ?', [id])).changes > 0
  }

  /** ExistsError for a version already added; rejects for an app not in the catalog. */
  async addPackage(p: AppPackageRecord): Promise<void> {
    await insertOrExists(this.c.db.run(
      `INSERT INTO app_packages (${PACKAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)`,
      [p.appId, p.version, p.fileName, p.sha256, p.size, p.createdAt],
    ), 'package version already exists')
  }

  /** Oldest first. */
  async listPackages(appId: string): Promise<AppPackageRecord[]> {
    const rows = await this.c.db.all<PackageRow>(`SELECT ${PACKAGE_COLUMNS} FROM app_packages WHERE app_id = ? ORDER BY created_at, version`, [appId])
    return rows.map(pkg)
  }

  async getPackage(appId: string, version: string): Promise<AppPackageRecord | undefined> {
    const r = await this.c.db.get<PackageRow>(`SELECT ${PACKAGE_COLUMNS} FROM app_packages WHERE app_id = ? AND version = ?`, [appId, version])
    return r && pkg(r)
  }

  async upsertPolicy(p: PolicyRecord): Promise<void> {
    await this.c.db.run(
      `INSERT INTO policies (${POLICY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET scope = excluded.scope, scope_id = excluded.scope_id,
         max_session_lifetime_seconds = excluded.max_session_lifetime_seconds, idle_timeout_seconds = excluded.idle_timeout_seconds,
         reauth_interval_seconds = excluded.reauth_interval_seconds, max_devices_per_user = excluded.max_devices_per_user,
         updated_at = excluded.updated_at`,
      [p.id, p.scope, p.scopeId, p.maxSessionLifetimeSeconds, p.idleTimeoutSeconds, p.reauthIntervalSeconds, p.maxDevicesPerUser, p.updatedAt],
    )
  }

  /** Broadest first: global, then group, then app policies, each by scopeId then id. */
  async listPolicies(): Promise<PolicyRecord[]> {
    const rows = await this.c.db.all<PolicyRow>(
      `SELECT ${POLICY_COLUMNS} FROM policies
       ORDER BY CASE scope WHEN 'global' THEN 0 WHEN 'group' THEN 1 ELSE 2 END, scope_id, id`,
    )
    return rows.map(policy)
  }

  async deletePolicy(id: string): Promise<boolean> {
    return (await this.c.db.run('DELETE FROM policies WHERE id = ?', [id])).changes > 0
  }
}
