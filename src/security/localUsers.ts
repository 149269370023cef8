import { stat } from 'node:fs/promises'
import type { Authenticator } from './enrollment.js'
import { UserFile } from './users.js'

/**
 * The local user file as an Authenticator. `gatehouse users add|remove` edits the file while the
 * server runs; the file is re-read when its modification time or size changes (one stat per
 * sign-in, which is nothing next to the scrypt that follows).
 */
export class LocalUserAuthenticator implements Authenticator {
  private file: UserFile | undefined
  private stamp = ''

  constructor(private readonly path: string) {}

  private async current(): Promise<UserFile> {
    const st = await stat(this.path).catch(() => undefined)
    const stamp = st ? `${st.mtimeMs}:${st.size}` : 'missing'
    if (!this.file || stamp !== this.stamp) {
      this.file = await UserFile.load(this.path, { create: true })
      this.stamp = stamp
    }
    return this.file
  }

  async verify(name: string, password: string): Promise<{ name: string; groups: string[] } | null> {
    return (await this.current()).verify(name, password)
  }

  /** The user and groups without a password check (enrollment by activation code alone). */
  async lookup(name: string): Promise<{ name: string; groups: string[] } | null> {
    const u = (await this.current()).list().find((x) => x.name === name)
    return u ? { name: u.name, groups: u.groups } : null
  }

  /** The users of the file (admin API user listing); never their hashes. */
  async listUsers(): Promise<{ name: string; groups: string[] }[]> {
    return (await this.current()).list().map((u) => ({ name: u.name, groups: u.groups }))
  }
}
