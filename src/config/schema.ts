/**
 * The Gatehouse configuration schema: every option, its default and what it does. One file
 * configures any role; a role reads only its section. docs/configuration.md is generated from the
 * doc strings here (`gatehouse config docs`).
 */
import { ConfigError } from '../errors.js'
import { parsePgHosts } from '../store/pgHosts.js'
import { configFail, f, type Field } from './validate.js'

const HOST_HINT = 'be an IP address or host name'
const host = (doc: string, def: string) => f.string(doc, { default: def, pattern: /^[A-Za-z0-9.:[\]-]+$/, patternHint: HOST_HINT })
const port = (doc: string, def: number) => f.int(doc, { default: def, min: 0, max: 65535 })
const postgresUrlValue = f.string('', { pattern: /^postgres(ql)?:\/\/\S+$/, patternHint: 'start with postgres:// or postgresql://' })
/** Optional PostgreSQL URL; credentials and multi-host lists allowed (pg parses it, not WHATWG URL). */
const postgresUrl = (doc: string) => ({
  ...f.optionalString(doc),
  kind: 'string, optional; must start with postgres:// or postgresql://',
  parse: (v: unknown, path: string): string | undefined => (v === undefined || v === null ? undefined : checkPgHosts(postgresUrlValue.parse(v, path), path)),
})

// High availability (docs/deployment.md): a multi-host databaseUrl is split by src/store/pgHosts.ts; check it here, once.
function checkPgHosts(url: string, path: string): string {
  try {
    parsePgHosts(url)
  } catch (err) {
    if (err instanceof ConfigError) configFail(path, `is not a usable PostgreSQL URL (${err.message.replace(/^database URL:? /, '')})`)
    throw err
  }
  return url
}

const listener = (what: string, defHost: string, defPort: number) =>
  f.object(`Where the ${what} listens.`, {
    host: host('Address to bind (0.0.0.0 or :: for every interface).', defHost),
    port: port('TCP port; 0 picks a free one (tests).', defPort),
  })

const serverTls = f.object('TLS files of this listener. Default: the development PKI in certsDir.', {
  cert: f.optionalString('PEM certificate chain. Default <certsDir>/server.crt.'),
  key: f.optionalString('PEM private key (mode 0600). Default <certsDir>/server.key.'),
  ca: f.optionalString('PEM CA that signs client certificates (mutual TLS). Default <certsDir>/ca.crt.'),
})

// Route upstreams (src/proxy/upstreams.ts): one target or several, health checks, connect timeout.
/** `field` made optional: absent or null gives undefined. */
function optional<T>(field: Field<T>): Field<T | undefined> {
  return { ...field, kind: `${field.kind ?? 'value'}, optional`, default: () => undefined, parse: (v, p) => (v === undefined || v === null ? undefined : field.parse(v, p)) }
}
const upstreamUrl = (doc: string) => f.url(doc, { protocols: ['http:', 'https:'], originOnly: true })

