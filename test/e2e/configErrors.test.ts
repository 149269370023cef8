/**
 * Mistakes an operator makes, met by the real long-running commands: they exit quickly with a
 * message naming the problem (the option path, the chmod to run), never start half-way and never
 * print a stack trace.
 */
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { freePorts, Sandbox } from './helpers.js'

const QUICK_MS = 10_000

describe('configuration errors stop the servers at once', () => {
  let box: Sandbox

  beforeEach(() => {
    box = new Sandbox('gh-e2e-config-')
  })
  afterEach(async () => {
    await box.cleanup()
  })

  it('proxy: a port out of range exits non-zero naming proxy.listen.port', async () => {
    box.writeYaml('bad.yaml', { proxy: { listen: { port: 70000 } } })
    const r = await box.run(['proxy', '--config', 'bad.yaml'], { timeoutMs: QUICK_MS })
    expect(r.code, r.stderr).not.toBe(0)
    expect(r.code).not.toBeNull()
    expect(r.stderr).toContain('proxy.listen.port')
    expect(r.stderr).toContain('70000')
    expect(r.stderr).toContain('(GH_ERR_CONFIG)')
    expect(r.stderr).not.toContain('    at ')
    expect(r.stdout).not.toContain('ready')
    expect(r.ms).toBeLessThan(QUICK_MS)
  })

  it('proxy: an unknown option exits non-zero naming its path', async () => {
    box.writeYaml('typo.yaml', { proxy: { listen: { host: '127.0.0.1', prot: 9443 } } })
    const r = await box.run(['proxy', '--config', 'typo.yaml'], { timeoutMs: QUICK_MS })
    expect(r.code, r.stderr).not.toBe(0)
    expect(r.code).not.toBeNull()
    expect(r.stderr).toContain('proxy.listen.prot')
    expect(r.stderr).toMatch(/not a known option/)
    expect(r.stderr).not.toContain('    at ')
  })

  it('security: a master key file readable by group/other is refused with "chmod 600"', async () => {
    const [device, proxyApi, admin] = await freePorts(3) as [number, number, number]
    box.writeYaml('sec.yaml', {
      security: { listen: { port: device }, proxyApi: { port: proxyApi }, admin: { port: admin } },
    })
    // A well-formed key ring, but mode 0644.
    mkdirSync(box.path('data'), { mode: 0o700 })
    const keyFile = box.path('data', 'master.key')
    const key = randomBytes(32).toString('base64')
    writeFileSync(keyFile, `${JSON.stringify({ version: 1, current: 'k1', keys: [{ id: 'k1', key, createdAt: new Date().toISOString() }] })}\n`)
    chmodSync(keyFile, 0o644)

    const r = await box.run(['security', '--config', 'sec.yaml'], { timeoutMs: QUICK_MS })
    expect(r.code, r.stdout + r.stderr).not.toBe(0)
    expect(r.code).not.toBeNull()
    expect(r.stderr).toContain('chmod 600')
    expect(r.stderr).toContain(keyFile)
    expect(r.stderr).not.toContain(key)
    expect(r.stderr).not.toContain('    at ')
    expect(r.stdout).not.toContain('security server ready')
    // Refused, not "repaired": the file is left as it was for the operator to look at.
    expect(statSync(keyFile).mode & 0o777).toBe(0o644)
    expect(readFileSync(keyFile, 'utf8')).toContain(key)
  })
})
