/**
 * Device commands: lock, unlock, wipe (one app, or the whole device) and retire.
 *
 * Issuing a command changes the server's state at once and records the command for delivery:
 *
 *   kind    device state   enrollments                       sessions
 *   lock    locked         kept                              the device's closed
 *   unlock  active         kept                              the device's closed
 *   wipe    (app)          that app's on the device revoked  that app's closed
 *   wipe    wiped          all of the device's revoked       the device's closed
 *   retire  retired        all of the device's revoked       the device's closed
 *
 * then tells every proxy (RevocationHub) so cached sessions are dropped now, not at cache expiry.
 *
 * Delivery happens at the device's next contact: its proxied request gets 401 (its session is
 * closed), it opens a new session and the session open answers 403 GH_ERR_DEVICE_COMMAND with
 * the command (oldest open command first) — even for a revoked enrollment, as long as the device
 * proves possession of its key, so that a wipe reaches the app it wipes. The device acknowledges
 * with POST /v1/commands/:id/ack, an HMAC over the command id with its shared key
 * (docs/protocol.md §Device commands). A command is open until acknowledged.
 */
import { randomUUID } from 'node:crypto'
import { MalformedError, NotFoundError, ProofError, StaleError, DeviceCommandError } from '../errors.js'
import { fromBase64url } from '../protocol/bytes.js'
import { commandAckProof, safeEqual } from '../protocol/keySchedule.js'
import type { CommandKind, CommandState, DeviceCommandRecord, DeviceState, Page, Store } from '../store/types.js'

export const COMMAND_KINDS: readonly CommandKind[] = ['lock', 'unlock', 'wipe', 'retire']

/** What the command service needs of the revocation hub (src/security/revocationHub.ts). */
export interface CommandRevocations {
  revokeDevice(userName: string, deviceId: string): Promise<number>
  revokeEnrollment(enrollmentId: string): Promise<number>
}

export interface IssueCommandInput {
  userName: string
  deviceId: string
  /** Only for wipe: wipe this app's data and enrollment instead of the whole device. */
  appId?: string | null
  kind: CommandKind
  /** The admin (or user, self-service) who issued it. */
  issuedBy: string
}

/** The command as the device sees it. */
export interface DeviceCommand {
  id: string
  kind: CommandKind
  appId: string | null
}

/** Session open refused because a command waits: the answer carries `command`. */
export class PendingCommandError extends DeviceCommandError {
  constructor(readonly command: DeviceCommandRecord) {
    super(`a ${command.kind} command waits for this device`)
  }

  /** The 403 body: the usual error object plus the command. */
  body(): { error: { code: string; message: string }; command: DeviceCommand } {
    return { error: { code: this.code, message: this.message }, command: toDeviceCommand(this.command) }
  }
}

export function toDeviceCommand(c: DeviceCommandRecord): DeviceCommand {
  return { id: c.id, kind: c.kind, appId: c.appId }
}

/** States in which a device can open no session. */
export const BLOCKED_STATES: ReadonlySet<DeviceState> = new Set(['locked', 'wiped', 'retired'])

const NAME_RE = /^[^\p{Cc}]{1,256}$/u
const ID_RE = /^[A-Za-z0-9._:@-]{1,128}$/

export interface CommandServiceOptions {
  store: Store
  /** The revocation hub, when there is one (read at each use: it may be wired after this service). */
  hub?: () => CommandRevocations | undefined
  clockSkewMs: number
  now?: () => number
}

export class CommandService {
  constructor(private readonly o: CommandServiceOptions) {}

  private now(): number {
    return this.o.now ? this.o.now() : Date.now()
  }

