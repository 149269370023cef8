/**
 * A whole Gatehouse on loopback, in process, on port 0 with real TLS: a fresh development PKI,
 * a security server over a temporary SQLite database, a proxy and the demo upstream. Tests get
 * the URLs, the servers and a log sink to read what was logged.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Writable } from 'node:stream'
import { GatehouseDevice, type DeviceOptions } from '../../src/client/device.js'
import { DemoUpstream } from '../../src/demo/upstream.js'
import { createLogger } from '../../src/observability/logger.js'
import { ProxyServer, type ProxyServerOptions } from '../../src/proxy/server.js'
import { LocalUserAuthenticator } from '../../src/security/localUsers.js'
import { SecurityServer, type SecurityServerOptions } from '../../src/security/server.js'
import { UserFile } from '../../src/security/users.js'
import { loadOrCreateMasterKey, SecretBox } from '../../src/store/secretBox.js'
import { SqliteStore } from '../../src/store/sqliteStore.js'
import { makeTestPki } from './pki.js'

export class LogSink extends Writable {
  lines: string[] = []
  override _write(chunk: Buffer, _enc: string, cb: () => void) {
    this.lines.push(...chunk.toString('utf8').split('\n').filter(Boolean))
    cb()
  }
  get text(): string {
    return this.lines.join('\n')
  }
}

export const PASSWORD = 'correct horse battery staple'

export interface Stack {
  dir: string
  pki: Awaited<ReturnType<typeof makeTestPki>>
  security: SecurityServer
  proxy: ProxyServer
  upstream: DemoUpstream
  store: SqliteStore
  securityUrl: string
  proxyUrl: string
  ca: Buffer
  logs: LogSink
  dbPath: string
  device(o?: Partial<DeviceOptions>): GatehouseDevice
  /** Enrolled device with an open session. */
  enrolledDevice(o?: Partial<DeviceOptions>): Promise<GatehouseDevice>
  startProxy(over?: Partial<ProxyServerOptions>): Promise<ProxyServer>
  close(): Promise<void>
}

export async function startStack(o: {
  security?: Partial<SecurityServerOptions>
  proxy?: Partial<ProxyServerOptions>
  routes?: ProxyServerOptions['routes']
} = {}): Promise<Stack> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'gh-stack-'))
  const pki = await makeTestPki()
  const logs = new LogSink()
  const log = createLogger({ level: 'debug', destination: logs })
  const users = await UserFile.load(path.join(dir, 'users.json'), { create: true })
  await users.add('alice', PASSWORD, ['staff'])
  const dbPath = path.join(dir, 'gatehouse.db')
  const store = SqliteStore.open({ path: dbPath, secretBox: new SecretBox(loadOrCreateMasterKey(path.join(dir, 'master.key'))) })
  const upstream = new DemoUpstream({ host: '127.0.0.1', port: 0 })
  await upstream.start()
  const ca = readFileSync(pki.caCert)
  const security = new SecurityServer({
    store, auth: new LocalUserAuthenticator(path.join(dir, 'users.json')), log,
    tls: { cert: readFileSync(pki.serverCert), key: readFileSync(pki.serverKey), ca },
    listen: { host: '127.0.0.1', port: 0 }, proxyApi: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 },
    proxyUrl: 'https://localhost:1', // replaced below once the proxy has a port
    policy: { maxLifetimeMs: 3600_000, idleTimeoutMs: 600_000, clockSkewMs: 300_000 },
    maxBodyBytes: 16 * 1024,
    ...o.security,
  })
  await security.start()
  const proxies: ProxyServer[] = []
  const startProxy = async (over: Partial<ProxyServerOptions> = {}) => {
    const p = new ProxyServer({
      log,
      listen: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
      tls: { certFile: pki.serverCert, keyFile: pki.serverKey },
      controlPlane: {
        servers: [`https://localhost:${security.ports.proxyApi}`],
        tls: { cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey), ca },
        timeoutMs: 1000,
      },
      sessionCache: { maxEntries: 1000, ttlSeconds: 60 },
      replay: { windowSize: 1024, maxClockSkewSeconds: 120 },
      limits: { maxBodyBytes: 1024 * 1024, maxResponseBytes: 8 * 1024 * 1024 },
      upstreamConnections: 8,
      routes: o.routes ?? [{ prefix: '/demo/', upstream: `http://127.0.0.1:${upstream.port}`, stripPrefix: true, timeoutSeconds: 5 }],
      ...o.proxy,
      ...over,
    })
    await p.start()
    proxies.push(p)
    return p
  }
  const proxy = await startProxy()
  const proxyUrl = `https://localhost:${proxy.port}`
  const securityUrl = `https://localhost:${security.ports.device}`
  const devices: GatehouseDevice[] = []
  let n = 0
  const device = (d: Partial<DeviceOptions> = {}) => {
    const dev = new GatehouseDevice({ securityUrl, ca, appId: 'mail', appVersion: '1.0.0', deviceId: `dev-${++n}`, proxyUrl, ...d })
    devices.push(dev)
    return dev
  }
  return {
    dir, pki, security, proxy, upstream, store, securityUrl, proxyUrl, ca, logs, dbPath, device, startProxy,
    async enrolledDevice(d = {}) {
      const dev = device(d)
      await dev.enroll('alice', PASSWORD)
      await dev.openSession()
      return dev
    },
    async close() {
      await Promise.all(devices.map((d) => d.close()))
      await Promise.all(proxies.map((p) => p.close(100)))
      await security.close()
      await upstream.close()
      pki.cleanup()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
