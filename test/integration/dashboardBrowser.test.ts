/**
 * The dashboard in a real headless Chromium, driven over the DevTools protocol (no extra
 * dependency: undici's WebSocket): sign in, see the device, lock it with the button (cookie +
 * CSRF header from the page), see the audit log, sign out. Fails on any console error or CSP
 * violation. Skipped, with a note, when no Chromium is installed (`apt-get install chromium`).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { WebSocket } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ADMIN_PASSWORD, AdminClient } from '../helpers/admin.js'
import { requireServices } from '../helpers/services.js'
import { startStack, type Stack } from '../helpers/stack.js'

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].find((p) => existsSync(p))
if (!CHROMIUM && requireServices) throw new Error('GATEHOUSE_REQUIRE_SERVICES=1 but no Chromium found: apt-get install -y chromium (.ci/services.sh does)')
if (!CHROMIUM) console.warn('dashboard browser test skipped: no Chromium found (apt-get install -y chromium); set GATEHOUSE_REQUIRE_SERVICES=1 to make this fail')

/** A minimal DevTools-protocol client for one page. */
class Cdp {
  private id = 0
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  readonly problems: string[] = []

  private constructor(private readonly ws: WebSocket) {
    ws.addEventListener('message', (ev) => {
      const m = JSON.parse(String(ev.data)) as { id?: number; result?: unknown; error?: { message: string }; method?: string; params?: Record<string, any> } // eslint-disable-line @typescript-eslint/no-explicit-any
      if (m.id !== undefined) {
        const p = this.pending.get(m.id)
        this.pending.delete(m.id)
        if (m.error) p?.reject(new Error(m.error.message))
        else p?.resolve(m.result)
      } else if (m.method === 'Runtime.consoleAPICalled' && (m.params?.type === 'error' || m.params?.type === 'warning')) {
        this.problems.push(`console.${m.params.type}: ${JSON.stringify(m.params.args)}`)
      } else if (m.method === 'Runtime.exceptionThrown') {
        this.problems.push(`exception: ${JSON.stringify(m.params?.exceptionDetails)}`)
      } else if (m.method === 'Log.entryAdded' && m.params?.entry?.level === 'error') {
        this.problems.push(`log: ${m.params.entry.text}`)
      }
    })
  }

