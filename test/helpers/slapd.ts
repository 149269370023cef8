/**
 * A real OpenLDAP slapd for tests: the test's own child process, in the foreground (`-d 0`), on
 * free loopback ports, with its own temporary directory, slapd.conf (mdb backend, memberOf
 * overlay), TLS from a fresh test PKI and data loaded with slapadd before it starts.
 *
 * Directory (suffix dc=example,dc=org):
 *   ou=people   alice (groups staff, mail-users), bob (staff), carol (no group),
 *               "d,ave" (a DN-special character in the name); alice and bob share
 *               `description: team-a` (for an ambiguous search)
 *   ou=services cn=gatehouse, the service account of search then bind
 *   ou=groups   groupOfNames staff (alice, bob) and mail-users (alice)
 * Users carry memberOf values (the overlay defines the attribute; slapadd does not run overlays,
 * so the values are written in the LDIF, matching the groups). Passwords are random per start.
 *
 * ACL: a user may authenticate and read the directory once bound; anonymous may only bind.
 *
 * When slapd is not installed, `slapdSkipReason()` says why (tests skip), or throws when
 * GATEHOUSE_REQUIRE_SERVICES=1 (CI: a missing service fails the run).
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { accessSync, constants, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { connect, createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { makeTestPki } from './pki.js'
import { requireServices } from './services.js'

export const SLAPD = '/usr/sbin/slapd'
export const SLAPADD = '/usr/sbin/slapadd'
const MODULE_PATH = '/usr/lib/ldap'
const SCHEMA_DIR = '/etc/ldap/schema'
const INSTALL_HINT = 'slapd not installed: apt-get install slapd ldap-utils; set GATEHOUSE_REQUIRE_SERVICES=1 to make this fail'

export interface LdapUser {
  /** The name typed at sign-in (the uid). */
  name: string
  dn: string
  password: string
  groups: string[]
}

export interface Slapd {
  /** ldap://127.0.0.1:PORT (StartTLS available). */
  url: string
  /** ldaps://127.0.0.1:PORT when started with `tls: true`. */
  ldapsUrl?: string
  /** PEM CA that signed the slapd certificate (for localhost and 127.0.0.1). */
  caFile: string
  baseDn: string
  rootDn: string
  rootPassword: string
  /** The service account of search then bind; `passwordFile` holds its password and a newline. */
  service: { dn: string; password: string; passwordFile: string }
  users: { alice: LdapUser; bob: LdapUser; carol: LdapUser; dave: LdapUser }
  /** Files the test may create (removed by stop()). */
  dir: string
  /** Everything slapd wrote on stderr (startup errors). */
  output(): string
  stop(): Promise<void>
}

/**
 * Undefined when slapd and slapadd can run here; else the reason to skip. Throws instead when
 * GATEHOUSE_REQUIRE_SERVICES=1.
 */
export function slapdSkipReason(): string | undefined {
  try {
    accessSync(SLAPD, constants.X_OK)
    accessSync(SLAPADD, constants.X_OK)
    accessSync(path.join(MODULE_PATH, 'back_mdb.so'), constants.R_OK)
    return undefined
  } catch {
    if (requireServices) throw new Error(`${INSTALL_HINT.replace(/; set .*$/, '')} (GATEHOUSE_REQUIRE_SERVICES=1: services-backed tests must run)`)
    return INSTALL_HINT
  }
}

async function freePort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => resolve())
  })
  const { port } = s.address() as AddressInfo
  await new Promise<void>((resolve) => s.close(() => resolve()))
  return port
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => { socket.destroy(); resolve(false) })
  })
}

const q = (p: string) => `"${p.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`
const secret = (who: string) => `${who}-${randomBytes(12).toString('base64url')}`

