/**
 * The processes one suite run measures, all real processes on loopback:
 *
 *   upstream        the demo upstream (`gatehouse demo upstream`), plain HTTP: the ceiling
 *   exchange        the fake Exchange (bench/fakeExchangeMain.ts), plain HTTP
 *   security        `gatehouse security` (device API, proxy API, admin API)
 *   gatehouse       `gatehouse proxy`, one event loop (`proxy.workers: 1`); a second proxy process
 *                   for the revocation scenario when asked
 *   nginx           Debian nginx, one worker (config/nginx-bench.conf), when installed
 *   node            the plain Node proxy (bench/suite/nodeProxyMain.ts)
 *
 * Pinning (taskset) on a 2-core machine: the proxy under test (Gatehouse, nginx or Node) gets
 * core 1 to itself; the load generator (this process), the upstream, the fake Exchange and the
 * security server share core 0. Every proxy is configured alike: one thread, upstream keep-alive.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { CLI, ROOT, freePort, securityYaml } from '../lib.js'
import { childPids, hasTaskset, spawnReady, stopProcess, type Spawned } from './procs.js'

const HERE = path.dirname(fileURLToPath(import.meta.url))
export const PROXY_CORE = 1
export const SHARED_CORE = 0
export const USER = 'alice'
export const USER_PASSWORD = 'bench-user-password-1'
export const MAIL_PASSWORD = 'mailbox-password-1'
const GiB = 1024 ** 3

export interface World {
  dir: string
  ca: Buffer
  ports: { device: number; proxyApi: number; secAdmin: number; proxy: number; proxyAdmin: number; proxy2: number; proxy2Admin: number; upstream: number; exchange: number; exchangeStats: number; nginx: number; node: number }
  upstream: Spawned
  exchange: Spawned
  security: Spawned
  gatehouse: Spawned
  gatehouse2: Spawned | undefined
  nginx: Spawned | undefined
  /** Why nginx is missing (reported, never silently dropped). */
  nginxMissing: string | undefined
  nginxVersion: string | undefined
  node: Spawned
  adminToken: string
  stop(): Promise<void>
}

export interface WorldOptions {
  /** Start a second Gatehouse proxy process (revocation scenario). */
  secondProxy?: boolean
  /** Called with the data dir after the database exists and before the security server starts. */
  seed?: (dir: string) => Promise<void>
  /** Extra node arguments for the Gatehouse proxy process (BENCH_NODE_ARGS, e.g. --cpu-prof). */
  proxyNodeArgs?: string[]
  /** Extra node arguments for the second proxy process (bench/ab.ts). */
  secondProxyNodeArgs?: string[]
  /** Another build's CLI for the second proxy process (bench/ab.ts: old code against new); default this build's. */
  secondProxyCli?: string
}

export function nginxVersion(): string | undefined {
  const r = spawnSync('nginx', ['-v'], { encoding: 'utf8' })
  if (r.error || r.status !== 0) return undefined
  return /nginx\/(\S+)/.exec(`${r.stderr}${r.stdout}`)?.[1]
}

