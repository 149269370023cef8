/**
 * A proxy worker thread: one uWebSockets.js app and event loop, sharing the listening port with
 * its siblings (SO_REUSEPORT, so the kernel spreads connections across threads). Each thread
 * keeps its own session cache and upstream pools; the main thread aggregates their metrics.
 */
import { parentPort, workerData } from 'node:worker_threads'
import { buildConfig, loadConfigFile } from '../config/load.js'
import { createLogger } from '../observability/logger.js'
import { createRegistry } from '../observability/metrics.js'
import { proxyServerFromConfig } from './fromConfig.js'
import type { FromWorker, ToWorker, WorkerData } from './threadMessages.js'

const data = workerData as WorkerData
const port = parentPort!
const send = (m: FromWorker) => port.postMessage(m)

async function main(): Promise<void> {
  const config = data.configFile ? loadConfigFile(data.configFile) : buildConfig({})
  const log = createLogger({ level: config.log.level, name: `proxy-${data.index}` })
  const registry = createRegistry('proxy', { processMetrics: false })
  const proxy = proxyServerFromConfig(config, log, { admin: false, registry, listenPort: data.port })
  await proxy.start()
  port.on('message', (m: ToWorker) => {
    if (m.type === 'metrics') {
      registry.getMetricsAsJSON().then(
        (metrics) => send({ type: 'metrics', id: m.id, index: data.index, metrics }),
        () => send({ type: 'metrics', id: m.id, index: data.index, metrics: [] }),
      )
    } else if (m.type === 'reload') {
      proxy.reload(m.options).then(
        () => send({ type: 'reloaded', id: m.id, index: data.index, error: undefined }),
        (err: unknown) => send({ type: 'reloaded', id: m.id, index: data.index, error: err instanceof Error ? err.message : String(err) }),
      )
    } else if (m.type === 'close') {
      send({ type: 'draining' })
      proxy.close(m.drainMs).finally(() => port.close())
    }
  })
  send({ type: 'ready', port: proxy.port })
}

main().catch((err: unknown) => {
  send({ type: 'failed', message: err instanceof Error ? err.message : String(err) })
  port.close()
})
