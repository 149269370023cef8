/**
 * Configuration validation, one test per option in the style of piscina's
 * `test/option-validation.ts`: a bad value gives a ConfigError whose message names the exact
 * option path. A coverage test makes sure every option of the schema has a case here.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { configOptions } from '../../src/cli/cmd/config.js'
import { buildConfig, loadConfig, loadConfigFile } from '../../src/config/load.js'
import { configSchema } from '../../src/config/schema.js'
import { ConfigError } from '../../src/errors.js'

/** `set('a.b[1].c', v)` → `{ a: { b: [{...route}, { c: v }] } }`; array slots before the index get a valid route. */
function set(option: string, value: unknown): Record<string, unknown> {
  const root: Record<string, unknown> = {}
  let node: Record<string, unknown> = root
  const parts = option.split('.')
  parts.forEach((part, i) => {
    const last = i === parts.length - 1
    const m = /^(\w+)\[(\d+)\]$/.exec(part)
    if (m) {
      const index = Number(m[2])
      const list: Record<string, unknown>[] = Array.from({ length: index }, (_, k) => ({ prefix: `/r${k}/`, upstream: 'http://127.0.0.1:1' }))
      const item: Record<string, unknown> = { prefix: `/r${index}/`, upstream: 'http://127.0.0.1:1' }
      list.push(item)
      node[m[1]!] = list
      node = item
    } else if (last) {
      node[part] = value
    } else {
      const next: Record<string, unknown> = {}
      node[part] = next
      node = next
    }
  })
  return root
}

function configError(raw: unknown): InstanceType<typeof ConfigError> {
  try {
    buildConfig(raw)
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError)
    return err as InstanceType<typeof ConfigError>
  }
  throw new Error(`expected a ConfigError for ${JSON.stringify(raw)}`)
}

function expectInvalid(option: string, value: unknown, message: string): void {
  const err = configError(set(option, value))
  expect(err.code).toBe('GH_ERR_CONFIG')
  expect(err.message).toBe(message)
}

// [option as documented (`proxy.routes[].upstream`), where to put the bad value, bad value, exact message]
type Case = [option: string, at: string, value: unknown, message: string]

const listener = (p: string): Case[] => [
  [p, p, 8443, `${p} must be an object, got number 8443`],
  [`${p}.host`, `${p}.host`, 'bad host!', `${p}.host must be an IP address or host name`],
  [`${p}.port`, `${p}.port`, 70000, `${p}.port must be <= 65535, got 70000`],
]