function slapdConf(dir: string, tls: { cert: string; key: string; ca: string }, root: { dn: string; password: string }): string {
  return [
    `include ${q(path.join(SCHEMA_DIR, 'core.schema'))}`,
    `include ${q(path.join(SCHEMA_DIR, 'cosine.schema'))}`,
    `include ${q(path.join(SCHEMA_DIR, 'inetorgperson.schema'))}`,
    `include ${q(path.join(SCHEMA_DIR, 'nis.schema'))}`,
    `modulepath ${q(MODULE_PATH)}`,
    'moduleload back_mdb',
    'moduleload memberof',
    `pidfile ${q(path.join(dir, 'slapd.pid'))}`,
    `argsfile ${q(path.join(dir, 'slapd.args'))}`,
    `TLSCACertificateFile ${q(tls.ca)}`,
    `TLSCertificateFile ${q(tls.cert)}`,
    `TLSCertificateKeyFile ${q(tls.key)}`,
    '',
    'database mdb',
    'suffix "dc=example,dc=org"',
    `rootdn ${q(root.dn)}`,
    `rootpw ${root.password}`,
    `directory ${q(path.join(dir, 'db'))}`,
    'maxsize 16777216',
    'overlay memberof',
    'access to attrs=userPassword by self =xw by anonymous auth by * none',
    'access to * by users read by * none',
    '',
  ].join('\n')
}

function ldif(service: { dn: string; password: string }, users: Slapd['users']): string {
  const person = (u: LdapUser, cn: string, description?: string) => [
    `dn: ${u.dn}`,
    'objectClass: inetOrgPerson',
    `uid: ${u.name}`,
    `cn: ${cn}`,
    `sn: ${cn.split(' ').pop()}`,
    `mail: ${u.name.replace(/\W/g, '')}@example.org`,
    `userPassword: ${u.password}`,
    ...(description ? [`description: ${description}`] : []),
    ...u.groups.map((g) => `memberOf: cn=${g},ou=groups,dc=example,dc=org`),
    '',
  ].join('\n')
  const members = (g: string) => Object.values(users).filter((u) => u.groups.includes(g)).map((u) => `member: ${u.dn}`)
  return [
    'dn: dc=example,dc=org\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n',
    'dn: ou=people,dc=example,dc=org\nobjectClass: organizationalUnit\nou: people\n',
    'dn: ou=services,dc=example,dc=org\nobjectClass: organizationalUnit\nou: services\n',
    'dn: ou=groups,dc=example,dc=org\nobjectClass: organizationalUnit\nou: groups\n',
    `dn: ${service.dn}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: gatehouse\nuserPassword: ${service.password}\n`,
    person(users.alice, 'Alice Example', 'team-a'),
    person(users.bob, 'Bob Example', 'team-a'),
    person(users.carol, 'Carol Example'),
    person(users.dave, 'Dave Example'),
    ['dn: cn=staff,ou=groups,dc=example,dc=org', 'objectClass: groupOfNames', 'cn: staff', ...members('staff'), ''].join('\n'),
    ['dn: cn=mail-users,ou=groups,dc=example,dc=org', 'objectClass: groupOfNames', 'cn: mail-users', ...members('mail-users'), ''].join('\n'),
  ].join('\n')
}

