/**
 * The envelope: how a request or response body travels between a device and the proxy.
 *
 *   envelope  = preamble record+                      (the last record has FLAG_FINAL)
 *
 *   request preamble (20 bytes)         response preamble (28 bytes)
 *   +----+----+---+---+                 +----+----+---+---+
 *   | 'G'| 'H'|ver|knd|  knd = 0x01     | 'G'| 'H'|ver|knd|  knd = 0x02
 *   +----+----+---+---+                 +----+----+---+---+
 *   | seq (u64 BE)    |                 | seq (u64 BE, echoes the request) |
 *   | timestamp ms (u64 BE)             | salt (16 bytes, random per response)
 *
 *   record
 *   +-------+-----------------+----------------------------+
 *   | flags | length (u24 BE) | ciphertext (length) | tag (16) |
 *   +-------+-----------------+----------------------------+
 *   flags: 0x01 FINAL, 0x02 HEAD (record 0 only, and always); other bits must be 0.
 *   length: plaintext length, 0..65536.
 *
 *   nonce (96 bits) = seq (u64 BE) || record index (u32 BE)   -- counters, never random
 *   key  = c2s for requests; HKDF(s2c, salt) for responses (see keySchedule.ts)
 *   AAD  = 'G' 'H' ver dir | seq u64 | request timestamp u64 | u8 len | session id
 *          | u16 len | request line ("METHOD /path?query") | flags
 *
 * Binding the flags into the AAD and the index into the nonce means that reordering, dropping,
 * duplicating or re-flagging records fails authentication, and a body cut anywhere is detected
 * because no record carried FINAL.
 *
 * A record's AES-GCM operation can also be detached from its encoder or decoder (prepare /
 * pushFramed give a SealJob / OpenJob) and run elsewhere, e.g. in a worker thread; the bytes on
 * the wire are the same.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto'
import { DecryptError, MalformedError, TooLargeError, TruncatedError } from '../errors.js'
import {
  DIRECTION_C2S, DIRECTION_S2C, FLAG_FINAL, FLAG_HEAD, FLAG_JOINED, FLAGS_KNOWN, JOINED_PREFIX_LENGTH, KIND_REQUEST, KIND_RESPONSE,
  MAGIC_0, MAGIC_1, MAX_RECORD_PLAINTEXT, NONCE_LENGTH, PROTOCOL_VERSION, RECORD_HEADER_LENGTH,
  REQUEST_PREAMBLE_LENGTH, RESPONSE_PREAMBLE_LENGTH, RESPONSE_SALT_LENGTH, TAG_LENGTH,
} from './constants.js'
import { deriveResponseKey } from './keySchedule.js'
import { pooledRandom } from './randomPool.js'

export type Kind = 'request' | 'response'

export interface Preamble {
  kind: Kind
  seq: number
  /** Request: the device's timestamp. Response: absent (the request's is bound in the AAD). */
  timestampMs: number
  /** Response only. */
  salt?: Buffer
}

export interface EnvelopeParams {
  kind: Kind
  sessionId: string
  /** `METHOD /path?query` exactly as on the request line. */
  requestLine: string
  /** c2s for requests, s2c for responses (the response key is derived from it and the salt). */
  key: Buffer
}

export interface DecodedRecord {
  index: number
  head: boolean
  final: boolean
  plaintext: Buffer
}

/**
 * Split the plaintext of a joined head record (FLAG_JOINED) into the head and the body bytes it
 * carries. Throws MalformedError when the head length runs past the record.
 */
export function splitJoined(plaintext: Buffer): [head: Buffer, body: Buffer] {
  if (plaintext.length < JOINED_PREFIX_LENGTH) throw new MalformedError('joined head record shorter than its length prefix')
  const headLength = plaintext.readUInt16BE(0)
  const end = JOINED_PREFIX_LENGTH + headLength
  if (end > plaintext.length) throw new MalformedError('joined head length runs past the record')
  return [plaintext.subarray(JOINED_PREFIX_LENGTH, end), plaintext.subarray(end)]
}

