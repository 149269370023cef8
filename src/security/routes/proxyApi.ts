/** Proxy API (mutual TLS listener): session validation. */
import { GatehouseError } from '../../errors.js'
import type { RouteSpec } from '../router.js'
import type { SecurityServices } from '../services.js'

export function proxyApiRoutes(s: SecurityServices): RouteSpec[] {
  return [
    {
      // Proxies check this to pick a security server that can answer: 200 only when the store does.
      method: 'GET', path: '/v1/health', access: 'proxy',
      async handler() {
        try {
          await s.store.latestRevocationSeq()
        } catch {
          return { status: 503, body: { status: 'unavailable' } }
        }
        return { status: 200, body: { status: 'ok' } }
      },
    },
    {
      method: 'POST', path: '/v1/sessions/validate', access: 'proxy',
      async handler({ body }) {
        try {
          const grant = await s.sessions.validate(body.sessionId)
          s.metrics.validations.inc({ result: 'valid' })
          return { status: 200, body: { session: grant } }
        } catch (err) {
          s.metrics.validations.inc({ result: err instanceof GatehouseError ? err.code : 'error' })
          throw err
        }
      },
    },
  ]
}
