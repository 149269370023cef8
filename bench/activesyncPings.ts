/**
 * Held ActiveSync Pings at scale: N concurrent Pings (default 10,000) held by a fake Exchange in
 * its own process, through a real `gatehouse proxy` process (one event loop, `workers: 1`) gated by
 * a real `gatehouse security` process. Exchange holds every Ping until all N are held at once,
 * then `--hold` seconds more, then answers them all. Prints the proxy's RSS before, with all held
 * and after, per held Ping, its open file descriptors, and the connections Exchange saw.
 *
 * Usage: npm run bench:activesync [-- --pings 10000 --hold 10 --http2]
 *
 * Over HTTP/1.1 (default) every held Ping costs the proxy two sockets (the client's and one to
 * Exchange), so the proxy needs 2 × N file descriptors. With --http2 the fake Exchange serves
 * HTTP/2 over TLS (the development PKI's server certificate) and the proxy has
 * `upstreamHttp2: true`: held Pings share connections (100 per connection), so N + N/100. The
 * script re-executes itself with `ulimit -n` raised as far as the hard limit allows (children
 * inherit it); when even that is too low, it holds as many Pings as fit and says so.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Agent } from 'undici'
import { GatehouseDevice } from '../src/client/device.js'
import { CLI, freePort, securityYaml } from './lib.js'

const SELF = fileURLToPath(import.meta.url)

// Raise the open-files limit for this process and its children: re-execute through bash.
if (process.env.GH_BENCH_ULIMIT === undefined) {
  const script = 'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; export GH_BENCH_ULIMIT="$(ulimit -n)"; exec "$0" "$@"'
  const child = spawn('bash', ['-c', script, process.execPath, SELF, ...process.argv.slice(2)], { stdio: 'inherit' })
  child.on('exit', (code) => process.exit(code ?? 1))
} else {
  await main()
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { pings: { type: 'string', default: '10000' }, hold: { type: 'string', default: '10' }, http2: { type: 'boolean', default: false } } })
  const limit = Number(process.env.GH_BENCH_ULIMIT)
  const asked = Number(values.pings)
  const http2 = values.http2
  // Proxy: two sockets per held Ping over HTTP/1.1 (one and 1/100 over HTTP/2), plus listeners, the control plane, logs, libraries.
  const perPing = http2 ? 1.01 : 2
  const fits = Number.isFinite(limit) ? Math.floor((limit - 100) / perPing) : asked
  const n = Math.min(asked, fits)
  const holdMs = Number(values.hold) * 1000
  console.log(`${http2 ? 'HTTP/2' : 'HTTP/1.1'} to Exchange; open files limit ${limit}; ${asked} Pings asked${n < asked ? `, ${n} fit (${perPing} sockets per held Ping in the proxy)` : ''}; all held at once for ${holdMs / 1000} s`)

  const dir = mkdtempSync(path.join(os.tmpdir(), 'gh-bench-eas-'))
  const ports = {
    device: await freePort(), proxyApi: await freePort(), secAdmin: await freePort(), proxy: await freePort(),
    proxyAdmin: await freePort(), exchange: await freePort(), stats: await freePort(),
  }
  const mailPassword = 'mailbox-password-1'
  const userPassword = 'bench-user-password-1'
  writeFileSync(path.join(dir, 'gatehouse.yaml'), `${securityYaml(ports)}proxy:
  listen: { port: ${ports.proxy} }
  admin: { port: ${ports.proxyAdmin} }
  securityServers: [https://localhost:${ports.proxyApi}]
  workers: 1
  activeSync:
    enabled: true
    maxHoldSeconds: 3600
${http2 ? `    upstream: https://127.0.0.1:${ports.exchange}
    upstreamCa: certs/ca.crt
    upstreamHttp2: true` : `    upstream: http://127.0.0.1:${ports.exchange}
    upstreamConnections: ${n + 100}`}
`)
  const children: ChildProcess[] = []
  try {
    execFileSync(process.execPath, [CLI, 'users', 'add', 'alice', '--password-stdin', '--config', 'gatehouse.yaml'], { cwd: dir, input: `${userPassword}\n`, stdio: ['pipe', 'ignore', 'inherit'] })
    // The security server creates the development PKI (certs/): with --http2 the fake Exchange uses its server certificate.
    children.push(await spawnReady([CLI, 'security', '--config', 'gatehouse.yaml'], dir, 'security server ready'))
    const fakeMain = path.join(path.dirname(SELF), 'fakeExchangeMain.js')
    const tlsArgs = http2 ? [path.join(dir, 'certs/server.crt'), path.join(dir, 'certs/server.key')] : []
    children.push(await spawnReady([fakeMain, String(ports.exchange), String(ports.stats), 'alice', mailPassword, ...tlsArgs], dir, 'fake exchange ready'))
    const proxy = await spawnReady([CLI, 'proxy', '--config', 'gatehouse.yaml'], dir, 'gatehouse proxy ready')
    children.push(proxy)

    const ca = readFileSync(path.join(dir, 'certs/ca.crt'))
    const device = new GatehouseDevice({
      securityUrl: `https://localhost:${ports.device}`, ca, appId: 'mail', appVersion: '1.0.0', deviceId: 'BENCHPHONE1', proxyUrl: `https://localhost:${ports.proxy}`,
    })
    await device.enroll('alice', userPassword)
    await device.close()

    const agent = new Agent({ connect: { ca }, connections: n + 10, keepAliveTimeout: 120_000, headersTimeout: 3_600_000, bodyTimeout: 3_600_000 })
    const target = '/Microsoft-Server-ActiveSync?Cmd=Ping&User=alice&DeviceId=BENCHPHONE1&DeviceType=iPhone'
    const headers = {
      authorization: `Basic ${Buffer.from(`alice:${mailPassword}`).toString('base64')}`,
      'content-type': 'application/vnd.ms-sync.wbxml', 'ms-asprotocolversion': '14.1', 'user-agent': 'gatehouse-bench',
    }
    const ping = async (hold: number): Promise<number> => {
      const res = await agent.request({ origin: `https://localhost:${ports.proxy}`, path: target, method: 'POST', headers, body: `hold=${hold}` })
      await res.body.dump()
      return res.statusCode
    }
    // Warm up: TLS, the gate answer, the connection to Exchange.
    if ((await ping(1)) !== 200) throw new Error('warm-up Ping failed')
    await new Promise((r) => setTimeout(r, 1000))
    const before = { rss: rssOf(proxy.pid!), fds: fdsOf(proxy.pid!) }

    const started = Date.now()
    let ok = 0
    const failures = new Map<string, number>()
    const all: Promise<void>[] = []
    // Ramp up in batches: 10k TLS handshakes at once would only measure the handshake storm.
    for (let i = 0; i < n; i++) {
      // Held by Exchange until released below, once all are held.
      all.push(ping(3_000_000).then(
        (status) => { if (status === 200) ok++; else failures.set(String(status), (failures.get(String(status)) ?? 0) + 1) },
        (err: unknown) => { const k = (err as { code?: string }).code ?? 'error'; failures.set(k, (failures.get(k) ?? 0) + 1) },
      ))
      // Pace by what Exchange holds: at most 500 requests still connecting. Past uWS's 10 s idle
      // timeout a handshake starved of CPU (the clients share the machine) would be closed.
      if (i % 250 === 249) {
        await new Promise((r) => setTimeout(r, 25))
        while (i + 1 - (await stats(ports.stats)).inFlight > 500 && failures.size === 0) await new Promise((r) => setTimeout(r, 50))
      }
    }
    let peakRss = 0
    const watch = setInterval(() => { peakRss = Math.max(peakRss, rssOf(proxy.pid!)) }, 250)
    let s = await stats(ports.stats)
    const rampEnd = Date.now() + 600_000
    while (s.inFlight < n && failures.size === 0 && Date.now() < rampEnd) {
      await new Promise((r) => setTimeout(r, 250))
      s = await stats(ports.stats)
    }
    const allHeldMs = Date.now() - started
    const held = { rss: rssOf(proxy.pid!), fds: fdsOf(proxy.pid!), count: s.inFlight, upstream: s.connections }
    await new Promise((r) => setTimeout(r, holdMs))
    const stillHeld = (await stats(ports.stats)).inFlight
    await fetch(`http://127.0.0.1:${ports.stats}/`, { method: 'POST' })
    await Promise.all(all)
    clearInterval(watch)
    const total = Date.now() - started
    const fake = await stats(ports.stats)
    await agent.close()
    await new Promise((r) => setTimeout(r, 2000))
    const after = { rss: rssOf(proxy.pid!), fds: fdsOf(proxy.pid!) }

    const mib = (b: number) => `${(b / 1048576).toFixed(1)} MiB`
    console.log('')
    console.log(`| to Exchange | held Pings (all at once) | proxy RSS before | with all held | per held Ping | peak | 2 s after the clients left | proxy fds with all held | connections to Exchange with all held | all held after | still held ${holdMs / 1000} s later |`)
    console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    console.log(`| ${http2 ? 'HTTP/2' : 'HTTP/1.1'} | ${held.count} | ${mib(before.rss)} | ${mib(held.rss)} | ${((held.rss - before.rss) / held.count / 1024).toFixed(1)} KiB | ${mib(peakRss)} | ${mib(after.rss)} | ${held.fds} | ${held.upstream} | ${(allHeldMs / 1000).toFixed(1)} s | ${stillHeld} |`)
    console.log('')
    console.log(`answered 200: ${ok}/${n}${failures.size ? `; failures: ${JSON.stringify(Object.fromEntries(failures))}` : ''}; all answered ${(total / 1000).toFixed(1)} s after the first was sent; Exchange saw ${fake.requests} requests, at most ${fake.maxInFlight} at once, ${fake.aborted} abandoned, ${fake.connectionsTotal} connections (at most ${fake.maxConnections} at once); fake Exchange RSS ${mib(fake.rss)}; proxy fds before ${before.fds}, after ${after.fds}`)
    if (ok !== n) process.exitCode = 1
  } finally {
    await Promise.all(children.map(stop))
    rmSync(dir, { recursive: true, force: true })
  }
}

function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) * 1024 : 0
}

function fdsOf(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length
}

interface FakeStats { requests: number; inFlight: number; maxInFlight: number; aborted: number; connections: number; maxConnections: number; connectionsTotal: number; rss: number }

async function stats(port: number): Promise<FakeStats> {
  const res = await fetch(`http://127.0.0.1:${port}/`)
  return (await res.json()) as FakeStats
}

async function spawnReady(args: string[], cwd: string, ready: string): Promise<ChildProcess> {
  const proc = spawn(process.execPath, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${args.join(' ')} did not start:\n${out}`)), 30_000)
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      if (out.includes(ready)) {
        clearTimeout(t)
        resolve()
      }
    })
    proc.stderr!.on('data', (d: Buffer) => { out += d.toString() })
    proc.once('exit', (code) => reject(new Error(`${args.join(' ')} exited ${code}:\n${out}`)))
  })
  // Keep draining its output (warnings) so that it never blocks on a full pipe.
  proc.stdout!.resume()
  proc.stderr!.on('data', (d: Buffer) => process.stderr.write(d))
  return proc
}

function stop(p: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (p.exitCode !== null) return resolve()
    const t = setTimeout(() => p.kill('SIGKILL'), 15_000)
    p.once('exit', () => { clearTimeout(t); resolve() })
    p.kill('SIGINT')
  })
}
