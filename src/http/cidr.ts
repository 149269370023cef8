/**
 * CIDR allow-lists (IPv4 and IPv6), parsed once at start-up. An IPv4 client seen on a dual-stack
 * socket as ::ffff:a.b.c.d matches IPv4 entries.
 */
import { isIP } from 'node:net'
import { ConfigError } from '../errors.js'

interface Range {
  v6: boolean
  bytes: Uint8Array
  prefix: number
}

function toBytes(ip: string): Uint8Array | undefined {
  const kind = isIP(ip)
  if (kind === 4) return Uint8Array.from(ip.split('.').map(Number))
  if (kind !== 6) return undefined
  // Expand "::" and an embedded IPv4 tail into 8 groups.
  let s = ip
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s)
  if (v4) {
    const b = v4[1]!.split('.').map(Number)
    s = s.slice(0, -v4[1]!.length) + `${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`
  }
  const [head, tail] = s.split('::') as [string, string | undefined]
  const h = head ? head.split(':') : []
  const t = tail !== undefined && tail !== '' ? tail.split(':') : []
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t]
  const out = new Uint8Array(16)
  groups.forEach((g, i) => {
    const n = parseInt(g, 16)
    out[i * 2] = n >> 8
    out[i * 2 + 1] = n & 0xff
  })
  return out
}

/** Normalise ::ffff:a.b.c.d to a.b.c.d. */
export function normaliseIp(ip: string): string {
  return ip.startsWith('::ffff:') && isIP(ip.slice(7)) === 4 ? ip.slice(7) : ip
}

export class CidrList {
  private readonly ranges: Range[]

  /** @param path the option path, for error messages */
  constructor(readonly entries: readonly string[], path = 'cidrs') {
    this.ranges = entries.map((e, i) => {
      const [ip, bits] = e.split('/') as [string, string | undefined]
      const bytes = toBytes(ip)
      if (!bytes) throw new ConfigError(`${path}[${i}] must be an IPv4 or IPv6 address or CIDR, got "${e}"`)
      const max = bytes.length * 8
      const prefix = bits === undefined ? max : Number(bits)
      if (!Number.isInteger(prefix) || prefix < 0 || prefix > max || (bits !== undefined && !/^\d+$/.test(bits))) {
        throw new ConfigError(`${path}[${i}] has an invalid prefix length in "${e}"`)
      }
      return { v6: bytes.length === 16, bytes, prefix }
    })
  }

  has(address: string | undefined): boolean {
    if (!address) return false
    const bytes = toBytes(normaliseIp(address))
    if (!bytes) return false
    const v6 = bytes.length === 16
    for (const r of this.ranges) {
      if (r.v6 !== v6) continue
      let bits = r.prefix
      let i = 0
      for (; bits >= 8; bits -= 8, i++) if (r.bytes[i] !== bytes[i]) break
      if (bits >= 8) continue
      if (bits === 0) return true
      const mask = (0xff << (8 - bits)) & 0xff
      if ((r.bytes[i]! & mask) === (bytes[i]! & mask)) return true
    }
    return false
  }
}
