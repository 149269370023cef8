/**
 * Rounds of the throughput scenarios (`npm run bench -- --rounds N`): every round loads every
 * target once (upstream, Gatehouse, nginx, Node; even rounds in the reverse order of the
 * proxies), so a slow minute of the shared machine falls on every target alike. Reported: per
 * scenario and target the median over rounds of each figure, and the ratios that the goals use as
 * the median of per-round ratios (the steadier figure: one round's ratio compares runs made
 * seconds apart).
 */
import { withRatios, type RowWithRatios } from './report.js'
import type { Row } from './scenarios.js'
import type { ProcFigures } from './procs.js'

export const median = (xs: number[]): number | undefined => {
  if (xs.length === 0) return undefined
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}

const nums = (rows: Row[], f: (r: Row) => number | undefined) => rows.map(f).filter((x): x is number => typeof x === 'number' && Number.isFinite(x))

/** One row per scenario and target: medians over the rounds, errors summed. */
export function mergeRounds(rounds: Row[][]): Row[] {
  const groups = new Map<string, Row[]>()
  for (const round of rounds) {
    for (const r of round) {
      const k = `${r.scenario}\u0000${r.target}`
      const g = groups.get(k)
      if (g) g.push(r)
      else groups.set(k, [r])
    }
  }
  const out: Row[] = []
  for (const g of groups.values()) {
    const first = g[0]!
    const ok = g.filter((r) => r.status === 'ok')
    if (ok.length === 0) {
      out.push(first)
      continue
    }
    const procs: Record<string, ProcFigures> = {}
    for (const name of Object.keys(ok[0]!.procs ?? {})) {
      const of = (k: keyof ProcFigures) => median(ok.map((r) => r.procs?.[name]?.[k]).filter((x): x is number => typeof x === 'number'))!
      procs[name] = { cpuPct: of('cpuPct'), rss: of('rss'), peakRss: of('peakRss') }
    }
    out.push({
      scenario: first.scenario, target: first.target, status: ok.length === g.length ? 'ok' : 'failed',
      ...(ok.length === g.length ? {} : { note: `${g.length - ok.length} of ${g.length} rounds failed` }),
      rps: median(nums(ok, (r) => r.rps)), mbps: median(nums(ok, (r) => r.mbps)), p50: median(nums(ok, (r) => r.p50)),
      p99: median(nums(ok, (r) => r.p99)), p999: median(nums(ok, (r) => r.p999)),
      errors: g.reduce((a, r) => a + (r.errors ?? 0), 0), non2xx: g.reduce((a, r) => a + (r.non2xx ?? 0), 0),
      procs, extra: { ...first.extra, rounds: `${ok.length} of ${g.length}` },
    })
  }
  return out
}

const GOAL_RATIOS: { key: string; scenario: string; base: 'nginx' | 'node' }[] = [
  { key: 'kib1_vs_nginx', scenario: '1 KiB round trip', base: 'nginx' },
  { key: 'kib1_vs_node', scenario: '1 KiB round trip', base: 'node' },
  { key: 'activesync_vs_nginx', scenario: 'ActiveSync pass-through (Sync, 1 KiB)', base: 'nginx' },
  { key: 'handshakes_vs_nginx', scenario: 'full TLS handshake per request', base: 'nginx' },
]

export interface RoundRatios {
  /** Goal key → median of the per-round ratios (p99_added_ms: median of per-round differences). */
  medians: Record<string, number>
  markdown: string
}

/** Gatehouse's per-round ratios to nginx and Node (req/s and CPU per request), and their medians. */
export function roundRatios(rounds: Row[][]): RoundRatios {
  const per: RowWithRatios[][] = rounds.map((r) => withRatios(r))
  const lines = ['| scenario | Gatehouse ÷ | req/s, per round | median | CPU per request, per round | median |', '|---|---|---|---:|---|---:|']
  const medians: Record<string, number> = {}
  const scenarios = [...new Set(per.flatMap((rows) => rows.filter((r) => r.target === 'gatehouse').map((r) => r.scenario)))]
  const f = (x: number | undefined) => (x === undefined ? '–' : x.toFixed(2))
  for (const scenario of scenarios) {
    for (const base of ['nginx', 'node'] as const) {
      const gh = per.map((rows) => rows.find((r) => r.scenario === scenario && r.target === 'gatehouse' && r.status === 'ok'))
      const tp = gh.map((r) => (r?.ratios[base]?.mbps ?? r?.ratios[base]?.rps))
      const cpu = gh.map((r) => r?.ratios[base]?.cpuUsPerReq)
      if (tp.every((x) => x === undefined)) continue
      const mt = median(tp.filter((x): x is number => x !== undefined))
      lines.push(`| ${scenario} | ${base} | ${tp.map(f).join(', ')} | ${f(mt)} | ${cpu.map(f).join(', ')} | ${f(median(cpu.filter((x): x is number => x !== undefined)))} |`)
      const goal = GOAL_RATIOS.find((g) => g.scenario === scenario && g.base === base)
      if (goal && mt !== undefined) medians[goal.key] = mt
    }
  }
  const added = per.map((rows) => {
    const gh = rows.find((r) => r.scenario.startsWith('1 KiB round trip at half') && r.target === 'gatehouse' && r.status === 'ok')
    const up = rows.find((r) => r.scenario.startsWith('1 KiB round trip at half') && r.target === 'upstream' && r.status === 'ok')
    return gh?.p99 !== undefined && up?.p99 !== undefined ? gh.p99 - up.p99 : undefined
  }).filter((x): x is number => x !== undefined)
  const ma = median(added)
  if (ma !== undefined) {
    medians.p99_added_ms = ma
    lines.push(`| 1 KiB round trip at half of Gatehouse peak | upstream alone: p99 added, ms | ${added.map((x) => x.toFixed(1)).join(', ')} | ${ma.toFixed(1)} | | |`)
  }
  return { medians, markdown: lines.join('\n') }
}
