import { chmodSync, closeSync, mkdirSync, openSync } from 'node:fs'
import { dirname } from 'node:path'
import { destination, multistream, pino, type Logger, type LoggerOptions, type DestinationStream } from 'pino'
import { RecentErrors } from './recentErrors.js'

/**
 * Paths redacted at the logger, whatever the caller passes (pino `lib/redaction.js`). Secrets
 * must not be logged in the first place; this is the second line of defence.
 */
export const REDACT_PATHS = [
  'password', '*.password', 'secret', '*.secret', 'token', '*.token', 'key', '*.key',
  'sharedKey', '*.sharedKey', 'sessionId', '*.sessionId', 'keys', '*.keys', 'proof', '*.proof',
  'authorization', '*.authorization', 'req.headers.authorization', 'req.headers["gatehouse-session"]',
  'headers["gatehouse-session"]', 'activationCode', '*.activationCode',
  'cookie', '*.cookie', 'req.headers.cookie', 'csrfToken', '*.csrfToken',
]

export interface LoggerSettings {
  level?: string
  name?: string
  /** Destination stream (tests pass one to read the log lines). Default stdout. */
  destination?: DestinationStream
  /** Also append every line to this file (created mode 0600; config `log.file`). */
  file?: string
}

/** The ring of recent warn/error lines of each logger made here (children share their root's). */
const rings = new WeakMap<Logger, RecentErrors>()

/** The recent warn/error lines of a logger made by createLogger (for the admin log view). */
export function recentErrorsOf(log: Logger): RecentErrors | undefined {
  return rings.get(log)
}

/** A pino file destination whose file is 0600 from its first byte (and made 0600 if it existed). */
function fileDestination(file: string): DestinationStream {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 })
  closeSync(openSync(file, 'a', 0o600))
  chmodSync(file, 0o600)
  return destination({ dest: file, append: true, sync: false, mode: 0o600 })
}

export function createLogger(settings: LoggerSettings = {}): Logger {
  const ring = new RecentErrors()
  const options: LoggerOptions = {
    level: settings.level ?? process.env.GATEHOUSE_LOG_LEVEL ?? 'info',
    base: { pid: process.pid, ...(settings.name ? { component: settings.name } : {}) },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    // The final, redacted line also feeds the ring of recent warnings and errors: one anchored
    // regex test per line, a parse only for warn and worse.
    hooks: { streamWrite: (line) => { ring.offer(line); return line } },
    serializers: {
      // Never a stack trace with request data in it: log type, code and message only.
      err: (e: unknown) => {
        if (e && typeof e === 'object') {
          const x = e as { name?: string; code?: string; message?: string }
          return { type: x.name, code: x.code, message: x.message }
        }
        return { message: String(e) }
      },
    },
  }
  let dest: DestinationStream | undefined = settings.destination
  if (settings.file) {
    const file = fileDestination(settings.file)
    dest = multistream([{ stream: dest ?? destination(1), level: 'trace' }, { stream: file, level: 'trace' }])
  }
  const log = dest ? pino(options, dest) : pino(options)
  rings.set(log, ring)
  return log
}

export type { Logger }
