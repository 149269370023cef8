/**
 * The restore drill, with the real processes the way an operator runs them:
 *
 *   A: `gatehouse start` (scheduled backups on) · 5 devices enroll with the SDK · `gatehouse
 *      backup --out` to an off-site folder · Ctrl-C · the master key and backup key copied to a
 *      vault · `rm -rf data/`
 *   B: a new folder with the config, the PKI and the two keys from the vault · `gatehouse
 *      restore` · `gatehouse start` · the 5 devices open sessions and make requests without
 *      enrolling again.
 *
 * Then the refusals on the command line: a flipped byte, a cut file, another backup key, no key
 * file, and an occupied database without --force. Timings and sizes are printed for
 * docs/deployment.md.
 */
import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { GatehouseDevice, type EnrollmentState } from '../../src/client/device.js'
import { freePorts, httpGet, metricSample, Sandbox, type GatehouseProcess } from './helpers.js'

const DEVICES = 5
const cfg = '--config=cfg.yaml'

describe('restore drill: backup on A, destroy, restore on a fresh B, devices keep working', () => {
  let a: Sandbox
  let b: Sandbox
  let c: Sandbox
  let ports: { device: number; proxyApi: number; secAdmin: number; proxy: number; proxyAdmin: number; upstream: number }
  let config: unknown
  let vault: string
  let backupFile: string
  const states: EnrollmentState[] = []
  const figures: Record<string, string | number> = {}
  const procs: GatehouseProcess[] = []

  beforeAll(async () => {
    a = new Sandbox('gh-e2e-backup-a-')
    b = new Sandbox('gh-e2e-backup-b-')
    c = new Sandbox('gh-e2e-backup-c-')
    const [device, proxyApi, secAdmin, proxy, proxyAdmin, upstream] = await freePorts(6) as [number, number, number, number, number, number]
    ports = { device, proxyApi, secAdmin, proxy, proxyAdmin, upstream }
    config = {
      security: {
        listen: { port: device }, proxyApi: { port: proxyApi }, admin: { port: secAdmin }, proxyUrl: `https://localhost:${proxy}`,
        backup: { enabled: true, intervalSeconds: 3600, keep: 3 },
      },
      proxy: {
        listen: { port: proxy }, admin: { port: proxyAdmin }, workers: 1, securityServers: [`https://localhost:${proxyApi}`],
        routes: [{ prefix: '/demo/', upstream: `http://127.0.0.1:${upstream}`, stripPrefix: true }],
      },
      demo: { upstream: { port: upstream } },
    }
    for (const s of [a, b, c]) s.writeYaml('cfg.yaml', config)
    vault = a.path('vault')
    mkdirSync(vault, { mode: 0o700 })
    mkdirSync(a.path('offsite'), { mode: 0o700 })
  })

  afterAll(async () => {
    for (const p of procs) await p.kill()
    await Promise.all([a?.cleanup(), b?.cleanup(), c?.cleanup()])
    console.log(`restore drill figures: ${JSON.stringify(figures)}`)
  })

  const device = (box: Sandbox, i: number, enrollment?: EnrollmentState) => new GatehouseDevice({
    securityUrl: `https://localhost:${ports.device}`, ca: readFileSync(box.path('certs', 'ca.crt')), appId: 'mail', appVersion: '1.0.0',
    deviceId: `drill-device-${i}`, proxyUrl: `https://localhost:${ports.proxy}`, enrollment,
  })

  it('A: start with scheduled backups, enroll 5 devices, `gatehouse backup`, stop, keep the keys, destroy data/', async () => {
    const started = a.spawn(['start', cfg])
    procs.push(started)
    await started.waitFor(/Gatehouse is ready/)
    const password = (JSON.parse(readFileSync(a.path('data', 'demo-user.json'), 'utf8')) as { password: string }).password

    for (let i = 1; i <= DEVICES; i++) {
      const d = device(a, i)
      try {
        states.push(await d.enroll('demo', password))
        expect((await d.request('GET', '/demo/hello')).status).toBe(200)
      } finally {
        await d.close()
      }
    }
    // The server made its first scheduled backup at start (the key file too), and counts it.
    const metrics = (await httpGet(`http://127.0.0.1:${ports.secAdmin}/metrics`)).text
    expect(metricSample(metrics, 'gatehouse_security_backups_total', { result: 'success' })).toBeGreaterThanOrEqual(1)
    expect(metricSample(metrics, 'gatehouse_security_backup_last_success_timestamp_seconds')).toBeGreaterThan(0)
    expect(statSync(a.path('data', 'backup.key')).mode & 0o777).toBe(0o600)
    expect(started.stdout).toContain('backup_written')

    // The operator's backup, while everything runs, to another place.
    const r = await a.run(['backup', cfg, '--out', 'offsite/drill.ghbackup'])
    expect(r.code, r.stderr).toBe(0)
    backupFile = a.path('offsite', 'drill.ghbackup')
    expect(r.stdout).toContain(`backup written: ${backupFile}`)
    expect(statSync(backupFile).mode & 0o777).toBe(0o600)
    figures.backupBytes = statSync(backupFile).size
    figures.backupMsInProcess = Number(/, (\d+) ms/.exec(r.stdout)![1])
    figures.backupMsCommand = Math.round(r.ms)

    started.signal('SIGINT')
    expect(await started.waitExit(15_000)).toEqual({ code: 0, signal: null })
    copyFileSync(a.path('data', 'master.key'), `${vault}/master.key`)
    copyFileSync(a.path('data', 'backup.key'), `${vault}/backup.key`)
    rmSync(a.path('data'), { recursive: true, force: true })
    expect(existsSync(a.path('data'))).toBe(false)
  })

  it('the backup file shows nothing: no key, no user or device name, no database header', () => {
    const bytes = readFileSync(backupFile)
    const needles = ['SQLite format 3', 'CREATE TABLE', 'drill-device-', 'demo-user', ...states.map((s) => s.enrollmentId)]
      .map((s) => Buffer.from(s))
    for (const s of states) {
      const k = Buffer.from(s.sharedKey, 'base64')
      needles.push(k, Buffer.from(s.sharedKey), Buffer.from(k.toString('hex')), Buffer.from(k.toString('base64url')))
    }
    const ring = JSON.parse(readFileSync(`${vault}/master.key`, 'utf8')) as { keys: { key: string }[] }
    for (const k of ring.keys) needles.push(Buffer.from(k.key, 'base64'), Buffer.from(k.key))
    const backupKey = readFileSync(`${vault}/backup.key`, 'utf8').trim()
    needles.push(Buffer.from(backupKey, 'base64'), Buffer.from(backupKey))
    for (const n of needles) expect(bytes.includes(n), `the backup file contains ${n.length} bytes it must not show`).toBe(false)
  })

  it('B: a fresh folder with the config, PKI and vault keys; `gatehouse restore`; start; the 5 devices work without enrolling', async () => {
    cpSync(a.path('certs'), b.path('certs'), { recursive: true })
    mkdirSync(b.path('data'), { mode: 0o700 })
    for (const f of ['master.key', 'backup.key']) {
      copyFileSync(`${vault}/${f}`, b.path('data', f))
      chmodSync(b.path('data', f), 0o600)
    }
    const r = await b.run(['restore', backupFile, cfg])
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.stdout).toContain(`restored ${backupFile} into ${b.path('data', 'gatehouse.db')}`)
    expect(r.stdout).toContain(`${DEVICES} active enrollment(s)`)
    figures.restoreMsInProcess = Number(/ in (\d+) ms/.exec(r.stdout)![1])
    figures.restoreMsCommand = Math.round(r.ms)
    expect(statSync(b.path('data', 'gatehouse.db')).mode & 0o777).toBe(0o600)

    const started = b.spawn(['start', cfg])
    procs.push(started)
    await started.waitFor(/Gatehouse is ready/)
    for (let i = 1; i <= DEVICES; i++) {
      const d = device(b, i, states[i - 1])
      try {
        const s = await d.openSession()
        expect(s.sessionId.length).toBeGreaterThan(20)
        const res = await d.request('GET', '/demo/hello')
        expect(res.status).toBe(200)
        expect(res.json()).toMatchObject({ user: 'demo' })
        expect(d.enrollmentState!.enrollmentId).toBe(states[i - 1]!.enrollmentId)
      } finally {
        await d.close()
      }
    }
    // No device enrolled on B: every session was opened with an enrollment from the backup.
    const metrics = (await httpGet(`http://127.0.0.1:${ports.secAdmin}/metrics`)).text
    expect(metricSample(metrics, 'gatehouse_security_enrollments_total') ?? 0).toBe(0)
    expect(metricSample(metrics, 'gatehouse_security_session_opens_total', { result: 'ok' })).toBeGreaterThanOrEqual(DEVICES)
    started.signal('SIGINT')
    expect(await started.waitExit(15_000)).toEqual({ code: 0, signal: null })

    // B now holds data: a second restore is refused without --force.
    const again = await b.run(['restore', backupFile, cfg])
    expect(again.code).toBe(1)
    expect(again.stderr).toMatch(/already holds data; restore refuses to overwrite it .*\(GH_ERR_EXISTS\)/)
  })

  it('C: a flipped byte, a cut file, another backup key or no key file are refused, and nothing is restored', async () => {
    mkdirSync(c.path('data'), { mode: 0o700 })
    copyFileSync(`${vault}/master.key`, c.path('data', 'master.key'))
    chmodSync(c.path('data', 'master.key'), 0o600)
    const noKey = await c.run(['restore', backupFile, cfg])
    expect(noKey.code).toBe(1)
    expect(noKey.stderr).toContain(`no backup key file at ${c.path('data', 'backup.key')}`)

    copyFileSync(`${vault}/backup.key`, c.path('data', 'backup.key'))
    chmodSync(c.path('data', 'backup.key'), 0o600)
    const good = readFileSync(backupFile)
    const flipped = Buffer.from(good)
    flipped[good.length >> 1] = flipped[good.length >> 1]! ^ 0x01
    writeFileSync(c.path('flipped.ghbackup'), flipped)
    writeFileSync(c.path('cut.ghbackup'), good.subarray(0, good.length - 1000))
    for (const [file, message] of [['flipped.ghbackup', /failed authentication at record \d+: it is corrupt or was tampered with \(GH_ERR_BACKUP_INVALID\)/], ['cut.ghbackup', /is truncated: .* without its final record \(GH_ERR_BACKUP_INVALID\)/]] as const) {
      const r = await c.run(['restore', file, cfg])
      expect(r.code, file).toBe(1)
      expect(r.stderr, file).toMatch(message)
      expect(r.stderr).not.toContain('    at ')
      expect(existsSync(c.path('data', 'gatehouse.db')), file).toBe(false)
    }
    writeFileSync(c.path('data', 'backup.key'), `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 })
    const wrong = await c.run(['restore', backupFile, cfg])
    expect(wrong.code).toBe(1)
    expect(wrong.stderr).toMatch(/was encrypted with backup key [0-9a-f]{16}, but the backup key file holds key [0-9a-f]{16}/)
    expect(existsSync(c.path('data', 'gatehouse.db'))).toBe(false)
  })
})
