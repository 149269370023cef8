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

/** `security.directories` holding the local file and one valid search-then-bind LDAP directory (index 1), changed by `over`. */
const ldapDirs = (over: Record<string, unknown> = {}) => [{ type: 'local' }, {
  type: 'ldap', url: 'ldaps://ldap.example.org', bindDn: 'cn=gatehouse,ou=services,dc=example,dc=org',
  bindPasswordFile: '/etc/gatehouse/ldap-bind.pw', userBase: 'ou=people,dc=example,dc=org', ...over,
}]
const D = 'security.directories'
/** A valid site of `security.sites`. */
const siteB = { name: 'site-b', proxyUrl: 'https://proxy.site-b.example.org', groups: ['site-b'] }

const cases: Case[] = [
  ['dataDir', 'dataDir', 5, 'dataDir must be a string, got number 5'],
  ['certsDir', 'certsDir', '', 'certsDir must not be empty'],
  ['log', 'log', 'info', 'log must be an object, got string "info"'],
  ['log.level', 'log.level', 'verbose', 'log.level must be one of trace, debug, info, warn, error, fatal, silent, got string "verbose"'],
  ['log.file', 'log.file', '', 'log.file must be a non-empty string, got string ""'],
  ['security', 'security', [], 'security must be an object, got an array'],
  ...listener('security.listen'),
  ...listener('security.proxyApi'),
  ...listener('security.admin'),
  ['security.tls', 'security.tls', 'certs', 'security.tls must be an object, got string "certs"'],
  ['security.tls.cert', 'security.tls.cert', 1, 'security.tls.cert must be a non-empty string, got number 1'],
  ['security.tls.key', 'security.tls.key', '', 'security.tls.key must be a non-empty string, got string ""'],
  ['security.tls.ca', 'security.tls.ca', true, 'security.tls.ca must be a non-empty string, got boolean true'],
  ['security.databasePath', 'security.databasePath', {}, 'security.databasePath must be a non-empty string, got an object'],
  ['security.databaseUrl', 'security.databaseUrl', 'mysql://db.example.com/gatehouse', 'security.databaseUrl must start with postgres:// or postgresql://'],
  ['security.databaseUrl (host list)', 'security.databaseUrl', 'postgres://gh:s3cret@db1:5432,,db2/gatehouse', 'security.databaseUrl is not a usable PostgreSQL URL (host 2 of the host list must be host, host:port or [ipv6]:port)'],
  ['security.databaseUrl (target_session_attrs)', 'security.databaseUrl', 'postgres://gh@db1,db2/gatehouse?target_session_attrs=standby', 'security.databaseUrl is not a usable PostgreSQL URL (target_session_attrs=standby is not supported: Gatehouse writes; use read-write or primary)'],
  ['security.databaseConnectTimeoutMs', 'security.databaseConnectTimeoutMs', 50, 'security.databaseConnectTimeoutMs must be >= 100, got 50'],
  ['security.masterKeyFile', 'security.masterKeyFile', 0, 'security.masterKeyFile must be a non-empty string, got number 0'],
  ['security.usersFile', 'security.usersFile', [], 'security.usersFile must be a non-empty string, got an array'],
  [D, D, [], `${D} must have at least 1 item(s)`],
  [`${D}[]`, D, ['local'], `${D}[0] must be an object, got string "local"`],
  [`${D}[].type`, D, [{ type: 'ad' }], `${D}[0].type must be one of local, ldap, got string "ad"`],
  [`${D}[].url`, D, ldapDirs({ url: 'https://ldap.example.org' }), `${D}[1].url must be an ldap or ldaps URL`],
  [`${D}[].startTls`, D, ldapDirs({ startTls: 'yes' }), `${D}[1].startTls must be true or false, got string "yes"`],
  [`${D}[].caFile`, D, ldapDirs({ caFile: '' }), `${D}[1].caFile must be a non-empty string, got string ""`],
  [`${D}[].bindDn`, D, ldapDirs({ bindDn: 5 }), `${D}[1].bindDn must be a non-empty string, got number 5`],
  [`${D}[].bindPasswordFile`, D, ldapDirs({ bindPasswordFile: undefined }), `${D}[1].bindPasswordFile is required for search then bind (or set userDnTemplate for direct bind)`],
  [`${D}[].userBase`, D, ldapDirs({ userBase: [] }), `${D}[1].userBase must be a non-empty string, got an array`],
  [`${D}[].userFilter`, D, ldapDirs({ userFilter: 'uid={{username}}' }), `${D}[1].userFilter must be a filter in parentheses containing {{username}}`],
  [`${D}[].userDnTemplate`, D, [{ type: 'ldap', url: 'ldaps://ldap.example.org', userDnTemplate: 'uid=alice,ou=people,dc=example,dc=org' }], `${D}[0].userDnTemplate must contain {{username}}`],
  [`${D}[].usernameAttribute`, D, ldapDirs({ usernameAttribute: '' }), `${D}[1].usernameAttribute must not be empty`],
  [`${D}[].groupsAttribute`, D, ldapDirs({ groupsAttribute: 1 }), `${D}[1].groupsAttribute must be a non-empty string, got number 1`],
  [`${D}[].groupBase`, D, ldapDirs({ groupBase: false }), `${D}[1].groupBase must be a non-empty string, got boolean false`],
  [`${D}[].groupFilter`, D, ldapDirs({ groupFilter: '(member=uid)' }), `${D}[1].groupFilter must be a filter in parentheses containing {{dn}} or {{username}}`],
  [`${D}[].groupNameAttribute`, D, ldapDirs({ groupNameAttribute: null }), `${D}[1].groupNameAttribute must be a string, got null`],
  [`${D}[].connectTimeoutMs`, D, ldapDirs({ connectTimeoutMs: 99 }), `${D}[1].connectTimeoutMs must be >= 100, got 99`],
  [`${D}[].timeoutMs`, D, ldapDirs({ timeoutMs: 60_001 }), `${D}[1].timeoutMs must be <= 60000, got 60001`],
  ['security.proxyUrl', 'security.proxyUrl', 'http://proxy.example.com', 'security.proxyUrl must be an https URL'],
  ['security.sessions', 'security.sessions', null, 'security.sessions must be an object, got null'],
  ['security.sessions.maxLifetimeSeconds', 'security.sessions.maxLifetimeSeconds', 59, 'security.sessions.maxLifetimeSeconds must be >= 60, got 59'],
  ['security.sessions.idleTimeoutSeconds', 'security.sessions.idleTimeoutSeconds', 29, 'security.sessions.idleTimeoutSeconds must be >= 30, got 29'],
  ['security.sessions.clockSkewSeconds', 'security.sessions.clockSkewSeconds', 3601, 'security.sessions.clockSkewSeconds must be <= 3600, got 3601'],
  ['security.maxBodyBytes', 'security.maxBodyBytes', 1.5, 'security.maxBodyBytes must be an integer, got number 1.5'],
  ['security.access', 'security.access', [], 'security.access must be an object, got an array'],
  ['security.access.adminCidrs', 'security.access.adminCidrs', ['10.0.0.0/33'], 'security.access.adminCidrs[0] has an invalid prefix length in "10.0.0.0/33"'],
  ['security.access.selfServiceCidrs', 'security.access.selfServiceCidrs', ['nope'], 'security.access.selfServiceCidrs[0] must be an IPv4 or IPv6 address or CIDR, got "nope"'],
  ['security.packagesDir', 'security.packagesDir', '', 'security.packagesDir must be a non-empty string, got string ""'],
  ['security.enrollment', 'security.enrollment', 'code', 'security.enrollment must be an object, got string "code"'],
  ['security.enrollment.mode', 'security.enrollment.mode', 'token', 'security.enrollment.mode must be one of password, code, password+code, password-or-code, got string "token"'],
  ['security.sites', 'security.sites', { name: 'b' }, 'security.sites must be an array, got an object'],
  ['security.sites[]', 'security.sites', ['site-b'], 'security.sites[0] must be an object, got string "site-b"'],
  ['security.sites[].name', 'security.sites', [siteB, { ...siteB, name: 'site b' }], 'security.sites[1].name must be 1 to 64 letters, digits, ".", "_" or "-"'],
  ['security.sites[].proxyUrl', 'security.sites', [{ ...siteB, proxyUrl: 'http://b.example.com' }], 'security.sites[0].proxyUrl must be an https URL'],
  ['security.sites[].groups', 'security.sites', [{ ...siteB, groups: [] }], 'security.sites[0].groups must have at least 1 item(s)'],
  ['security.defaultSite', 'security.defaultSite', 'site-c', 'security.defaultSite must name one of security.sites, got "site-c"'],
  ['security.backup', 'security.backup', true, 'security.backup must be an object, got boolean true'],
  ['security.backup.enabled', 'security.backup.enabled', 'yes', 'security.backup.enabled must be true or false, got string "yes"'],
  ['security.backup.intervalSeconds', 'security.backup.intervalSeconds', 9, 'security.backup.intervalSeconds must be >= 10, got 9'],
  ['security.backup.dir', 'security.backup.dir', '', 'security.backup.dir must be a non-empty string, got string ""'],
  ['security.backup.keep', 'security.backup.keep', 0, 'security.backup.keep must be >= 1, got 0'],
  ['security.backup.keyFile', 'security.backup.keyFile', 32, 'security.backup.keyFile must be a non-empty string, got number 32'],
  ['proxy', 'proxy', 'yes', 'proxy must be an object, got string "yes"'],
  ...listener('proxy.listen'),
  ...listener('proxy.admin'),
  ['proxy.tls', 'proxy.tls', 1, 'proxy.tls must be an object, got number 1'],
  ['proxy.tls.cert', 'proxy.tls.cert', '', 'proxy.tls.cert must be a non-empty string, got string ""'],
  ['proxy.tls.key', 'proxy.tls.key', 2, 'proxy.tls.key must be a non-empty string, got number 2'],
  // Proxy limits, SNI, access log, drain (src/proxy/limits.ts, listeners.ts, accessLog.ts).
  ['proxy.tls.sni', 'proxy.tls.sni', { serverName: 'a.example.org' }, 'proxy.tls.sni must be an array, got an object'],
  ['proxy.tls.sni[]', 'proxy.tls.sni', ['mail.example.org'], 'proxy.tls.sni[0] must be an object, got string "mail.example.org"'],
  ['proxy.tls.sni[].serverName', 'proxy.tls.sni', [{ serverName: 'Mail.Example.org', cert: 'm.crt', key: 'm.key' }], 'proxy.tls.sni[0].serverName must be a lower-case DNS name, optionally starting with "*."'],
  ['proxy.tls.sni[].cert', 'proxy.tls.sni', [{ serverName: 'mail.example.org', key: 'm.key' }], 'proxy.tls.sni[0].cert is required'],
  ['proxy.tls.sni[].key', 'proxy.tls.sni', [{ serverName: 'mail.example.org', cert: 'm.crt', key: '' }], 'proxy.tls.sni[0].key must not be empty'],
  ['proxy.limits.maxHeaderBytes', 'proxy.limits.maxHeaderBytes', 1023, 'proxy.limits.maxHeaderBytes must be >= 1024, got 1023'],
  ['proxy.limits.bodyTimeoutSeconds', 'proxy.limits.bodyTimeoutSeconds', 8, 'proxy.limits.bodyTimeoutSeconds must be <= 7, got 8'],
  ['proxy.limits.maxConcurrentRequests', 'proxy.limits.maxConcurrentRequests', 0, 'proxy.limits.maxConcurrentRequests must be >= 1, got 0'],
  ['proxy.accessLog', 'proxy.accessLog', 'on', 'proxy.accessLog must be true or false, got string "on"'],
  ['proxy.drainSeconds', 'proxy.drainSeconds', 3601, 'proxy.drainSeconds must be <= 3600, got 3601'],
  ['proxy.securityServers', 'proxy.securityServers', [], 'proxy.securityServers must have at least 1 item(s)'],
  ['proxy.controlPlaneTls', 'proxy.controlPlaneTls', [], 'proxy.controlPlaneTls must be an object, got an array'],
  ['proxy.controlPlaneTls.cert', 'proxy.controlPlaneTls.cert', 1, 'proxy.controlPlaneTls.cert must be a non-empty string, got number 1'],
  ['proxy.controlPlaneTls.key', 'proxy.controlPlaneTls.key', false, 'proxy.controlPlaneTls.key must be a non-empty string, got boolean false'],
  ['proxy.controlPlaneTls.ca', 'proxy.controlPlaneTls.ca', '', 'proxy.controlPlaneTls.ca must be a non-empty string, got string ""'],
  ['proxy.controlPlaneTimeoutMs', 'proxy.controlPlaneTimeoutMs', 49, 'proxy.controlPlaneTimeoutMs must be >= 50, got 49'],
  ['proxy.sessionCache', 'proxy.sessionCache', 100, 'proxy.sessionCache must be an object, got number 100'],
  ['proxy.sessionCache.maxEntries', 'proxy.sessionCache.maxEntries', 0, 'proxy.sessionCache.maxEntries must be >= 1, got 0'],
  ['proxy.sessionCache.ttlSeconds', 'proxy.sessionCache.ttlSeconds', '60', 'proxy.sessionCache.ttlSeconds must be an integer, got string "60"'],
  ['proxy.revocations', 'proxy.revocations', false, 'proxy.revocations must be an object, got boolean false'],
  ['proxy.revocations.enabled', 'proxy.revocations.enabled', 'yes', 'proxy.revocations.enabled must be true or false, got string "yes"'],
  ['proxy.revocations.heartbeatTimeoutSeconds', 'proxy.revocations.heartbeatTimeoutSeconds', 10, 'proxy.revocations.heartbeatTimeoutSeconds must be >= 11, got 10'],
  ['proxy.replay', 'proxy.replay', true, 'proxy.replay must be an object, got boolean true'],
  ['proxy.replay.windowSize', 'proxy.replay.windowSize', 31, 'proxy.replay.windowSize must be >= 32, got 31'],
  ['proxy.replay.maxClockSkewSeconds', 'proxy.replay.maxClockSkewSeconds', 3601, 'proxy.replay.maxClockSkewSeconds must be <= 3600, got 3601'],
  ['proxy.limits', 'proxy.limits', 'none', 'proxy.limits must be an object, got string "none"'],
  ['proxy.limits.maxBodyBytes', 'proxy.limits.maxBodyBytes', 1023, 'proxy.limits.maxBodyBytes must be >= 1024, got 1023'],
  ['proxy.limits.maxResponseBytes', 'proxy.limits.maxResponseBytes', 1024 ** 4 + 1, `proxy.limits.maxResponseBytes must be <= ${1024 ** 4}, got ${1024 ** 4 + 1}`],
  ['proxy.crypto', 'proxy.crypto', 'pool', 'proxy.crypto must be an object, got string "pool"'],
  ['proxy.crypto.poolThresholdBytes', 'proxy.crypto.poolThresholdBytes', 65537, 'proxy.crypto.poolThresholdBytes must be <= 65536, got 65537'],
  ['proxy.crypto.poolThreads', 'proxy.crypto.poolThreads', 0, 'proxy.crypto.poolThreads must be >= 1, got 0'],
  ['proxy.upstreamConnections', 'proxy.upstreamConnections', 4097, 'proxy.upstreamConnections must be <= 4096, got 4097'],
  ['proxy.workers', 'proxy.workers', -1, 'proxy.workers must be >= 0, got -1'],
  ['proxy.controlPlaneHealthCheckSeconds', 'proxy.controlPlaneHealthCheckSeconds', 3601, 'proxy.controlPlaneHealthCheckSeconds must be <= 3600, got 3601'],
  ['proxy.shutdownDelayMs', 'proxy.shutdownDelayMs', 120_001, 'proxy.shutdownDelayMs must be <= 120000, got 120001'],
  ['proxy.sessionCache.outageGraceSeconds', 'proxy.sessionCache.outageGraceSeconds', 86401, 'proxy.sessionCache.outageGraceSeconds must be <= 86400, got 86401'],
  ['proxy.routes', 'proxy.routes', { prefix: '/a/' }, 'proxy.routes must be an array, got an object'],
  ['proxy.routes[]', 'proxy.routes', ['/a/'], 'proxy.routes[0] must be an object, got string "/a/"'],
  ['proxy.routes[].prefix', 'proxy.routes[1].prefix', 'mail', 'proxy.routes[1].prefix must start and end with "/" and contain only URL path characters'],
  ['proxy.routes[].upstream', 'proxy.routes[1].upstream', 'ftp://files.example.com', 'proxy.routes[1].upstream must be an http or https URL'],
  ['proxy.routes[].stripPrefix', 'proxy.routes[0].stripPrefix', 'yes', 'proxy.routes[0].stripPrefix must be true or false, got string "yes"'],
  ['proxy.routes[].timeoutSeconds', 'proxy.routes[2].timeoutSeconds', 0, 'proxy.routes[2].timeoutSeconds must be >= 1, got 0'],
  ['proxy.routes[].upstreamCa', 'proxy.routes[0].upstreamCa', '', 'proxy.routes[0].upstreamCa must be a non-empty string, got string ""'],
  ['proxy.routes[].upstreams', 'proxy.routes', [{ prefix: '/a/', upstreams: ['http://127.0.0.1:1', 'ftp://files.example.com'] }], 'proxy.routes[0].upstreams[1] must be an http or https URL'],
  ['proxy.routes[].connectTimeoutMs', 'proxy.routes[0].connectTimeoutMs', 9, 'proxy.routes[0].connectTimeoutMs must be >= 10, got 9'],
  ['proxy.routes[].healthCheck', 'proxy.routes[0].healthCheck', '/healthz', 'proxy.routes[0].healthCheck must be an object, got string "/healthz"'],
  ['proxy.routes[].healthCheck.path', 'proxy.routes[0].healthCheck.path', 'healthz', 'proxy.routes[0].healthCheck.path must be a path starting with "/"'],
  ['proxy.routes[].healthCheck.intervalSeconds', 'proxy.routes[1].healthCheck.intervalSeconds', 0, 'proxy.routes[1].healthCheck.intervalSeconds must be >= 1, got 0'],
  ['proxy.routes[].healthCheck.timeoutMs', 'proxy.routes[0].healthCheck.timeoutMs', 60_001, 'proxy.routes[0].healthCheck.timeoutMs must be <= 60000, got 60001'],
  ['proxy.routes[].healthCheck.unhealthyAfter', 'proxy.routes[0].healthCheck.unhealthyAfter', 0, 'proxy.routes[0].healthCheck.unhealthyAfter must be >= 1, got 0'],
  ['proxy.routes[].healthCheck.healthyAfter', 'proxy.routes[0].healthCheck.healthyAfter', 1.5, 'proxy.routes[0].healthCheck.healthyAfter must be an integer, got number 1.5'],
  ['proxy.activeSync', 'proxy.activeSync', 'on', 'proxy.activeSync must be an object, got string "on"'],
  ['proxy.activeSync.enabled', 'proxy.activeSync.enabled', 'yes', 'proxy.activeSync.enabled must be true or false, got string "yes"'],
  ['proxy.activeSync.upstream', 'proxy.activeSync.upstream', 'ftp://exchange.example.com', 'proxy.activeSync.upstream must be an http or https URL'],
  ['proxy.activeSync.upstreamCa', 'proxy.activeSync.upstreamCa', '', 'proxy.activeSync.upstreamCa must be a non-empty string, got string ""'],
  ['proxy.activeSync.path', 'proxy.activeSync.path', '/Microsoft-Server-ActiveSync/', 'proxy.activeSync.path must start with "/", not end with "/", and use only letters, digits and . _ ~ - between slashes'],
  ['proxy.activeSync.maxHoldSeconds', 'proxy.activeSync.maxHoldSeconds', 3601, 'proxy.activeSync.maxHoldSeconds must be <= 3600, got 3601'],
  ['proxy.activeSync.gateCacheSeconds', 'proxy.activeSync.gateCacheSeconds', 0, 'proxy.activeSync.gateCacheSeconds must be >= 1, got 0'],
  ['proxy.activeSync.gateCacheMaxEntries', 'proxy.activeSync.gateCacheMaxEntries', '100', 'proxy.activeSync.gateCacheMaxEntries must be an integer, got string "100"'],
  ['proxy.activeSync.maxBodyBytes', 'proxy.activeSync.maxBodyBytes', 1023, 'proxy.activeSync.maxBodyBytes must be >= 1024, got 1023'],
  ['proxy.activeSync.upstreamConnections', 'proxy.activeSync.upstreamConnections', 0, 'proxy.activeSync.upstreamConnections must be >= 1, got 0'],
  ['proxy.activeSync.upstreamHttp2', 'proxy.activeSync.upstreamHttp2', 'h2', 'proxy.activeSync.upstreamHttp2 must be true or false, got string "h2"'],
  ['proxy.activeSync.upstreamMaxStreams', 'proxy.activeSync.upstreamMaxStreams', 1001, 'proxy.activeSync.upstreamMaxStreams must be <= 1000, got 1001'],
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
    expect(configError({ proxy: { routes: [{ prefix: '/a/' }] } }).message).toBe('proxy.routes[0].upstream is required (or upstreams, a list of origins)')
  })

  it('optional paths accept null as absent', () => {
    const c = buildConfig({ security: { usersFile: null } }, undefined, '/srv/gh')
    expect(c.security.usersFile).toBeUndefined()
    expect(c.files.usersFile).toBe(path.resolve('/srv/gh', 'data', 'users.json'))
  })
})

