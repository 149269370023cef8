/**
 * A whole Gatehouse on loopback, in process, on port 0 with real TLS: a fresh development PKI,
 * a security server over a temporary SQLite database, a proxy and the demo upstream. Tests get
 * the URLs, the servers and a log sink to read what was logged.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer as createHttpServer } from 'node:http'
import { createServer as createTcpServer, connect as tcpConnect, type AddressInfo, type Socket } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { Writable } from 'node:stream'
import { connect as tlsConnect } from 'node:tls'
import type { Registry } from 'prom-client'
import type { Dispatcher } from 'undici'
import { ENVELOPE_MEDIA_TYPE, SESSION_HEADER } from '../../src/protocol/constants.js'
import { EnvelopeDecoder } from '../../src/protocol/envelope.js'
import { decodeResponseHead } from '../../src/protocol/head.js'
import { GatehouseDevice, type DeviceOptions } from '../../src/client/device.js'
import { DemoUpstream } from '../../src/demo/upstream.js'
import { createLogger } from '../../src/observability/logger.js'
import { ProxyServer, type ProxyServerOptions } from '../../src/proxy/server.js'
import { LocalUserAuthenticator } from '../../src/security/localUsers.js'
import { SecurityServer, type SecurityServerOptions } from '../../src/security/server.js'
import { UserFile } from '../../src/security/users.js'
import { loadOrCreateMasterKey, SecretBox } from '../../src/store/secretBox.js'
import { openStore, type OpenStoreOptions } from '../../src/store/openStore.js'
import type { SqlStore } from '../../src/store/sqlStore.js'
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
  store: SqlStore
  securityUrl: string
  proxyUrl: string
  ca: Buffer
  logs: LogSink
  dbPath: string
  device(o?: Partial<DeviceOptions>): GatehouseDevice
  /** Enrolled device with an open session. */
  enrolledDevice(o?: Partial<DeviceOptions>): Promise<GatehouseDevice>
  startProxy(over?: Partial<ProxyServerOptions>): Promise<ProxyServer>
  /** Close a proxy started by startProxy now (close() will not close it again). */
  stopProxy(p: ProxyServer, drainMs?: number): Promise<void>
  close(): Promise<void>
}

export async function startStack(o: {
  security?: Partial<SecurityServerOptions>
  proxy?: Partial<ProxyServerOptions>
  routes?: ProxyServerOptions['routes']
  /** PostgreSQL instead of the temporary SQLite file (multi-host URLs included); `schema` is created if missing. */
  database?: { url: string; schema?: string; pg?: OpenStoreOptions['pg'] }
} = {}): Promise<Stack> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'gh-stack-'))
  const pki = await makeTestPki()
  const logs = new LogSink()
  const log = createLogger({ level: 'debug', destination: logs })
  const users = await UserFile.load(path.join(dir, 'users.json'), { create: true })
  await users.add('alice', PASSWORD, ['staff'])
  const dbPath = path.join(dir, 'gatehouse.db')
  const store = await openStore({
    path: dbPath, ...o.database, secretBox: new SecretBox(loadOrCreateMasterKey(path.join(dir, 'master.key'))),
  })
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
    packagesDir: path.join(dir, 'packages'),
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
    stopProxy(p, drainMs) {
      const i = proxies.indexOf(p)
      if (i >= 0) proxies.splice(i, 1)
      return p.close(drainMs)
    },
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

// ---------------------------------------------------------------------------------------------
// Small helpers for hostile-input tests: raw HTTP(S) requests, a counting upstream, a cuttable
// TCP relay, a closed port and raw TLS conversations.

/** One HTTP answer as raw bytes, with the stable error code when the body is a Gatehouse error. */
export interface RawAnswer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
  text: string
  /** `error.code` of a JSON error body, else undefined. */
  code: string | undefined
}

function errorCodeOf(text: string): string | undefined {
  try {
    const v = JSON.parse(text) as { error?: { code?: unknown } }
    return typeof v.error?.code === 'string' ? v.error.code : undefined
  } catch {
    return undefined
  }
}

/**
 * Send exactly these bytes (no URL normalisation: `path` goes on the request line as given).
 * `origin` e.g. `https://localhost:1234`; the dispatcher carries the TLS settings.
 */
export async function sendRaw(dispatcher: Dispatcher, origin: string, path: string, o: {
  method?: string
  headers?: Record<string, string>
  body?: Buffer | string | AsyncIterable<Buffer>
} = {}): Promise<RawAnswer> {
  const res = await dispatcher.request({
    origin, path, method: (o.method ?? 'POST') as Dispatcher.HttpMethod, headers: o.headers ?? {},
    body: o.body as Dispatcher.DispatchOptions['body'],
  })
  const body = Buffer.from(await res.body.arrayBuffer())
  const text = body.toString('utf8')
  return { status: res.statusCode, headers: res.headers, body, text, code: errorCodeOf(text) }
}