  async issue(i: IssueCommandInput): Promise<DeviceCommandRecord> {
    if (!COMMAND_KINDS.includes(i.kind)) throw new MalformedError('kind must be one of lock, unlock, wipe, retire')
    if (typeof i.userName !== 'string' || !NAME_RE.test(i.userName)) throw new MalformedError('userName must be a string of 1..256 characters')
    if (typeof i.deviceId !== 'string' || !ID_RE.test(i.deviceId)) throw new MalformedError('deviceId must match [A-Za-z0-9._:@-]{1,128}')
    const appId = i.appId ?? null
    if (appId !== null && (typeof appId !== 'string' || !ID_RE.test(appId))) throw new MalformedError('appId must match [A-Za-z0-9._:@-]{1,128}')
    if (appId !== null && i.kind !== 'wipe') throw new MalformedError('appId is only for wipe (one app); lock, unlock and retire act on the whole device')
    if (typeof i.issuedBy !== 'string' || i.issuedBy.length === 0) throw new MalformedError('issuedBy must be a non-empty string')
    const s = this.o.store
    const known = await s.listEnrollments({ userName: i.userName, deviceId: i.deviceId, ...(appId ? { appId } : {}), limit: 1 })
    if (known.length === 0) throw new NotFoundError(appId ? 'no such app on this device' : 'no such device')

    const now = this.now()
    const rec: DeviceCommandRecord = {
      id: randomUUID(), userName: i.userName, deviceId: i.deviceId, appId, kind: i.kind, state: 'pending',
      issuedBy: i.issuedBy, issuedAt: now, deliveredAt: null, acknowledgedAt: null,
    }
    await s.createCommand(rec)
    const hub = this.o.hub?.()
    if (i.kind === 'wipe' && appId !== null) {
      // Selective wipe: only this app's enrollments (and with them their sessions) end.
      const enrollments = await s.listEnrollments({ userName: i.userName, deviceId: i.deviceId, appId, status: 'active' })
      for (const e of enrollments) {
        if (await s.revokeEnrollment(e.id)) await hub?.revokeEnrollment(e.id)
      }
      return rec
    }
    const state: DeviceState = i.kind === 'lock' ? 'locked' : i.kind === 'unlock' ? 'active' : i.kind === 'wipe' ? 'wiped' : 'retired'
    await s.setDeviceState(i.userName, i.deviceId, state, now)
    if (i.kind === 'wipe' || i.kind === 'retire') {
      for (const e of await s.listEnrollments({ userName: i.userName, deviceId: i.deviceId, status: 'active' })) await s.revokeEnrollment(e.id)
    }
    await s.closeSessionsWhere({ userName: i.userName, deviceId: i.deviceId }, now)
    await hub?.revokeDevice(i.userName, i.deviceId)
    return rec
  }

  /** Commands not yet acknowledged for the device (and app: its own plus whole-device ones), oldest first. */
  openFor(userName: string, deviceId: string, appId?: string): Promise<DeviceCommandRecord[]> {
    return this.o.store.openCommands(userName, deviceId, appId)
  }

  list(filter: { userName?: string; deviceId?: string; state?: CommandState } & Page = {}): Promise<DeviceCommandRecord[]> {
    return this.o.store.listCommands(filter)
  }

  /**
   * Session-open check for an enrollment that proved possession of its key: throws
   * PendingCommandError with the oldest open command (marking it delivered).
   */
  async deliverPending(e: { userName: string; deviceId: string; appId: string }): Promise<void> {
    const [next] = await this.o.store.openCommands(e.userName, e.deviceId, e.appId)
    if (!next) return
    if (next.state === 'pending') await this.o.store.markCommandDelivered(next.id, this.now())
    throw new PendingCommandError({ ...next, state: next.state === 'pending' ? 'delivered' : next.state })
  }

  /** True when the device has an open command for this app, or is locked, wiped or retired. */
  async blocksSessions(e: { userName: string; deviceId: string; appId: string }): Promise<boolean> {
    const d = await this.o.store.getDevice(e.userName, e.deviceId)
    if (d && BLOCKED_STATES.has(d.state)) return true
    return (await this.o.store.openCommands(e.userName, e.deviceId, e.appId)).length > 0
  }

  /**
   * The device's acknowledgement: `proof` = HMAC(sharedKey, LP("gatehouse/v1 command-ack",
   * commandId, enrollmentId, u64 timestamp)) with the key of an enrollment of the command's
   * device (and app, for a selective wipe); the enrollment may already be revoked (wipe, retire).
   * Unknown command, unknown enrollment, another device's command and a wrong proof give the same
   * answer (401 GH_ERR_PROOF). Acknowledging twice is harmless.
   */
  async acknowledge(commandId: string, body: Record<string, unknown>): Promise<DeviceCommandRecord> {
    const { enrollmentId, timestamp } = body
    const proof = fromBase64url(body.proof, 32)
    if (typeof commandId !== 'string' || commandId.length === 0 || commandId.length > 64) throw new MalformedError('command id must be a string')
    if (typeof enrollmentId !== 'string' || enrollmentId.length === 0 || enrollmentId.length > 64) throw new MalformedError('enrollmentId must be a string')
    if (typeof timestamp !== 'number' || !Number.isSafeInteger(timestamp) || timestamp < 0) throw new MalformedError('timestamp must be milliseconds since the epoch')
    if (!proof) throw new MalformedError('proof must be 32 bytes, base64url')
    const s = this.o.store
    const enrollment = await s.getEnrollment(enrollmentId)
    const command = enrollment && (await s.listCommands({ userName: enrollment.userName, deviceId: enrollment.deviceId }))
      .find((c) => c.id === commandId && (c.appId === null || c.appId === enrollment.appId))
    if (!enrollment || !command || !safeEqual(commandAckProof(enrollment.sharedKey, commandId, enrollmentId, timestamp), proof)) {
      throw new ProofError('unknown command, or proof of possession failed')
    }
    const now = this.now()
    if (Math.abs(now - timestamp) > this.o.clockSkewMs) throw new StaleError('timestamp outside the allowed clock skew')
    if (command.state !== 'acknowledged') await s.acknowledgeCommand(command.id, now)
    return { ...command, state: 'acknowledged', acknowledgedAt: command.acknowledgedAt ?? now }
  }
}
