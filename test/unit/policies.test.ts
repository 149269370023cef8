/** Policy resolution (config → global → groups (minimum) → app) and the policy service over the real store. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { MalformedError } from '../../src/errors.js'
import { parsePolicyInput, PolicyService, resolvePolicy } from '../../src/security/policies.js'
import { newMasterKey, SecretBox } from '../../src/store/secretBox.js'
import { openStore } from '../../src/store/openStore.js'
import type { SqlStore } from '../../src/store/sqlStore.js'
import type { PolicyRecord } from '../../src/store/types.js'

const DEFAULTS = { maxSessionLifetimeSeconds: 28_800, idleTimeoutSeconds: 1800 }

function p(over: Partial<PolicyRecord> & Pick<PolicyRecord, 'scope'>): PolicyRecord {
  return {
    id: `${over.scope}:${over.scopeId ?? ''}`, scopeId: '', maxSessionLifetimeSeconds: null, idleTimeoutSeconds: null,
    reauthIntervalSeconds: null, maxDevicesPerUser: null, updatedAt: 0, ...over,
  }
}

describe('resolvePolicy', () => {
  const policies = [
    p({ scope: 'global', maxSessionLifetimeSeconds: 7200, maxDevicesPerUser: 5 }),
    p({ scope: 'group', scopeId: 'staff', idleTimeoutSeconds: 900, maxDevicesPerUser: 3 }),
    p({ scope: 'group', scopeId: 'contractors', idleTimeoutSeconds: 300, maxDevicesPerUser: 1, reauthIntervalSeconds: 86_400 }),
    p({ scope: 'group', scopeId: 'execs', maxDevicesPerUser: 10 }),
    p({ scope: 'app', scopeId: 'mail', maxSessionLifetimeSeconds: 600, maxDevicesPerUser: 8 }),
    p({ scope: 'app', scopeId: 'crm', idleTimeoutSeconds: 60 }),
  ]

  it('no policies: the config defaults, no re-sign-in, no device limit', () => {
    expect(resolvePolicy([], { groups: ['staff'], appId: 'mail' }, DEFAULTS)).toEqual({
      ...DEFAULTS, reauthIntervalSeconds: null, maxDevicesPerUser: null,
    })
  })

  it('global overrides the defaults; fields it leaves null keep them', () => {
    expect(resolvePolicy(policies, { groups: [], appId: 'other' }, DEFAULTS)).toEqual({
      maxSessionLifetimeSeconds: 7200, idleTimeoutSeconds: 1800, reauthIntervalSeconds: null, maxDevicesPerUser: 5,
    })
  })

  it('a group overrides global, even to be looser', () => {
    expect(resolvePolicy(policies, { groups: ['execs'], appId: 'other' }, DEFAULTS).maxDevicesPerUser).toBe(10)
  })

  it('several groups: the most restrictive value of each field', () => {
    expect(resolvePolicy(policies, { groups: ['staff', 'contractors', 'execs'], appId: 'other' }, DEFAULTS)).toEqual({
      maxSessionLifetimeSeconds: 7200, idleTimeoutSeconds: 300, reauthIntervalSeconds: 86_400, maxDevicesPerUser: 1,
    })
  })

  it('groups the user is not in do not apply', () => {
    expect(resolvePolicy(policies, { groups: ['nobody'], appId: 'other' }, DEFAULTS).idleTimeoutSeconds).toBe(1800)
  })

  it('the app policy overrides groups and global, field by field', () => {
    expect(resolvePolicy(policies, { groups: ['staff', 'contractors'], appId: 'mail' }, DEFAULTS)).toEqual({
      maxSessionLifetimeSeconds: 600, idleTimeoutSeconds: 300, reauthIntervalSeconds: 86_400, maxDevicesPerUser: 8,
    })
    expect(resolvePolicy(policies, { groups: ['staff'], appId: 'crm' }, DEFAULTS)).toEqual({
      maxSessionLifetimeSeconds: 7200, idleTimeoutSeconds: 60, reauthIntervalSeconds: null, maxDevicesPerUser: 3,
    })
  })
})

describe('parsePolicyInput', () => {
  it('derives the id from scope and scopeId; unset fields are null', () => {
    expect(parsePolicyInput({ scope: 'group', scopeId: 'staff', idleTimeoutSeconds: 600 }, 5)).toEqual({
      id: 'group:staff', scope: 'group', scopeId: 'staff', maxSessionLifetimeSeconds: null, idleTimeoutSeconds: 600,
      reauthIntervalSeconds: null, maxDevicesPerUser: null, updatedAt: 5,
    })
    expect(parsePolicyInput({ scope: 'global' }, 0).id).toBe('global')
  })

  it.each([
    [{ scope: 'team' }, 'scope must be one of global, group, app'],
    [{ scope: 'group' }, 'scopeId must be the group name or app id (1..256 characters)'],
    [{ scope: 'global', scopeId: 'x' }, 'scopeId must be empty for a global policy'],
    [{ scope: 'app', scopeId: 'mail', idleTimeoutSeconds: 10 }, 'idleTimeoutSeconds must be an integer from 30 to 31536000, or null'],
    [{ scope: 'app', scopeId: 'mail', maxDevicesPerUser: 0 }, 'maxDevicesPerUser must be an integer from 1 to 10000, or null'],
    [{ scope: 'app', scopeId: 'mail', maxSessionLifetimeSeconds: '3600' }, 'maxSessionLifetimeSeconds must be an integer from 60 to 31536000, or null'],
  ])('%j is refused', (input, message) => {
    expect(() => parsePolicyInput(input as never, 0)).toThrow(MalformedError)
    expect(() => parsePolicyInput(input as never, 0)).toThrow(message)
  })
})

describe('PolicyService over the store', () => {
  let store: SqlStore
  const changed: string[] = []
  let svc: PolicyService
  beforeEach(async () => {
    const key = newMasterKey()
    store = await openStore({ path: ':memory:', secretBox: new SecretBox({ version: 1, current: key.id, keys: [key] }) })
    changed.length = 0
    svc = new PolicyService({ store, defaults: DEFAULTS, now: () => 42, onChange: async (id) => { changed.push(id) } })
  })
  afterEach(async () => {
    await store.close()
  })

  it('upsert, effective, replace, remove; every change is announced', async () => {
    await svc.upsert({ scope: 'group', scopeId: 'staff', maxDevicesPerUser: 2 })
    await svc.upsert({ scope: 'app', scopeId: 'mail', idleTimeoutSeconds: 120 })
    expect(await svc.effective({ groups: ['staff'], appId: 'mail' })).toEqual({
      maxSessionLifetimeSeconds: 28_800, idleTimeoutSeconds: 120, reauthIntervalSeconds: null, maxDevicesPerUser: 2,
    })
    await svc.upsert({ scope: 'group', scopeId: 'staff', maxDevicesPerUser: 4 })
    expect((await svc.list()).map((x) => [x.id, x.maxDevicesPerUser, x.updatedAt])).toEqual([['group:staff', 4, 42], ['app:mail', null, 42]])
    expect(await svc.remove('app:mail')).toBe(true)
    expect(await svc.remove('app:mail')).toBe(false)
    expect((await svc.effective({ groups: ['staff'], appId: 'mail' })).idleTimeoutSeconds).toBe(1800)
    expect(changed).toEqual(['group:staff', 'app:mail', 'group:staff', 'app:mail'])
  })
})
