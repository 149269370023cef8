import { randomBytes } from 'node:crypto'
import { readFile, writeFile, chmod, mkdir } from 'node:fs/promises'
import path from 'node:path'
import type { GatehouseConfig } from '../config/load.js'
import { UserFile } from '../security/users.js'

export interface DemoUser {
  user: string
  password: string
  file: string
}

/**
 * The demo user of `gatehouse start`: created once with a random password, kept in
 * <dataDir>/demo-user.json (mode 0600) where `npm run demo` finds it. The password is never
 * printed or logged.
 */
export async function ensureDemoUser(config: GatehouseConfig): Promise<DemoUser> {
  const file = path.join(config.dataDir, 'demo-user.json')
  const users = await UserFile.load(config.files.usersFile, { create: true })
  const existing = await readDemoUser(config).catch(() => undefined)
  if (existing && users.list().some((u) => u.name === existing.user)) return existing
  const user = config.demo.user
  const password = randomBytes(18).toString('base64url')
  if (users.list().some((u) => u.name === user)) await users.remove(user)
  await users.add(user, password, ['demo'])
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 })
  await writeFile(file, JSON.stringify({ user, password }, null, 2) + '\n', { mode: 0o600 })
  await chmod(file, 0o600)
  return { user, password, file }
}

export async function readDemoUser(config: GatehouseConfig): Promise<DemoUser> {
  const file = path.join(config.dataDir, 'demo-user.json')
  const v = JSON.parse(await readFile(file, 'utf8')) as { user?: unknown; password?: unknown }
  if (typeof v.user !== 'string' || typeof v.password !== 'string') throw new Error(`${file} is malformed`)
  return { user: v.user, password: v.password, file }
}
