/** Pieces of admin sign-in and audit that need no server: roles, throttling, CSRF binding, audit scrubbing. */
import { describe, expect, it } from 'vitest'
import { createLogger } from '../../src/observability/logger.js'
import { can, csrfFor, validateAdmin } from '../../src/security/adminAuth.js'
import { AuditLog } from '../../src/security/audit.js'
import { LoginLimiter } from '../../src/security/loginLimiter.js'
import type { AuditEvent } from '../../src/store/types.js'
import { LogSink } from '../helpers/stack.js'

describe('roles', () => {
  it('admin may do everything; helpdesk reads, issues commands and codes; auditor reads incl. audit and logs', () => {
    expect(can('admin', 'admins.manage')).toBe(true)
    expect(can('admin', 'commands.retire')).toBe(true)
    for (const p of ['read', 'commands.issue', 'codes.issue'] as const) expect(can('helpdesk', p)).toBe(true)
    for (const p of ['audit.read', 'logs.read', 'catalog.write', 'policies.write', 'admins.manage', 'revoke', 'commands.retire'] as const) expect(can('helpdesk', p), p).toBe(false)
    for (const p of ['read', 'audit.read', 'logs.read'] as const) expect(can('auditor', p)).toBe(true)
    for (const p of ['commands.issue', 'codes.issue', 'catalog.write', 'policies.write', 'admins.manage', 'revoke'] as const) expect(can('auditor', p), p).toBe(false)
  })

  it('validates new admins: name, role, password length', () => {
    expect(() => validateAdmin('ok.name', 'admin', 'x'.repeat(12))).not.toThrow()
    expect(() => validateAdmin('bad name', 'admin', 'x'.repeat(12))).toThrow(/name/)
    expect(() => validateAdmin('ok', 'root', 'x'.repeat(12))).toThrow(/role/)
    expect(() => validateAdmin('ok', 'auditor', 'x'.repeat(11))).toThrow(/password/)
  })

  it('the CSRF value is bound to the token', () => {
    expect(csrfFor('gha_a')).toBe(csrfFor('gha_a'))
    expect(csrfFor('gha_a')).not.toBe(csrfFor('gha_b'))
    expect(csrfFor('gha_a')).not.toContain('gha_a')
  })
})

describe('LoginLimiter', () => {
  it('refuses once a key has max failures in the window, and forgets them after it', () => {
    let now = 1_000_000
    const l = new LoginLimiter({ max: 2, windowMs: 60_000, now: () => now })
    l.check(['a'])
    l.fail(['a', 'r'])
    l.check(['a'])
    l.fail(['a'])
    expect(() => l.check(['a'])).toThrow(expect.objectContaining({ code: 'GH_ERR_RATE_LIMITED' }))
    expect(() => l.check(['r'])).not.toThrow()
    expect(() => l.check(['x', 'a'])).toThrow()
    now += 60_001
    expect(() => l.check(['a'])).not.toThrow()
  })

  it('holds at most maxKeys keys', () => {
    const l = new LoginLimiter({ max: 1, windowMs: 60_000, maxKeys: 3 })
    for (const k of ['a', 'b', 'c', 'd']) l.fail([k])
    expect(() => l.check(['a'])).not.toThrow() // evicted, the oldest
    expect(() => l.check(['d'])).toThrow()
  })
})

describe('AuditLog', () => {
  it('drops secret-named details, clips long fields, and never throws when the store fails', async () => {
    const saved: AuditEvent[] = []
    const sink = new LogSink()
    const ok = new AuditLog({ store: { appendAudit: async (e) => { saved.push(e); return 1 }, queryAudit: async () => saved }, log: createLogger({ destination: sink }) })
    await ok.record({ actor: 'a'.repeat(1000), actorRole: 'admin', action: 'x', target: 't', remote: '::1', details: { password: 'p', Token: 't', code: 'c', kind: 'lock', note: undefined } })
    expect(saved[0]!.details).toEqual({ kind: 'lock' })
    expect(saved[0]!.actor.length).toBeLessThan(300)
    const failing = new AuditLog({ store: { appendAudit: async () => { throw new Error('db down') }, queryAudit: async () => [] }, log: createLogger({ destination: sink }) })
    await expect(failing.record({ actor: 'a', actorRole: 'admin', action: 'x', target: 't', remote: '::1' })).resolves.toBeUndefined()
    expect(sink.text).toContain('audit_write_failed')
  })
})
