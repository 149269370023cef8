import { describe, expect, it } from 'vitest'
import { RecordSplitter } from '../../src/protocol/recordSplitter.js'

const K = 65_536

function split(total: number, chunk: number): Buffer[] {
  const data = Buffer.from(Array.from({ length: total }, (_, i) => i % 251))
  const s = new RecordSplitter()
  const out: Buffer[] = []
  for (let o = 0; o < total; o += chunk) out.push(...s.push(data.subarray(o, o + chunk)))
  out.push(s.rest())
  expect(Buffer.concat(out).equals(data)).toBe(true)
  return out
}

describe('RecordSplitter', () => {
  it.each([
    [0, 1000, 1], [1, 1, 1], [K, 1000, 1], [K + 1, 7_000, 2], [2 * K, K, 2], [3 * K + 5, 100_000, 4], [5 * K, 3, 5],
  ])('%i bytes in chunks of %i: ceil(n / 64 KiB) records, all full but the last (1..64 KiB)', (total, chunk, records) => {
    const out = split(total, chunk)
    expect(out).toHaveLength(records)
    for (const r of out.slice(0, -1)) expect(r.length).toBe(K)
    const last = out.at(-1)!.length
    if (total > 0) {
      expect(last).toBeGreaterThanOrEqual(1)
      expect(last).toBeLessThanOrEqual(K)
    }
  })

  it('hands out nothing until more than one record is held', () => {
    const s = new RecordSplitter()
    expect(s.push(Buffer.alloc(K))).toEqual([])
    expect(s.buffered).toBe(K)
    expect(s.push(Buffer.alloc(1))).toHaveLength(1)
    expect(s.buffered).toBe(1)
    s.clear()
    expect(s.rest()).toHaveLength(0)
  })
})
