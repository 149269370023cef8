/**
 * What every admin and self-service route shares: authentication and role checks, audit, strict
 * input readers that name the offending field, paging, and the list shape.
 *
 * Shapes:
 *   list     → { items: [...], limit, offset, nextOffset }   (nextOffset null on the last page)
 *   one      → the object itself
 *   error    → { error: { code, message } }                  (message names the field)
 */
import { MalformedError } from '../../errors.js'
import { readBody } from '../../http/json.js'
import { can, type AdminPrincipal, type Permission } from '../adminAuth.js'
import type { RouteContext, RouteResult, RouteSpec } from '../router.js'
import type { SecurityServices } from '../services.js'

export const MAX_LIMIT = 500
export const DEFAULT_LIMIT = 100

export interface AdminContext extends RouteContext {
  admin: AdminPrincipal
}

export interface AdminRouteSpec {
  method: RouteSpec['method']
  path: string
  perm: Permission
  rawBody?: boolean
  handler(ctx: AdminContext): Promise<RouteResult>
}

/** An admin-API route: access 'admin' (CIDR allow-list), signed in, allowed by role. */
export function adminRoute(s: SecurityServices, r: AdminRouteSpec): RouteSpec {
  return {
    method: r.method, path: r.path, access: 'admin', rawBody: r.rawBody,
    async handler(ctx) {
      const admin = await s.adminAuth.authenticate(ctx.req, r.method)
      if (!can(admin.role, r.perm)) {
        await s.audit.record({ actor: admin.name, actorRole: admin.role, action: 'admin.denied', target: `${r.method} ${r.path}`, remote: ctx.remote, details: { permission: r.perm } })
      }
      s.adminAuth.require(admin, r.perm)
      return r.handler({ ...ctx, admin })
    },
  }
}

/** Audit an admin action with the caller as actor. */
export function auditAdmin(s: SecurityServices, ctx: AdminContext, action: string, target: string, details?: Record<string, unknown>): Promise<void> {
  return s.audit.record({ actor: ctx.admin.name, actorRole: ctx.admin.role, action, target, remote: ctx.remote, details })
}

/** Shown quoted and cut short: a field name echoed in an error comes from the client. */
const shown = (k: string) => JSON.stringify(k.length > 64 ? `${k.slice(0, 64)}…` : k)

/** Refuse any body field not in `allowed`. */
export function onlyFields(body: Record<string, unknown>, allowed: readonly string[]): void {
  for (const k of Object.keys(body)) if (!allowed.includes(k)) throw new MalformedError(`unknown field ${shown(k)} (allowed: ${allowed.join(', ') || 'none'})`)
}

/** Refuse any query parameter not in `allowed`, and repeated ones. */
export function onlyQuery(q: URLSearchParams, allowed: readonly string[]): void {
  const seen = new Set<string>()
  for (const k of q.keys()) {
    if (!allowed.includes(k)) throw new MalformedError(`unknown query parameter ${shown(k)} (allowed: ${allowed.join(', ') || 'none'})`)
    if (seen.has(k)) throw new MalformedError(`query parameter ${shown(k)} is repeated`)
    seen.add(k)
  }
}

export const PAGE_PARAMS = ['limit', 'offset'] as const

export interface Paging {
  limit: number
  offset: number
}

export function paging(q: URLSearchParams): Paging {
  const num = (k: string, def: number, min: number, max: number) => {
    const v = q.get(k)
    if (v === null) return def
    if (!/^\d{1,9}$/.test(v) || Number(v) < min || Number(v) > max) throw new MalformedError(`${k} must be an integer from ${min} to ${max}`)
    return Number(v)
  }
  return { limit: num('limit', DEFAULT_LIMIT, 1, MAX_LIMIT), offset: num('offset', 0, 0, 1e9) }
}

export function listBody<T>(items: T[], p: Paging): { items: T[]; limit: number; offset: number; nextOffset: number | null } {
  return { items, limit: p.limit, offset: p.offset, nextOffset: items.length === p.limit ? p.offset + p.limit : null }
}

/** Page through an already-built list. */
export function slicePage<T>(all: T[], p: Paging) {
  return listBody(all.slice(p.offset, p.offset + p.limit), p)
}

