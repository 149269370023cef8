/**
 * Sites of a multi-site deployment (security.sites): which proxy a user's devices are sent to.
 *
 *   user's directory groups ──▶ first site (in configured order) holding one of them
 *                               └─ none: defaultSite, else security.proxyUrl
 *
 * The answer is the proxy URL told to the device at enrollment (groups of that sign-in) and at
 * every session open (groups recorded with the enrollment's last sign-in), so moving a user to
 * another site's group takes effect at the next sign-in. A proxy at a second site is an ordinary
 * proxy whose securityServers point to the main site (docs/deployment.md, "Multi-site").
 *
 * The lookup table (group → site) is built once here: a sign-in costs one Map lookup per group.
 */
import { ConfigError } from '../errors.js'

export interface Site {
  name: string
  /** Proxy URL (or the site's load balancer) told to the devices of the site's users. */
  proxyUrl: string
  /** Directory groups whose members belong to the site (exact names). */
  groups: readonly string[]
}

/** Where a user's devices go, and why (the site's name, or undefined for the fallback URL). */
export interface SiteChoice {
  site: string | undefined
  proxyUrl: string
}

export class SiteMap {
  /** Group → (configured position of the first site naming it, that site). */
  private readonly byGroup = new Map<string, { rank: number; site: Site }>()
  private readonly fallback: SiteChoice

  /**
   * `sites` as configured (names unique, `defaultSite` one of them: config validation checks
   * both; a defaultSite that names no site throws ConfigError here too, for callers that build
   * options by hand).
   */
  constructor(readonly sites: readonly Site[], o: { defaultSite?: string; proxyUrl: string }) {
    sites.forEach((site, rank) => {
      for (const g of site.groups) if (!this.byGroup.has(g)) this.byGroup.set(g, { rank, site })
    })
    if (o.defaultSite === undefined) {
      this.fallback = { site: undefined, proxyUrl: o.proxyUrl }
    } else {
      const d = sites.find((s) => s.name === o.defaultSite)
      if (!d) throw new ConfigError(`security.defaultSite must name one of security.sites, got "${o.defaultSite}"`)
      this.fallback = { site: d.name, proxyUrl: d.proxyUrl }
    }
  }

  /** The site of a user in these groups: the first configured site holding any of them. */
  siteFor(groups: readonly string[]): SiteChoice {
    let best: { rank: number; site: Site } | undefined
    for (const g of groups) {
      const hit = this.byGroup.get(g)
      if (hit && (!best || hit.rank < best.rank)) best = hit
    }
    return best ? { site: best.site.name, proxyUrl: best.site.proxyUrl } : this.fallback
  }

  /** Shorthand: the proxy URL for a user in these groups. */
  proxyUrlFor(groups: readonly string[]): string {
    return this.siteFor(groups).proxyUrl
  }
}