function run(file: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${path.basename(file)} failed: ${err.message}\n${stdout}${stderr}`))
      else resolve()
    })
  })
}

/** Start a slapd with the directory described above; `tls: true` adds an ldaps:// listener. */
export async function startSlapd(opts: { tls?: boolean } = {}): Promise<Slapd> {
  const reason = slapdSkipReason()
  if (reason) throw new Error(reason)
  const dir = mkdtempSync(path.join(tmpdir(), 'gh-slapd-'))
  const pki = await makeTestPki()
  const cleanupFiles = () => {
    pki.cleanup()
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    const baseDn = 'dc=example,dc=org'
    const root = { dn: `cn=admin,${baseDn}`, password: secret('root') }
    const service = { dn: `cn=gatehouse,ou=services,${baseDn}`, password: secret('service'), passwordFile: path.join(dir, 'bind-password') }
    const user = (name: string, rdn: string, groups: string[]): LdapUser => ({ name, dn: `uid=${rdn},ou=people,${baseDn}`, password: secret(name.replace(/\W/g, '')), groups })
    const users = {
      alice: user('alice', 'alice', ['mail-users', 'staff']),
      bob: user('bob', 'bob', ['staff']),
      carol: user('carol', 'carol', []),
      dave: user('d,ave', 'd\\,ave', []),
    }
    writeFileSync(service.passwordFile, `${service.password}\n`, { mode: 0o600 })
    mkdirSync(path.join(dir, 'db'), { mode: 0o700 })
    const conf = path.join(dir, 'slapd.conf')
    writeFileSync(conf, slapdConf(dir, { cert: pki.serverCert, key: pki.serverKey, ca: pki.caCert }, root))
    writeFileSync(path.join(dir, 'data.ldif'), ldif(service, users))
    await run(SLAPADD, ['-f', conf, '-l', path.join(dir, 'data.ldif')])

    // A port picked here may be taken by someone else before slapd binds it: try a few times.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort()
      const tlsPort = opts.tls ? await freePort() : undefined
      const url = `ldap://127.0.0.1:${port}`
      const ldapsUrl = tlsPort ? `ldaps://127.0.0.1:${tlsPort}` : undefined
      const started = await launch(conf, [url, ...(ldapsUrl ? [ldapsUrl] : [])], [port, ...(tlsPort ? [tlsPort] : [])])
      if ('error' in started) {
        if (attempt < 3 && /address already in use|bind.*failed/i.test(started.error)) continue
        throw new Error(`slapd did not start: ${started.error}`)
      }
      const { child, output, watchdog } = started
      const killNow = () => { child.kill('SIGKILL') }
      process.once('exit', killNow)
      let stopped: Promise<void> | undefined
      return {
        url, ldapsUrl, caFile: pki.caCert, baseDn, rootDn: root.dn, rootPassword: root.password, service, users, dir,
        output: () => output.join(''),
        stop: () => (stopped ??= (async () => {
          process.removeListener('exit', killNow)
          watchdog.kill('SIGKILL')
          await terminate(child)
          cleanupFiles()
        })()),
      }
    }
  } catch (err) {
    cleanupFiles()
    throw err
  }
}

/** Wait for exit after SIGTERM; SIGKILL after 5 s. */
async function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  child.kill('SIGTERM')
  let timer: NodeJS.Timeout | undefined
  const late = await Promise.race([exited.then(() => false), new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(true), 5000) })])
  clearTimeout(timer)
  if (late) {
    child.kill('SIGKILL')
    await exited
  }
}

type Launched = { child: ChildProcess; watchdog: ChildProcess; output: string[] } | { error: string }

async function launch(conf: string, urls: string[], ports: number[]): Promise<Launched> {
  const output: string[] = []
  // -d 0: stay in the foreground (no fork), so the process is ours to kill.
  const child = spawn(SLAPD, ['-f', conf, '-h', urls.map((u) => `${u}/`).join(' '), '-d', '0'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let size = 0
  const keep = (chunk: Buffer) => {
    if (size < 64 * 1024) output.push(chunk.toString('utf8'))
    size += chunk.length
  }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  const spawnError = new Promise<string>((resolve) => child.once('error', (e) => resolve(e.message)))
  // If this test process dies without stop() (killed worker), the watchdog's stdin closes and it
  // kills slapd: no slapd outlives its test.
  const watchdog = spawn('/bin/sh', ['-c', `read _ ; kill -KILL ${child.pid ?? 0} 2>/dev/null`], { stdio: ['pipe', 'ignore', 'ignore'] })
  watchdog.on('error', () => {})
  watchdog.unref()
  ;(watchdog.stdin as unknown as { unref?: () => void } | null)?.unref?.()

  const deadline = Date.now() + 10_000
  let error: string | undefined
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      error = `exited with ${child.exitCode ?? child.signalCode}: ${output.join('').trim() || '(no output)'}`
      break
    }
    const failed = await Promise.race([spawnError, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 50))])
    if (failed) {
      error = failed
      break
    }
    const ready = await Promise.all(ports.map(canConnect))
    if (ready.every(Boolean)) return { child, watchdog, output }
    if (Date.now() > deadline) {
      error = `no listener on ${urls.join(', ')} within 10 s: ${output.join('').trim() || '(no output)'}`
      break
    }
  }
  watchdog.kill('SIGKILL')
  await terminate(child)
  return { error }
}