export const ID_RE = /^[A-Za-z0-9._:@-]{1,128}$/
// Control characters are what the pattern refuses.
// eslint-disable-next-line no-control-regex
export const USER_RE = /^[^\u0000-\u001f\u007f/]{1,256}$/

/** A query parameter or undefined; `re` checks it. */
export function qStr(q: URLSearchParams, key: string, re: RegExp = USER_RE): string | undefined {
  const v = q.get(key)
  if (v === null) return undefined
  if (!re.test(v)) throw new MalformedError(`${key} is not valid`)
  return v
}

export function qBool(q: URLSearchParams, key: string): boolean | undefined {
  const v = q.get(key)
  if (v === null) return undefined
  if (v !== 'true' && v !== 'false') throw new MalformedError(`${key} must be true or false`)
  return v === 'true'
}

export function qOneOf<T extends string>(q: URLSearchParams, key: string, values: readonly T[]): T | undefined {
  const v = q.get(key)
  if (v === null) return undefined
  if (!(values as readonly string[]).includes(v)) throw new MalformedError(`${key} must be one of ${values.join(', ')}`)
  return v as T
}

/** ms since epoch from an integer or an ISO date. */
export function qTime(q: URLSearchParams, key: string): number | undefined {
  const v = q.get(key)
  if (v === null) return undefined
  const n = /^\d{1,15}$/.test(v) ? Number(v) : Date.parse(v)
  if (!Number.isFinite(n)) throw new MalformedError(`${key} must be milliseconds since the epoch or an ISO 8601 date`)
  return n
}

/** A path parameter checked against `re` (path params arrive decoded: a "/" from %2F is refused here). */
export function param(params: Record<string, string>, key: string, re: RegExp = ID_RE): string {
  const v = params[key]
  if (v === undefined || !re.test(v)) throw new MalformedError(`${key} is not valid`)
  return v
}

export function bodyStr(body: Record<string, unknown>, key: string, o: { max?: number; re?: RegExp; optional?: boolean } = {}): string | undefined {
  const v = body[key]
  if (v === undefined || v === null) {
    if (o.optional) return undefined
    throw new MalformedError(`${key} is required`)
  }
  if (typeof v !== 'string' || v.length === 0 || v.length > (o.max ?? 256)) throw new MalformedError(`${key} must be a string of 1..${o.max ?? 256} characters`)
  if (o.re && !o.re.test(v)) throw new MalformedError(`${key} is not valid`)
  return v
}

export function bodyReqStr(body: Record<string, unknown>, key: string, o: { max?: number; re?: RegExp } = {}): string {
  return bodyStr(body, key, o)!
}

export function bodyOneOf<T extends string>(body: Record<string, unknown>, key: string, values: readonly T[]): T {
  const v = body[key]
  if (typeof v !== 'string' || !(values as readonly string[]).includes(v)) throw new MalformedError(`${key} must be one of ${values.join(', ')}`)
  return v as T
}

export function bodyInt(body: Record<string, unknown>, key: string, min: number, max: number, optional = true): number | undefined {
  const v = body[key]
  if (v === undefined || v === null) {
    if (optional) return undefined
    throw new MalformedError(`${key} is required`)
  }
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) throw new MalformedError(`${key} must be an integer from ${min} to ${max}`)
  return v
}

export function bodyStrArray(body: Record<string, unknown>, key: string, o: { maxItems?: number; re?: RegExp } = {}): string[] | undefined {
  const v = body[key]
  if (v === undefined) return undefined
  const max = o.maxItems ?? 100
  if (!Array.isArray(v) || v.length > max || !v.every((x) => typeof x === 'string' && x.length > 0 && x.length <= 256 && (!o.re || o.re.test(x)))) {
    throw new MalformedError(`${key} must be an array of at most ${max} valid strings`)
  }
  return v as string[]
}

/** Read every page of a store listing (pages of MAX_LIMIT), up to `cap` items. */
export async function readAll<T>(fetch: (p: { limit: number; offset: number }) => Promise<T[]>, cap = 100_000): Promise<T[]> {
  const out: T[] = []
  for (let offset = 0; offset < cap; offset += MAX_LIMIT) {
    const page = await fetch({ limit: MAX_LIMIT, offset })
    out.push(...page)
    if (page.length < MAX_LIMIT) break
  }
  return out
}


/** The raw request body (uploads), at most `limit` bytes: 413 beyond, checked as it arrives. */
export const readRawBody = readBody
