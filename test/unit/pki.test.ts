import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { X509Certificate, createPrivateKey } from 'node:crypto'
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tls from 'node:tls'
import type { AddressInfo } from 'node:net'
import { initPki, pkiExists, pkiPaths, certificateInfo, type PkiFiles } from '../../src/pki/devCa.js'
import { ConfigError, ExistsError } from '../../src/errors.js'
// Before @peculiar/x509 (see the module's comment).
import '../../src/pki/reflectShim.js'
import * as x509 from '@peculiar/x509'
import { makeTestPki } from '../helpers/pki.js'

const DAY_MS = 86_400_000
const NAMES = ['gateway.example.test', '10.20.30.40']

const tempDirs: string[] = []
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-pki-test-'))
  tempDirs.push(dir)
  return dir
}
afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true })
})

function allFiles(f: PkiFiles): string[] {
  return [f.caCert, f.caKey, f.serverCert, f.serverKey, f.clientCert, f.clientKey]
}
const mode = (p: string) => statSync(p).mode & 0o777
const cert = (p: string) => new X509Certificate(readFileSync(p))
const ext = <T extends x509.Extension>(p: string, type: new (raw: ArrayBuffer) => T): T | null =>
  new x509.X509Certificate(readFileSync(p, 'utf8')).getExtension(type)

