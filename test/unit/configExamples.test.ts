/** Every example in config/ must validate: examples that do not load teach the wrong thing. */
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { buildConfig, loadConfigFile } from '../../src/config/load.js'

const DIR = fileURLToPath(new URL('../../config/', import.meta.url))
const files = readdirSync(DIR).filter((n) => /\.(ya?ml|json)$/.test(n)).sort()

describe('config examples', () => {
  it('the folder holds the documented examples', () => {
    expect(files).toEqual(expect.arrayContaining(['gatehouse.example.yaml', 'proxy.example.yaml', 'security.example.yaml']))
  })

  it.each(files)('%s validates', (name) => {
    const file = join(DIR, name)
    expect(loadConfigFile(file).source).toBe(file)
  })

  it('gatehouse.example.yaml spells out exactly the defaults, as it says', () => {
    const { source: _source, ...example } = loadConfigFile(join(DIR, 'gatehouse.example.yaml'))
    const { source: _none, ...defaults } = buildConfig({})
    expect(example).toEqual(defaults)
  })

  it('proxy.example.yaml: public listener, an https upstream with its CA, a stripped prefix', () => {
    const { proxy } = loadConfigFile(join(DIR, 'proxy.example.yaml'))
    expect(proxy.listen.host).toBe('0.0.0.0')
    expect(proxy.routes.length).toBeGreaterThanOrEqual(3)
    expect(proxy.routes.some((r) => r.upstream?.startsWith('https:') && r.upstreamCa)).toBe(true)
    expect(proxy.routes.some((r) => r.stripPrefix)).toBe(true)
  })
})
