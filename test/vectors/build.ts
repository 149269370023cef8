/**
 * Builds the protocol test vectors (test/vectors/*.json) from fixed inputs with the implementation
 * in src/protocol. test/unit/vectors.test.ts checks that the committed files equal this output and
 * verifies them independently of this module; to regenerate them after an intended change:
 *
 *   GATEHOUSE_WRITE_VECTORS=1 npx vitest run test/unit/vectors.test.ts
 *
 * Valid envelopes come from EnvelopeEncoder. Most invalid ones are sealed properly by `sealRaw`
 * below (a small second implementation of the record layer that lets flags, seq and magic be set
 * to anything), so that each case is rejected for the reason it names and not merely because a
 * changed byte broke authentication.
 */
import { createCipheriv, createHash } from 'node:crypto'
import { lengthPrefixed, u64 } from '../../src/protocol/bytes.js'
import {
  LABEL_C2S, LABEL_COMMAND_ACK, LABEL_ENROLL, LABEL_ENROLL_CONFIRM, LABEL_RESPONSE, LABEL_S2C, LABEL_SESSION_ACCEPT,
  LABEL_SESSION_CLOSE, LABEL_SESSION_OPEN,
} from '../../src/protocol/constants.js'
import { EnvelopeEncoder, type Kind } from '../../src/protocol/envelope.js'
import { encodeRequestHead, encodeResponseHead } from '../../src/protocol/head.js'
import {
  commandAckProof, deriveResponseKey, deriveSessionKeys, deriveSharedKey, ecdhSecret, enrollConfirmation,
  generateEcdhKeyPair, sessionAcceptProof, sessionCloseProof, sessionOpenProof,
} from '../../src/protocol/keySchedule.js'

/** Plaintext in a vector: hex, or `repeat` (UTF-8 text) repeated and cut to `length` bytes. */
export type BytesSpec = string | { repeat: string; length: number }

export function materialize(spec: BytesSpec): Buffer {
  if (typeof spec === 'string') return Buffer.from(spec, 'hex')
  const unit = Buffer.from(spec.repeat, 'utf8')
  const out = Buffer.alloc(spec.length)
  for (let o = 0; o < spec.length; o += unit.length) unit.copy(out, o, 0, Math.min(unit.length, spec.length - o))
  return out
}

const hex = (b: Buffer): string => b.toString('hex')
const b64u = (b: Buffer): string => b.toString('base64url')
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

/** Fixed inputs. The byte strings are SHA-256("gatehouse test vector: <name>"), cut to length (32-byte keys and
 * salt; 16-byte nonces and response salts; the session id is base64url of 16 such bytes). */
export const FIXED = {
  devicePrivateKey: 'f3f6aa7035893069bb8dd7bd4e4bc3bc7120926279abfac3a62eaf7709c7dd81',
  serverPrivateKey: '2cf4b731af4de9c2a7adc11fb7d44b91f1462f396c6f89c2cdb11b3d04399184',
  enrollSalt: '2b08fba9a106c5425d61a753f03679985aef851aa225adfb6addb590e130e30f',
  appId: 'com.example.fieldservice',
  appVersion: '3.2.1',
  deviceId: 'device-8f14e45f',
  /** Opaque to the device; the security server issues random UUIDs. */
  enrollmentId: 'e94dd6e1-70a1-45d8-a3f7-319e9ce8bb6e',
  sessionOpenTimestampMs: 1_700_000_000_000,
  deviceNonce: '946b8a5fe0365516b0e4f677e92251af',
  sessionId: 'UvcCoWvOZZxDUr6Cj1lltg',
  serverNonce: 'e6e407eed3ec08e597ef35110c3b7c67',
  sessionCloseTimestampMs: 1_700_000_600_000,
  responseSalt: '664f59264a3a0ce25184dfc248cc476b',
  responseSalt2: 'c4cd5d1c85b2c00215a68a5c5347c3bf',
  /** Opaque to the device; the security server issues random UUIDs. */
  commandId: '3b0f6a52-8c1d-4e27-9f60-2d8e4c7a1b95',
  commandAckTimestampMs: 1_700_000_300_000,
} as const

interface Schedule {
  device: { privateKey: Buffer; publicKey: Buffer }
  server: { privateKey: Buffer; publicKey: Buffer }
  z: Buffer
  sharedKey: Buffer
  c2s: Buffer
  s2c: Buffer
}

