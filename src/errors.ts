/**
 * Every error Gatehouse raises on purpose. Each subclass has a stable code (never reused, never
 * renamed) and the HTTP status it maps to when it reaches a client. Messages never contain keys,
 * passwords, tokens or session ids: callers pass only what is safe to show.
 *
 * Model: undici `lib/core/errors.js`, fastify `lib/errors.js`.
 */
export class GatehouseError extends Error {
  /** Stable machine-readable code, e.g. `GH_ERR_REPLAY`. */
  readonly code: string = 'GH_ERR_INTERNAL'
  /** HTTP status this error maps to at an API boundary. */
  readonly status: number = 500
  /** True when the message is safe to return to a client verbatim. */
  readonly expose: boolean = false

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
  }
}

function define(name: string, code: string, status: number, expose = true) {
  const cls = class extends GatehouseError {
    override readonly code = code
    override readonly status = status
    override readonly expose = expose
  }
  Object.defineProperty(cls, 'name', { value: name })
  return cls
}

/** Configuration invalid; message names the option path. */
export const ConfigError = define('ConfigError', 'GH_ERR_CONFIG', 500)
/** A request or envelope could not be parsed. */
export const MalformedError = define('MalformedError', 'GH_ERR_MALFORMED', 400)
/** A record failed authentication (tampered ciphertext, tag, AAD or wrong key). */
export const DecryptError = define('DecryptError', 'GH_ERR_DECRYPT', 400)
/** The body was cut before its final record. */
export const TruncatedError = define('TruncatedError', 'GH_ERR_TRUNCATED', 400)
/** Sign-in failed; never says which part was wrong. */
export const AuthenticationError = define('AuthenticationError', 'GH_ERR_AUTHENTICATION', 401)
/** Unknown, closed or expired session: the device opens a new one. */
export const SessionInvalidError = define('SessionInvalidError', 'GH_ERR_SESSION_INVALID', 401)
/** Proof of possession of the shared key failed. */
export const ProofError = define('ProofError', 'GH_ERR_PROOF', 401)
/** Unknown or revoked enrollment. */
export const EnrollmentInvalidError = define('EnrollmentInvalidError', 'GH_ERR_ENROLLMENT_INVALID', 401)
/** Access forbidden (app context, network, role). */
export const ForbiddenError = define('ForbiddenError', 'GH_ERR_FORBIDDEN', 403)
/** No route matches the request path. */
export const NotFoundError = define('NotFoundError', 'GH_ERR_NOT_FOUND', 404)
/** Method not allowed on this path. */
export const MethodNotAllowedError = define('MethodNotAllowedError', 'GH_ERR_METHOD_NOT_ALLOWED', 405)
/** Sequence number already seen or behind the window. */
export const ReplayError = define('ReplayError', 'GH_ERR_REPLAY', 409)
/** Timestamp outside the allowed clock skew. */
export const StaleError = define('StaleError', 'GH_ERR_STALE', 409)
/** Body or record over its limit. */
export const TooLargeError = define('TooLargeError', 'GH_ERR_TOO_LARGE', 413)
/** Unsupported media type (not an envelope where one is required). */
export const UnsupportedMediaTypeError = define('UnsupportedMediaTypeError', 'GH_ERR_MEDIA_TYPE', 415)
/** Too many attempts. */
export const RateLimitedError = define('RateLimitedError', 'GH_ERR_RATE_LIMITED', 429)
/** Request headers too large. */
export const HeadersTooLargeError = define('HeadersTooLargeError', 'GH_ERR_HEADERS_TOO_LARGE', 431)
/** The upstream could not be reached or failed. */
export const UpstreamError = define('UpstreamError', 'GH_ERR_UPSTREAM', 502)
/** The control plane (security server) could not be reached. */
export const ControlPlaneUnavailableError = define('ControlPlaneUnavailableError', 'GH_ERR_CONTROL_PLANE_UNAVAILABLE', 503)
/** A dependency (directory, database) is unavailable. */
export const UnavailableError = define('UnavailableError', 'GH_ERR_UNAVAILABLE', 503)
/** The upstream did not answer in time. */
export const UpstreamTimeoutError = define('UpstreamTimeoutError', 'GH_ERR_UPSTREAM_TIMEOUT', 504)
/** A stored secret could not be decrypted (wrong master key, tampered row). Never exposed. */
export const SecretStoreError = define('SecretStoreError', 'GH_ERR_SECRET_STORE', 500, false)
/** An operation would overwrite existing files without --force. */
export const ExistsError = define('ExistsError', 'GH_ERR_EXISTS', 409)
/** Command-line usage error. */
export const UsageError = define('UsageError', 'GH_ERR_USAGE', 400)
/** A cookie-authenticated admin call that changes state came without a matching x-gatehouse-csrf header. */
export const CsrfError = define('CsrfError', 'GH_ERR_CSRF', 403)
/** The request conflicts with the current state (e.g. removing the last admin). */
export const ConflictError = define('ConflictError', 'GH_ERR_CONFLICT', 409)