describe('initPki: files', () => {
  let files: PkiFiles
  beforeAll(async () => {
    // A directory that does not exist yet: initPki creates it.
    files = await initPki({ dir: join(tempDir(), 'certs'), names: NAMES })
  })

  it('returns absolute paths matching pkiPaths, and pkiExists sees them', () => {
    expect(files).toEqual(pkiPaths(files.dir))
    expect(pkiPaths('relative/dir').dir).toMatch(/^\//)
    expect(pkiExists(files.dir)).toBe(true)
    expect(pkiExists(tempDir())).toBe(false)
  })

  it('writes keys 0600, certificates 0644, and creates the directory 0700', () => {
    for (const k of [files.caKey, files.serverKey, files.clientKey]) expect(mode(k)).toBe(0o600)
    for (const c of [files.caCert, files.serverCert, files.clientCert]) expect(mode(c)).toBe(0o644)
    expect(mode(files.dir)).toBe(0o700)
  })

  it('writes PEM certificates and PKCS#8 P-256 private keys matching them', () => {
    const pairs: Array<[string, string]> = [
      [files.caCert, files.caKey], [files.serverCert, files.serverKey], [files.clientCert, files.clientKey],
    ]
    for (const [c, k] of pairs) {
      expect(readFileSync(c, 'utf8')).toMatch(/^-----BEGIN CERTIFICATE-----/)
      expect(readFileSync(k, 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/)
      const key = createPrivateKey(readFileSync(k))
      expect(key.asymmetricKeyType).toBe('ec')
      expect(key.asymmetricKeyDetails?.namedCurve).toBe('prime256v1')
      expect(cert(c).checkPrivateKey(key)).toBe(true)
    }
  })

  it('issues a CA and leaves that chain to it, signed with ECDSA SHA-256', () => {
    const ca = cert(files.caCert)
    expect(ca.ca).toBe(true)
    expect(ca.subject).toContain('CN=Gatehouse Development CA')
    expect(ca.verify(ca.publicKey)).toBe(true)
    for (const leaf of [files.serverCert, files.clientCert]) {
      expect(cert(leaf).ca).toBe(false)
      expect(cert(leaf).verify(ca.publicKey)).toBe(true)
      expect(cert(leaf).checkIssued(ca)).toBe(true)
      expect(new x509.X509Certificate(readFileSync(leaf, 'utf8')).signatureAlgorithm)
        .toMatchObject({ name: 'ECDSA', hash: { name: 'SHA-256' } })
    }
    expect(cert(files.clientCert).subject).toContain('CN=gatehouse-proxy')
  })

  it('sets CA extensions: basicConstraints critical, keyCertSign + cRLSign, SKI', () => {
    const bc = ext(files.caCert, x509.BasicConstraintsExtension)
    expect(bc?.ca).toBe(true)
    expect(bc?.critical).toBe(true)
    expect(ext(files.caCert, x509.KeyUsagesExtension)?.usages)
      .toBe(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign)
    const ski = ext(files.caCert, x509.SubjectKeyIdentifierExtension)?.keyId
    expect(ski).toMatch(/^[0-9a-f]{40}$/)
    // Leaves point back at the CA through the authority key identifier.
    expect(ext(files.serverCert, x509.AuthorityKeyIdentifierExtension)?.keyId).toBe(ski)
    expect(ext(files.clientCert, x509.AuthorityKeyIdentifierExtension)?.keyId).toBe(ski)
  })

  it('gives the server serverAuth and the proxy client clientAuth, both digitalSignature only', () => {
    // node names the extended key usage list `keyUsage`.
    expect(cert(files.serverCert).keyUsage).toEqual([x509.ExtendedKeyUsage.serverAuth])
    expect(cert(files.clientCert).keyUsage).toEqual([x509.ExtendedKeyUsage.clientAuth])
    for (const leaf of [files.serverCert, files.clientCert]) {
      expect(ext(leaf, x509.KeyUsagesExtension)?.usages).toBe(x509.KeyUsageFlags.digitalSignature)
    }
  })

  it('puts localhost, 127.0.0.1, ::1 and the configured names in the server SANs', () => {
    const info = certificateInfo(readFileSync(files.serverCert))
    expect(info.dnsNames).toEqual(['localhost', 'gateway.example.test'])
    expect(info.ipAddresses).toEqual(['127.0.0.1', '::1', '10.20.30.40'])
    expect(cert(files.serverCert).checkHost('gateway.example.test')).toBe('gateway.example.test')
    expect(cert(files.serverCert).checkIP('::1')).toBe('::1')
    // The client certificate identifies the proxy by its subject, not by a host name.
    expect(certificateInfo(readFileSync(files.clientCert)).dnsNames).toEqual([])
  })
})

describe('initPki: options', () => {
  it('certificateInfo reports validity: validityDays for leaves, ten years for the CA', async () => {
    const now = new Date()
    const files = await initPki({ dir: tempDir(), validityDays: 30, now })
    const server = certificateInfo(readFileSync(files.serverCert, 'utf8'))
    expect(Math.abs(server.notAfter.getTime() - (now.getTime() + 30 * DAY_MS))).toBeLessThan(2000)
    expect(server.notBefore.getTime()).toBeLessThanOrEqual(now.getTime())
    expect(server.subject).toContain('CN=gatehouse-server')
    expect(server.issuer).toContain('CN=Gatehouse Development CA')
    expect(server.fingerprint256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/)
    const ca = certificateInfo(readFileSync(files.caCert))
    expect(Math.round((ca.notAfter.getTime() - now.getTime()) / DAY_MS)).toBe(3650)
  })

  it('defaults to 397 days', async () => {
    const now = new Date()
    const files = await initPki({ dir: tempDir(), now })
    const days = (certificateInfo(readFileSync(files.clientCert)).notAfter.getTime() - now.getTime()) / DAY_MS
    expect(Math.round(days)).toBe(397)
  })

  it('honours `now` and deduplicates / normalises names', async () => {
    const now = new Date('2030-01-01T00:00:00Z')
    const files = await initPki({ dir: tempDir(), now, names: ['LOCALHOST', 'Api.Example.Test.', '[::1]', '0:0::1', 'fe80::1'] })
    const info = certificateInfo(readFileSync(files.serverCert))
    expect(info.notBefore.getTime()).toBeLessThan(now.getTime())
    expect(info.notBefore.getTime()).toBeGreaterThan(now.getTime() - DAY_MS)
    expect(info.dnsNames).toEqual(['localhost', 'api.example.test'])
    expect(info.ipAddresses).toEqual(['127.0.0.1', '::1', 'fe80::1'])
  })

  it('rejects names that are neither host names nor IPs, and silly validity, writing nothing', async () => {
    const dir = tempDir()
    for (const names of [['bad name'], ['under_score.test'], [''], ['a..b']]) {
      await expect(initPki({ dir, names })).rejects.toBeInstanceOf(ConfigError)
    }
    for (const validityDays of [0, -1, Number.NaN]) {
      await expect(initPki({ dir, validityDays })).rejects.toBeInstanceOf(ConfigError)
    }
    expect(allFiles(pkiPaths(dir)).some((p) => existsSync(p))).toBe(false)
  })
})

describe('initPki: overwrite protection', () => {
  it('refuses to overwrite without force and leaves the files unchanged', async () => {
    const files = await initPki({ dir: tempDir() })
    const before = allFiles(files).map((p) => readFileSync(p))
    const err = await initPki({ dir: files.dir }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ExistsError)
    expect((err as InstanceType<typeof ExistsError>).code).toBe('GH_ERR_EXISTS')
    const message = (err as Error).message
    for (const name of ['ca.crt', 'ca.key', 'server.crt', 'server.key', 'proxy-client.crt', 'proxy-client.key']) {
      expect(message).toContain(name)
    }
    expect(message).toContain('--force')
    allFiles(files).forEach((p, i) => expect(readFileSync(p).equals(before[i]!)).toBe(true))
  })

  it('refuses when only some files exist, naming only those', async () => {
    const dir = tempDir()
    writeFileSync(join(dir, 'server.key'), 'precious')
    const err = await initPki({ dir }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ExistsError)
    expect((err as Error).message).toContain('server.key')
    expect((err as Error).message).not.toContain('ca.crt')
    expect(readFileSync(join(dir, 'server.key'), 'utf8')).toBe('precious')
    expect(existsSync(join(dir, 'ca.crt'))).toBe(false)
  })

  it('rewrites every file, with a new CA, when forced, and restores the modes', async () => {
    const files = await initPki({ dir: tempDir() })
    const before = allFiles(files).map((p) => readFileSync(p))
    chmodSync(files.serverKey, 0o644)
    await initPki({ dir: files.dir, force: true })
    allFiles(files).forEach((p, i) => expect(readFileSync(p).equals(before[i]!)).toBe(false))
    expect(mode(files.serverKey)).toBe(0o600)
    expect(cert(files.serverCert).verify(cert(files.caCert).publicKey)).toBe(true)
  })
})

interface Exchange { reply?: string; error?: string; peerCn?: string; protocol?: string | null }

/** Connects, sends one line, waits for one line back; reports an error or premature close instead of throwing. */
function exchange(port: number, options: tls.ConnectionOptions): Promise<Exchange> {
  return new Promise((resolve) => {
    let buffered = ''
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', minVersion: 'TLSv1.3', ...options })
    socket.setEncoding('utf8')
    socket.on('secureConnect', () => socket.write('ping\n'))
    socket.on('data', (chunk: string) => {
      buffered += chunk
      if (buffered.includes('\n')) {
        resolve({ reply: buffered.trim(), protocol: socket.getProtocol() })
        socket.end()
      }
    })
    socket.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }))
    socket.on('close', () => resolve({ error: 'closed without data' }))
  })
}

