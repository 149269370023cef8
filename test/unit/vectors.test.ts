/**
 * The committed protocol vectors (test/vectors/*.json):
 *  1. equal what test/vectors/build.ts produces from the implementation today (drift check);
 *  2. are verified from their own inputs by a small second implementation written here from
 *     docs/protocol.md (HKDF from HMAC, ECDH through KeyObjects, own AAD/nonce/preamble parsing),
 *     so a change to the code and the JSON together is still caught;
 *  3. decode with EnvelopeDecoder / re-encode with EnvelopeEncoder / re-derive with keySchedule.ts.
 *
 * Regenerate after an intended protocol change: GATEHOUSE_WRITE_VECTORS=1 npx vitest run test/unit/vectors.test.ts
 */
import {
  createCipheriv, createDecipheriv, createHash, createHmac, createPrivateKey, createPublicKey, diffieHellman,
} from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { GatehouseError } from '../../src/errors.js'
import { EnvelopeDecoder, EnvelopeEncoder } from '../../src/protocol/envelope.js'
import { decodeRequestHead, decodeResponseHead } from '../../src/protocol/head.js'
import {
  commandAckProof, deriveResponseKey, deriveSessionKeys, deriveSharedKey, ecdhSecret, enrollConfirmation, generateEcdhKeyPair,
  sessionAcceptProof, sessionCloseProof, sessionOpenProof,
} from '../../src/protocol/keySchedule.js'
import { VECTOR_FILES, materialize, type BytesSpec } from '../vectors/build.js'

const VECTOR_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'vectors')

if (process.env.GATEHOUSE_WRITE_VECTORS === '1') {
  for (const [file, build] of Object.entries(VECTOR_FILES)) {
    writeFileSync(join(VECTOR_DIR, file), JSON.stringify(build(), null, 2) + '\n')
  }
}

function load<T>(file: keyof typeof VECTOR_FILES): T {
  return JSON.parse(readFileSync(join(VECTOR_DIR, file), 'utf8')) as T
}

// ---------------------------------------------------------------------------------------------
// Reference implementation, from the specification only (labels spelled out, not imported).

const h = (s: string): Buffer => Buffer.from(s, 'hex')

function lp(...parts: (Buffer | string)[]): Buffer {
  return Buffer.concat(parts.flatMap((p) => {
    const b = typeof p === 'string' ? Buffer.from(p, 'utf8') : p
    const len = Buffer.alloc(2)
    len.writeUInt16BE(b.length)
    return [len, b]
  }))
}

function u64(n: number): Buffer {
  const b = Buffer.alloc(8)
  b.writeBigUInt64BE(BigInt(n))
  return b
}

const hmacRef = (key: Buffer, data: Buffer): Buffer => createHmac('sha256', key).update(data).digest()

/** RFC 5869 over HMAC-SHA256. */
function hkdfRef(ikm: Buffer, salt: Buffer, info: Buffer, length = 32): Buffer {
  const prk = hmacRef(salt.length > 0 ? salt : Buffer.alloc(32), ikm)
  const blocks: Buffer[] = []
  let t: Buffer = Buffer.alloc(0)
  for (let i = 1; Buffer.concat(blocks).length < length; i++) {
    t = hmacRef(prk, Buffer.concat([t, info, Buffer.from([i])]))
    blocks.push(t)
  }
  return Buffer.concat(blocks).subarray(0, length)
}

/** Public point from a private scalar through a SEC1 DER key (not createECDH, which the code uses). */
function publicFromPrivate(d: Buffer): Buffer {
  const der = Buffer.concat([
    h('30310201010420'), d, h('a00a06082a8648ce3d030107'),
  ])
  const spki = createPublicKey(createPrivateKey({ key: der, format: 'der', type: 'sec1' })).export({ type: 'spki', format: 'der' })
  return spki.subarray(spki.length - 65)
}

function ecdhRef(d: Buffer, peer: Buffer): Buffer {
  const mine = publicFromPrivate(d)
  const jwk = (pt: Buffer) => ({ kty: 'EC', crv: 'P-256', x: pt.subarray(1, 33).toString('base64url'), y: pt.subarray(33, 65).toString('base64url') })
  const privateKey = createPrivateKey({ key: { ...jwk(mine), d: d.toString('base64url') }, format: 'jwk' })
  const publicKey = createPublicKey({ key: jwk(peer), format: 'jwk' })
  return diffieHellman({ privateKey, publicKey })
}

