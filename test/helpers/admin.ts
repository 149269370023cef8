/**
 * Helpers for admin-API and self-service tests: admins created straight through the server's
 * AdminAuth, JSON calls over real HTTPS with a bearer token or the dashboard cookie + CSRF header.
 */
import { Agent } from 'undici'
import type { AdminRole } from '../../src/store/types.js'
import { sendRaw, type RawAnswer, type Stack } from './stack.js'

export const ADMIN_PASSWORD = 'admin password 123'

export interface Call {
  token?: string
  cookie?: string
  csrf?: string
  body?: unknown
  /** Raw body text (malformed JSON tests). */
  raw?: string | Buffer
  contentType?: string | null
  headers?: Record<string, string>
}

export interface ApiAnswer extends RawAnswer {
  json: any // eslint-disable-line @typescript-eslint/no-explicit-any
}

export class AdminClient {
  readonly agent: Agent
  constructor(private readonly stack: Stack) {
    this.agent = new Agent({ connect: { ca: stack.ca } })
  }

  async call(method: string, path: string, o: Call = {}): Promise<ApiAnswer> {
    const headers: Record<string, string> = { ...o.headers }
    if (o.token) headers.authorization = `Bearer ${o.token}`
    if (o.cookie) headers.cookie = o.cookie
    if (o.csrf) headers['x-gatehouse-csrf'] = o.csrf
    let body: string | Buffer | undefined
    if (o.raw !== undefined) body = o.raw
    else if (o.body !== undefined) body = JSON.stringify(o.body)
    else if (method !== 'GET' && method !== 'DELETE') body = '{}'
    if (body !== undefined && o.contentType !== null) headers['content-type'] = o.contentType ?? 'application/json'
    const a = await sendRaw(this.agent, this.stack.securityUrl, path, { method, headers, body })
    let json: unknown
    try {
      json = a.text ? JSON.parse(a.text) : undefined
    } catch {
      json = undefined
    }
    return { ...a, json }
  }

  async addAdmin(name: string, role: AdminRole, password = ADMIN_PASSWORD): Promise<void> {
    await this.stack.security.services.adminAuth.putAdmin(name, role, password)
  }

  /** Sign in; returns the bearer token, the cookie header value and the CSRF token. */
  async login(name: string, password = ADMIN_PASSWORD): Promise<{ token: string; cookie: string; csrf: string }> {
    const r = await this.call('POST', '/admin/v1/login', { body: { name, password } })
    if (r.status !== 200) throw new Error(`login ${name}: ${r.status} ${r.text}`)
    const setCookie = String(r.headers['set-cookie'])
    return { token: r.json.token, cookie: setCookie.split(';')[0]!, csrf: r.json.csrfToken }
  }

  /** A new admin of `role`, signed in: its bearer token. */
  async tokenFor(name: string, role: AdminRole): Promise<string> {
    await this.addAdmin(name, role)
    return (await this.login(name)).token
  }

  close(): Promise<void> {
    return this.agent.close()
  }
}
