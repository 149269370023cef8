/** The proxy's app context: the gate built from a validation answer, and the cache TTL bounded by the idle timeout. */
import { describe, expect, it } from 'vitest'
import { AppContextError, AppVersionError } from '../../src/errors.js'
import { checkAppGate, isGrantAppContext, OPEN_GATE, toAppGate } from '../../src/proxy/appContext.js'
import type { SessionGrant } from '../../src/proxy/controlPlane.js'
import { SessionCache } from '../../src/proxy/sessionCache.js'

describe('checkAppGate', () => {
  it("'*' and an answer without app context let every route through", () => {
    expect(() => checkAppGate(toAppGate({ routes: '*', versionAllowed: true }), '/anything/', '/anything/x')).not.toThrow()
    expect(toAppGate(undefined)).toBe(OPEN_GATE)
    expect(() => checkAppGate(OPEN_GATE, '/x/', '/x/y')).not.toThrow()
  })

  it('a route of the app passes; another route is GH_ERR_APP_CONTEXT', () => {
    const gate = toAppGate({ routes: ['/mail/', '/calendar/'], versionAllowed: true })
    expect(() => checkAppGate(gate, '/mail/', '/mail/inbox')).not.toThrow()
    expect(() => checkAppGate(gate, '/mail/', '/mail')).not.toThrow()
    expect(() => checkAppGate(gate, '/crm/', '/crm/accounts')).toThrow(AppContextError)
  })

  it('an app prefix finer than the proxy route allows only below it', () => {
    const gate = toAppGate({ routes: ['/intranet/hr/'], versionAllowed: true })
    expect(() => checkAppGate(gate, '/intranet/', '/intranet/hr/payslips')).not.toThrow()
    expect(() => checkAppGate(gate, '/intranet/', '/intranet/finance/')).toThrow(AppContextError)
  })

  it('no routes at all: nothing passes', () => {
    expect(() => checkAppGate(toAppGate({ routes: [], versionAllowed: true }), '/mail/', '/mail/')).toThrow(AppContextError)
  })

  it('a version no longer allowed is GH_ERR_APP_VERSION, whatever the route', () => {
    const err = (() => {
      try {
        checkAppGate(toAppGate({ routes: '*', versionAllowed: false }), '/mail/', '/mail/')
      } catch (e) {
        return e
      }
    })()
    expect(err).toBeInstanceOf(AppVersionError)
    expect((err as InstanceType<typeof AppVersionError>).code).toBe('GH_ERR_APP_VERSION')
    expect((err as InstanceType<typeof AppVersionError>).status).toBe(403)
  })

  it.each([
    [{ routes: '*', versionAllowed: true }, true],
    [{ routes: ['/a/'], versionAllowed: false }, true],
    [{ routes: 'all', versionAllowed: true }, false],
    [{ routes: [1], versionAllowed: true }, false],
    [{ routes: [] }, false],
    [null, false],
  ])('isGrantAppContext(%j) = %s', (v, ok) => {
    expect(isGrantAppContext(v)).toBe(ok)
  })
})

describe('SessionCache and the idle timeout', () => {
  const grant = (over: Partial<SessionGrant> = {}): SessionGrant => ({
    enrollmentId: 'e1', userName: 'alice', deviceId: 'd1', appId: 'mail', appVersion: '1.0', c2sKey: Buffer.alloc(32, 1).toString('base64'),
    s2cKey: Buffer.alloc(32, 2).toString('base64'), expiresAt: Date.now() + 3600_000, idleTimeoutMs: 600_000, ...over,
  })

  it('an entry is trusted for at most half the idle timeout, so re-validations keep lastSeenAt current', async () => {
    let calls = 0
    const cache = new SessionCache({ maxEntries: 10, ttlMs: 60_000, replayWindowSize: 64 }, {
      validate: async () => { calls++; return grant({ idleTimeoutMs: 600 }) },
    })
    const sid = 'B'.repeat(22)
    await cache.get(sid)
    expect(cache.peek(sid)).toBeDefined()
    await new Promise((r) => setTimeout(r, 450))
    expect(cache.peek(sid)).toBeUndefined()
    await cache.get(sid)
    expect(calls).toBe(2)
  })

  it('the app gate is built once per entry from the answer', async () => {
    const cache = new SessionCache({ maxEntries: 10, ttlMs: 60_000, replayWindowSize: 64 }, {
      validate: async () => grant({ appContext: { routes: ['/mail/'], versionAllowed: true } }),
    })
    const e = await cache.get('C'.repeat(22))
    expect(e!.app.routes).toEqual(new Set(['/mail/']))
    expect(e!.app.versionAllowed).toBe(true)
  })
})
