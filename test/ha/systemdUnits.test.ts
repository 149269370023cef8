/**
 * The systemd units of config/systemd/ are accepted by `systemd-analyze verify` (skipped, saying
 * so, where the tool is missing) and carry what docs/deployment.md promises: Type=simple, a
 * config file, SIGHUP on reload, SIGTERM to stop with a stop timeout above the proxy's drain,
 * and the hardening options.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const UNITS = ['gatehouse-security.service', 'gatehouse-proxy.service']
/** proxy.shutdownDelayMs of the farm's proxy.yaml (docs/deployment.md, "Proxy farm"). */
const FARM_SHUTDOWN_DELAY_S = 2

function hasSystemdAnalyze(): boolean {
  try {
    execFileSync('systemd-analyze', ['--version'], { stdio: 'pipe', timeout: 5000 })
    return true
  } catch {
    return false
  }
}

const analyze = hasSystemdAnalyze()
if (!analyze) console.warn('skipping `systemd-analyze verify` of config/systemd/*.service: systemd-analyze is not installed here')

/** `Key=value` lines of a unit (the last value of a key wins, like systemd for these keys). */
function settings(text: string): Map<string, string> {
  const m = new Map<string, string>()
  for (const line of text.split('\n')) {
    const x = /^([A-Za-z]+)=(.*)$/.exec(line.trim())
    if (x) m.set(x[1]!, x[2]!)
  }
  return m
}

/**
 * The unit with the install paths pointed at this checkout and this node (verify checks that
 * ExecStart's program exists), in a temporary folder; returns verify's status and output.
 */
function verify(dir: string, name: string, text: string): { status: number | null; output: string } {
  const local = text.replaceAll('/usr/bin/node', process.execPath).replaceAll('/opt/gatehouse', ROOT.replace(/\/$/, ''))
  const file = path.join(dir, name)
  writeFileSync(file, local)
  const r = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8', timeout: 20_000 })
  return { status: r.status, output: `${r.stdout}${r.stderr}`.trim() }
}

describe('systemd units', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'gh-systemd-'))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it.each(UNITS)('%s: what the deployment guide promises', (name) => {
    const s = settings(readFileSync(path.join(ROOT, 'config', 'systemd', name), 'utf8'))
    expect(s.get('Type')).toBe('simple')
    expect(s.get('User')).toBe('gatehouse')
    expect(s.get('ExecStart')).toMatch(/^\/usr\/bin\/node \/opt\/gatehouse\/dist\/cli\/main\.js (security|proxy) --config \/etc\/gatehouse\/\S+\.yaml\b/)
    expect(s.get('ExecReload')).toBe('/bin/kill -HUP $MAINPID')
    expect(s.get('KillSignal')).toBe('SIGTERM')
    expect(s.get('NoNewPrivileges')).toBe('yes')
    expect(s.get('ProtectSystem')).toBe('strict')
    expect(s.get('ReadWritePaths')?.split(/\s+/)).toContain('/var/lib/gatehouse')
  })

  it('the proxy\'s stop timeout exceeds its readiness delay plus its drain window', () => {
    const s = settings(readFileSync(path.join(ROOT, 'config', 'systemd', 'gatehouse-proxy.service'), 'utf8'))
    const drain = Number(/--drain (\d+)/.exec(s.get('ExecStart') ?? '')?.[1])
    expect(drain).toBeGreaterThan(0)
    expect(Number(s.get('TimeoutStopSec'))).toBeGreaterThan(FARM_SHUTDOWN_DELAY_S + drain)
  })

  it.skipIf(!analyze).each(UNITS)('systemd-analyze verify accepts %s without a warning', (name) => {
    const r = verify(dir, name, readFileSync(path.join(ROOT, 'config', 'systemd', name), 'utf8'))
    expect(r, r.output).toEqual({ status: 0, output: '' })
  })

  it.skipIf(!analyze)('the check sees a broken unit (it can fail)', () => {
    const text = readFileSync(path.join(ROOT, 'config', 'systemd', 'gatehouse-proxy.service'), 'utf8').replace('ProtectSystem=strict', 'ProtectSystem=very')
    expect(verify(dir, 'broken.service', text).output).toMatch(/protect system/i)
  })
})
