/**
 * `gatehouse device …`: the device simulator on the command line. The enrollment (with its
 * shared key) is kept in a state file, mode 0600, so `device request` can follow `device enroll`.
 */
import { randomUUID } from 'node:crypto'
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { createReadStream, readFileSync } from 'node:fs'
import path from 'node:path'
import { DeviceCommandError, GatehouseDevice, GatehouseClientError, type DeviceCommand, type EnrollmentState } from '../../client/device.js'
import type { GatehouseConfig } from '../../config/load.js'
import { loadConfig } from '../../config/load.js'
import { UsageError } from '../../errors.js'
import type { HeaderList } from '../../protocol/head.js'
import { stringListOption, stringOption } from '../args.js'
import type { Command } from '../commands.js'
import { readDemoUser } from '../demoUser.js'
import { readFirstLine } from './users.js'

const common = {
  state: { type: 'string' as const },
  'security-url': { type: 'string' as const },
  'proxy-url': { type: 'string' as const },
  ca: { type: 'string' as const },
}

function settings(values: Record<string, unknown>) {
  const config = loadConfig(stringOption(values, 'config'))
  return {
    config,
    state: stringOption(values, 'state') ?? path.join(config.dataDir, 'device.json'),
    securityUrl: stringOption(values, 'security-url') ?? `https://localhost:${config.security.listen.port}`,
    proxyUrl: stringOption(values, 'proxy-url'),
    ca: readFileSync(stringOption(values, 'ca') ?? config.files.caCert),
  }
}

async function saveState(file: string, state: EnrollmentState): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 })
  await writeFile(file, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 })
  await chmod(file, 0o600)
}

async function loadState(file: string): Promise<EnrollmentState> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as EnrollmentState
  } catch {
    throw new UsageError(`no enrollment in ${file}: run \`gatehouse device enroll\` first`)
  }
}

const REACH_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ETIMEDOUT', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT'])

function describeError(err: unknown): never {
  if (err instanceof GatehouseClientError) throw new UsageError(`server answered ${err.message}`)
  const code = (err as { code?: string }).code
  if (code && REACH_ERRORS.has(code)) throw new UsageError(`cannot reach Gatehouse (${code}): is it running (npm start)?`)
  if (code && (code.startsWith('ERR_TLS') || code.includes('CERT') || code.startsWith('ERR_SSL'))) {
    throw new UsageError(`TLS with Gatehouse failed (${code}): check --ca and the server certificate`)
  }
  throw err
}

export const deviceEnroll: Command = {
  name: 'device enroll',
  summary: 'Enroll this simulated device app with the security server',
  usage: 'device enroll --user NAME [--password-stdin | --code-stdin] [--app ID] [--app-version V] [--device-id ID] [--state FILE]',
  details: 'The password comes from stdin (--password-stdin) or $GATEHOUSE_PASSWORD; an activation code from stdin (--code-stdin) or $GATEHOUSE_ACTIVATION_CODE. Give either or both, as security.enrollment.mode asks.',
  options: {
    ...common, user: { type: 'string' }, 'password-stdin': { type: 'boolean' }, 'code-stdin': { type: 'boolean' },
    app: { type: 'string' }, 'app-version': { type: 'string' }, 'device-id': { type: 'string' },
  },
  async run({ values, stdin, env, stdout }) {
    const s = settings(values)
    const user = stringOption(values, 'user')
    if (!user) throw new UsageError('--user is required')
    if (values['password-stdin'] && values['code-stdin']) throw new UsageError('--password-stdin and --code-stdin cannot both read stdin: put one in the environment')
    const password = values['password-stdin'] ? await readFirstLine(stdin) : env.GATEHOUSE_PASSWORD
    const activationCode = values['code-stdin'] ? await readFirstLine(stdin) : env.GATEHOUSE_ACTIVATION_CODE
    if (!password && !activationCode) {
      throw new UsageError('give the password on stdin with --password-stdin or in $GATEHOUSE_PASSWORD, or an activation code with --code-stdin or $GATEHOUSE_ACTIVATION_CODE')
    }
    const device = new GatehouseDevice({
      securityUrl: s.securityUrl, ca: s.ca, appId: stringOption(values, 'app') ?? 'demo-app',
      appVersion: stringOption(values, 'app-version') ?? '1.0.0', deviceId: stringOption(values, 'device-id') ?? `sim-${randomUUID().slice(0, 8)}`,
      ...(s.proxyUrl ? { proxyUrl: s.proxyUrl } : {}),
    })
    try {
      const state = await device.enroll(user, { ...(password ? { password } : {}), ...(activationCode ? { activationCode } : {}) }).catch(describeError)
      await saveState(s.state, state)
      stdout.write(`enrolled ${state.appId} on ${state.deviceId} for ${state.userName}; state in ${s.state}\n`)
    } finally {
      await device.close()
    }
  },
}

