/** Sessions (stored by the SHA-256 of their id, keys sealed as c2s || s2c) and one-time nonces. */
import { MalformedError, SecretStoreError } from '../../errors.js'
import type { SessionRecord, SessionStore, SessionSummary } from '../types.js'
import { insertOrExists, pageSql, sha256Hex, Where, type QueryContext } from './common.js'

/** Session ids are bearer secrets: only their hash is stored and used as the key. */
export const sessionIdHash = sha256Hex

interface SummaryRow {
  id_hash: string
  enrollment_id: string
  user_name: string
  device_id: string
  app_id: string
  app_version: string
  created_at: number
  expires_at: number
  last_seen_at: number
  closed_at: number | null
}
interface SessionRow extends SummaryRow {
  keys: Buffer
  idle_timeout_ms: number
}

const SUMMARY_COLUMNS = 'id_hash, enrollment_id, user_name, device_id, app_id, app_version, created_at, expires_at, last_seen_at, closed_at'

const sealContext = (idHash: string) => ({ table: 'sessions', column: 'keys', row: idHash })

function summary(r: SummaryRow): SessionSummary {
  return {
    idHash: r.id_hash, enrollmentId: r.enrollment_id, userName: r.user_name, deviceId: r.device_id, appId: r.app_id,
    appVersion: r.app_version, createdAt: r.created_at, expiresAt: r.expires_at, lastSeenAt: r.last_seen_at, closedAt: r.closed_at,
  }
}

export class SessionQueries implements SessionStore {
  constructor(private readonly c: QueryContext) {}

  async createSession(rec: SessionRecord): Promise<void> {
    if (rec.c2sKey.length !== rec.s2cKey.length) throw new SecretStoreError('session keys must have equal lengths')
    const idHash = sessionIdHash(rec.id)
    const plain = Buffer.concat([rec.c2sKey, rec.s2cKey])
    let sealed: Buffer
    try {
      sealed = this.c.box.seal(plain, sealContext(idHash))
    } finally {
      plain.fill(0)
    }
    await insertOrExists(this.c.db.run(
      `INSERT INTO sessions (id_hash, enrollment_id, user_name, device_id, app_id, app_version, keys, key_id,
         created_at, expires_at, idle_timeout_ms, last_seen_at, closed_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [idHash, rec.enrollmentId, rec.userName, rec.deviceId, rec.appId, rec.appVersion, sealed, this.c.box.keyIdOf(sealed),
        rec.createdAt, rec.expiresAt, rec.idleTimeoutMs, rec.lastSeenAt, rec.closedAt],
    ), 'session already exists') // never the id: it is a secret
  }

  async getSession(id: string): Promise<SessionRecord | undefined> {
    const r = await this.c.db.get<SessionRow>(`SELECT ${SUMMARY_COLUMNS}, keys, idle_timeout_ms FROM sessions WHERE id_hash = ?`, [sessionIdHash(id)])
    if (!r) return undefined
    const keys = this.c.box.open(r.keys, sealContext(r.id_hash))
    const half = keys.length / 2
    return {
      id, enrollmentId: r.enrollment_id, userName: r.user_name, deviceId: r.device_id, appId: r.app_id,
      appVersion: r.app_version, c2sKey: keys.subarray(0, half), s2cKey: keys.subarray(half),
      createdAt: r.created_at, expiresAt: r.expires_at, idleTimeoutMs: r.idle_timeout_ms,
      lastSeenAt: r.last_seen_at, closedAt: r.closed_at,
    }
  }

  /** Never moves last_seen_at backwards (concurrent requests may finish out of order). */
  async touchSession(id: string, now: number): Promise<void> {
    await this.c.db.run('UPDATE sessions SET last_seen_at = ? WHERE id_hash = ? AND closed_at IS NULL AND last_seen_at < ?', [now, sessionIdHash(id), now])
  }

  async closeSession(id: string, now: number): Promise<boolean> {
    const { changes } = await this.c.db.run('UPDATE sessions SET closed_at = ? WHERE id_hash = ? AND closed_at IS NULL', [now, sessionIdHash(id)])
    return changes > 0
  }

  async closeSessionsWhere(filter: Parameters<SessionStore['closeSessionsWhere']>[0], now: number): Promise<string[]> {
    const where = new Where().eq('user_name', filter.userName).eq('device_id', filter.deviceId).eq('enrollment_id', filter.enrollmentId)
    // An empty filter would close every session of every user: refused, never guessed.
    if (where.empty) throw new MalformedError('closeSessionsWhere needs userName, deviceId or enrollmentId')
    where.add('closed_at IS NULL')
    const rows = await this.c.db.all<{ id_hash: string }>(`UPDATE sessions SET closed_at = ?${where} RETURNING id_hash`, [now, ...where.params])
    return rows.map((r) => r.id_hash).sort()
  }

  /** Oldest first. `open`: true = not closed (expired but unpurged sessions included), false = closed. */
  async listSessions(filter: Parameters<SessionStore['listSessions']>[0]): Promise<SessionSummary[]> {
    const where = new Where().eq('user_name', filter.userName).eq('device_id', filter.deviceId)
    if (filter.open !== undefined) where.add(filter.open ? 'closed_at IS NULL' : 'closed_at IS NOT NULL')
    const page = pageSql(filter)
    const rows = await this.c.db.all<SummaryRow>(
      `SELECT ${SUMMARY_COLUMNS} FROM sessions${where} ORDER BY created_at, id_hash${page.sql}`, [...where.params, ...page.params],
    )
    return rows.map(summary)
  }

  /**
   * Insert, or take over an expired entry not yet purged; a live entry makes changes = 0. One
   * statement, so atomic on both engines. The nonce is hashed: client-supplied values of any size
   * are stored with a fixed one.
   */
  async rememberNonce(scope: string, nonce: string, expiresAt: number): Promise<boolean> {
    const { changes } = await this.c.db.run(
      `INSERT INTO nonces (scope, nonce_hash, expires_at) VALUES (?, ?, ?)
       ON CONFLICT (scope, nonce_hash) DO UPDATE SET expires_at = excluded.expires_at
       WHERE nonces.expires_at <= ?`,
      [scope, sha256Hex(nonce), expiresAt, this.c.now()],
    )
    return changes > 0
  }

  /** Closed and idle-expired sessions can never be used again, so their sealed keys go too. */
  async purgeExpired(now: number): Promise<number> {
    return this.c.db.transaction(async (tx) => {
      const sessions = await tx.run(
        'DELETE FROM sessions WHERE expires_at <= ? OR closed_at IS NOT NULL OR last_seen_at + idle_timeout_ms <= ?', [now, now],
      )
      const nonces = await tx.run('DELETE FROM nonces WHERE expires_at <= ?', [now])
      return sessions.changes + nonces.changes
    })
  }
}