/**
 * What an opened joined head record reads as: the head record and one body record; with an empty
 * body that ends the envelope, a head-only record (a GET). EnvelopeDecoder.push and the crypto
 * pool's path (requestStream.ts) both read joined records through this.
 */
export function joinedRecords(index: number, plaintext: Buffer, final: boolean): DecodedRecord[] {
  const [head, body] = splitJoined(plaintext)
  if (final && body.length === 0) return [{ index, head: true, final: true, plaintext: head }]
  return [{ index, head: true, final: false, plaintext: head }, { index, head: false, final, plaintext: body }]
}

/**
 * One record's AES-256-GCM seal, detached from its encoder so that it can run elsewhere (a crypto
 * worker pool): every buffer is the job's own. `sealRecordJob` gives the whole record bytes.
 */
export interface SealJob {
  key: Buffer
  nonce: Buffer
  aad: Buffer
  /** The 4-byte record header (flags, length). */
  header: Buffer
  plaintext: Buffer
}

/** One record's AES-256-GCM open, detached from its decoder (see SealJob). */
export interface OpenJob {
  key: Buffer
  nonce: Buffer
  aad: Buffer
  /** The whole record: header, ciphertext, tag. */
  record: Buffer
  length: number
}

/** A record framed and checked by `EnvelopeDecoder.pushFramed`, not yet opened. */
export interface FramedRecord {
  index: number
  head: boolean
  /** A joined head record: once opened, read it with joinedRecords(). */
  joined: boolean
  final: boolean
  length: number
  job: OpenJob
}

const MAX_SAFE_SEQ = Number.MAX_SAFE_INTEGER

// The session id and request line enter the AAD as bytes. Only printable ASCII is allowed: any
// other character would have to be encoded somehow, and a lossy encoding (latin1 keeps the low
// byte of each UTF-16 unit, so 'Ł' U+0141 and 'A' U+0041 coincide) would let two different
// request lines authenticate the same records. HTTP request targets are ASCII anyway (RFC 9112).
const AAD_TEXT_RE = /^[\x20-\x7e]*$/

function buildAadPrefix(kind: Kind, seq: number, timestampMs: number, sessionId: string, requestLine: string): Buffer {
  if (!AAD_TEXT_RE.test(sessionId)) throw new MalformedError('session id is not printable ASCII')
  if (!AAD_TEXT_RE.test(requestLine)) throw new MalformedError('request line is not printable ASCII')
  const sid = Buffer.from(sessionId, 'latin1')
  const line = Buffer.from(requestLine, 'latin1')
  if (sid.length > 255) throw new MalformedError('session id too long')
  if (line.length > 0xffff) throw new MalformedError('request line too long')
  // +1 for the flags byte written per record.
  const aad = Buffer.allocUnsafe(4 + 8 + 8 + 1 + sid.length + 2 + line.length + 1)
  let o = 0
  aad[o++] = MAGIC_0
  aad[o++] = MAGIC_1
  aad[o++] = PROTOCOL_VERSION
  aad[o++] = kind === 'request' ? DIRECTION_C2S : DIRECTION_S2C
  aad.writeBigUInt64BE(BigInt(seq), o); o += 8
  aad.writeBigUInt64BE(BigInt(timestampMs), o); o += 8
  aad[o++] = sid.length
  o += sid.copy(aad, o)
  aad.writeUInt16BE(line.length, o); o += 2
  line.copy(aad, o)
  return aad
}

function nonceFor(seq: number, index: number, out: Buffer): Buffer {
  out.writeBigUInt64BE(BigInt(seq), 0)
  out.writeUInt32BE(index, 8)
  return out
}

/** Run a detached seal: the record bytes (header, ciphertext, tag). */
export function sealRecordJob(job: SealJob): Buffer {
  const cipher = createCipheriv('aes-256-gcm', job.key, job.nonce, { authTagLength: TAG_LENGTH })
  cipher.setAAD(job.aad)
  const out = Buffer.allocUnsafe(RECORD_HEADER_LENGTH + job.plaintext.length + TAG_LENGTH)
  job.header.copy(out, 0, 0, RECORD_HEADER_LENGTH)
  const n = cipher.update(job.plaintext).copy(out, RECORD_HEADER_LENGTH)
  cipher.final()
  cipher.getAuthTag().copy(out, RECORD_HEADER_LENGTH + n)
  return out
}

