import { X509Certificate } from 'node:crypto'
// Before @peculiar/x509: its tsyringe dependency needs Reflect metadata at load time.
import './reflectShim.js'
import * as x509 from '@peculiar/x509'
import { canonicalIp } from './issue.js'

export interface CertificateInfo {
  /** Subject DN as node prints it, one `K=V` per line (e.g. `CN=gatehouse-server\nO=Gatehouse`). */
  subject: string
  issuer: string
  notBefore: Date
  notAfter: Date
  dnsNames: string[]
  /** Canonical text form (IPv6 compressed), so `::1` compares equal whatever the encoder wrote. */
  ipAddresses: string[]
  /** SHA-256 fingerprint, upper-case hex pairs separated by colons (node's format). */
  fingerprint256: string
}

/**
 * Summary of one PEM certificate (the first, if the input is a chain): what the expiry metric
 * and `gatehouse certs show` need. node:crypto parses the certificate; the SANs are read with
 * @peculiar/x509 because node's `subjectAltName` is a display string with its own quoting rules.
 */
export function certificateInfo(pem: string | Buffer): CertificateInfo {
  const cert = new X509Certificate(pem)
  const dnsNames: string[] = []
  const ipAddresses: string[] = []
  const san = new x509.X509Certificate(cert.raw).getExtension(x509.SubjectAlternativeNameExtension)
  for (const name of san?.names.toJSON() ?? []) {
    if (name.type === 'dns') dnsNames.push(name.value)
    else if (name.type === 'ip') ipAddresses.push(canonicalIp(name.value) ?? name.value)
  }
  return {
    subject: cert.subject,
    issuer: cert.issuer,
    // validFrom/validTo are OpenSSL's `Mmm dd hh:mm:ss yyyy GMT`, which Date parses.
    notBefore: new Date(cert.validFrom),
    notAfter: new Date(cert.validTo),
    dnsNames,
    ipAddresses,
    fingerprint256: cert.fingerprint256,
  }
}
