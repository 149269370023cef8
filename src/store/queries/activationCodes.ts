/** One-time enrollment codes, stored by their SHA-256 only. */
import type { ActivationCodeRecord, ActivationCodeStore } from '../types.js'
import { insertOrExists, pageSql, Where, type QueryContext } from './common.js'

interface CodeRow {
  code_hash: string
  user_name: string
  app_id: string | null
  expires_at: number
  used_at: number | null
  created_by: string
  created_at: number
}

const COLUMNS = 'code_hash, user_name, app_id, expires_at, used_at, created_by, created_at'

function code(r: CodeRow): ActivationCodeRecord {
  return {
    codeHash: r.code_hash, userName: r.user_name, appId: r.app_id, expiresAt: r.expires_at, usedAt: r.used_at,
    createdBy: r.created_by, createdAt: r.created_at,
  }
}

export class ActivationCodeQueries implements ActivationCodeStore {
  constructor(private readonly c: QueryContext) {}

  async createActivationCode(a: ActivationCodeRecord): Promise<void> {
    await insertOrExists(this.c.db.run(
      `INSERT INTO activation_codes (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)`,
      [a.codeHash, a.userName, a.appId, a.expiresAt, a.usedAt, a.createdBy, a.createdAt],
    ), 'activation code already exists')
  }

  /**
   * One conditional UPDATE: of any number of concurrent callers exactly one gets the row (the
   * others find used_at already set, PostgreSQL re-checking the condition after the row lock).
   */
  async consumeActivationCode(codeHash: string, now: number): Promise<ActivationCodeRecord | undefined> {
    const r = await this.c.db.get<CodeRow>(
      `UPDATE activation_codes SET used_at = ? WHERE code_hash = ? AND used_at IS NULL AND expires_at > ? RETURNING ${COLUMNS}`,
      [now, codeHash, now],
    )
    return r && code(r)
  }

  /** Newest first. */
  async listActivationCodes(filter: Parameters<ActivationCodeStore['listActivationCodes']>[0]): Promise<ActivationCodeRecord[]> {
    const where = new Where().eq('user_name', filter.userName)
    const page = pageSql(filter)
    const rows = await this.c.db.all<CodeRow>(
      `SELECT ${COLUMNS} FROM activation_codes${where} ORDER BY created_at DESC, code_hash${page.sql}`, [...where.params, ...page.params],
    )
    return rows.map(code)
  }
}
