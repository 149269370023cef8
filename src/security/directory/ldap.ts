/**
 * Directory sign-in over LDAP (OpenLDAP, 389-ds, Active Directory), with the ldapts client.
 *
 * Two ways to find the user:
 * - search then bind: bind as a service account, search `userBase` with `userFilter`, then bind
 *   as the entry found with the password typed;
 * - direct bind: bind as `userDnTemplate` with the name typed, then read that entry.
 *
 * Every sign-in opens its own connection and closes it at the end: binding as the user changes
 * the identity of the connection, so no connection is ever shared between sign-ins. Outcomes:
 * - the user and password are right: `{ name, groups }`;
 * - no such user, several entries match, the password is wrong (result 49), or the password is
 *   empty (never sent: a simple bind with an empty password is an unauthenticated bind, which
 *   "succeeds"): `null`;
 * - anything else (connection refused, timeout, TLS failure, busy server, the service account
 *   refused, an unexpected result): `UnavailableError`, so the device gets 503 and keeps its
 *   state instead of being told its password is wrong.
 *
 * User input is escaped: RFC 4515 in filters, RFC 4514 in DNs. The service account password is
 * read once, at construction, kept in a private field and never put in a message.
 */
import { readFileSync } from 'node:fs'
import { connect as netConnect, isIP, type Socket } from 'node:net'
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls'
import { Client, InvalidCredentialsError, NoSuchObjectError, SASL_MECHANISMS, type Entry } from 'ldapts'
import { ConfigError, UnavailableError } from '../../errors.js'
import type { Authenticator } from '../enrollment.js'

export interface LdapOptions {
  /** `ldap://host:port` or `ldaps://host:port` (host and port only). */
  url: string
  /** Upgrade an ldap:// connection with StartTLS before any bind. */
  startTls?: boolean
  /** PEM CA file trusted for ldaps:// and StartTLS (default: the system store). */
  caFile?: string
  /** Search then bind: the service account. */
  bindDn?: string
  /** Search then bind: file holding the service account password; read once, here. */
  bindPasswordFile?: string
  /** Search then bind: subtree searched for the user. */
  userBase?: string
  /** Search then bind: `{{username}}` is the escaped name typed. Default `(uid={{username}})`. */
  userFilter?: string
  /** Direct bind: `uid={{username}},ou=people,dc=example,dc=org`. */
  userDnTemplate?: string
  /** Attribute returned as the user name. Default `uid`. */
  usernameAttribute?: string
  /** Attribute of the user entry listing its groups (e.g. `memberOf`); DN values reduced to the first RDN value. */
  groupsAttribute?: string
  /** Subtree searched for groups; not set: no group search. */
  groupBase?: string
  /** `{{dn}}`: escaped user DN, `{{username}}`: escaped name. Default `(member={{dn}})`. */
  groupFilter?: string
  /** Attribute of a group entry returned as its name. Default `cn`. */
  groupNameAttribute?: string
  /** TCP + TLS + StartTLS. Default 3000. */
  connectTimeoutMs?: number
  /** The whole sign-in. Default 5000. */
  timeoutMs?: number
}

type User = { name: string; groups: string[] }

