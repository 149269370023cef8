/**
 * The suite's report: machine, rows with each figure's ratio to nginx and to the plain Node proxy
 * of the same scenario, as Markdown and as JSON under bench/results/.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { ROOT } from '../lib.js'
import type { Row } from './scenarios.js'
import { nginxVersion, PROXY_CORE, SHARED_CORE } from './targets.js'
import { hasTaskset } from './procs.js'

export interface Machine {
  cores: number
  cpuModel: string
  node: string
  nginx: string | null
  loadAvgAtStart: number[]
  loadAvgAtEnd: number[]
  pinning: string
  date: string
}

export function machine(loadAvgAtStart: number[]): Machine {
  return {
    cores: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? 'unknown', node: process.version, nginx: nginxVersion() ?? null,
    loadAvgAtStart, loadAvgAtEnd: os.loadavg(),
    pinning: hasTaskset()
      ? `taskset: proxy under test (Gatehouse proxy, nginx worker+master, plain Node proxy) on core ${PROXY_CORE}; load generator, upstream, fake Exchange and security server share core ${SHARED_CORE}`
      : 'no taskset: nothing pinned',
    date: new Date().toISOString(),
  }
}

export interface Ratios { nginx?: Partial<Record<Metric, number>>; node?: Partial<Record<Metric, number>> }
type Metric = 'rps' | 'mbps' | 'p50' | 'p99' | 'p999' | 'cpuPct' | 'cpuUsPerReq' | 'rssMiB' | 'perConnKiB'

export interface RowWithRatios extends Row { ratios: Ratios }

function metrics(r: Row): Partial<Record<Metric, number>> {
  const proc = r.procs?.[r.target]
  const m: Partial<Record<Metric, number>> = { rps: r.rps, mbps: r.mbps, p50: r.p50, p99: r.p99, p999: r.p999, cpuPct: proc?.cpuPct, rssMiB: proc ? proc.rss / 2 ** 20 : undefined }
  // CPU time of the target per request: steadier than req/s on a machine shared with other work.
  if (proc && r.rps) m.cpuUsPerReq = ((proc.cpuPct / 100) * 1e6) / r.rps
  if (typeof r.extra?.perConnKiB === 'number') m.perConnKiB = r.extra.perConnKiB
  return m
}

export function withRatios(rows: Row[]): RowWithRatios[] {
  return rows.map((r) => {
    const ratios: Ratios = {}
    for (const base of ['nginx', 'node'] as const) {
      const b = rows.find((x) => x.scenario === r.scenario && x.target === base && x.status === 'ok')
      if (!b || r.status !== 'ok') continue
      const mine = metrics(r)
      const theirs = metrics(b)
      const out: Partial<Record<Metric, number>> = {}
      for (const k of Object.keys(mine) as Metric[]) {
        const a = mine[k]
        const c = theirs[k]
        if (typeof a === 'number' && typeof c === 'number' && Number.isFinite(a) && Number.isFinite(c) && c !== 0) out[k] = a / c
      }
      ratios[base] = out
    }
    return { ...r, ratios }
  })
}

const n = (x: number | undefined, d = 0) => (x === undefined || !Number.isFinite(x) ? '–' : x.toLocaleString('en', { maximumFractionDigits: d, minimumFractionDigits: d }))
const ratio = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '–' : `${x.toFixed(2)}×`)

export function markdown(m: Machine, rows: RowWithRatios[], settings: Record<string, unknown>): string {
  const out: string[] = []
  out.push(`Machine: ${m.cores} cores, ${m.cpuModel}, Node ${m.node}, nginx ${m.nginx ?? 'missing'}; load average at start ${m.loadAvgAtStart.map((x) => x.toFixed(2)).join(' / ')}, at end ${m.loadAvgAtEnd.map((x) => x.toFixed(2)).join(' / ')}; ${m.date}.`)
  out.push(`Pinning: ${m.pinning}. Settings: ${Object.entries(settings).map(([k, v]) => `${k} ${String(v)}`).join(', ')}.`)
  out.push('')
  out.push('| scenario | target | req/s | MB/s | p50 ms | p99 ms | p99.9 ms | CPU % (target) | CPU µs/req (target) | RSS MiB (target) | errors / non-2xx | req/s ÷ nginx | req/s ÷ Node | p99 ÷ nginx | p99 ÷ Node | CPU/req ÷ nginx | CPU/req ÷ Node |')
  out.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
  for (const r of rows) {
    if (r.status === 'missing' || r.status === 'pending' || (r.status === 'failed' && r.note)) {
      out.push(`| ${r.scenario} | ${r.target} | ${r.status}: ${r.note ?? ''} | | | | | | | | | | | | | | |`)
      continue
    }
    const p = r.procs?.[r.target]
    const tp = r.ratios.nginx?.mbps !== undefined ? 'mbps' : 'rps'
    out.push(`| ${r.scenario} | ${r.target}${r.status === 'failed' ? ' (FAILED)' : ''} | ${n(r.rps)} | ${n(r.mbps, 1)} | ${n(r.p50, 2)} | ${n(r.p99, 2)} | ${n(r.p999, 2)} | ${n(p?.cpuPct)} | ${n(metrics(r).cpuUsPerReq)} | ${p ? n(p.rss / 2 ** 20, 1) : '–'} | ${r.errors ?? 0} / ${r.non2xx ?? 0} | ${ratio(r.ratios.nginx?.[tp])} | ${ratio(r.ratios.node?.[tp])} | ${ratio(r.ratios.nginx?.p99)} | ${ratio(r.ratios.node?.p99)} | ${ratio(r.ratios.nginx?.cpuUsPerReq)} | ${ratio(r.ratios.node?.cpuUsPerReq)} |`)
  }
  const extras = rows.filter((r) => r.extra && Object.keys(r.extra).length)
  if (extras.length) {
    out.push('')
    out.push('| scenario | target | details |')
    out.push('|---|---|---|')
    for (const r of extras) out.push(`| ${r.scenario} | ${r.target} | ${Object.entries(r.extra!).map(([k, v]) => `${k} ${typeof v === 'number' ? n(v, v < 100 ? 2 : 0) : v}`).join(', ')} |`)
  }
  return out.join('\n')
}

export function save(name: string, m: Machine, rows: RowWithRatios[], md: string, extra: Record<string, unknown>): { json: string; md: string } {
  const dir = path.join(ROOT, 'bench/results')
  mkdirSync(dir, { recursive: true })
  const stamp = m.date.replace(/[:.]/g, '-')
  const json = path.join(dir, `${name}-${stamp}.json`)
  const mdPath = path.join(dir, `${name}-${stamp}.md`)
  writeFileSync(json, `${JSON.stringify({ machine: m, ...extra, rows }, null, 2)}\n`)
  writeFileSync(mdPath, `${md}\n`)
  writeFileSync(path.join(dir, `${name}-latest.json`), `${JSON.stringify({ machine: m, ...extra, rows }, null, 2)}\n`)
  writeFileSync(path.join(dir, `${name}-latest.md`), `${md}\n`)
  return { json, md: mdPath }
}
