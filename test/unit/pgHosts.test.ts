import { describe, expect, it } from 'vitest'
import { ConfigError } from '../../src/errors.js'
import { parsePgHosts } from '../../src/store/pgHosts.js'

describe('parsePgHosts', () => {
  it('splits a multi-host URL into single-host URLs in order, keeping credentials, database and parameters', () => {
    const r = parsePgHosts('postgres://gh:p%40ss@db1:5432,db2,[::1]:6543/gatehouse?sslmode=disable&target_session_attrs=read-write&application_name=x')
    expect(r.targetSessionAttrs).toBe('read-write')
    expect(r.hosts).toEqual([
      { label: 'db1:5432', url: 'postgres://gh:p%40ss@db1:5432/gatehouse?sslmode=disable&application_name=x' },
      { label: 'db2', url: 'postgres://gh:p%40ss@db2/gatehouse?sslmode=disable&application_name=x' },
      { label: '[::1]:6543', url: 'postgres://gh:p%40ss@[::1]:6543/gatehouse?sslmode=disable&application_name=x' },
    ])
  })

  it('defaults to read-write with several hosts and to any (libpq) with one', () => {
    expect(parsePgHosts('postgresql://u@a:1,b:2/db').targetSessionAttrs).toBe('read-write')
    const one = parsePgHosts('postgres://u:pw@a:1/db')
    expect(one).toEqual({ targetSessionAttrs: 'any', hosts: [{ label: 'a:1', url: 'postgres://u:pw@a:1/db' }] })
    expect(parsePgHosts('postgres://u@a:1,b:2/db?target_session_attrs=primary').targetSessionAttrs).toBe('primary')
    expect(parsePgHosts('postgres://u@a/db?target_session_attrs=any').hosts[0]!.url).toBe('postgres://u@a/db')
  })

  it('leaves a URL without a host list as it is (socket host parameter, no path)', () => {
    expect(parsePgHosts('postgres:///db?host=/var/run/postgresql').hosts).toEqual([{ label: '(default host)', url: 'postgres:///db?host=/var/run/postgresql' }])
    expect(parsePgHosts('postgres://u@h').hosts).toEqual([{ label: 'h', url: 'postgres://u@h' }])
  })

  it.each([
    ['postgres://u@a:1,,b:2/db', /host 2 of the host list/],
    ['postgres://u@a:1,b:x/db', /host 2 of the host list/],
    ['postgres://u@a:1,a:1/db', /appears twice/],
    ['postgres://u@a:1,b:2/db?target_session_attrs=standby', /standby is not supported: Gatehouse writes/],
    ['postgres://u@a:1,b:2/db?target_session_attrs=read-only', /read-only is not supported/],
    ['postgres://u@a:1/db?target_session_attrs=whatever', /must be one of any, read-write, primary/],
    ['postgres://u@/db?host=a,b', /not in a host= parameter/],
    ['mysql://u@a/db', /must start with postgres/],
  ])('refuses %s', (url, why) => {
    expect(() => parsePgHosts(url)).toThrow(ConfigError)
    expect(() => parsePgHosts(url)).toThrow(why)
  })

  it('never quotes the URL (its password) in an error', () => {
    let message = ''
    try {
      parsePgHosts('postgres://u:hunter2@a:1,,b/db')
    } catch (err) {
      message = (err as Error).message
    }
    expect(message).toMatch(/host list/)
    expect(message).not.toContain('hunter2')
  })
})
