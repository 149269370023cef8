/**
 * The benchmark suite: every scenario against Gatehouse and, with the same upstream, payloads,
 * generator and load, against the upstream alone, nginx and a plain Node proxy. Writes a
 * Markdown table and JSON under bench/results/ (see docs/performance.md, "Benchmark suite").
 *
 * Usage: npm run bench [-- --duration 10 --connections 50 --devices 10000 --idle 10000
 *                          --revocations 50 --big 100 --pin --rounds 1 --only payload,halfload,activesync,handshakes,idle,streaming,cold,revocation]
 * --rounds N repeats the throughput scenarios (payload, halfload, activesync, handshakes) N times,
 * reports medians, and takes the goals' ratios as medians of per-round ratios (suite/rounds.ts).
 * BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles the Gatehouse proxy process.
 */
import os from 'node:os'
import { parseArgs } from 'node:util'
import { enrolledDevice } from './suite/load.js'
import { goals, goalsMarkdown } from './suite/goals.js'
import { machine, markdown, save, withRatios } from './suite/report.js'
import { revocationScenario } from './suite/revocation.js'
import { mergeRounds, roundRatios, type RoundRatios } from './suite/rounds.js'
import {
  activeSyncScenario, coldSeed, coldStartScenario, halfLoadScenario, handshakeScenario, idleScenario, payloadScenario, setReversed, streamingScenario,
  type Row, type Settings,
} from './suite/scenarios.js'
import { setPinning } from './suite/procs.js'
import { startWorld } from './suite/targets.js'

const ALL = ['payload', 'halfload', 'activesync', 'handshakes', 'idle', 'streaming', 'cold', 'revocation']
const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' }, connections: { type: 'string', default: '50' }, devices: { type: 'string', default: '10000' },
    idle: { type: 'string', default: '10000' }, revocations: { type: 'string', default: '50' }, big: { type: 'string', default: '100' },
    only: { type: 'string', default: ALL.join(',') }, name: { type: 'string', default: 'bench' }, pin: { type: 'boolean', default: false },
    rounds: { type: 'string', default: '1' },
  },
})
const rounds = Number(values.rounds)
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20) throw new Error('--rounds: an integer from 1 to 20')
const only = new Set(values.only.split(','))
for (const o of only) if (!ALL.includes(o)) throw new Error(`--only: unknown scenario "${o}" (one of ${ALL.join(', ')})`)
const s: Settings = {
  duration: Number(values.duration), connections: Number(values.connections), coldDevices: Number(values.devices),
  idleConnections: Number(values.idle), revocations: Number(values.revocations), bigMiB: Number(values.big),
}
setPinning(values.pin)
const load0 = os.loadavg()
const proxyNodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean)
const rows: Row[] = []
const log = (m: string) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${m}`)

async function step(name: string, f: () => Promise<Row[]>): Promise<void> {
  log(`${name}…`)
  try {
    rows.push(...await f())
  } catch (err) {
    log(`${name} failed: ${(err as Error).stack ?? String(err)}`)
    rows.push({ scenario: name, target: 'gatehouse', status: 'failed', note: (err as Error).message.split('\n')[0] })
  }
}

let perRound: RoundRatios | undefined
const main = await startWorld({ secondProxy: only.has('revocation'), proxyNodeArgs })
// Ctrl-C: stop the processes started (nginx, proxies, upstream) before leaving.
process.once('SIGINT', () => { void main.stop().finally(() => process.exit(130)) })
try {
  log(`started (nginx ${main.nginxVersion ?? 'missing'})`)
  const dev = await enrolledDevice(main, { deviceId: 'bench-1' })
  const mail = await enrolledDevice(main, { appId: 'mail', deviceId: 'BENCHPHONE1' })
  await mail.device.close()
  if ((await dev.device.request('POST', '/app/echo', { body: 'x' })).status !== 200) throw new Error('the /app/ route does not answer 200 through Gatehouse')
  // Idle connections first: the proxies' RSS is then that of a fresh process, not of a heap grown by the load runs.
  if (only.has('idle')) await step('idle connections', () => idleScenario(main, dev, s, log))
  const throughput: Row[][] = []
  for (let round = 0; round < rounds; round++) {
    if (rounds > 1) log(`round ${round + 1} of ${rounds}${round % 2 ? ' (proxies in reverse order)' : ''}`)
    setReversed(round % 2 === 1)
    const from = rows.length
    if (only.has('payload')) {
      await step('1 KiB round trip', () => payloadScenario(main, dev, s, 1024, '1 KiB'))
      await step('16 KiB round trip', () => payloadScenario(main, dev, s, 16 * 1024, '16 KiB'))
    }
    if (only.has('halfload')) {
      let peak = rows.slice(from).find((r) => r.scenario === '1 KiB round trip' && r.target === 'gatehouse')?.rps
      if (peak === undefined) {
        const pre = await payloadScenario(main, dev, { ...s, duration: Math.min(5, s.duration) }, 1024, 'peak probe: 1 KiB')
        peak = pre.find((r) => r.target === 'gatehouse')?.rps
      }
      await step('half load', () => halfLoadScenario(main, dev, s, peak ?? 1000))
    }
    if (only.has('activesync')) await step('ActiveSync', () => activeSyncScenario(main, s))
    if (only.has('handshakes')) await step('handshakes', () => handshakeScenario(main, dev, s))
    throughput.push(rows.splice(from))
  }
  setReversed(false)
  perRound = rounds > 1 ? roundRatios(throughput) : undefined
  rows.push(...(rounds > 1 ? mergeRounds(throughput) : throughput[0] ?? []))
  if (only.has('streaming')) {
    // A device of its own: the SDK's sequence numbers would be stale after the sealed runs' ones.
    const streamer = await enrolledDevice(main, { deviceId: 'bench-stream' })
    await step('1 MiB streamed', () => streamingScenario(main, streamer, s, 1))
    await step(`${s.bigMiB} MiB streamed`, () => streamingScenario(main, streamer, s, s.bigMiB))
    await streamer.device.close()
  }
  if (only.has('revocation')) await step('revocation', () => revocationScenario(main, dev, s.revocations))
  await dev.device.close()
} finally {
  await main.stop()
}

if (only.has('cold')) {
  const keys = new Map<string, Buffer>()
  log(`cold start: seeding ${s.coldDevices} enrollments…`)
  const cold = await startWorld({ seed: coldSeed(s.coldDevices, keys) })
  try {
    await step('cold start', () => coldStartScenario(cold, keys))
  } finally {
    await cold.stop()
  }
}

const m = machine(load0)
const all = withRatios(rows)
const gs = goals(all, perRound && { values: perRound.medians, rounds })
const settings = {
  duration: `${s.duration} s`, connections: s.connections, 'cold devices': s.coldDevices, 'idle connections': s.idleConnections, revocations: s.revocations, 'big body': `${s.bigMiB} MiB`,
  ...(rounds > 1 ? { rounds: `${rounds} (throughput figures: medians over rounds)` } : {}),
}
const roundsMd = perRound ? `\n\nPer-round ratios of the throughput scenarios (${rounds} rounds; the goals use their medians):\n\n${perRound.markdown}` : ''
const md = `${markdown(m, all, settings)}${roundsMd}\n\n${goalsMarkdown(gs)}`
const files = save(values.name, m, all, md, { settings, goals: gs, ...(perRound ? { perRound: { values: perRound.medians, rounds } } : {}) })
console.log(md)
console.log(`\nwritten: ${files.md}, ${files.json}`)
