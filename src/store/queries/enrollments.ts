/** Enrollments: one device's app bound to a user, with its sealed shared key. */
import type { EnrollmentRecord, EnrollmentStore, EnrollmentSummary } from '../types.js'
import { insertOrExists, pageSql, Where, type QueryContext } from './common.js'

interface SummaryRow {
  id: string
  user_name: string
  device_id: string
  app_id: string
  app_version: string
  created_at: number
  status: 'active' | 'revoked'
}
interface EnrollmentRow extends SummaryRow {
  shared_key: Buffer
}

const SUMMARY_COLUMNS = 'id, user_name, device_id, app_id, app_version, created_at, status'

const sealContext = (id: string) => ({ table: 'enrollments', column: 'shared_key', row: id })

function summary(r: SummaryRow): EnrollmentSummary {
  return {
    id: r.id, userName: r.user_name, deviceId: r.device_id, appId: r.app_id, appVersion: r.app_version,
    createdAt: r.created_at, status: r.status,
  }
}

export class EnrollmentQueries implements EnrollmentStore {
  constructor(private readonly c: QueryContext) {}

  async createEnrollment(rec: EnrollmentRecord): Promise<void> {
    const sealed = this.c.box.seal(rec.sharedKey, sealContext(rec.id))
    await insertOrExists(this.c.db.run(
      `INSERT INTO enrollments (id, user_name, device_id, app_id, app_version, shared_key, key_id, created_at, status)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [rec.id, rec.userName, rec.deviceId, rec.appId, rec.appVersion, sealed, this.c.box.keyIdOf(sealed), rec.createdAt, rec.status],
    ), 'enrollment already exists')
  }

  async getEnrollment(id: string): Promise<EnrollmentRecord | undefined> {
    const r = await this.c.db.get<EnrollmentRow>(`SELECT ${SUMMARY_COLUMNS}, shared_key FROM enrollments WHERE id = ?`, [id])
    if (!r) return undefined
    return { ...summary(r), sharedKey: this.c.box.open(r.shared_key, sealContext(r.id)) }
  }

  /** Revoking also closes the enrollment's open sessions, in the same transaction: revocation takes effect at once. */
  async revokeEnrollment(id: string): Promise<boolean> {
    return this.c.db.transaction(async (tx) => {
      const { changes } = await tx.run(`UPDATE enrollments SET status = 'revoked' WHERE id = ? AND status = 'active'`, [id])
      if (changes === 0) return false
      await tx.run('UPDATE sessions SET closed_at = ? WHERE enrollment_id = ? AND closed_at IS NULL', [this.c.now(), id])
      return true
    })
  }

  async countActiveEnrollments(): Promise<number> {
    const r = await this.c.db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM enrollments WHERE status = 'active'`)
    return Number(r?.n ?? 0)
  }

  /** Oldest first (created_at, then id). */
  async listEnrollments(filter: Parameters<EnrollmentStore['listEnrollments']>[0]): Promise<EnrollmentSummary[]> {
    const where = new Where()
      .eq('user_name', filter.userName).eq('device_id', filter.deviceId).eq('app_id', filter.appId).eq('status', filter.status)
    const page = pageSql(filter)
    const rows = await this.c.db.all<SummaryRow>(
      `SELECT ${SUMMARY_COLUMNS} FROM enrollments${where} ORDER BY created_at, id${page.sql}`, [...where.params, ...page.params],
    )
    return rows.map(summary)
  }

  async activeDeviceIds(userName: string): Promise<string[]> {
    const rows = await this.c.db.all<{ device_id: string }>(
      `SELECT DISTINCT device_id FROM enrollments WHERE user_name = ? AND status = 'active' ORDER BY device_id`, [userName],
    )
    return rows.map((r) => r.device_id)
  }
}
