import type { GatehouseConfig } from '../../config/load.js'
import { DemoUpstream } from '../../demo/upstream.js'
import type { Logger } from '../../observability/logger.js'
import { proxyServerFromConfig } from '../../proxy/fromConfig.js'
import { securityServerFromConfig } from '../../security/fromConfig.js'
import type { Command } from '../commands.js'
import { ensureDemoUser } from '../demoUser.js'
import { configAndLogger, ensureDevPki, untilSignal } from '../runtime.js'

const drainOption = { drain: { type: 'string' as const } }

function drainMs(values: Record<string, unknown>): number {
  const v = Number(values.drain ?? 10)
  return Number.isFinite(v) && v >= 0 ? v * 1000 : 10_000
}

async function runSecurity(config: GatehouseConfig, log: Logger) {
  const server = securityServerFromConfig(config, log)
  await server.start()
  return server
}

async function runProxy(config: GatehouseConfig, log: Logger) {
  const proxy = proxyServerFromConfig(config, log)
  await proxy.start()
  return proxy
}

export const securityCommand: Command = {
  name: 'security',
  summary: 'Run the security server (device API, proxy API, admin endpoint)',
  usage: 'security [--config FILE]',
  async run({ values, stdout }) {
    const { config, log } = configAndLogger(values, 'security')
    await ensureDevPki(config, log)
    const server = await runSecurity(config, log)
    log.info({ device: server.ports.device, proxyApi: server.ports.proxyApi, admin: server.ports.admin }, 'security server listening')
    stdout.write(`gatehouse security server ready: device API https://${config.security.listen.host}:${server.ports.device}, proxy API (mTLS) :${server.ports.proxyApi}, admin http://${config.security.admin.host}:${server.ports.admin}\n`)
    await untilSignal()
    log.info('security server stopping')
    await server.close()
  },
}

export const proxyCommand: Command = {
  name: 'proxy',
  summary: 'Run the proxy (device entry point, admin endpoint)',
  usage: 'proxy [--config FILE] [--drain SECONDS]',
  options: drainOption,
  async run({ values, stdout }) {
    const { config, log } = configAndLogger(values, 'proxy')
    await ensureDevPki(config, log)
    const proxy = await runProxy(config, log)
    log.info({ port: proxy.port, admin: proxy.adminPort }, 'proxy listening')
    stdout.write(`gatehouse proxy ready: https://${config.proxy.listen.host}:${proxy.port}, admin http://${config.proxy.admin.host}:${proxy.adminPort}\n`)
    await untilSignal()
    log.info('proxy draining')
    await proxy.close(drainMs(values))
  },
}

export const startCommand: Command = {
  name: 'start',
  summary: 'Run everything on one machine: security server, proxy and a demo upstream',
  usage: 'start [--config FILE]',
  details: 'On a fresh checkout it creates the development PKI, the master key, the SQLite database and a demo user.',
  options: drainOption,
  async run({ values, stdout }) {
    const started = performance.now()
    const { config, log } = configAndLogger(values, 'gatehouse')
    await ensureDevPki(config, log)
    const demoUser = await ensureDemoUser(config)
    const upstream = new DemoUpstream(config.demo.upstream)
    await upstream.start()
    const security = await runSecurity(config, log)
    const proxy = await runProxy(config, log)
    const ms = Math.round(performance.now() - started)
    log.info({ startupMs: ms }, 'gatehouse ready')
    const p = config.proxy, s = config.security
    stdout.write([
      '',
      `Gatehouse is ready (started in ${ms} ms).`,
      `  proxy (devices)       https://localhost:${proxy.port}   routes: ${p.routes.map((r) => `${r.prefix} → ${r.upstream}`).join(', ')}`,
      `  security (devices)    https://localhost:${security.ports.device}`,
      `  security (proxy API)  https://localhost:${security.ports.proxyApi}   mutual TLS`,
      `  metrics               http://${p.admin.host}:${proxy.adminPort}/metrics   http://${s.admin.host}:${security.ports.admin}/metrics`,
      `  demo upstream         http://${config.demo.upstream.host}:${upstream.port}`,
      `  demo user             ${demoUser.user} (password in ${demoUser.file})`,
      '',
      'Try it in another terminal:  npm run demo',
      'Stop with Ctrl-C.',
      '',
    ].join('\n'))
    await untilSignal()
    stdout.write('Stopping…\n')
    await proxy.close(drainMs(values))
    await Promise.all([security.close(), upstream.close()])
    stdout.write('Stopped.\n')
  },
}


export const demoUpstreamCommand: Command = {
  name: 'demo upstream',
  summary: 'Run only the demo upstream (an intranet app stand-in; benchmarks and separate tiers)',
  usage: 'demo upstream [--config FILE]',
  async run({ values, stdout }) {
    const { config } = configAndLogger(values, 'demo-upstream')
    const upstream = new DemoUpstream(config.demo.upstream)
    await upstream.start()
    stdout.write(`demo upstream ready: http://${config.demo.upstream.host}:${upstream.port}\n`)
    await untilSignal()
    await upstream.close()
  },
}

export const serverCommands: Command[] = [startCommand, securityCommand, proxyCommand, demoUpstreamCommand]
