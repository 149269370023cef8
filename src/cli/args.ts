/**
 * A thin layer over node:util `parseArgs`: strict parsing (unknown options and stray positionals
 * are usage errors, exit 2), the global options every command accepts, and small helpers to read
 * typed values. parseArgs' own errors are turned into `UsageError`s so the CLI reports them the
 * same way as every other mistake.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { UsageError } from '../errors.js'

/** The `options` of node:util `parseArgs` (`{ dir: { type: 'string' }, force: { type: 'boolean' } }`). */
export type ParseArgsOptionsConfig = NonNullable<ParseArgsConfig['options']>

/** Options accepted by every command (before or after the command name). */
export const GLOBAL_OPTIONS = {
  config: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsOptionsConfig

export interface ParsedArgs {
  values: Record<string, unknown>
  positionals: string[]
}

/** Parse `args` against the command's options plus the global ones. */
export function parseCommandArgs(args: string[], options: ParseArgsOptionsConfig = {}, allowPositionals = true): ParsedArgs {
  try {
    const { values, positionals } = parseArgs({
      args,
      options: { ...GLOBAL_OPTIONS, ...options },
      strict: true,
      allowPositionals,
    })
    return { values: { ...values }, positionals }
  } catch (err) {
    if (isParseArgsError(err)) throw new UsageError(firstSentence(err.message))
    throw err
  }
}

function isParseArgsError(err: unknown): err is Error & { code: string } {
  const code = (err as { code?: unknown } | null)?.code
  return err instanceof Error && typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_')
}

/** parseArgs appends long advice on `--` to some messages; the first sentence says what is wrong. */
function firstSentence(message: string): string {
  const i = message.indexOf('. ')
  return (i > 0 ? message.slice(0, i) : message).replace(/\.$/, '')
}

/**
 * Leading global options given before the command name (`gatehouse --config x.yaml certs init`):
 * returns them separately from the rest, which starts with the command words.
 */
export function splitLeadingGlobals(argv: string[]): { globals: string[]; rest: string[] } {
  const globals: string[] = []
  let i = 0
  while (i < argv.length) {
    const a = argv[i]!
    if (a === '--config') {
      if (i + 1 >= argv.length) throw new UsageError("option '--config <file>' needs a value")
      globals.push(a, argv[i + 1]!)
      i += 2
    } else if (a.startsWith('--config=') || a === '--help' || a === '-h') {
      globals.push(a)
      i += 1
    } else {
      break
    }
  }
  return { globals, rest: argv.slice(i) }
}

/** Check the number of positionals; `names` are the placeholders shown in the message (`NAME`). */
export function expectPositionals(positionals: string[], names: string[], optional: string[] = []): string[] {
  if (positionals.length < names.length) {
    throw new UsageError(`missing ${names.slice(positionals.length).join(' ')}`)
  }
  if (positionals.length > names.length + optional.length) {
    const extra = positionals.slice(names.length + optional.length)
    throw new UsageError(`unexpected argument${extra.length > 1 ? 's' : ''}: ${extra.join(' ')}`)
  }
  return positionals
}

/** A string option (undefined when absent). */
export function stringOption(values: Record<string, unknown>, name: string): string | undefined {
  const v = values[name]
  if (v === undefined) return undefined
  if (typeof v !== 'string') throw new UsageError(`--${name} expects a value`)
  if (v.length === 0) throw new UsageError(`--${name} must not be empty`)
  return v
}

/** A repeatable string option (`--name a --name b`); [] when absent. */
export function stringListOption(values: Record<string, unknown>, name: string): string[] {
  const v = values[name]
  if (v === undefined) return []
  const list = Array.isArray(v) ? v : [v]
  for (const x of list) {
    if (typeof x !== 'string' || x.length === 0) throw new UsageError(`--${name} expects a non-empty value`)
  }
  return list as string[]
}

/** An integer option within bounds (undefined when absent). */
export function intOption(values: Record<string, unknown>, name: string, bounds: { min?: number; max?: number } = {}): number | undefined {
  const raw = stringOption(values, name)
  if (raw === undefined) return undefined
  if (!/^-?\d+$/.test(raw)) throw new UsageError(`--${name} must be an integer, got "${raw}"`)
  const n = Number(raw)
  if (bounds.min !== undefined && n < bounds.min) throw new UsageError(`--${name} must be >= ${bounds.min}, got ${n}`)
  if (bounds.max !== undefined && n > bounds.max) throw new UsageError(`--${name} must be <= ${bounds.max}, got ${n}`)
  return n
}

/** A boolean flag: true when given. */
export function flag(values: Record<string, unknown>, name: string): boolean {
  return values[name] === true
}
