/** The issue's targets, evaluated on one run's rows (ratios measured in that run). */
import type { RowWithRatios } from './report.js'

export interface Goal { name: string; key: string; value: number | undefined; target: string; met: boolean | undefined; detail: string }

const find = (rows: RowWithRatios[], prefix: string, target: string) => rows.find((r) => (r.scenario === prefix || r.scenario.startsWith(prefix + ' ')) && r.target === target && r.status === 'ok')

/**
 * `perRound` (bench --rounds): ratios and the p99 difference as medians of per-round figures,
 * used instead of the ratio of the merged medians.
 */
export function goals(rows: RowWithRatios[], perRound?: { values: Record<string, number>; rounds: number }): Goal[] {
  const out: Goal[] = []
  const pick = (key: string, value: number | undefined) => perRound?.values[key] ?? value
  const how = (key: string) => (perRound?.values[key] !== undefined ? `, median of ${perRound.rounds} per-round ratios` : '')
  const atLeast = (name: string, key: string, measured: number | undefined, floor: number) => {
    const value = pick(key, measured)
    out.push({
      name, key, value, target: `≥ ${floor}`, met: value === undefined ? undefined : value >= floor,
      detail: value === undefined ? 'not measured' : `${value.toFixed(2)} (${value >= floor ? '+' : ''}${(((value - floor) / floor) * 100).toFixed(0)} % vs target${how(key)})`,
    })
  }
  const gh1 = find(rows, '1 KiB round trip', 'gatehouse')
  atLeast('1 KiB round trip req/s ÷ nginx', 'kib1_vs_nginx', gh1?.ratios.nginx?.rps, 0.5)
  atLeast('1 KiB round trip req/s ÷ plain Node proxy', 'kib1_vs_node', gh1?.ratios.node?.rps, 2.5)
  const as = find(rows, 'ActiveSync', 'gatehouse')
  atLeast('ActiveSync pass-through req/s ÷ nginx', 'activesync_vs_nginx', as?.ratios.nginx?.rps, 0.7)
  const hs = find(rows, 'full TLS handshake', 'gatehouse')
  atLeast('full handshakes/s ÷ nginx', 'handshakes_vs_nginx', hs?.ratios.nginx?.rps, 1.0)
  const halfGh = find(rows, '1 KiB round trip at half', 'gatehouse')
  const halfUp = find(rows, '1 KiB round trip at half', 'upstream')
  const added = pick('p99_added_ms', halfGh?.p99 !== undefined && halfUp?.p99 !== undefined ? halfGh.p99 - halfUp.p99 : undefined)
  out.push({
    name: 'p99 added over the upstream alone at half of peak', key: 'p99_added_ms', value: added, target: '≤ 2 ms', met: added === undefined ? undefined : added <= 2,
    detail: added === undefined ? 'not measured' : `${added.toFixed(2)} ms${perRound?.values.p99_added_ms !== undefined ? `, median of ${perRound.rounds} rounds` : ''}`,
  })
  const idleGh = rows.find((r) => r.scenario.includes('idle TLS') && r.target === 'gatehouse' && r.status === 'ok')
  const idleNx = rows.find((r) => r.scenario.includes('idle TLS') && r.target === 'nginx' && r.status === 'ok')
  const a = idleGh?.extra?.perConnKiB
  const b = idleNx?.extra?.perConnKiB
  const idleRatio = typeof a === 'number' && typeof b === 'number' ? a / b : undefined
  // Met only when Gatehouse held as many connections as nginx: less memory for fewer connections is no win.
  const heldAll = idleGh?.extra?.open !== undefined && idleGh.extra.open === idleNx?.extra?.open
  out.push({
    name: 'idle TLS connection memory ÷ nginx', key: 'idle_mem_vs_nginx', value: idleRatio, target: '< 1, all held', met: idleRatio === undefined ? undefined : idleRatio < 1 && heldAll,
    detail: idleRatio === undefined ? 'not measured' : `${Number(a).toFixed(1)} KiB vs ${Number(b).toFixed(1)} KiB per open connection (${idleRatio.toFixed(2)}×); held ${String(idleGh?.extra?.open)} vs ${String(idleNx?.extra?.open)}`,
  })
  const rev = rows.find((r) => r.scenario.startsWith('revocation') && r.status === 'ok')
  out.push({ name: 'revocation at every proxy, p99', key: 'revocation_p99_ms', value: rev?.p99, target: '< 1000 ms', met: rev?.p99 === undefined ? undefined : rev.p99 < 1000, detail: rev?.p99 === undefined ? 'not measured' : `${rev.p99.toFixed(1)} ms` })
  return out
}

export function goalsMarkdown(gs: Goal[]): string {
  return ['| target | goal | this run | met |', '|---|---|---|---|', ...gs.map((g) => `| ${g.name} | ${g.target} | ${g.detail} | ${g.met === undefined ? '–' : g.met ? 'yes' : '**no**'} |`)].join('\n')
}
