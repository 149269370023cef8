/**
 * The command registry and dispatcher of the `gatehouse` CLI.
 *
 * A command is a plain object registered under its name; commands with sub-verbs are named with a
 * space (`users add`) and found by the longest match of the leading words. The dispatcher owns
 * help, usage errors and error reporting so that every command behaves the same:
 *
 * - `gatehouse --help`, `gatehouse help`: list of commands; `gatehouse <cmd> --help`,
 *   `gatehouse help <cmd>`: that command's usage. Exit 0.
 * - unknown command or bad arguments: exit 2 with a hint.
 * - a `GatehouseError`: `gatehouse: <message> (<code>)`, exit 1 (`UsageError`: exit 2).
 * - anything else: `gatehouse: unexpected error: <message>`, exit 1; the stack only with
 *   GATEHOUSE_DEBUG=1 (it may show paths and internals that are noise to an operator).
 */
import { GatehouseError, UsageError } from '../errors.js'
import { parseCommandArgs, splitLeadingGlobals, type ParseArgsOptionsConfig } from './args.js'

export interface CommandContext {
  /** Arguments after the command words (global options given before the command included). */
  args: string[]
  /** Parsed options: the command's own plus the global `config` (and `help`). */
  values: Record<string, unknown>
  positionals: string[]
  stdout: NodeJS.WritableStream
  stderr: NodeJS.WritableStream
  /** Standard input (`users add --password-stdin`); `isTTY` when it is a terminal. */
  stdin: NodeJS.ReadableStream & { isTTY?: boolean }
  /** Environment variables (process.env in the real CLI). */
  env: NodeJS.ProcessEnv
}

export interface Command {
  /** Command words, space separated: `certs init`. */
  name: string
  /** One line for the command list. */
  summary: string
  /** Synopsis, with or without the leading `gatehouse`: `users add NAME [--group G ...]`. */
  usage: string
  /** Longer help shown by `gatehouse <cmd> --help` (options, examples). */
  details?: string
  /** The command's own options; `--config` and `--help` are added to every command. */
  options?: ParseArgsOptionsConfig
  /** Exit code; undefined means 0. */
  run(ctx: CommandContext): Promise<number | void>
}

export interface CliIo {
  stdout: NodeJS.WritableStream
  stderr: NodeJS.WritableStream
  stdin: NodeJS.ReadableStream & { isTTY?: boolean }
  env: NodeJS.ProcessEnv
}

const NAME_RE = /^[a-z][a-z0-9-]*( [a-z][a-z0-9-]*)*$/
const BIN = 'gatehouse'

export class CommandRegistry {
  readonly #commands = new Map<string, Command>()

  /** Add commands; a name registered twice is a programming error. */
  register(...commands: Command[]): this {
    for (const c of commands) {
      if (!NAME_RE.test(c.name)) throw new TypeError(`invalid command name "${c.name}"`)
      if (this.#commands.has(c.name)) throw new TypeError(`command "${c.name}" is registered twice`)
      this.#commands.set(c.name, c)
    }
    return this
  }

  get(name: string): Command | undefined {
    return this.#commands.get(name)
  }

  /** Commands in registration order. */
  list(): Command[] {
    return [...this.#commands.values()]
  }

  /** Longest registered name made of the leading words of `argv` (stops at the first option). */
  resolve(argv: string[]): { command: Command; consumed: number } | undefined {
    const words: string[] = []
    for (const a of argv) {
      if (a.startsWith('-')) break
      words.push(a)
    }
    for (let n = words.length; n > 0; n--) {
      const command = this.#commands.get(words.slice(0, n).join(' '))
      if (command) return { command, consumed: n }
    }
    return undefined
  }

  /** Commands under a group word (`users` → `users add`, `users list`, ...). */
  group(prefix: string): Command[] {
    return this.list().filter((c) => c.name.startsWith(`${prefix} `))
  }
}

function synopsis(c: Command): string {
  return c.usage.startsWith(`${BIN} `) ? c.usage : `${BIN} ${c.usage}`
}

/** Aligned two-column text (`  name   summary`). */
function columns(rows: Array<[string, string]>, indent = '  '): string {
  const width = Math.max(0, ...rows.map(([a]) => a.length))
  return rows.map(([a, b]) => `${indent}${a.padEnd(width)}  ${b}`.trimEnd()).join('\n')
}

/** A plain text table with a header row, columns padded to their widest cell. */
export function formatTable(header: string[], rows: string[][]): string {
  const all = [header, ...rows]
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)))
  return all.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n')
}

const GLOBAL_HELP = columns([
  ['--config FILE', 'configuration file (JSON or YAML); default $GATEHOUSE_CONFIG, else built-in defaults'],
  ['-h, --help', 'show help'],
])

export function mainHelp(registry: CommandRegistry): string {
  return [
    'Gatehouse: the gateway through which mobile devices reach the intranet.',
    '',
    `Usage: ${BIN} <command> [options]`,
    '',
    'Commands:',
    columns(registry.list().map((c) => [c.name, c.summary])),
    '',
    'Global options:',
    GLOBAL_HELP,
    '',
    `Run '${BIN} <command> --help' for the options of a command.`,
    '',
  ].join('\n')
}

export function commandHelp(c: Command): string {
  return [
    `Usage: ${synopsis(c)}`,
    '',
    c.summary,
    ...(c.details ? ['', c.details.trimEnd()] : []),
    '',
    'Global options:',
    GLOBAL_HELP,
    '',
  ].join('\n')
}

