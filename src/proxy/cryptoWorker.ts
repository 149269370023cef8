/**
 * A crypto worker thread of the proxy's piscina pool (cryptoPool.ts): seals and opens one record
 * per task with the same functions the proxy uses inline, so both give the same bytes.
 */
import { move } from 'piscina'
import { openRecordJob, sealRecordJob } from '../protocol/envelope.js'
import type { CryptoResult, CryptoTask } from './cryptoMessages.js'

const buf = (u: Uint8Array): Buffer => Buffer.from(u.buffer, u.byteOffset, u.byteLength)

/** Transfer a result that owns its memory instead of copying it; a view of a shared slab is copied. */
function give(b: Buffer | null): CryptoResult {
  if (!b) return null
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? move(b) as Uint8Array : b
}

export default function run(t: CryptoTask): CryptoResult {
  if (t.op === 'seal') {
    return give(sealRecordJob({ key: buf(t.key), nonce: buf(t.nonce), aad: buf(t.aad), header: buf(t.header), plaintext: buf(t.plaintext) }))
  }
  return give(openRecordJob({ key: buf(t.key), nonce: buf(t.nonce), aad: buf(t.aad), record: buf(t.record), length: t.length }))
}
