/**
 * Upstream health and selection state machines (src/proxy/upstreamHealth.ts, upstreamSelect.ts),
 * driven by a fake clock: passive backoff and probes, active check thresholds, round-robin over
 * the available targets and the choice of a retry target.
 */
import { describe, expect, it } from 'vitest'
import { TargetHealth, type HealthReason } from '../../src/proxy/upstreamHealth.js'
import { RoundRobin } from '../../src/proxy/upstreamSelect.js'

function fakeClock(start = 1_000_000) {
  const c = { t: start, reads: 0, now: () => { c.reads++; return c.t }, advance: (ms: number) => { c.t += ms } }
  return c
}

function health(o: { unhealthyAfter?: number; healthyAfter?: number } = {}) {
  const clock = fakeClock()
  const changes: [boolean, HealthReason][] = []
  const h = new TargetHealth({
    unhealthyAfter: o.unhealthyAfter ?? 2, healthyAfter: o.healthyAfter ?? 1, now: clock.now,
    onChange: (up, reason) => changes.push([up, reason]),
  })
  return { h, clock, changes }
}

describe('TargetHealth: passive (real traffic)', () => {
  it('starts up, and an up target costs no clock read', () => {
    const { h, clock } = health()
    expect(h.up).toBe(true)
    for (let i = 0; i < 100; i++) expect(h.available()).toBe(true)
    expect(h.claim()).toBe(false)
    expect(clock.reads).toBe(0)
  })

  it('a connect failure takes the target out for 1 s, then lets exactly one probe through', () => {
    const { h, clock, changes } = health()
    h.connectFailed()
    expect([h.up, h.available()]).toEqual([false, false])
    expect(changes).toEqual([[false, 'connect_failed']])
    clock.advance(999)
    expect(h.available()).toBe(false)
    clock.advance(1)
    expect(h.available()).toBe(true)
    expect(h.claim()).toBe(true) // this request is the probe
    expect(h.available()).toBe(false) // the others wait for its outcome
    expect(h.up).toBe(false) // nothing proven yet
    h.answered()
    expect([h.up, h.available(), h.claim()]).toEqual([true, true, false])
    expect(changes).toEqual([[false, 'connect_failed'], [true, 'answered']])
  })

  it('the backoff doubles while probes keep failing, up to 10 s, and resets on an answer', () => {
    const { h, clock } = health()
    const outFor = () => {
      let ms = 0
      while (!h.available()) { clock.advance(100); ms += 100 }
      return ms
    }
    h.connectFailed()
    const seen: number[] = []
    for (let i = 0; i < 6; i++) {
      seen.push(outFor())
      expect(h.claim()).toBe(true)
      h.connectFailed()
    }
    expect(seen).toEqual([1000, 2000, 4000, 8000, 10_000, 10_000])
    clock.advance(10_000)
    expect(h.claim()).toBe(true)
    h.answered()
    h.connectFailed()
    expect(outFor()).toBe(1000)
  })

  it('requests that fail together in one episode count as one failure', () => {
    const { h, clock, changes } = health()
    for (let i = 0; i < 50; i++) h.connectFailed() // the queued requests of a dead pool, all at once
    clock.advance(1000)
    expect(h.available()).toBe(true)
    expect(changes).toEqual([[false, 'connect_failed']])
  })

  it('a probe that ends without a verdict lets the next request probe', () => {
    const { h, clock } = health()
    h.connectFailed()
    clock.advance(1000)
    expect(h.claim()).toBe(true)
    expect(h.available()).toBe(false)
    h.released() // e.g. it timed out: neither reachable nor unreachable proven
    expect(h.available()).toBe(true)
    expect(h.up).toBe(false)
  })

  it('an answer does not bring back a target that active checks took out', () => {
    const { h } = health({ unhealthyAfter: 1 })
    h.checkFailed()
    h.answered() // a late answer of a request sent before
    expect([h.up, h.available()]).toEqual([false, false])
  })
})

