/**
 * Health of one upstream target, from two sources:
 *
 *   active   periodic checks (upstreamHealthCheck.ts): `unhealthyAfter` failures in a row take the
 *            target out of the rotation, `healthyAfter` successes bring it back
 *   passive  real traffic: a connection that cannot be made takes the target out for a backoff
 *            (1 s, doubling while it keeps failing, at most 10 s); when the backoff is over, ONE
 *            request is let through as a probe and the others keep away until it ends. An
 *            answer (any status) or a successful check ends the backoff.
 *
 *              connect failed                 backoff over: one probe claims it
 *     ┌────┐ ────────────────▶ ┌──────────┐ ──────────────────────────────────▶ ┌─────────┐
 *     │ up │                   │ backoff  │ ◀────────────────────────────────── │ probing │
 *     └────┘ ◀──────────────── └──────────┘   probe failed to connect (x2)      └─────────┘
 *        ▲   answer / check ok                                                       │
 *        └───────────────────────────────────────────────────────────────────────────┘
 *                                     probe answered
 *
 * Pure state and an injected clock: unit tests drive it with a fake one.
 */

export type Clock = () => number

export interface PassiveBackoff {
  baseMs: number
  maxMs: number
}

export const PASSIVE_BACKOFF: PassiveBackoff = { baseMs: 1000, maxMs: 10_000 }

export type HealthReason = 'check_failed' | 'check_succeeded' | 'connect_failed' | 'answered'

export interface TargetHealthOptions {
  unhealthyAfter: number
  healthyAfter: number
  backoff?: PassiveBackoff
  now?: Clock
  /** Called when `up` changes. */
  onChange?: (up: boolean, reason: HealthReason) => void
}

export class TargetHealth {
  private activeUp = true
  private checkFailures = 0
  private checkSuccesses = 0
  /** Passive: connect failures of successive episodes; 0 = no backoff. */
  private strikes = 0
  private downUntil = 0
  private probing = false
  private readonly now: Clock
  private readonly backoff: PassiveBackoff

  constructor(private readonly o: TargetHealthOptions) {
    this.now = o.now ?? (() => performance.now())
    this.backoff = o.backoff ?? PASSIVE_BACKOFF
  }

  /** Up and not in a passive backoff: what the gauge shows. */
  get up(): boolean {
    return this.activeUp && this.strikes === 0
  }

  /** May a new request go here now? No side effect: claim() the target once chosen. */
  available(): boolean {
    if (!this.activeUp) return false
    if (this.strikes === 0) return true // the common case reads no clock
    return !this.probing && this.now() >= this.downUntil
  }

  /** The target was chosen for a request. True when that request is the probe after a backoff. */
  claim(): boolean {
    if (this.strikes === 0) return false
    this.probing = true
    return true
  }

  /** The probe ended without a verdict (timeout, abandoned, answer too large): let another one try. */
  released(): void {
    this.probing = false
  }

  /** A request got an answer (any status): the target is reachable. */
  answered(): void {
    if (this.strikes === 0) return
    const before = this.up
    this.clearPassive()
    this.notify(before, 'answered')
  }

  /** A connection could not be made: out for a backoff that doubles while the target keeps failing. */
  connectFailed(): void {
    const now = this.now()
    // Requests queued before the failure fail together: one episode, one strike.
    if (this.strikes > 0 && !this.probing && now < this.downUntil) return
    const before = this.up
    this.strikes++
    this.downUntil = now + Math.min(this.backoff.baseMs * 2 ** Math.min(this.strikes - 1, 30), this.backoff.maxMs)
    this.probing = false
    this.notify(before, 'connect_failed')
  }

  checkSucceeded(): void {
    const before = this.up
    this.checkFailures = 0
    this.checkSuccesses++
    if (!this.activeUp && this.checkSuccesses >= this.o.healthyAfter) this.activeUp = true
    this.clearPassive() // it answered a check: reachable
    this.notify(before, 'check_succeeded')
  }

  checkFailed(): void {
    const before = this.up
    this.checkSuccesses = 0
    this.checkFailures++
    if (this.activeUp && this.checkFailures >= this.o.unhealthyAfter) this.activeUp = false
    this.notify(before, 'check_failed')
  }

  private clearPassive(): void {
    this.strikes = 0
    this.downUntil = 0
    this.probing = false
  }

  private notify(before: boolean, reason: HealthReason): void {
    if (this.up !== before) this.o.onChange?.(this.up, reason)
  }
}
