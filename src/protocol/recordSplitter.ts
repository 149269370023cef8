/**
 * Cuts a body arriving in chunks of any size into record plaintexts of 64 KiB, for sealing as
 * they fill up. A record is handed out only once more than 64 KiB is held, so the rest at the end
 * (the FINAL record) always carries 1..64 KiB of a non-empty body: the number of records of a
 * body of n bytes is ceil(n / 64 KiB) (the proxy derives the envelope size from it).
 */
import { MAX_RECORD_PLAINTEXT } from './constants.js'

export class RecordSplitter {
  private held: Buffer[] = []
  private heldBytes = 0

  constructor(private readonly size = MAX_RECORD_PLAINTEXT) {}

  /** Bytes held, not yet handed out. */
  get buffered(): number {
    return this.heldBytes
  }

  /** Add a chunk; returns the full records it completed (possibly none). */
  push(chunk: Buffer): Buffer[] {
    if (chunk.length > 0) {
      this.held.push(chunk)
      this.heldBytes += chunk.length
    }
    const out: Buffer[] = []
    while (this.heldBytes > this.size) out.push(this.take(this.size))
    return out
  }

  /** Everything still held (the last record's plaintext; empty for an empty body). */
  rest(): Buffer {
    return this.take(this.heldBytes)
  }

  /** Drop what is held. */
  clear(): void {
    this.held = []
    this.heldBytes = 0
  }

  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0)
    const first = this.held[0]!
    let out: Buffer
    if (first.length === n) {
      out = first
      this.held.shift()
    } else if (first.length > n) {
      out = first.subarray(0, n)
      this.held[0] = first.subarray(n)
    } else {
      out = Buffer.allocUnsafe(n)
      let at = 0
      while (at < n) {
        const c = this.held[0]!
        const k = Math.min(c.length, n - at)
        c.copy(out, at, 0, k)
        at += k
        if (k === c.length) this.held.shift()
        else this.held[0] = c.subarray(k)
      }
    }
    this.heldBytes -= n
    return out
  }
}