function schedule(): Schedule {
  const device = generateEcdhKeyPair(Buffer.from(FIXED.devicePrivateKey, 'hex'))
  const server = generateEcdhKeyPair(Buffer.from(FIXED.serverPrivateKey, 'hex'))
  const z = ecdhSecret(device.privateKey, server.publicKey)
  const sharedKey = deriveSharedKey(z, {
    appId: FIXED.appId,
    deviceId: FIXED.deviceId,
    devicePublicKey: device.publicKey,
    serverPublicKey: server.publicKey,
    salt: Buffer.from(FIXED.enrollSalt, 'hex'),
  })
  const { c2s, s2c } = deriveSessionKeys(sharedKey, FIXED.sessionId, Buffer.from(FIXED.deviceNonce, 'hex'), Buffer.from(FIXED.serverNonce, 'hex'))
  return { device, server, z, sharedKey, c2s, s2c }
}

export function buildKeyScheduleVectors() {
  const s = schedule()
  const enrollSalt = Buffer.from(FIXED.enrollSalt, 'hex')
  const deviceNonce = Buffer.from(FIXED.deviceNonce, 'hex')
  const serverNonce = Buffer.from(FIXED.serverNonce, 'hex')
  const responseSalt = Buffer.from(FIXED.responseSalt, 'hex')
  const confirmation = enrollConfirmation(s.sharedKey, FIXED.enrollmentId)
  const openProof = sessionOpenProof(s.sharedKey, FIXED.enrollmentId, FIXED.sessionOpenTimestampMs, deviceNonce)
  const acceptProof = sessionAcceptProof(s.sharedKey, FIXED.sessionId, deviceNonce, serverNonce)
  const closeProof = sessionCloseProof(s.c2s, FIXED.sessionId, FIXED.sessionCloseTimestampMs)
  const ackProof = commandAckProof(s.sharedKey, FIXED.commandId, FIXED.enrollmentId, FIXED.commandAckTimestampMs)
  return {
    description:
      'Gatehouse protocol v1 key schedule. Byte strings are lowercase hex; strings are UTF-8; ' +
      'timestamps are milliseconds since the Unix epoch. LP(a, b, ...) = for each part: u16 BE length || bytes. ' +
      'Inputs: ecdh.devicePrivateKey, ecdh.serverPrivateKey, enrollment.{appId, deviceId, salt, enrollmentId}, ' +
      'sessionOpen.{timestampMs, deviceNonce}, session.{sessionId, serverNonce}, sessionClose.timestampMs, response.salt, ' +
      'commandAck.{commandId, timestampMs}. ' +
      'Every other value is an output (the *Info / *Input fields are the exact HKDF info and HMAC message bytes). ' +
      'See docs/protocol.md.',
    ecdh: {
      curve: 'P-256',
      devicePrivateKey: FIXED.devicePrivateKey,
      devicePublicKey: hex(s.device.publicKey),
      serverPrivateKey: FIXED.serverPrivateKey,
      serverPublicKey: hex(s.server.publicKey),
      z: hex(s.z),
    },
    enrollment: {
      appId: FIXED.appId,
      deviceId: FIXED.deviceId,
      salt: FIXED.enrollSalt,
      info: hex(lengthPrefixed(LABEL_ENROLL, FIXED.appId, FIXED.deviceId, s.device.publicKey, s.server.publicKey)),
      sharedKey: hex(s.sharedKey),
      enrollmentId: FIXED.enrollmentId,
      confirmationInput: hex(lengthPrefixed(LABEL_ENROLL_CONFIRM, FIXED.enrollmentId)),
      confirmation: hex(confirmation),
    },
    sessionOpen: {
      timestampMs: FIXED.sessionOpenTimestampMs,
      deviceNonce: FIXED.deviceNonce,
      proofInput: hex(lengthPrefixed(LABEL_SESSION_OPEN, FIXED.enrollmentId, u64(FIXED.sessionOpenTimestampMs), deviceNonce)),
      proof: hex(openProof),
    },
    session: {
      sessionId: FIXED.sessionId,
      serverNonce: FIXED.serverNonce,
      acceptProofInput: hex(lengthPrefixed(LABEL_SESSION_ACCEPT, FIXED.sessionId, deviceNonce, serverNonce)),
      acceptProof: hex(acceptProof),
      keySalt: hex(Buffer.concat([deviceNonce, serverNonce])),
      c2sInfo: hex(lengthPrefixed(LABEL_C2S, FIXED.sessionId)),
      c2s: hex(s.c2s),
      s2cInfo: hex(lengthPrefixed(LABEL_S2C, FIXED.sessionId)),
      s2c: hex(s.s2c),
    },
    sessionClose: {
      timestampMs: FIXED.sessionCloseTimestampMs,
      proofInput: hex(lengthPrefixed(LABEL_SESSION_CLOSE, FIXED.sessionId, u64(FIXED.sessionCloseTimestampMs))),
      proof: hex(closeProof),
    },
    response: {
      salt: FIXED.responseSalt,
      info: hex(lengthPrefixed(LABEL_RESPONSE)),
      key: hex(deriveResponseKey(s.s2c, responseSalt)),
    },
    commandAck: {
      commandId: FIXED.commandId,
      timestampMs: FIXED.commandAckTimestampMs,
      proofInput: hex(lengthPrefixed(LABEL_COMMAND_ACK, FIXED.commandId, FIXED.enrollmentId, u64(FIXED.commandAckTimestampMs))),
      proof: hex(ackProof),
    },
    /** The same values as they appear in the JSON bodies (base64url without padding). */
    wire: {
      enrollRequest: {
        user: 'alice',
        password: 'correct horse battery staple',
        appId: FIXED.appId,
        appVersion: FIXED.appVersion,
        deviceId: FIXED.deviceId,
        devicePublicKey: b64u(s.device.publicKey),
      },
      enrollResponse: {
        enrollmentId: FIXED.enrollmentId,
        serverPublicKey: b64u(s.server.publicKey),
        salt: b64u(enrollSalt),
        confirmation: b64u(confirmation),
      },
      sessionOpenRequest: {
        enrollmentId: FIXED.enrollmentId,
        timestamp: FIXED.sessionOpenTimestampMs,
        nonce: b64u(deviceNonce),
        proof: b64u(openProof),
      },
      sessionOpenResponse: {
        sessionId: FIXED.sessionId,
        serverNonce: b64u(serverNonce),
        proof: b64u(acceptProof),
      },
      sessionCloseRequest: {
        sessionId: FIXED.sessionId,
        timestamp: FIXED.sessionCloseTimestampMs,
        proof: b64u(closeProof),
      },
      /** Body of POST /v1/commands/<commandId>/ack. */
      commandAckRequest: {
        enrollmentId: FIXED.enrollmentId,
        timestamp: FIXED.commandAckTimestampMs,
        proof: b64u(ackProof),
      },
    },
  }
}

