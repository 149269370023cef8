/**
 * Sign-in throttling for the admin and self-service logins: at most `max` failed attempts per key
 * (a remote address, a user name) in a sliding window of `windowMs`. Only failures count, so an
 * admin who types the password right is never locked out by her own successful sign-ins; once a
 * key is over the limit every attempt is refused (429) without checking the password, so a
 * guesser cannot learn that a guess was right.
 *
 * Memory is bounded: at most `maxKeys` keys, the least recently touched dropped first (a Map
 * keeps insertion order; a touched key is re-inserted at the end).
 */
import { RateLimitedError } from '../errors.js'

export interface LoginLimiterOptions {
  max: number
  windowMs: number
  maxKeys?: number
  now?: () => number
}

export class LoginLimiter {
  private readonly failures = new Map<string, number[]>()
  private readonly maxKeys: number

  constructor(private readonly o: LoginLimiterOptions) {
    this.maxKeys = o.maxKeys ?? 10_000
  }

  private now(): number {
    return this.o.now ? this.o.now() : Date.now()
  }

  private recent(key: string): number[] {
    const list = this.failures.get(key)
    if (!list) return []
    const from = this.now() - this.o.windowMs
    const kept = list.filter((t) => t > from)
    if (kept.length === 0) this.failures.delete(key)
    else if (kept.length !== list.length) this.failures.set(key, kept)
    return kept
  }

  /** Throws RateLimitedError when any of `keys` is at the limit. */
  check(keys: readonly string[]): void {
    for (const k of keys) {
      if (this.recent(k).length >= this.o.max) {
        throw new RateLimitedError(`too many failed sign-ins; try again in ${Math.ceil(this.o.windowMs / 1000)} seconds`)
      }
    }
  }

  fail(keys: readonly string[]): void {
    const t = this.now()
    for (const k of keys) {
      const list = this.recent(k)
      list.push(t)
      this.failures.delete(k)
      this.failures.set(k, list.slice(-this.o.max))
      if (this.failures.size > this.maxKeys) this.failures.delete(this.failures.keys().next().value!)
    }
  }
}
