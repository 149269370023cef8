import type { GatehouseConfig } from '../config/load.js'
import type { Logger } from '../observability/logger.js'
import { loadOrCreateMasterKey, SecretBox } from '../store/secretBox.js'
import { SqliteStore } from '../store/sqliteStore.js'
import { LocalUserAuthenticator } from './localUsers.js'
import { readTlsFiles, SecurityServer } from './server.js'

/** Build a security server from validated config: master key, database, user file, TLS. */
export function securityServerFromConfig(c: GatehouseConfig, log: Logger): SecurityServer {
  const box = new SecretBox(loadOrCreateMasterKey(c.files.masterKeyFile))
  const store = SqliteStore.open({ path: c.files.databasePath, secretBox: box })
  const s = c.security
  return new SecurityServer({
    store,
    auth: new LocalUserAuthenticator(c.files.usersFile),
    log,
    tls: readTlsFiles({ cert: c.files.serverCert, key: c.files.serverKey, ca: c.files.caCert }),
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
  })
}
