/**
 * `gatehouse certs init|show`: the development PKI (a CA, the server certificate shared by the
 * security server and the proxy, and the proxy's client certificate) in config `certsDir`.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { basename, join, resolve } from 'node:path'
import { loadConfig } from '../../config/load.js'
import type { CertificateInfo } from '../../pki/devCa.js'
import { expectPositionals, flag, intOption, stringListOption, stringOption } from '../args.js'
import type { Command, CommandContext } from '../commands.js'

/** Loaded on use: the X.509 library costs a noticeable part of every CLI start-up. */
const pki = () => import('../../pki/devCa.js')

function certsDir(ctx: CommandContext): string {
  return resolve(stringOption(ctx.values, 'dir') ?? loadConfig(stringOption(ctx.values, 'config')).certsDir)
}

/** `CN=a\nO=b` (node's format) → `CN=a, O=b`. */
const oneLine = (dn: string) => dn.split('\n').filter(Boolean).join(', ')

function sans(info: CertificateInfo): string {
  const all = [...info.dnsNames.map((n) => `DNS:${n}`), ...info.ipAddresses.map((ip) => `IP:${ip}`)]
  return all.length > 0 ? all.join(', ') : 'none'
}

function expiry(info: CertificateInfo, now = Date.now()): string {
  const days = Math.floor((info.notAfter.getTime() - now) / 86_400_000)
  const when = info.notAfter.toISOString()
  return info.notAfter.getTime() <= now ? `${when} (EXPIRED)` : `${when} (${days} day${days === 1 ? '' : 's'} left)`
}

export const certsInit: Command = {
  name: 'certs init',
  summary: 'Issue the development PKI (CA, server and proxy client certificates)',
  usage: 'certs init [--dir DIR] [--name NAME ...] [--force] [--days N]',
  details: [
    'Options:',
    '  --dir DIR     where to write the files (default: certsDir of the configuration, "certs")',
    '  --name NAME   extra host name or IP address of the server certificate (repeatable);',
    '                localhost, 127.0.0.1 and ::1 are always included',
    '  --days N      validity of the server and client certificates (default 397)',
    '  --force       replace existing files (every certificate is re-issued, with a new CA)',
    '',
    'Keys are written mode 0600. Devices and the proxy must trust ca.crt.',
  ].join('\n'),
  options: {
    dir: { type: 'string' },
    name: { type: 'string', multiple: true },
    force: { type: 'boolean' },
    days: { type: 'string' },
  },
  async run(ctx) {
    expectPositionals(ctx.positionals, [])
    const dir = certsDir(ctx)
    const names = stringListOption(ctx.values, 'name')
    const validityDays = intOption(ctx.values, 'days', { min: 1, max: 36500 })
    const { certificateInfo, initPki } = await pki()
    const files = await initPki({ dir, names, force: flag(ctx.values, 'force'), validityDays })
    const written: Array<[string, string]> = [
      [files.caCert, 'CA certificate (devices and the proxy trust it)'],
      [files.caKey, 'CA private key'],
      [files.serverCert, 'server certificate (security server and proxy)'],
      [files.serverKey, 'server private key'],
      [files.clientCert, 'client certificate of the proxy'],
      [files.clientKey, 'client private key of the proxy'],
    ]
    const width = Math.max(...written.map(([p]) => p.length))
    ctx.stdout.write(`wrote the development PKI to ${files.dir}:\n`)
    for (const [p, what] of written) ctx.stdout.write(`  ${p.padEnd(width)}  ${what}\n`)
    const server = certificateInfo(readFileSync(files.serverCert))
    ctx.stdout.write(`server names: ${sans(server)}\nvalid until: ${expiry(server)}\n`)
  },
}

/** Certificates to show: the PKI's own first, then any other *.crt / *.pem holding a certificate. */
function certificateFiles(dir: string): string[] {
  const first = ['ca.crt', 'server.crt', 'proxy-client.crt'].map((n) => join(dir, n))
  const others = readdirSync(dir)
    .filter((n) => /\.(crt|pem)$/.test(n))
    .map((n) => join(dir, n))
    .filter((p) => !first.includes(p))
    .sort()
  return [...first.filter((p) => existsSync(p)), ...others].filter((p) => {
    try {
      return readFileSync(p, 'utf8').includes('-----BEGIN CERTIFICATE-----')
    } catch {
      return true // unreadable: shown with its error below
    }
  })
}

export const certsShow: Command = {
  name: 'certs show',
  summary: 'Show subject, names and expiry of the certificates',
  usage: 'certs show [--dir DIR]',
  details: [
    'Options:',
    '  --dir DIR   folder to read (default: certsDir of the configuration, "certs")',
    '',
    'Exit status 1 when the folder holds no certificate or one cannot be read.',
  ].join('\n'),
  options: {
    dir: { type: 'string' },
  },
  async run(ctx) {
    expectPositionals(ctx.positionals, [])
    const { certificateInfo } = await pki()
    const dir = certsDir(ctx)
    const files = existsSync(dir) ? certificateFiles(dir) : []
    if (files.length === 0) {
      ctx.stderr.write(`gatehouse: no certificates in ${dir}; run 'gatehouse certs init'\n`)
      return 1
    }
    let failed = false
    files.forEach((file, i) => {
      if (i > 0) ctx.stdout.write('\n')
      let info: CertificateInfo
      try {
        info = certificateInfo(readFileSync(file))
      } catch (err) {
        failed = true
        const reason = (err as NodeJS.ErrnoException).code ?? (err as Error).message
        ctx.stderr.write(`gatehouse: ${basename(file)}: cannot read the certificate (${reason})\n`)
        return
      }
      ctx.stdout.write([
        `${file}`,
        `  subject:  ${oneLine(info.subject)}`,
        `  issuer:   ${oneLine(info.issuer)}`,
        `  SANs:     ${sans(info)}`,
        `  notAfter: ${expiry(info)}`,
        `  SHA-256:  ${info.fingerprint256}`,
        '',
      ].join('\n'))
    })
    return failed ? 1 : 0
  },
}

export const certsCommands: Command[] = [certsInit, certsShow]
