/**
 * Check the proxy's TLS files before uWebSockets.js sees them: readable, a PEM certificate and a
 * PEM private key that belong together, valid now. uWS itself only says "App construction failed"
 * for a bad default certificate, and crashes the process (SIGSEGV) for a bad SNI certificate, so
 * every certificate is checked here first, at start and at each reload. Errors name the option
 * path (`proxy.tls.sni[1].key does not match proxy.tls.sni[1].cert`), never file contents.
 */
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { ConfigError } from '../errors.js'
import type { TlsFiles } from './uws.js'

/** One extra certificate, served to clients asking for `serverName` (SNI). */
export interface SniFiles extends TlsFiles {
  serverName: string
}

/** The TLS files of the device listener: the default certificate and any SNI ones. */
export interface ListenerTls extends TlsFiles {
  sni?: readonly SniFiles[] | undefined
}

/** What a checked certificate is (safe to log: public data). */
export interface CertSummary {
  /** Option path of the certificate, e.g. "proxy.tls" or "proxy.tls.sni[0]". */
  at: string
  serverName: string | undefined
  /** SHA-256 fingerprint, "AB:CD:…" as node:crypto spells it. */
  fingerprint256: string
  notAfter: string
}

function read(file: string, option: string): Buffer {
  try {
    return readFileSync(file)
  } catch (err) {
    throw new ConfigError(`${option} cannot be read: ${(err as NodeJS.ErrnoException).code ?? 'error'} (${file})`)
  }
}

/** Check one certificate and key pair; `at` is the option path of the pair ("proxy.tls"). */
export function checkPair(files: TlsFiles, at: string, now = Date.now()): X509Certificate {
  const certPem = read(files.certFile, `${at}.cert`)
  const keyPem = read(files.keyFile, `${at}.key`)
  let cert: X509Certificate
  try {
    // The first certificate of a chain file is the server's own.
    cert = new X509Certificate(certPem)
  } catch {
    throw new ConfigError(`${at}.cert is not a PEM certificate (${files.certFile})`)
  }
  let key: KeyObject
  try {
    key = createPrivateKey(keyPem)
  } catch {
    throw new ConfigError(`${at}.key is not a PEM private key, or it is encrypted (${files.keyFile})`)
  }
  if (!cert.checkPrivateKey(key)) throw new ConfigError(`${at}.key does not match ${at}.cert`)
  if (now > Date.parse(cert.validTo)) throw new ConfigError(`${at}.cert expired on ${cert.validTo}`)
  if (now < Date.parse(cert.validFrom)) throw new ConfigError(`${at}.cert is not valid before ${cert.validFrom}`)
  return cert
}

/** Check the default pair and every SNI pair; throws a ConfigError naming the first bad option. */
export function checkListenerTls(tls: ListenerTls, at = 'proxy.tls', now = Date.now()): CertSummary[] {
  const summary = (c: X509Certificate, path: string, serverName?: string): CertSummary => ({ at: path, serverName, fingerprint256: c.fingerprint256, notAfter: c.validTo })
  const out = [summary(checkPair(tls, at, now), at)]
  const seen = new Set<string>()
  tls.sni?.forEach((s, i) => {
    const path = `${at}.sni[${i}]`
    if (seen.has(s.serverName)) throw new ConfigError(`${path}.serverName duplicates an earlier name ("${s.serverName}")`)
    seen.add(s.serverName)
    out.push(summary(checkPair(s, path, now), path, s.serverName))
  })
  return out
}
