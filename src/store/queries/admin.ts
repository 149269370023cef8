/** Administrators and their bearer tokens (stored by SHA-256 only). */
import type { AdminRole, AdminStore, AdminTokenRecord, AdminUserRecord } from '../types.js'
import { insertOrExists, type QueryContext } from './common.js'

interface UserRow {
  name: string
  password_hash: string
  role: AdminRole
  created_at: number
}

interface TokenRow {
  token_hash: string
  admin_name: string
  expires_at: number
  created_at: number
}

const TOKEN_COLUMNS = 'token_hash, admin_name, expires_at, created_at'

const token = (r: TokenRow): AdminTokenRecord => ({ tokenHash: r.token_hash, adminName: r.admin_name, expiresAt: r.expires_at, createdAt: r.created_at })

export class AdminQueries implements AdminStore {
  constructor(private readonly c: QueryContext) {}

  /** Insert, or change the password hash and role; an existing user keeps its createdAt. */
  async upsertAdminUser(u: AdminUserRecord): Promise<void> {
    await this.c.db.run(
      `INSERT INTO admin_users (name, password_hash, role, created_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash, role = excluded.role`,
      [u.name, u.passwordHash, u.role, u.createdAt],
    )
  }

  async getAdminUser(name: string): Promise<AdminUserRecord | undefined> {
    const r = await this.c.db.get<UserRow>('SELECT name, password_hash, role, created_at FROM admin_users WHERE name = ?', [name])
    return r && { name: r.name, passwordHash: r.password_hash, role: r.role, createdAt: r.created_at }
  }

  /** By name; never the password hash. */
  async listAdminUsers(): Promise<Omit<AdminUserRecord, 'passwordHash'>[]> {
    const rows = await this.c.db.all<Omit<UserRow, 'password_hash'>>('SELECT name, role, created_at FROM admin_users ORDER BY name')
    return rows.map((r) => ({ name: r.name, role: r.role, createdAt: r.created_at }))
  }

  /** The user's tokens go with it, in the same transaction. */
  async deleteAdminUser(name: string): Promise<boolean> {
    return this.c.db.transaction(async (tx) => {
      await tx.run('DELETE FROM admin_tokens WHERE admin_name = ?', [name])
      return (await tx.run('DELETE FROM admin_users WHERE name = ?', [name])).changes > 0
    })
  }

  async createAdminToken(t: AdminTokenRecord): Promise<void> {
    await insertOrExists(this.c.db.run(
      `INSERT INTO admin_tokens (${TOKEN_COLUMNS}) VALUES (?, ?, ?, ?)`, [t.tokenHash, t.adminName, t.expiresAt, t.createdAt],
    ), 'admin token already exists')
  }

  /** Returned even when expired: the caller compares expiresAt with its clock. */
  async getAdminToken(tokenHash: string): Promise<AdminTokenRecord | undefined> {
    const r = await this.c.db.get<TokenRow>(`SELECT ${TOKEN_COLUMNS} FROM admin_tokens WHERE token_hash = ?`, [tokenHash])
    return r && token(r)
  }

  async deleteAdminToken(tokenHash: string): Promise<boolean> {
    return (await this.c.db.run('DELETE FROM admin_tokens WHERE token_hash = ?', [tokenHash])).changes > 0
  }
}
