/**
 * Envelopes as streams, for the device SDK's requestStream(): a request body sealed record by
 * record as the app's data arrives, and a response opened record by record as it downloads.
 * Neither holds more than a record or two: backpressure runs through both (undici pulls the
 * request generator as the socket drains; the response body pauses the download while the app
 * does not read).
 */
import { Readable } from 'node:stream'
import { TruncatedError } from '../errors.js'
import type { EnvelopeDecoder, EnvelopeEncoder } from '../protocol/envelope.js'
import { decodeResponseHead, encodeRequestHead, type HeaderList, type ResponseHead } from '../protocol/head.js'
import { RecordSplitter } from '../protocol/recordSplitter.js'

export type BodySource = Readable | AsyncIterable<Buffer | Uint8Array | string>

/** The request envelope: preamble and head record, then the body in 64 KiB records, the last FINAL. */
export async function* sealRequest(enc: EnvelopeEncoder, headers: HeaderList, body: BodySource | undefined): AsyncGenerator<Buffer> {
  const head = encodeRequestHead({ headers })
  if (body === undefined) {
    yield Buffer.concat([enc.preamble, enc.record(head, true)])
    return
  }
  yield Buffer.concat([enc.preamble, enc.record(head, false)])
  const split = new RecordSplitter()
  for await (const chunk of body) {
    const records = split.push(typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))
    if (records.length === 1) yield enc.record(records[0]!, false)
    else if (records.length > 1) yield Buffer.concat(records.map((r) => enc.record(r, false)))
  }
  yield enc.record(split.rest(), true)
}

export interface OpenedResponse {
  /** Resolves once the head record authenticated; rejects when the answer fails before it. */
  head: Promise<ResponseHead>
  /** The body's plaintext, record by record; fails with TruncatedError when the answer is cut. */
  body: Readable
}

/**
 * Open a response envelope as it downloads. A transport error or an end before the FINAL record
 * is a TruncatedError: the proxy closes the connection without FINAL when the upstream fails
 * mid-body, so a cut answer can never pass for a complete one.
 */
export function openResponse(dec: EnvelopeDecoder, src: Readable): OpenedResponse {
  let headDone = false
  let ended = false
  let resolveHead!: (h: ResponseHead) => void
  let rejectHead!: (err: Error) => void
  const head = new Promise<ResponseHead>((resolve, reject) => {
    resolveHead = resolve
    rejectHead = reject
  })
  // Unhandled when the caller only ever reads the body: the body reports the same error.
  head.catch(() => undefined)
  const body = new Readable({
    read: () => { src.resume() },
    destroy: (err, cb) => {
      src.destroy()
      if (!headDone) rejectHead(err ?? new TruncatedError('response abandoned before its head record'))
      cb(err)
    },
  })
  const fail = (err: Error) => {
    if (!headDone) rejectHead(err)
    headDone = true
    body.destroy(err)
  }
  src.on('data', (chunk: Buffer) => {
    let records
    try {
      records = dec.push(chunk)
    } catch (err) {
      return fail(err as Error)
    }
    for (const r of records) {
      if (r.head) {
        try {
          resolveHead(decodeResponseHead(r.plaintext))
          headDone = true
        } catch (err) {
          return fail(err as Error)
        }
      } else if (r.plaintext.length > 0 && !body.push(r.plaintext)) {
        src.pause()
      }
    }
    if (dec.done && !ended) {
      ended = true
      body.push(null)
    }
  })
  src.on('end', () => {
    try {
      dec.end()
    } catch (err) {
      fail(err as Error)
    }
  })
  src.on('error', (err) => fail(new TruncatedError('response ended before its final record', { cause: err })))
  src.on('close', () => {
    if (!dec.done) fail(new TruncatedError('response ended before its final record'))
  })
  return { head, body }
}
