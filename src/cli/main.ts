#!/usr/bin/env node
/**
 * The `gatehouse` command. Commands live in src/cli/cmd/*.ts, each module exporting an array of
 * commands; this file only collects them and runs the dispatcher (src/cli/commands.ts).
 */
import { adminCommands } from './cmd/admin.js'
import { backupCommands } from './cmd/backup.js'
import { certsCommands } from './cmd/certs.js'
import { configCommands } from './cmd/config.js'
import { usersCommands } from './cmd/users.js'
import { deviceCommands } from './cmd/device.js'
import { serverCommands } from './cmd/servers.js'
import { CommandRegistry, runCli, type Command } from './commands.js'

/** Order here is the order of `gatehouse --help`. Add new command sets to this array. */
const commandSets: Command[][] = [
  serverCommands,
  certsCommands,
  usersCommands,
  adminCommands,
  backupCommands,
  configCommands,
  deviceCommands,
]

const registry = new CommandRegistry()
for (const set of commandSets) registry.register(...set)

// `gatehouse config docs | head`: a closed pipe ends the output, it is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0)
  throw err
})

process.exitCode = await runCli(process.argv.slice(2), registry, {
  stdout: process.stdout,
  stderr: process.stderr,
  stdin: process.stdin,
  env: process.env,
})
