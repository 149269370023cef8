/**
 * The Gatehouse configuration schema: every option, its default and what it does. One file
 * configures any role; a role reads only its section. docs/configuration.md is generated from the
 * doc strings here (`gatehouse config docs`).
 */
import { f } from './validate.js'

const HOST_HINT = 'be an IP address or host name'
const host = (doc: string, def: string) => f.string(doc, { default: def, pattern: /^[A-Za-z0-9.:[\]-]+$/, patternHint: HOST_HINT })
const port = (doc: string, def: number) => f.int(doc, { default: def, min: 0, max: 65535 })

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

const route = f.object('One route: requests whose path starts with `prefix` go to `upstream`.', {
  prefix: f.string('Path prefix, starting and ending with "/" (e.g. "/mail/"); the longest matching prefix wins.', {
    pattern: /^\/([A-Za-z0-9._~!$&'()*+,;=:@%-]+\/)*$/, patternHint: 'start and end with "/" and contain only URL path characters',
  }),
  upstream: f.url('Upstream origin, http or https, without a path.', { protocols: ['http:', 'https:'], originOnly: true }),
  stripPrefix: f.bool('Remove the prefix before forwarding ("/mail/x" reaches the upstream as "/x").', false),
  timeoutSeconds: f.int('Time allowed for the upstream to answer headers and body.', { default: 30, min: 1, max: 3600 }),
  upstreamCa: f.optionalString('PEM CA file to verify an https upstream (default: the system store).'),
})

export const configSchema = f.object('Gatehouse configuration.', {
  dataDir: f.string('Folder for the database, master key and local user file (created mode 0700).', { default: 'data' }),
  certsDir: f.string('Folder of the development PKI written by `gatehouse certs init`.', { default: 'certs' }),
  log: f.object('Logging (pino JSON on stdout).', {
    level: f.oneOf('Log level.', ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const, 'info'),
  }),
  security: f.object('The security server (control plane).', {
    listen: listener('device API (HTTPS, public)', '127.0.0.1', 8443),
    proxyApi: listener('proxy API (mutually authenticated TLS; proxies only)', '127.0.0.1', 8444),
    admin: listener('admin endpoint (/metrics, /healthz, /readyz; plain HTTP, keep it private)', '127.0.0.1', 8445),
    tls: serverTls,
    databasePath: f.optionalString('SQLite database file. Default <dataDir>/gatehouse.db.'),
    masterKeyFile: f.optionalString('Master key file (created mode 0600 if missing). Default <dataDir>/master.key.'),
    usersFile: f.optionalString('Local user file (scrypt hashes). Default <dataDir>/users.json.'),
    proxyUrl: f.url('Proxy URL told to devices at enrollment and session open. When not set: https://localhost:<proxy.listen.port>.', { default: 'https://localhost:9443' }),
    sessions: f.object('Session lifetime.', {
      maxLifetimeSeconds: f.int('A session ends this long after it opened, whatever its use.', { default: 8 * 3600, min: 60, max: 30 * 86400 }),
      idleTimeoutSeconds: f.int('A session unused this long ends.', { default: 1800, min: 30, max: 30 * 86400 }),
      clockSkewSeconds: f.int('Allowed difference between a device clock and ours when a session opens.', { default: 300, min: 5, max: 3600 }),
    }),
    maxBodyBytes: f.int('Largest JSON body accepted on the device and proxy APIs.', { default: 16 * 1024, min: 1024, max: 1024 * 1024 }),
  }, { renamed: { port: 'listen.port' } }),
  proxy: f.object('The proxy (data plane).', {
    listen: listener('device entry point (HTTPS, public)', '127.0.0.1', 9443),
    admin: listener('admin endpoint (/metrics, /healthz, /readyz; plain HTTP, keep it private)', '127.0.0.1', 9090),
    tls: f.object('TLS of the device entry point. Default: <certsDir>/server.crt and server.key.', {
      cert: f.optionalString('PEM certificate chain.'),
      key: f.optionalString('PEM private key.'),
    }),
    securityServers: f.array('Proxy API URLs of the security servers, tried in order. When not set: https://localhost:<security.proxyApi.port>.', f.url('Proxy API URL.'), {
      default: () => ['https://localhost:8444'], minItems: 1, maxItems: 16,
    }),
    controlPlaneTls: f.object('Client certificate the proxy presents to the security server, and the CA it trusts.', {
      cert: f.optionalString('PEM client certificate. Default <certsDir>/proxy-client.crt.'),
      key: f.optionalString('PEM client key. Default <certsDir>/proxy-client.key.'),
      ca: f.optionalString('PEM CA of the security server. Default <certsDir>/ca.crt.'),
    }),
    controlPlaneTimeoutMs: f.int('Time allowed for one session validation call.', { default: 2000, min: 50, max: 60000 }),
    sessionCache: f.object('Bounded cache of validated sessions.', {
      maxEntries: f.int('Most sessions held; the least recently used is evicted.', { default: 100_000, min: 1, max: 10_000_000 }),
      ttlSeconds: f.int('How long a validation answer is trusted before asking again.', { default: 60, min: 1, max: 3600 }),
    }),
    replay: f.object('Anti-replay checks on request envelopes.', {
      windowSize: f.int('Width of the sliding window of sequence numbers accepted out of order.', { default: 1024, min: 32, max: 65536 }),
      maxClockSkewSeconds: f.int('Largest difference between a request timestamp and our clock.', { default: 120, min: 1, max: 3600 }),
    }),
    limits: f.object('Request limits.', {
      maxBodyBytes: f.int('Largest request envelope (413 above).', { default: 16 * 1024 * 1024, min: 1024, max: 1024 ** 3 }),
      maxResponseBytes: f.int('Largest upstream response body relayed (502 above).', { default: 64 * 1024 * 1024, min: 1024, max: 1024 ** 3 }),
    }),
    upstreamConnections: f.int('Keep-alive connections per upstream origin.', { default: 64, min: 1, max: 4096 }),
    routes: f.array('Route table. When not set: /demo/ to the demo upstream (demo.upstream).', route, { default: () => [{ prefix: '/demo/', upstream: 'http://127.0.0.1:9080', stripPrefix: true, timeoutSeconds: 30, upstreamCa: undefined }] }),
  }),
  demo: f.object('The demo upstream started by `gatehouse start`.', {
    upstream: listener('demo upstream (plain HTTP, loopback)', '127.0.0.1', 9080),
    user: f.string('Demo user created on first start (password printed once, stored in <dataDir>/demo-user.json).', { default: 'demo' }),
  }),
})
