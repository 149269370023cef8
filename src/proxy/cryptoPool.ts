/**
 * Record crypto off the event loop: records of at least `thresholdBytes` of plaintext are sealed
 * and opened in a piscina pool of worker threads (cryptoWorker.ts), smaller ones inline.
 *
 *   record ─▶ below the threshold (or pool off) ─▶ inline AES-256-GCM, same tick
 *          └▶ at or above ─▶ copy into the task ─▶ worker ─▶ result (a promise)
 *
 * Off by default (threshold 0): measured with bench/cryptoPool.ts on the 2-core machine, a pool
 * round trip costs more event-loop time than AES-256-GCM on a whole 64 KiB record, so the pool
 * never wins there (figures in docs/performance.md). It can pay on machines with idle cores and
 * large records.
 *
 * One pool per thread: proxies of the same thread with the same settings share it (acquire /
 * release). Worker threads of the proxy (`proxy.workers`) each have their own: with N proxy
 * threads, N × poolThreads crypto threads run.
 */
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Piscina } from 'piscina'
import { DecryptError } from '../errors.js'
import { openRecordJob, sealRecordJob, type OpenJob, type SealJob } from '../protocol/envelope.js'
import type { CryptoResult, CryptoTask } from './cryptoMessages.js'

export interface CryptoPoolOptions {
  /** Records with at least this much plaintext go to the pool; 0 disables the pool. */
  thresholdBytes: number
  threads: number
}

/** Tasks queued in one worker at a time: keeps a worker busy across message round trips. */
export const CONCURRENT_TASKS_PER_WORKER = 4

/** The compiled worker; running from TypeScript sources (tests), the build's copy in dist/. */
function workerFile(): string {
  const here = new URL('./cryptoWorker.js', import.meta.url)
  if (existsSync(fileURLToPath(here))) return here.href
  const built = new URL('../../dist/proxy/cryptoWorker.js', import.meta.url)
  if (existsSync(fileURLToPath(built))) return built.href
  throw new Error('crypto worker not found: run `npm run build`')
}

/** Own, exactly sized copy: cloned or transferred without dragging a larger ArrayBuffer along. */
function own(b: Buffer): Uint8Array {
  return new Uint8Array(b)
}

function asBuffer(u: Uint8Array): Buffer {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength)
}

export class CryptoPool {
  private readonly piscina: Piscina<CryptoTask, CryptoResult>
  private users = 0

  private constructor(readonly o: CryptoPoolOptions) {
    this.piscina = new Piscina<CryptoTask, CryptoResult>({
      filename: workerFile(),
      minThreads: o.threads,
      maxThreads: o.threads,
      concurrentTasksPerWorker: CONCURRENT_TASKS_PER_WORKER,
      idleTimeout: 60_000,
    })
  }

  private static readonly shared = new Map<string, CryptoPool>()

  /** The thread's pool for these settings, or undefined when the pool is off (threshold 0). */
  static acquire(o: CryptoPoolOptions): CryptoPool | undefined {
    if (o.thresholdBytes <= 0) return undefined
    const key = `${o.thresholdBytes}/${o.threads}`
    let pool = CryptoPool.shared.get(key)
    if (!pool) CryptoPool.shared.set(key, (pool = new CryptoPool(o)))
    pool.users++
    return pool
  }

  /** Give the pool back; the last user destroys it. */
  async release(): Promise<void> {
    if (--this.users > 0) return
    const key = `${this.o.thresholdBytes}/${this.o.threads}`
    if (CryptoPool.shared.get(key) === this) CryptoPool.shared.delete(key)
    await this.piscina.destroy()
  }

  /** True when a record of this plaintext length goes to the pool. */
  takes(length: number): boolean {
    return length >= this.o.thresholdBytes
  }

  /** The sealed record: inline below the threshold, else from a worker. */
  seal(job: SealJob): Buffer | Promise<Buffer> {
    if (!this.takes(job.plaintext.length)) return sealRecordJob(job)
    const task: CryptoTask = { op: 'seal', key: own(job.key), nonce: own(job.nonce), aad: own(job.aad), header: own(job.header), plaintext: own(job.plaintext) }
    return this.piscina.run(task, { transferList: [task.key.buffer, task.nonce.buffer, task.aad.buffer, task.header.buffer, task.plaintext.buffer] as ArrayBuffer[] })
      .then((r) => asBuffer(r!))
  }

  /** The opened plaintext (DecryptError when the record fails authentication). */
  open(job: OpenJob): Buffer | Promise<Buffer> {
    if (!this.takes(job.length)) {
      const plaintext = openRecordJob(job)
      if (!plaintext) throw new DecryptError('record failed authentication')
      return plaintext
    }
    const task: CryptoTask = { op: 'open', key: own(job.key), nonce: own(job.nonce), aad: own(job.aad), record: own(job.record), length: job.length }
    return this.piscina.run(task, { transferList: [task.key.buffer, task.nonce.buffer, task.aad.buffer, task.record.buffer] as ArrayBuffer[] })
      .then((r) => {
        if (!r) throw new DecryptError('record failed authentication')
        return asBuffer(r)
      })
  }

  /** Tasks waiting for a worker. */
  get queueDepth(): number {
    return this.piscina.queueSize
  }

  /** Share of the pool's capacity spent running tasks since it started (0..1). */
  get utilization(): number {
    return this.piscina.utilization
  }
}
