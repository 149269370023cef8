/**
 * ProxyServer.reload() through the real proxy over real TLS: a new certificate is served to new
 * connections while an established keep-alive connection and a request in flight carry on; bad
 * certificates are refused before uWS sees them (one of them would crash it) and the old one
 * stays; routes and limits apply to new requests; SNI serves a certificate per server name; the
 * retired uWS app closes once idle.
 */
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import { Client } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError } from '../../src/errors.js'
import { issuePki } from '../../src/pki/issue.js'
import type { ReloadableOptions } from '../../src/proxy/reload.js'
import type { ProxyServer } from '../../src/proxy/server.js'
import { makeTestPki } from '../helpers/pki.js'
import { EnvelopeCrafter, startStack, type SessionKeys, type Stack } from '../helpers/stack.js'

type Pki = Awaited<ReturnType<typeof makeTestPki>>

/** SHA-256 fingerprint of the certificate the proxy presents for `servername`. */
function peerFingerprint(port: number, servername = 'localhost'): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false }, () => {
      resolve(s.getPeerX509Certificate()!.fingerprint256)
      s.destroy()
    })
    s.once('error', reject)
  })
}

const fingerprintOf = (certFile: string) => new X509Certificate(readFileSync(certFile)).fingerprint256

async function gauge(p: ProxyServer, name: string): Promise<number> {
  return (await p.registry.getSingleMetric(name)!.get()).values.reduce((sum, v) => sum + v.value, 0)
}

