/** SiteMap (src/security/sites.ts): which proxy URL a user's groups lead to. */
import { describe, expect, it } from 'vitest'
import { ConfigError } from '../../src/errors.js'
import { SiteMap } from '../../src/security/sites.js'

const A = { name: 'site-a', proxyUrl: 'https://a.example.org', groups: ['site-a', 'paris'] }
const B = { name: 'site-b', proxyUrl: 'https://b.example.org', groups: ['site-b', 'paris-annex'] }
const MAIN = 'https://main.example.org'

describe('SiteMap', () => {
  it('a user goes to the site holding one of their groups', () => {
    const m = new SiteMap([A, B], { proxyUrl: MAIN })
    expect(m.siteFor(['staff', 'site-b'])).toEqual({ site: 'site-b', proxyUrl: 'https://b.example.org' })
    expect(m.proxyUrlFor(['paris'])).toBe('https://a.example.org')
  })

  it('the first configured site wins, whatever the order of the groups', () => {
    const m = new SiteMap([A, B], { proxyUrl: MAIN })
    expect(m.siteFor(['site-b', 'site-a']).site).toBe('site-a')
    expect(new SiteMap([B, A], { proxyUrl: MAIN }).siteFor(['site-a', 'site-b']).site).toBe('site-b')
  })

  it('a user in no site group gets defaultSite, else security.proxyUrl', () => {
    expect(new SiteMap([A, B], { proxyUrl: MAIN }).siteFor(['staff'])).toEqual({ site: undefined, proxyUrl: MAIN })
    expect(new SiteMap([A, B], { proxyUrl: MAIN, defaultSite: 'site-b' }).siteFor([])).toEqual({ site: 'site-b', proxyUrl: 'https://b.example.org' })
    expect(new SiteMap([], { proxyUrl: MAIN }).proxyUrlFor(['site-a'])).toBe(MAIN)
  })

  it('group names match exactly', () => {
    const m = new SiteMap([A], { proxyUrl: MAIN })
    expect(m.proxyUrlFor(['Site-A', 'site-a '])).toBe(MAIN)
  })

  it('refuses a defaultSite that names no site', () => {
    expect(() => new SiteMap([A], { proxyUrl: MAIN, defaultSite: 'site-c' })).toThrow(ConfigError)
  })
})
