/**
 * Session and device policies, set for everyone (global), a directory group or an app.
 *
 * Resolution of each limit, from weakest to strongest:
 *
 *   config security.sessions ─▶ global policy ─▶ group policies ─▶ app policy
 *   (defaults)                  (if set)         (the MINIMUM over   (if set: wins)
 *                                                 the user's groups
 *                                                 that set it)
 *
 * A policy field left null does not take part. A user in two groups gets the most restrictive of
 * the two; an app policy overrides both (an app may be stricter or looser than a group).
 */
import { MalformedError } from '../errors.js'
import type { PolicyRecord, PolicyScope, PolicyStore } from '../store/types.js'

export interface EffectivePolicy {
  maxSessionLifetimeSeconds: number
  idleTimeoutSeconds: number
  /** A session open later than this after the enrollment's last sign-in needs a new sign-in; null = never. */
  reauthIntervalSeconds: number | null
  /** Devices (with an active enrollment) one user may have; null = no limit. */
  maxDevicesPerUser: number | null
}

export type PolicyLimits = Pick<PolicyRecord, 'maxSessionLifetimeSeconds' | 'idleTimeoutSeconds' | 'reauthIntervalSeconds' | 'maxDevicesPerUser'>

export interface PolicyInput extends Partial<PolicyLimits> {
  /** Default: "global", "group:<name>" or "app:<id>". */
  id?: string
  scope: PolicyScope
  /** '' for global. */
  scopeId?: string
}

const FIELDS = ['maxSessionLifetimeSeconds', 'idleTimeoutSeconds', 'reauthIntervalSeconds', 'maxDevicesPerUser'] as const
/** Bounds per field (seconds, or a count). */
const BOUNDS: Record<(typeof FIELDS)[number], [number, number]> = {
  maxSessionLifetimeSeconds: [60, 365 * 86400],
  idleTimeoutSeconds: [30, 365 * 86400],
  reauthIntervalSeconds: [60, 3650 * 86400],
  maxDevicesPerUser: [1, 10_000],
}
const SCOPES: readonly PolicyScope[] = ['global', 'group', 'app']
const ID_RE = /^[^\p{Cc}]{1,300}$/u

/** Validate a policy as given by an admin; throws MalformedError naming the field. */
export function parsePolicyInput(o: PolicyInput, now: number): PolicyRecord {
  if (!SCOPES.includes(o.scope)) throw new MalformedError('scope must be one of global, group, app')
  const scopeId = o.scope === 'global' ? '' : o.scopeId
  if (o.scope === 'global' && o.scopeId !== undefined && o.scopeId !== '') throw new MalformedError('scopeId must be empty for a global policy')
  if (typeof scopeId !== 'string' || (o.scope !== 'global' && !ID_RE.test(scopeId)) || scopeId.length > 256) {
    throw new MalformedError('scopeId must be the group name or app id (1..256 characters)')
  }
  const id = o.id ?? (o.scope === 'global' ? 'global' : `${o.scope}:${scopeId}`)
  if (typeof id !== 'string' || !ID_RE.test(id)) throw new MalformedError('id must be a string of 1..300 printable characters')
  const rec: PolicyRecord = {
    id, scope: o.scope, scopeId, maxSessionLifetimeSeconds: null, idleTimeoutSeconds: null, reauthIntervalSeconds: null,
    maxDevicesPerUser: null, updatedAt: now,
  }
  for (const f of FIELDS) {
    const v = o[f]
    if (v === undefined || v === null) continue
    const [min, max] = BOUNDS[f]
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
      throw new MalformedError(`${f} must be an integer from ${min} to ${max}, or null`)
    }
    rec[f] = v
  }
  return rec
}

/**
 * The pure resolution rule (see the module comment), separate from the store for unit tests.
 * `defaults` are the config's session settings.
 */
export function resolvePolicy(
  policies: readonly PolicyRecord[],
  who: { groups: readonly string[]; appId: string },
  defaults: { maxSessionLifetimeSeconds: number; idleTimeoutSeconds: number },
): EffectivePolicy {
  const out: EffectivePolicy = { ...defaults, reauthIntervalSeconds: null, maxDevicesPerUser: null }
  const layer = (ps: readonly PolicyRecord[], combine: 'min' | 'last') => {
    for (const f of FIELDS) {
      let v: number | null = null
      for (const p of ps) {
        const x = p[f]
        if (x === null) continue
        v = v === null || combine === 'last' ? x : Math.min(v, x)
      }
      if (v !== null) out[f] = v
    }
  }
  layer(policies.filter((p) => p.scope === 'global'), 'min')
  layer(policies.filter((p) => p.scope === 'group' && who.groups.includes(p.scopeId)), 'min')
  layer(policies.filter((p) => p.scope === 'app' && p.scopeId === who.appId), 'min')
  return out
}

export interface PolicyServiceOptions {
  store: PolicyStore
  /** From config security.sessions. */
  defaults: { maxSessionLifetimeSeconds: number; idleTimeoutSeconds: number }
  now?: () => number
  /** Told after a policy changed or was removed (RevocationHub.policyChanged: proxies re-validate). */
  onChange?: (policyId: string) => Promise<unknown>
}

export class PolicyService {
  constructor(private readonly o: PolicyServiceOptions) {}

  get defaults(): Readonly<{ maxSessionLifetimeSeconds: number; idleTimeoutSeconds: number }> {
    return this.o.defaults
  }

  /** Insert or replace (same id); fields not given are null (not set by this policy). */
  async upsert(p: PolicyInput): Promise<PolicyRecord> {
    const rec = parsePolicyInput(p, this.o.now ? this.o.now() : Date.now())
    await this.o.store.upsertPolicy(rec)
    await this.o.onChange?.(rec.id)
    return rec
  }

  list(): Promise<PolicyRecord[]> {
    return this.o.store.listPolicies()
  }

  async remove(id: string): Promise<boolean> {
    const removed = await this.o.store.deletePolicy(id)
    if (removed) await this.o.onChange?.(id)
    return removed
  }

  async effective(who: { groups: readonly string[]; appId: string }): Promise<EffectivePolicy> {
    return resolvePolicy(await this.o.store.listPolicies(), who, this.o.defaults)
  }
}