function aadRef(direction: number, seq: number, ts: number, sessionId: string, requestLine: string, flags: number): Buffer {
  const sid = Buffer.from(sessionId, 'ascii')
  const line = Buffer.from(requestLine, 'ascii')
  const ll = Buffer.alloc(2)
  ll.writeUInt16BE(line.length)
  return Buffer.concat([Buffer.from('GH', 'ascii'), Buffer.from([1, direction]), u64(seq), u64(ts), Buffer.from([sid.length]), sid, ll, line, Buffer.from([flags])])
}

function nonceRef(seq: number, index: number): Buffer {
  const n = Buffer.alloc(12)
  n.writeBigUInt64BE(BigInt(seq))
  n.writeUInt32BE(index, 8)
  return n
}

interface ParsedRecord { flags: number; ciphertext: Buffer; tag: Buffer }

/** Parse an envelope by the documented layout (no checks beyond lengths). */
function parseEnvelope(env: Buffer): { magic: string; version: number; kind: number; seq: number; timestampMs?: number; salt?: Buffer; records: ParsedRecord[] } {
  const kind = env[3]!
  const seq = Number(env.readBigUInt64BE(4))
  const preambleLength = kind === 1 ? 20 : 28
  const records: ParsedRecord[] = []
  for (let o = preambleLength; o < env.length;) {
    const flags = env[o]!
    const len = env.readUIntBE(o + 1, 3)
    records.push({ flags, ciphertext: env.subarray(o + 4, o + 4 + len), tag: env.subarray(o + 4 + len, o + 4 + len + 16) })
    o += 4 + len + 16
  }
  return {
    magic: env.subarray(0, 2).toString('latin1'), version: env[2]!, kind, seq, records,
    ...(kind === 1 ? { timestampMs: Number(env.readBigUInt64BE(12)) } : { salt: env.subarray(12, 28) }),
  }
}

function errorCode(fn: () => void): string {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(GatehouseError)
    return (err as GatehouseError).code
  }
  return 'no error'
}

// ---------------------------------------------------------------------------------------------

describe('committed vectors equal what the implementation produces', () => {
  for (const [file, build] of Object.entries(VECTOR_FILES)) {
    it(file, () => {
      const committed: unknown = JSON.parse(readFileSync(join(VECTOR_DIR, file), 'utf8'))
      const fresh: unknown = JSON.parse(JSON.stringify(build()))
      expect(committed, `${file} is stale: GATEHOUSE_WRITE_VECTORS=1 npx vitest run test/unit/vectors.test.ts`).toEqual(fresh)
    })
  }
})

interface KeyScheduleVectors {
  ecdh: { curve: string; devicePrivateKey: string; devicePublicKey: string; serverPrivateKey: string; serverPublicKey: string; z: string }
  enrollment: { appId: string; deviceId: string; salt: string; info: string; sharedKey: string; enrollmentId: string; confirmationInput: string; confirmation: string }
  sessionOpen: { timestampMs: number; deviceNonce: string; proofInput: string; proof: string }
  session: { sessionId: string; serverNonce: string; acceptProofInput: string; acceptProof: string; keySalt: string; c2sInfo: string; c2s: string; s2cInfo: string; s2c: string }
  sessionClose: { timestampMs: number; proofInput: string; proof: string }
  response: { salt: string; info: string; key: string }
  commandAck: { commandId: string; timestampMs: number; proofInput: string; proof: string }
  wire: Record<string, Record<string, string | number>>
}

