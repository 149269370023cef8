/**
 * Versioned schema, written once for both SQLite and PostgreSQL. The only dialect difference we
 * need is the byte-string type, spelled `{{bytes}}` and replaced by `renderSql`.
 *
 * Rules: never edit a migration that has shipped; append a new one. Versions are consecutive.
 * Times are BIGINT milliseconds since the epoch (no time-zone or precision surprises).
 */

export type Dialect = 'sqlite' | 'postgres'

export interface Migration {
  version: number
  name: string
  sql: string
}

const BYTES: Record<Dialect, string> = { sqlite: 'BLOB', postgres: 'BYTEA' }

export function renderSql(sql: string, dialect: Dialect): string {
  return sql.replaceAll('{{bytes}}', BYTES[dialect])
}

/** Created before anything else; one row per applied migration. */
export const SCHEMA_MIGRATIONS_DDL = `
CREATE TABLE IF NOT EXISTS schema_migrations (
  version BIGINT PRIMARY KEY,
  name TEXT NOT NULL,
  applied_at BIGINT NOT NULL
)`

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'enrollments, sessions, nonces',
    sql: `
CREATE TABLE enrollments (
  id TEXT PRIMARY KEY,
  user_name TEXT NOT NULL,
  device_id TEXT NOT NULL,
  app_id TEXT NOT NULL,
  app_version TEXT NOT NULL,
  shared_key {{bytes}} NOT NULL,
  key_id TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('active', 'revoked'))
);
CREATE INDEX enrollments_user_name_idx ON enrollments (user_name);
CREATE INDEX enrollments_status_idx ON enrollments (status);
CREATE INDEX enrollments_key_id_idx ON enrollments (key_id);

-- id_hash = hex SHA-256 of the session id: a database leak does not hand out live session ids.
-- keys = sealed c2s || s2c.
CREATE TABLE sessions (
  id_hash TEXT PRIMARY KEY,
  enrollment_id TEXT NOT NULL REFERENCES enrollments (id) ON DELETE CASCADE,
  user_name TEXT NOT NULL,
  device_id TEXT NOT NULL,
  app_id TEXT NOT NULL,
  app_version TEXT NOT NULL,
  keys {{bytes}} NOT NULL,
  key_id TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  idle_timeout_ms BIGINT NOT NULL,
  last_seen_at BIGINT NOT NULL,
  closed_at BIGINT NULL
);
CREATE INDEX sessions_enrollment_id_idx ON sessions (enrollment_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
CREATE INDEX sessions_key_id_idx ON sessions (key_id);

CREATE TABLE nonces (
  scope TEXT NOT NULL,
  nonce_hash TEXT NOT NULL,
  expires_at BIGINT NOT NULL,
  PRIMARY KEY (scope, nonce_hash)
);
CREATE INDEX nonces_expires_at_idx ON nonces (expires_at);
`,
  },
]

export const LATEST_SCHEMA_VERSION: number = MIGRATIONS.reduce((max, m) => Math.max(max, m.version), 0)
