import { existsSync } from 'node:fs'
import { chmod, mkdir, rename, rm, writeFile } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { basename, join, resolve } from 'node:path'
import { ExistsError } from '../errors.js'
import { issuePki } from './issue.js'

/**
 * The development PKI on disk (`gatehouse certs init`, first `npm start`): a CA, the server
 * certificate shared by the security server and the proxy, and the client certificate the proxy
 * presents to the security server's mutually authenticated listener.
 */

export { certificateInfo, type CertificateInfo } from './info.js'
export { DEFAULT_VALIDITY_DAYS, CA_VALIDITY_DAYS } from './issue.js'

/** Absolute paths of the six PKI files. */
export interface PkiFiles {
  dir: string
  caCert: string
  caKey: string
  serverCert: string
  serverKey: string
  clientCert: string
  clientKey: string
}

export interface InitPkiOptions {
  dir: string
  /** Extra server SANs: IP addresses become IP SANs, anything else a DNS SAN. */
  names?: string[]
  /** Replace existing files (and the CA: every certificate is re-issued). */
  force?: boolean
  /** Validity of the server and client certificates. Default 397 days (the browser maximum). */
  validityDays?: number
  /** Issuance time, for tests. */
  now?: Date
}

const KEY_MODE = 0o600
const CERT_MODE = 0o644

export function pkiPaths(dir: string): PkiFiles {
  const abs = resolve(dir)
  return {
    dir: abs,
    caCert: join(abs, 'ca.crt'),
    caKey: join(abs, 'ca.key'),
    serverCert: join(abs, 'server.crt'),
    serverKey: join(abs, 'server.key'),
    clientCert: join(abs, 'proxy-client.crt'),
    clientKey: join(abs, 'proxy-client.key'),
  }
}

function filePaths(files: PkiFiles): string[] {
  return [files.caCert, files.caKey, files.serverCert, files.serverKey, files.clientCert, files.clientKey]
}

/** True when all six files are present (contents are not checked). */
export function pkiExists(dir: string): boolean {
  return filePaths(pkiPaths(dir)).every((p) => existsSync(p))
}

/**
 * Issues a new development PKI into `dir`. Refuses to touch existing files unless `force`.
 *
 * Everything is issued in memory, then written to temporary files in the same directory, then
 * renamed into place: a failure part-way leaves the old set (or nothing) rather than a CA that
 * does not match its leaves, and a rename replaces a symlink instead of writing through it.
 */
export async function initPki(opts: InitPkiOptions): Promise<PkiFiles> {
  const files = pkiPaths(opts.dir)
  const existing = filePaths(files).filter((p) => existsSync(p))
  if (existing.length > 0 && opts.force !== true) {
    const names = existing.map((p) => basename(p)).join(', ')
    throw new ExistsError(`PKI files already exist in ${files.dir}: ${names}; use --force to replace them`)
  }

  const pki = await issuePki({ names: opts.names, validityDays: opts.validityDays, now: opts.now })
  // Created 0700 so keys are never readable by others even for an instant; an existing directory is left as is.
  await mkdir(files.dir, { recursive: true, mode: 0o700 })

  const plan: Array<[path: string, data: string, mode: number]> = [
    [files.caKey, pki.ca.key, KEY_MODE],
    [files.caCert, pki.ca.cert, CERT_MODE],
    [files.serverKey, pki.server.key, KEY_MODE],
    [files.serverCert, pki.server.cert, CERT_MODE],
    [files.clientKey, pki.client.key, KEY_MODE],
    [files.clientCert, pki.client.cert, CERT_MODE],
  ]
  const suffix = `.${process.pid}.${randomBytes(6).toString('hex')}.tmp`
  const staged: Array<[tmp: string, path: string]> = []
  try {
    for (const [path, data, mode] of plan) {
      const tmp = path + suffix
      staged.push([tmp, path])
      // 'wx': the temporary name must be new. The mode on open is reduced by the umask, hence the chmod.
      await writeFile(tmp, data, { mode, flag: 'wx' })
      await chmod(tmp, mode)
    }
  } catch (err) {
    await Promise.all(staged.map(([tmp]) => rm(tmp, { force: true })))
    throw err
  }
  for (const [tmp, path] of staged) await rename(tmp, path)
  return files
}