/** RFC 4515: a value inside a search filter (`*`, `(`, `)`, `\` and NUL as `\XX`). */
export function escapeFilterValue(value: string): string {
  return value.replace(/[*()\\\0]/g, (c) => `\\${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
}

/** RFC 4514: an attribute value inside a DN. */
export function escapeDnValue(value: string): string {
  const chars = Array.from(value)
  return chars.map((c, i) => {
    if (c === '\0') return '\\00'
    if ('\\,+"<>;='.includes(c)) return `\\${c}`
    if (c === ' ' && (i === 0 || i === chars.length - 1)) return '\\ '
    if (c === '#' && i === 0) return '\\#'
    return c
  }).join('')
}

/**
 * The value of the first RDN of a DN, unescaped (`cn=mail\2Cusers,ou=groups,…` → `mail,users`);
 * undefined when the text is not a DN.
 */
export function firstRdnValue(dn: string): string | undefined {
  const m = /^\s*(?:[A-Za-z][A-Za-z0-9-]*|\d+(?:\.\d+)*)\s*=/.exec(dn)
  if (!m) return undefined
  const chars = Array.from(dn.slice(m[0].length))
  const bytes: number[] = []
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i]!
    if (c === ',' || c === '+' || c === ';') break
    if (c === '\\') {
      const hex = `${chars[i + 1] ?? ''}${chars[i + 2] ?? ''}`
      if (/^[0-9A-Fa-f]{2}$/.test(hex)) {
        bytes.push(parseInt(hex, 16))
        i += 2
        continue
      }
      const next = chars[i + 1]
      if (next === undefined) return undefined
      bytes.push(...Buffer.from(next, 'utf8'))
      i++
      continue
    }
    bytes.push(...Buffer.from(c, 'utf8'))
  }
  const value = Buffer.from(bytes).toString('utf8').trim()
  return value.length > 0 ? value : undefined
}

/** Values of an attribute, found case-insensitively (servers answer in their own case). */
function attributeValues(entry: Entry, attribute: string): string[] {
  const want = attribute.toLowerCase()
  const key = Object.keys(entry).find((k) => k !== 'dn' && k.toLowerCase() === want)
  const v = key === undefined ? undefined : entry[key]
  if (v === undefined) return []
  const list = Array.isArray(v) ? v : [v]
  return list.map((x) => (Buffer.isBuffer(x) ? x.toString('utf8') : x)).filter((x) => x.length > 0)
}

const fill = (template: string, values: Record<string, string>) =>
  template.replace(/\{\{(\w+)\}\}/g, (all, key: string) => values[key] ?? all)

class DeadlineError extends Error {
  override name = 'DeadlineError'
}

export class LdapAuthenticator implements Authenticator {
  readonly #bindPassword: string | undefined
  private readonly o: Required<Omit<LdapOptions, 'caFile' | 'bindDn' | 'bindPasswordFile' | 'userBase' | 'userDnTemplate' | 'groupsAttribute' | 'groupBase'>>
    & Pick<LdapOptions, 'bindDn' | 'userBase' | 'userDnTemplate' | 'groupsAttribute' | 'groupBase'>
  private readonly tls: ConnectionOptions
  private readonly secure: boolean

  constructor(options: LdapOptions) {
    LdapAuthenticator.check(options)
    const url = new URL(options.url)
    this.secure = url.protocol === 'ldaps:'
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1')
    let ca: Buffer | undefined
    if (options.caFile !== undefined) ca = readOption('caFile', options.caFile)
    this.tls = {
      ...(ca ? { ca } : {}),
      host,
      ...(isIP(host) ? {} : { servername: host }),
      minVersion: 'TLSv1.2',
      rejectUnauthorized: true,
    }
    if (options.bindPasswordFile !== undefined) {
      const text = readOption('bindPasswordFile', options.bindPasswordFile).toString('utf8').replace(/\r?\n$/, '')
      if (text.length === 0) throw new ConfigError('bindPasswordFile is empty (an empty password is an anonymous bind)')
      this.#bindPassword = text
    }
    this.o = {
      url: `${url.protocol}//${url.host}`,
      startTls: options.startTls ?? false,
      bindDn: options.bindDn,
      userBase: options.userBase,
      userFilter: options.userFilter ?? '(uid={{username}})',
      userDnTemplate: options.userDnTemplate,
      usernameAttribute: options.usernameAttribute ?? 'uid',
      groupsAttribute: options.groupsAttribute,
      groupBase: options.groupBase,
      groupFilter: options.groupFilter ?? '(member={{dn}})',
      groupNameAttribute: options.groupNameAttribute ?? 'cn',
      connectTimeoutMs: options.connectTimeoutMs ?? 3000,
      timeoutMs: options.timeoutMs ?? 5000,
    }
  }

  /** The checks of the config schema, for callers that build options in code. */
  private static check(o: LdapOptions): void {
    let url: URL
    try {
      url = new URL(o.url)
    } catch {
      throw new ConfigError('url must be an ldap or ldaps URL')
    }
    if (url.protocol !== 'ldap:' && url.protocol !== 'ldaps:') throw new ConfigError('url must be an ldap or ldaps URL')
    if (o.startTls && url.protocol === 'ldaps:') throw new ConfigError('startTls must be false with an ldaps:// URL (already TLS)')
    const search = [o.bindDn, o.bindPasswordFile, o.userBase]
    if (o.userDnTemplate !== undefined) {
      if (search.some((v) => v !== undefined)) throw new ConfigError('userDnTemplate cannot be combined with bindDn, bindPasswordFile or userBase')
      if (!o.userDnTemplate.includes('{{username}}')) throw new ConfigError('userDnTemplate must contain {{username}}')
    } else if (search.some((v) => v === undefined)) {
      throw new ConfigError('bindDn, bindPasswordFile and userBase are required for search then bind (or set userDnTemplate for direct bind)')
    }
    if (o.userFilter !== undefined && !o.userFilter.includes('{{username}}')) throw new ConfigError('userFilter must contain {{username}}')
    for (const k of ['connectTimeoutMs', 'timeoutMs'] as const) {
      const v = o[k]
      if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw new ConfigError(`${k} must be a positive integer`)
    }
  }

  async verify(name: string, password: string): Promise<User | null> {
    if (typeof name !== 'string' || name.length === 0 || name.length > 256) return null
    // An empty password would make the bind anonymous, which the server accepts: never send one.
    if (typeof password !== 'string' || password.length === 0) return null

    const sockets = new Set<Socket>()
    const track = <S extends Socket>(s: S): S => {
      sockets.add(s)
      return s
    }
    const client = new Client({
      url: this.o.url,
      timeout: this.o.timeoutMs,
      connectTimeout: this.o.connectTimeoutMs,
      ...(this.secure ? { tlsOptions: { ...this.tls } } : {}),
      createConnection: ((port: number, host: string) => track(netConnect(port, host))) as typeof netConnect,
      createSecureConnection: ((...args: unknown[]) => track((tlsConnect as (...a: unknown[]) => Socket)(...args))) as typeof tlsConnect,
    })
    const work = this.signIn(client, name, password)
    work.catch(() => {}) // settled below, or abandoned after the deadline
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new DeadlineError(`no answer within ${this.o.timeoutMs} ms`)), this.o.timeoutMs)
    })
    try {
      return await Promise.race([work, deadline])
    } catch (err) {
      throw new UnavailableError('directory unavailable', { cause: safeCause(err) })
    } finally {
      clearTimeout(timer)
      await close(client, sockets)
    }
  }

  private async signIn(client: Client, name: string, password: string): Promise<User | null> {
    if (this.o.startTls) {
      const connect = client.startTLS({ ...this.tls })
      connect.catch(() => {})
      let timer: NodeJS.Timeout | undefined
      try {
        await Promise.race([connect, new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new DeadlineError(`StartTLS not done within ${this.o.connectTimeoutMs} ms`)), this.o.connectTimeoutMs)
        })])
      } finally {
        clearTimeout(timer)
      }
    }
    const attributes = [this.o.usernameAttribute, ...(this.o.groupsAttribute ? [this.o.groupsAttribute] : [])]
    let entry: Entry | undefined
    let userDn: string
    if (this.o.userDnTemplate !== undefined) {
      userDn = fill(this.o.userDnTemplate, { username: escapeDnValue(name) })
      if (!(await bindAsUser(client, userDn, password))) return null
      entry = await readEntry(client, userDn, attributes)
    } else {
      await client.bind(this.o.bindDn!, this.#bindPassword!) // refused: the directory is unusable, not the user wrong
      const filter = fill(this.o.userFilter, { username: escapeFilterValue(name) })
      const { searchEntries } = await client.search(this.o.userBase!, { scope: 'sub', filter, attributes, sizeLimit: 2 })
      if (searchEntries.length !== 1) return null // unknown, or ambiguous: never guess which one
      entry = searchEntries[0]!
      userDn = entry.dn
      if (!(await bindAsUser(client, userDn, password))) return null
      // Read the groups with the service account's rights, not the user's.
      if (this.o.groupBase !== undefined) await client.bind(this.o.bindDn!, this.#bindPassword!)
    }

    const userName = (entry && attributeValues(entry, this.o.usernameAttribute)[0]) || name
    const groups = new Set<string>()
    if (entry && this.o.groupsAttribute) {
      for (const v of attributeValues(entry, this.o.groupsAttribute)) groups.add(firstRdnValue(v) ?? v)
    }
    if (this.o.groupBase !== undefined) {
      const filter = fill(this.o.groupFilter, { dn: escapeFilterValue(userDn), username: escapeFilterValue(userName) })
      const { searchEntries } = await client.search(this.o.groupBase, { scope: 'sub', filter, attributes: [this.o.groupNameAttribute] })
      for (const g of searchEntries) for (const v of attributeValues(g, this.o.groupNameAttribute)) groups.add(v)
    }
    return { name: userName, groups: [...groups].sort() }
  }
}

