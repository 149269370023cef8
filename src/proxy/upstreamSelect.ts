/**
 * Choosing a target of a route: round-robin over the available ones (upstreamHealth.ts decides
 * what is available). A scan of at most n targets per pick; routes name a handful of targets, and
 * a scan allocates nothing.
 */

export interface Selectable {
  /** Position in the route's target list. */
  readonly index: number
  readonly health: { available(): boolean }
}

export class RoundRobin<T extends Selectable> {
  private next = 0

  constructor(readonly targets: readonly T[]) {
    targets.forEach((t, i) => {
      if (t.index !== i) throw new Error(`target ${i} has index ${t.index}`)
    })
  }

  /** The next available target in turn, or undefined when none is. */
  pick(): T | undefined {
    const n = this.targets.length
    for (let i = 0; i < n; i++) {
      const at = (this.next + i) % n
      const t = this.targets[at]!
      if (t.health.available()) {
        this.next = (at + 1) % n
        return t
      }
    }
    return undefined
  }

  /**
   * Where to retry a request that failed on `failed`: the next available target after it, else
   * `failed` itself when it is still available (a connection reset on a kept-alive connection
   * does not make a target unavailable), else undefined.
   */
  pickAfter(failed: T): T | undefined {
    const n = this.targets.length
    for (let i = 1; i < n; i++) {
      const t = this.targets[(failed.index + i) % n]!
      if (t.health.available()) return t
    }
    return failed.health.available() ? failed : undefined
  }
}
