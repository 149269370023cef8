/**
 * Shared pieces of the load benchmarks: free ports, starting Gatehouse as a real process with a
 * generated config, and a sealed-request generator for autocannon (every request needs a fresh
 * sequence number and timestamp, or the proxy's anti-replay window refuses it).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { GatehouseDevice } from '../src/client/device.js'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
export const CLI = path.join(ROOT, 'dist/cli/main.js')

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
  })
}

export interface Running {
  dir: string
  proc: ChildProcess
  ports: Record<'device' | 'proxyApi' | 'secAdmin' | 'proxy' | 'proxyAdmin' | 'upstream' | 'appUpstream', number>
  stop(): Promise<void>
}

/** `proxyYaml`: extra lines for the proxy section (YAML, indented two spaces), e.g. limits. */
/** The `log` and `security` sections of a benchmark's gatehouse.yaml: quiet log, loopback ports. */
export function securityYaml(ports: { device: number; proxyApi: number; secAdmin: number; proxy: number }): string {
  return `
log: { level: warn }
security:
  listen: { port: ${ports.device} }
  proxyApi: { port: ${ports.proxyApi} }
  admin: { port: ${ports.secAdmin} }
  proxyUrl: https://localhost:${ports.proxy}
`
}

export async function startGatehouse(o: { proxyYaml?: string } = {}): Promise<Running> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'gh-bench-'))
  const ports = {
    device: await freePort(), proxyApi: await freePort(), secAdmin: await freePort(),
    proxy: await freePort(), proxyAdmin: await freePort(), upstream: await freePort(), appUpstream: await freePort(),
  }
  writeFileSync(path.join(dir, 'gatehouse.yaml'), `${securityYaml(ports)}proxy:
  listen: { port: ${ports.proxy} }
  admin: { port: ${ports.proxyAdmin} }
  securityServers: [https://localhost:${ports.proxyApi}]
  routes:
    - { prefix: /demo/, upstream: http://127.0.0.1:${ports.upstream}, stripPrefix: true }
    - { prefix: /app/, upstream: http://127.0.0.1:${ports.appUpstream}, stripPrefix: true }
${o.proxyYaml ?? ''}
demo:
  upstream: { port: ${ports.upstream} }
`)
  writeFileSync(path.join(dir, 'upstream.yaml'), `demo: { upstream: { port: ${ports.appUpstream} } }\n`)
  const nodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean)
  // The upstream runs in its own process, as an intranet app would: it must not share the
  // proxy's event loop or the proxy's figures would include the upstream's work.
  const upstream = await spawnReady(['demo', 'upstream', '--config', 'upstream.yaml'], dir, 'demo upstream ready', [])
  const proc = await spawnReady(['start', '--config', 'gatehouse.yaml'], dir, 'Gatehouse is ready', nodeArgs)
  const stop = (p: ChildProcess) => new Promise<void>((resolve) => {
    if (p.exitCode !== null) return resolve()
    p.once('exit', () => resolve())
    p.kill('SIGINT')
  })
  return { dir, proc, ports, stop: async () => { await Promise.all([stop(proc), stop(upstream)]) } }
}

async function spawnReady(args: string[], cwd: string, ready: string, nodeArgs: string[]): Promise<ChildProcess> {
  const proc = spawn(process.execPath, [...nodeArgs, CLI, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${args.join(' ')} did not start:\n${out}`)), 30_000)
    const onData = (d: Buffer) => {
      out += d.toString()
      if (out.includes(ready)) {
        clearTimeout(t)
        // From now on the output is drained, not kept: scanning a growing string for every chunk
        // of a busy server's log (access log at info) cost this process more than autocannon.
        proc.stdout!.off('data', onData).resume()
        resolve()
      }
    }
    proc.stdout!.on('data', onData)
    proc.stderr!.on('data', (d: Buffer) => { out += d.toString() })
    proc.once('exit', (code) => reject(new Error(`${args.join(' ')} exited ${code}:\n${out}`)))
  })
  return proc
}

/** An enrolled device with an open session, and a function sealing request n for autocannon. */
export async function benchDevice(g: Running) {
  const demo = JSON.parse(readFileSync(path.join(g.dir, 'data/demo-user.json'), 'utf8')) as { user: string; password: string }
  const ca = readFileSync(path.join(g.dir, 'certs/ca.crt'))
  const device = new GatehouseDevice({
    securityUrl: `https://localhost:${g.ports.device}`, ca, appId: 'bench', appVersion: '1.0.0', deviceId: 'bench-1',
    proxyUrl: `https://localhost:${g.ports.proxy}`,
  })
  await device.enroll(demo.user, demo.password)
  const session = await device.openSession()
  let seq = 1000 // leave room below for anything the SDK itself sends
  return {
    ca, device, sessionId: session.sessionId,
    seal(method: string, reqPath: string, body?: Buffer): Buffer {
      const s = device.currentSession!
      return device.seal(s, ++seq, Date.now() + s.clockOffset, `${method} ${reqPath}`, body ? { body, headers: [['content-type', 'application/octet-stream']] } : {})
    },
  }
}