describe('security.directories: one variant per type', () => {
  it('defaults to the local user file alone', () => {
    expect(buildConfig({}).security.directories).toEqual([{ type: 'local' }])
  })

  it('fills in the LDAP defaults and keeps the order', () => {
    const c = buildConfig({ security: { directories: ldapDirs({ groupsAttribute: 'memberOf' }) } })
    expect(c.security.directories).toEqual([{ type: 'local' }, {
      type: 'ldap', url: 'ldaps://ldap.example.org', startTls: false, caFile: undefined,
      bindDn: 'cn=gatehouse,ou=services,dc=example,dc=org', bindPasswordFile: '/etc/gatehouse/ldap-bind.pw', userBase: 'ou=people,dc=example,dc=org',
      userFilter: '(uid={{username}})', userDnTemplate: undefined, usernameAttribute: 'uid', groupsAttribute: 'memberOf',
      groupBase: undefined, groupFilter: '(member={{dn}})', groupNameAttribute: 'cn', connectTimeoutMs: 3000, timeoutMs: 5000,
    }])
    const direct = buildConfig({ security: { directories: [{ type: 'ldap', url: 'ldap://ldap.example.org:389/', startTls: true, userDnTemplate: 'uid={{username}},ou=people,dc=example,dc=org' }] } })
    expect(direct.security.directories[0]).toMatchObject({ type: 'ldap', url: 'ldap://ldap.example.org:389', startTls: true })
  })

  it('an item needs a known type, named with the allowed ones', () => {
    expect(configError({ security: { directories: [{ url: 'ldaps://ldap.example.org' }] } }).message).toBe(`${D}[0].type is required (one of local, ldap)`)
    expectInvalid(D, [{ type: 7 }], `${D}[0].type must be one of local, ldap, got number 7`)
    expectInvalid(D, [null], `${D}[0] must be an object, got null`)
  })

  it('refuses an option of another type, listing the known ones', () => {
    expectInvalid(D, [{ type: 'local', url: 'ldaps://ldap.example.org' }], `${D}[0].url is not a known option of type local (known: type)`)
    expect(configError({ security: { directories: ldapDirs({ bindPassword: 'secret' }) } }).message)
      .toMatch(/^security\.directories\[1\]\.bindPassword is not a known option of type ldap \(known: type, url, startTls, caFile, bindDn, bindPasswordFile, userBase, /)
  })

  it('search then bind and direct bind exclude each other', () => {
    expectInvalid(D, ldapDirs({ userDnTemplate: 'uid={{username}},ou=people,dc=example,dc=org' }),
      `${D}[1].bindDn cannot be combined with userDnTemplate: use either direct bind (userDnTemplate) or search then bind (bindDn, bindPasswordFile, userBase)`)
    expectInvalid(D, [{ type: 'ldap', url: 'ldaps://ldap.example.org' }], `${D}[0].bindDn is required for search then bind (or set userDnTemplate for direct bind)`)
    expectInvalid(D, ldapDirs({ userBase: undefined }), `${D}[1].userBase is required for search then bind (or set userDnTemplate for direct bind)`)
  })

  it('TLS options must make sense together', () => {
    expectInvalid(D, ldapDirs({ startTls: true }), `${D}[1].startTls must be false with an ldaps:// URL (already TLS)`)
    expectInvalid(D, ldapDirs({ url: 'ldap://ldap.example.org', caFile: '/etc/ca.pem' }), `${D}[1].caFile needs an ldaps:// URL or startTls: true`)
    expect(buildConfig({ security: { directories: ldapDirs({ url: 'ldap://ldap.example.org', startTls: true, caFile: '/etc/ca.pem' }) } })
      .security.directories[1]).toMatchObject({ startTls: true, caFile: '/etc/ca.pem' })
  })

  it('the URL is a host and port only, without credentials', () => {
    expectInvalid(D, ldapDirs({ url: 'ldap://ldap.example.org/dc=example,dc=org' }), `${D}[1].url must be an origin without a path, query or fragment`)
    expectInvalid(D, ldapDirs({ url: 'ldaps://cn=admin:pw@ldap.example.org' }), `${D}[1].url must not carry credentials`)
    expectInvalid(D, ldapDirs({ url: 'ldap://' }), `${D}[1].url must name a host`)
  })

  it('holds 1 to 8 directories', () => {
    expectInvalid(D, Array.from({ length: 9 }, () => ({ type: 'local' })), `${D} must have at most 8 items`)
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
      .toBe('proxy.routes[0].strip is not a known option (known: prefix, upstream, upstreams, stripPrefix, timeoutSeconds, connectTimeoutMs, healthCheck, upstreamCa)')
  })

  it('names the new place of a renamed option', () => {
    expect(configError({ security: { port: 8443 } }).message).toBe('security.port was renamed to security.listen.port')
  })
})

/** A route's healthCheck when none is configured: passive checks only. */
const HEALTH_DEFAULTS = { path: undefined, intervalSeconds: 5, timeoutMs: 1000, unhealthyAfter: 2, healthyAfter: 1 }

describe('proxy.routes: one upstream or several', () => {
  it('takes upstreams, a list of origins, with the health-check defaults', () => {
    const c = buildConfig({ proxy: { routes: [{ prefix: '/a/', upstreams: ['http://10.0.0.1:8080/', 'https://b.example.com'] }] } })
    expect(c.proxy.routes[0]).toEqual({
      prefix: '/a/', upstream: undefined, upstreams: ['http://10.0.0.1:8080', 'https://b.example.com'], stripPrefix: false, timeoutSeconds: 30,
      connectTimeoutMs: 3000, healthCheck: HEALTH_DEFAULTS, upstreamCa: undefined,
    })
    const checked = buildConfig({ proxy: { routes: [{ prefix: '/a/', upstream: 'http://127.0.0.1:1', healthCheck: { path: '/healthz?deep=1', intervalSeconds: 2 } }] } })
    expect(checked.proxy.routes[0]!.healthCheck).toEqual({ ...HEALTH_DEFAULTS, path: '/healthz?deep=1', intervalSeconds: 2 })
  })

  it('needs exactly one of upstream and upstreams', () => {
    expect(configError({ proxy: { routes: [{ prefix: '/a/', upstream: 'http://127.0.0.1:1', upstreams: ['http://127.0.0.1:2'] }] } }).message)
      .toBe('proxy.routes[0].upstreams cannot be combined with upstream: set upstream (one origin) or upstreams (several)')
    expect(configError({ proxy: { routes: [{ prefix: '/a/', upstream: null, upstreams: null }] } }).message)
      .toBe('proxy.routes[0].upstream is required (or upstreams, a list of origins)')
  })

  it('refuses an empty list, a duplicate target, a path or credentials in a target', () => {
    const bad = (upstreams: unknown) => configError({ proxy: { routes: [{ prefix: '/a/', upstreams }] } }).message
    expect(bad([])).toBe('proxy.routes[0].upstreams must have at least 1 item(s)')
    expect(bad('http://127.0.0.1:1')).toBe('proxy.routes[0].upstreams must be an array, got string "http://127.0.0.1:1"')
    expect(bad(['http://127.0.0.1:1', 'http://127.0.0.1:2', 'http://127.0.0.1:1/'])).toBe('proxy.routes[0].upstreams[2] duplicates an earlier target ("http://127.0.0.1:1")')
    expect(bad(['http://127.0.0.1:1/app'])).toBe('proxy.routes[0].upstreams[0] must be an origin without a path, query or fragment')
    expect(bad(['http://u:p@127.0.0.1:1'])).toBe('proxy.routes[0].upstreams[0] must not carry credentials')
    expect(bad(Array.from({ length: 65 }, (_, i) => `http://127.0.0.1:${i + 1}`))).toBe('proxy.routes[0].upstreams must have at most 64 items')
  })

  it('a health-check path starts with "/" and has no blank', () => {
    expectInvalid('proxy.routes[0].healthCheck.path', '/health check', 'proxy.routes[0].healthCheck.path must be a path starting with "/"')
    expectInvalid('proxy.routes[0].healthCheck.path', '', 'proxy.routes[0].healthCheck.path must not be empty')
    expect(buildConfig(set('proxy.routes[0].healthCheck.path', null)).proxy.routes[0]!.healthCheck.path).toBeUndefined()
  })
})

describe('cross-option checks', () => {
  it('refuses an SNI server name given twice', () => {
    const sni = [{ serverName: 'mail.example.org', cert: 'a.crt', key: 'a.key' }, { serverName: '*.example.org', cert: 'b.crt', key: 'b.key' }, { serverName: 'mail.example.org', cert: 'c.crt', key: 'c.key' }]
    expect(configError({ proxy: { tls: { sni } } }).message).toBe('proxy.tls.sni[2].serverName duplicates an earlier name ("mail.example.org")')
    expect(buildConfig({ proxy: { tls: { sni: sni.slice(0, 2) } } }).proxy.tls.sni.map((s) => s.serverName)).toEqual(['mail.example.org', '*.example.org'])
  })

  it('proxy.activeSync: enabled needs an upstream; upstreamCa and upstreamHttp2 need https; defaults', () => {
    expect(configError({ proxy: { activeSync: { enabled: true } } }).message).toBe('proxy.activeSync.upstream is required when enabled is true')
    expect(configError({ proxy: { activeSync: { upstream: 'http://exchange.example.com', upstreamCa: '/etc/ca.pem' } } }).message)
      .toBe('proxy.activeSync.upstreamCa needs an https upstream')
    expect(configError({ proxy: { activeSync: { upstream: 'http://exchange.example.com', upstreamHttp2: true } } }).message)
      .toBe('proxy.activeSync.upstreamHttp2 needs an https upstream (HTTP/2 is negotiated over TLS)')
    expect(buildConfig({ proxy: { activeSync: { upstream: 'https://exchange.example.com', upstreamHttp2: true, upstreamMaxStreams: 250 } } }).proxy.activeSync)
      .toMatchObject({ upstreamHttp2: true, upstreamMaxStreams: 250 })
    expect(configError({ proxy: { activeSync: { upstream: 'https://exchange.example.com/owa' } } }).message)
      .toBe('proxy.activeSync.upstream must be an origin without a path, query or fragment')
    expect(buildConfig({}).proxy.activeSync).toEqual({
      enabled: false, upstream: undefined, upstreamCa: undefined, path: '/Microsoft-Server-ActiveSync', maxHoldSeconds: 1800,
      gateCacheSeconds: 60, gateCacheMaxEntries: 100_000, maxBodyBytes: 64 * 1024 * 1024, upstreamConnections: 10_000,
      upstreamHttp2: false, upstreamMaxStreams: 100,
    })
    expect(buildConfig({ proxy: { activeSync: { enabled: true, upstream: 'https://exchange.example.com/', upstreamCa: '/etc/ca.pem', path: '/eas' } } }).proxy.activeSync)
      .toMatchObject({ enabled: true, upstream: 'https://exchange.example.com', upstreamCa: '/etc/ca.pem', path: '/eas' })
  })

  it('refuses duplicate route prefixes', () => {
    const routes = [
      { prefix: '/mail/', upstream: 'http://127.0.0.1:1' },
      { prefix: '/wiki/', upstream: 'http://127.0.0.1:2' },
      { prefix: '/mail/', upstream: 'http://127.0.0.1:3' },
    ]
    expect(configError({ proxy: { routes } }).message).toBe('proxy.routes[2].prefix duplicates an earlier route ("/mail/")')
  })
})

describe('security.sites and defaultSite', () => {
  it('default: no sites, every device is told security.proxyUrl', () => {
    const c = buildConfig({})
    expect(c.security.sites).toEqual([])
    expect(c.security.defaultSite).toBeUndefined()
  })

  it('keeps the sites in order, without a trailing slash, with a defaultSite among them', () => {
    const siteA = { name: 'site-a', proxyUrl: 'https://proxy.site-a.example.org/', groups: ['site-a', 'staff'] }
    const c = buildConfig({ security: { sites: [siteA, siteB], defaultSite: 'site-a' } })
    expect(c.security.sites).toEqual([{ ...siteA, proxyUrl: 'https://proxy.site-a.example.org' }, siteB])
    expect(c.security.defaultSite).toBe('site-a')
  })

  it('refuses a duplicate site name and a defaultSite that is not a site', () => {
    expect(configError({ security: { sites: [siteB, { ...siteB, groups: ['other'] }] } }).message)
      .toBe('security.sites[1].name duplicates an earlier site ("site-b")')
    expect(configError({ security: { sites: [siteB], defaultSite: 'site-a' } }).message)
      .toBe('security.defaultSite must name one of security.sites, got "site-a"')
    expect(configError({ security: { sites: [{ ...siteB, groups: ['ok', 7] }] } }).message)
      .toBe('security.sites[0].groups[1] must be a string, got number 7')
    expect(configError({ security: { sites: [{ ...siteB, region: 'eu' }] } }).message)
      .toBe('security.sites[0].region is not a known option (known: name, proxyUrl, groups)')
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
    expect(c.security.packagesDir).toBeUndefined()
    expect(c.security.enrollment).toEqual({ mode: 'password-or-code' })
    expect(c.proxy.listen).toEqual({ host: '127.0.0.1', port: 9443 })
    expect(c.proxy.admin).toEqual({ host: '127.0.0.1', port: 9090 })
    expect(c.proxy.securityServers).toEqual(['https://localhost:8444'])
    expect(c.proxy.controlPlaneTimeoutMs).toBe(2000)
    expect(c.proxy.sessionCache).toEqual({ maxEntries: 100_000, ttlSeconds: 60, outageGraceSeconds: 300 })
    expect(c.proxy.replay).toEqual({ windowSize: 1024, maxClockSkewSeconds: 120 })
    expect(c.proxy.limits).toEqual({ maxBodyBytes: 16 * 1024 * 1024, maxResponseBytes: 64 * 1024 * 1024, maxHeaderBytes: 8192, bodyTimeoutSeconds: 5, maxConcurrentRequests: 1024 })
    expect([c.proxy.tls.sni, c.proxy.accessLog, c.proxy.drainSeconds]).toEqual([[], true, 25])
    expect(c.proxy.upstreamConnections).toBe(64)
    expect(c.proxy.routes).toEqual([{ prefix: '/demo/', upstream: 'http://127.0.0.1:9080', stripPrefix: true, timeoutSeconds: 30, connectTimeoutMs: 3000, healthCheck: HEALTH_DEFAULTS, upstreamCa: undefined }])
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
    expect(c.proxy.routes).toEqual([{ prefix: '/mail/', upstream: 'https://mail.example.com', stripPrefix: false, timeoutSeconds: 30, connectTimeoutMs: 3000, healthCheck: HEALTH_DEFAULTS, upstreamCa: undefined }])
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