/** Run a detached open: the plaintext, or null when the record fails authentication. */
export function openRecordJob(job: OpenJob): Buffer | null {
  const decipher = createDecipheriv('aes-256-gcm', job.key, job.nonce, { authTagLength: TAG_LENGTH })
  decipher.setAAD(job.aad)
  decipher.setAuthTag(job.record.subarray(RECORD_HEADER_LENGTH + job.length, RECORD_HEADER_LENGTH + job.length + TAG_LENGTH))
  const plaintext = decipher.update(job.record.subarray(RECORD_HEADER_LENGTH, RECORD_HEADER_LENGTH + job.length))
  try {
    decipher.final()
  } catch {
    return null
  }
  return plaintext
}

/** Writes one envelope: a preamble, then records, each sealed as it is produced. */
/** Whether a head and body of these sizes fit one joined head record. */
export function fitsJoined(headLength: number, bodyLength: number): boolean {
  return headLength <= 0xffff && JOINED_PREFIX_LENGTH + headLength + bodyLength <= MAX_RECORD_PLAINTEXT
}

export class EnvelopeEncoder {
  readonly preamble: Buffer
  private readonly key: Buffer
  private readonly aad: Buffer
  private readonly nonce = Buffer.allocUnsafe(NONCE_LENGTH)
  private index = 0
  private finished = false

  /**
   * @param timestampMs request: the device's clock; response: the request's timestamp (bound in AAD).
   * @param salt response only; random 16 bytes when omitted (tests pass fixed ones for vectors).
   * @param responseKey response only: HKDF(key, salt) computed once by the caller for this salt.
   */
  constructor(private readonly p: EnvelopeParams & { seq: number; timestampMs: number; salt?: Buffer; responseKey?: Buffer }) {
    if (!Number.isSafeInteger(p.seq) || p.seq < 1) throw new RangeError('seq must be a positive safe integer')
    if (p.kind === 'request') {
      this.preamble = Buffer.allocUnsafe(REQUEST_PREAMBLE_LENGTH)
      this.preamble.writeBigUInt64BE(BigInt(p.timestampMs), 12)
      this.key = p.key
    } else {
      const salt = p.salt ?? pooledRandom(RESPONSE_SALT_LENGTH)
      if (salt.length !== RESPONSE_SALT_LENGTH) throw new RangeError('response salt must be 16 bytes')
      this.preamble = Buffer.allocUnsafe(RESPONSE_PREAMBLE_LENGTH)
      salt.copy(this.preamble, 12)
      // A proxy passes the key it derived once for this salt (see ResponseSealing in the proxy).
      this.key = p.responseKey ?? deriveResponseKey(p.key, salt)
    }
    this.preamble[0] = MAGIC_0
    this.preamble[1] = MAGIC_1
    this.preamble[2] = PROTOCOL_VERSION
    this.preamble[3] = p.kind === 'request' ? KIND_REQUEST : KIND_RESPONSE
    this.preamble.writeBigUInt64BE(BigInt(p.seq), 4)
    this.aad = buildAadPrefix(p.kind, p.seq, p.timestampMs, p.sessionId, p.requestLine)
  }

  /** Seal one record. The first record is the head; `final` marks the last one. */
  record(plaintext: Buffer, final: boolean): Buffer {
    return this.sealParts(this.flagsFor(plaintext.length, final), plaintext.length, plaintext, undefined, undefined)
  }

  /**
   * The head record with the body bytes joined to it (FLAG_JOINED): one record instead of two.
   * Only as the first record, and only when `2 + head + body` fit in one record (fitsJoined).
   */
  joined(head: Buffer, body: Buffer, final: boolean): Buffer {
    if (this.index !== 0) throw new Error('only the head record can be joined')
    if (!fitsJoined(head.length, body.length)) throw new RangeError('head and body do not fit one joined record')
    const prefix = Buffer.allocUnsafe(JOINED_PREFIX_LENGTH)
    prefix.writeUInt16BE(head.length, 0)
    const length = JOINED_PREFIX_LENGTH + head.length + body.length
    return this.sealParts(this.flagsFor(length, final) | FLAG_JOINED, length, prefix, head, body)
  }