const cases: Case[] = [
  ['dataDir', 'dataDir', 5, 'dataDir must be a string, got number 5'],
  ['certsDir', 'certsDir', '', 'certsDir must not be empty'],
  ['log', 'log', 'info', 'log must be an object, got string "info"'],
  ['log.level', 'log.level', 'verbose', 'log.level must be one of trace, debug, info, warn, error, fatal, silent, got string "verbose"'],
  ['security', 'security', [], 'security must be an object, got an array'],
  ...listener('security.listen'),
  ...listener('security.proxyApi'),
  ...listener('security.admin'),
  ['security.tls', 'security.tls', 'certs', 'security.tls must be an object, got string "certs"'],
  ['security.tls.cert', 'security.tls.cert', 1, 'security.tls.cert must be a non-empty string, got number 1'],
  ['security.tls.key', 'security.tls.key', '', 'security.tls.key must be a non-empty string, got string ""'],
  ['security.tls.ca', 'security.tls.ca', true, 'security.tls.ca must be a non-empty string, got boolean true'],
  ['security.databasePath', 'security.databasePath', {}, 'security.databasePath must be a non-empty string, got an object'],
  ['security.masterKeyFile', 'security.masterKeyFile', 0, 'security.masterKeyFile must be a non-empty string, got number 0'],
  ['security.usersFile', 'security.usersFile', [], 'security.usersFile must be a non-empty string, got an array'],
  ['security.proxyUrl', 'security.proxyUrl', 'http://proxy.example.com', 'security.proxyUrl must be an https URL'],
  ['security.sessions', 'security.sessions', null, 'security.sessions must be an object, got null'],
  ['security.sessions.maxLifetimeSeconds', 'security.sessions.maxLifetimeSeconds', 59, 'security.sessions.maxLifetimeSeconds must be >= 60, got 59'],
  ['security.sessions.idleTimeoutSeconds', 'security.sessions.idleTimeoutSeconds', 29, 'security.sessions.idleTimeoutSeconds must be >= 30, got 29'],
  ['security.sessions.clockSkewSeconds', 'security.sessions.clockSkewSeconds', 3601, 'security.sessions.clockSkewSeconds must be <= 3600, got 3601'],
  ['security.maxBodyBytes', 'security.maxBodyBytes', 1.5, 'security.maxBodyBytes must be an integer, got number 1.5'],
  ['proxy', 'proxy', 'yes', 'proxy must be an object, got string "yes"'],
  ...listener('proxy.listen'),
  ...listener('proxy.admin'),
  ['proxy.tls', 'proxy.tls', 1, 'proxy.tls must be an object, got number 1'],
  ['proxy.tls.cert', 'proxy.tls.cert', '', 'proxy.tls.cert must be a non-empty string, got string ""'],
  ['proxy.tls.key', 'proxy.tls.key', 2, 'proxy.tls.key must be a non-empty string, got number 2'],
  ['proxy.securityServers', 'proxy.securityServers', [], 'proxy.securityServers must have at least 1 item(s)'],
  ['proxy.controlPlaneTls', 'proxy.controlPlaneTls', [], 'proxy.controlPlaneTls must be an object, got an array'],
  ['proxy.controlPlaneTls.cert', 'proxy.controlPlaneTls.cert', 1, 'proxy.controlPlaneTls.cert must be a non-empty string, got number 1'],
  ['proxy.controlPlaneTls.key', 'proxy.controlPlaneTls.key', false, 'proxy.controlPlaneTls.key must be a non-empty string, got boolean false'],
  ['proxy.controlPlaneTls.ca', 'proxy.controlPlaneTls.ca', '', 'proxy.controlPlaneTls.ca must be a non-empty string, got string ""'],
  ['proxy.controlPlaneTimeoutMs', 'proxy.controlPlaneTimeoutMs', 49, 'proxy.controlPlaneTimeoutMs must be >= 50, got 49'],
  ['proxy.sessionCache', 'proxy.sessionCache', 100, 'proxy.sessionCache must be an object, got number 100'],
  ['proxy.sessionCache.maxEntries', 'proxy.sessionCache.maxEntries', 0, 'proxy.sessionCache.maxEntries must be >= 1, got 0'],
  ['proxy.sessionCache.ttlSeconds', 'proxy.sessionCache.ttlSeconds', '60', 'proxy.sessionCache.ttlSeconds must be an integer, got string "60"'],
  ['proxy.replay', 'proxy.replay', true, 'proxy.replay must be an object, got boolean true'],
  ['proxy.replay.windowSize', 'proxy.replay.windowSize', 31, 'proxy.replay.windowSize must be >= 32, got 31'],
  ['proxy.replay.maxClockSkewSeconds', 'proxy.replay.maxClockSkewSeconds', 3601, 'proxy.replay.maxClockSkewSeconds must be <= 3600, got 3601'],
  ['proxy.limits', 'proxy.limits', 'none', 'proxy.limits must be an object, got string "none"'],
  ['proxy.limits.maxBodyBytes', 'proxy.limits.maxBodyBytes', 1023, 'proxy.limits.maxBodyBytes must be >= 1024, got 1023'],
  ['proxy.limits.maxResponseBytes', 'proxy.limits.maxResponseBytes', 1024 ** 3 + 1, `proxy.limits.maxResponseBytes must be <= ${1024 ** 3}, got ${1024 ** 3 + 1}`],
  ['proxy.upstreamConnections', 'proxy.upstreamConnections', 4097, 'proxy.upstreamConnections must be <= 4096, got 4097'],
  ['proxy.routes', 'proxy.routes', { prefix: '/a/' }, 'proxy.routes must be an array, got an object'],
  ['proxy.routes[]', 'proxy.routes', ['/a/'], 'proxy.routes[0] must be an object, got string "/a/"'],
  ['proxy.routes[].prefix', 'proxy.routes[1].prefix', 'mail', 'proxy.routes[1].prefix must start and end with "/" and contain only URL path characters'],
  ['proxy.routes[].upstream', 'proxy.routes[1].upstream', 'ftp://files.example.com', 'proxy.routes[1].upstream must be an http or https URL'],
  ['proxy.routes[].stripPrefix', 'proxy.routes[0].stripPrefix', 'yes', 'proxy.routes[0].stripPrefix must be true or false, got string "yes"'],
  ['proxy.routes[].timeoutSeconds', 'proxy.routes[2].timeoutSeconds', 0, 'proxy.routes[2].timeoutSeconds must be >= 1, got 0'],
  ['proxy.routes[].upstreamCa', 'proxy.routes[0].upstreamCa', '', 'proxy.routes[0].upstreamCa must be a non-empty string, got string ""'],
  ['demo', 'demo', false, 'demo must be an object, got boolean false'],
  ...listener('demo.upstream'),
  ['demo.user', 'demo.user', ['demo'], 'demo.user must be a string, got an array'],
]

