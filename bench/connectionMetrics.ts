/**
 * Cost of one reading behind gatehouse_proxy_connections_active and _listen_queue
 * (src/proxy/socketTable.ts) with N connections open: this process accepts them on a listener,
 * a child process holds the clients' ends. On loopback both ends are in the kernel's table, so it
 * has 2N lines (a proxy whose clients are remote has N): an upper bound. The listener is a Node
 * one, not uWS: what is read (table lines, descriptors) is the same, and Node keeps idle
 * connections open as long as the measurement takes. Medians of --runs readings: wall time, CPU
 * time of this process, the longest the event loop was held at once, and (readPorts) in all.
 *
 * Usage: npm run bench:connection-metrics -- [--connections 10000] [--runs 9]
 */
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { parseArgs } from 'node:util'
import { parseTcpTable, procSource, readPorts, readPortsSync, socketInodes, type TcpLine } from '../src/proxy/socketTable.js'

const { values } = parseArgs({ options: { connections: { type: 'string', default: '10000' }, runs: { type: 'string', default: '9' } } })
const N = Number(values.connections)
const RUNS = Number(values.runs)

const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1]!

/** Wall ms, CPU ms and the longest event-loop stall (ms) of `f`. */
async function measure(f: () => unknown): Promise<{ wall: number; cpu: number; stall: number }> {
  let last = performance.now()
  let stall = 0
  const tick = setInterval(() => {
    const now = performance.now()
    stall = Math.max(stall, now - last)
    last = now
  }, 1)
  await new Promise((r) => setTimeout(r, 5))
  last = performance.now()
  stall = 0
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  await f()
  const wall = performance.now() - t0
  const c = process.cpuUsage(cpu0)
  // The stall still running when f returns counts too.
  stall = Math.max(stall, performance.now() - last)
  clearInterval(tick)
  return { wall, cpu: (c.user + c.system) / 1000, stall }
}

async function main(): Promise<void> {
  const accepted: Socket[] = []
  const server = createServer((s) => {
    s.on('error', () => undefined)
    accepted.push(s)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', 4096, r))
  const port = (server.address() as AddressInfo).port
  const client = spawn(process.execPath, ['-e', `
    const net = require('node:net'); let n = 0; const keep = []
    function more(i) {
      for (let j = 0; j < 500 && i < ${N}; j++, i++) keep.push(net.connect(${port}, '127.0.0.1', () => { if (++n === ${N}) process.stdout.write('ok\\n') }).on('error', (e) => { console.error(e.message); process.exit(1) }))
      if (i < ${N}) setTimeout(() => more(i), 5)
    }
    more(0)
    process.stdin.on('end', () => process.exit(0)); process.stdin.resume()`], { stdio: ['pipe', 'pipe', 'inherit'] })
  await new Promise((resolve, reject) => {
    client.stdout.once('data', resolve)
    client.once('exit', () => reject(new Error('client exited')))
  })
  while (accepted.length < N) await new Promise((r) => setTimeout(r, 20))
  const src = procSource('127.0.0.1')
  const rows: Record<string, number[][]> = { 'readPorts (gauges)': [], 'readPortsSync': [], 'table read + parse': [], 'descriptor scan': [] }
  let counted = 0
  let lines = 0
  const busyMs: number[] = []
  for (let r = 0; r < RUNS; r++) {
    const busy = { ms: 0 }
    const a = await measure(async () => { counted = (await readPorts([port], src, busy)).get(port)!.connections })
    busyMs.push(busy.ms)
    const b = await measure(() => readPortsSync([port], src))
    const c = await measure(() => {
      const out: TcpLine[] = []
      const text = readFileSync('/proc/net/tcp', 'latin1')
      lines = text.split('\n').length - 2
      parseTcpTable(text, new Set([port]), out)
    })
    const d = await measure(() => socketInodes('/proc/self/fd'))
    for (const [k, m] of [['readPorts (gauges)', a], ['readPortsSync', b], ['table read + parse', c], ['descriptor scan', d]] as const) rows[k]!.push([m.wall, m.cpu, m.stall])
  }
  console.log(`${N} connections accepted, ${counted} counted; /proc/net/tcp: ${lines} lines; medians of ${RUNS} runs`)
  console.log(`readPorts held the event loop ${median(busyMs).toFixed(1)} ms in all (the cache keeps a reading 20× that, 1–5 s)`)
  console.table(Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, {
    'wall ms': median(v.map((x) => x[0]!)).toFixed(1), 'cpu ms': median(v.map((x) => x[1]!)).toFixed(1), 'longest loop stall ms': median(v.map((x) => x[2]!)).toFixed(1),
  }])))
  client.stdin.end()
  for (const s of accepted) s.destroy()
  server.close()
}

main().catch((err: unknown) => {
  console.error(err)
  process.exit(1)
})