// ---------------------------------------------------------------------------------------------
// Envelopes

/** The per-record debugging aids: nonce and AAD as fed to AES-256-GCM, and the resulting tag. */
function recordAids(kind: Kind, seq: number, timestampMs: number, sessionId: string, requestLine: string, index: number, flags: number) {
  const nonce = Buffer.alloc(12)
  nonce.writeBigUInt64BE(BigInt(seq), 0)
  nonce.writeUInt32BE(index, 8)
  return { nonce: hex(nonce), aad: hex(aadBytes(kind === 'request' ? 1 : 2, seq, timestampMs, sessionId, requestLine, flags)) }
}

function aadBytes(direction: number, seq: number, timestampMs: number, sessionId: string, requestLine: string, flags: number): Buffer {
  const sid = Buffer.from(sessionId, 'ascii')
  const line = Buffer.from(requestLine, 'ascii')
  const lineLen = Buffer.alloc(2)
  lineLen.writeUInt16BE(line.length)
  return Buffer.concat([
    Buffer.from([0x47, 0x48, 1, direction]), u64(seq), u64(timestampMs),
    Buffer.from([sid.length]), sid, lineLen, line, Buffer.from([flags]),
  ])
}

function spec(b: Buffer): BytesSpec {
  return b.length <= 256 ? hex(b) : repeatSpec(b)
}

/** Only used for the generated bodies, which are all `ab` repeated. */
function repeatSpec(b: Buffer): BytesSpec {
  const s: BytesSpec = { repeat: 'ab', length: b.length }
  if (!materialize(s).equals(b)) throw new Error('large plaintexts in vectors must be "ab" repeated')
  return s
}

