/**
 * A/B of the Gatehouse proxy: two proxy processes (A and B) behind the same security server and
 * upstream, pinned to the same core, loaded in turn (ABBA order, round after round) with the same
 * encrypted round trip. Reports per round and as medians the proxy's CPU time per request (the
 * figure that least depends on the load generator) and req/s, and B's ratio to A. Since both run
 * in one invocation, a noisy machine moves both alike.
 *
 * Usage: npm run bench:ab -- [--b-cli /path/to/other/dist/cli/main.js] [--a-args="--flag"]
 *          [--b-args="--max-semi-space-size=64"] [--rounds 5] [--duration 5] [--size 1024] [--connections 50]
 *          [--a-unjoined] [--b-unjoined]   (seal that side's requests as head + body records, not joined)
 *          [--scenario envelope|activesync]   (encrypted POST /app/echo, or an ActiveSync Sync pass-through)
 * Comparing code: build the other commit in a worktree (git worktree add /tmp/base <rev>; link
 * node_modules; npm run build there) and pass its dist/cli/main.js as --b-cli.
 */
import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import { enrolledDevice, load, presealCount } from './suite/load.js'
import { setPinning, watched, type Spawned } from './suite/procs.js'
import { MAIL_PASSWORD, startWorld, USER } from './suite/targets.js'

const { values } = parseArgs({
  options: {
    'b-cli': { type: 'string' }, 'a-args': { type: 'string', default: '' }, 'b-args': { type: 'string', default: '' },
    rounds: { type: 'string', default: '5' }, duration: { type: 'string', default: '5' }, size: { type: 'string', default: '1024' },
    connections: { type: 'string', default: '50' },
    'a-unjoined': { type: 'boolean', default: false }, 'b-unjoined': { type: 'boolean', default: false },
    scenario: { type: 'string', default: 'envelope' },
  },
})
const split = (s: string) => s.split(' ').filter(Boolean)
const rounds = Number(values.rounds)
const duration = Number(values.duration)
const size = Number(values.size)
const connections = Number(values.connections)
const scenario = values.scenario
if (scenario !== 'envelope' && scenario !== 'activesync') throw new Error('--scenario: envelope (encrypted POST /app/echo) or activesync (Sync pass-through)')
setPinning(true)

const w = await startWorld({
  secondProxy: true, proxyNodeArgs: split(values['a-args']), secondProxyNodeArgs: split(values['b-args']),
  ...(values['b-cli'] ? { secondProxyCli: values['b-cli'] } : {}),
})
process.once('SIGINT', () => { void w.stop().finally(() => process.exit(130)) })

interface Sample { cpuUsPerReq: number; rps: number; p99: number; errors: number }
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}