describe('option validation: a bad value names the option path', () => {
  it.each(cases)('%s', (_option, at, value, message) => {
    expectInvalid(at, value, message)
  })

  it('has a case for every option of the schema', () => {
    const tested = new Set(cases.map(([option]) => option))
    const untested = configOptions().map((o) => o.path).filter((p) => !tested.has(p))
    expect(untested, 'add a case for each new option').toEqual([])
  })
})

describe('more checks on single options', () => {
  it('ports must be integers from 0 to 65535', () => {
    expectInvalid('proxy.listen.port', -1, 'proxy.listen.port must be >= 0, got -1')
    expectInvalid('proxy.listen.port', 8443.5, 'proxy.listen.port must be an integer, got number 8443.5')
    expectInvalid('proxy.listen.port', '9443', 'proxy.listen.port must be an integer, got string "9443"')
    expect(buildConfig(set('proxy.listen.port', 0)).proxy.listen.port).toBe(0)
    expect(buildConfig(set('proxy.listen.port', 65535)).proxy.listen.port).toBe(65535)
  })

  it('URLs: scheme, syntax and no credentials', () => {
    expectInvalid('proxy.routes[0].upstream', 'not a url', 'proxy.routes[0].upstream must be an http or https URL')
    expectInvalid('proxy.routes[0].upstream', 42, 'proxy.routes[0].upstream must be an http or https URL, got number 42')
    expectInvalid('proxy.routes[0].upstream', 'https://user:pw@mail.example.com', 'proxy.routes[0].upstream must not carry credentials')
    expectInvalid('security.proxyUrl', 'https://', 'security.proxyUrl must be an https URL')
    expect(configError(set('proxy.securityServers', ['https://a.example.com:8444', 'http://b.example.com:8444'])).message)
      .toBe('proxy.securityServers[1] must be an https URL')
    expect(buildConfig(set('proxy.routes[0].upstream', 'https://mail.example.com/')).proxy.routes[0]!.upstream).toBe('https://mail.example.com')
  })

  it('securityServers holds at most 16 URLs', () => {
    const many = Array.from({ length: 17 }, (_, i) => `https://s${i}.example.com:8444`)
    expectInvalid('proxy.securityServers', many, 'proxy.securityServers must have at most 16 items')
  })

  it('route prefixes start and end with "/"', () => {
    expectInvalid('proxy.routes[0].prefix', '/mail', 'proxy.routes[0].prefix must start and end with "/" and contain only URL path characters')
    expectInvalid('proxy.routes[0].prefix', '/a b/', 'proxy.routes[0].prefix must start and end with "/" and contain only URL path characters')
    expect(buildConfig(set('proxy.routes[0].prefix', '/')).proxy.routes[0]!.prefix).toBe('/')
  })

  it('a route needs a prefix and an upstream', () => {
    expect(configError({ proxy: { routes: [{ upstream: 'http://127.0.0.1:1' }] } }).message).toBe('proxy.routes[0].prefix is required')
    expect(configError({ proxy: { routes: [{ prefix: '/a/' }] } }).message).toBe('proxy.routes[0].upstream is required')
  })

  it('optional paths accept null as absent', () => {
    const c = buildConfig({ security: { usersFile: null } }, undefined, '/srv/gh')
    expect(c.security.usersFile).toBeUndefined()
    expect(c.files.usersFile).toBe(path.resolve('/srv/gh', 'data', 'users.json'))
  })
})

