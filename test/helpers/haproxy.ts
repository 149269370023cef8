/**
 * A real HAProxy for the high-availability tests: config/haproxy.cfg rendered for loopback ports
 * (only addresses, file paths and the server list change; every tuning line is kept as shipped),
 * checked with `haproxy -c`, run in the foreground, and read through its stats page.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const HAPROXY_TEMPLATE = fileURLToPath(new URL('../../config/haproxy.cfg', import.meta.url))

/** The haproxy binary answers `-v` (installed: Debian package `haproxy`). */
export function haproxyAvailable(): boolean {
  try {
    execFileSync('haproxy', ['-v'], { stdio: 'pipe', timeout: 5000 })
    return true
  } catch {
    return false
  }
}

export interface FarmServer { name: string; port: number; adminPort: number }

export interface RenderOptions {
  frontendPort: number
  statsPort: number
  /** Folder holding ca.crt and haproxy.pem (replaces /etc/gatehouse/certs). */
  certsDir: string
  socket: string
  servers: FarmServer[]
}

/**
 * config/haproxy.cfg for loopback: the `bind` addresses, the certificate folder, the stats socket
 * and one `server` line per proxy (with its admin port for the health check); run by a user other
 * than root, without `chroot`, `user` and `group`. Throws when an
 * anchor is missing, so that a change to the template cannot silently leave the test behind.
 */
export function renderHaproxyCfg(template: string, o: RenderOptions, asRoot = process.getuid?.() === 0): string {
  const seen = { front: 0, stats: 0, socket: 0, defaultServer: 0, certs: 0 }
  const out: string[] = []
  for (const line of template.split('\n')) {
    if (/^\s+bind :443 /.test(line)) {
      seen.front++
      out.push(line.replace('bind :443 ', `bind 127.0.0.1:${o.frontendPort} `))
    } else if (/^\s+bind 127\.0\.0\.1:8404\b/.test(line)) {
      seen.stats++
      out.push(line.replace('127.0.0.1:8404', `127.0.0.1:${o.statsPort}`))
    } else if (/^\s+stats socket \S+/.test(line)) {
      seen.socket++
      out.push(line.replace(/stats socket \S+/, `stats socket ${o.socket}`))
    } else if (/^\s+(chroot|user|group)\s/.test(line) && !asRoot) {
      // Only root can chroot and change user: a test run by another user keeps its own.
    } else if (/^\s+server\s/.test(line)) {
      // the example servers are replaced by ours, after default-server
    } else if (/^\s+default-server\s/.test(line)) {
      seen.defaultServer++
      out.push(line)
      for (const s of o.servers) out.push(`    server ${s.name} 127.0.0.1:${s.port} port ${s.adminPort}`)
    } else {
      out.push(line)
    }
  }
  let cfg = out.join('\n')
  seen.certs = cfg.split('/etc/gatehouse/certs/').length - 1
  cfg = cfg.replaceAll('/etc/gatehouse/certs/', `${o.certsDir}/`)
  for (const [anchor, n] of Object.entries(seen)) {
    if (n < 1) throw new Error(`config/haproxy.cfg changed: no ${anchor} line to render for the test`)
  }
  return cfg
}

/** One row of HAProxy's stats CSV (`/stats;csv`): proxy, server and the columns we read. */
export interface StatsRow { pxname: string; svname: string; status: string; [column: string]: string }

export class HaproxyProcess {
  readonly child: ChildProcess
  output = ''
  private exitCode: number | null | undefined