describe('TargetHealth: active checks', () => {
  it('goes down after unhealthyAfter failures in a row; a success in between starts the count again', () => {
    const { h, changes } = health({ unhealthyAfter: 3 })
    h.checkFailed()
    h.checkFailed()
    h.checkSucceeded()
    h.checkFailed()
    h.checkFailed()
    expect(h.up).toBe(true)
    h.checkFailed()
    expect([h.up, h.available()]).toEqual([false, false])
    expect(changes).toEqual([[false, 'check_failed']])
  })

  it('comes back after healthyAfter successes in a row', () => {
    const { h, changes } = health({ unhealthyAfter: 1, healthyAfter: 2 })
    h.checkFailed()
    h.checkSucceeded()
    expect(h.up).toBe(false)
    h.checkFailed()
    h.checkSucceeded()
    expect(h.up).toBe(false)
    h.checkSucceeded()
    expect([h.up, h.available()]).toEqual([true, true])
    expect(changes).toEqual([[false, 'check_failed'], [true, 'check_succeeded']])
  })

  it('a successful check ends a passive backoff at once', () => {
    const { h, changes } = health()
    h.connectFailed()
    h.checkSucceeded()
    expect([h.up, h.available()]).toEqual([true, true])
    expect(changes).toEqual([[false, 'connect_failed'], [true, 'check_succeeded']])
  })
})

describe('RoundRobin', () => {
  /** Targets whose availability the test flips. */
  function make(n: number) {
    const state = Array.from({ length: n }, () => true)
    const list = Array.from({ length: n }, (_, index) => ({ index, health: { available: () => state[index]! } }))
    return { rr: new RoundRobin(list), list, state }
  }

  it('takes the targets in turn', () => {
    const { rr } = make(3)
    expect(Array.from({ length: 7 }, () => rr.pick()?.index)).toEqual([0, 1, 2, 0, 1, 2, 0])
  })

  it('skips the unavailable ones, and takes a target back when it is available again', () => {
    const { rr, state } = make(3)
    state[1] = false
    expect(Array.from({ length: 4 }, () => rr.pick()?.index)).toEqual([0, 2, 0, 2])
    state[1] = true
    expect(Array.from({ length: 3 }, () => rr.pick()?.index)).toEqual([0, 1, 2])
  })

  it('gives nothing when no target is available', () => {
    const { rr, state } = make(2)
    state[0] = false
    state[1] = false
    expect(rr.pick()).toBeUndefined()
  })

  it('retries on the next available target after the failed one, else the failed one if still available', () => {
    const { rr, list, state } = make(3)
    expect(rr.pickAfter(list[0]!)?.index).toBe(1)
    expect(rr.pickAfter(list[2]!)?.index).toBe(0)
    state[1] = false
    expect(rr.pickAfter(list[0]!)?.index).toBe(2)
    state[2] = false
    expect(rr.pickAfter(list[0]!)?.index).toBe(0) // a reset on a kept-alive connection: same target
    state[0] = false
    expect(rr.pickAfter(list[0]!)).toBeUndefined()
  })

  it('refuses targets whose index is not their position', () => {
    expect(() => new RoundRobin([{ index: 1, health: { available: () => true } }])).toThrow('target 0 has index 1')
  })

  it('with real health: a passively failed target is left out, then probed once after its backoff', () => {
    const clock = fakeClock()
    const list = [0, 1].map((index) => ({ index, health: new TargetHealth({ unhealthyAfter: 2, healthyAfter: 1, now: clock.now }) }))
    const rr = new RoundRobin(list)
    list[0]!.health.connectFailed()
    expect(Array.from({ length: 4 }, () => rr.pick()?.index)).toEqual([1, 1, 1, 1])
    clock.advance(1000)
    const first = rr.pick()!
    expect(first.index).toBe(0)
    expect(first.health.claim()).toBe(true)
    expect(Array.from({ length: 3 }, () => rr.pick()?.index)).toEqual([1, 1, 1]) // probe in flight
    first.health.answered()
    expect(Array.from({ length: 4 }, () => rr.pick()?.index)).toEqual([0, 1, 0, 1])
  })
})
