/**
 * App versions: dotted numeric, compared part by part as integers ("1.10" > "1.9",
 * "1.2" = "1.2.0"). A pre-release suffix after "-" sorts before the release ("2.0-beta" <
 * "2.0"; two suffixes compare as text); build metadata after "+" is ignored.
 *
 * Versions that do not start with a dotted number ("beta", "1..2") are not comparable: they are
 * never "at least" a minimum and never newer than anything.
 */

export interface ParsedVersion {
  parts: number[]
  /** Text after the first "-", or '' for a release. */
  pre: string
}

/** At most 9 digits per part: every part stays an exact integer. */
const CORE_RE = /^\d{1,9}(\.\d{1,9})*$/

/** The parsed version, or undefined when it is not dotted numeric. */
export function parseVersion(v: string): ParsedVersion | undefined {
  if (typeof v !== 'string' || v.length === 0 || v.length > 64) return undefined
  const plus = v.indexOf('+')
  const noBuild = plus === -1 ? v : v.slice(0, plus)
  const dash = noBuild.indexOf('-')
  const core = dash === -1 ? noBuild : noBuild.slice(0, dash)
  const pre = dash === -1 ? '' : noBuild.slice(dash + 1)
  if (!CORE_RE.test(core) || (dash !== -1 && pre.length === 0)) return undefined
  return { parts: core.split('.').map(Number), pre }
}

export function isVersion(v: string): boolean {
  return parseVersion(v) !== undefined
}

/**
 * Negative when a < b, 0 when equal, positive when a > b; undefined when either is not a
 * dotted numeric version.
 */
export function compareVersions(a: string, b: string): number | undefined {
  const pa = parseVersion(a)
  const pb = parseVersion(b)
  if (!pa || !pb) return undefined
  const n = Math.max(pa.parts.length, pb.parts.length)
  for (let i = 0; i < n; i++) {
    const d = (pa.parts[i] ?? 0) - (pb.parts[i] ?? 0)
    if (d !== 0) return d < 0 ? -1 : 1
  }
  if (pa.pre === pb.pre) return 0
  if (pa.pre === '') return 1
  if (pb.pre === '') return -1
  return pa.pre < pb.pre ? -1 : 1
}

/** What the catalog says about versions of one app. */
export interface VersionRule {
  minVersion: string | null
  /** Exact versions allowed; empty = any version >= minVersion. */
  allowedVersions: readonly string[]
}

/**
 * Whether `version` is allowed: in `allowedVersions` when that list is not empty (equal by
 * comparison, so "1.2" matches "1.2.0"; a non-numeric entry matches only itself), and at least
 * `minVersion` when one is set.
 */
export function versionAllowed(rule: VersionRule, version: string): boolean {
  if (rule.allowedVersions.length > 0 &&
    !rule.allowedVersions.some((a) => a === version || compareVersions(a, version) === 0)) return false
  if (rule.minVersion !== null) {
    const c = compareVersions(version, rule.minVersion)
    if (c === undefined || c < 0) return false
  }
  return true
}
