/** Messages between the proxy's main thread and its worker threads (one file, piscina-style). */
import type { ReloadableOptions } from './reload.js'

export interface WorkerData {
  /** Config file the main thread loaded, or undefined for the embedded defaults. */
  configFile: string | undefined
  index: number
  /** Port to bind (the first worker binds the configured one, maybe 0; the rest reuse its port). */
  port: number
}

export type ToWorker =
  | { type: 'metrics'; id: number }
  | { type: 'close'; drainMs: number }
  /** Apply options the main thread validated (SIGHUP); answered with `reloaded`. */
  | { type: 'reload'; id: number; options: ReloadableOptions }

export type FromWorker =
  | { type: 'ready'; port: number }
  | { type: 'failed'; message: string }
  | { type: 'metrics'; id: number; index: number; metrics: unknown }
  | { type: 'draining' }
  /** `error` is the message of what failed (the worker then serves on with what it had). */
  | { type: 'reloaded'; id: number; index: number; error: string | undefined }
