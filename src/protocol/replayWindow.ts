/**
 * Anti-replay sliding window over request sequence numbers (the scheme of IPsec ESP, RFC 4303
 * §3.4.3, and DTLS): remembers the highest accepted number and a bitmap of the `size` numbers
 * below it. Requests may arrive out of order (a device sends several at once) within the window.
 *
 *   bit i of the bitmap  <=>  (highest - i) was accepted        (i in 0 .. size-1)
 *
 * The bitmap is a ring of 32-bit words indexed by seq itself, so sliding forward clears only the
 * words that fall out instead of shifting the whole map.
 */
export type ReplayVerdict = 'ok' | 'replay' | 'stale'

export class ReplayWindow {
  private highest = 0
  private readonly words: Uint32Array
  private readonly size: number

  /** @param size window width in sequence numbers; rounded up to a multiple of 32. */
  constructor(size = 1024) {
    if (!Number.isInteger(size) || size < 32 || size > 1 << 20) throw new RangeError('replay window size must be an integer in 32..1048576')
    this.words = new Uint32Array(Math.ceil(size / 32))
    this.size = this.words.length * 32
  }

  /** Would `seq` be accepted? Does not record it. */
  check(seq: number): ReplayVerdict {
    if (seq > this.highest) return 'ok'
    if (this.highest - seq >= this.size) return 'stale'
    return this.bit(seq) ? 'replay' : 'ok'
  }

  /** Check and record `seq` (call only after the request authenticated). */
  accept(seq: number): ReplayVerdict {
    const v = this.check(seq)
    if (v !== 'ok') return v
    if (seq > this.highest) {
      const advance = seq - this.highest
      if (advance >= this.size) {
        this.words.fill(0)
      } else {
        // Clear the slots for highest+1 .. seq, which now enter the window.
        for (let s = this.highest + 1; s <= seq; s++) this.setBit(s, false)
      }
      this.highest = seq
    }
    this.setBit(seq, true)
    return 'ok'
  }

  get highestAccepted(): number {
    return this.highest
  }

  private bit(seq: number): boolean {
    const slot = seq % this.size
    return ((this.words[slot >>> 5]! >>> (slot & 31)) & 1) === 1
  }

  private setBit(seq: number, on: boolean): void {
    const slot = seq % this.size
    const w = slot >>> 5
    const mask = 1 << (slot & 31)
    this.words[w] = on ? this.words[w]! | mask : this.words[w]! & ~mask
  }
}
