/**
 * The crypto worker pool: off at threshold 0, shared per thread, and the same bytes as inline
 * crypto whichever side of the threshold a record falls. Runs the compiled worker (npm run build).
 */
import { randomBytes } from 'node:crypto'
import { afterAll, describe, expect, it } from 'vitest'
import { DecryptError } from '../../src/errors.js'
import { EnvelopeDecoder, EnvelopeEncoder, openRecordJob, sealRecordJob } from '../../src/protocol/envelope.js'
import { CryptoPool } from '../../src/proxy/cryptoPool.js'

const key = randomBytes(32)
const sessionId = randomBytes(16).toString('base64url')
const params = { kind: 'request' as const, key, sessionId, requestLine: 'POST /x' }

describe('CryptoPool', () => {
  const pool = CryptoPool.acquire({ thresholdBytes: 4096, threads: 1 })!
  afterAll(() => pool.release())

  it('is off at threshold 0, and shared by proxies of one thread with the same settings', async () => {
    expect(CryptoPool.acquire({ thresholdBytes: 0, threads: 4 })).toBeUndefined()
    const again = CryptoPool.acquire({ thresholdBytes: 4096, threads: 1 })
    expect(again).toBe(pool)
    await again!.release() // one user left: the pool stays up
    expect(pool.takes(4096)).toBe(true)
    expect(pool.takes(4095)).toBe(false)
  })

  it('seals and opens the same bytes as inline crypto, below (inline) and at or above (worker) the threshold', async () => {
    for (const size of [10, 4095, 4096, 65_536]) {
      const enc = new EnvelopeEncoder({ ...params, seq: 5, timestampMs: 7 })
      const head = enc.prepare(Buffer.from('{}'), false)
      const job = enc.prepare(randomBytes(size), true)
      const sealed = pool.seal(job)
      expect(sealed instanceof Promise).toBe(size >= 4096)
      const bytes = await sealed
      expect(bytes.equals(sealRecordJob(job))).toBe(true)

      const framed = new EnvelopeDecoder(params).pushFramed(Buffer.concat([enc.preamble, sealRecordJob(head), bytes]))
      const opened = pool.open(framed[1]!.job)
      expect(opened instanceof Promise).toBe(size >= 4096)
      expect((await opened).equals(openRecordJob(framed[1]!.job)!)).toBe(true)
    }
  })

  it('a record that fails authentication is a DecryptError, inline and in the pool', async () => {
    for (const size of [100, 20_000]) {
      const enc = new EnvelopeEncoder({ ...params, seq: 6, timestampMs: 7 })
      const env = Buffer.concat([enc.preamble, enc.record(Buffer.from('{}'), false), enc.record(randomBytes(size), true)])
      env[env.length - 1] = env[env.length - 1]! ^ 0x01
      const job = new EnvelopeDecoder(params).pushFramed(env)[1]!.job
      await expect(Promise.resolve().then(() => pool.open(job))).rejects.toBeInstanceOf(DecryptError)
    }
  })

  it('reports queue depth and utilisation', async () => {
    const enc = new EnvelopeEncoder({ ...params, seq: 8, timestampMs: 7 })
    enc.prepare(Buffer.from('{}'), false)
    const jobs = Array.from({ length: 32 }, (_, i) => enc.prepare(randomBytes(8192), i === 31))
    const all = Promise.all(jobs.map((j) => pool.seal(j)))
    expect(pool.queueDepth).toBeGreaterThan(0)
    await all
    expect(pool.queueDepth).toBe(0)
    expect(pool.utilization).toBeGreaterThan(0)
    expect(pool.utilization).toBeLessThanOrEqual(1)
  })
})