describe('key-schedule.json', () => {
  const v = load<KeyScheduleVectors>('key-schedule.json')
  const { ecdh, enrollment: en, sessionOpen: so, session: se, sessionClose: sc, response: re, commandAck: ca } = v

  it('public keys and ECDH Z (reference: SEC1 DER keys and crypto.diffieHellman)', () => {
    expect(ecdh.curve).toBe('P-256')
    expect(publicFromPrivate(h(ecdh.devicePrivateKey)).toString('hex')).toBe(ecdh.devicePublicKey)
    expect(publicFromPrivate(h(ecdh.serverPrivateKey)).toString('hex')).toBe(ecdh.serverPublicKey)
    expect(ecdhRef(h(ecdh.devicePrivateKey), h(ecdh.serverPublicKey)).toString('hex')).toBe(ecdh.z)
    expect(ecdhRef(h(ecdh.serverPrivateKey), h(ecdh.devicePublicKey)).toString('hex')).toBe(ecdh.z)
  })

  it('public keys and ECDH Z (implementation)', () => {
    expect(generateEcdhKeyPair(h(ecdh.devicePrivateKey)).publicKey.toString('hex')).toBe(ecdh.devicePublicKey)
    expect(generateEcdhKeyPair(h(ecdh.serverPrivateKey)).publicKey.toString('hex')).toBe(ecdh.serverPublicKey)
    expect(ecdhSecret(h(ecdh.devicePrivateKey), h(ecdh.serverPublicKey)).toString('hex')).toBe(ecdh.z)
    expect(ecdhSecret(h(ecdh.serverPrivateKey), h(ecdh.devicePublicKey)).toString('hex')).toBe(ecdh.z)
  })

  it('HKDF info and HMAC inputs follow the length-prefix rule', () => {
    expect(lp('gatehouse/v1 enroll', en.appId, en.deviceId, h(ecdh.devicePublicKey), h(ecdh.serverPublicKey)).toString('hex')).toBe(en.info)
    expect(lp('gatehouse/v1 enroll-confirm', en.enrollmentId).toString('hex')).toBe(en.confirmationInput)
    expect(lp('gatehouse/v1 session-open', en.enrollmentId, u64(so.timestampMs), h(so.deviceNonce)).toString('hex')).toBe(so.proofInput)
    expect(lp('gatehouse/v1 session-accept', se.sessionId, h(so.deviceNonce), h(se.serverNonce)).toString('hex')).toBe(se.acceptProofInput)
    expect(Buffer.concat([h(so.deviceNonce), h(se.serverNonce)]).toString('hex')).toBe(se.keySalt)
    expect(lp('gatehouse/v1 c2s', se.sessionId).toString('hex')).toBe(se.c2sInfo)
    expect(lp('gatehouse/v1 s2c', se.sessionId).toString('hex')).toBe(se.s2cInfo)
    expect(lp('gatehouse/v1 session-close', se.sessionId, u64(sc.timestampMs)).toString('hex')).toBe(sc.proofInput)
    expect(lp('gatehouse/v1 response').toString('hex')).toBe(re.info)
    expect(lp('gatehouse/v1 command-ack', ca.commandId, en.enrollmentId, u64(ca.timestampMs)).toString('hex')).toBe(ca.proofInput)
    // The prefix rule itself, spelled out once: "gatehouse/v1 response" is 21 bytes.
    expect(re.info.slice(0, 4)).toBe('0015')
  })

  it('keys and proofs (reference HKDF/HMAC over the listed inputs)', () => {
    const sharedKey = hkdfRef(h(ecdh.z), h(en.salt), h(en.info))
    expect(sharedKey.toString('hex')).toBe(en.sharedKey)
    expect(hmacRef(sharedKey, h(en.confirmationInput)).toString('hex')).toBe(en.confirmation)
    expect(hmacRef(sharedKey, h(so.proofInput)).toString('hex')).toBe(so.proof)
    expect(hmacRef(sharedKey, h(se.acceptProofInput)).toString('hex')).toBe(se.acceptProof)
    const c2s = hkdfRef(sharedKey, h(se.keySalt), h(se.c2sInfo))
    const s2c = hkdfRef(sharedKey, h(se.keySalt), h(se.s2cInfo))
    expect(c2s.toString('hex')).toBe(se.c2s)
    expect(s2c.toString('hex')).toBe(se.s2c)
    expect(hmacRef(c2s, h(sc.proofInput)).toString('hex')).toBe(sc.proof)
    expect(hkdfRef(s2c, h(re.salt), h(re.info)).toString('hex')).toBe(re.key)
    expect(hmacRef(sharedKey, h(ca.proofInput)).toString('hex')).toBe(ca.proof)
  })

  it('keys and proofs (implementation, from the JSON inputs)', () => {
    const sharedKey = deriveSharedKey(h(ecdh.z), {
      appId: en.appId, deviceId: en.deviceId, devicePublicKey: h(ecdh.devicePublicKey), serverPublicKey: h(ecdh.serverPublicKey), salt: h(en.salt),
    })
    expect(sharedKey.toString('hex')).toBe(en.sharedKey)
    expect(enrollConfirmation(sharedKey, en.enrollmentId).toString('hex')).toBe(en.confirmation)
    expect(sessionOpenProof(sharedKey, en.enrollmentId, so.timestampMs, h(so.deviceNonce)).toString('hex')).toBe(so.proof)
    expect(sessionAcceptProof(sharedKey, se.sessionId, h(so.deviceNonce), h(se.serverNonce)).toString('hex')).toBe(se.acceptProof)
    const keys = deriveSessionKeys(sharedKey, se.sessionId, h(so.deviceNonce), h(se.serverNonce))
    expect(keys.c2s.toString('hex')).toBe(se.c2s)
    expect(keys.s2c.toString('hex')).toBe(se.s2c)
    expect(sessionCloseProof(keys.c2s, se.sessionId, sc.timestampMs).toString('hex')).toBe(sc.proof)
    expect(deriveResponseKey(keys.s2c, h(re.salt)).toString('hex')).toBe(re.key)
    expect(commandAckProof(sharedKey, ca.commandId, en.enrollmentId, ca.timestampMs).toString('hex')).toBe(ca.proof)
  })

  it('wire forms are the base64url spellings of the same values', () => {
    const b = (s: string) => h(s).toString('base64url')
    expect(v.wire.enrollRequest).toMatchObject({ appId: en.appId, deviceId: en.deviceId, devicePublicKey: b(ecdh.devicePublicKey) })
    expect(v.wire.enrollResponse).toEqual({ enrollmentId: en.enrollmentId, serverPublicKey: b(ecdh.serverPublicKey), salt: b(en.salt), confirmation: b(en.confirmation) })
    expect(v.wire.sessionOpenRequest).toEqual({ enrollmentId: en.enrollmentId, timestamp: so.timestampMs, nonce: b(so.deviceNonce), proof: b(so.proof) })
    expect(v.wire.sessionOpenResponse).toEqual({ sessionId: se.sessionId, serverNonce: b(se.serverNonce), proof: b(se.acceptProof) })
    expect(v.wire.sessionCloseRequest).toEqual({ sessionId: se.sessionId, timestamp: sc.timestampMs, proof: b(sc.proof) })
    expect(v.wire.commandAckRequest).toEqual({ enrollmentId: en.enrollmentId, timestamp: ca.timestampMs, proof: b(ca.proof) })
    expect(Buffer.from(se.sessionId, 'base64url')).toHaveLength(16)
    expect(se.sessionId).toHaveLength(22)
  })
})

