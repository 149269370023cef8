import { pino, type Logger, type LoggerOptions, type DestinationStream } from 'pino'

/**
 * Paths redacted at the logger, whatever the caller passes (pino `lib/redaction.js`). Secrets
 * must not be logged in the first place; this is the second line of defence.
 */
export const REDACT_PATHS = [
  'password', '*.password', 'secret', '*.secret', 'token', '*.token', 'key', '*.key',
  'sharedKey', '*.sharedKey', 'sessionId', '*.sessionId', 'keys', '*.keys', 'proof', '*.proof',
  'authorization', '*.authorization', 'req.headers.authorization', 'req.headers["gatehouse-session"]',
  'headers["gatehouse-session"]', 'activationCode', '*.activationCode',
]

export interface LoggerSettings {
  level?: string
  name?: string
  /** Destination stream (tests pass one to read the log lines). Default stdout. */
  destination?: DestinationStream
}

export function createLogger(settings: LoggerSettings = {}): Logger {
  const options: LoggerOptions = {
    level: settings.level ?? process.env.GATEHOUSE_LOG_LEVEL ?? 'info',
    base: { pid: process.pid, ...(settings.name ? { component: settings.name } : {}) },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
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
  return settings.destination ? pino(options, settings.destination) : pino(options)
}

export type { Logger }