/** A plain-HTTP upstream that counts what reaches it. `GET /slow?ms=N` answers after N ms. */
export interface CountingUpstream {
  readonly port: number
  readonly url: string
  /** Requests received (counted when the request head arrives). */
  hits: number
  paths: string[]
  close(): Promise<void>
}

export async function startCountingUpstream(): Promise<CountingUpstream> {
  const state = { hits: 0, paths: [] as string[] }
  const server = createHttpServer((req, res) => {
    state.hits++
    state.paths.push(req.url ?? '')
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://upstream')
      const answer = () => {
        const s = JSON.stringify({ ok: true, method: req.method, url: req.url, user: req.headers['gatehouse-user'] ?? null, bytes: Buffer.concat(chunks).length })
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s) }).end(s)
      }
      if (url.pathname === '/slow') setTimeout(answer, Number(url.searchParams.get('ms') ?? 0)).unref()
      else answer()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  const port = (server.address() as AddressInfo).port
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    get hits() { return state.hits },
    set hits(n: number) { state.hits = n },
    get paths() { return state.paths },
    set paths(p: string[]) { state.paths = p },
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    }),
  }
}

/** A loopback port with nothing listening on it (bound, then released). */
export async function closedPort(): Promise<number> {
  const s = createTcpServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', () => resolve()))
  const port = (s.address() as AddressInfo).port
  await new Promise<void>((resolve) => s.close(() => resolve()))
  return port
}

/**
 * A TCP relay to `127.0.0.1:targetPort`. `cut()` closes it and every connection through it;
 * while `hold()` is on, new connections are accepted but not connected through until `release()`.
 */
export interface Relay { port: number; cut(): Promise<void>; hold(): void; release(): void }

export async function startRelay(targetPort: number): Promise<Relay> {
  const sockets = new Set<Socket>()
  let held = false
  const waiting: (() => void)[] = []
  const server = createTcpServer((client) => {
    sockets.add(client)
    client.on('error', () => client.destroy())
    const through = () => {
      if (client.destroyed) return
      const upstream = tcpConnect(targetPort, '127.0.0.1')
      sockets.add(upstream)
      const drop = () => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream) }
      client.on('error', drop).on('close', drop)
      upstream.on('error', drop).on('close', drop)
      client.pipe(upstream).pipe(client)
    }
    if (held) {
      client.pause()
      waiting.push(through)
    } else through()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  return {
    port: (server.address() as AddressInfo).port,
    cut: () => new Promise<void>((resolve) => {
      server.close(() => resolve())
      for (const s of sockets) s.destroy()
    }),
    hold: () => { held = true },
    release: () => {
      held = false
      for (const f of waiting.splice(0)) f()
    },
  }
}

/** What a raw TLS conversation produced: the bytes the server sent, and how it ended. */
export interface RawTlsResult {
  /** Everything received, latin1. */
  text: string
  /** The TLS or socket error, if any (e.g. an alert from the server). */
  error: (Error & { code?: string }) | undefined
  /** The HTTP status of the first answer, when one was received. */
  status: number | undefined
  /** Body of the first answer (after the blank line), when one was received. */
  body: string
  /** True when the server closed the connection before `waitMs` ran out. */
  closedByServer: boolean
}

/**
 * Open a TLS connection, write `writes` in order (each after the previous one flushed), then
 * either destroy the socket at once (`destroy: true`, returns immediately) or wait until the
 * server closes it or `waitMs` passes.
 */
export async function rawTls(port: number, o: {
  ca: Buffer
  writes: (Buffer | string)[]
  cert?: Buffer
  key?: Buffer
  destroy?: boolean
  waitMs?: number
}): Promise<RawTlsResult> {
  const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca: o.ca, cert: o.cert, key: o.key })
  const chunks: Buffer[] = []
  let error: (Error & { code?: string }) | undefined
  let closedByServer = false
  const closed = new Promise<void>((resolve) => {
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('error', (e) => { error = e })
    socket.on('close', () => { closedByServer = true; resolve() })
  })
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', () => resolve())
      socket.once('error', reject)
      socket.once('close', () => reject(error ?? new Error('closed before the handshake')))
    })
    for (const w of o.writes) await new Promise<void>((resolve, reject) => socket.write(w, (err) => (err ? reject(err) : resolve())))
  } catch (e) {
    error = e as Error & { code?: string }
  }
  if (o.destroy) {
    socket.destroy()
    return { text: '', error, status: undefined, body: '', closedByServer: false }
  }
  let timer: NodeJS.Timeout | undefined
  await Promise.race([closed, new Promise<void>((resolve) => { timer = setTimeout(resolve, o.waitMs ?? 3000) })])
  clearTimeout(timer)
  const wasClosed = closedByServer
  socket.destroy()
  const text = Buffer.concat(chunks).toString('latin1')
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(text)
  const sep = text.indexOf('\r\n\r\n')
  return { text, error, status: m ? Number(m[1]) : undefined, body: sep >= 0 ? text.slice(sep + 4) : '', closedByServer: wasClosed }
}