interface EnvelopeVectorRecord {
  index: number; flags: number; length: number; plaintext: BytesSpec; text?: string; nonce: string; aad: string; tag: string
  /** Joined head records (flags & 0x04): the head's length and the body bytes after it. */
  joinedHeadLength?: number; body?: BytesSpec
}
interface EnvelopeVector {
  name: string; kind: 'request' | 'response'; sessionId: string; requestLine: string; seq: number
  c2s?: string; timestampMs?: number; s2c?: string; requestTimestampMs?: number; salt?: string; responseKey?: string
  records: EnvelopeVectorRecord[]; envelopeLength: number; envelopeSha256: string; envelope: string
}

describe('envelope.json', () => {
  const v = load<{ cases: EnvelopeVector[] }>('envelope.json')
  const ks = load<KeyScheduleVectors>('key-schedule.json')

  it('covers the documented cases', () => {
    expect(v.cases.map((c) => c.name)).toEqual([
      'request-get-head-only', 'request-post-two-body-records', 'request-post-empty-body', 'request-put-64k-plus-partial',
      'response-head-and-body', 'response-head-only', 'request-post-joined', 'response-joined',
    ])
    const big = v.cases.find((c) => c.name === 'request-put-64k-plus-partial')!
    expect(big.records.map((r) => r.length)).toEqual([big.records[0]!.length, 65_536, 4464])
  })

  for (const c of v.cases) {
    describe(c.name, () => {
      const env = h(c.envelope)
      const request = c.kind === 'request'
      const ts = request ? c.timestampMs! : c.requestTimestampMs!
      const plaintexts = c.records.map((r) => materialize(r.plaintext))
      const joined = (c.records[0]!.flags & 0x04) !== 0
      // What the decoder hands out: a joined head record reads as the head and one body record.
      const logical = joined
        ? [Buffer.from(c.records[0]!.text!, 'utf8'), materialize(c.records[0]!.body!)]
        : plaintexts

      it('uses the session keys of key-schedule.json', () => {
        if (request) expect(c.c2s).toBe(ks.session.c2s)
        else expect(c.s2c).toBe(ks.session.s2c)
      })

      it('matches the documented layout (reference parser, nonces, AADs, raw AES-256-GCM)', () => {
        expect(env).toHaveLength(c.envelopeLength)
        expect(createHash('sha256').update(env).digest('hex')).toBe(c.envelopeSha256)
        const p = parseEnvelope(env)
        expect(p).toMatchObject({ magic: 'GH', version: 1, kind: request ? 1 : 2, seq: c.seq })
        let key: Buffer
        if (request) {
          expect(p.timestampMs).toBe(c.timestampMs)
          key = h(c.c2s!)
        } else {
          expect(p.salt!.toString('hex')).toBe(c.salt)
          key = hkdfRef(h(c.s2c!), h(c.salt!), lp('gatehouse/v1 response'))
          expect(key.toString('hex')).toBe(c.responseKey)
        }
        expect(p.records).toHaveLength(c.records.length)
        c.records.forEach((r, i) => {
          const pr = p.records[i]!
          const last = i === c.records.length - 1
          expect(r.index).toBe(i)
          expect(pr.flags).toBe(r.flags)
          expect(pr.flags).toBe((i === 0 ? 0x02 : 0) | (last ? 0x01 : 0) | (i === 0 && joined ? 0x04 : 0))
          expect(pr.ciphertext).toHaveLength(r.length)
          expect(plaintexts[i]).toHaveLength(r.length)
          if ((r.flags & 0x04) !== 0) {
            // Joined: u16 head length || head JSON || body.
            const pt = plaintexts[i]!
            expect(pt.readUInt16BE(0)).toBe(r.joinedHeadLength)
            expect(pt.subarray(2, 2 + r.joinedHeadLength!).toString('utf8')).toBe(r.text)
            expect(pt.subarray(2 + r.joinedHeadLength!).equals(materialize(r.body!))).toBe(true)
          } else if (r.text !== undefined) {
            expect(plaintexts[i]!.toString('utf8')).toBe(r.text)
          }
          const nonce = nonceRef(c.seq, i)
          const aad = aadRef(request ? 1 : 2, c.seq, ts, c.sessionId, c.requestLine, r.flags)
          expect(nonce.toString('hex')).toBe(r.nonce)
          expect(aad.toString('hex')).toBe(r.aad)
          expect(pr.tag.toString('hex')).toBe(r.tag)
          const d = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: 16 })
          d.setAAD(aad)
          d.setAuthTag(pr.tag)
          expect(Buffer.concat([d.update(pr.ciphertext), d.final()]).equals(plaintexts[i]!)).toBe(true)
          const e = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: 16 })
          e.setAAD(aad)
          expect(Buffer.concat([e.update(plaintexts[i]!), e.final()]).equals(pr.ciphertext)).toBe(true)
        })
      })

      it('decodes with EnvelopeDecoder to the listed plaintexts, whole and split', () => {
        const params = request
          ? { kind: 'request' as const, key: h(c.c2s!), sessionId: c.sessionId, requestLine: c.requestLine }
          : { kind: 'response' as const, key: h(c.s2c!), sessionId: c.sessionId, requestLine: c.requestLine, requestTimestampMs: c.requestTimestampMs! }
        for (const step of [env.length, 4093, 17]) {
          const dec = new EnvelopeDecoder(params)
          const got = []
          for (let o = 0; o < env.length; o += step) got.push(...dec.push(env.subarray(o, o + step)))
          dec.end()
          expect(dec.preamble).toMatchObject({ kind: c.kind, seq: c.seq, timestampMs: ts })
          expect(got.map((r) => r.plaintext.toString('hex'))).toEqual(logical.map((b) => b.toString('hex')))
          expect(got.map((r) => [r.head, r.final])).toEqual(logical.map((_, i) => [i === 0, i === logical.length - 1]))
          expect(dec.joined).toBe(joined)
        }
        const head = logical[0]!
        if (request) expect(() => decodeRequestHead(head)).not.toThrow()
        else expect(() => decodeResponseHead(head)).not.toThrow()
      })

      it('re-encodes with EnvelopeEncoder to the listed bytes', () => {
        const enc = new EnvelopeEncoder(request
          ? { kind: 'request', key: h(c.c2s!), sessionId: c.sessionId, requestLine: c.requestLine, seq: c.seq, timestampMs: c.timestampMs! }
          : { kind: 'response', key: h(c.s2c!), sessionId: c.sessionId, requestLine: c.requestLine, seq: c.seq, timestampMs: c.requestTimestampMs!, salt: h(c.salt!) })
        const out = joined
          ? [enc.preamble, enc.joined(logical[0]!, logical[1]!, true)]
          : [enc.preamble, ...plaintexts.map((p, i) => enc.record(p, i === plaintexts.length - 1))]
        expect(Buffer.concat(out).toString('hex')).toBe(c.envelope)
      })
    })
  }
})