  /** Seal up to three plaintext parts as one record (GCM update per part: no concatenation). */
  private sealParts(flags: number, length: number, a: Buffer, b: Buffer | undefined, c: Buffer | undefined): Buffer {
    this.aad[this.aad.length - 1] = flags
    const cipher = createCipheriv('aes-256-gcm', this.key, nonceFor(this.p.seq, this.index, this.nonce), { authTagLength: TAG_LENGTH })
    cipher.setAAD(this.aad)
    const out = Buffer.allocUnsafe(RECORD_HEADER_LENGTH + length + TAG_LENGTH)
    out[0] = flags
    out.writeUIntBE(length, 1, 3)
    let n = RECORD_HEADER_LENGTH + cipher.update(a).copy(out, RECORD_HEADER_LENGTH)
    if (b !== undefined && b.length > 0) n += cipher.update(b).copy(out, n)
    if (c !== undefined && c.length > 0) n += cipher.update(c).copy(out, n)
    cipher.final()
    cipher.getAuthTag().copy(out, n)
    this.index++
    if ((flags & FLAG_FINAL) !== 0) this.finished = true
    return out
  }

  /**
   * The next record as a detached job (same wire bytes as record() once run with sealRecordJob),
   * for sealing elsewhere. Records must still be written in the order they were prepared.
   */
  prepare(plaintext: Buffer, final: boolean): SealJob {
    const flags = this.flagsFor(plaintext.length, final)
    const aad = Buffer.from(this.aad)
    aad[aad.length - 1] = flags
    const header = Buffer.allocUnsafe(RECORD_HEADER_LENGTH)
    header[0] = flags
    header.writeUIntBE(plaintext.length, 1, 3)
    const job = { key: this.key, nonce: Buffer.from(nonceFor(this.p.seq, this.index, this.nonce)), aad, header, plaintext }
    this.index++
    if (final) this.finished = true
    return job
  }

  private flagsFor(length: number, final: boolean): number {
    if (this.finished) throw new Error('envelope already finished')
    if (length > MAX_RECORD_PLAINTEXT) throw new RangeError('record over 64 KiB')
    return (final ? FLAG_FINAL : 0) | (this.index === 0 ? FLAG_HEAD : 0)
  }

  /** Seal a body as records of at most 64 KiB after the head; the last one is FINAL. */
  body(body: Buffer, final = true): Buffer[] {
    const out: Buffer[] = []
    if (body.length === 0 && final) {
      out.push(this.record(body, true))
      return out
    }
    for (let off = 0; off < body.length; off += MAX_RECORD_PLAINTEXT) {
      const end = Math.min(off + MAX_RECORD_PLAINTEXT, body.length)
      out.push(this.record(body.subarray(off, end), final && end === body.length))
    }
    return out
  }

  get recordsWritten(): number {
    return this.index
  }
}

/**
 * Reads one envelope incrementally: push chunks as they arrive, get authenticated records.
 *
 * Input is kept as a list of chunks and merged only when a record header or a record spans
 * chunks, so each byte is copied a bounded number of times however the body is split (pushing a
 * 64 KiB record one byte at a time costs O(64 KiB), not O(64 KiB^2)). The decoder never keeps a
 * reference to a pushed chunk after push() returns: callers may reuse their buffers (uWebSockets.js
 * invalidates the ArrayBuffer given to onData when the callback returns).
 */
export class EnvelopeDecoder {
  preamble: Preamble | undefined
  /** Unconsumed input; only the last element may be (a view of) the chunk being pushed. */
  private chunks: Buffer[] = []
  private buffered = 0
  /** True while the last element of `chunks` is a view of the caller's chunk. */
  private borrowed = false
  private key: Buffer | undefined
  private aad: Buffer | undefined
  private readonly nonce = Buffer.allocUnsafe(NONCE_LENGTH)
  private index = 0
  private finished = false
  private joinedHead = false