/** Bind as the user: false for wrong credentials (49); every other failure throws. */
async function bindAsUser(client: Client, dn: string, password: string): Promise<boolean> {
  // ldapts reads a bind name equal to a SASL mechanism as a SASL bind.
  if ((SASL_MECHANISMS as readonly string[]).includes(dn)) return false
  try {
    await client.bind(dn, password)
    return true
  } catch (err) {
    if (err instanceof InvalidCredentialsError) return false
    throw err
  }
}

/** The entry at `dn` (base search), or undefined when it cannot be seen. */
async function readEntry(client: Client, dn: string, attributes: string[]): Promise<Entry | undefined> {
  try {
    const { searchEntries } = await client.search(dn, { scope: 'base', filter: '(objectClass=*)', attributes })
    return searchEntries[0]
  } catch (err) {
    if (err instanceof NoSuchObjectError) return undefined
    throw err
  }
}

/** Unbind politely, but never wait long for it; then make sure every socket is gone. */
async function close(client: Client, sockets: Set<Socket>): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([
    client.unbind().catch(() => {}),
    new Promise<void>((resolve) => { timer = setTimeout(resolve, 250) }),
  ])
  clearTimeout(timer)
  for (const s of sockets) s.destroy()
}

/** A cause for the log: the error's class, code and message only (ldapts never puts a password in one). */
function safeCause(err: unknown): Error {
  if (!(err instanceof Error)) return new Error(String(err))
  const e = new Error(`${err.name}: ${err.message.split('\n')[0]}`)
  const code = (err as { code?: unknown }).code
  if (code !== undefined) Object.assign(e, { code })
  return e
}

function readOption(option: string, file: string): Buffer {
  try {
    return readFileSync(file)
  } catch (err) {
    throw new ConfigError(`${option} cannot be read (${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
}
