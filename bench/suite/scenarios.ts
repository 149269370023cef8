/**
 * The scenarios of `npm run bench`. Each returns rows (one per target) with the same load on
 * every target: same generator, payload, connections and duration.
 */
import { randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { Agent, request } from 'undici'
import { demoPattern } from '../../src/demo/upstream.js'
import type { EnrollmentRecord } from '../../src/store/types.js'
import { openStore } from '../../src/store/openStore.js'
import { loadMasterKey, SecretBox } from '../../src/store/secretBox.js'
import { NONCE_BYTES, SESSION_HEADER, ENVELOPE_MEDIA_TYPE } from '../../src/protocol/constants.js'
import { fromBase64url } from '../../src/protocol/bytes.js'
import { deriveSessionKeys, sessionOpenProof } from '../../src/protocol/keySchedule.js'
import { EnvelopeEncoder } from '../../src/protocol/envelope.js'
import { encodeRequestHead } from '../../src/protocol/head.js'
import path from 'node:path'
import { load, presealCount, type BenchDevice, type LoadFigures } from './load.js'
import { rssBytes, watched, type ProcFigures, type Spawned } from './procs.js'
import { handshakeLoad, httpRequest, KeptConnection } from './rawTls.js'
import { MAIL_PASSWORD, USER, type World } from './targets.js'

export type TargetName = 'upstream' | 'gatehouse' | 'nginx' | 'node'

export interface Row {
  scenario: string
  target: TargetName | string
  status: 'ok' | 'missing' | 'pending' | 'failed'
  note?: string
  rps?: number
  p50?: number
  p99?: number
  p999?: number
  /** MB/s (10^6 bytes) for streamed bodies. */
  mbps?: number
  errors?: number
  non2xx?: number
  procs?: Record<string, ProcFigures>
  extra?: Record<string, number | string>
}

export interface Settings {
  duration: number
  connections: number
  coldDevices: number
  idleConnections: number
  revocations: number
  bigMiB: number
}

const ok = (scenario: string, target: string, f: LoadFigures, procs: Record<string, ProcFigures>, extra?: Row['extra']): Row => ({
  scenario, target, status: f.errors + f.non2xx + (f.timeouts ?? 0) > 0 && f.requests === 0 ? 'failed' : 'ok',
  rps: f.rps, p50: f.p50, p99: f.p99, p999: f.p999, errors: f.errors + (f.timeouts ?? 0), non2xx: f.non2xx, procs, extra,
})

function missingNginx(w: World, scenario: string): Row {
  return { scenario, target: 'nginx', status: 'missing', note: w.nginxMissing }
}

let reversed = false

/** `--rounds`: even rounds load the proxies (Gatehouse, nginx, Node) in the reverse order. */
export function setReversed(v: boolean): void {
  reversed = v
}

/** Run the proxies' loads in this round's order (the upstream alone always goes first). */
async function inOrder(runs: (() => Promise<void>)[]): Promise<void> {
  for (const run of reversed ? [...runs].reverse() : runs) await run()
}

/** Proxies under test with their TLS port. */
function proxies(w: World): { name: 'nginx' | 'node'; port: number; spawned: Spawned }[] {
  const out: { name: 'nginx' | 'node'; port: number; spawned: Spawned }[] = []
  if (w.nginx) out.push({ name: 'nginx', port: w.ports.nginx, spawned: w.nginx })
  out.push({ name: 'node', port: w.ports.node, spawned: w.node })
  return out
}

/** Encrypted N-byte request and N-byte response on keep-alive connections (POST /echo). */
export async function payloadScenario(w: World, dev: BenchDevice, s: Settings, bytes: number, label: string): Promise<Row[]> {
  const scenario = `${label} round trip`
  const body = randomBytes(bytes)
  const plainHeaders = { 'content-type': 'application/octet-stream' }
  const rows: Row[] = []
  const base = { duration: s.duration, connections: s.connections, method: 'POST' }
  const r = await watched([w.upstream], () => load({ ...base, url: `http://127.0.0.1:${w.ports.upstream}`, path: '/echo', headers: plainHeaders, body }))
  rows.push(ok(scenario, 'upstream', r.result, r.procs))
  const next = dev.sealer('POST', '/app/echo', body, presealCount(s.duration, bytes))
  if (!w.nginx) rows.push(missingNginx(w, scenario))
  await inOrder([
    async () => {
      const g = await watched([w.gatehouse, w.upstream], () => load({ ...base, url: `https://localhost:${w.ports.proxy}`, ca: w.ca, path: '/app/echo', headers: dev.headers, nextBody: next }))
      rows.push(ok(scenario, 'gatehouse', g.result, g.procs))
    },
    ...proxies(w).map((p) => async () => {
      const x = await watched([p.spawned, w.upstream], () => load({ ...base, url: `https://localhost:${p.port}`, ca: w.ca, path: '/app/echo', headers: plainHeaders, body }))
      rows.push(ok(scenario, p.name, x.result, x.procs))
    }),
  ])
  return rows
}

/** p99 added over the upstream alone at half of Gatehouse's peak rate (1 KiB round trip). */
export async function halfLoadScenario(w: World, dev: BenchDevice, s: Settings, peakRps: number): Promise<Row[]> {
  const scenario = '1 KiB round trip at half of Gatehouse peak'
  const rate = Math.max(100, Math.round(peakRps / 2))
  const body = randomBytes(1024)
  const plainHeaders = { 'content-type': 'application/octet-stream' }
  const base = { duration: s.duration, connections: s.connections, method: 'POST', overallRate: rate }
  const rows: Row[] = []
  const r = await watched([w.upstream], () => load({ ...base, url: `http://127.0.0.1:${w.ports.upstream}`, path: '/echo', headers: plainHeaders, body }))
  rows.push(ok(scenario, 'upstream', r.result, r.procs, { rate }))
  const next = dev.sealer('POST', '/app/echo', body, presealCount(s.duration, 1024, rate))
  if (!w.nginx) rows.push(missingNginx(w, scenario))
  await inOrder([
    async () => {
      const g = await watched([w.gatehouse, w.upstream], () => load({ ...base, url: `https://localhost:${w.ports.proxy}`, ca: w.ca, path: '/app/echo', headers: dev.headers, nextBody: next }))
      rows.push(ok(scenario, 'gatehouse', g.result, g.procs, { rate }))
    },
    ...proxies(w).map((p) => async () => {
      const x = await watched([p.spawned, w.upstream], () => load({ ...base, url: `https://localhost:${p.port}`, ca: w.ca, path: '/app/echo', headers: plainHeaders, body }))
      rows.push(ok(scenario, p.name, x.result, x.procs, { rate }))
    }),
  ])
  return rows
}

/** ActiveSync Sync with a 1 KiB body, Basic auth, through the gate (fake Exchange echoes it). */
export async function activeSyncScenario(w: World, s: Settings): Promise<Row[]> {
  const scenario = 'ActiveSync pass-through (Sync, 1 KiB)'
  const target = `/Microsoft-Server-ActiveSync?Cmd=Sync&User=${USER}&DeviceId=BENCHPHONE1&DeviceType=iPhone`
  const headers = {
    authorization: `Basic ${Buffer.from(`${USER}:${MAIL_PASSWORD}`).toString('base64')}`,
    'content-type': 'application/vnd.ms-sync.wbxml', 'ms-asprotocolversion': '14.1', 'user-agent': 'gatehouse-bench',
  }
  const body = randomBytes(1024)
  const base = { duration: s.duration, connections: s.connections, method: 'POST', path: target, headers, body }
  const rows: Row[] = []
  const r = await watched([w.exchange], () => load({ ...base, url: `http://127.0.0.1:${w.ports.exchange}` }))
  rows.push(ok(scenario, 'upstream', r.result, r.procs))
  if (!w.nginx) rows.push(missingNginx(w, scenario))
  await inOrder([
    async () => {
      const g = await watched([w.gatehouse, w.exchange], () => load({ ...base, url: `https://localhost:${w.ports.proxy}`, ca: w.ca }))
      rows.push(ok(scenario, 'gatehouse', g.result, g.procs))
    },
    ...proxies(w).map((p) => async () => {
      const x = await watched([p.spawned, w.exchange], () => load({ ...base, url: `https://localhost:${p.port}`, ca: w.ca }))
      rows.push(ok(scenario, p.name, x.result, x.procs))
    }),
  ])
  return rows
}

/** A new TLS connection (full handshake) per request: GET /bytes?n=0, `connection: close`. */
export async function handshakeScenario(w: World, dev: BenchDevice, s: Settings): Promise<Row[]> {
  const scenario = 'full TLS handshake per request'
  const concurrency = Math.min(s.connections, 32)
  const rows: Row[] = []
  const next = dev.sealer('GET', '/app/bytes?n=0', undefined, presealCount(s.duration, 0, 3000))
  const ghReq = () => httpRequest('GET', '/app/bytes?n=0', { ...dev.headers, connection: 'close' }, next())
  if (!w.nginx) rows.push(missingNginx(w, scenario))
  const plain = httpRequest('GET', '/app/bytes?n=0', { connection: 'close' })
  await inOrder([
    async () => {
      const g = await watched([w.gatehouse, w.upstream], () => handshakeLoad(w.ports.proxy, w.ca, ghReq, s.duration, concurrency))
      rows.push(ok(scenario, 'gatehouse', { ...g.result, throughput: 0, timeouts: 0 }, g.procs))
    },
    ...proxies(w).map((p) => async () => {
      const x = await watched([p.spawned, w.upstream], () => handshakeLoad(p.port, w.ca, () => plain, s.duration, concurrency))
      rows.push(ok(scenario, p.name, { ...x.result, throughput: 0, timeouts: 0 }, x.procs))
    }),
  ])
  return rows
}

/**
 * N TLS connections held open at once; RSS of the proxy before and with all open, per connection.
 * uWebSockets.js closes an HTTP connection idle for ~10 s, so every connection sends one small
 * request every ~5 s (the same for every target: 2,000 req/s for 10,000 connections).
 */
export async function idleScenario(w: World, dev: BenchDevice, s: Settings, log?: (m: string) => void): Promise<Row[]> {
  const n = s.idleConnections
  const scenario = `${n.toLocaleString('en')} idle TLS connections`
  const rows: Row[] = []
  const targets: { name: string; port: number; spawned: Spawned; req: () => Buffer }[] = [
    { name: 'gatehouse', port: w.ports.proxy, spawned: w.gatehouse, req: (() => { const next = dev.sealer('GET', '/app/bytes?n=0', undefined, 0); return () => httpRequest('GET', '/app/bytes?n=0', dev.headers, next()) })() },
    ...proxies(w).map((p) => ({ name: p.name, port: p.port, spawned: p.spawned, req: () => httpRequest('GET', '/app/bytes?n=0', {}) })),
  ]
  if (!w.nginx) rows.push(missingNginx(w, scenario))
  for (const t of targets) {
    const rss = () => t.spawned.pids().reduce((a, pid) => a + rssBytes(pid), 0)
    await new Promise((r) => setTimeout(r, 500))
    const before = rss()
    const conns: KeptConnection[] = []
    let failed = 0
    const t0 = performance.now()
    let stopKeeper = false
    // Every connection gets a request when its last one is 4 s old, whatever the answers' latency
    // and however late this loop's ticks come (the ramp's handshakes keep the generator busy): a
    // rotation by a fixed batch per tick stretched past uWebSockets.js's 10 s idle timeout under
    // load and lost connections. One request in flight per connection at most.
    const busy = new WeakSet<KeptConnection>()
    const lastSent = new WeakMap<KeptConnection, number>()
    const keeper = (async () => {
      while (!stopKeeper) {
        const due = performance.now() - 4000
        for (const c of conns) {
          if (busy.has(c) || c.socket.destroyed || (lastSent.get(c) ?? 0) > due) continue
          busy.add(c)
          lastSent.set(c, performance.now())
          c.request(t.req()).catch(() => { failed++ }).finally(() => busy.delete(c))
        }
        await new Promise((r) => setTimeout(r, 100))
      }
    })()
    for (let i = 0; i < n; i += 100) {
      const opened = await Promise.allSettled(Array.from({ length: Math.min(100, n - i) }, async () => {
        const c = await KeptConnection.open(t.port, w.ca)
        lastSent.set(c, performance.now())
        await c.request(t.req())
        return c
      }))
      for (const o of opened) if (o.status === 'fulfilled') conns.push(o.value); else failed++
    }
    const rampSeconds = (performance.now() - t0) / 1000
    await new Promise((r) => setTimeout(r, 2000))
    const open = conns.filter((c) => !c.socket.destroyed).length
    log?.(`${t.name}: ${open} of ${n} open (${failed} failed) after ${rampSeconds.toFixed(0)} s`)
    const held = rss()
    stopKeeper = true
    await keeper
    for (const c of conns) c.close()
    const perConn = (held - before) / Math.max(1, open)
    rows.push({
      scenario, target: t.name, status: open > 0 ? 'ok' : 'failed', errors: failed,
      extra: { open, rssBeforeMiB: before / 2 ** 20, rssHeldMiB: held / 2 ** 20, perConnKiB: perConn / 1024, rampSeconds },
    })
    await new Promise((r) => setTimeout(r, 1000))
  }
  return rows
}

/** Upload and download of `mib` MiB each way, streamed; MB/s, per target. */
export async function streamingScenario(w: World, dev: BenchDevice, s: Settings, mib: number): Promise<Row[]> {
  const n = mib * 1024 * 1024
  const rows: Row[] = []
  if (typeof dev.device.requestStream !== 'function') {
    for (const dir of ['upload', 'download']) rows.push({ scenario: `${mib} MiB streamed ${dir}`, target: 'gatehouse', status: 'pending', note: 'the SDK has no requestStream yet' })
    return rows
  }
  const agent = new Agent({ connect: { ca: w.ca }, connections: 4 })
  const drain = async (b: AsyncIterable<Buffer>) => { let k = 0; for await (const c of b) k += c.length; return k }
  type Op = (dir: 'upload' | 'download') => Promise<number>
  const ops: { name: string; spawned: Spawned[]; op: Op }[] = [
    { name: 'upstream', spawned: [w.upstream], op: async (d) => { const res = d === 'upload' ? await request(`http://127.0.0.1:${w.ports.upstream}/sink`, { method: 'POST', body: Readable.from(demoPattern(n)) }) : await request(`http://127.0.0.1:${w.ports.upstream}/stream?n=${n}`); await drain(res.body as AsyncIterable<Buffer>); return res.statusCode } },
    { name: 'gatehouse', spawned: [w.gatehouse, w.upstream], op: async (d) => { const res = d === 'upload' ? await dev.device.requestStream('POST', '/app/sink', { headers: [['content-type', 'application/octet-stream']], body: Readable.from(demoPattern(n)) }) : await dev.device.requestStream('GET', `/app/stream?n=${n}`); await drain(res.body as AsyncIterable<Buffer>); return res.status } },
    ...proxies(w).map((p) => ({ name: p.name, spawned: [p.spawned, w.upstream], op: (async (d) => { const res = d === 'upload' ? await request(`https://localhost:${p.port}/app/sink`, { method: 'POST', body: Readable.from(demoPattern(n)), dispatcher: agent }) : await request(`https://localhost:${p.port}/app/stream?n=${n}`, { dispatcher: agent }); await drain(res.body as AsyncIterable<Buffer>); return res.statusCode }) as Op })),
  ]
  for (const dir of ['upload', 'download'] as const) {
    const scenario = `${mib} MiB streamed ${dir}`
    if (!w.nginx) rows.push(missingNginx(w, scenario))
    for (const o of ops) {
      // Warm-up, and a check that it works (one retry: see `errors` below).
      const warm = await o.op(dir).catch(() => o.op(dir)).catch((err: unknown) => err as Error)
      if (warm instanceof Error) {
        rows.push({ scenario, target: o.name, status: 'failed', note: warm.message })
        continue
      }
      const r = await watched(o.spawned, async () => {
        const times: number[] = []
        let bad = 0
        let errors = 0
        let note: string | undefined
        const end = performance.now() + Math.min(s.duration, 10) * 1000
        do {
          const t0 = performance.now()
          try {
            if ((await o.op(dir)) !== 200) bad++
            times.push(performance.now() - t0)
          } catch (err) {
            // A transfer that fails (e.g. a response cut before its final record) is counted, not retried.
            errors++
            note = (err as Error).message
          }
        } while (performance.now() < end && mib < 64)
        return { times, bad, errors, note }
      })
      const t = r.result.times.sort((a, b) => a - b)
      const total = t.reduce((a, b) => a + b, 0) / 1000
      rows.push({
        scenario, target: o.name, status: 'ok', rps: t.length / total, mbps: (n * t.length) / 1e6 / total,
        p50: t[Math.floor(t.length / 2)], p99: t[Math.max(0, Math.ceil(t.length * 0.99) - 1)], non2xx: r.result.bad, errors: r.result.errors, procs: r.procs,
        ...(r.result.note ? { extra: { lastError: r.result.note } } : {}),
      })
    }
  }
  await agent.close()
  return rows
}

/** Seed `n` enrollments straight into the database (a password sign-in each would take minutes of scrypt). */
export function coldSeed(n: number, keys: Map<string, Buffer>) {
  return async (dir: string) => {
    const store = await openStore({ path: path.join(dir, 'data/gatehouse.db'), secretBox: new SecretBox(loadMasterKey(path.join(dir, 'data/master.key'))) })
    const now = Date.now()
    for (let i = 0; i < n; i++) {
      const rec: EnrollmentRecord = { id: `cold-${i}-${randomBytes(6).toString('hex')}`, userName: USER, deviceId: `cold-device-${i}`, appId: 'bench', appVersion: '1.0.0', sharedKey: randomBytes(32), createdAt: now, status: 'active' }
      await store.createEnrollment(rec)
      keys.set(rec.id, rec.sharedKey)
    }
    await store.close()
  }
}

/**
 * Cold start: `n` seeded devices open a session each (security server: proof check, session
 * row) and make a first request through a proxy whose cache is empty (proxy: one validation
 * call to the security server per session, then cached).
 */
export async function coldStartScenario(w: World, keys: Map<string, Buffer>): Promise<Row[]> {
  const scenario = `cold start: ${keys.size.toLocaleString('en')} devices open a session and send a first request`
  const agent = new Agent({ connect: { ca: w.ca }, connections: 64 })
  const concurrency = 64
  const ids = [...keys.keys()]
  const sessions: { id: string; c2s: Buffer }[] = []
  const openLat: number[] = []
  let openErrors = 0
  let t0 = performance.now()
  const phaseA = await watched([w.security], async () => {
    let i = 0
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (i < ids.length) {
        const enrollmentId = ids[i++]!
        const sharedKey = keys.get(enrollmentId)!
        const nonce = randomBytes(NONCE_BYTES)
        const timestamp = Date.now()
        const t0 = performance.now()
        const res = await request(`https://localhost:${w.ports.device}/v1/sessions`, {
          method: 'POST', dispatcher: agent, headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ enrollmentId, timestamp, nonce: nonce.toString('base64url'), proof: sessionOpenProof(sharedKey, enrollmentId, timestamp, nonce).toString('base64url') }),
        })
        const b = await res.body.json() as { sessionId?: string; serverNonce?: string }
        openLat.push(performance.now() - t0)
        const serverNonce = fromBase64url(b.serverNonce, NONCE_BYTES)
        if ((res.statusCode !== 200 && res.statusCode !== 201) || !b.sessionId || !serverNonce) { openErrors++; continue }
        sessions.push({ id: b.sessionId, c2s: deriveSessionKeys(sharedKey, b.sessionId, nonce, serverNonce).c2s })
      }
    }))
  })
  const wallA = (performance.now() - t0) / 1000
  const reqLat: number[] = []
  let reqErrors = 0
  const rss0 = rssBytes(w.gatehouse.proc.pid!)
  t0 = performance.now()
  const phaseB = await watched([w.gatehouse, w.security], async () => {
    let i = 0
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (i < sessions.length) {
        const s = sessions[i++]!
        const enc = new EnvelopeEncoder({ kind: 'request', sessionId: s.id, requestLine: 'GET /app/bytes?n=16', key: s.c2s, seq: 1, timestampMs: Date.now() })
        const body = Buffer.concat([enc.preamble, enc.record(encodeRequestHead({ headers: [] }), true)])
        const t0 = performance.now()
        const res = await request(`https://localhost:${w.ports.proxy}/app/bytes?n=16`, {
          method: 'GET', dispatcher: agent, headers: { [SESSION_HEADER]: s.id, 'content-type': ENVELOPE_MEDIA_TYPE }, body,
        })
        await res.body.dump()
        reqLat.push(performance.now() - t0)
        if (res.statusCode !== 200) reqErrors++
      }
    }))
  })
  const wallB = (performance.now() - t0) / 1000
  const rss1 = rssBytes(w.gatehouse.proc.pid!)
  await agent.close()
  const pct = (xs: number[], p: number) => { const t = [...xs].sort((a, b) => a - b); return t[Math.max(0, Math.ceil(p * t.length) - 1)] }
  return [
    { scenario: `${scenario}: session opens`, target: 'gatehouse', status: openErrors ? 'failed' : 'ok', extra: { seconds: wallA, securityCpuPct: phaseA.procs.security?.cpuPct ?? NaN, securityRssMiB: (phaseA.procs.security?.rss ?? NaN) / 2 ** 20 }, errors: openErrors, rps: sessions.length / wallA, p50: pct(openLat, 0.5), p99: pct(openLat, 0.99), p999: pct(openLat, 0.999), procs: phaseA.procs },
    { scenario: `${scenario}: first requests (validation + cache fill)`, target: 'gatehouse', status: reqErrors ? 'failed' : 'ok', errors: reqErrors, rps: (reqLat.length - reqErrors) / wallB, p50: pct(reqLat, 0.5), p99: pct(reqLat, 0.99), p999: pct(reqLat, 0.999), procs: phaseB.procs, extra: { proxyRssGrowthMiB: (rss1 - rss0) / 2 ** 20, seconds: wallB, securityCpuPct: phaseB.procs.security?.cpuPct ?? NaN } },
  ]
}
