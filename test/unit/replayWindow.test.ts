import { describe, expect, it } from 'vitest'
import { ReplayWindow, type ReplayVerdict } from '../../src/protocol/replayWindow.js'
import { prng } from '../helpers/prng.js'


/** The obvious model: every accepted number in a Set. */
class ReferenceWindow {
  private highest = 0
  private readonly seen = new Set<number>()
  constructor(private readonly size: number) {}
  check(seq: number): ReplayVerdict {
    if (seq > this.highest) return 'ok'
    if (this.highest - seq >= this.size) return 'stale'
    return this.seen.has(seq) ? 'replay' : 'ok'
  }
  accept(seq: number): ReplayVerdict {
    const v = this.check(seq)
    if (v === 'ok') {
      this.seen.add(seq)
      this.highest = Math.max(this.highest, seq)
    }
    return v
  }
}

describe('ReplayWindow', () => {
  it('accepts in-order sequence numbers and refuses each a second time', () => {
    const w = new ReplayWindow()
    for (let s = 1; s <= 3000; s++) expect(w.accept(s)).toBe('ok')
    expect(w.highestAccepted).toBe(3000)
    for (let s = 3000; s > 3000 - 1024; s--) expect(w.accept(s)).toBe('replay')
    for (let s = 3000 - 1024; s >= 1; s--) expect(w.accept(s)).toBe('stale')
  })

  it('accepts out-of-order numbers within the window, once', () => {
    const w = new ReplayWindow()
    expect(w.accept(10)).toBe('ok')
    for (const s of [5, 7, 9, 1, 2]) expect(w.accept(s)).toBe('ok')
    for (const s of [5, 7, 9, 1, 2, 10]) expect(w.accept(s)).toBe('replay')
    for (const s of [3, 4, 6, 8]) expect(w.accept(s)).toBe('ok')
    expect(w.accept(11)).toBe('ok')
    expect(w.highestAccepted).toBe(11)
  })

  it('refuses duplicates as replay', () => {
    const w = new ReplayWindow()
    expect(w.accept(1)).toBe('ok')
    expect(w.accept(1)).toBe('replay')
    expect(w.accept(1)).toBe('replay')
  })

  it('numbers older than the window are stale, whether seen or not', () => {
    const w = new ReplayWindow(1024)
    expect(w.accept(2000)).toBe('ok')
    expect(w.check(2000 - 1023)).toBe('ok') // the oldest number still inside
    expect(w.check(2000 - 1024)).toBe('stale')
    expect(w.accept(1)).toBe('stale')
    expect(w.accept(2000 - 1023)).toBe('ok')
    expect(w.accept(2001)).toBe('ok')
    expect(w.accept(2000 - 1023)).toBe('stale') // slid out
  })

  it('a jump larger than the window forgets everything below the new edge', () => {
    const w = new ReplayWindow(1024)
    for (let s = 1; s <= 1024; s++) w.accept(s)
    expect(w.accept(1024 + 5000)).toBe('ok')
    // Every slot of the ring was set before the jump; all numbers now inside are unseen.
    for (let s = 5000 + 1; s < 1024 + 5000; s++) expect(w.check(s)).toBe('ok')
    expect(w.check(5000)).toBe('stale')
    expect(w.check(1024 + 5000)).toBe('replay')
  })

  it('jumps of exactly size and size - 1 clear the right slots', () => {
    for (const jump of [1023, 1024, 1025]) {
      const w = new ReplayWindow(1024)
      for (let s = 1; s <= 1024; s++) w.accept(s)
      const top = 1024 + jump
      expect(w.accept(top)).toBe('ok')
      for (let s = top - 1023; s < top; s++) {
        // Numbers that were accepted before the jump and are still inside remain replays.
        expect(w.check(s), `jump ${jump}, seq ${s}`).toBe(s <= 1024 ? 'replay' : 'ok')
      }
      expect(w.check(top - 1024)).toBe('stale')
    }
  })

  it('wraps around the ring at multiples of its size', () => {
    const w = new ReplayWindow(64)
    // Cross several wraps with gaps so stale bits from an earlier lap would show.
    for (let lap = 0; lap < 5; lap++) {
      for (let j = 0; j < 64; j++) {
        const s = lap * 64 + j + 1
        if (j % 3 !== 0) expect(w.accept(s), `seq ${s}`).toBe('ok')
      }
    }
    const top = w.highestAccepted
    for (let s = top - 63; s <= top; s++) {
      const j = (s - 1) % 64
      expect(w.check(s), `seq ${s}`).toBe(j % 3 !== 0 ? 'replay' : 'ok')
    }
    // The slots of seq 64, 128, 192, ... are the same word/bit: each lap must see a fresh one.
    const v = new ReplayWindow(32)
    for (const s of [32, 64, 96, 128]) {
      expect(v.accept(s)).toBe('ok')
      expect(v.accept(s)).toBe('replay')
      expect(v.check(s + 32)).toBe('ok')
    }
  })

  it('check() does not record', () => {
    const w = new ReplayWindow()
    expect(w.check(5)).toBe('ok')
    expect(w.check(5)).toBe('ok')
    expect(w.highestAccepted).toBe(0)
    expect(w.accept(5)).toBe('ok')
    expect(w.check(5)).toBe('replay')
    expect(w.check(6)).toBe('ok')
    expect(w.highestAccepted).toBe(5)
  })

  it('rounds the size up to a multiple of 32 and validates it', () => {
    const w = new ReplayWindow(33)
    w.accept(100)
    expect(w.check(100 - 63)).toBe('ok')
    expect(w.check(100 - 64)).toBe('stale')
    for (const bad of [0, 31, 32.5, -64, (1 << 20) + 1, Number.NaN]) expect(() => new ReplayWindow(bad), String(bad)).toThrow(RangeError)
    expect(() => new ReplayWindow(1 << 20)).not.toThrow()
  })

  it('handles sequence numbers up to 2^53 - 1', () => {
    const w = new ReplayWindow()
    const max = Number.MAX_SAFE_INTEGER
    expect(w.accept(max - 5)).toBe('ok')
    expect(w.accept(max)).toBe('ok')
    expect(w.accept(max - 5)).toBe('replay')
    expect(w.accept(max - 1)).toBe('ok')
    expect(w.accept(1)).toBe('stale')
  })

  for (const size of [32, 64, 1024]) {
    it(`agrees with a Set-based model on 10,000 random operations (size ${size})`, () => {
      const rnd = prng(0x5eed + size)
      const w = new ReplayWindow(size)
      const ref = new ReferenceWindow(size)
      let top = 1
      const counts: Record<ReplayVerdict, number> = { ok: 0, replay: 0, stale: 0 }
      for (let i = 0; i < 10_000; i++) {
        const r = rnd()
        let seq: number
        if (r < 0.02) seq = top + 1 + Math.floor(rnd() * size * 3) // occasional big jump
        else if (r < 0.4) seq = top + 1 + Math.floor(rnd() * 4) // mostly moving forward
        else seq = Math.max(1, top - Math.floor(rnd() * (size * 1.3))) // behind: replays, late arrivals, stale
        const op = rnd() < 0.8 ? 'accept' : 'check'
        const got = w[op](seq)
        const want = ref[op](seq)
        expect(got, `op ${i}: ${op}(${seq}), highest ${w.highestAccepted}`).toBe(want)
        counts[got]++
        top = Math.max(top, w.highestAccepted)
      }
      // The mix actually exercised every verdict.
      expect(counts.ok).toBeGreaterThan(1000)
      expect(counts.replay).toBeGreaterThan(100)
      expect(counts.stale).toBeGreaterThan(100)
    })
  }
})
