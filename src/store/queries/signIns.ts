/** The last sign-in of each enrollment (re-sign-in interval, group policies at session open). */
import type { SignInMethod, SignInRecord, SignInStore } from '../types.js'
import { parseStringArray, toJson, type QueryContext } from './common.js'

interface SignInRow {
  enrollment_id: string
  method: SignInMethod
  user_groups: string
  signed_in_at: number
}

export class SignInQueries implements SignInStore {
  constructor(private readonly c: QueryContext) {}

  async recordSignIn(s: SignInRecord): Promise<void> {
    await this.c.db.run(
      `INSERT INTO enrollment_sign_ins (enrollment_id, method, user_groups, signed_in_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (enrollment_id) DO UPDATE SET method = excluded.method, user_groups = excluded.user_groups,
       signed_in_at = excluded.signed_in_at`,
      [s.enrollmentId, s.method, toJson(s.groups), s.at],
    )
  }

  async lastSignIn(enrollmentId: string): Promise<SignInRecord | undefined> {
    const r = await this.c.db.get<SignInRow>(
      'SELECT enrollment_id, method, user_groups, signed_in_at FROM enrollment_sign_ins WHERE enrollment_id = ?', [enrollmentId],
    )
    return r && { enrollmentId: r.enrollment_id, method: r.method, groups: parseStringArray(r.user_groups), at: Number(r.signed_in_at) }
  }
}