interface RecordInput {
  plaintext: Buffer
  final: boolean
  /** Set on head records so the vector shows the JSON too. */
  text?: string
  /** A joined head record (FLAG_JOINED): `plaintext` is u16 length || head || body. */
  joined?: { head: Buffer; body: Buffer }
}

interface EnvelopeCaseInput {
  name: string
  description: string
  kind: Kind
  key: Buffer
  sessionId: string
  requestLine: string
  seq: number
  /** Request: the preamble timestamp. Response: the timestamp of the request answered. */
  timestampMs: number
  salt?: Buffer
  records: RecordInput[]
}

function envelopeCase(c: EnvelopeCaseInput) {
  const enc = new EnvelopeEncoder({
    kind: c.kind, key: c.key, sessionId: c.sessionId, requestLine: c.requestLine, seq: c.seq, timestampMs: c.timestampMs,
    ...(c.salt ? { salt: c.salt } : {}),
  })
  const parts: Buffer[] = [enc.preamble]
  const records = c.records.map((r, index) => {
    const sealed = r.joined ? enc.joined(r.joined.head, r.joined.body, r.final) : enc.record(r.plaintext, r.final)
    parts.push(sealed)
    const flags = sealed[0]!
    return {
      index,
      flags,
      length: r.plaintext.length,
      plaintext: spec(r.plaintext),
      ...(r.text !== undefined ? { text: r.text } : {}),
      ...(r.joined ? { joinedHeadLength: r.joined.head.length, body: spec(r.joined.body) } : {}),
      ...recordAids(c.kind, c.seq, c.timestampMs, c.sessionId, c.requestLine, index, flags),
      tag: hex(sealed.subarray(sealed.length - 16)),
    }
  })
  const envelope = Buffer.concat(parts)
  const common = { name: c.name, description: c.description, kind: c.kind, sessionId: c.sessionId, requestLine: c.requestLine, seq: c.seq }
  const keys = c.kind === 'request'
    ? { c2s: hex(c.key), timestampMs: c.timestampMs }
    : { s2c: hex(c.key), requestTimestampMs: c.timestampMs, salt: hex(c.salt!), responseKey: hex(deriveResponseKey(c.key, c.salt!)) }
  return {
    ...common,
    ...keys,
    records,
    envelopeLength: envelope.length,
    envelopeSha256: sha256(envelope),
    envelope: hex(envelope),
  }
}

function headRecord(json: Buffer, final: boolean): RecordInput {
  return { plaintext: json, final, text: json.toString('utf8') }
}

/** A joined head record (FLAG_JOINED) carrying the whole body: flags HEAD | JOINED | FINAL. */
function joinedRecord(json: Buffer, body: Buffer): RecordInput {
  const prefix = Buffer.alloc(2)
  prefix.writeUInt16BE(json.length, 0)
  return { plaintext: Buffer.concat([prefix, json, body]), final: true, text: json.toString('utf8'), joined: { head: json, body } }
}