  static async connect(url: string): Promise<Cdp> {
    const ws = new WebSocket(url)
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener('open', () => resolve())
      ws.addEventListener('error', () => reject(new Error('CDP connection failed')))
    })
    return new Cdp(ws)
  }

  send<T = any>(method: string, params: Record<string, unknown> = {}): Promise<T> { // eslint-disable-line @typescript-eslint/no-explicit-any
    const id = ++this.id
    this.ws.send(JSON.stringify({ id, method, params }))
    return new Promise<T>((resolve, reject) => this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject }))
  }

  async eval<T = unknown>(expression: string): Promise<T> {
    const r = await this.send<{ result: { value: T }; exceptionDetails?: unknown }>('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true })
    if (r.exceptionDetails) throw new Error(`evaluate failed: ${JSON.stringify(r.exceptionDetails)}`)
    return r.result.value
  }

  async until(expression: string, ms = 10_000): Promise<void> {
    const end = Date.now() + ms
    while (!(await this.eval<boolean>(expression))) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${expression}\n${await this.eval<string>('document.body ? document.body.innerText : ""')}`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }

  close(): void {
    this.ws.close()
  }
}

describe.skipIf(!CHROMIUM)('admin dashboard in headless Chromium', () => {
  let stack: Stack
  let c: AdminClient
  let browser: ChildProcess | undefined
  let profile: string
  let page: Cdp

  beforeAll(async () => {
    stack = await startStack()
    c = new AdminClient(stack)
    await c.addAdmin('root', 'admin')
    await stack.enrolledDevice()
    profile = mkdtempSync(path.join(os.tmpdir(), 'gh-chromium-'))
    const proc = spawn(CHROMIUM!, [
      '--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-extensions',
      '--remote-debugging-port=0', `--user-data-dir=${profile}`, '--ignore-certificate-errors', 'about:blank',
    ], { stdio: ['ignore', 'ignore', 'pipe'] })
    browser = proc
    const wsUrl = await new Promise<string>((resolve, reject) => {
      let err = ''
      const timer = setTimeout(() => reject(new Error(`Chromium did not start: ${err}`)), 20_000)
      proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
        err += d
        const m = /DevTools listening on (ws:\/\/\S+)/.exec(err)
        if (m) {
          clearTimeout(timer)
          resolve(m[1]!)
        }
      })
    })
    const base = new URL(wsUrl)
    const targets = await (await fetch(`http://${base.host}/json/list`)).json() as { type: string; webSocketDebuggerUrl: string }[]
    page = await Cdp.connect(targets.find((t) => t.type === 'page')!.webSocketDebuggerUrl)
    await page.send('Runtime.enable')
    await page.send('Log.enable')
    await page.send('Page.enable')
  }, 60_000)

  afterAll(async () => {
    page?.close()
    // Wait for Chromium to be gone before removing its profile: its helper processes may still be
    // writing there (ENOTEMPTY seen in CI); rmSync retries for what is left behind.
    if (browser && browser.exitCode === null && browser.signalCode === null) {
      const exited = new Promise<void>((resolve) => browser!.once('exit', () => resolve()))
      browser.kill('SIGKILL')
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))])
    }
    await c?.close()
    await stack?.close()
    if (profile) rmSync(profile, { recursive: true, force: true, maxRetries: 20, retryDelay: 100 })
  })

  it('signs in, shows the device, locks it with the button, shows the audit log, signs out', async () => {
    await page.send('Page.navigate', { url: `${stack.securityUrl}/admin/` })
    await page.until(`document.readyState === 'complete' && !document.getElementById('login').hidden`)
    // A wrong password shows an error and no data.
    await page.eval(`document.getElementById('login-name').value = 'root'; document.getElementById('login-password').value = 'wrong password!'; document.getElementById('login-submit').click(); true`)
    await page.until(`document.getElementById('login-error').textContent.length > 0`)
    expect(await page.eval<boolean>(`document.getElementById('app').hidden`)).toBe(true)

    await page.eval(`document.getElementById('login-password').value = ${JSON.stringify(ADMIN_PASSWORD)}; document.getElementById('login-submit').click(); true`)
    await page.until(`!document.getElementById('app').hidden && !!document.querySelector('[data-command=lock][data-device="dev-1"]')`)
    expect(await page.eval<string>(`document.getElementById('who').textContent`)).toBe('root (admin)')
    // The session cookie is HttpOnly: the page's script cannot read it.
    expect(await page.eval<string>('document.cookie')).not.toContain('gh_admin')

    await page.eval(`document.querySelector('[data-command=lock][data-device="dev-1"]').click(); true`)
    await page.until(`document.getElementById('status').textContent.includes('lock sent to dev-1')`)
    expect((await stack.store.getDevice('alice', 'dev-1'))?.state).toBe('locked')
    const cmd = (await stack.store.queryAudit({ action: 'device.command', actor: 'root' }))[0]
    expect(cmd?.details).toMatchObject({ kind: 'lock' })

    await page.eval(`document.querySelector('[data-tab=audit]').click(); true`)
    await page.until(`document.getElementById('view').textContent.includes('device.command')`)
    await page.eval(`document.querySelector('[data-tab=sessions]').click(); true`)
    await page.until(`!!document.querySelector('#view table')`)
    await page.eval(`document.querySelector('[data-tab=logs]').click(); true`)
    await page.until(`!!document.querySelector('#view table')`)

    await page.eval(`document.getElementById('logout').click(); true`)
    await page.until(`!document.getElementById('login').hidden`)
    expect(await stack.store.queryAudit({ action: 'admin.logout', actor: 'root' })).toHaveLength(1)
    // The two expected 401s: the page asking /me before sign-in, and the wrong password.
    const unexpected = page.problems.filter((p) => !p.includes('status of 401'))
    expect(unexpected).toEqual([])
    expect(page.problems.length).toBe(2)
  })
})