describe('unknown and renamed options', () => {
  it('refuses an unknown top-level option and lists the known ones', () => {
    expect(configError({ prxy: {} }).message).toBe('prxy is not a known option (known: dataDir, certsDir, log, security, proxy, demo)')
  })

  it('refuses an unknown nested option naming its path', () => {
    expect(configError({ proxy: { listen: { hots: '0.0.0.0' } } }).message).toBe('proxy.listen.hots is not a known option (known: host, port)')
    expect(configError({ security: { sessions: { idleTimeout: 60 } } }).message)
      .toBe('security.sessions.idleTimeout is not a known option (known: maxLifetimeSeconds, idleTimeoutSeconds, clockSkewSeconds)')
  })

  it('refuses an unknown option inside an array item', () => {
    expect(configError({ proxy: { routes: [{ prefix: '/a/', upstream: 'http://127.0.0.1:1', strip: true }] } }).message)
      .toBe('proxy.routes[0].strip is not a known option (known: prefix, upstream, stripPrefix, timeoutSeconds, upstreamCa)')
  })

  it('names the new place of a renamed option', () => {
    expect(configError({ security: { port: 8443 } }).message).toBe('security.port was renamed to security.listen.port')
  })
})

describe('cross-option checks', () => {
  it('refuses duplicate route prefixes', () => {
    const routes = [
      { prefix: '/mail/', upstream: 'http://127.0.0.1:1' },
      { prefix: '/wiki/', upstream: 'http://127.0.0.1:2' },
      { prefix: '/mail/', upstream: 'http://127.0.0.1:3' },
    ]
    expect(configError({ proxy: { routes } }).message).toBe('proxy.routes[2].prefix duplicates an earlier route ("/mail/")')
  })
})