export function buildEnvelopeVectors() {
  const s = schedule()
  const sessionId = FIXED.sessionId
  const big = materialize({ repeat: 'ab', length: 70_000 })
  const body1 = Buffer.from('{"name":"widget",', 'utf8')
  const body2 = Buffer.from('"colour":"blue"}', 'utf8')
  const respBody = Buffer.from('{"id":42,"name":"widget","colour":"blue"}', 'utf8')
  return {
    description:
      'Gatehouse protocol v1 envelopes, built with the session keys of key-schedule.json. Byte strings are lowercase hex. ' +
      'A record plaintext is either hex or {"repeat": text, "length": n}: the UTF-8 bytes of text repeated and cut to n bytes. ' +
      'For each record: flags, plaintext length, the 12-byte AES-256-GCM nonce, the AAD and the 16-byte tag. ' +
      'Requests are sealed with c2s; a response with HKDF-SHA256(s2c, salt, LP("gatehouse/v1 response")) and its AAD carries the timestamp of the request it answers. ' +
      'Decoding `envelope` with the listed parameters must yield the listed plaintexts; encoding the plaintexts must yield `envelope`. See docs/protocol.md.',
    cases: [
      envelopeCase({
        name: 'request-get-head-only',
        description: 'GET without a body: a single record with HEAD and FINAL.',
        kind: 'request', key: s.c2s, sessionId, requestLine: 'GET /api/v1/items?limit=10&sort=name', seq: 1, timestampMs: 1_700_000_001_000,
        records: [headRecord(encodeRequestHead({ headers: [['accept', 'application/json'], ['accept-language', 'en-GB']] }), true)],
      }),
      envelopeCase({
        name: 'request-post-two-body-records',
        description: 'POST whose body was streamed as two records; the second is FINAL.',
        kind: 'request', key: s.c2s, sessionId, requestLine: 'POST /api/v1/items', seq: 2, timestampMs: 1_700_000_002_000,
        records: [
          headRecord(encodeRequestHead({ headers: [['content-type', 'application/json']] }), false),
          { plaintext: body1, final: false },
          { plaintext: body2, final: true },
        ],
      }),
      envelopeCase({
        name: 'request-post-empty-body',
        description: 'POST with an empty body: the head, then an empty FINAL record (what EnvelopeEncoder.body() writes for an empty body).',
        kind: 'request', key: s.c2s, sessionId, requestLine: 'POST /api/v1/items/42/touch', seq: 3, timestampMs: 1_700_000_003_000,
        records: [
          headRecord(encodeRequestHead({ headers: [] }), false),
          { plaintext: Buffer.alloc(0), final: true },
        ],
      }),
      envelopeCase({
        name: 'request-put-64k-plus-partial',
        description: 'PUT of 70000 bytes: a full 65536-byte record, then a FINAL record of 4464 bytes.',
        kind: 'request', key: s.c2s, sessionId, requestLine: 'PUT /files/blob.bin', seq: 4, timestampMs: 1_700_000_004_000,
        records: [
          headRecord(encodeRequestHead({ headers: [['content-type', 'application/octet-stream']] }), false),
          { plaintext: big.subarray(0, 65_536), final: false },
          { plaintext: big.subarray(65_536), final: true },
        ],
      }),
      envelopeCase({
        name: 'response-head-and-body',
        description: 'Response to request-post-two-body-records (seq 2): head (status 201) and one FINAL body record.',
        kind: 'response', key: s.s2c, sessionId, requestLine: 'POST /api/v1/items', seq: 2, timestampMs: 1_700_000_002_000,
        salt: Buffer.from(FIXED.responseSalt, 'hex'),
        records: [
          headRecord(encodeResponseHead({ status: 201, headers: [['content-type', 'application/json'], ['location', '/api/v1/items/42']] }), false),
          { plaintext: respBody, final: true },
        ],
      }),
      envelopeCase({
        name: 'response-head-only',
        description: 'Response 204 to request-post-empty-body (seq 3): one record with HEAD and FINAL, under another salt.',
        kind: 'response', key: s.s2c, sessionId, requestLine: 'POST /api/v1/items/42/touch', seq: 3, timestampMs: 1_700_000_003_000,
        salt: Buffer.from(FIXED.responseSalt2, 'hex'),
        records: [headRecord(encodeResponseHead({ status: 204, headers: [] }), true)],
      }),
      envelopeCase({
        name: 'request-post-joined',
        description: 'POST whose small body is joined to the head (flags 0x07 HEAD | FINAL | JOINED): plaintext = u16 head length || head JSON || body.',
        kind: 'request', key: s.c2s, sessionId, requestLine: 'POST /api/v1/items', seq: 5, timestampMs: 1_700_000_005_000,
        records: [joinedRecord(encodeRequestHead({ headers: [['content-type', 'application/json']] }), Buffer.concat([body1, body2]))],
      }),
      envelopeCase({
        name: 'response-joined',
        description: 'Response to request-post-joined (seq 5), joined as its request was: one record, flags 0x07.',
        kind: 'response', key: s.s2c, sessionId, requestLine: 'POST /api/v1/items', seq: 5, timestampMs: 1_700_000_005_000,
        salt: Buffer.from(FIXED.responseSalt, 'hex'),
        records: [joinedRecord(encodeResponseHead({ status: 201, headers: [['content-type', 'application/json']] }), respBody)],
      }),
    ],
  }
}

// ---------------------------------------------------------------------------------------------
// Invalid envelopes

