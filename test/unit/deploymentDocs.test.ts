/**
 * docs/deployment.md teaches configurations: the YAML blocks that name a Gatehouse file
 * (first line `# /etc/gatehouse/…`) must validate, and the HAProxy lines the guide explains
 * must be the ones config/haproxy.cfg ships.
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { parse } from 'yaml'
import { buildConfig } from '../../src/config/load.js'

const read = (rel: string) => readFileSync(fileURLToPath(new URL(`../../${rel}`, import.meta.url)), 'utf8')
const guide = read('docs/deployment.md')

const blocks = [...guide.matchAll(/```yaml\n(# \/etc\/gatehouse\/[^\n]*)\n([\s\S]*?)```/g)].map((m) => ({ title: m[1]!, text: `${m[1]}\n${m[2]}` }))

describe('docs/deployment.md', () => {
  it('has configuration files to check', () => {
    expect(blocks.length).toBeGreaterThanOrEqual(4)
  })

  it.each(blocks.map((b) => [b.title, b.text]))('%s validates', (_title, text) => {
    expect(() => buildConfig(parse(text))).not.toThrow()
  })

  it('explains only lines config/haproxy.cfg has', () => {
    const cfg = read('config/haproxy.cfg').replace(/[ \t]+/g, ' ')
    const section = guide.slice(guide.indexOf('### The configuration, explained'), guide.indexOf('### Stopping a proxy'))
    const rows = section.split('\n').filter((l) => l.startsWith('| `'))
    expect(rows.length).toBeGreaterThanOrEqual(6)
    for (const row of rows) {
      const firstCell = row.split(' | ')[0]!
      for (const [, code] of firstCell.matchAll(/`([^`]+)`/g)) expect(cfg, `docs quote "${code}"`).toContain(code!)
    }
  })
})