/** The spellings of a secret that could end up in a log or a file: raw base64, base64url, hex. */
export function spellings(secret: Buffer): string[] {
  return [secret.toString('base64'), secret.toString('base64url'), secret.toString('hex')]
}

export interface SessionKeys { sessionId: string; c2s: Buffer; s2c: Buffer }

/**
 * Crafts envelopes for one proxy (raw bytes over `dispatcher`) with sessions opened by real
 * devices, and remembers every secret it saw (`secrets`: session ids and every spelling of the
 * keys) and every error body it received (`errorBodies`), for the "nothing leaked" checks.
 */
export class EnvelopeCrafter {
  readonly secrets = new Set<string>()
  readonly errorBodies: string[] = []
  private readonly nextSeq = new Map<string, number>()

  constructor(private readonly dev: GatehouseDevice, private readonly dispatcher: Dispatcher, private readonly port: () => number) {}

  /** Remember a device's shared key as a secret. */
  rememberEnrollment(d: GatehouseDevice): void {
    const e = d.enrollmentState
    if (e) for (const v of spellings(Buffer.from(e.sharedKey, 'base64'))) this.secrets.add(v)
  }

  /** A new session of `d` (default: the crafter's device), its keys copied out. */
  async freshSession(d: GatehouseDevice = this.dev): Promise<SessionKeys> {
    this.rememberEnrollment(d)
    const s = await d.openSession()
    const keys = { sessionId: s.sessionId, c2s: Buffer.from(s.c2s), s2c: Buffer.from(s.s2c) }
    this.secrets.add(keys.sessionId)
    for (const k of [keys.c2s, keys.s2c]) for (const v of spellings(k)) this.secrets.add(v)
    return keys
  }

  /** Seal a request; `seq` defaults to one past the highest used so far for this session. */
  /** Seal a request; head and body as two records (the layout the hostile tests edit) unless `joined`. */
  seal(s: SessionKeys, method: string, target: string, o: { seq?: number; ts?: number; body?: string | Buffer; joined?: boolean } = {}) {
    const seq = o.seq ?? (this.nextSeq.get(s.sessionId) ?? 0) + 1
    this.nextSeq.set(s.sessionId, Math.max(seq, this.nextSeq.get(s.sessionId) ?? 0))
    const ts = o.ts ?? Date.now()
    const requestLine = `${method} ${target}`
    const bytes = this.dev.seal(s, seq, ts, requestLine, { body: o.body, headers: o.body ? [['content-type', 'text/plain']] : [], joined: o.joined ?? false })
    return { bytes, seq, ts, requestLine }
  }

  /** Send raw bytes to the proxy. `sid: undefined` sends no session header; `contentType: null` none. */
  async post(target: string, o: { method?: string; sid?: string; body?: Buffer; contentType?: string | null; port?: number } = {}): Promise<RawAnswer> {
    const headers: Record<string, string> = {}
    if (o.sid !== undefined) headers[SESSION_HEADER] = o.sid
    if (o.contentType !== null) headers['content-type'] = o.contentType ?? ENVELOPE_MEDIA_TYPE
    const a = await sendRaw(this.dispatcher, `https://localhost:${o.port ?? this.port()}`, target, { method: o.method ?? 'POST', headers, body: o.body ?? Buffer.alloc(0) })
    if (a.status >= 400) this.errorBodies.push(a.text)
    return a
  }

  /** Seal and send a correct request; `inner` is the upstream's status from the decrypted answer. */
  async call(s: SessionKeys, method: string, target: string, o: { seq?: number; ts?: number; port?: number; body?: string | Buffer; joined?: boolean } = {}) {
    const e = this.seal(s, method, target, o)
    const a = await this.post(target, { method, sid: s.sessionId, body: e.bytes, port: o.port })
    let inner: number | undefined
    let innerBody: Buffer | undefined
    let joined: boolean | undefined
    if (String(a.headers['content-type']).startsWith(ENVELOPE_MEDIA_TYPE)) {
      const d = new EnvelopeDecoder({ kind: 'response', sessionId: s.sessionId, requestLine: e.requestLine, key: s.s2c, requestTimestampMs: e.ts, requestSeq: e.seq })
      const records = d.push(a.body)
      d.end()
      inner = decodeResponseHead(records[0]!.plaintext).status
      innerBody = Buffer.concat(records.slice(1).map((r) => r.plaintext))
      joined = d.joined
    }
    return { ...a, inner, innerBody, joined, sealed: e }
  }
}

/** Sum of a counter's values in a prom-client registry, optionally only where `labels` match. */
export async function counterValue(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = registry.getSingleMetric(name)
  if (!m) throw new Error(`no metric ${name}`)
  const { values } = await m.get()
  return values
    .filter((v) => Object.entries(labels).every(([k, want]) => String((v.labels as Record<string, unknown>)[k]) === want))
    .reduce((sum, v) => sum + v.value, 0)
}
