/**
 * Versioned schema, written once for both SQLite and PostgreSQL. Dialect differences are spelled
 * as aliases replaced by `renderSql`: `{{bytes}}` (BLOB / BYTEA) and `{{serial}}` (an
 * auto-incrementing integer primary key). What cannot be aliased (triggers) goes in a migration's
 * `perDialect` SQL, run after its shared `sql`.
 *
 * Rules: never edit a migration that has shipped; append a new one. Versions are consecutive.
 * Times are BIGINT milliseconds since the epoch (no time-zone or precision surprises). JSON is
 * stored as TEXT. Never put a `?` in migration SQL (see sqlDb.ts).
 */

export type Dialect = 'sqlite' | 'postgres'

export interface Migration {
  version: number
  name: string
  /** Shared SQL, with aliases. */
  sql: string
  /** Run after `sql`, for what differs between the engines. */
  perDialect?: Record<Dialect, string>
}

const ALIASES: Record<Dialect, Record<string, string>> = {
  sqlite: { '{{bytes}}': 'BLOB', '{{serial}}': 'INTEGER PRIMARY KEY AUTOINCREMENT' },
  postgres: { '{{bytes}}': 'BYTEA', '{{serial}}': 'BIGSERIAL PRIMARY KEY' },
}

export function renderSql(sql: string, dialect: Dialect): string {
  let out = sql
  for (const [alias, text] of Object.entries(ALIASES[dialect])) out = out.replaceAll(alias, text)
  return out
}

/** Everything a migration runs on this engine, in order. */
export function renderMigration(m: Migration, dialect: Dialect): string {
  return renderSql(m.sql, dialect) + (m.perDialect ? `;\n${m.perDialect[dialect]}` : '')
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
  {
    version: 2,
    name: 'catalog, policies, activation codes, devices, audit log, admins, revocations',
    sql: `
CREATE INDEX enrollments_device_id_idx ON enrollments (device_id);
CREATE INDEX sessions_user_name_idx ON sessions (user_name);
CREATE INDEX sessions_device_id_idx ON sessions (device_id);

-- allowed_versions, routes, user_groups: JSON arrays of strings.
CREATE TABLE apps (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  min_version TEXT NULL,
  allowed_versions TEXT NOT NULL,
  routes TEXT NOT NULL,
  user_groups TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);

CREATE TABLE app_packages (
  app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
  version TEXT NOT NULL,
  file_name TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  size BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (app_id, version)
);

CREATE TABLE policies (
  id TEXT PRIMARY KEY,
  scope TEXT NOT NULL CHECK (scope IN ('global', 'group', 'app')),
  scope_id TEXT NOT NULL,
  max_session_lifetime_seconds BIGINT NULL,
  idle_timeout_seconds BIGINT NULL,
  reauth_interval_seconds BIGINT NULL,
  max_devices_per_user BIGINT NULL,
  updated_at BIGINT NOT NULL
);
CREATE INDEX policies_scope_idx ON policies (scope, scope_id);

-- code_hash = hex SHA-256 of the one-time code.
CREATE TABLE activation_codes (
  code_hash TEXT PRIMARY KEY,
  user_name TEXT NOT NULL,
  app_id TEXT NULL,
  expires_at BIGINT NOT NULL,
  used_at BIGINT NULL,
  created_by TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE INDEX activation_codes_user_name_idx ON activation_codes (user_name);
CREATE INDEX activation_codes_expires_at_idx ON activation_codes (expires_at);

CREATE TABLE devices (
  user_name TEXT NOT NULL,
  device_id TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('active', 'locked', 'wiped', 'retired')),
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (user_name, device_id)
);
CREATE INDEX devices_state_idx ON devices (state);

CREATE TABLE device_commands (
  id TEXT PRIMARY KEY,
  user_name TEXT NOT NULL,
  device_id TEXT NOT NULL,
  app_id TEXT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('lock', 'unlock', 'wipe', 'retire')),
  state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'acknowledged')),
  issued_by TEXT NOT NULL,
  issued_at BIGINT NOT NULL,
  delivered_at BIGINT NULL,
  acknowledged_at BIGINT NULL
);
CREATE INDEX device_commands_device_idx ON device_commands (user_name, device_id);
CREATE INDEX device_commands_state_idx ON device_commands (state);

-- Append-only (triggers below). details = JSON object.
CREATE TABLE audit_log (
  id {{serial}},
  at BIGINT NOT NULL,
  actor TEXT NOT NULL,
  actor_role TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT NOT NULL,
  remote TEXT NOT NULL,
  details TEXT NOT NULL
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, at);
CREATE INDEX audit_log_action_idx ON audit_log (action, at);
CREATE INDEX audit_log_target_idx ON audit_log (target, at);

CREATE TABLE admin_users (
  name TEXT PRIMARY KEY,
  password_hash TEXT NOT NULL,
  role TEXT NOT NULL CHECK (role IN ('admin', 'helpdesk', 'auditor')),
  created_at BIGINT NOT NULL
);

-- token_hash = hex SHA-256 of the bearer token.
CREATE TABLE admin_tokens (
  token_hash TEXT PRIMARY KEY,
  admin_name TEXT NOT NULL,
  expires_at BIGINT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE INDEX admin_tokens_admin_name_idx ON admin_tokens (admin_name);

-- target = UTF-8 bytes: a device target is "<user>\\0<deviceId>", and PostgreSQL TEXT cannot hold NUL.
CREATE TABLE revocations (
  seq {{serial}},
  at BIGINT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('session', 'enrollment', 'device', 'user', 'policy')),
  target {{bytes}} NOT NULL
)`,
    perDialect: {
      sqlite: `
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
`,
      postgres: `
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_log is append-only';
END
$$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
`,
    },
  },
  {
    version: 3,
    name: 'enrollment sign-ins',
    sql: `
-- The last credential check of each enrollment: groups then (JSON array) and when.
CREATE TABLE enrollment_sign_ins (
  enrollment_id TEXT PRIMARY KEY REFERENCES enrollments (id) ON DELETE CASCADE,
  method TEXT NOT NULL CHECK (method IN ('password', 'code', 'password+code')),
  user_groups TEXT NOT NULL,
  signed_in_at BIGINT NOT NULL
)`,
  },
]

export const LATEST_SCHEMA_VERSION: number = MIGRATIONS.reduce((max, m) => Math.max(max, m.version), 0)
