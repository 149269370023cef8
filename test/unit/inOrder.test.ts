import { describe, expect, it } from 'vitest'
import { InOrder } from '../../src/proxy/inOrder.js'

function deferred<T>() {
  let resolve!: (v: T) => void
  let reject!: (e: unknown) => void
  const promise = new Promise<T>((res, rej) => { resolve = res; reject = rej })
  return { promise, resolve, reject }
}

describe('InOrder', () => {
  it('delivers a ready value at once, in the same tick, when nothing is pending', () => {
    const got: number[] = []
    const q = new InOrder<number>((v) => got.push(v), () => { throw new Error('no failure expected') })
    q.add(1)
    q.add(2)
    expect(got).toEqual([1, 2])
    expect(q.pending).toBe(0)
  })

  it('keeps the order of addition when promises settle out of order, ready values wait their turn', async () => {
    const got: number[] = []
    let idle = 0
    const q = new InOrder<number>((v) => got.push(v), () => undefined, () => idle++)
    const a = deferred<number>()
    const b = deferred<number>()
    q.add(a.promise)
    q.add(b.promise)
    q.add(3)
    expect(q.pending).toBe(3)
    b.resolve(2)
    await b.promise
    await Promise.resolve()
    expect(got).toEqual([])
    a.resolve(1)
    await a.promise
    await Promise.resolve()
    expect(got).toEqual([1, 2, 3])
    expect(q.pending).toBe(0)
    expect(idle).toBe(1)
  })

  it('the first rejection is reported once and stops delivery for good', async () => {
    const got: number[] = []
    const errors: unknown[] = []
    const q = new InOrder<number>((v) => got.push(v), (e) => errors.push(e))
    const a = deferred<number>()
    const b = deferred<number>()
    q.add(a.promise)
    q.add(b.promise)
    a.reject(new Error('auth'))
    b.reject(new Error('second'))
    await Promise.allSettled([a.promise, b.promise])
    await Promise.resolve()
    q.add(5)
    expect(got).toEqual([])
    expect(errors.map((e) => (e as Error).message)).toEqual(['auth'])
  })
})