describe('proxy reload: certificates, routes and limits without dropping connections', () => {
  let stack: Stack
  let b: Pki
  let dir: string
  let p: ProxyServer
  let demo: string
  let ca: Buffer[]
  const clients: Client[] = []

  /** A single keep-alive connection to the proxy (trusting both CAs) and a crafter using it. */
  const connection = (servername?: string) => {
    const client = new Client(`https://localhost:${p.port}`, { connect: { ca, ...(servername ? { servername } : {}) }, keepAliveTimeout: 60_000, pipelining: 1 })
    let connects = 0
    client.on('connect', () => { connects++ })
    clients.push(client)
    return { client, crafter: new EnvelopeCrafter(stack.device(), client, () => p.port), connects: () => connects }
  }

  const options = (over: Partial<ReloadableOptions> = {}): ReloadableOptions => ({
    tls: { certFile: b.serverCert, keyFile: b.serverKey },
    limits: { maxBodyBytes: 1 << 20, maxResponseBytes: 1 << 20 },
    routes: [{ prefix: '/demo/', upstream: demo, stripPrefix: true, timeoutSeconds: 5 }],
    upstreamConnections: 8, accessLog: true, drainSeconds: 5,
    ...over,
  })

  beforeAll(async () => {
    stack = await startStack()
    b = await makeTestPki()
    dir = mkdtempSync(path.join(tmpdir(), 'gh-reload-'))
    demo = `http://127.0.0.1:${stack.upstream.port}`
    ca = [stack.ca, readFileSync(b.caCert)]
    p = await stack.startProxy()
  })

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.destroy()))
    await stack?.close()
    b?.cleanup()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  let keys: SessionKeys
  let kept: ReturnType<typeof connection>
  /** One sequence for the session, whichever connection (crafter) sends. */
  let seq = 100
  // undici closes the connection after a GET that carries a body (an envelope): keep-alive checks POST.
  const call = (c: { crafter: EnvelopeCrafter }, target: string, method = 'GET') => c.crafter.call(keys, method, target, { seq: ++seq, ...(method === 'POST' ? { body: 'ping' } : {}) })

  it('a new certificate: new connections get it; a keep-alive connection and a request in flight carry on', async () => {
    const a = fingerprintOf(stack.pki.serverCert)
    expect(await peerFingerprint(p.port)).toBe(a)
    kept = connection()
    const dev = stack.device()
    await dev.enroll('alice', 'correct horse battery staple')
    keys = await kept.crafter.freshSession(dev)
    expect((await call(kept, '/demo/echo', 'POST')).inner).toBe(200)
    await new Promise((r) => setTimeout(r, 500))
    expect((await call(kept, '/demo/echo', 'POST')).inner).toBe(200)
    expect(kept.connects(), 'keep-alive before any reload').toBe(1)
    const slow = connection()
    const inFlight = call(slow, '/demo/slow?ms=1500')
    await new Promise((r) => setTimeout(r, 300))

    const certificates = await p.reload(options())
    expect(certificates.map((c) => c.fingerprint256)).toEqual([fingerprintOf(b.serverCert)])

    expect(await peerFingerprint(p.port)).toBe(fingerprintOf(b.serverCert))
    expect((await inFlight).inner).toBe(200)
    // The same connection (not reconnected), still on the old app and certificate.
    expect((await call(kept, '/demo/echo', 'POST')).inner).toBe(200)
    expect(kept.connects()).toBe(1)
    // A new connection, on the new certificate.
    const fresh = connection()
    expect((await call(fresh, '/demo/hello')).inner).toBe(200)
    expect(await gauge(p, 'gatehouse_proxy_listeners')).toBe(2)
  })

  it('refuses bad certificates before uWS sees them, naming the option; the current one stays', async () => {
    const expired = await issuePki({ now: new Date(Date.now() - 30 * 86_400_000), validityDays: 1 })
    writeFileSync(path.join(dir, 'expired.crt'), expired.server.cert)
    writeFileSync(path.join(dir, 'expired.key'), expired.server.key)
    writeFileSync(path.join(dir, 'garbage.crt'), 'not a certificate\n')
    const bad: [ReloadableOptions['tls'], string][] = [
      [{ certFile: b.serverCert, keyFile: stack.pki.serverKey }, 'proxy.tls.key does not match proxy.tls.cert'],
      [{ certFile: path.join(dir, 'missing.crt'), keyFile: b.serverKey }, `proxy.tls.cert cannot be read: ENOENT (${path.join(dir, 'missing.crt')})`],
      [{ certFile: path.join(dir, 'expired.crt'), keyFile: path.join(dir, 'expired.key') }, 'proxy.tls.cert expired on'],
      [{ certFile: path.join(dir, 'garbage.crt'), keyFile: b.serverKey }, 'proxy.tls.cert is not a PEM certificate'],
      // uWS's addServerName would crash the process (SIGSEGV) on this one.
      [{ certFile: b.serverCert, keyFile: b.serverKey, sni: [{ serverName: 'mail.test', certFile: stack.pki.serverCert, keyFile: b.serverKey }] }, 'proxy.tls.sni[0].key does not match proxy.tls.sni[0].cert'],
    ]
    for (const [tls, message] of bad) {
      const err = await p.reload(options({ tls })).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(ConfigError)
      expect((err as Error).message).toContain(message)
    }
    expect(await peerFingerprint(p.port)).toBe(fingerprintOf(b.serverCert))
    expect((await call(kept, '/demo/echo', 'POST')).inner).toBe(200)
    expect(kept.connects()).toBe(1)
    expect(await gauge(p, 'gatehouse_proxy_listeners')).toBe(2)
  })

  it('routes and limits of the reload apply to new requests', async () => {
    const c = connection()
    await p.reload(options({
      routes: [{ prefix: '/demo/', upstream: demo, stripPrefix: true, timeoutSeconds: 5 }, { prefix: '/two/', upstream: demo, stripPrefix: true, timeoutSeconds: 5 }],
      limits: { maxBodyBytes: 1 << 20, maxResponseBytes: 1 << 20, maxHeaderBytes: 2048 },
    }))
    expect((await call(c, '/two/hello')).inner).toBe(200)
    const big = await c.crafter.post('/two/hello', { method: 'GET', sid: keys.sessionId, body: Buffer.alloc(0), contentType: `${'x'.repeat(3000)}` })
    expect([big.status, big.code]).toEqual([431, 'GH_ERR_HEADERS_TOO_LARGE'])
    await p.reload(options())
    const gone = await call(connection(), '/two/hello')
    expect([gone.status, gone.code]).toEqual([404, 'GH_ERR_NOT_FOUND'])
  })

  it('SNI: each server name gets its certificate, others the default one; requests work on both', async () => {
    await p.reload(options({ tls: { certFile: stack.pki.serverCert, keyFile: stack.pki.serverKey, sni: [{ serverName: 'mail.test', certFile: b.serverCert, keyFile: b.serverKey }] } }))
    expect(await peerFingerprint(p.port, 'mail.test')).toBe(fingerprintOf(b.serverCert))
    expect(await peerFingerprint(p.port, 'localhost')).toBe(fingerprintOf(stack.pki.serverCert))
    expect(await peerFingerprint(p.port, 'other.test')).toBe(fingerprintOf(stack.pki.serverCert))
    // b's certificate names localhost only: the client checks it against that name.
    const viaSni = connection('localhost')
    expect((await call(viaSni, '/demo/hello')).inner).toBe(200)
    const sniClient = new Client(`https://localhost:${p.port}`, { connect: { ca, servername: 'mail.test', checkServerIdentity: () => undefined } })
    clients.push(sniClient)
    const onSni = new EnvelopeCrafter(stack.device(), sniClient, () => p.port)
    expect((await onSni.call(keys, 'GET', '/demo/hello', { seq: ++seq })).inner).toBe(200)
  })

  it('a retired uWS app closes once it has served its last request and its connections idled out', async () => {
    await Promise.all(clients.splice(0).map((c) => c.destroy()))
    expect(await gauge(p, 'gatehouse_proxy_listeners')).toBeGreaterThan(1)
    await expect.poll(() => gauge(p, 'gatehouse_proxy_listeners'), { timeout: 25_000, interval: 500 }).toBe(1)
    expect(await peerFingerprint(p.port, 'mail.test')).toBe(fingerprintOf(b.serverCert))
  }, 30_000)
})
