/**
 * The admin tooling the way an operator uses it: `gatehouse start` running, then `gatehouse admin
 * add` and `admin token` in another process, an admin API call with that token, and `gatehouse
 * keys rotate --prune` while the server keeps serving an enrolled device. Also: `log.file` is
 * written with mode 0600.
 */
import { readFileSync, statSync } from 'node:fs'
import { Agent, request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { freePorts, Sandbox, type GatehouseProcess } from './helpers.js'

describe('gatehouse admin + keys (end to end)', () => {
  let box: Sandbox
  let server: GatehouseProcess
  let agent: Agent
  let devicePort = 0
  const cfg = '--config=cfg.yaml'
  const PW = 'operator password 42'

  const api = async (path: string, token: string) => {
    const res = await request(`https://localhost:${devicePort}${path}`, { dispatcher: agent, headers: { authorization: `Bearer ${token}` } })
    return { status: res.statusCode, json: await res.body.json() as Record<string, unknown> }
  }

  beforeAll(async () => {
    box = new Sandbox('gh-e2e-admin-')
    const [device, proxyApi, secAdmin, proxy, proxyAdmin, upstream] = await freePorts(6) as [number, number, number, number, number, number]
    devicePort = device
    box.writeYaml('cfg.yaml', {
      log: { file: 'logs/security.log' },
      security: { listen: { port: device }, proxyApi: { port: proxyApi }, admin: { port: secAdmin }, proxyUrl: `https://localhost:${proxy}` },
      proxy: {
        listen: { port: proxy }, admin: { port: proxyAdmin }, securityServers: [`https://localhost:${proxyApi}`],
        routes: [{ prefix: '/demo/', upstream: `http://127.0.0.1:${upstream}`, stripPrefix: true }],
      },
      demo: { upstream: { port: upstream } },
    })
    server = box.spawn(['start', cfg])
    await server.waitFor(/Gatehouse is ready/)
    agent = new Agent({ connect: { ca: readFileSync(box.path('certs', 'ca.crt')) } })
  })
  afterAll(async () => {
    await agent?.close()
    await box?.cleanup()
  })

  it('`admin add` + `admin token`, then the admin API answers with that token', async () => {
    const add = await box.run(['admin', 'add', 'ops', '--role', 'admin', '--password-stdin', cfg], { input: `${PW}\n` })
    expect(add.code, add.stderr).toBe(0)
    expect(add.stdout).toContain('added admin ops (admin)')
    expect(add.stdout + add.stderr).not.toContain(PW)
    const again = await box.run(['admin', 'add', 'ops', '--role', 'admin', '--password-stdin', cfg], { input: `${PW}\n` })
    expect(again.code).toBe(1)
    expect(again.stderr).toContain('GH_ERR_EXISTS')
    const weak = await box.run(['admin', 'add', 'weak', '--role', 'admin', '--password-stdin', cfg], { input: 'short\n' })
    expect(weak.code).not.toBe(0)

    const tok = await box.run(['admin', 'token', 'ops', '--ttl', '3600', cfg])
    expect(tok.code, tok.stderr).toBe(0)
    const token = tok.stdout.trim()
    expect(token).toMatch(/^gha_[A-Za-z0-9_-]{43}$/)
    expect(tok.stderr).toMatch(/expires \d{4}-/)

    const me = await api('/admin/v1/me', token)
    expect(me).toEqual({ status: 200, json: expect.objectContaining({ name: 'ops', role: 'admin' }) })
    expect((await api('/admin/v1/users', token)).status).toBe(200)
    expect((await api('/admin/v1/users', `${token.slice(0, -1)}${token.endsWith('A') ? 'B' : 'A'}`)).status).toBe(401)

    const list = await box.run(['admin', 'list', cfg])
    expect(list.stdout).toMatch(/^NAME\s+ROLE\s+CREATED\nops\s+admin\s+/)
    const audit = await api('/admin/v1/audit?actor=cli:', token)
    expect(audit.status).toBe(200)
    const actions = (await api('/admin/v1/audit?action=admin.create', token)).json.items as { actor: string }[]
    expect(actions[0]!.actor).toMatch(/^cli:/)

    expect((await box.run(['admin', 'token', 'nobody', cfg])).code).toBe(2)
    expect((await box.run(['admin', 'remove', 'nobody', cfg])).code).toBe(1)
  })

  it('`keys rotate --prune` while serving: the enrolled device keeps working, the old key is gone', async () => {
    const enroll = await box.run(['device', 'enroll', cfg, '--user', 'demo', '--password-stdin'], {
      input: `${(JSON.parse(readFileSync(box.path('data', 'demo-user.json'), 'utf8')) as { password: string }).password}\n`,
    })
    expect(enroll.code, enroll.stderr).toBe(0)
    expect((await box.run(['device', 'request', 'GET', '/demo/hello', cfg])).code).toBe(0)
    const before = JSON.parse(readFileSync(box.path('data', 'master.key'), 'utf8')) as { current: string; keys: { id: string }[] }

    const rotate = await box.run(['keys', 'rotate', '--prune', '--wait', '2', cfg])
    expect(rotate.code, rotate.stderr).toBe(0)
    expect(rotate.stdout).toMatch(/added master key (k[0-9a-f]+) \(now current/)
    expect(rotate.stdout).toMatch(/re-sealed [1-9]\d* stored secret/)
    expect(rotate.stdout).toContain(`removed unused key(s): ${before.current}`)
    const after = JSON.parse(readFileSync(box.path('data', 'master.key'), 'utf8')) as { current: string; keys: { id: string }[] }
    expect(after.keys.map((k) => k.id)).toEqual([after.current])
    expect(after.current).not.toBe(before.current)
    expect(statSync(box.path('data', 'master.key')).mode & 0o777).toBe(0o600)

    // The running server reloaded the file and still serves the enrollment made before.
    const get = await box.run(['device', 'request', 'GET', '/demo/hello', cfg])
    expect(get.code, get.stderr).toBe(0)
    expect(server.alive).toBe(true)
    expect(server.stdout).toContain('master_key_reloaded')
  })

  it('log.file is written, mode 0600', () => {
    const file = box.path('logs', 'security.log')
    expect(statSync(file).mode & 0o777).toBe(0o600)
    expect(readFileSync(file, 'utf8')).toContain('gatehouse ready')
  })
})
