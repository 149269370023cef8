/**
 * The app context check of the proxy: may this session's app reach this route, in this version?
 *
 * The security server says so in its validation answer (`appContext`: the route prefixes of the
 * app in the catalog, or '*' while the catalog is empty, and whether the version is still
 * allowed). The answer is turned into an AppGate once per cache entry, so the check per request
 * is a Set lookup of the matched route's prefix (plus a prefix scan only when the catalog names
 * finer prefixes than the proxy's route table).
 */
import { AppContextError, AppVersionError } from '../errors.js'

/** The validation answer's app context (src/security/sessions.ts GrantAppContext). */
export interface GrantAppContext {
  routes: string[] | '*'
  versionAllowed: boolean
}

export interface AppGate {
  /** null = every route. */
  readonly routes: ReadonlySet<string> | null
  readonly versionAllowed: boolean
}

/** Every route, version allowed: for answers without an app context (a security server before the catalog). */
export const OPEN_GATE: AppGate = Object.freeze({ routes: null, versionAllowed: true })

export function toAppGate(ctx: GrantAppContext | undefined): AppGate {
  if (!ctx) return OPEN_GATE
  return { routes: ctx.routes === '*' ? null : new Set(ctx.routes), versionAllowed: ctx.versionAllowed }
}

export function isGrantAppContext(v: unknown): v is GrantAppContext {
  if (!v || typeof v !== 'object') return false
  const c = v as Record<string, unknown>
  return typeof c.versionAllowed === 'boolean' &&
    (c.routes === '*' || (Array.isArray(c.routes) && c.routes.every((r) => typeof r === 'string')))
}

/**
 * Throws AppVersionError (version no longer allowed) or AppContextError (route not among the
 * app's). `routePrefix` is the proxy route matched; `path` the request path (already checked safe).
 */
export function checkAppGate(gate: AppGate, routePrefix: string, path: string): void {
  if (!gate.versionAllowed) throw new AppVersionError('this app version is no longer allowed: update the app')
  const routes = gate.routes
  if (routes === null || routes.has(routePrefix)) return
  for (const p of routes) if (path.startsWith(p)) return
  throw new AppContextError('this app may not reach this route')
}