interface RawPreamble {
  magic?: [number, number]
  version?: number
  kind?: number
  seq: number
  timestampMs: number
}

interface RawRecord {
  flags: number
  plaintext: Buffer
}

/** A request envelope sealed record by record with any flags/seq (unlike EnvelopeEncoder, which refuses). */
function sealRaw(key: Buffer, sessionId: string, requestLine: string, pre: RawPreamble, records: RawRecord[]): Buffer {
  const preamble = Buffer.alloc(20)
  preamble[0] = pre.magic?.[0] ?? 0x47
  preamble[1] = pre.magic?.[1] ?? 0x48
  preamble[2] = pre.version ?? 1
  preamble[3] = pre.kind ?? 0x01
  preamble.writeBigUInt64BE(BigInt(pre.seq), 4)
  preamble.writeBigUInt64BE(BigInt(pre.timestampMs), 12)
  const parts = [preamble]
  records.forEach((r, index) => {
    const nonce = Buffer.alloc(12)
    nonce.writeBigUInt64BE(BigInt(pre.seq), 0)
    nonce.writeUInt32BE(index, 8)
    const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: 16 })
    cipher.setAAD(aadBytes(0x01, pre.seq, pre.timestampMs, sessionId, requestLine, r.flags))
    const ct = Buffer.concat([cipher.update(r.plaintext), cipher.final()])
    const header = Buffer.alloc(4)
    header[0] = r.flags
    header.writeUIntBE(r.plaintext.length, 1, 3)
    parts.push(header, ct, cipher.getAuthTag())
  })
  return Buffer.concat(parts)
}

/** Offsets of each record in a request envelope (preamble 20 bytes). */
function recordOffsets(env: Buffer): { start: number; end: number }[] {
  const out: { start: number; end: number }[] = []
  for (let o = 20; o < env.length;) {
    const len = env.readUIntBE(o + 1, 3)
    out.push({ start: o, end: o + 4 + len + 16 })
    o += 4 + len + 16
  }
  return out
}

function flipBit(b: Buffer, offset: number, bit = 0): Buffer {
  const c = Buffer.from(b)
  c[offset] = c[offset]! ^ (1 << bit)
  return c
}