interface InvalidVector {
  name: string; description: string; kind: 'request'; c2s: string; sessionId: string; requestLine: string
  maxRecordPlaintext?: number; envelope: string; error: { code: string; status: number }
}

describe('invalid.json', () => {
  const v = load<{ valid: { c2s: string; sessionId: string; requestLine: string; seq: number; timestampMs: number; envelope: string; plaintexts: string[] }; cases: InvalidVector[] }>('invalid.json')
  const ks = load<KeyScheduleVectors>('key-schedule.json')

  it('covers the documented cases', () => {
    expect(v.cases.map((c) => c.name)).toEqual(expect.arrayContaining([
      'bad-magic', 'wrong-version', 'wrong-kind', 'unknown-flags', 'first-record-without-head', 'head-on-later-record',
      'flipped-ciphertext-bit', 'flipped-tag-bit', 'wrong-request-line', 'wrong-session-id', 'swapped-record-order',
      'truncated-no-final', 'data-after-final', 'seq-zero', 'record-length-over-64k',
      'joined-on-body-record', 'joined-head-length-past-record', 'joined-shorter-than-prefix',
    ]))
    expect(new Set(v.cases.map((c) => c.name)).size).toBe(v.cases.length)
  })

  it('the base envelope is valid', () => {
    expect(v.valid.c2s).toBe(ks.session.c2s)
    const dec = new EnvelopeDecoder({ kind: 'request', key: h(v.valid.c2s), sessionId: v.valid.sessionId, requestLine: v.valid.requestLine })
    const got = dec.push(h(v.valid.envelope))
    dec.end()
    expect(got.map((r) => r.plaintext.toString('utf8'))).toEqual(v.valid.plaintexts)
    expect(dec.preamble).toMatchObject({ seq: v.valid.seq, timestampMs: v.valid.timestampMs })
  })

  const statusOfCode: Record<string, number> = { GH_ERR_MALFORMED: 400, GH_ERR_DECRYPT: 400, GH_ERR_TRUNCATED: 400, GH_ERR_TOO_LARGE: 413 }

  for (const c of v.cases) {
    it(`${c.name} is rejected with ${c.error.code}`, () => {
      expect(statusOfCode[c.error.code]).toBe(c.error.status)
      const env = h(c.envelope)
      const params = {
        kind: 'request' as const, key: h(c.c2s), sessionId: c.sessionId, requestLine: c.requestLine,
        ...(c.maxRecordPlaintext !== undefined ? { maxRecordPlaintext: c.maxRecordPlaintext } : {}),
      }
      // All at once, then one byte at a time: the same verdict.
      const whole = errorCode(() => {
        const dec = new EnvelopeDecoder(params)
        dec.push(env)
        dec.end()
      })
      expect(whole).toBe(c.error.code)
      const byByte = errorCode(() => {
        const dec = new EnvelopeDecoder(params)
        for (let i = 0; i < env.length; i++) dec.push(env.subarray(i, i + 1))
        dec.end()
      })
      expect(byByte).toBe(c.error.code)
    })
  }
})
