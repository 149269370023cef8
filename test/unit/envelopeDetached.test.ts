/** Records sealed and opened detached from their envelope (the crypto pool's jobs): same bytes as inline. */
import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { MalformedError } from '../../src/errors.js'
import { EnvelopeDecoder, EnvelopeEncoder, openRecordJob, sealRecordJob } from '../../src/protocol/envelope.js'

const key = randomBytes(32)
const sessionId = randomBytes(16).toString('base64url')
const requestLine = 'PUT /files/report.pdf'
const params = { kind: 'request' as const, key, sessionId, requestLine }
const bodies = [Buffer.alloc(0), randomBytes(1), randomBytes(65_536), randomBytes(70_000)]

function inlineEnvelope(body: Buffer, seq = 9): Buffer {
  const enc = new EnvelopeEncoder({ ...params, seq, timestampMs: 1_700_000_000_000 })
  return Buffer.concat([enc.preamble, enc.record(Buffer.from('{"h":[]}'), false), ...enc.body(body)])
}

describe('detached seal (EnvelopeEncoder.prepare + sealRecordJob)', () => {
  it.each(bodies.map((b) => [b.length, b] as const))('gives the same bytes as record() for a %i-byte body', (_n, body) => {
    const enc = new EnvelopeEncoder({ ...params, seq: 9, timestampMs: 1_700_000_000_000 })
    const parts = [enc.preamble, sealRecordJob(enc.prepare(Buffer.from('{"h":[]}'), false))]
    const chunks = body.length === 0 ? [body] : Array.from({ length: Math.ceil(body.length / 65_536) }, (_, i) => body.subarray(i * 65_536, (i + 1) * 65_536))
    chunks.forEach((c, i) => parts.push(sealRecordJob(enc.prepare(c, i === chunks.length - 1))))
    expect(Buffer.concat(parts).equals(inlineEnvelope(body))).toBe(true)
    expect(enc.recordsWritten).toBe(chunks.length + 1)
  })

  it('a job owns its nonce and AAD: preparing the next record does not change the previous job', () => {
    const enc = new EnvelopeEncoder({ ...params, seq: 3, timestampMs: 1 })
    const first = enc.prepare(Buffer.from('{}'), false)
    const nonce = Buffer.from(first.nonce)
    const aad = Buffer.from(first.aad)
    enc.prepare(Buffer.from('x'), true)
    expect(first.nonce.equals(nonce)).toBe(true)
    expect(first.aad.equals(aad)).toBe(true)
  })

  it('refuses records after the final one and over 64 KiB, like record()', () => {
    const enc = new EnvelopeEncoder({ ...params, seq: 3, timestampMs: 1 })
    expect(() => enc.prepare(Buffer.alloc(65_537), false)).toThrow(RangeError)
    enc.prepare(Buffer.from('{}'), true)
    expect(() => enc.prepare(Buffer.from('x'), true)).toThrow('envelope already finished')
  })
})

describe('detached open (EnvelopeDecoder.pushFramed + openRecordJob)', () => {
  it.each(bodies.map((b) => [b.length, b] as const))('gives the same plaintexts as push() for a %i-byte body, in any chunking', (_n, body) => {
    const env = inlineEnvelope(body)
    const inline = new EnvelopeDecoder(params).push(env)
    for (const size of [env.length, 7, 4096]) {
      const dec = new EnvelopeDecoder(params)
      const framed = []
      for (let o = 0; o < env.length; o += size) {
        const chunk = Buffer.from(env.subarray(o, o + size))
        framed.push(...dec.pushFramed(chunk))
        chunk.fill(0) // the caller reuses its buffer: jobs hold copies
      }
      dec.end()
      expect(framed.map((r) => [r.index, r.head, r.final, r.length])).toEqual(inline.map((r) => [r.index, r.head, r.final, r.plaintext.length]))
      framed.forEach((r, i) => expect(openRecordJob(r.job)!.equals(inline[i]!.plaintext)).toBe(true))
    }
  })

  it('a tampered record opens to null (the caller refuses it), the others still open', () => {
    const env = Buffer.from(inlineEnvelope(randomBytes(100_000)))
    env[env.length - 40] = env[env.length - 40]! ^ 0x01 // in the last record's ciphertext
    const framed = new EnvelopeDecoder(params).pushFramed(env)
    expect(framed).toHaveLength(3)
    expect(openRecordJob(framed[0]!.job)).not.toBeNull()
    expect(openRecordJob(framed[1]!.job)).not.toBeNull()
    expect(openRecordJob(framed[2]!.job)).toBeNull()
  })

  it('checks framing as push() does, before any decryption', () => {
    const env = Buffer.from(inlineEnvelope(randomBytes(10)))
    env[20] = 0x0a // HEAD | an unknown flag bit (0x08)
    expect(() => new EnvelopeDecoder(params).pushFramed(env)).toThrow(MalformedError)
  })
})