  /**
   * @param requestTimestampMs response only: the timestamp the device sent with its request.
   * @param requestSeq response only: the seq of the request; a response whose preamble carries
   *   another seq is refused (MalformedError). Without it, two responses to identical requests sent
   *   in the same millisecond could be swapped undetected; device SDKs should always pass it.
   * @param maxRecordPlaintext records above this are refused before any decryption (TooLargeError).
   */
  constructor(private readonly p: EnvelopeParams & { requestTimestampMs?: number; requestSeq?: number; maxRecordPlaintext?: number }) {}

  get done(): boolean {
    return this.finished
  }

  get records(): number {
    return this.index
  }

  push(chunk: Buffer): DecodedRecord[] {
    const out: DecodedRecord[] = []
    this.consume(chunk, (record, flags, length, index) => {
      const plaintext = this.open(record, flags, length, index)
      const final = (flags & FLAG_FINAL) !== 0
      if ((flags & FLAG_JOINED) === 0) {
        out.push({ index, head: (flags & FLAG_HEAD) !== 0, final, plaintext })
        return
      }
      out.push(...joinedRecords(index, plaintext, final))
    })
    return out
  }

  /** The head record was joined (FLAG_JOINED): the sender reads joined records too. */
  get joined(): boolean {
    return this.joinedHead
  }

  /**
   * Like push(), with the same checks, but records come back framed and not yet opened: run each
   * job with openRecordJob (or in a crypto pool) and refuse the body when one returns null. A
   * record's bytes are copied into its job, so the caller may reuse `chunk` once this returns.
   */
  pushFramed(chunk: Buffer): FramedRecord[] {
    return this.consume(chunk, (record, flags, length, index) => {
      const aad = Buffer.from(this.aad!)
      aad[aad.length - 1] = flags
      const job = { key: this.key!, nonce: Buffer.from(nonceFor(this.preamble!.seq, index, this.nonce)), aad, record: Buffer.from(record), length }
      return { index, head: (flags & FLAG_HEAD) !== 0, joined: (flags & FLAG_JOINED) !== 0, final: (flags & FLAG_FINAL) !== 0, length, job }
    })
  }

  private consume<T>(chunk: Buffer, each: (record: Buffer, flags: number, length: number, index: number) => T): T[] {
    if (chunk.length === 0) return []
    if (this.finished) throw new MalformedError('data after the final record')
    this.chunks.push(chunk)
    this.buffered += chunk.length
    this.borrowed = true
    const out: T[] = []
    if (this.preamble || this.readPreamble()) {
      while (this.buffered >= RECORD_HEADER_LENGTH) {
        const header = this.contiguous(RECORD_HEADER_LENGTH)
        const flags = header[0]!
        const length = header.readUIntBE(1, 3)
        if ((flags & ~FLAGS_KNOWN) !== 0) throw new MalformedError('unknown record flags')
        if (length > MAX_RECORD_PLAINTEXT) throw new MalformedError('record length over 64 KiB')
        if (length > (this.p.maxRecordPlaintext ?? MAX_RECORD_PLAINTEXT)) throw new TooLargeError('record too large')
        const head = (flags & FLAG_HEAD) !== 0
        if (head !== (this.index === 0)) throw new MalformedError(head ? 'head flag on a body record' : 'first record is not a head record')
        if ((flags & FLAG_JOINED) !== 0) {
          if (!head) throw new MalformedError('joined flag on a body record')
          if (length < JOINED_PREFIX_LENGTH) throw new MalformedError('joined head record shorter than its length prefix')
          this.joinedHead = true
        }
        const total = RECORD_HEADER_LENGTH + length + TAG_LENGTH
        if (this.buffered < total) break
        const record = this.take(total)
        const final = (flags & FLAG_FINAL) !== 0
        out.push(each(record, flags, length, this.index))
        this.index++
        if (final) {
          this.finished = true
          if (this.buffered > 0) throw new MalformedError('data after the final record')
          break
        }
      }
    }
    // Copy what is left of the caller's chunk (at most one partial record) before returning.
    if (this.borrowed && this.chunks.length > 0) {
      const last = this.chunks.length - 1
      this.chunks[last] = Buffer.from(this.chunks[last]!)
    }
    this.borrowed = false
    return out
  }