try {
  const body = randomBytes(size)
  // --x-unjoined: head and body as two records (a build from before FLAG_JOINED refuses joined ones).
  const sides: Array<{ name: 'A' | 'B'; proc: Spawned; port: number; joined: boolean; samples: Sample[] }> = [
    { name: 'A', proc: w.gatehouse, port: w.ports.proxy, joined: !values['a-unjoined'], samples: [] },
    { name: 'B', proc: w.gatehouse2!, port: w.ports.proxy2, joined: !values['b-unjoined'], samples: [] },
  ]
  const dev = await enrolledDevice(w, { deviceId: 'ab-1' })
  // ActiveSync: a native mail client's Sync (Basic auth, DeviceId/User in the query) through the gate.
  const mail = scenario === 'activesync' ? await enrolledDevice(w, { appId: 'mail', deviceId: 'BENCHPHONE1' }) : undefined
  const activeSync = {
    method: 'POST', path: `/Microsoft-Server-ActiveSync?Cmd=Sync&User=${USER}&DeviceId=BENCHPHONE1&DeviceType=iPhone`, body,
    headers: {
      authorization: `Basic ${Buffer.from(`${USER}:${MAIL_PASSWORD}`).toString('base64')}`,
      'content-type': 'application/vnd.ms-sync.wbxml', 'ms-asprotocolversion': '14.1', 'user-agent': 'gatehouse-bench',
    },
  }
  const runOne = async (side: (typeof sides)[number]) => {
    const next = dev.sealer('POST', '/app/echo', body, presealCount(duration, size), side.joined)
    const r = await watched([side.proc, mail ? w.exchange : w.upstream], () => load(mail
      ? { url: `https://localhost:${side.port}`, ca: w.ca, duration, connections, ...activeSync }
      : { url: `https://localhost:${side.port}`, ca: w.ca, duration, connections, method: 'POST', path: '/app/echo', headers: dev.headers, nextBody: next }))
    const cpu = r.procs[side.proc.name]!.cpuPct
    const s = { cpuUsPerReq: ((cpu / 100) * 1e6) / r.result.rps, rps: r.result.rps, p99: r.result.p99, errors: r.result.errors + r.result.non2xx }
    side.samples.push(s)
    console.error(`round ${side.samples.length} ${side.name}: ${s.cpuUsPerReq.toFixed(1)} µs/req, ${Math.round(s.rps)} req/s, p99 ${s.p99} ms, CPU ${cpu.toFixed(0)} %, errors ${s.errors}`)
  }
  // Warm both (JIT, connections, session cache), then ABBA rounds.
  for (const side of sides) {
    await load(mail
      ? { url: `https://localhost:${side.port}`, ca: w.ca, duration: 2, connections, ...activeSync }
      : { url: `https://localhost:${side.port}`, ca: w.ca, duration: 2, connections, method: 'POST', path: '/app/echo', headers: dev.headers, nextBody: dev.sealer('POST', '/app/echo', body, presealCount(2, size), side.joined) })
  }
  for (let i = 0; i < rounds; i++) {
    const order = i % 2 === 0 ? sides : [...sides].reverse()
    for (const side of order) await runOne(side)
  }
  const [a, b] = sides.map((s) => ({ cpu: median(s.samples.map((x) => x.cpuUsPerReq)), rps: median(s.samples.map((x) => x.rps)), p99: median(s.samples.map((x) => x.p99)), errors: s.samples.reduce((n, x) => n + x.errors, 0) }))
  console.log(`\n${rounds} rounds × ${duration} s, ${connections} connections, ${mail ? 'ActiveSync Sync' : 'encrypted'} POST ${size} B, both proxies on one core`)
  console.log(`A ${values['a-args'] || '(this build)'}${values['a-unjoined'] ? ' unjoined' : ''}; B ${values['b-cli'] ?? '(this build)'} ${values['b-args']}${values['b-unjoined'] ? ' unjoined' : ''}`)
  console.log('| side | CPU µs/req (median) | req/s (median) | p99 ms (median) | errors |')
  console.log('|---|---:|---:|---:|---:|')
  console.log(`| A | ${a!.cpu.toFixed(1)} | ${Math.round(a!.rps)} | ${a!.p99} | ${a!.errors} |`)
  console.log(`| B | ${b!.cpu.toFixed(1)} | ${Math.round(b!.rps)} | ${b!.p99} | ${b!.errors} |`)
  // Rounds are paired (A and B back to back): the median of the per-round ratios is the steadier figure.
  const paired = (f: (x: Sample) => number) => median(sides[0]!.samples.map((x, i) => f(sides[1]!.samples[i]!) / f(x)))
  console.log(`\nB ÷ A (medians): CPU per request ${(b!.cpu / a!.cpu).toFixed(3)}, req/s ${(b!.rps / a!.rps).toFixed(3)}`)
  console.log(`B ÷ A (median of per-round ratios): CPU per request ${paired((x) => x.cpuUsPerReq).toFixed(3)}, req/s ${paired((x) => x.rps).toFixed(3)}`)
  await dev.device.close()
  await mail?.device.close()
} finally {
  await w.stop()
}
