import type { Registry } from 'prom-client'
import { loadConfig, type GatehouseConfig } from '../../config/load.js'
import { DemoUpstream } from '../../demo/upstream.js'
import type { Logger } from '../../observability/logger.js'
import type { CertSummary } from '../../proxy/certCheck.js'
import { proxyServerFromConfig } from '../../proxy/fromConfig.js'
import { ConfigReloader, reloadableFromConfig } from '../../proxy/reload.js'
import { ProxyThreads, workerCount } from '../../proxy/threads.js'
import { securityServerFromConfig } from '../../security/fromConfig.js'
import type { Command } from '../commands.js'
import { ensureDemoUser } from '../demoUser.js'
import { configAndLogger, ensureDevPki, onReloadSignal, untilSignal } from '../runtime.js'

const drainOption = { drain: { type: 'string' as const } }

/** `--drain SECONDS` when given as a number >= 0, else proxy.drainSeconds. */
function drainMs(values: Record<string, unknown>, config: GatehouseConfig): number {
  const v = values.drain === undefined ? Number.NaN : Number(values.drain)
  return Number.isFinite(v) && v >= 0 ? v * 1000 : config.proxy.drainSeconds * 1000
}

async function runSecurity(config: GatehouseConfig, log: Logger) {
  const server = await securityServerFromConfig(config, log)
  await server.start()
  return server
}

/** The proxy on `proxy.workers` threads (default: one per core), or in this thread when 1. */
async function runProxy(config: GatehouseConfig, log: Logger): Promise<RunningProxy> {
  const p = workerCount(config.proxy.workers) > 1 ? new ProxyThreads(config, log) : proxyServerFromConfig(config, log)
  await p.start()
  return {
    port: p.port, adminPort: p.adminPort, registry: p.registry,
    beginDrain: () => p.beginDrain(),
    close: (ms) => p.close(ms),
    // The threads check the certificates once and hand every worker the same options.
    reloadConfig: (c) => (p instanceof ProxyThreads ? p.reload(c) : p.reload(reloadableFromConfig(c))),
  }
}

interface RunningProxy {
  port: number
  adminPort: number
  registry: Registry
  beginDrain(): void
  close(drainMs?: number): Promise<void>
  /** Apply a validated configuration, or throw and change nothing (src/proxy/reload.ts). */
  reloadConfig(config: GatehouseConfig): Promise<CertSummary[]>
}

/**
 * SIGHUP reloads the proxy's configuration and certificates (src/proxy/reload.ts) from the file
 * it started with; the returned reloader holds the configuration in use.
 */
function reloadOnSighup(proxy: RunningProxy, config: GatehouseConfig, log: Logger, values: Record<string, unknown>): ConfigReloader {
  const reloader = new ConfigReloader({
    target: { reload: (c) => proxy.reloadConfig(c) }, registry: proxy.registry, log, initial: config,
    load: () => loadConfig(typeof values.config === 'string' ? values.config : undefined),
  })
  onReloadSignal(() => {
    log.info({ event: 'sighup' }, 'SIGHUP: reloading configuration and certificates')
    void reloader.reload()
  })
  return reloader
}

/**
 * Stop a proxy the way a load balancer needs it: /readyz fails first while requests are still
 * served for proxy.shutdownDelayMs (longer than the balancer's detection time), then the port
 * closes and in-flight requests get the drain window.
 */
async function stopProxy(proxy: RunningProxy, config: GatehouseConfig, log: Logger, values: Record<string, unknown>): Promise<void> {
  const delayMs = config.proxy.shutdownDelayMs
  proxy.beginDrain()
  if (delayMs > 0) {
    log.info({ shutdownDelayMs: delayMs }, 'proxy not ready: serving on until the load balancer has noticed')
    await new Promise((resolve) => setTimeout(resolve, delayMs))
  }
  log.info('proxy draining')
  await proxy.close(drainMs(values, config))
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
    // `systemctl reload` (ExecReload=kill -HUP) reloads instead of ending the process (Node's default).
    const reloader = reloadOnSighup(proxy, config, log, values)
    await untilSignal()
    await stopProxy(proxy, reloader.current, log, values)
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
    const reloader = reloadOnSighup(proxy, config, log, values)
    const ms = Math.round(performance.now() - started)
    log.info({ startupMs: ms }, 'gatehouse ready')
    const p = config.proxy, s = config.security
    stdout.write([
      '',
      `Gatehouse is ready (started in ${ms} ms).`,
      `  proxy (devices)       https://localhost:${proxy.port}   routes: ${p.routes.map((r) => `${r.prefix} → ${r.upstream ?? r.upstreams?.join(' | ')}`).join(', ')}`,
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
    await stopProxy(proxy, reloader.current, log, values)
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
