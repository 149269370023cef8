import { describe, expect, it } from 'vitest'
import { ConfigError } from '../../src/errors.js'
import { CidrList } from '../../src/http/cidr.js'

describe('CidrList', () => {
  it('matches IPv4 ranges, single hosts and the IPv4-mapped IPv6 form', () => {
    const l = new CidrList(['10.0.0.0/8', '192.168.1.7', '172.16.0.0/12'])
    expect(l.has('10.255.1.2')).toBe(true)
    expect(l.has('11.0.0.1')).toBe(false)
    expect(l.has('192.168.1.7')).toBe(true)
    expect(l.has('192.168.1.8')).toBe(false)
    expect(l.has('172.31.255.255')).toBe(true)
    expect(l.has('172.32.0.0')).toBe(false)
    expect(l.has('::ffff:10.1.2.3')).toBe(true)
  })
  it('matches IPv6 ranges with :: and odd prefixes', () => {
    const l = new CidrList(['::1', 'fd00::/8', '2001:db8:abcd::/47'])
    expect(l.has('::1')).toBe(true)
    expect(l.has('::2')).toBe(false)
    expect(l.has('fd12:3456::1')).toBe(true)
    expect(l.has('fe80::1')).toBe(false)
    expect(l.has('2001:db8:abcd:1::9')).toBe(true)
    expect(l.has('2001:db8:abce::1')).toBe(false)
    expect(l.has('10.0.0.1')).toBe(false)
  })
  it('0.0.0.0/0 and ::/0 match everything of their family; an empty list nothing', () => {
    expect(new CidrList(['0.0.0.0/0']).has('8.8.8.8')).toBe(true)
    expect(new CidrList(['::/0']).has('2001::1')).toBe(true)
    expect(new CidrList([]).has('127.0.0.1')).toBe(false)
    expect(new CidrList(['127.0.0.1']).has(undefined)).toBe(false)
    expect(new CidrList(['127.0.0.1']).has('not-an-ip')).toBe(false)
  })
  it('refuses malformed entries naming the option path', () => {
    expect(() => new CidrList(['10.0.0.0/33'], 'security.access.adminCidrs')).toThrow(/security.access.adminCidrs\[0\] has an invalid prefix/)
    expect(() => new CidrList(['a.b.c.d'], 'x')).toThrow(ConfigError)
    expect(() => new CidrList(['10.0.0.0/'], 'x')).toThrow(/invalid prefix/)
    expect(() => new CidrList(['::1/129'], 'x')).toThrow(/invalid prefix/)
  })
})
