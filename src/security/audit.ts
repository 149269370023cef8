/**
 * The audit log: who did what, to what, when and from where. Append-only in the store
 * (store.appendAudit; the table refuses UPDATE and DELETE). Recorded for enrollments, session
 * opens and closes, device commands, and every admin and self-service action.
 *
 * Never pass a secret in `details` (passwords, tokens, activation codes, keys, session ids: a
 * session is named by the SHA-256 of its id). As a second line of defence, detail keys that name
 * a secret are dropped here before the event reaches the store.
 */
import type { Logger } from '../observability/logger.js'
import type { AuditEvent, AuditStore, Page } from '../store/types.js'

export interface AuditInput {
  actor: string
  actorRole: string
  action: string
  target: string
  remote: string
  details?: Record<string, unknown>
}

export interface AuditQuery extends Page {
  actor?: string
  action?: string
  target?: string
  since?: number
  until?: number
}

/** Keys never stored in details, whatever the caller passes (compared lower-case). */
const SECRET_KEYS = new Set(['password', 'token', 'secret', 'key', 'sharedkey', 'sessionid', 'proof', 'code', 'activationcode', 'cookie', 'csrf', 'csrftoken', 'authorization', 'c2skey', 's2ckey'])
const MAX_FIELD = 256

const clip = (v: string) => (v.length > MAX_FIELD ? `${v.slice(0, MAX_FIELD)}…` : v)

function scrub(details: Record<string, unknown> | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  if (!details) return out
  for (const [k, v] of Object.entries(details)) {
    if (SECRET_KEYS.has(k.toLowerCase()) || v === undefined) continue
    out[k] = typeof v === 'string' ? clip(v) : v
  }
  return out
}

export class AuditLog {
  constructor(private readonly p: { store: AuditStore; log: Logger; now?: () => number }) {}

  /**
   * Append one event. Never throws: an audit write that fails is logged as an error (it shows in
   * the recent-errors view) and the action it describes, already done, is not undone.
   */
  async record(e: AuditInput): Promise<void> {
    const event: AuditEvent = {
      at: this.p.now ? this.p.now() : Date.now(),
      actor: clip(e.actor),
      actorRole: clip(e.actorRole),
      action: clip(e.action),
      target: clip(e.target),
      remote: clip(e.remote),
      details: scrub(e.details),
    }
    try {
      await this.p.store.appendAudit(event)
    } catch (err) {
      this.p.log.error({ event: 'audit_write_failed', action: event.action, err }, 'audit record could not be written')
    }
  }

  query(q: AuditQuery): Promise<AuditEvent[]> {
    return this.p.store.queryAudit(q)
  }
}