  constructor(readonly cfgFile: string, readonly statsPort: number, readonly frontendPort: number) {
    // -db: foreground, logs (log stdout) to our pipe. Its own process group, killed by pid on close.
    this.child = spawn('haproxy', ['-db', '-f', cfgFile], { stdio: ['ignore', 'pipe', 'pipe'], detached: true })
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => { this.output += d })
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => { this.output += d })
    this.child.on('exit', (code) => { this.exitCode = code })
  }

  get alive(): boolean {
    return this.exitCode === undefined
  }

  async stats(): Promise<StatsRow[]> {
    const res = await fetch(`http://127.0.0.1:${this.statsPort}/stats;csv`, { signal: AbortSignal.timeout(2000) })
    const text = await res.text()
    const [head, ...rows] = text.trim().split('\n')
    const cols = head!.replace(/^# /, '').split(',')
    return rows.map((r) => Object.fromEntries(r.split(',').map((v, i) => [cols[i] ?? `c${i}`, v])) as StatsRow)
  }

  /** Status of each server of `backend` ("UP", "DOWN", "UP 1/2", "no check", …). */
  async serverStates(backend = 'gatehouse_proxies'): Promise<Record<string, string>> {
    const rows = await this.stats()
    return Object.fromEntries(rows.filter((r) => r.pxname === backend && r.svname !== 'BACKEND' && r.svname !== 'FRONTEND').map((r) => [r.svname, r.status]))
  }

  /** A counter of the backend row (`wretr` retries, `wredis` redispatches, `econ`, `eresp`, …). */
  async backendCounter(column: string, backend = 'gatehouse_proxies'): Promise<number> {
    const row = (await this.stats()).find((r) => r.pxname === backend && r.svname === 'BACKEND')
    return Number(row?.[column] ?? NaN)
  }

  /** Poll the stats page until `ok(states)`; returns the time it took. Rejects after `timeoutMs`. */
  async waitStates(ok: (s: Record<string, string>) => boolean, timeoutMs = 15_000, everyMs = 25): Promise<number> {
    const started = performance.now()
    let last: Record<string, string> | string = 'no answer yet'
    while (performance.now() - started < timeoutMs) {
      if (!this.alive) throw new Error(`haproxy exited:\n${this.output}`)
      try {
        const s = await this.serverStates()
        last = s
        if (ok(s)) return performance.now() - started
      } catch (err) {
        last = String(err)
      }
      await new Promise((r) => setTimeout(r, everyMs))
    }
    throw new Error(`haproxy servers not as expected after ${timeoutMs} ms: ${JSON.stringify(last)}\n${this.output.slice(-4000)}`)
  }

  async close(): Promise<void> {
    if (!this.alive || this.child.pid === undefined) return
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()))
    try {
      process.kill(this.child.pid, 'SIGTERM')
    } catch {
      return
    }
    const timer = setTimeout(() => {
      try { process.kill(this.child.pid!, 'SIGKILL') } catch { /* gone */ }
    }, 3000)
    await exited
    clearTimeout(timer)
  }
}

/**
 * Render config/haproxy.cfg into `dir`, make the frontend's PEM (certificate chain then key),
 * check the result with `haproxy -c`, start HAProxy and wait until every server is UP.
 */
export async function startHaproxy(o: {
  dir: string
  certsDir: string
  serverCert: string
  serverKey: string
  frontendPort: number
  statsPort: number
  servers: FarmServer[]
}): Promise<HaproxyProcess> {
  // What `awk 1 server.crt server.key > haproxy.pem` makes: each file ends with a newline (the
  // development PKI writes none after the last line, and HAProxy cannot read "-----END…-----BEGIN").
  const pem = [o.serverCert, o.serverKey].map((f) => `${readFileSync(f, 'utf8').trimEnd()}\n`).join('')
  writeFileSync(path.join(o.certsDir, 'haproxy.pem'), pem, { mode: 0o600 })
  const cfgFile = path.join(o.dir, 'haproxy.cfg')
  writeFileSync(cfgFile, renderHaproxyCfg(readFileSync(HAPROXY_TEMPLATE, 'utf8'), {
    frontendPort: o.frontendPort, statsPort: o.statsPort, certsDir: o.certsDir, socket: path.join(o.dir, 'haproxy.sock'), servers: o.servers,
  }))
  try {
    execFileSync('haproxy', ['-c', '-f', cfgFile], { stdio: 'pipe', timeout: 10_000 })
  } catch (err) {
    const e = err as { stderr?: Buffer; stdout?: Buffer }
    throw new Error(`haproxy -c refused the rendered config/haproxy.cfg:\n${e.stdout?.toString() ?? ''}${e.stderr?.toString() ?? ''}`)
  }
  const h = new HaproxyProcess(cfgFile, o.statsPort, o.frontendPort)
  const names = o.servers.map((s) => s.name)
  await h.waitStates((s) => names.every((n) => s[n] === 'UP'))
  return h
}
