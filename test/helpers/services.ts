/**
 * External services some tests need (PostgreSQL now, an LDAP server later). Without the
 * service such a test is skipped, saying why, unless GATEHOUSE_REQUIRE_SERVICES=1 (CI), which
 * makes a missing service a failure instead.
 */
import { Socket } from 'node:net'
import pg from 'pg'

/** True when missing services must fail the tests rather than skip them. */
export const requireServices = process.env.GATEHOUSE_REQUIRE_SERVICES === '1'

/** Can we connect to this PostgreSQL URL and run a query (within `timeoutMs`)? */
export async function postgresAvailable(url: string, timeoutMs = 3000): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: timeoutMs, query_timeout: timeoutMs })
  client.on('error', () => {})
  try {
    await client.connect()
    await client.query('SELECT 1')
    return true
  } catch {
    return false
  } finally {
    await client.end().catch(() => {})
  }
}

/** Does something accept TCP connections at host:port (e.g. slapd)? */
export async function tcpAvailable(host: string, port: number, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = new Socket()
    const done = (ok: boolean) => {
      s.destroy()
      resolve(ok)
    }
    s.setTimeout(timeoutMs, () => done(false))
    s.once('error', () => done(false))
    s.connect(port, host, () => done(true))
  })
}

/**
 * Decide whether a suite that needs `service` runs: true = skip it (after saying why on the
 * console). With GATEHOUSE_REQUIRE_SERVICES=1 a missing service throws instead, failing the file.
 */
export function skipWithout(service: string, available: boolean, where: string): boolean {
  if (available) return false
  const why = `${service} not reachable at ${where}`
  if (requireServices) throw new Error(`${why}, and GATEHOUSE_REQUIRE_SERVICES=1 requires it`)
  console.warn(`skipping: ${why}; set GATEHOUSE_REQUIRE_SERVICES=1 to make this fail`)
  return true
}
