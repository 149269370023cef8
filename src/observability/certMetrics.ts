/**
 * `gatehouse_cert_expiry_timestamp_seconds{cert}`: when each configured certificate expires, read
 * from its file at every scrape (so a certificate replaced on disk shows at once). Alert on
 * `gatehouse_cert_expiry_timestamp_seconds - time() < 14 * 86400`.
 */
import { readFileSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import { Gauge, type Registry } from 'prom-client'
import { NAMESPACE } from './metrics.js'

export interface CertFile {
  /** Label value: what the certificate is for (bounded: server, proxy_client, ca, …). */
  cert: string
  path: string
}

export function registerCertExpiry(registry: Registry, files: readonly CertFile[]): void {
  new Gauge({
    name: `${NAMESPACE}_cert_expiry_timestamp_seconds`,
    help: 'Expiry (notAfter) of each configured certificate, as a Unix timestamp; absent when the file cannot be read.',
    labelNames: ['cert'] as const,
    registers: [registry],
    collect() {
      this.reset()
      for (const f of files) {
        const notAfter = readNotAfter(f.path)
        if (notAfter !== undefined) this.set({ cert: f.cert }, notAfter)
      }
    },
  })
}

function readNotAfter(path: string): number | undefined {
  try {
    // validTo is "Dec 25 17:10:57 2027 GMT" (validToDate only arrives in Node 22).
    const t = Date.parse(new X509Certificate(readFileSync(path)).validTo)
    return Number.isFinite(t) ? Math.floor(t / 1000) : undefined
  } catch {
    return undefined
  }
}