function groupHelp(prefix: string, commands: Command[]): string {
  return [
    `Usage: ${BIN} ${prefix} <command> [options]`,
    '',
    'Commands:',
    columns(commands.map((c) => [c.name, c.summary])),
    '',
    `Run '${BIN} ${prefix} <command> --help' for the options of a command.`,
    '',
  ].join('\n')
}

/** Help requested among the arguments (before a `--` terminator)? */
function wantsHelp(args: string[]): boolean {
  for (const a of args) {
    if (a === '--') return false
    if (a === '--help' || a === '-h') return true
  }
  return false
}

function distance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!
    prev[0] = i
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j]!
      prev[j] = Math.min(prev[j]! + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1))
      diag = tmp
    }
  }
  return prev[b.length]!
}

/** Closest command names to what was typed, for a "did you mean" hint. */
function suggest(registry: CommandRegistry, typed: string): string[] {
  const commands = registry.list().map((c) => c.name)
  const groups = [...new Set(commands.filter((n) => n.includes(' ')).map((n) => n.split(' ')[0]!))]
  const words = typed.split(' ')
  // A group name is a candidate only when one word was typed (`user` → `users`).
  const names = words.length === 1 ? [...groups, ...commands] : commands
  const scored = names.map((name) => {
    const n = name.split(' ')
    // Compare with as many typed words as the candidate has.
    return { name, d: distance(words.slice(0, n.length).join(' '), name) }
  })
  const best = Math.min(...scored.map((s) => s.d))
  return best <= 2 ? scored.filter((s) => s.d === best).map((s) => s.name).slice(0, 3) : []
}

/** Print an error the CLI way and return the exit code. */
export function reportError(err: unknown, io: Pick<CliIo, 'stderr' | 'env'>, hint?: string): number {
  const debug = io.env.GATEHOUSE_DEBUG === '1'
  let code: number
  if (err instanceof GatehouseError) {
    io.stderr.write(`${BIN}: ${err.message} (${err.code})\n`)
    code = err instanceof UsageError ? 2 : 1
    if (code === 2 && hint) io.stderr.write(`${hint}\n`)
  } else {
    const message = err instanceof Error ? err.message : String(err)
    io.stderr.write(`${BIN}: unexpected error: ${message}\n`)
    code = 1
  }
  if (debug && err instanceof Error && err.stack) {
    io.stderr.write(`${err.stack}\n`)
    if (err.cause instanceof Error && err.cause.stack) io.stderr.write(`caused by: ${err.cause.stack}\n`)
  }
  return code
}

/** Run the CLI with `argv` (without `node` and the script); resolves to the exit code. Never throws. */
export async function runCli(argv: string[], registry: CommandRegistry, io: CliIo): Promise<number> {
  const out = (text: string) => io.stdout.write(text)
  const topHint = `Run '${BIN} --help' for the list of commands.`
  let globals: string[]
  let rest: string[]
  try {
    ({ globals, rest } = splitLeadingGlobals(argv))
  } catch (err) {
    return reportError(err, io, topHint)
  }

  if (rest.length === 0) {
    if (wantsHelp(globals)) {
      out(mainHelp(registry))
      return 0
    }
    io.stderr.write(mainHelp(registry))
    return 2
  }

  if (rest[0] === 'help') {
    const topic = rest.slice(1).filter((a) => !a.startsWith('-'))
    if (topic.length === 0) {
      out(mainHelp(registry))
      return 0
    }
    const found = registry.resolve(topic)
    if (found && found.consumed === topic.length) {
      out(commandHelp(found.command))
      return 0
    }
    const group = registry.group(topic.join(' '))
    if (group.length > 0) {
      out(groupHelp(topic.join(' '), group))
      return 0
    }
    return unknownCommand(topic.join(' '))
  }

  const found = registry.resolve(rest)
  if (!found && rest[0]!.startsWith('-')) {
    return reportError(new UsageError(`unknown option ${rest[0]!.split('=')[0]}`), io, topHint)
  }
  if (!found) {
    const words = rest.filter((a, i) => i < 2 && !a.startsWith('-'))
    const group = registry.group(words[0] ?? '')
    if (group.length > 0) {
      if (words.length === 1) {
        if (wantsHelp([...globals, ...rest])) {
          out(groupHelp(words[0]!, group))
          return 0
        }
        io.stderr.write(`${BIN}: ${words[0]} needs a command\n\n`)
        io.stderr.write(groupHelp(words[0]!, group))
        return 2
      }
      return unknownCommand(words.join(' '), `Run '${BIN} ${words[0]} --help' for its commands.`)
    }
    return unknownCommand(words[0] ?? rest[0]!, topHint, words.join(' '))
  }

  const { command, consumed } = found
  const args = [...globals, ...rest.slice(consumed)]
  if (wantsHelp(args)) {
    out(commandHelp(command))
    return 0
  }
  const usageHint = `usage: ${synopsis(command)}\nRun '${BIN} ${command.name} --help' for details.`
  try {
    const { values, positionals } = parseCommandArgs(args, command.options)
    const result = await command.run({ args, values, positionals, stdout: io.stdout, stderr: io.stderr, stdin: io.stdin, env: io.env })
    return typeof result === 'number' ? result : 0
  } catch (err) {
    return reportError(err, io, usageHint)
  }

  function unknownCommand(typed: string, hint = topHint, typedWords = typed): number {
    const similar = suggest(registry, typedWords)
    const mean = similar.length > 0 ? `Did you mean: ${similar.map((s) => `${BIN} ${s}`).join(', ')}?\n` : ''
    return reportError(new UsageError(`unknown command "${typed}"`), io, `${mean}${hint}`)
  }
}
