/** The revocation log proxies follow by sequence number. */
import { MalformedError } from '../../errors.js'
import { advisoryLock } from '../sqlDb.js'
import type { RevocationKind, RevocationRecord, RevocationStore } from '../types.js'
import type { QueryContext } from './common.js'

/** target is stored as UTF-8 bytes: device targets contain a NUL, which PostgreSQL TEXT refuses. */
interface RevocationRow {
  seq: number
  at: number
  kind: RevocationKind
  target: Buffer
}

export class RevocationQueries implements RevocationStore {
  constructor(private readonly c: QueryContext) {}

  /**
   * Appends are serialised (a PostgreSQL advisory lock; SQLite has one writer anyway) so entries
   * become visible in seq order: a follower that has seen seq N never later finds a smaller one
   * committed, which two concurrent sequence draws would otherwise allow.
   */
  async appendRevocation(kind: RevocationKind, target: string, now: number): Promise<number> {
    return this.c.db.transaction(async (tx) => {
      await advisoryLock(tx, 'revocations')
      const r = await tx.get<{ seq: number }>('INSERT INTO revocations (at, kind, target) VALUES (?, ?, ?) RETURNING seq', [now, kind, Buffer.from(target, 'utf8')])
      return Number(r!.seq)
    })
  }

  /** Entries after `seq`, oldest first, at most `limit`. */
  async revocationsSince(seq: number, limit: number): Promise<RevocationRecord[]> {
    if (!Number.isSafeInteger(limit) || limit < 0) throw new MalformedError('limit must be a non-negative integer')
    if (!Number.isSafeInteger(seq)) throw new MalformedError('seq must be an integer')
    const rows = await this.c.db.all<RevocationRow>('SELECT seq, at, kind, target FROM revocations WHERE seq > ? ORDER BY seq LIMIT ?', [seq, limit])
    return rows.map((r) => ({ seq: r.seq, at: r.at, kind: r.kind, target: r.target.toString('utf8') }))
  }

  /** 0 when the log is empty. */
  async latestRevocationSeq(): Promise<number> {
    const r = await this.c.db.get<{ seq: number | null }>('SELECT MAX(seq) AS seq FROM revocations')
    return Number(r?.seq ?? 0)
  }
}