export type GatehouseErrorClass = ReturnType<typeof define>

/** The JSON body of every error answer: `{ "error": { "code", "message" } }`. */
export function errorBody(err: unknown): { error: { code: string; message: string } } {
  if (err instanceof GatehouseError && err.expose) {
    return { error: { code: err.code, message: err.message } }
  }
  if (err instanceof GatehouseError) {
    return { error: { code: err.code, message: 'internal error' } }
  }
  return { error: { code: 'GH_ERR_INTERNAL', message: 'internal error' } }
}

export function statusOf(err: unknown): number {
  return err instanceof GatehouseError ? err.status : 500
}

/** The revocation log no longer reaches back to the seq a proxy asked to resume from (truncated, or another database). */
export const RevocationGapError = define('RevocationGapError', 'GH_ERR_REVOCATION_GAP', 410)
/** Enrollment refused: the app is not in the catalog, or the user's groups may not enroll it. */
export const AppNotAllowedError = define('AppNotAllowedError', 'GH_ERR_APP_NOT_ALLOWED', 403)
/** This app version is not (or no longer) allowed: the device must update the app. */
export const AppVersionError = define('AppVersionError', 'GH_ERR_APP_VERSION', 403)
/** The app may not reach this route (app context checked by the proxy). */
export const AppContextError = define('AppContextError', 'GH_ERR_APP_CONTEXT', 403)
/** Enrollment of a new device refused: the user has reached the policy's maxDevicesPerUser. */
export const DeviceLimitError = define('DeviceLimitError', 'GH_ERR_DEVICE_LIMIT', 403)
/** The enrollment's last sign-in is older than the policy's reauthIntervalSeconds: enroll again with the password. */
export const ReauthRequiredError = define('ReauthRequiredError', 'GH_ERR_REAUTH_REQUIRED', 401)
/** A command (lock, unlock, wipe, retire) waits for this device; the answer carries it. */
export const DeviceCommandError = define('DeviceCommandError', 'GH_ERR_DEVICE_COMMAND', 403)
/** The device is locked, wiped or retired and has no command left to receive. */
export const DeviceBlockedError = define('DeviceBlockedError', 'GH_ERR_DEVICE_BLOCKED', 403)
/** ActiveSync gateway: no enrolled, active device of this user has this device id. */
export const DeviceNotEnrolledError = define('DeviceNotEnrolledError', 'GH_ERR_DEVICE_NOT_ENROLLED', 403)
/** ActiveSync gateway: the user named in the query is not the user signing in (HTTP Basic). */
export const IdentityMismatchError = define('IdentityMismatchError', 'GH_ERR_IDENTITY_MISMATCH', 403)
/** A backup file that cannot be restored: not a backup, made with another backup key, tampered with or truncated. */
export const BackupInvalidError = define('BackupInvalidError', 'GH_ERR_BACKUP_INVALID', 422)
/** The proxy could not hand a streamed request body on: the upstream reads it more slowly than the device sends it, beyond the proxy's buffer. */
export const UpstreamBackpressureError = define('UpstreamBackpressureError', 'GH_ERR_UPSTREAM_BACKPRESSURE', 503)
/** The device stopped sending its request body for longer than proxy.limits.bodyTimeoutSeconds. */
export const RequestTimeoutError = define('RequestTimeoutError', 'GH_ERR_REQUEST_TIMEOUT', 408)
/** The proxy thread already has proxy.limits.maxConcurrentRequests requests in flight: retry shortly. */
export const OverloadedError = define('OverloadedError', 'GH_ERR_OVERLOADED', 503)