  /** Call when the body has ended: throws TruncatedError unless the final record arrived. */
  end(): void {
    if (!this.finished) {
      throw new TruncatedError(this.preamble ? 'body ended before its final record' : 'body ended inside the preamble')
    }
  }

  /** The first chunk, after merging if it holds fewer than `n` bytes (requires buffered >= n). */
  private contiguous(n: number): Buffer {
    const first = this.chunks[0]!
    if (first.length >= n) return first
    const merged = Buffer.concat(this.chunks, this.buffered)
    this.chunks = [merged]
    this.borrowed = false
    return merged
  }

  /** Remove and return the next `n` bytes (requires buffered >= n). */
  private take(n: number): Buffer {
    const first = this.contiguous(n)
    const taken = first.subarray(0, n)
    if (first.length === n) this.chunks.shift()
    else this.chunks[0] = first.subarray(n)
    this.buffered -= n
    return taken
  }

  private readPreamble(): boolean {
    const need = this.p.kind === 'request' ? REQUEST_PREAMBLE_LENGTH : RESPONSE_PREAMBLE_LENGTH
    const b = this.contiguous(Math.min(this.buffered, need))
    // Check what we have of the magic early so that a non-envelope body fails at its first byte.
    if ((b.length > 0 && b[0] !== MAGIC_0) || (b.length > 1 && b[1] !== MAGIC_1)) throw new MalformedError('not an envelope')
    if (b.length > 2 && b[2] !== PROTOCOL_VERSION) throw new MalformedError('unsupported envelope version')
    const wantKind = this.p.kind === 'request' ? KIND_REQUEST : KIND_RESPONSE
    if (b.length > 3 && b[3] !== wantKind) throw new MalformedError('wrong envelope kind')
    if (this.buffered < need) return false
    const seqBig = b.readBigUInt64BE(4)
    if (seqBig < 1n || seqBig > BigInt(MAX_SAFE_SEQ)) throw new MalformedError('sequence number out of range')
    const seq = Number(seqBig)
    if (this.p.kind === 'request') {
      const ts = b.readBigUInt64BE(12)
      if (ts > BigInt(MAX_SAFE_SEQ)) throw new MalformedError('timestamp out of range')
      this.aad = buildAadPrefix('request', seq, Number(ts), this.p.sessionId, this.p.requestLine)
      this.preamble = { kind: 'request', seq, timestampMs: Number(ts) }
      this.key = this.p.key
    } else {
      if (this.p.requestSeq !== undefined && seq !== this.p.requestSeq) throw new MalformedError('response to another request')
      const salt = Buffer.from(b.subarray(12, 28))
      const ts = this.p.requestTimestampMs ?? 0
      this.aad = buildAadPrefix('response', seq, ts, this.p.sessionId, this.p.requestLine)
      this.preamble = { kind: 'response', seq, timestampMs: ts, salt }
      this.key = deriveResponseKey(this.p.key, salt)
    }
    this.take(need)
    return true
  }

  private open(record: Buffer, flags: number, length: number, index: number): Buffer {
    const aad = this.aad!
    aad[aad.length - 1] = flags
    const decipher = createDecipheriv('aes-256-gcm', this.key!, nonceFor(this.preamble!.seq, index, this.nonce), { authTagLength: TAG_LENGTH })
    decipher.setAAD(aad)
    decipher.setAuthTag(record.subarray(RECORD_HEADER_LENGTH + length))
    const plaintext = decipher.update(record.subarray(RECORD_HEADER_LENGTH, RECORD_HEADER_LENGTH + length))
    try {
      decipher.final()
    } catch {
      throw new DecryptError('record failed authentication')
    }
    return plaintext
  }
}
