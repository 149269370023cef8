/**
 * Multi-host PostgreSQL URLs, the way libpq writes them, for `pg` 8 (whose connection-string
 * parser takes one host only):
 *
 *   postgres://user:pw@db1:5432,db2:5432/gatehouse?target_session_attrs=read-write
 *                      └──── host list ────┘           └─ which host to keep ─┘
 *
 * Split into one single-host URL per host, in order (user, password, database and every other
 * parameter kept), plus the `target_session_attrs` rule PgDb applies when it connects:
 *   any         the first host that accepts a connection (libpq's default; ours for one host)
 *   read-write  the first host where `SHOW transaction_read_only` is off (ours for several hosts:
 *               the store writes, a standby would refuse every write)
 *   primary     the first host where `pg_is_in_recovery()` is false
 * read-only, standby and prefer-standby are refused: the store writes.
 *
 * Errors never quote the URL (it may carry a password).
 */
import { ConfigError } from '../errors.js'

export type TargetSessionAttrs = 'any' | 'read-write' | 'primary'

export interface PgHost {
  /** `host:port` as written (no credentials): for logs and messages. */
  label: string
  /** The URL with this host alone and without target_session_attrs (for pg's `connectionString`). */
  url: string
}

export interface PgHostList {
  hosts: PgHost[]
  targetSessionAttrs: TargetSessionAttrs
}

const ACCEPTED: readonly TargetSessionAttrs[] = ['any', 'read-write', 'primary']
const WRITE_REFUSING = new Set(['read-only', 'standby', 'prefer-standby'])
/** `name`, `name:port`, `[v6]` or `[v6]:port`. */
const HOST_RE = /^(\[[0-9A-Fa-f:.]+\]|[^:[\]/?#@]+)(:\d{1,5})?$/
const PARAM = 'target_session_attrs'

/** Split a postgres:// URL into its hosts (see the module comment); ConfigError when malformed. */
export function parsePgHosts(url: string): PgHostList {
  const m = /^(postgres(?:ql)?:\/\/)([^/?#]*)(.*)$/s.exec(url)
  if (!m) throw new ConfigError('database URL must start with postgres:// or postgresql://')
  const [, scheme, authority, rest] = m as unknown as [string, string, string, string]
  const at = authority.lastIndexOf('@')
  const userinfo = at >= 0 ? authority.slice(0, at + 1) : ''
  const hostList = authority.slice(at + 1)
  const q = rest.indexOf('?')
  const pathPart = q === -1 ? rest : rest.slice(0, q)
  const params = q === -1 ? [] : rest.slice(q + 1).split('&').filter((p) => p !== '')
  let attrs: string | undefined
  const kept: string[] = []
  for (const p of params) {
    const eq = p.indexOf('=')
    const key = safeDecode(eq === -1 ? p : p.slice(0, eq))
    const value = safeDecode(eq === -1 ? '' : p.slice(eq + 1))
    if (key === PARAM) attrs = value
    else {
      if (key === 'host' && value.includes(',')) throw new ConfigError('database URL: list several hosts in the host part (postgres://user@db1:5432,db2:5432/name), not in a host= parameter')
      kept.push(p)
    }
  }
  const query = kept.length > 0 ? `?${kept.join('&')}` : ''
  const items = hostList.split(',')
  if (items.length > 1) {
    items.forEach((h, i) => {
      if (!HOST_RE.test(h)) throw new ConfigError(`database URL: host ${i + 1} of the host list must be host, host:port or [ipv6]:port`)
    })
    const seen = new Set<string>()
    for (const h of items) {
      if (seen.has(h)) throw new ConfigError(`database URL: host ${h} appears twice in the host list`)
      seen.add(h)
    }
  }
  if (attrs !== undefined && !ACCEPTED.includes(attrs as TargetSessionAttrs)) {
    if (WRITE_REFUSING.has(attrs)) throw new ConfigError(`database URL: ${PARAM}=${attrs} is not supported: Gatehouse writes; use read-write or primary`)
    throw new ConfigError(`database URL: ${PARAM} must be one of ${ACCEPTED.join(', ')}`)
  }
  return {
    hosts: items.map((h) => ({ label: h || '(default host)', url: `${scheme}${userinfo}${h}${pathPart}${query}` })),
    targetSessionAttrs: (attrs as TargetSessionAttrs | undefined) ?? (items.length > 1 ? 'read-write' : 'any'),
  }
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '))
  } catch {
    return s
  }
}
