/**
 * Activation codes: one-time enrollment credentials an admin hands to a user (instead of, or
 * together with, the password; security.enrollment.mode).
 *
 * A code is 160 random bits written as 32 base32 characters (RFC 4648 alphabet) in groups of
 * four: `ABCD-EFGH-…`. It is shown once, when issued; the store keeps only the SHA-256 (hex) of
 * its canonical form (upper case, no dashes or spaces), so a database leak reveals no usable
 * code. Using a code marks it used in one conditional UPDATE: of two concurrent enrollments with
 * the same code exactly one succeeds.
 */
import { createHash, randomBytes } from 'node:crypto'
import { MalformedError } from '../errors.js'
import type { ActivationCodeRecord, ActivationCodeStore, Page } from '../store/types.js'

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'
/** 20 bytes = 160 bits = exactly 32 base32 characters. */
const CODE_BYTES = 20
const CODE_CHARS = 32
const CANONICAL_RE = /^[A-Z2-7]{32}$/
const USER_RE = /^[^\p{Cc}]{1,256}$/u
const APP_RE = /^[A-Za-z0-9._:@-]{1,128}$/

export const DEFAULT_CODE_TTL_SECONDS = 72 * 3600
export const MAX_CODE_TTL_SECONDS = 30 * 86400

/** RFC 4648 base32 without padding. */
export function base32(bytes: Buffer): string {
  let out = ''
  let bits = 0
  let value = 0
  for (const b of bytes) {
    value = (value << 8) | b
    bits += 8
    while (bits >= 5) {
      out += ALPHABET[(value >>> (bits - 5)) & 31]
      bits -= 5
    }
  }
  if (bits > 0) out += ALPHABET[(value << (5 - bits)) & 31]
  return out
}

/** Upper case without separators; undefined when it cannot be a code (so it is never hashed or looked up). */
export function canonicalCode(code: unknown): string | undefined {
  if (typeof code !== 'string' || code.length > 64) return undefined
  const c = code.replace(/[\s-]/g, '').toUpperCase()
  return CANONICAL_RE.test(c) ? c : undefined
}

export function codeHash(canonical: string): string {
  return createHash('sha256').update(canonical, 'utf8').digest('hex')
}

export function newActivationCode(): { code: string; canonical: string } {
  const canonical = base32(randomBytes(CODE_BYTES))
  if (canonical.length !== CODE_CHARS) throw new Error('activation code length')
  return { canonical, code: canonical.match(/.{4}/g)!.join('-') }
}

export interface IssueInput {
  userName: string
  appId?: string | null
  ttlSeconds?: number
  /** The admin who issued it (audit). */
  createdBy: string
}

export class ActivationCodeService {
  constructor(private readonly p: { store: ActivationCodeStore; now?: () => number }) {}

  private now(): number {
    return this.p.now ? this.p.now() : Date.now()
  }

  /** A new code for the user (and app, if given). The code is returned here only, never stored. */
  async issue(i: IssueInput): Promise<{ code: string; expiresAt: number }> {
    if (typeof i.userName !== 'string' || !USER_RE.test(i.userName)) throw new MalformedError('userName must be a string of 1..256 characters')
    const appId = i.appId ?? null
    if (appId !== null && (typeof appId !== 'string' || !APP_RE.test(appId))) throw new MalformedError('appId must match [A-Za-z0-9._:@-]{1,128}')
    const ttl = i.ttlSeconds ?? DEFAULT_CODE_TTL_SECONDS
    if (typeof ttl !== 'number' || !Number.isSafeInteger(ttl) || ttl < 60 || ttl > MAX_CODE_TTL_SECONDS) {
      throw new MalformedError(`ttlSeconds must be an integer from 60 to ${MAX_CODE_TTL_SECONDS}`)
    }
    if (typeof i.createdBy !== 'string' || i.createdBy.length === 0) throw new MalformedError('createdBy must be a non-empty string')
    const { code, canonical } = newActivationCode()
    const now = this.now()
    const expiresAt = now + ttl * 1000
    await this.p.store.createActivationCode({
      codeHash: codeHash(canonical), userName: i.userName, appId, expiresAt, usedAt: null, createdBy: i.createdBy, createdAt: now,
    })
    return { code, expiresAt }
  }

  /** Newest first; records carry the code's hash only. */
  list(filter: { userName?: string } & Page = {}): Promise<ActivationCodeRecord[]> {
    return this.p.store.listActivationCodes(filter)
  }

  /**
   * Use a code for this user and app: true when it was unused, unexpired, issued to this user and
   * for this app (or any app). The code is spent by the attempt whether or not user and app
   * match, so a code cannot be probed for its owner.
   */
  async consume(code: unknown, who: { userName: string; appId: string }): Promise<boolean> {
    const canonical = canonicalCode(code)
    if (!canonical) return false
    const rec = await this.p.store.consumeActivationCode(codeHash(canonical), this.now())
    return !!rec && rec.userName === who.userName && (rec.appId === null || rec.appId === who.appId)
  }
}
