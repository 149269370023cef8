/**
 * Several places to sign in (local user file, directories), tried in order.
 *
 * - The first provider that accepts the name and password wins.
 * - A provider that does not know the user or refuses the password (`null`): try the next.
 * - A provider that cannot be reached (`UnavailableError`): remember it and try the next; the
 *   user may well be in another one.
 * - Nobody accepted the user: if a provider was unavailable, the answer is unknown, so the
 *   sign-in fails with `UnavailableError` (503: the device keeps its state and retries later)
 *   rather than `null` (401: "wrong password"). Otherwise `null`.
 *
 * Any other error (a bug) is not swallowed: it propagates as it is.
 */
import { UnavailableError } from '../../errors.js'
import type { Authenticator } from '../enrollment.js'

export class AuthenticatorChain implements Authenticator {
  private readonly providers: readonly Authenticator[]

  constructor(providers: readonly Authenticator[]) {
    if (providers.length === 0) throw new TypeError('AuthenticatorChain needs at least one provider')
    this.providers = [...providers]
  }

  async verify(name: string, password: string): Promise<{ name: string; groups: string[] } | null> {
    let unavailable: unknown
    for (const provider of this.providers) {
      try {
        const user = await provider.verify(name, password)
        if (user) return user
      } catch (err) {
        if (!(err instanceof UnavailableError)) throw err
        unavailable ??= err
      }
    }
    if (unavailable !== undefined) throw new UnavailableError('directory unavailable', { cause: unavailable })
    return null
  }

  /** Users of the providers that can list theirs (the local user file; not LDAP), for the admin API. */
  async listUsers(): Promise<{ name: string; groups: string[] }[]> {
    const out: { name: string; groups: string[] }[] = []
    for (const p of this.providers) {
      const lister = p as Partial<{ listUsers(): Promise<{ name: string; groups: string[] }[]> }>
      if (typeof lister.listUsers === 'function') out.push(...await lister.listUsers())
    }
    return out
  }
}
