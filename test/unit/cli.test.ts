/**
 * The built `gatehouse` CLI, run as a child process in a temporary working directory (so the
 * default data/ and certs/ folders land there). `npm test` builds first (pretest).
 */
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { PassThrough } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CommandRegistry, runCli, type Command, type CommandContext } from '../../src/cli/commands.js'
import { ConfigError, UsageError } from '../../src/errors.js'

const MAIN = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url))
const PASSWORD = 'Tr0ub4dor&3-horse'

interface Result {
  code: number | null
  stdout: string
  stderr: string
}

let cwd: string

function run(args: string[], opts: { input?: string; env?: Record<string, string> } = {}): Promise<Result> {
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env }
  for (const k of ['GATEHOUSE_CONFIG', 'GATEHOUSE_PASSWORD', 'GATEHOUSE_DEBUG']) if (!opts.env?.[k]) delete env[k]
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { cwd, env, stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d })
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
    child.stdin.end(opts.input ?? '')
  })
}

beforeAll(() => {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run npm run build (npm test builds it first)`)
  cwd = mkdtempSync(join(tmpdir(), 'gh-cli-'))
})
afterAll(() => {
  if (cwd) rmSync(cwd, { recursive: true, force: true })
})

describe('dispatcher (in process)', () => {
  async function dispatch(argv: string[], commands: Command[], env: NodeJS.ProcessEnv = {}) {
    const stdout = new PassThrough()
    const stderr = new PassThrough()
    let out = ''
    let err = ''
    stdout.setEncoding('utf8').on('data', (d: string) => { out += d })
    stderr.setEncoding('utf8').on('data', (d: string) => { err += d })
    const registry = new CommandRegistry().register(...commands)
    const code = await runCli(argv, registry, { stdout, stderr, stdin: new PassThrough(), env })
    await new Promise((resolve) => setImmediate(resolve)) // let buffered 'data' events through
    return { code, stdout: out, stderr: err }
  }
  const seen: CommandContext[] = []
  const cmd = (name: string, run: Command['run'] = async (ctx) => { seen.push(ctx) }, options?: Command['options']): Command =>
    ({ name, summary: `the ${name} command`, usage: name, run, options })

  it('dispatches by the longest matching name and passes --config through', async () => {
    seen.length = 0
    const commands = [cmd('a'), cmd('a b', undefined, { flag: { type: 'boolean' } })]
    expect((await dispatch(['a', 'b', 'x', '--flag', '--config', 'c.yaml'], commands)).code).toBe(0)
    expect((await dispatch(['--config=d.yaml', 'a', 'x'], commands)).code).toBe(0)
    expect(seen[0]).toMatchObject({ positionals: ['x'], values: { flag: true, config: 'c.yaml' } })
    expect(seen[1]).toMatchObject({ positionals: ['x'], values: { config: 'd.yaml' } })
    expect(seen[1]!.args).toEqual(['--config=d.yaml', 'x'])
  })

  it('refuses a name registered twice', () => {
    expect(() => new CommandRegistry().register(cmd('a'), cmd('a'))).toThrow(/registered twice/)
  })

  it('a returned number is the exit code', async () => {
    expect((await dispatch(['x'], [cmd('x', async () => 3)])).code).toBe(3)
  })

  it('a GatehouseError prints message and code, exit 1; a UsageError exits 2', async () => {
    const r = await dispatch(['x'], [cmd('x', async () => { throw new ConfigError('proxy.listen.port must be <= 65535, got 70000') })])
    expect(r).toEqual({ code: 1, stdout: '', stderr: 'gatehouse: proxy.listen.port must be <= 65535, got 70000 (GH_ERR_CONFIG)\n' })
    const u = await dispatch(['x'], [cmd('x', async () => { throw new UsageError('missing NAME') })])
    expect(u.code).toBe(2)
    expect(u.stderr).toMatch(/^gatehouse: missing NAME \(GH_ERR_USAGE\)\nusage: gatehouse x\n/)
  })

  it('any other error: "unexpected error" without a stack, unless GATEHOUSE_DEBUG=1', async () => {
    const boom = [cmd('x', async () => { throw new Error('boom') })]
    const r = await dispatch(['x'], boom)
    expect(r).toEqual({ code: 1, stdout: '', stderr: 'gatehouse: unexpected error: boom\n' })
    const d = await dispatch(['x'], boom, { GATEHOUSE_DEBUG: '1' })
    expect(d.code).toBe(1)
    expect(d.stderr).toMatch(/^gatehouse: unexpected error: boom\nError: boom\n\s+at /)
  })
})

describe('help and usage errors', () => {
  it('--help lists the commands and exits 0', async () => {
    const r = await run(['--help'])
    expect(r.code).toBe(0)
    for (const name of ['certs init', 'certs show', 'users add', 'users list', 'users remove', 'config check', 'config docs']) {
      expect(r.stdout).toContain(name)
    }
    expect(r.stdout).toContain('--config FILE')
    expect(r.stderr).toBe('')
  })

  it('`help` and `<cmd> --help` print usage and exit 0', async () => {
    const top = await run(['help'])
    expect(top.code).toBe(0)
    expect(top.stdout).toContain('users add')

    const cmd = await run(['users', 'add', '--help'])
    expect(cmd.code).toBe(0)
    expect(cmd.stdout).toContain('Usage: gatehouse users add NAME')
    expect(cmd.stdout).toContain('--password-stdin')

    const viaHelp = await run(['help', 'certs', 'init'])
    expect(viaHelp.code).toBe(0)
    expect(viaHelp.stdout).toContain('Usage: gatehouse certs init')

    const group = await run(['users', '--help'])
    expect(group.code).toBe(0)
    expect(group.stdout).toContain('users remove')
  })

  it('an unknown command exits 2 with a hint', async () => {
    const r = await run(['frobnicate'])
    expect(r.code).toBe(2)
    expect(r.stdout).toBe('')
    expect(r.stderr).toContain('gatehouse: unknown command "frobnicate" (GH_ERR_USAGE)')
    expect(r.stderr).toContain("Run 'gatehouse --help'")

    const typo = await run(['users', 'ad', 'alice'])
    expect(typo.code).toBe(2)
    expect(typo.stderr).toContain('Did you mean: gatehouse users add?')
  })

  it('no command prints the usage on stderr and exits 2', async () => {
    const r = await run([])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('Usage: gatehouse <command>')
  })

  it('an unknown option or a missing argument exits 2 with the usage', async () => {
    const bad = await run(['certs', 'init', '--bogus'])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/^gatehouse: .*--bogus.* \(GH_ERR_USAGE\)$/m)
    expect(bad.stderr).toContain('usage: gatehouse certs init')

    const missing = await run(['users', 'remove'])
    expect(missing.code).toBe(2)
    expect(missing.stderr).toContain('gatehouse: missing NAME (GH_ERR_USAGE)')
  })
})

describe('certs', () => {
  it('init writes the PKI; a second run without --force exits 1 naming the files', async () => {
    const first = await run(['certs', 'init', '--name', 'gatehouse.test'])
    expect(first.stderr).toBe('')
    expect(first.code).toBe(0)
    for (const name of ['ca.crt', 'ca.key', 'server.crt', 'server.key', 'proxy-client.crt', 'proxy-client.key']) {
      const file = join(cwd, 'certs', name)
      expect(existsSync(file), file).toBe(true)
      expect(first.stdout).toContain(file)
      if (name.endsWith('.key')) expect(statSync(file).mode & 0o777).toBe(0o600)
    }
    expect(first.stdout).toContain('DNS:gatehouse.test')
    const before = readFileSync(join(cwd, 'certs', 'ca.crt'), 'utf8')

    const second = await run(['certs', 'init'])
    expect(second.code).toBe(1)
    expect(second.stderr).toContain('(GH_ERR_EXISTS)')
    expect(second.stderr).toContain('ca.crt, ca.key, server.crt, server.key, proxy-client.crt, proxy-client.key')
    expect(second.stderr).toContain('--force')
    expect(readFileSync(join(cwd, 'certs', 'ca.crt'), 'utf8')).toBe(before)

    const forced = await run(['certs', 'init', '--force', '--days', '30'])
    expect(forced.code).toBe(0)
    expect(readFileSync(join(cwd, 'certs', 'ca.crt'), 'utf8')).not.toBe(before)
  })

  it('show prints subject, SANs and expiry of each certificate', async () => {
    const r = await run(['certs', 'show'])
    expect(r.code).toBe(0)
    expect(r.stdout).toContain(join(cwd, 'certs', 'server.crt'))
    expect(r.stdout).toContain('CN=gatehouse-server')
    expect(r.stdout).toContain('CN=Gatehouse Development CA')
    expect(r.stdout).toMatch(/SANs: +DNS:localhost, IP:127\.0\.0\.1, IP:::1/)
    expect(r.stdout).toMatch(/notAfter: \d{4}-\d\d-\d\dT/)
  })

  it('show exits 1 on a folder without certificates', async () => {
    const r = await run(['certs', 'show', '--dir', 'nowhere'])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('no certificates in')
  })
})

describe('users', () => {
  it('add (password on stdin), list, remove; the password is never shown or stored', async () => {
    const add = await run(['users', 'add', 'alice', '--group', 'staff', '--group', 'mobile', '--password-stdin'], { input: `${PASSWORD}\nignored\n` })
    expect(add.stderr).toBe('')
    expect(add.code).toBe(0)
    expect(add.stdout).toContain('alice')
    expect(add.stdout + add.stderr).not.toContain(PASSWORD)

    const usersFile = join(cwd, 'data', 'users.json')
    const stored = readFileSync(usersFile, 'utf8')
    expect(stored).toContain('"alice"')
    expect(stored).not.toContain(PASSWORD)
    expect(stored).toMatch(/scrypt\$/)
    expect(statSync(usersFile).mode & 0o777).toBe(0o600)

    const fromEnv = await run(['users', 'add', 'bob'], { env: { GATEHOUSE_PASSWORD: 'another password' } })
    expect(fromEnv.code).toBe(0)

    const list = await run(['users', 'list'])
    expect(list.code).toBe(0)
    expect(list.stdout).toMatch(/^NAME +GROUPS +CREATED$/m)
    expect(list.stdout).toMatch(/^alice +staff,mobile +\d{4}-\d\d-\d\dT/m)
    expect(list.stdout).toMatch(/^bob +- +/m)
    expect(list.stdout + list.stderr).not.toContain(PASSWORD)

    const dup = await run(['users', 'add', 'Alice', '--password-stdin'], { input: `${PASSWORD}\n` })
    expect(dup.code).toBe(1)
    expect(dup.stderr).toContain('(GH_ERR_EXISTS)')

    const remove = await run(['users', 'remove', 'alice'])
    expect(remove.code).toBe(0)
    expect((await run(['users', 'list'])).stdout).not.toMatch(/^alice /m)

    const again = await run(['users', 'remove', 'alice'])
    expect(again.code).toBe(1)
    expect(again.stderr).toContain('no user named "alice"')
  })

  it('refuses to add a user without a password source (stdin not a terminal)', async () => {
    const r = await run(['users', 'add', 'carol'])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('--password-stdin')
    expect(readFileSync(join(cwd, 'data', 'users.json'), 'utf8')).not.toContain('carol')
  })

  it('refuses a too short password without echoing it', async () => {
    const r = await run(['users', 'add', 'dave', '--password-stdin'], { input: 'short7\n' })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('password must be 8 to 1024 characters')
    expect(r.stderr).not.toContain('short7')
  })
})

describe('config', () => {
  it('check accepts the embedded defaults and a valid file', async () => {
    const defaults = await run(['config', 'check'])
    expect(defaults.code).toBe(0)
    expect(defaults.stdout).toBe('config OK: embedded defaults\n')

    writeFileSync(join(cwd, 'good.yaml'), 'proxy:\n  listen:\n    port: 10443\n')
    const good = await run(['config', 'check', '--config', 'good.yaml'])
    expect(good.code).toBe(0)
    expect(good.stdout).toBe('config OK: good.yaml\n')

    const viaEnv = await run(['config', 'check'], { env: { GATEHOUSE_CONFIG: 'good.yaml' } })
    expect(viaEnv.stdout).toBe('config OK: good.yaml\n')

    const leading = await run(['--config', 'good.yaml', 'config', 'check'])
    expect(leading.stdout).toBe('config OK: good.yaml\n')
  })

  it('check on a bad file exits 1 and names the option path', async () => {
    writeFileSync(join(cwd, 'bad.yaml'), 'proxy:\n  routes:\n    - prefix: /a/\n      upstream: http://127.0.0.1:1\n    - prefix: /b/\n      upstream: ftp://files.example.com\n')
    const r = await run(['config', 'check', '--config', 'bad.yaml'])
    expect(r.code).toBe(1)
    expect(r.stdout).toBe('')
    expect(r.stderr).toBe('gatehouse: bad.yaml: proxy.routes[1].upstream must be an http or https URL (GH_ERR_CONFIG)\n')
  })

  it('check on a missing file exits 1 with the path and ENOENT, without a stack trace', async () => {
    const r = await run(['config', 'check', '--config', 'missing.yaml'])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('missing.yaml')
    expect(r.stderr).toContain('ENOENT')
    expect(r.stderr).not.toMatch(/^\s+at /m)
  })

  it('docs prints the Markdown reference', async () => {
    const r = await run(['config', 'docs'])
    expect(r.code).toBe(0)
    expect(r.stdout).toContain('## Option reference')
    expect(r.stdout).toContain('| `proxy.routes[].upstream` |')
  })
})
