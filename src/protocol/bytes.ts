/** Small byte helpers used to build key-schedule inputs and AADs unambiguously. */

/** Concatenate, prefixing each part with its length (u16 BE) so that no two inputs collide. */
export function lengthPrefixed(...parts: (Buffer | string)[]): Buffer {
  const bufs: Buffer[] = []
  for (const p of parts) {
    const b = typeof p === 'string' ? Buffer.from(p, 'utf8') : p
    if (b.length > 0xffff) throw new RangeError('length-prefixed part over 65535 bytes')
    const len = Buffer.allocUnsafe(2)
    len.writeUInt16BE(b.length, 0)
    bufs.push(len, b)
  }
  return Buffer.concat(bufs)
}

export function u64(n: number | bigint): Buffer {
  const b = Buffer.allocUnsafe(8)
  b.writeBigUInt64BE(BigInt(n), 0)
  return b
}

const B64URL_RE = /^[A-Za-z0-9_-]*$/

/** Strict base64url decode: rejects characters outside the alphabet (Buffer.from is lenient). */
export function fromBase64url(s: unknown, expectedBytes?: number): Buffer | undefined {
  if (typeof s !== 'string' || !B64URL_RE.test(s) || s.length % 4 === 1) return undefined
  const b = Buffer.from(s, 'base64url')
  if (expectedBytes !== undefined && b.length !== expectedBytes) return undefined
  // Reject non-canonical encodings (stray trailing bits) so one value has one spelling.
  if (b.toString('base64url') !== s) return undefined
  return b
}
