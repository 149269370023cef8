/** Dotted numeric version comparison and the catalog's version rule. */
import { describe, expect, it } from 'vitest'
import { compareVersions, isVersion, parseVersion, versionAllowed } from '../../src/security/versions.js'

describe('compareVersions', () => {
  it.each([
    ['1.0.0', '1.0.0', 0],
    ['1.2', '1.2.0', 0],
    ['1.2.0.0', '1.2', 0],
    ['1.10', '1.9', 1],
    ['1.9', '1.10', -1],
    ['2', '1.99.99', 1],
    ['0.0.1', '0.0.2', -1],
    ['01.2', '1.2', 0],
    ['2.0-beta', '2.0', -1],
    ['2.0', '2.0-rc.1', 1],
    ['2.0-alpha', '2.0-beta', -1],
    ['1.0+build.7', '1.0+build.9', 0],
    ['10.0.0', '9.99.99', 1],
  ] as const)('%s vs %s → %d', (a, b, want) => {
    expect(compareVersions(a, b)).toBe(want)
    expect(compareVersions(b, a)).toBe(want === 0 ? 0 : -want)
  })

  it.each(['', 'beta', '1..2', '.1', '1.', 'v1.2', '1.2-', '1.x', '1234567890.1'])('%j is not comparable', (v) => {
    expect(isVersion(v)).toBe(false)
    expect(parseVersion(v)).toBeUndefined()
    expect(compareVersions(v, '1.0')).toBeUndefined()
    expect(compareVersions('1.0', v)).toBeUndefined()
  })
})

describe('versionAllowed', () => {
  it('no rule: every version, comparable or not', () => {
    const rule = { minVersion: null, allowedVersions: [] }
    expect(versionAllowed(rule, '0.0.1')).toBe(true)
    expect(versionAllowed(rule, 'nightly')).toBe(true)
  })

  it('minVersion: at least it, numerically; an incomparable version is refused', () => {
    const rule = { minVersion: '1.10', allowedVersions: [] }
    expect(versionAllowed(rule, '1.10')).toBe(true)
    expect(versionAllowed(rule, '1.10.0')).toBe(true)
    expect(versionAllowed(rule, '1.11')).toBe(true)
    expect(versionAllowed(rule, '1.9')).toBe(false)
    expect(versionAllowed(rule, '1.10-beta')).toBe(false)
    expect(versionAllowed(rule, 'nightly')).toBe(false)
  })

  it('allowedVersions: exactly those (equal by comparison), and still at least minVersion', () => {
    expect(versionAllowed({ minVersion: null, allowedVersions: ['1.2', '1.4.0'] }, '1.2.0')).toBe(true)
    expect(versionAllowed({ minVersion: null, allowedVersions: ['1.2', '1.4.0'] }, '1.3')).toBe(false)
    expect(versionAllowed({ minVersion: '1.3', allowedVersions: ['1.2', '1.4.0'] }, '1.2')).toBe(false)
    expect(versionAllowed({ minVersion: '1.3', allowedVersions: ['1.2', '1.4.0'] }, '1.4')).toBe(true)
  })
})