describe('defaults', () => {
  const cwd = path.resolve('/srv/gatehouse')

  it('buildConfig({}) fills in the documented defaults', () => {
    const c = buildConfig({}, undefined, cwd)
    expect(c.source).toBeUndefined()
    expect(c.log.level).toBe('info')
    expect(c.security.listen).toEqual({ host: '127.0.0.1', port: 8443 })
    expect(c.security.proxyApi).toEqual({ host: '127.0.0.1', port: 8444 })
    expect(c.security.admin).toEqual({ host: '127.0.0.1', port: 8445 })
    expect(c.security.proxyUrl).toBe('https://localhost:9443')
    expect(c.security.sessions).toEqual({ maxLifetimeSeconds: 28800, idleTimeoutSeconds: 1800, clockSkewSeconds: 300 })
    expect(c.security.maxBodyBytes).toBe(16384)
    expect(c.proxy.listen).toEqual({ host: '127.0.0.1', port: 9443 })
    expect(c.proxy.admin).toEqual({ host: '127.0.0.1', port: 9090 })
    expect(c.proxy.securityServers).toEqual(['https://localhost:8444'])
    expect(c.proxy.controlPlaneTimeoutMs).toBe(2000)
    expect(c.proxy.sessionCache).toEqual({ maxEntries: 100_000, ttlSeconds: 60 })
    expect(c.proxy.replay).toEqual({ windowSize: 1024, maxClockSkewSeconds: 120 })
    expect(c.proxy.limits).toEqual({ maxBodyBytes: 16 * 1024 * 1024, maxResponseBytes: 64 * 1024 * 1024 })
    expect(c.proxy.upstreamConnections).toBe(64)
    expect(c.proxy.routes).toEqual([{ prefix: '/demo/', upstream: 'http://127.0.0.1:9080', stripPrefix: true, timeoutSeconds: 30, upstreamCa: undefined }])
    expect(c.demo).toEqual({ upstream: { host: '127.0.0.1', port: 9080 }, user: 'demo' })
  })

  it('every default listed by `config docs` is the value buildConfig({}) gives', () => {
    const c = buildConfig({}, undefined, cwd) as unknown as Record<string, unknown>
    const withDefault = configOptions().filter((o) => o.default !== undefined && o.default !== 'required' && !o.path.includes('[]'))
    expect(withDefault.length).toBeGreaterThan(30)
    for (const o of withDefault) {
      if (o.path === 'dataDir' || o.path === 'certsDir') continue // resolved, checked below
      const value = o.path.split('.').reduce<unknown>((v, k) => (v as Record<string, unknown>)[k], c)
      expect(JSON.stringify(value), o.path).toBe(o.default)
    }
  })

  it('resolves directories and file paths to absolute paths against the working directory', () => {
    const c = buildConfig({}, undefined, cwd)
    expect(c.dataDir).toBe(path.join(cwd, 'data'))
    expect(c.certsDir).toBe(path.join(cwd, 'certs'))
    expect(c.files).toEqual({
      databasePath: path.join(cwd, 'data', 'gatehouse.db'),
      masterKeyFile: path.join(cwd, 'data', 'master.key'),
      usersFile: path.join(cwd, 'data', 'users.json'),
      serverCert: path.join(cwd, 'certs', 'server.crt'),
      serverKey: path.join(cwd, 'certs', 'server.key'),
      caCert: path.join(cwd, 'certs', 'ca.crt'),
      proxyCert: path.join(cwd, 'certs', 'server.crt'),
      proxyKey: path.join(cwd, 'certs', 'server.key'),
      proxyClientCert: path.join(cwd, 'certs', 'proxy-client.crt'),
      proxyClientKey: path.join(cwd, 'certs', 'proxy-client.key'),
      controlPlaneCa: path.join(cwd, 'certs', 'ca.crt'),
    })
    for (const p of Object.values(c.files)) expect(path.isAbsolute(p)).toBe(true)
  })

  it('explicit paths win, relative ones resolved against the working directory', () => {
    const c = buildConfig({ dataDir: 'var', security: { usersFile: 'etc/users.json', tls: { cert: '/abs/server.pem' } } }, undefined, cwd)
    expect(c.files.usersFile).toBe(path.join(cwd, 'etc', 'users.json'))
    expect(c.files.databasePath).toBe(path.join(cwd, 'var', 'gatehouse.db'))
    expect(c.files.serverCert).toBe(path.resolve('/abs/server.pem'))
  })

  it('loadConfig() without a file or GATEHOUSE_CONFIG gives the embedded defaults', () => {
    const saved = process.env.GATEHOUSE_CONFIG
    delete process.env.GATEHOUSE_CONFIG
    try {
      const c = loadConfig()
      expect(c.source).toBeUndefined()
      expect(c.dataDir).toBe(path.resolve('data'))
    } finally {
      if (saved !== undefined) process.env.GATEHOUSE_CONFIG = saved
    }
  })
})

describe('the config object is deeply frozen', () => {
  it('refuses changes at every level', () => {
    const c = buildConfig({ proxy: { routes: [{ prefix: '/a/', upstream: 'http://127.0.0.1:1' }] } })
    for (const v of [c, c.files, c.log, c.security, c.security.listen, c.security.sessions, c.proxy, c.proxy.routes, c.proxy.routes[0], c.proxy.securityServers, c.demo.upstream]) {
      expect(Object.isFrozen(v)).toBe(true)
    }
    const mutable = c as unknown as { proxy: { listen: { port: number }; routes: unknown[] }; dataDir: string }
    expect(() => { mutable.proxy.listen.port = 1 }).toThrow(TypeError)
    expect(() => { mutable.dataDir = '/tmp' }).toThrow(TypeError)
    expect(() => mutable.proxy.routes.push({})).toThrow(TypeError)
    expect(c.proxy.listen.port).toBe(9443)
  })

  it('does not freeze or share the defaults between configs', () => {
    const a = buildConfig({})
    const b = buildConfig({})
    expect(a.proxy.routes).not.toBe(b.proxy.routes)
    expect(Object.isFrozen(configSchema)).toBe(false)
  })
})

