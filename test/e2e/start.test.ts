/**
 * `gatehouse start` the way a user runs it on a fresh checkout: one process with the security
 * server, the proxy and the demo upstream; then the device CLI against it, the admin endpoint,
 * Ctrl-C, and a restart in the same folder that keeps the PKI, the demo user and the enrollments.
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { freePorts, httpGet, metricSample, Sandbox, type GatehouseProcess } from './helpers.js'

const KEY_FILES = ['ca.key', 'server.key', 'proxy-client.key']
const CERT_FILES = ['ca.crt', 'server.crt', 'proxy-client.crt']

const mode = (file: string) => statSync(file).mode & 0o777

describe('gatehouse start (all-in-one)', () => {
  let box: Sandbox
  let ports: { device: number; proxyApi: number; secAdmin: number; proxy: number; proxyAdmin: number; upstream: number }
  const cfg = '--config=cfg.yaml'
  let first: GatehouseProcess
  let second: GatehouseProcess | undefined
  let demoPassword = ''
  let sharedKey = ''
  const certsBefore = new Map<string, Buffer>()

  const readDemoUser = () => JSON.parse(readFileSync(box.path('data', 'demo-user.json'), 'utf8')) as { user: string; password: string }

  beforeAll(async () => {
    box = new Sandbox('gh-e2e-start-')
    const [device, proxyApi, secAdmin, proxy, proxyAdmin, upstream] = await freePorts(6) as [number, number, number, number, number, number]
    ports = { device, proxyApi, secAdmin, proxy, proxyAdmin, upstream }
    box.writeYaml('cfg.yaml', {
      security: {
        listen: { port: device },
        proxyApi: { port: proxyApi },
        admin: { port: secAdmin },
        proxyUrl: `https://localhost:${proxy}`,
      },
      proxy: {
        listen: { port: proxy },
        admin: { port: proxyAdmin },
        securityServers: [`https://localhost:${proxyApi}`],
        routes: [{ prefix: '/demo/', upstream: `http://127.0.0.1:${upstream}`, stripPrefix: true }],
      },
      demo: { upstream: { port: upstream } },
    })
  })

  afterAll(async () => {
    await box?.cleanup()
  })

  it('starts on a fresh folder, creates the PKI, master key, database and demo user', async () => {
    first = box.spawn(['start', cfg])
    await first.waitFor(/Gatehouse is ready/)
    await first.waitFor(/npm run demo/)
    expect(first.stdout).toContain(`https://localhost:${ports.proxy}`)

    for (const f of KEY_FILES) expect(mode(box.path('certs', f)), f).toBe(0o600)
    for (const f of CERT_FILES) certsBefore.set(f, readFileSync(box.path('certs', f)))
    expect(mode(box.path('data', 'master.key'))).toBe(0o600)
    expect(mode(box.path('data', 'demo-user.json'))).toBe(0o600)
    expect(statSync(box.path('data', 'gatehouse.db')).isFile()).toBe(true)
    expect(statSync(box.path('data', 'users.json')).isFile()).toBe(true)

    const demo = readDemoUser()
    expect(demo.user).toBe('demo')
    expect(demo.password.length).toBeGreaterThanOrEqual(16)
    demoPassword = demo.password
  })

  it('`device demo` (npm run demo) succeeds', async () => {
    const r = await box.run(['device', 'demo', cfg])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain('Demo OK')
    expect(r.stdout + r.stderr).not.toContain(demoPassword)
  })

  it('`device enroll` then `device request` GET and POST through the proxy', async () => {
    const enroll = await box.run(['device', 'enroll', cfg, '--user', 'demo', '--password-stdin'], { input: `${demoPassword}\n` })
    expect(enroll.code, enroll.stderr).toBe(0)
    expect(enroll.stdout).toMatch(/^enrolled demo-app on \S+ for demo/)
    expect(mode(box.path('data', 'device.json'))).toBe(0o600)
    sharedKey = (JSON.parse(readFileSync(box.path('data', 'device.json'), 'utf8')) as { sharedKey: string }).sharedKey
    expect(Buffer.from(sharedKey, 'base64')).toHaveLength(32)

    const get = await box.run(['device', 'request', 'GET', '/demo/hello', cfg])
    expect(get.code, get.stderr).toBe(0)
    expect(get.stdout).toContain('"user":"demo"')
    expect(JSON.parse(get.stdout)).toMatchObject({ user: 'demo', app: 'demo-app', method: 'GET' })

    const post = await box.run(['device', 'request', 'POST', '/demo/echo', '--data', '{"a":1}', '--header', 'content-type: application/json', cfg])
    expect(post.code, post.stderr).toBe(0)
    expect(post.stdout.trim()).toBe('{"a":1}')

    // --data-file streams the file up and the answer down (300 KB: several records each way).
    const text = Array.from({ length: 6000 }, (_, i) => `line ${i} of a file sent with --data-file`).join('\n') + '\n'
    writeFileSync(box.path('upload.txt'), text)
    const file = await box.run(['device', 'request', 'POST', '/demo/echo', '--data-file', box.path('upload.txt'), '--header', 'content-type: text/plain', cfg])
    expect(file.code, file.stderr).toBe(0)
    expect(file.stdout).toBe(text)
  })

  it('the proxy admin endpoint serves /metrics, /healthz and /readyz', async () => {
    const base = `http://127.0.0.1:${ports.proxyAdmin}`
    const metrics = await httpGet(`${base}/metrics`)
    expect(metrics.status).toBe(200)
    // The demo (GET, POST) and the two requests above.
    expect(metricSample(metrics.text, 'gatehouse_proxy_requests_total', { route: '/demo/', method: 'GET', status: '200' })).toBeGreaterThanOrEqual(2)
    expect(metricSample(metrics.text, 'gatehouse_proxy_requests_total', { method: 'POST', status: '200' })).toBeGreaterThanOrEqual(2)
    expect(metricSample(metrics.text, 'gatehouse_process_cpu_user_seconds_total')).toBeGreaterThan(0)
    expect(metricSample(metrics.text, 'gatehouse_process_resident_memory_bytes')).toBeGreaterThan(0)
    expect(metrics.text).toMatch(/^gatehouse_nodejs_eventloop_lag_seconds\{/m)

    expect((await httpGet(`${base}/healthz`)).status).toBe(200)
    expect((await httpGet(`${base}/readyz`)).status).toBe(200)
  })

  it('the database and its WAL hold no shared key, raw or base64', () => {
    expect(sharedKey).not.toBe('')
    assertNoKeyAtRest(box, sharedKey)
  })

  it('SIGINT stops cleanly: "Stopped.", exit 0 within 10 s; the output leaks no secret', async () => {
    first.signal('SIGINT')
    const exit = await first.waitExit(10_000)
    expect(exit, first.describe()).toEqual({ code: 0, signal: null })
    expect(first.stdout).toContain('Stopped.')
    assertNoSecrets(first, demoPassword, sharedKey)
    assertNoKeyAtRest(box, sharedKey)
  })

  it('a restart in the same folder reuses the PKI and the demo user; the enrollment still works', async () => {
    second = box.spawn(['start', cfg])
    await second.waitFor(/Gatehouse is ready/)
    await second.waitFor(/npm run demo/)
    expect(second.stdout).not.toContain('created a development PKI')
    for (const [f, bytes] of certsBefore) expect(readFileSync(box.path('certs', f)).equals(bytes), f).toBe(true)
    expect(readDemoUser().password).toBe(demoPassword)

    // No new enrollment: the one made before the restart is read back from SQLite.
    const get = await box.run(['device', 'request', 'GET', '/demo/hello', cfg])
    expect(get.code, get.stderr).toBe(0)
    expect(JSON.parse(get.stdout)).toMatchObject({ user: 'demo' })

    second.signal('SIGINT')
    expect(await second.waitExit(10_000)).toEqual({ code: 0, signal: null })
    expect(second.stdout).toContain('Stopped.')
    assertNoSecrets(second, demoPassword, sharedKey)
  })
})

/** Everything a process printed: no password, no shared key, no stack trace. */
function assertNoSecrets(p: GatehouseProcess, password: string, sharedKey: string): void {
  const all = p.stdout + p.stderr
  expect(password.length).toBeGreaterThan(0)
  expect(all).not.toContain(password)
  const key = Buffer.from(sharedKey, 'base64')
  for (const form of [sharedKey, key.toString('base64url'), key.toString('hex')]) expect(all).not.toContain(form)
  expect(all).not.toContain('    at ')
}

/** The SQLite files (main and write-ahead log) never hold the shared key in any plain form. */
function assertNoKeyAtRest(box: Sandbox, sharedKey: string): void {
  const key = Buffer.from(sharedKey, 'base64')
  const files = ['gatehouse.db', 'gatehouse.db-wal'].map((f) => box.path('data', f))
  let checked = 0
  for (const file of files) {
    let bytes: Buffer
    try {
      bytes = readFileSync(file)
    } catch {
      continue // no WAL after a clean checkpoint
    }
    checked++
    expect(bytes.indexOf(key), `${file}: raw key`).toBe(-1)
    for (const text of [sharedKey, key.toString('base64url'), key.toString('hex')]) {
      expect(bytes.indexOf(Buffer.from(text)), `${file}: encoded key`).toBe(-1)
    }
  }
  expect(checked).toBeGreaterThan(0)
}
