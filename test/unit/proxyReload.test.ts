/**
 * The reload's parts one by one: certificate checks with option paths (certCheck.ts), which
 * options need a restart and one reload at a time with its metrics (reload.ts), and a request
 * matched before a reload forwarded through the new route generation (routing.ts).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { Writable } from 'node:stream'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildConfig, type GatehouseConfig } from '../../src/config/load.js'
import { ConfigError, NotFoundError } from '../../src/errors.js'
import { createLogger } from '../../src/observability/logger.js'
import { issuePki, type IssuedPki } from '../../src/pki/issue.js'
import { checkListenerTls, checkPair } from '../../src/proxy/certCheck.js'
import { ConfigReloader, reloadableFromConfig, restartNeeded } from '../../src/proxy/reload.js'
import { Routing } from '../../src/proxy/routing.js'

describe('certCheck', () => {
  let dir: string
  let a: IssuedPki
  let b: IssuedPki
  const file = (name: string, text: string) => {
    const f = path.join(dir, name)
    writeFileSync(f, text)
    return f
  }
  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'gh-certcheck-'))
    ;[a, b] = await Promise.all([issuePki(), issuePki()])
  })
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it('accepts a matching pair valid now and summarises it', () => {
    const tls = { certFile: file('a.crt', a.server.cert), keyFile: file('a.key', a.server.key), sni: [{ serverName: 'b.test', certFile: file('b.crt', b.server.cert), keyFile: file('b.key', b.server.key) }] }
    const s = checkListenerTls(tls)
    expect(s.map((c) => [c.at, c.serverName])).toEqual([['proxy.tls', undefined], ['proxy.tls.sni[0]', 'b.test']])
    expect(s[0]!.fingerprint256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/)
  })

  it('names the option of each kind of bad file', () => {
    const cert = file('a.crt', a.server.cert), key = file('a.key', a.server.key)
    const bad = (certFile: string, keyFile: string) => {
      try {
        checkPair({ certFile, keyFile }, 'proxy.tls')
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError)
        return (err as Error).message
      }
      return 'no error'
    }
    expect(bad(path.join(dir, 'nope.crt'), key)).toBe(`proxy.tls.cert cannot be read: ENOENT (${path.join(dir, 'nope.crt')})`)
    expect(bad(cert, path.join(dir, 'nope.key'))).toMatch(/^proxy\.tls\.key cannot be read: ENOENT/)
    expect(bad(file('junk.crt', 'junk'), key)).toMatch(/^proxy\.tls\.cert is not a PEM certificate/)
    expect(bad(cert, file('junk.key', 'junk'))).toMatch(/^proxy\.tls\.key is not a PEM private key/)
    expect(bad(cert, file('b.key', b.server.key))).toBe('proxy.tls.key does not match proxy.tls.cert')
    // The CA's own pair is a matching pair too: checked like any other.
    expect(bad(file('ca.crt', a.ca.cert), file('ca.key', a.ca.key))).toBe('no error')
  })

  it('refuses an expired or not yet valid certificate', () => {
    const tls = { certFile: file('a.crt', a.server.cert), keyFile: file('a.key', a.server.key) }
    expect(() => checkPair(tls, 'proxy.tls', Date.now() + 400 * 86_400_000)).toThrow(/^proxy\.tls\.cert expired on /)
    expect(() => checkPair(tls, 'proxy.tls', Date.now() - 86_400_000)).toThrow(/^proxy\.tls\.cert is not valid before /)
  })

  it('refuses an SNI name given twice', () => {
    const pair = { certFile: file('a.crt', a.server.cert), keyFile: file('a.key', a.server.key) }
    expect(() => checkListenerTls({ ...pair, sni: [{ serverName: 'x.test', ...pair }, { serverName: 'x.test', ...pair }] }))
      .toThrow('proxy.tls.sni[1].serverName duplicates an earlier name ("x.test")')
  })
})

describe('reload: what applies, what needs a restart', () => {
  it('lists the changed options that a reload does not apply', () => {
    const before = buildConfig({})
    const after = buildConfig({ log: { level: 'debug' }, proxy: { workers: 4, limits: { maxHeaderBytes: 4096 }, sessionCache: { ttlSeconds: 5 }, accessLog: false } })
    expect(restartNeeded(before, after)).toEqual(['proxy.sessionCache', 'proxy.workers', 'log'])
    expect(restartNeeded(before, buildConfig({}))).toEqual([])
  })

  it('takes the reloadable options from the config, SNI paths resolved', () => {
    const c = buildConfig({ proxy: { tls: { sni: [{ serverName: 'a.test', cert: 'a.crt', key: '/etc/a.key' }] }, drainSeconds: 3 } })
    const r = reloadableFromConfig(c)
    expect(r.tls.sni).toEqual([{ serverName: 'a.test', certFile: path.resolve('a.crt'), keyFile: '/etc/a.key' }])
    expect([r.drainSeconds, r.accessLog, r.limits.maxHeaderBytes]).toEqual([3, true, 8192])
  })
})

describe('ConfigReloader', () => {
  const quietLog = () => {
    const lines: string[] = []
    return { lines, log: createLogger({ level: 'info', destination: new Writable({ write(c: Buffer, _e, cb) { lines.push(c.toString()); cb() } }) }) }
  }
  const value = async (r: Registry, name: string, labels: Record<string, string> = {}) =>
    (await r.getSingleMetric(name)!.get()).values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((s, v) => s + v.value, 0)

  it('counts successes and failures; a failure keeps the configuration in use', async () => {
    const registry = new Registry()
    const { lines, log } = quietLog()
    const initial = buildConfig({})
    let next: () => GatehouseConfig = () => buildConfig({ proxy: { drainSeconds: 9 } })
    const applied: GatehouseConfig[] = []
    const r = new ConfigReloader({ target: { reload: (c) => { applied.push(c); return Promise.resolve([]) } }, registry, log, initial, load: () => next() })
    expect(await r.reload()).toBe(true)
    expect(r.current.proxy.drainSeconds).toBe(9)
    next = () => buildConfig({ proxy: { drainSeconds: -1 } })
    expect(await r.reload()).toBe(false)
    expect(r.current.proxy.drainSeconds).toBe(9)
    expect(applied.length).toBe(1)
    expect(await value(registry, 'gatehouse_proxy_config_reloads_total', { result: 'success' })).toBe(1)
    expect(await value(registry, 'gatehouse_proxy_config_reloads_total', { result: 'failure' })).toBe(1)
    expect(lines.join('')).toContain('proxy.drainSeconds must be >= 0, got -1')
  })

  it('runs one reload at a time: a signal during a reload runs one more afterwards', async () => {
    let running = 0, most = 0, calls = 0
    const target = {
      reload: async () => {
        calls++
        most = Math.max(most, ++running)
        await new Promise((res) => setTimeout(res, 20))
        running--
        return []
      },
    }
    const r = new ConfigReloader({ target, registry: new Registry(), log: quietLog().log, initial: buildConfig({}), load: () => buildConfig({}) })
    const results = await Promise.all([r.reload(), r.reload(), r.reload()])
    expect(results).toEqual([true, true, true])
    expect([calls, most]).toEqual([2, 1])
  })
})

describe('Routing: a request matched before a reload', () => {
  it('goes through the new generation\'s route of the same prefix, or gets 404 if it was removed', async () => {
    const spec = (prefix: string) => ({ prefix, upstream: 'http://127.0.0.1:9', stripPrefix: false, timeoutSeconds: 1 })
    const routing = new Routing([spec('/a/'), spec('/b/')], { connections: 1, maxResponseBytes: 1024 })
    const oldA = routing.match('/a/x')!
    const oldB = routing.match('/b/x')!
    routing.prepare([spec('/a/')], { connections: 1, maxResponseBytes: 1024 }).commit(0)
    expect(routing.match('/b/x')).toBeUndefined()
    expect(routing.match('/a/x')).not.toBe(oldA)
    await expect(routing.forward(oldB, { method: 'GET', path: '/x', headers: {}, body: null } as never)).rejects.toBeInstanceOf(NotFoundError)
    // Port 9 (discard) is closed on loopback: the new generation's pool tried it and failed.
    await expect(routing.forward(oldA, { method: 'GET', path: '/x', headers: {}, body: null } as never)).rejects.toMatchObject({ code: expect.stringMatching(/^GH_ERR_UPSTREAM/) as unknown })
    await routing.close(0)
  })

  it('a generation that cannot be built changes nothing', () => {
    const routing = new Routing([{ prefix: '/a/', upstream: 'http://127.0.0.1:9', stripPrefix: false, timeoutSeconds: 1 }], { connections: 1, maxResponseBytes: 1024 })
    expect(() => routing.prepare([{ prefix: '/a/', upstream: 'http://127.0.0.1:9', stripPrefix: false, timeoutSeconds: 1, upstreamCa: '/nonexistent/ca.pem' }], { connections: 1, maxResponseBytes: 1024 }))
      .toThrow('proxy.routes[0].upstreamCa cannot be read: ENOENT (/nonexistent/ca.pem)')
    expect(routing.match('/a/x')?.prefix).toBe('/a/')
    return routing.close(0)
  })
})
