/**
 * What the long-running commands share: load config, make the embedded defaults real on a fresh
 * machine (PKI, data folder), and stop cleanly on SIGINT/SIGTERM.
 */
import { existsSync } from 'node:fs'
import { loadConfig, type GatehouseConfig } from '../config/load.js'
import { createLogger, type Logger } from '../observability/logger.js'
import { initPki, pkiExists, pkiPaths } from '../pki/devCa.js'

export function configAndLogger(values: Record<string, unknown>, name: string): { config: GatehouseConfig; log: Logger } {
  const config = loadConfig(typeof values.config === 'string' ? values.config : undefined)
  // log.file is the security server's log: `security` and the all-in-one `start` write it.
  const file = config.log.file && (name === 'security' || name === 'gatehouse') ? config.log.file : undefined
  // $GATEHOUSE_LOG_LEVEL overrides the file for one run (debugging without editing config).
  return { config, log: createLogger({ level: process.env.GATEHOUSE_LOG_LEVEL ?? config.log.level, name, file }) }
}

/**
 * Create the development PKI when the configured TLS files are the defaults and absent. Explicitly
 * configured certificate files are never created for the user: a missing one is an error.
 */
export async function ensureDevPki(config: GatehouseConfig, log: Logger): Promise<void> {
  if (pkiExists(config.certsDir)) return
  // Some of the files are there (e.g. a proxy host holding only its own certificate): never
  // issue a new CA over them.
  const present = Object.values(pkiPaths(config.certsDir)).filter((f) => f !== config.certsDir && existsSync(f))
  if (present.length) return
  const configured = [config.files.serverCert, config.files.serverKey].filter((f) => !f.startsWith(config.certsDir))
  if (configured.length && configured.some((f) => !existsSync(f))) return
  const files = await initPki({ dir: config.certsDir })
  log.info({ dir: files.dir }, 'created a development PKI (CA, server and proxy client certificates)')
}

/**
 * Call `reload` on each SIGHUP (`kill -HUP`, systemd's ExecReload) instead of Node's default,
 * which ends the process. Returns a function that removes the handler.
 */
export function onReloadSignal(reload: () => void): () => void {
  const on = () => reload()
  process.on('SIGHUP', on)
  return () => process.off('SIGHUP', on)
}

/** Resolve when SIGINT or SIGTERM arrives; a second signal exits at once. */
export function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals) => {
      process.once(sig, () => process.exit(sig === 'SIGTERM' ? 143 : 130))
      resolve(sig)
    }
    process.once('SIGINT', on)
    process.once('SIGTERM', on)
  })
}
