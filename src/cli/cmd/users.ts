/**
 * `gatehouse users add|list|remove`: the local user file (config `security.usersFile`, default
 * <dataDir>/users.json). Passwords come from standard input, $GATEHOUSE_PASSWORD or a prompt
 * without echo, never from the command line (it would show in `ps` and the shell history), and
 * are never printed.
 */
import { existsSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { Writable } from 'node:stream'
import { StringDecoder } from 'node:string_decoder'
import { loadConfig } from '../../config/load.js'
import { UsageError } from '../../errors.js'
import { UserFile } from '../../security/users.js'
import { expectPositionals, flag, stringListOption, stringOption } from '../args.js'
import { formatTable, type Command, type CommandContext } from '../commands.js'

/** Longer than any password the user file accepts: reading stops there. */
const MAX_LINE = 64 * 1024

/** Path of the user file from the configuration (`--config`, $GATEHOUSE_CONFIG or defaults). */
function usersPath(ctx: CommandContext): string {
  return loadConfig(stringOption(ctx.values, 'config')).files.usersFile
}

/** First line of a stream, without its line ending; reading stops at the first newline. */
export async function readFirstLine(input: NodeJS.ReadableStream): Promise<string> {
  const decoder = new StringDecoder('utf8')
  let text = ''
  for await (const chunk of input) {
    text += typeof chunk === 'string' ? chunk : decoder.write(chunk)
    const nl = text.indexOf('\n')
    if (nl >= 0) {
      text = text.slice(0, nl)
      break // ends the iteration, which releases the stream
    }
    if (text.length > MAX_LINE) throw new UsageError('the first line of standard input is too long')
  }
  text += decoder.end()
  return text.replace(/\r$/, '')
}

/** Ask a question on the terminal without echoing the answer. */
function promptHidden(ctx: CommandContext, question: string): Promise<string> {
  let muted = false
  const output = new Writable({
    write(chunk: Buffer | string, _enc, done) {
      if (!muted) ctx.stderr.write(chunk)
      done()
    },
  })
  const rl = createInterface({ input: ctx.stdin, output, terminal: true })
  return new Promise<string>((resolve, reject) => {
    let answered = false
    rl.on('SIGINT', () => rl.close())
    rl.on('close', () => {
      ctx.stderr.write('\n')
      if (!answered) reject(new UsageError('password entry cancelled'))
    })
    rl.question(question, (answer) => {
      answered = true
      rl.close()
      resolve(answer)
    })
    muted = true // the prompt is out; what the user types is not echoed
  })
}

/** The password from --password-stdin, $GATEHOUSE_PASSWORD or a prompt (also used by `admin add`). */
export async function readPassword(ctx: CommandContext): Promise<string> {
  if (flag(ctx.values, 'password-stdin')) {
    const line = await readFirstLine(ctx.stdin)
    if (line.length === 0) throw new UsageError('--password-stdin: standard input has no password on its first line')
    return line
  }
  const fromEnv = ctx.env.GATEHOUSE_PASSWORD
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv
  if (ctx.stdin.isTTY) {
    const first = await promptHidden(ctx, 'Password: ')
    const second = await promptHidden(ctx, 'Repeat password: ')
    if (first !== second) throw new UsageError('the passwords do not match')
    return first
  }
  throw new UsageError('no password: use --password-stdin, set GATEHOUSE_PASSWORD, or run in a terminal to be prompted')
}

export const usersAdd: Command = {
  name: 'users add',
  summary: 'Add a local user',
  usage: 'users add NAME [--group G ...] [--password-stdin]',
  details: [
    'Options:',
    '  --group G          add the user to group G (repeatable)',
    '  --password-stdin   read the password from the first line of standard input',
    '',
    'Without --password-stdin the password is taken from $GATEHOUSE_PASSWORD or, in a',
    'terminal, asked twice without echo. Passwords are 8 to 1024 characters and are stored',
    'as scrypt hashes in the user file (security.usersFile).',
  ].join('\n'),
  options: {
    group: { type: 'string', multiple: true, short: 'g' },
    'password-stdin': { type: 'boolean' },
  },
  async run(ctx) {
    const [name] = expectPositionals(ctx.positionals, ['NAME'])
    const groups = stringListOption(ctx.values, 'group')
    const path = usersPath(ctx) // a configuration error shows before the password is asked
    const password = await readPassword(ctx)
    const file = await UserFile.load(path, { create: true })
    await file.add(name!, password, groups)
    const g = groups.length > 0 ? ` (groups: ${[...new Set(groups)].join(', ')})` : ''
    ctx.stdout.write(`added user ${name}${g} to ${file.path}\n`)
  },
}

export const usersList: Command = {
  name: 'users list',
  summary: 'List the local users',
  usage: 'users list',
  async run(ctx) {
    expectPositionals(ctx.positionals, [])
    const path = usersPath(ctx)
    // No file yet simply means no users; an unreadable or malformed one is an error.
    const users = existsSync(path) ? (await UserFile.load(path)).list() : []
    if (users.length === 0) {
      ctx.stdout.write(`no users in ${path}\n`)
      return
    }
    const rows = users.map((u) => [u.name, u.groups.length > 0 ? u.groups.join(',') : '-', u.createdAt])
    ctx.stdout.write(`${formatTable(['NAME', 'GROUPS', 'CREATED'], rows)}\n`)
  },
}

export const usersRemove: Command = {
  name: 'users remove',
  summary: 'Remove a local user',
  usage: 'users remove NAME',
  async run(ctx) {
    const [name] = expectPositionals(ctx.positionals, ['NAME'])
    const file = await UserFile.load(usersPath(ctx))
    if (!(await file.remove(name!))) {
      ctx.stderr.write(`gatehouse: no user named "${name}" in ${file.path}\n`)
      return 1
    }
    ctx.stdout.write(`removed user ${name} from ${file.path}\n`)
  },
}

export const usersCommands: Command[] = [usersAdd, usersList, usersRemove]