export function buildInvalidVectors() {
  const s = schedule()
  const sessionId = FIXED.sessionId
  const requestLine = 'POST /api/v1/notes'
  const seq = 7
  const timestampMs = 1_700_000_007_000
  const head = encodeRequestHead({ headers: [['content-type', 'text/plain; charset=utf-8']] })
  const part1 = Buffer.from('hello, ', 'utf8')
  const part2 = Buffer.from('world', 'utf8')
  const HEAD = 0x02
  const FINAL = 0x01
  const JOINED = 0x04
  const joinedPlaintext = (h: Buffer, body: Buffer, declared = h.length) => {
    const prefix = Buffer.alloc(2)
    prefix.writeUInt16BE(declared, 0)
    return Buffer.concat([prefix, h, body])
  }
  const pre = { seq, timestampMs }
  const good = sealRaw(s.c2s, sessionId, requestLine, pre, [
    { flags: HEAD, plaintext: head }, { flags: 0, plaintext: part1 }, { flags: FINAL, plaintext: part2 },
  ])
  // Cross-check the raw sealer against the real encoder, so every case below starts from a valid envelope.
  const enc = new EnvelopeEncoder({ kind: 'request', key: s.c2s, sessionId, requestLine, seq, timestampMs })
  const viaEncoder = Buffer.concat([enc.preamble, enc.record(head, false), enc.record(part1, false), enc.record(part2, true)])
  if (!viaEncoder.equals(good)) throw new Error('sealRaw disagrees with EnvelopeEncoder')
  const [r0, r1, r2] = recordOffsets(good) as [{ start: number; end: number }, { start: number; end: number }, { start: number; end: number }]

  const base = { kind: 'request' as const, c2s: hex(s.c2s), sessionId, requestLine }
  const MALFORMED = { code: 'GH_ERR_MALFORMED', status: 400 }
  const DECRYPT = { code: 'GH_ERR_DECRYPT', status: 400 }
  const TRUNCATED = { code: 'GH_ERR_TRUNCATED', status: 400 }
  const TOO_LARGE = { code: 'GH_ERR_TOO_LARGE', status: 413 }
  const sealed = (p: Partial<RawPreamble>, records: RawRecord[]) => sealRaw(s.c2s, sessionId, requestLine, { ...pre, ...p }, records)

  const cases: Record<string, unknown>[] = [
    {
      name: 'bad-magic', error: MALFORMED,
      description: 'First byte is "X" instead of "G"; rejected on the first byte.',
      envelope: sealed({ magic: [0x58, 0x48] }, [{ flags: HEAD | FINAL, plaintext: head }]),
    },
    {
      name: 'wrong-version', error: MALFORMED,
      description: 'Version byte 2 (only 1 exists).',
      envelope: sealed({ version: 2 }, [{ flags: HEAD | FINAL, plaintext: head }]),
    },
    {
      name: 'wrong-kind', error: MALFORMED,
      description: 'Kind 0x02 (response) where a request is expected.',
      envelope: sealed({ kind: 0x02 }, [{ flags: HEAD | FINAL, plaintext: head }]),
    },
    {
      name: 'unknown-flags', error: MALFORMED,
      description: 'Record flags 0x0b: bit 0x08 is not defined. Sealed with these flags, so only the flags check rejects it.',
      envelope: sealed({}, [{ flags: 0x08 | HEAD | FINAL, plaintext: head }]),
    },
    {
      name: 'joined-on-body-record', error: MALFORMED,
      description: 'Record 1 has JOINED (0x04) without HEAD: only a head record can be joined.',
      envelope: sealed({}, [{ flags: HEAD, plaintext: head }, { flags: JOINED | FINAL, plaintext: joinedPlaintext(head, part1) }]),
    },
    {
      name: 'joined-head-length-past-record', error: MALFORMED,
      description: 'Joined head record (0x07) whose u16 head length is one more than the bytes that follow it.',
      envelope: sealed({}, [{ flags: JOINED | HEAD | FINAL, plaintext: joinedPlaintext(head, Buffer.alloc(0), head.length + 1) }]),
    },
    {
      name: 'joined-shorter-than-prefix', error: MALFORMED,
      description: 'Joined head record (0x07) of one byte: shorter than its 2-byte head length.',
      envelope: sealed({}, [{ flags: JOINED | HEAD | FINAL, plaintext: Buffer.from([0]) }]),
    },

    {
      name: 'first-record-without-head', error: MALFORMED,
      description: 'Record 0 has FINAL but not HEAD (sealed with those flags).',
      envelope: sealed({}, [{ flags: FINAL, plaintext: head }]),
    },
    {
      name: 'head-on-later-record', error: MALFORMED,
      description: 'Record 1 carries HEAD (sealed with those flags).',
      envelope: sealed({}, [{ flags: HEAD, plaintext: head }, { flags: HEAD | FINAL, plaintext: part1 }]),
    },
    {
      name: 'flipped-ciphertext-bit', error: DECRYPT,
      description: 'Bit 0 of the first ciphertext byte of record 0 flipped.',
      envelope: flipBit(good, r0.start + 4),
    },
    {
      name: 'flipped-tag-bit', error: DECRYPT,
      description: 'Bit 7 of the last tag byte of record 0 flipped.',
      envelope: flipBit(good, r0.end - 1, 7),
    },
    {
      name: 'wrong-request-line', error: DECRYPT,
      description: 'Sealed for "POST /api/v1/notes", received as "POST /api/v1/admin" (the outer request line was changed).',
      requestLine: 'POST /api/v1/admin',
      envelope: good,
    },
    {
      name: 'wrong-session-id', error: DECRYPT,
      description: 'Sealed for session UvcCoWvOZZxDUr6Cj1lltg, received under another session id (same key, to isolate the AAD).',
      sessionId: 'AAAAAAAAAAAAAAAAAAAAAA',
      envelope: good,
    },
    {
      name: 'wrong-key', error: DECRYPT,
      description: 'Sealed with s2c instead of c2s (direction confusion).',
      envelope: sealRaw(s.s2c, sessionId, requestLine, pre, [{ flags: HEAD | FINAL, plaintext: head }]),
    },
    {
      name: 'swapped-record-order', error: DECRYPT,
      description: 'Records 1 and 2 swapped: record 2 (FINAL) now arrives at index 1.',
      envelope: Buffer.concat([good.subarray(0, r1.start), good.subarray(r2.start, r2.end), good.subarray(r1.start, r1.end)]),
    },
    {
      name: 'dropped-record', error: DECRYPT,
      description: 'Record 1 removed: the FINAL record arrives at index 1.',
      envelope: Buffer.concat([good.subarray(0, r1.start), good.subarray(r2.start, r2.end)]),
    },
    {
      name: 'reflagged-final', error: DECRYPT,
      description: 'FINAL set on record 1 without resealing (the flags are in the AAD); record 2 dropped.',
      envelope: (() => {
        const cut = Buffer.from(good.subarray(0, r1.end))
        cut[r1.start] = FINAL
        return cut
      })(),
    },
    {
      name: 'changed-timestamp', error: DECRYPT,
      description: 'Preamble timestamp increased by 1 ms (it is in the AAD).',
      envelope: (() => {
        const c = Buffer.from(good)
        c.writeBigUInt64BE(BigInt(timestampMs + 1), 12)
        return c
      })(),
    },
    {
      name: 'changed-seq', error: DECRYPT,
      description: 'Preamble seq changed from 7 to 8 (it is in the nonce and the AAD).',
      envelope: (() => {
        const c = Buffer.from(good)
        c.writeBigUInt64BE(BigInt(seq + 1), 4)
        return c
      })(),
    },
    {
      name: 'truncated-no-final', error: TRUNCATED,
      description: 'Body ends after record 1; no record carried FINAL. Detected when the body ends.',
      envelope: good.subarray(0, r1.end),
    },
    {
      name: 'truncated-mid-record', error: TRUNCATED,
      description: 'Body ends 5 bytes into the tag of the FINAL record.',
      envelope: good.subarray(0, r2.end - 11),
    },
    {
      name: 'truncated-in-preamble', error: TRUNCATED,
      description: 'Body ends after 10 bytes of the preamble.',
      envelope: good.subarray(0, 10),
    },
    {
      name: 'data-after-final', error: MALFORMED,
      description: 'One zero byte after the FINAL record.',
      envelope: Buffer.concat([good, Buffer.from([0])]),
    },
    {
      name: 'record-after-final', error: MALFORMED,
      description: 'Record 2 repeated after itself.',
      envelope: Buffer.concat([good, good.subarray(r2.start, r2.end)]),
    },
    {
      name: 'seq-zero', error: MALFORMED,
      description: 'Preamble seq 0 (sequence numbers start at 1); records sealed with seq 0.',
      envelope: sealed({ seq: 0 }, [{ flags: HEAD | FINAL, plaintext: head }]),
    },
    {
      name: 'record-length-over-64k', error: MALFORMED,
      description: 'Record header announces 65537 bytes. Must be rejected as soon as the 4-byte header is read, before buffering: the envelope stops there.',
      envelope: Buffer.concat([good.subarray(0, 20), Buffer.from([HEAD | FINAL, 0x01, 0x00, 0x01])]),
    },
    {
      name: 'record-over-configured-limit', error: TOO_LARGE,
      description: 'A valid envelope whose record 0 exceeds a receiver limit of 16 bytes (maxRecordPlaintext, a local policy below 64 KiB).',
      maxRecordPlaintext: 16,
      envelope: good,
    },
  ]
  return {
    description:
      'Gatehouse protocol v1 request envelopes that must be REJECTED. Decode `envelope` as a request with the given c2s key, ' +
      'sessionId and requestLine (and maxRecordPlaintext when present): push all bytes, then signal the end of the body; ' +
      'the first error raised must have the given code. Unless stated otherwise the bytes derive from one valid envelope ' +
      '(seq 7, timestamp 1700000007000, records: head, "hello, ", "world"), given as `valid`. See docs/protocol.md.',
    valid: { ...base, seq, timestampMs, envelope: hex(good), plaintexts: [head.toString('utf8'), part1.toString('utf8'), part2.toString('utf8')] },
    cases: cases.map((c) => {
      const { name, description, error, envelope, ...rest } = c as { name: string; description: string; error: unknown; envelope: Buffer }
      return { name, description, ...base, ...rest, envelope: hex(envelope), error }
    }),
  }
}

export const VECTOR_FILES = {
  'key-schedule.json': buildKeyScheduleVectors,
  'envelope.json': buildEnvelopeVectors,
  'invalid.json': buildInvalidVectors,
} as const