export const deviceRequest: Command = {
  name: 'device request',
  summary: 'Send one encrypted request through the proxy and print the decrypted answer',
  usage: 'device request METHOD PATH [--data TEXT | --data-file FILE] [--header "name: value" ...] [--state FILE]',
  options: { ...common, data: { type: 'string' }, 'data-file': { type: 'string' }, header: { type: 'string', multiple: true }, include: { type: 'boolean', short: 'i' } },
  async run({ values, positionals, stdout }) {
    const [method, reqPath] = positionals
    if (!method || !reqPath || !reqPath.startsWith('/')) throw new UsageError('usage: gatehouse device request METHOD /path')
    const s = settings(values)
    const enrollment = await loadState(s.state)
    const headers: HeaderList = stringListOption(values, 'header').map((h) => {
      const i = h.indexOf(':')
      if (i <= 0) throw new UsageError(`--header must be "name: value", got "${h}"`)
      return [h.slice(0, i).trim(), h.slice(i + 1).trim()]
    })
    // A file streams both ways (any size, never held whole); --data goes in one envelope.
    const dataFile = stringOption(values, 'data-file')
    const body = dataFile ? undefined : stringOption(values, 'data')
    const device = new GatehouseDevice({
      securityUrl: s.securityUrl, ca: s.ca, appId: enrollment.appId, appVersion: enrollment.appVersion, deviceId: enrollment.deviceId,
      enrollment, ...(s.proxyUrl ? { proxyUrl: s.proxyUrl } : {}),
      onCommand: (c) => { stdout.write(`device command received: ${describeCommand(c)}\n`) },
    })
    try {
      let res
      try {
        res = dataFile
          ? await device.requestStream(method.toUpperCase(), reqPath, { headers, body: createReadStream(dataFile) })
          : await device.request(method.toUpperCase(), reqPath, { headers, ...(body !== undefined ? { body } : {}) })
      } catch (err) {
        if (!(err instanceof DeviceCommandError)) return describeError(err)
        // The SDK acknowledged it; the simulator carries it out on its own state.
        if (err.command.kind === 'wipe' || err.command.kind === 'retire') {
          await rm(s.state, { force: true })
          stdout.write(`enrollment erased: removed ${s.state}\n`)
        } else {
          stdout.write('device locked: no session until an admin unlocks it\n')
        }
        return 1
      }
      if (values.include) {
        stdout.write(`${res.status}\n${res.headers.map(([n, v]) => `${n}: ${v}`).join('\n')}\n\n`)
      }
      let last: number | undefined
      if (Buffer.isBuffer(res.body)) {
        stdout.write(res.body)
        last = res.body[res.body.length - 1]
      } else {
        try {
          for await (const chunk of res.body as AsyncIterable<Buffer>) {
            if (chunk.length === 0) continue
            last = chunk[chunk.length - 1]
            if (!stdout.write(chunk)) await new Promise((resolve) => stdout.once('drain', resolve))
          }
        } catch (err) {
          return describeError(err)
        }
      }
      if (last !== undefined && last !== 0x0a) stdout.write('\n')
      await device.closeSession().catch(() => undefined)
      return res.status >= 400 ? 1 : 0
    } finally {
      await device.close()
    }
  },
}

function describeCommand(c: DeviceCommand): string {
  return `${c.kind}${c.appId ? ` of app ${c.appId}` : c.kind === 'wipe' ? ' of the whole device' : ''} (command ${c.id})`
}

export const deviceDemo: Command = {
  name: 'device demo',
  summary: 'Enroll the demo user, open a session and make a few requests (what `npm run demo` runs)',
  usage: 'device demo [--config FILE]',
  options: { ...common },
  async run({ values, stdout }) {
    const s = settings(values)
    const demo = await readDemoUser(s.config).catch(() => {
      throw new UsageError('no demo user yet: start Gatehouse first with `npm start`')
    })
    await runDemo(s.config, { ...s, user: demo.user, password: demo.password }, (line) => stdout.write(line + '\n'))
  },
}

async function runDemo(config: GatehouseConfig, s: { securityUrl: string; proxyUrl: string | undefined; ca: Buffer; user: string; password: string }, print: (l: string) => void) {
  const route = config.proxy.routes[0]?.prefix ?? '/demo/'
  const device = new GatehouseDevice({
    securityUrl: s.securityUrl, ca: s.ca, appId: 'demo-app', appVersion: '1.0.0', deviceId: `demo-${randomUUID().slice(0, 8)}`,
    ...(s.proxyUrl ? { proxyUrl: s.proxyUrl } : {}),
  })
  try {
    const e = await device.enroll(s.user, s.password).catch(describeError)
    print(`1. enrolled app "${e.appId}" on device ${e.deviceId} as ${e.userName} (ECDH P-256 + HKDF-SHA256 shared key)`)
    await device.openSession().catch(describeError)
    print(`2. opened a session through ${s.securityUrl} (proof of possession; per-direction AES-256-GCM keys)`)
    const hello = await device.request('GET', `${route}hello`).catch(describeError)
    print(`3. GET ${route}hello via ${e.proxyUrl} → ${hello.status}, decrypted: ${hello.text()}`)
    const payload = JSON.stringify({ note: 'sealed on the device, opened by the proxy', at: new Date().toISOString() })
    const echo = await device.request('POST', `${route}echo`, { headers: [['content-type', 'application/json']], body: payload }).catch(describeError)
    print(`4. POST ${route}echo → ${echo.status}, decrypted: ${echo.text()}`)
    await device.closeSession().catch(describeError)
    print('5. closed the session. Demo OK.')
  } finally {
    await device.close()
  }
}

export const deviceCommands: Command[] = [deviceEnroll, deviceRequest, deviceDemo]
