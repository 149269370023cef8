/** bench --rounds: medians over rounds, and the goals' ratios as medians of per-round ratios. */
import { describe, expect, it } from 'vitest'
import { goals } from '../../bench/suite/goals.js'
import { withRatios } from '../../bench/suite/report.js'
import { median, mergeRounds, roundRatios } from '../../bench/suite/rounds.js'
import type { Row } from '../../bench/suite/scenarios.js'

const proc = (cpuPct: number, rss = 100 * 2 ** 20) => ({ cpuPct, rss, peakRss: rss })
function round(gh: number, nginx: number, node: number, ghCpu = 90): Row[] {
  const s = '1 KiB round trip'
  return [
    { scenario: s, target: 'upstream', status: 'ok', rps: 20_000, p99: 5, procs: { upstream: proc(80) } },
    { scenario: s, target: 'gatehouse', status: 'ok', rps: gh, p99: 50, errors: 1, procs: { gatehouse: proc(ghCpu) } },
    { scenario: s, target: 'nginx', status: 'ok', rps: nginx, p99: 20, procs: { nginx: proc(45) } },
    { scenario: s, target: 'node', status: 'ok', rps: node, p99: 60, procs: { node: proc(92) } },
  ]
}

describe('bench rounds', () => {
  it('median of odd and even counts, none for an empty list', () => {
    expect(median([3, 1, 2])).toBe(2)
    expect(median([4, 1, 3, 2])).toBe(2.5)
    expect(median([])).toBeUndefined()
  })

  it('merges rounds into one row per scenario and target: medians of figures and CPU, errors summed', () => {
    const merged = mergeRounds([round(4000, 10_000, 4000, 80), round(5000, 9000, 3000, 90), round(4500, 11_000, 5000, 95)])
    expect(merged).toHaveLength(4)
    const gh = merged.find((r) => r.target === 'gatehouse')!
    expect(gh.rps).toBe(4500)
    expect(gh.procs!.gatehouse!.cpuPct).toBe(90)
    expect(gh.errors).toBe(3)
    expect(gh.extra?.rounds).toBe('3 of 3')
    expect(merged.find((r) => r.target === 'nginx')!.rps).toBe(10_000)
  })

  it('a round that failed is left out of the medians and named in the note', () => {
    const bad = round(1, 1, 1)
    bad[1] = { scenario: '1 KiB round trip', target: 'gatehouse', status: 'failed', note: 'boom' }
    const gh = mergeRounds([round(4000, 10_000, 4000), bad, round(6000, 10_000, 4000)]).find((r) => r.target === 'gatehouse')!
    expect(gh.status).toBe('failed')
    expect(gh.note).toBe('1 of 3 rounds failed')
    expect(gh.rps).toBe(5000)
  })

  it('the goals take the median of per-round ratios, which differs from the ratio of medians', () => {
    // Per-round gatehouse ÷ nginx: 0.40, 0.56, 0.41 → median 0.41; ratio of medians: 4500 / 10,000 = 0.45.
    const rounds = [round(4000, 10_000, 4000), round(5000, 9000, 3000), round(4500, 11_000, 5000)]
    const rr = roundRatios(rounds)
    expect(rr.medians.kib1_vs_nginx).toBeCloseTo(4500 / 11_000, 6)
    expect(rr.medians.kib1_vs_node).toBeCloseTo(1.0, 6)
    expect(rr.markdown).toContain('| 1 KiB round trip | nginx | 0.40, 0.56, 0.41 | 0.41 |')
    const merged = withRatios(mergeRounds(rounds))
    expect(goals(merged).find((g) => g.key === 'kib1_vs_nginx')!.value).toBeCloseTo(0.45, 6)
    const g = goals(merged, { values: rr.medians, rounds: 3 }).find((x) => x.key === 'kib1_vs_nginx')!
    expect(g.value).toBeCloseTo(4500 / 11_000, 6)
    expect(g.detail).toContain('median of 3 per-round ratios')
    expect(g.met).toBe(false)
  })
})