describe('config files', () => {
  let dir: string
  beforeAll(() => { dir = mkdtempSync(path.join(tmpdir(), 'gh-config-')) })
  afterAll(() => { rmSync(dir, { recursive: true, force: true }) })

  const write = (name: string, text: string) => {
    const file = path.join(dir, name)
    writeFileSync(file, text)
    return file
  }

  it('loads YAML', () => {
    const file = write('ok.yaml', 'proxy:\n  listen:\n    port: 10443\n  routes:\n    - prefix: /mail/\n      upstream: https://mail.example.com\n')
    const c = loadConfigFile(file)
    expect(c.source).toBe(file)
    expect(c.proxy.listen.port).toBe(10443)
    expect(c.proxy.routes).toEqual([{ prefix: '/mail/', upstream: 'https://mail.example.com', stripPrefix: false, timeoutSeconds: 30, upstreamCa: undefined }])
  })

  it('loads .yml and an empty YAML file (all defaults)', () => {
    expect(loadConfigFile(write('empty.yml', '')).proxy.listen.port).toBe(9443)
    expect(loadConfigFile(write('comments.yaml', '# nothing set\n')).security.listen.port).toBe(8443)
  })

  it('loads JSON', () => {
    const file = write('ok.json', JSON.stringify({ security: { listen: { host: '0.0.0.0', port: 443 } } }))
    const c = loadConfigFile(file)
    expect(c.source).toBe(file)
    expect(c.security.listen).toEqual({ host: '0.0.0.0', port: 443 })
  })

  it('loadConfig reads --config, else GATEHOUSE_CONFIG', () => {
    const a = write('a.yaml', 'log:\n  level: debug\n')
    const b = write('b.yaml', 'log:\n  level: warn\n')
    const saved = process.env.GATEHOUSE_CONFIG
    process.env.GATEHOUSE_CONFIG = b
    try {
      expect(loadConfig(a).log.level).toBe('debug')
      expect(loadConfig().log.level).toBe('warn')
      expect(loadConfig().source).toBe(b)
    } finally {
      if (saved === undefined) delete process.env.GATEHOUSE_CONFIG
      else process.env.GATEHOUSE_CONFIG = saved
    }
  })

  it('an invalid option in a file names the file and the option path', () => {
    const file = write('bad.yaml', 'proxy:\n  listen:\n    port: 70000\n')
    expect(() => loadConfigFile(file)).toThrow(ConfigError)
    expect(() => loadConfigFile(file)).toThrow(`${file}: proxy.listen.port must be <= 65535, got 70000`)
  })

  it('malformed YAML gives a ConfigError naming the file', () => {
    const file = write('broken.yaml', 'proxy:\n  listen: [unclosed\n')
    expect(() => loadConfigFile(file)).toThrow(ConfigError)
    expect(() => loadConfigFile(file)).toThrow(`config file ${file} is not valid YAML`)
  })

  it('malformed JSON gives a ConfigError naming the file', () => {
    const file = write('broken.json', '{ "proxy": { "listen": ')
    expect(() => loadConfigFile(file)).toThrow(ConfigError)
    expect(() => loadConfigFile(file)).toThrow(`config file ${file} is not valid JSON`)
  })

  it('a file whose top level is not a mapping is refused', () => {
    const file = write('list.yaml', '- a\n- b\n')
    expect(() => loadConfigFile(file)).toThrow(`${file}: the configuration must be an object, got an array`)
  })

  it('a missing file gives a ConfigError with the path and ENOENT', () => {
    const file = path.join(dir, 'nope', 'missing.yaml')
    let err: unknown
    try {
      loadConfigFile(file)
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as Error).message).toContain(file)
    expect((err as Error).message).toContain('ENOENT')
  })
})
