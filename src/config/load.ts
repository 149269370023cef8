import { readFileSync } from 'node:fs'
import path from 'node:path'
import { parse as parseYaml } from 'yaml'
import { ConfigError } from '../errors.js'
import { CidrList } from '../http/cidr.js'
import { configSchema, routeDefaults } from './schema.js'
import { deepFreeze } from './validate.js'

type Parsed = ReturnType<typeof configSchema.parse>

/** The validated, path-resolved, frozen configuration. */
export interface GatehouseConfig extends Parsed {
  /** Resolved file paths (defaults filled in from dataDir and certsDir). */
  readonly files: {
    readonly databasePath: string
    readonly masterKeyFile: string
    readonly usersFile: string
    readonly serverCert: string
    readonly serverKey: string
    readonly caCert: string
    readonly proxyCert: string
    readonly proxyKey: string
    readonly proxyClientCert: string
    readonly proxyClientKey: string
    readonly controlPlaneCa: string
  }
  readonly source: string | undefined
}

/** Validate a plain object (from a file or a test) into a frozen config. */
export function buildConfig(raw: unknown, source?: string, cwd = process.cwd()): GatehouseConfig {
  const c = configSchema.parse(raw ?? {}, '')
  deriveLinkedDefaults(raw, c)
  const abs = (p: string) => path.resolve(cwd, p)
  const data = abs(c.dataDir)
  const certs = abs(c.certsDir)
  const files = {
    databasePath: abs(c.security.databasePath ?? path.join(data, 'gatehouse.db')),
    masterKeyFile: abs(c.security.masterKeyFile ?? path.join(data, 'master.key')),
    usersFile: abs(c.security.usersFile ?? path.join(data, 'users.json')),
    serverCert: abs(c.security.tls.cert ?? path.join(certs, 'server.crt')),
    serverKey: abs(c.security.tls.key ?? path.join(certs, 'server.key')),
    caCert: abs(c.security.tls.ca ?? path.join(certs, 'ca.crt')),
    proxyCert: abs(c.proxy.tls.cert ?? path.join(certs, 'server.crt')),
    proxyKey: abs(c.proxy.tls.key ?? path.join(certs, 'server.key')),
    proxyClientCert: abs(c.proxy.controlPlaneTls.cert ?? path.join(certs, 'proxy-client.crt')),
    proxyClientKey: abs(c.proxy.controlPlaneTls.key ?? path.join(certs, 'proxy-client.key')),
    controlPlaneCa: abs(c.proxy.controlPlaneTls.ca ?? path.join(certs, 'ca.crt')),
  }
  new CidrList(c.security.access.adminCidrs, 'security.access.adminCidrs')
  new CidrList(c.security.access.selfServiceCidrs, 'security.access.selfServiceCidrs')
  const prefixes = new Set<string>()
  c.proxy.routes.forEach((r, i) => {
    if (prefixes.has(r.prefix)) throw new ConfigError(`proxy.routes[${i}].prefix duplicates an earlier route ("${r.prefix}")`)
    prefixes.add(r.prefix)
  })
  return deepFreeze({ ...c, dataDir: data, certsDir: certs, files, source })
}

/** Read a JSON or YAML file (by extension; YAML otherwise) and validate it. */
export function loadConfigFile(file: string): GatehouseConfig {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`)
  }
  let raw: unknown
  try {
    raw = file.endsWith('.json') ? JSON.parse(text) : parseYaml(text)
  } catch (err) {
    throw new ConfigError(`config file ${file} is not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'}: ${(err as Error).message.split('\n')[0]}`)
  }
  try {
    return buildConfig(raw, file)
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(`${file}: ${err.message}`)
    throw err
  }
}

/** Config from `--config`, else $GATEHOUSE_CONFIG, else the embedded defaults. */
export function loadConfig(file?: string): GatehouseConfig {
  const f = file ?? process.env.GATEHOUSE_CONFIG
  return f ? loadConfigFile(f) : buildConfig({})
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] extends object ? Mutable<T[K]> : T[K] }

/**
 * Defaults that point at another role's listener follow that listener when only its port was
 * changed: the proxy URL told to devices, the proxy's security-server list and the default demo
 * route. An explicitly configured value is never touched.
 */
function deriveLinkedDefaults(raw: unknown, parsed: Parsed): void {
  const c = parsed as Mutable<Parsed>
  const r = (raw ?? {}) as { security?: { proxyUrl?: unknown }; proxy?: { securityServers?: unknown; routes?: unknown } }
  if (r.security?.proxyUrl === undefined) c.security.proxyUrl = `https://localhost:${c.proxy.listen.port}`
  if (r.proxy?.securityServers === undefined) c.proxy.securityServers = [`https://localhost:${c.security.proxyApi.port}`]
  if (r.proxy?.routes === undefined) {
    const host = c.demo.upstream.host === '0.0.0.0' ? '127.0.0.1' : c.demo.upstream.host
    c.proxy.routes = [{ ...routeDefaults(), prefix: '/demo/', upstream: `http://${host}:${c.demo.upstream.port}`, stripPrefix: true }]
  }
}
