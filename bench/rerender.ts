/**
 * Render a saved suite result again (after a change to the report's columns or goals):
 * node dist-bench/bench/rerender.js bench/results/bench-latest.json > table.md
 */
import { readFileSync } from 'node:fs'
import { goals, goalsMarkdown } from './suite/goals.js'
import { markdown, withRatios, type Machine } from './suite/report.js'
import type { Row } from './suite/scenarios.js'

const file = process.argv[2]
if (!file) throw new Error('usage: rerender.js RESULT.json')
const saved = JSON.parse(readFileSync(file, 'utf8')) as {
  machine: Machine; settings?: Record<string, unknown>; rows: Row[]; perRound?: { values: Record<string, number>; rounds: number }
}
const rows = withRatios(saved.rows)
console.log(`${markdown(saved.machine, rows, saved.settings ?? {})}\n\n${goalsMarkdown(goals(rows, saved.perRound))}`)
