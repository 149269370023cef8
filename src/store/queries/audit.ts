/** The audit log: append-only (the database refuses UPDATE and DELETE on it, see migration 2). */
import type { AuditEvent, AuditStore } from '../types.js'
import { pageSql, toJson, Where, type QueryContext } from './common.js'

interface AuditRow {
  id: number
  at: number
  actor: string
  actor_role: string
  action: string
  target: string
  remote: string
  details: string
}

const COLUMNS = 'id, at, actor, actor_role, action, target, remote, details'

function event(r: AuditRow): AuditEvent {
  const details: unknown = JSON.parse(r.details)
  return {
    id: r.id, at: r.at, actor: r.actor, actorRole: r.actor_role, action: r.action, target: r.target, remote: r.remote,
    details: typeof details === 'object' && details !== null && !Array.isArray(details) ? details as Record<string, unknown> : {},
  }
}

export class AuditQueries implements AuditStore {
  constructor(private readonly c: QueryContext) {}

  /** Returns the id the store assigned (increasing). `e.id` is ignored. */
  async appendAudit(e: AuditEvent): Promise<number> {
    const r = await this.c.db.get<{ id: number }>(
      'INSERT INTO audit_log (at, actor, actor_role, action, target, remote, details) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id',
      [e.at, e.actor, e.actorRole, e.action, e.target, e.remote, toJson(e.details ?? {})],
    )
    return Number(r!.id)
  }

  /** In the order appended (id). `since` and `until` are both inclusive. */
  async queryAudit(filter: Parameters<AuditStore['queryAudit']>[0]): Promise<AuditEvent[]> {
    const where = new Where().eq('actor', filter.actor).eq('action', filter.action).eq('target', filter.target)
    if (filter.since !== undefined) where.add('at >= ?', filter.since)
    if (filter.until !== undefined) where.add('at <= ?', filter.until)
    const page = pageSql(filter)
    const rows = await this.c.db.all<AuditRow>(`SELECT ${COLUMNS} FROM audit_log${where} ORDER BY id${page.sql}`, [...where.params, ...page.params])
    return rows.map(event)
  }
}