const healthCheck = f.object('Active health checks of each target of the route. Without `path`, passive checks only: a target that cannot be connected to is left out for a backoff (1 s, doubling up to 10 s while it keeps failing).', {
  path: optional(f.string('Path asked with GET, e.g. "/healthz"; a 2xx or 3xx answer within `timeoutMs` is a success. Not set: no active checks.', {
    pattern: /^\/[^\s?#]*(\?\S*)?$/, patternHint: 'be a path starting with "/"',
  })),
  intervalSeconds: f.int('Time between two checks of one target (each proxy worker thread checks on its own).', { default: 5, min: 1, max: 3600 }),
  timeoutMs: f.int('Time allowed for one check: connect, headers and body.', { default: 1000, min: 10, max: 60_000 }),
  unhealthyAfter: f.int('Failed checks in a row that take a target out of the rotation.', { default: 2, min: 1, max: 100 }),
  healthyAfter: f.int('Successful checks in a row that bring a target back into the rotation.', { default: 1, min: 1, max: 100 }),
})

// Proxy SNI certificates (proxy.tls.sni[]): src/proxy/certCheck.ts checks each pair at start and reload.
const sniCertificate = f.object('One server name and its certificate.', {
  serverName: f.string('Server name as the client sends it (SNI), lower case: "mail.example.org", or one label of wildcard: "*.example.org".', {
    pattern: /^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/, patternHint: 'be a lower-case DNS name, optionally starting with "*."',
  }),
  cert: f.string('PEM certificate chain for this name.'),
  key: f.string('PEM private key of that certificate.'),
})

const route = f.object('One route: requests whose path starts with `prefix` go to `upstream`, or in turn to the healthy targets of `upstreams`.', {
  prefix: f.string('Path prefix, starting and ending with "/" (e.g. "/mail/"); the longest matching prefix wins.', {
    pattern: /^\/([A-Za-z0-9._~!$&'()*+,;=:@%-]+\/)*$/, patternHint: 'start and end with "/" and contain only URL path characters',
  }),
  upstream: optional(upstreamUrl('Upstream origin, http or https, without a path. Set this or `upstreams`.')),
  upstreams: optional(f.array('Several upstream origins serving the same application, used round-robin while healthy. A request of an idempotent method (GET, HEAD, OPTIONS, PUT, DELETE) whose connection failed before any byte of the answer is sent once more to the next healthy target, unless its body was streamed; POST and PATCH never are. Set this or `upstream`.',
    upstreamUrl('Upstream origin.'), { minItems: 1, maxItems: 64 })),
  stripPrefix: f.bool('Remove the prefix before forwarding ("/mail/x" reaches the upstream as "/x").', false),
  timeoutSeconds: f.int('Time allowed from sending the request to the answer\'s headers (waiting for a free connection, connecting and a retry included), and for any gap in the body; past it 504.', { default: 30, min: 1, max: 3600 }),
  connectTimeoutMs: f.int('Time allowed to open a connection (TCP and TLS) to a target; past it the target counts as unreachable (502, or a retry on another target).', { default: 3000, min: 10, max: 60_000 }),
  healthCheck,
  upstreamCa: f.optionalString('PEM CA file to verify an https upstream (default: the system store).'),
}, {
  check(r, path) {
    if (r.upstream !== undefined && r.upstreams !== undefined) configFail(`${path}.upstreams`, 'cannot be combined with upstream: set upstream (one origin) or upstreams (several)')
    if (r.upstream === undefined && r.upstreams === undefined) configFail(`${path}.upstream`, 'is required (or upstreams, a list of origins)')
    r.upstreams?.forEach((u, i) => {
      if (r.upstreams!.indexOf(u) < i) configFail(`${path}.upstreams[${i}]`, `duplicates an earlier target ("${u}")`)
    })
  },
})

/** What a route gets for the options it does not set (the default /demo/ route too). */
export const routeDefaults = () => ({
  upstreams: undefined, stripPrefix: false, timeoutSeconds: 30, connectTimeoutMs: 3000, upstreamCa: undefined,
  healthCheck: healthCheck.parse(undefined, 'healthCheck'),
})

const ldapDirectory = f.object('an LDAP directory or Active Directory: search then bind (`bindDn`, `bindPasswordFile`, `userBase`) or direct bind (`userDnTemplate`).', {
  url: f.url('Directory URL, host and port only: ldaps://ldap.example.org (port 636), or ldap://… with `startTls`. Plain ldap:// alone sends passwords in clear.', { protocols: ['ldap:', 'ldaps:'], originOnly: true }),
  startTls: f.bool('Upgrade an ldap:// connection with StartTLS before any bind.', false),
  caFile: f.optionalString('PEM CA that signs the directory certificate (ldaps:// or `startTls`). Default: the system store.'),
  bindDn: f.optionalString('Search then bind: DN of the service account that looks the user up.'),
  bindPasswordFile: f.optionalString('Search then bind: file holding the service account password (read once at start; a trailing newline is ignored; keep it mode 0600).'),
  userBase: f.optionalString('Search then bind: subtree searched for the user, e.g. ou=people,dc=example,dc=org.'),
  userFilter: f.string('Search then bind: filter finding the user; `{{username}}` is the escaped name typed. Active Directory: `(sAMAccountName={{username}})`.', {
    default: '(uid={{username}})', pattern: /^\(.*\{\{username\}\}.*\)$/s, patternHint: 'be a filter in parentheses containing {{username}}',
  }),
  userDnTemplate: f.optionalString('Direct bind: DN of the user with `{{username}}` for the escaped name typed, e.g. `uid={{username}},ou=people,dc=example,dc=org`.'),
  usernameAttribute: f.string('Attribute of the user entry returned as the user name (Active Directory: sAMAccountName).', { default: 'uid' }),
  groupsAttribute: f.optionalString('Attribute of the user entry listing its groups, e.g. memberOf; a DN value is reduced to its first value (the CN).'),
  groupBase: f.optionalString('Subtree searched for the groups of the user (not set: no group search).'),
  groupFilter: f.string('Group search filter; `{{dn}}` is the escaped DN of the user, `{{username}}` the escaped user name.', {
    default: '(member={{dn}})', pattern: /^\(.*\{\{(dn|username)\}\}.*\)$/s, patternHint: 'be a filter in parentheses containing {{dn}} or {{username}}',
  }),
  groupNameAttribute: f.string('Attribute of a group entry returned as the group name.', { default: 'cn' }),
  connectTimeoutMs: f.int('Time allowed to connect (TCP, TLS, StartTLS).', { default: 3000, min: 100, max: 60_000 }),
  timeoutMs: f.int('Time allowed for one whole sign-in against the directory; past it the directory counts as unavailable (503).', { default: 5000, min: 100, max: 60_000 }),
}, {
  check(d, path) {
    const searchOptions = ['bindDn', 'bindPasswordFile', 'userBase'] as const
    if (d.userDnTemplate !== undefined) {
      const both = searchOptions.find((k) => d[k] !== undefined)
      if (both) configFail(`${path}.${both}`, 'cannot be combined with userDnTemplate: use either direct bind (userDnTemplate) or search then bind (bindDn, bindPasswordFile, userBase)')
      if (!d.userDnTemplate.includes('{{username}}')) configFail(`${path}.userDnTemplate`, 'must contain {{username}}')
    } else {
      const missing = searchOptions.find((k) => d[k] === undefined)
      if (missing) configFail(`${path}.${missing}`, 'is required for search then bind (or set userDnTemplate for direct bind)')
    }
    const ldaps = d.url.startsWith('ldaps:')
    if (ldaps && d.startTls) configFail(`${path}.startTls`, 'must be false with an ldaps:// URL (already TLS)')
    if (!ldaps && !d.startTls && d.caFile !== undefined) configFail(`${path}.caFile`, 'needs an ldaps:// URL or startTls: true')
  },
})

const directory = f.tagged('One place where users sign in, selected by `type`.', 'type', {
  local: f.object('the local user file (`security.usersFile`, managed with `gatehouse users`).', {}),
  ldap: ldapDirectory,
})

// The ActiveSync gateway of the proxy (src/proxy/activeSync.ts).
const activeSync = f.object('ActiveSync gateway: native mail clients (iOS Mail, Outlook mobile, Android) reach Exchange through the proxy, and only enrolled, active devices of the user get through (docs/operations.md, "ActiveSync gateway").', {
  enabled: f.bool('Serve the ActiveSync path.', false),
  upstream: optional(upstreamUrl('Exchange origin (http or https, no path) the requests are streamed to. Required when `enabled`.')),
  upstreamCa: f.optionalString('PEM CA file to verify an https Exchange (default: the system store).'),
  path: f.string('Path of the ActiveSync endpoint, matched exactly (case-sensitive).', {
    default: '/Microsoft-Server-ActiveSync', pattern: /^(\/[A-Za-z0-9._~-]+)+$/, patternHint: 'start with "/", not end with "/", and use only letters, digits and . _ ~ - between slashes',
  }),
  maxHoldSeconds: f.int('Longest time a request may wait for Exchange: a Ping is held up to its heartbeat interval. Exchange gets this plus 10 s before the proxy answers 504.', { default: 1800, min: 1, max: 3600 }),
  gateCacheSeconds: f.int('How long an "allowed" answer about a device is trusted before the security server is asked again (refusals: at most 5 s). Pushed revocations drop answers at once.', { default: 60, min: 1, max: 3600 }),
  gateCacheMaxEntries: f.int('Most (user, device) answers held; the least recently used is evicted.', { default: 100_000, min: 1, max: 10_000_000 }),
  maxBodyBytes: f.int('Largest request body (413 above). Bodies over 64 KiB are streamed, never held whole.', { default: 64 * 1024 * 1024, min: 1024, max: 1024 ** 3 }),
  upstreamConnections: f.int('Most keep-alive connections to Exchange per proxy thread. Over HTTP/1.1 every held Ping holds one: size it for the mail clients online at once. Over HTTP/2 each carries up to `upstreamMaxStreams` requests.', { default: 10_000, min: 1, max: 1_000_000 }),
  upstreamHttp2: f.bool('Speak HTTP/2 to Exchange (https upstream only; Exchange must select h2 by ALPN, as IIS on Windows Server 2016 and later does). Requests share connections, so a held Ping costs the proxy one socket (the client\'s) instead of two. A connection on which Exchange does not select h2 is refused (502).', false),
  upstreamMaxStreams: f.int('With `upstreamHttp2`: most requests at once on one HTTP/2 connection to Exchange. Keep it at or below the SETTINGS_MAX_CONCURRENT_STREAMS your Exchange announces (RFC 9113 recommends servers allow at least 100); requests above it would wait.', { default: 100, min: 1, max: 1000 }),
}, {
  check(a, path) {
    if (a.enabled && a.upstream === undefined) configFail(`${path}.upstream`, 'is required when enabled is true')
    if (a.upstreamCa !== undefined && a.upstream !== undefined && !a.upstream.startsWith('https:')) configFail(`${path}.upstreamCa`, 'needs an https upstream')
    if (a.upstreamHttp2 && a.upstream !== undefined && !a.upstream.startsWith('https:')) configFail(`${path}.upstreamHttp2`, 'needs an https upstream (HTTP/2 is negotiated over TLS)')
  },
})

// Multi-site (src/security/sites.ts).
const site = f.object('One site: its name, the proxy URL told to its users\' devices, and the directory groups that belong to it.', {
  name: f.string('Name of the site (logs, `defaultSite`).', { pattern: /^[A-Za-z0-9._-]{1,64}$/, patternHint: 'be 1 to 64 letters, digits, ".", "_" or "-"' }),
  proxyUrl: f.url('Proxy URL of the site (its proxy, or the load balancer in front of its proxy farm).'),
  groups: f.array('Directory groups whose members belong to this site (exact names, as the directory or user file gives them).', f.string('Group name.'), { minItems: 1, maxItems: 256 }),
})

/** Site names are unique and `defaultSite` names one of them. */
function checkSites(s: { sites: readonly { name: string }[]; defaultSite: string | undefined }, path: string): void {
  s.sites.forEach((x, i) => {
    if (s.sites.findIndex((y) => y.name === x.name) < i) configFail(`${path}.sites[${i}].name`, `duplicates an earlier site ("${x.name}")`)
  })
  if (s.defaultSite !== undefined && !s.sites.some((x) => x.name === s.defaultSite)) {
    configFail(`${path}.defaultSite`, `must name one of ${path}.sites, got "${s.defaultSite}"`)
  }
}

export const configSchema = f.object('Gatehouse configuration.', {
  dataDir: f.string('Folder for the database, master key and local user file (created mode 0700).', { default: 'data' }),
  certsDir: f.string('Folder of the development PKI written by `gatehouse certs init`.', { default: 'certs' }),
  log: f.object('Logging (pino JSON on stdout).', {
    level: f.oneOf('Log level.', ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const, 'info'),
    file: f.optionalString('Also append the security server\'s log lines (`gatehouse security` and `gatehouse start`) to this file, created mode 0600. Relative to the working directory.'),
  }),
  security: f.object('The security server (control plane).', {
    listen: listener('device API (HTTPS, public)', '127.0.0.1', 8443),
    proxyApi: listener('proxy API (mutually authenticated TLS; proxies only)', '127.0.0.1', 8444),
    admin: listener('admin endpoint (/metrics, /healthz, /readyz; plain HTTP, keep it private)', '127.0.0.1', 8445),
    tls: serverTls,
    databasePath: f.optionalString('SQLite database file. Default <dataDir>/gatehouse.db.'),
    databaseUrl: postgresUrl('PostgreSQL connection URL; when set, used instead of databasePath (SQLite). A replicated pair lists its hosts in order, libpq style: postgres://user@db1:5432,db2:5432/gatehouse?target_session_attrs=read-write — the first host that accepts writes is used, and the next writable one after a failure (docs/deployment.md). With several hosts target_session_attrs defaults to read-write; any and primary are accepted too.'),
    databaseConnectTimeoutMs: f.int('PostgreSQL only: time allowed to connect to one host. With several hosts in databaseUrl, a host that neither answers nor refuses within it is skipped for the next, so it bounds the failover time when a server is down without refusing connections.', { default: 5000, min: 100, max: 60_000 }),
    masterKeyFile: f.optionalString('Master key file (created mode 0600 if missing). Default <dataDir>/master.key.'),
    usersFile: f.optionalString('Local user file (scrypt hashes). Default <dataDir>/users.json.'),
    directories: f.array('Where users sign in, tried in order: the first that accepts the name and password wins. One that cannot be reached is skipped; when no other accepts the user, the sign-in fails with 503 rather than 401.', directory, {
      default: () => [{ type: 'local' as const }], minItems: 1, maxItems: 8,
    }),
    proxyUrl: f.url('Proxy URL told to devices at enrollment and session open. When not set: https://localhost:<proxy.listen.port>.', { default: 'https://localhost:9443' }),
    sessions: f.object('Session lifetime.', {
      maxLifetimeSeconds: f.int('A session ends this long after it opened, whatever its use.', { default: 8 * 3600, min: 60, max: 30 * 86400 }),
      idleTimeoutSeconds: f.int('A session unused this long ends.', { default: 1800, min: 30, max: 30 * 86400 }),
      clockSkewSeconds: f.int('Allowed difference between a device clock and ours when a session opens.', { default: 300, min: 5, max: 3600 }),
    }),
    maxBodyBytes: f.int('Largest JSON body accepted on the device and proxy APIs.', { default: 16 * 1024, min: 1024, max: 1024 * 1024 }),
    access: f.object('Who may reach the admin and self-service APIs (device paths stay open to every network).', {
      adminCidrs: f.array('Networks (IPv4/IPv6 CIDR or address) allowed to use the admin API and dashboard.', f.string('CIDR.'), {
        default: () => ['127.0.0.0/8', '::1/128', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7'],
      }),
      selfServiceCidrs: f.array('Networks allowed to use the self-service API.', f.string('CIDR.'), {
        default: () => ['127.0.0.0/8', '::1/128', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7'],
      }),
    }),
    packagesDir: f.optionalString('Folder of the app packages of the catalog, stored as <packagesDir>/<appId>/<version>/<fileName>. Default <dataDir>/packages. Security servers sharing one database need this folder on shared storage.'),
    enrollment: f.object('How devices enroll.', {
      mode: f.oneOf('Credentials enrollment takes: the password, an admin-issued one-time activation code, both, or either.', ['password', 'code', 'password+code', 'password-or-code'] as const, 'password-or-code'),
    }),
    // Multi-site (src/security/sites.ts): the proxy URL a user's devices are told follows the user's groups.
    sites: f.array('Sites of a multi-site deployment: a user\'s devices are told the `proxyUrl` of the first site (in this order) whose `groups` hold one of the user\'s directory groups (LDAP groups, or the groups of the local user file), at enrollment and at every session open; a user in none gets `defaultSite`, or `proxyUrl` when that is not set (docs/deployment.md, "Multi-site").', site, { default: () => [], maxItems: 64 }),
    defaultSite: f.optionalString('Name of the site (one of `sites`) of users in none of the sites\' groups. Not set: they get `proxyUrl`.'),
    // Backups (src/store/backup.ts, src/security/backupScheduler.ts); `gatehouse backup` and `restore` use them too.
    backup: f.object('Encrypted backups of the database: taken on a schedule by the security server when enabled, and by `gatehouse backup` at any time (see docs/deployment.md).', {
      enabled: f.bool('Take a backup every `intervalSeconds` while the security server runs (never two at once).', false),
      intervalSeconds: f.int('Time between two scheduled backups.', { default: 300, min: 10, max: 7 * 86400 }),
      dir: f.optionalString('Folder of the backup files (created mode 0700). Default <dataDir>/backups; better on another disk or host.'),
      keep: f.int('Scheduled backups kept in `dir`: after each one, all but the newest `keep` backup files are deleted.', { default: 48, min: 1, max: 100_000 }),
      keyFile: f.optionalString('Backup key file: 32 random bytes, created mode 0600 on first use. Default <dataDir>/backup.key. A restore needs it and the master key file: keep copies of both apart from the backups.'),
    }),
  }, { renamed: { port: 'listen.port' }, check: checkSites }),
  proxy: f.object('The proxy (data plane).', {
    listen: listener('device entry point (HTTPS, public)', '127.0.0.1', 9443),
    admin: listener('admin endpoint (/metrics, /healthz, /readyz; plain HTTP, keep it private)', '127.0.0.1', 9090),
    tls: f.object('TLS of the device entry point. Default: <certsDir>/server.crt and server.key. Reloaded on SIGHUP (docs/operations.md, "Reload").', {
      cert: f.optionalString('PEM certificate chain.'),
      key: f.optionalString('PEM private key.'),
      sni: f.array('More certificates, each served to the clients that ask for its server name (SNI); a client asking for another name, or none, gets `cert`.', sniCertificate, { default: () => [], maxItems: 256 }),
    }, {
      check(t, path) {
        t.sni.forEach((s, i) => {
          if (t.sni.findIndex((o) => o.serverName === s.serverName) < i) configFail(`${path}.sni[${i}].serverName`, `duplicates an earlier name ("${s.serverName}")`)
        })
      },
    }),
    securityServers: f.array('Proxy API URLs of the security servers, tried in order. When not set: https://localhost:<security.proxyApi.port>.', f.url('Proxy API URL.'), {
      default: () => ['https://localhost:8444'], minItems: 1, maxItems: 16,
    }),
    controlPlaneTls: f.object('Client certificate the proxy presents to the security server, and the CA it trusts.', {
      cert: f.optionalString('PEM client certificate. Default <certsDir>/proxy-client.crt.'),
      key: f.optionalString('PEM client key. Default <certsDir>/proxy-client.key.'),
      ca: f.optionalString('PEM CA of the security server. Default <certsDir>/ca.crt.'),
    }),
    controlPlaneHealthCheckSeconds: f.int('How often each security server is health-checked (GET /v1/health on the proxy API); healthy servers are tried first. 0 = no active checks.', { default: 5, min: 0, max: 3600 }),
    controlPlaneTimeoutMs: f.int('Time allowed for one session validation call.', { default: 2000, min: 50, max: 60000 }),
    sessionCache: f.object('Bounded cache of validated sessions.', {
      maxEntries: f.int('Most sessions held; the least recently used is evicted.', { default: 100_000, min: 1, max: 10_000_000 }),
      ttlSeconds: f.int('How long a validation answer is trusted before asking again.', { default: 60, min: 1, max: 3600 }),
      outageGraceSeconds: f.int('When no security server answers, a cached session keeps working this long after its last successful validation (unknown sessions get 503, never 401). 0 = no grace.', { default: 300, min: 0, max: 86400 }),
    }),
    revocations: f.object('The revocation stream from the security servers: revoked sessions are dropped at once, not at the end of ttlSeconds.', {
      enabled: f.bool('Follow the stream (off: a revoked session is refused only when its cache entry expires).', true),
      heartbeatTimeoutSeconds: f.int('Reconnect when the stream has been silent this long (the server sends a heartbeat every 10 s).', { default: 30, min: 11, max: 600 }),
    }),
    replay: f.object('Anti-replay checks on request envelopes.', {
      windowSize: f.int('Width of the sliding window of sequence numbers accepted out of order.', { default: 1024, min: 32, max: 65536 }),
      maxClockSkewSeconds: f.int('Largest difference between a request timestamp and our clock.', { default: 120, min: 1, max: 3600 }),
    }),
    limits: f.object('Request limits. Bodies stream record by record both ways, so these bound sizes, not memory.', {
      maxBodyBytes: f.int('Largest request envelope, in total (413 as soon as it is exceeded; a streamed upstream request is aborted).', { default: 16 * 1024 * 1024, min: 1024, max: 1024 ** 4 }),
      maxResponseBytes: f.int('Largest upstream response body relayed (502 when known before the answer starts, else the answer is cut: no FINAL record).', { default: 64 * 1024 * 1024, min: 1024, max: 1024 ** 4 }),
      // Proxy limits section (src/proxy/limits.ts): defaults and why in docs/operations.md, "Limits".
      maxHeaderBytes: f.int('Largest request line plus header block; 431 GH_ERR_HEADERS_TOO_LARGE above, and the connection closes. (uWebSockets.js also closes, without an answer, a header block over 4 KiB that arrives split over several reads.)', { default: 8192, min: 1024, max: 65536 }),
      bodyTimeoutSeconds: f.int('Longest pause allowed in a request body (no byte received); past it 408 GH_ERR_REQUEST_TIMEOUT, the upstream request is aborted and the connection closes. At most 7: uWebSockets.js closes a body that grows by less than 16 KiB in 8–12 s itself, without an answer.', { default: 5, min: 1, max: 7 }),
      maxConcurrentRequests: f.int('Requests in flight per event-loop thread (`workers`); the next one gets 503 GH_ERR_OVERLOADED with Retry-After: 1 and the connection closes. Connections themselves are not counted (uWebSockets.js has no hook for them).', { default: 1024, min: 1, max: 1_000_000 }),
    }),
    crypto: f.object('Record encryption off the event loop (src/proxy/cryptoPool.ts).', {
      poolThresholdBytes: f.int('Records with at least this many bytes of plaintext are sealed and opened in a pool of worker threads (piscina), smaller ones inline; 0 = no pool. Off by default: measured on a 2-core machine, a round trip to the pool costs the event loop more than AES-256-GCM of a whole 64 KiB record (docs/performance.md).', { default: 0, min: 0, max: 65536 }),
      poolThreads: f.int('Threads of the pool. Each proxy event-loop thread (`workers`) has its own pool: workers × poolThreads threads in all.', { default: 1, min: 1, max: 64 }),
    }),
    accessLog: f.bool('One JSON line per request at info level on the proxy\'s log: route, method, status, durations, bytes, client address; never a session id, path, query string or header.', true),
    drainSeconds: f.int('On SIGTERM or SIGINT, once the proxy stops accepting connections, requests in flight may finish for this long; then the remaining ones are cut and the process exits. `--drain SECONDS` overrides it.', { default: 25, min: 0, max: 3600 }),
    workers: f.int('Event-loop threads serving devices, sharing the listening port (SO_REUSEPORT); 0 = one per CPU core, 1 = serve in the main thread.', { default: 0, min: 0, max: 256 }),
    shutdownDelayMs: f.int('On SIGTERM, /readyz answers 503 for this long while the proxy keeps serving, before it stops accepting connections and drains (`--drain`). Behind a load balancer set it above the balancer\'s detection time (HAProxy: inter × (fall + 1), see docs/deployment.md, "Proxy farm"), so that no request is sent to a closed port.', { default: 0, min: 0, max: 120_000 }),
    upstreamConnections: f.int('Keep-alive connections per upstream origin.', { default: 64, min: 1, max: 4096 }),
    routes: f.array('Route table. When not set: /demo/ to the demo upstream (demo.upstream).', route, { default: () => [{ ...routeDefaults(), prefix: '/demo/', upstream: 'http://127.0.0.1:9080', stripPrefix: true }] }),
    activeSync,
  }),
  demo: f.object('The demo upstream started by `gatehouse start`.', {
    upstream: listener('demo upstream (plain HTTP, loopback)', '127.0.0.1', 9080),
    user: f.string('Demo user created on first start (password printed once, stored in <dataDir>/demo-user.json).', { default: 'demo' }),
  }),
})
