/**
 * `npm run bench:guard`: a short run (well under 3 minutes) of the scenarios whose ratios have a
 * floor in bench/thresholds.json (1 KiB round trip against nginx and the plain Node proxy,
 * ActiveSync pass-through and full handshakes against nginx). Exits 1 when a ratio falls below
 * its floor or cannot be measured (nginx missing counts as a failure: run npm run bench:setup).
 * Not part of npm test: it needs nginx and a quiet machine.
 *
 * Usage: npm run bench:guard [-- --duration 5]
 */
import { readFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { ROOT } from './lib.js'
import { goals } from './suite/goals.js'
import { enrolledDevice } from './suite/load.js'
import { machine, markdown, save, withRatios } from './suite/report.js'
import { activeSyncScenario, handshakeScenario, payloadScenario, type Row, type Settings } from './suite/scenarios.js'
import { setPinning } from './suite/procs.js'
import { startWorld } from './suite/targets.js'

const { values } = parseArgs({ options: { duration: { type: 'string', default: '5' }, connections: { type: 'string', default: '50' }, pin: { type: 'boolean', default: false } } })
setPinning(values.pin)
const s: Settings = { duration: Number(values.duration), connections: Number(values.connections), coldDevices: 0, idleConnections: 0, revocations: 0, bigMiB: 0 }
const { floors } = JSON.parse(readFileSync(path.join(ROOT, 'bench/thresholds.json'), 'utf8')) as { floors: Record<string, number> }
const t0 = performance.now()
const load0 = os.loadavg()
const rows: Row[] = []
const w = await startWorld()
// Ctrl-C: stop the processes started (nginx, proxies, upstream) before leaving.
process.once('SIGINT', () => { void w.stop().finally(() => process.exit(130)) })
try {
  const dev = await enrolledDevice(w, { deviceId: 'guard-1' })
  const mail = await enrolledDevice(w, { appId: 'mail', deviceId: 'BENCHPHONE1' })
  await mail.device.close()
  rows.push(...await payloadScenario(w, dev, s, 1024, '1 KiB'))
  rows.push(...await activeSyncScenario(w, s))
  rows.push(...await handshakeScenario(w, dev, s))
  await dev.device.close()
} finally {
  await w.stop()
}
const all = withRatios(rows)
const m = machine(load0)
const gs = goals(all)
const md = markdown(m, all, { duration: `${s.duration} s`, connections: s.connections })
save('guard', m, all, md, { floors, goals: gs })
console.log(md)
console.log('\n| ratio | floor | this run | |\n|---|---:|---:|---|')
let failed = 0
for (const [key, floor] of Object.entries(floors)) {
  const v = gs.find((g) => g.key === key)?.value
  const bad = v === undefined || !Number.isFinite(v) || v < floor
  if (bad) failed++
  console.log(`| ${key} | ${floor} | ${v === undefined ? 'not measured' : v.toFixed(2)} | ${bad ? 'BELOW FLOOR' : 'ok'} |`)
}
console.log(`\nbench:guard ${failed ? `FAILED (${failed} below floor)` : 'passed'} in ${((performance.now() - t0) / 1000).toFixed(0)} s; load average ${os.loadavg().map((x) => x.toFixed(2)).join(' / ')}`)
process.exitCode = failed ? 1 : 0
