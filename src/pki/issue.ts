import { KeyObject, webcrypto } from 'node:crypto'
import { isIP } from 'node:net'
// Before @peculiar/x509: its tsyringe dependency needs Reflect metadata at load time.
import './reflectShim.js'
import * as x509 from '@peculiar/x509'
import { ConfigError } from '../errors.js'

/**
 * In-memory issuance of the development PKI: one CA, one server certificate, one client
 * certificate for the proxy. Nothing here touches the file system, so a failure leaves no
 * half-written set behind (files.ts writes only once everything has been issued).
 *
 * Every key is ECDSA P-256 and every signature ECDSA with SHA-256: small, fast, and accepted by
 * OpenSSL, uWebSockets.js and every mobile TLS stack we care about.
 */

/** The webcrypto provider is passed explicitly to every call, so we never mutate the library's global provider. */
const crypto = webcrypto
const KEY_ALG: webcrypto.EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' }
const SIGN_ALG: webcrypto.EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' }
const DAY_MS = 86_400_000
/** Certificates start a little in the past so a peer whose clock is slightly behind still accepts them. */
const BACKDATE_MS = 5 * 60_000

export const CA_SUBJECT = 'CN=Gatehouse Development CA, O=Gatehouse'
export const SERVER_SUBJECT = 'CN=gatehouse-server, O=Gatehouse'
export const CLIENT_SUBJECT = 'CN=gatehouse-proxy, O=Gatehouse'
/** SANs every server certificate carries, so local development works with no configuration. */
export const DEFAULT_SERVER_NAMES = ['localhost', '127.0.0.1', '::1']
export const DEFAULT_VALIDITY_DAYS = 397
export const CA_VALIDITY_DAYS = 3650

export interface IssuedPair {
  /** Certificate, PEM. */
  cert: string
  /** Private key, PEM PKCS#8. */
  key: string
}

export interface IssuedPki {
  ca: IssuedPair
  server: IssuedPair
  client: IssuedPair
}

export interface IssueOptions {
  names?: string[]
  validityDays?: number
  now?: Date
}

const DNS_LABEL = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?'
/** A host name, optionally with a leading wildcard label (`*.example.test`). */
const DNS_NAME = new RegExp(`^(?:\\*\\.)?${DNS_LABEL}(?:\\.${DNS_LABEL})*$`)

/**
 * Canonical text form of an IP address (IPv6 compressed, lower case), or undefined when `value`
 * is not one. The WHATWG URL parser does the canonicalisation, which also turns forms such as
 * `::ffff:1.2.3.4` into pure hex groups that the ASN.1 encoder accepts.
 */
export function canonicalIp(value: string): string | undefined {
  const bare = value.startsWith('[') && value.endsWith(']') ? value.slice(1, -1) : value
  const family = isIP(bare)
  if (family === 4) return new URL(`http://${bare}/`).hostname
  if (family === 6) return new URL(`http://[${bare}]/`).hostname.slice(1, -1)
  return undefined
}

/** Splits names into the server certificate's SAN entries: IP addresses as IP SANs, the rest as DNS SANs. */
export function serverAltNames(names: readonly string[]): x509.JsonGeneralName[] {
  const seen = new Set<string>()
  const out: x509.JsonGeneralName[] = []
  for (const raw of [...DEFAULT_SERVER_NAMES, ...names]) {
    const name = raw.trim().toLowerCase().replace(/\.$/, '')
    const ip = canonicalIp(name)
    let entry: x509.JsonGeneralName
    if (ip !== undefined) {
      entry = { type: 'ip', value: ip }
    } else if (name.length <= 253 && DNS_NAME.test(name)) {
      entry = { type: 'dns', value: name }
    } else {
      throw new ConfigError(`names: ${JSON.stringify(raw)} is neither a DNS name nor an IP address`)
    }
    const id = `${entry.type}:${entry.value}`
    if (!seen.has(id)) {
      seen.add(id)
      out.push(entry)
    }
  }
  return out
}

function checkValidity(days: number): number {
  if (!Number.isFinite(days) || days < 1 || days > 100 * 365) {
    throw new ConfigError(`validityDays: must be a number of days between 1 and 36500, got ${days}`)
  }
  return days
}

async function newKeys(): Promise<webcrypto.CryptoKeyPair> {
  // Extractable: the private key is written to disk right after.
  return crypto.subtle.generateKey(KEY_ALG, true, ['sign', 'verify'])
}

function keyPem(key: webcrypto.CryptoKey): string {
  return KeyObject.from(key).export({ type: 'pkcs8', format: 'pem' }).toString()
}

interface Issuer {
  cert: x509.X509Certificate
  keys: webcrypto.CryptoKeyPair
  keyId: string
}

async function issueCa(notBefore: Date, notAfter: Date): Promise<Issuer> {
  const keys = await newKeys()
  const ski = await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto)
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: CA_SUBJECT,
    keys,
    notBefore,
    notAfter,
    signingAlgorithm: SIGN_ALG,
    extensions: [
      // pathLength 0: this CA signs leaf certificates only, never another CA.
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      ski,
    ],
  }, crypto)
  return { cert, keys, keyId: ski.keyId }
}

async function issueLeaf(
  ca: Issuer,
  subject: string,
  usage: x509.ExtendedKeyUsage,
  notBefore: Date,
  notAfter: Date,
  altNames?: x509.JsonGeneralName[],
): Promise<IssuedPair> {
  const keys = await newKeys()
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    // ECDHE key exchange: the certificate key only signs the handshake.
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([usage], false),
    // AKI carries the CA's SKI so chain building picks the right CA after a --force re-issue.
    new x509.AuthorityKeyIdentifierExtension(ca.keyId, false),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
  ]
  if (altNames) extensions.push(new x509.SubjectAlternativeNameExtension(altNames, false))
  const cert = await x509.X509CertificateGenerator.create({
    subject,
    issuer: ca.cert.subject,
    publicKey: keys.publicKey,
    signingKey: ca.keys.privateKey,
    notBefore,
    notAfter,
    signingAlgorithm: SIGN_ALG,
    extensions,
  }, crypto)
  return { cert: cert.toString('pem'), key: keyPem(keys.privateKey) }
}

/** Issues a fresh CA and the server and proxy-client certificates it signs. */
export async function issuePki(opts: IssueOptions = {}): Promise<IssuedPki> {
  const days = checkValidity(opts.validityDays ?? DEFAULT_VALIDITY_DAYS)
  const altNames = serverAltNames(opts.names ?? [])
  const now = (opts.now ?? new Date()).getTime()
  const notBefore = new Date(now - BACKDATE_MS)
  const leafNotAfter = new Date(now + days * DAY_MS)
  // The CA must outlive what it signs, or the leaves would stop verifying before their own expiry.
  const caNotAfter = new Date(now + Math.max(CA_VALIDITY_DAYS, days + 1) * DAY_MS)

  const ca = await issueCa(notBefore, caNotAfter)
  const server = await issueLeaf(ca, SERVER_SUBJECT, x509.ExtendedKeyUsage.serverAuth, notBefore, leafNotAfter, altNames)
  const client = await issueLeaf(ca, CLIENT_SUBJECT, x509.ExtendedKeyUsage.clientAuth, notBefore, leafNotAfter)
  return { ca: { cert: ca.cert.toString('pem'), key: keyPem(ca.keys.privateKey) }, server, client }
}