describe('real TLS 1.3 handshake with the issued certificates', () => {
  let pki: Awaited<ReturnType<typeof makeTestPki>>
  let other: Awaited<ReturnType<typeof makeTestPki>>
  let server: tls.Server
  let port: number
  const peers: string[] = []

  beforeAll(async () => {
    ;[pki, other] = await Promise.all([makeTestPki(), makeTestPki()])
    server = tls.createServer({
      cert: readFileSync(pki.serverCert),
      key: readFileSync(pki.serverKey),
      ca: readFileSync(pki.caCert),
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3',
    }, (socket) => {
      peers.push(String(socket.getPeerCertificate().subject?.CN))
      socket.setEncoding('utf8')
      socket.once('data', (line: string) => socket.end(`pong ${line.trim()}\n`))
    })
    server.on('tlsClientError', () => { /* expected for the refused clients */ })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    port = (server.address() as AddressInfo).port
  })

  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()))
    pki.cleanup()
    other.cleanup()
  })

  it('makeTestPki issues a separate CA per call', () => {
    expect(pki.dir).not.toBe(other.dir)
    expect(readFileSync(pki.caCert).equals(readFileSync(other.caCert))).toBe(false)
  })

  it('accepts the proxy client certificate and exchanges a line', async () => {
    const result = await exchange(port, {
      ca: readFileSync(pki.caCert), cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey),
    })
    expect(result).toEqual({ reply: 'pong ping', protocol: 'TLSv1.3' })
    expect(peers).toContain('gatehouse-proxy')
  })

  it('refuses a client without a certificate', async () => {
    const accepted = peers.length
    const result = await exchange(port, { ca: readFileSync(pki.caCert) })
    expect(result.reply).toBeUndefined()
    expect(result.error).toBeDefined()
    expect(peers.length).toBe(accepted)
  })

  it('refuses a client certificate from another CA', async () => {
    const accepted = peers.length
    const result = await exchange(port, {
      ca: readFileSync(pki.caCert), cert: readFileSync(other.clientCert), key: readFileSync(other.clientKey),
    })
    expect(result.reply).toBeUndefined()
    expect(result.error).toBeDefined()
    expect(peers.length).toBe(accepted)
  })

  it('a client that trusts a different CA refuses the server', async () => {
    const result = await exchange(port, {
      ca: readFileSync(other.caCert), cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey),
    })
    // The server also sends its CA (OpenSSL completes the chain from `ca`), hence "self-signed in chain".
    expect(['SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE']).toContain(result.error)
    expect(result.reply).toBeUndefined()
  })

  it('a client expecting another host name refuses the server', async () => {
    const result = await exchange(port, {
      servername: 'not-listed.example.test',
      ca: readFileSync(pki.caCert), cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey),
    })
    expect(result).toEqual({ error: 'ERR_TLS_CERT_ALTNAME_INVALID' })
  })
})
