/** Re-sealing stored secrets under the current master key after a rotation. */
import type { SqlValue } from '../sqlDb.js'
import type { QueryContext } from './common.js'

/** Every sealed column, with the primary key its AAD names. Constants: safe to put in SQL text. */
const SEALED = [
  { table: 'enrollments', pk: 'id', column: 'shared_key' },
  { table: 'sessions', pk: 'id_hash', column: 'keys' },
] as const

export const REENCRYPT_BATCH = 500

/**
 * Re-seal, under the box's current key, every row sealed with another key: batches of `batch`
 * rows, each in its own short transaction so the server keeps serving in between. Rows are
 * walked by primary key (keyset), so the loop ends even if some row cannot be rewritten. A row
 * whose key id changed meanwhile (another server re-sealing it) is left as it is.
 * Returns the number of rows rewritten. A row the ring cannot open rejects with SecretStoreError.
 */
export async function reencryptSecrets(c: QueryContext, batch = REENCRYPT_BATCH): Promise<number> {
  const current = c.box.currentKeyId
  let total = 0
  for (const t of SEALED) {
    let after: string | undefined
    for (;;) {
      const step = await c.db.transaction(async (tx) => {
        const params: SqlValue[] = [current]
        if (after !== undefined) params.push(after)
        params.push(batch)
        const rows = await tx.all<{ pk: string; secret: Buffer; key_id: string }>(
          `SELECT ${t.pk} AS pk, ${t.column} AS secret, key_id FROM ${t.table}
           WHERE key_id <> ?${after !== undefined ? ` AND ${t.pk} > ?` : ''} ORDER BY ${t.pk} LIMIT ?`,
          params,
        )
        let changed = 0
        for (const r of rows) {
          const ctx = { table: t.table, column: t.column, row: r.pk }
          const plain = c.box.open(r.secret, ctx)
          let sealed: Buffer
          try {
            sealed = c.box.seal(plain, ctx)
          } finally {
            plain.fill(0)
          }
          const { changes } = await tx.run(
            `UPDATE ${t.table} SET ${t.column} = ?, key_id = ? WHERE ${t.pk} = ? AND key_id = ?`,
            [sealed, c.box.keyIdOf(sealed), r.pk, r.key_id],
          )
          changed += changes
        }
        return { count: rows.length, last: rows.at(-1)?.pk, changed }
      })
      total += step.changed
      if (step.count < batch || step.last === undefined) break
      after = step.last
    }
  }
  return total
}
