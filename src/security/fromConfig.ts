import path from 'node:path'
import type { GatehouseConfig } from '../config/load.js'
import { ConfigError } from '../errors.js'
import { registerCertExpiry } from '../observability/certMetrics.js'
import type { Logger } from '../observability/logger.js'
import { createRegistry } from '../observability/metrics.js'
import { loadOrCreateMasterKey } from '../store/secretBox.js'
import { openStore } from '../store/openStore.js'
import { loadOrCreateBackupKey } from '../store/backupKey.js'
import { backupSettings, backupSource } from './backupScheduler.js'
import { AuthenticatorChain } from './directory/chain.js'
import { LdapAuthenticator } from './directory/ldap.js'
import type { Authenticator } from './enrollment.js'
import { LocalUserAuthenticator } from './localUsers.js'
import { ReloadableSecretBox, watchMasterKey } from './masterKeys.js'
import { readTlsFiles, SecurityServer } from './server.js'

/** Build a security server from validated config: master key, database, user file, TLS. */
export async function securityServerFromConfig(c: GatehouseConfig, log: Logger): Promise<SecurityServer> {
  const auth = authenticatorFromConfig(c)
  // Everything that can fail on a file is read before the database opens, so a bad path never
  // leaves a store (or a PostgreSQL pool) open behind a failed start.
  const tls = readTlsFiles({ cert: c.files.serverCert, key: c.files.serverKey, ca: c.files.caCert })
  // `gatehouse keys rotate` changes the key file while we run: re-read it on change and on SIGHUP.
  const box = new ReloadableSecretBox(loadOrCreateMasterKey(c.files.masterKeyFile))
  watchMasterKey(c.files.masterKeyFile, box, log, { sighup: true })
  const backup = backupSettings(c)
  const backupKey = backup.enabled ? loadOrCreateBackupKey(backup.keyFile) : undefined
  if (backupKey?.created) log.warn({ event: 'backup_key_created', file: backup.keyFile }, 'created the backup key file: keep a copy of it, and of the master key file, apart from the backups')
  const store = await openStore({
    url: c.security.databaseUrl, path: c.files.databasePath, secretBox: box,
    pg: {
      connectionTimeoutMs: c.security.databaseConnectTimeoutMs,
      // Host labels carry no credentials (src/store/pgHosts.ts).
      onHostSelected: (host, previous) => {
        if (previous === undefined || previous === host) log.info({ event: 'database_host_selected', host }, 'database connected')
        else log.warn({ event: 'database_failover', host, previous }, 'database failover: now using another host')
      },
    },
  })
  const s = c.security
  const registry = createRegistry('security')
  registerCertExpiry(registry, [{ cert: 'security_server', path: c.files.serverCert }, { cert: 'ca', path: c.files.caCert }])
  return new SecurityServer({
    registry,
    store,
    auth,
    log,
    tls,
    listen: s.listen,
    proxyApi: s.proxyApi,
    admin: s.admin,
    proxyUrl: s.proxyUrl,
    policy: {
      maxLifetimeMs: s.sessions.maxLifetimeSeconds * 1000,
      idleTimeoutMs: s.sessions.idleTimeoutSeconds * 1000,
      clockSkewMs: s.sessions.clockSkewSeconds * 1000,
    },
    maxBodyBytes: s.maxBodyBytes,
    access: s.access,
    packagesDir: path.resolve(s.packagesDir ?? path.join(c.dataDir, 'packages')),
    enrollmentMode: s.enrollment.mode,
    sites: { sites: s.sites, defaultSite: s.defaultSite },
    backup: backupKey && { source: backupSource(c, () => store.db), key: backupKey.key, dir: backup.dir, intervalMs: backup.intervalMs, keep: backup.keep },
  })
}

/**
 * The sign-in providers of `security.directories`, in order: one alone as it is, several as an
 * AuthenticatorChain. Files they need (CA, service account password) are read here, once.
 */
export function authenticatorFromConfig(c: GatehouseConfig): Authenticator {
  const providers = c.security.directories.map((d, i): Authenticator => {
    if (d.type === 'local') return new LocalUserAuthenticator(c.files.usersFile)
    const { type: _type, ...options } = d
    try {
      return new LdapAuthenticator(options)
    } catch (err) {
      if (err instanceof ConfigError) throw new ConfigError(`security.directories[${i}].${err.message}`)
      throw err
    }
  })
  return providers.length === 1 ? providers[0]! : new AuthenticatorChain(providers)
}