/** Resolve once something accepts TCP connections on the port. */
async function waitForPort(port: number, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1')
      s.once('connect', () => { s.destroy(); resolve(true) })
      s.once('error', () => resolve(false))
    })
    if (ok) return
    if (Date.now() > end) throw new Error(`nothing listens on ${port}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

function proxyYaml(port: number, admin: number, p: World['ports']): string {
  return `
proxy:
  listen: { port: ${port} }
  admin: { port: ${admin} }
  securityServers: [https://localhost:${p.proxyApi}]
  workers: 1
  limits: { maxBodyBytes: ${GiB}, maxResponseBytes: ${GiB} }
  routes:
    - { prefix: /app/, upstream: http://127.0.0.1:${p.upstream}, stripPrefix: true }
  activeSync:
    enabled: true
    upstream: http://127.0.0.1:${p.exchange}
    upstreamConnections: 256
`
}

export async function startWorld(o: WorldOptions = {}): Promise<World> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'gh-suite-'))
  const ports: World['ports'] = {
    device: await freePort(), proxyApi: await freePort(), secAdmin: await freePort(), proxy: await freePort(), proxyAdmin: await freePort(),
    proxy2: await freePort(), proxy2Admin: await freePort(), upstream: await freePort(), exchange: await freePort(), exchangeStats: await freePort(),
    nginx: await freePort(), node: await freePort(),
  }
  const security = securityYaml(ports)
  writeFileSync(path.join(dir, 'gatehouse.yaml'), security + proxyYaml(ports.proxy, ports.proxyAdmin, ports))
  writeFileSync(path.join(dir, 'gatehouse2.yaml'), security + proxyYaml(ports.proxy2, ports.proxy2Admin, ports))
  writeFileSync(path.join(dir, 'upstream.yaml'), `demo: { upstream: { port: ${ports.upstream} } }\n`)

  const started: Spawned[] = []
  const stop = async () => {
    await Promise.all(started.map((s) => stopProcess(s.proc, s.name === 'nginx' ? 'SIGQUIT' : 'SIGINT')))
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    const cli = (args: string[], input?: string) => execFileSync(process.execPath, [CLI, ...args, '--config', 'gatehouse.yaml'], {
      cwd: dir, input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'],
    })
    cli(['users', 'add', USER, '--password-stdin'], `${USER_PASSWORD}\n`)
    cli(['admin', 'add', 'benchadmin', '--role', 'admin', '--password-stdin'], 'bench admin password 1\n')
    const adminToken = /gha_[A-Za-z0-9_-]+/.exec(cli(['admin', 'token', 'benchadmin', '--ttl', '86400']))?.[0]
    if (!adminToken) throw new Error('gatehouse admin token printed no token')
    if (o.seed) await o.seed(dir)

    const node = process.execPath
    const upstream = await spawnReady('upstream', node, [CLI, 'demo', 'upstream', '--config', 'upstream.yaml'], { cwd: dir, ready: 'demo upstream ready', core: SHARED_CORE })
    started.push(upstream)
    const exchange = await spawnReady('exchange', node, [path.join(ROOT, 'dist-bench/bench/fakeExchangeMain.js'), String(ports.exchange), String(ports.exchangeStats), USER, MAIL_PASSWORD], {
      cwd: dir, ready: 'fake exchange ready', core: SHARED_CORE,
    })
    started.push(exchange)
    const sec = await spawnReady('security', node, [CLI, 'security', '--config', 'gatehouse.yaml'], { cwd: dir, ready: 'security server ready', core: SHARED_CORE })
    started.push(sec)
    const gatehouse = await spawnReady('gatehouse', node, [...(o.proxyNodeArgs ?? []), CLI, 'proxy', '--config', 'gatehouse.yaml'], { cwd: dir, ready: 'gatehouse proxy ready', core: PROXY_CORE })
    started.push(gatehouse)
    let gatehouse2: Spawned | undefined
    if (o.secondProxy) {
      gatehouse2 = await spawnReady('gatehouse2', node, [...(o.secondProxyNodeArgs ?? []), o.secondProxyCli ?? CLI, 'proxy', '--config', 'gatehouse2.yaml'], { cwd: dir, ready: 'gatehouse proxy ready', core: PROXY_CORE })
      started.push(gatehouse2)
    }
    const cert = path.join(dir, 'certs/server.crt')
    const key = path.join(dir, 'certs/server.key')
    const nodeProxy = await spawnReady('node', node, [path.join(HERE, 'nodeProxyMain.js'), String(ports.node), cert, key, `http://127.0.0.1:${ports.upstream}`, `http://127.0.0.1:${ports.exchange}`], {
      cwd: dir, ready: 'node proxy ready', core: PROXY_CORE,
    })
    started.push(nodeProxy)

    const version = nginxVersion()
    let nginx: Spawned | undefined
    let nginxMissing: string | undefined
    if (version === undefined) {
      nginxMissing = 'nginx is not installed (npm run bench:setup installs it)'
    } else {
      const prefix = path.join(dir, 'nginx')
      mkdirSync(prefix, { recursive: true })
      const conf = readFileSync(path.join(ROOT, 'config/nginx-bench.conf'), 'utf8')
        .replaceAll('{{USER_LINE}}', process.getuid?.() === 0 ? 'user root;' : '')
        .replaceAll('{{PREFIX}}', prefix).replaceAll('{{PORT}}', String(ports.nginx))
        .replaceAll('{{APP_PORT}}', String(ports.upstream)).replaceAll('{{EXCHANGE_PORT}}', String(ports.exchange))
        .replaceAll('{{CERT}}', cert).replaceAll('{{KEY}}', key)
      writeFileSync(path.join(prefix, 'nginx.conf'), conf)
      const args = ['-p', prefix, '-c', path.join(prefix, 'nginx.conf')]
      const proc = hasTaskset()
        ? spawn('taskset', ['-c', String(PROXY_CORE), 'nginx', ...args], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] })
        : spawn('nginx', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] })
      let err = ''
      proc.stderr.on('data', (d: Buffer) => { err = (err + d.toString()).slice(-4000) })
      nginx = { name: 'nginx', proc, pids: () => [proc.pid!, ...childPids(proc.pid!)] }
      started.push(nginx)
      try {
        await waitForPort(ports.nginx)
      } catch {
        const log = existsSync(path.join(prefix, 'error.log')) ? readFileSync(path.join(prefix, 'error.log'), 'utf8') : ''
        throw new Error(`nginx did not start: ${err}${log}`)
      }
    }
    return {
      dir, ca: readFileSync(path.join(dir, 'certs/ca.crt')), ports, upstream, exchange, security: sec, gatehouse, gatehouse2,
      nginx, nginxMissing, nginxVersion: version, node: nodeProxy, adminToken, stop,
    }
  } catch (err) {
    await stop()
    throw err
  }
}
