/** Device states (lock, wipe, retire) and the commands queued for devices. */
import type { CommandKind, CommandState, DeviceCommandRecord, DeviceRecord, DeviceState, DeviceStore } from '../types.js'
import { insertOrExists, pageSql, Where, type QueryContext } from './common.js'

interface DeviceRow {
  user_name: string
  device_id: string
  state: DeviceState
  updated_at: number
}

interface CommandRow {
  id: string
  user_name: string
  device_id: string
  app_id: string | null
  kind: CommandKind
  state: CommandState
  issued_by: string
  issued_at: number
  delivered_at: number | null
  acknowledged_at: number | null
}

const DEVICE_COLUMNS = 'user_name, device_id, state, updated_at'
const COMMAND_COLUMNS = 'id, user_name, device_id, app_id, kind, state, issued_by, issued_at, delivered_at, acknowledged_at'

function device(r: DeviceRow): DeviceRecord {
  return { userName: r.user_name, deviceId: r.device_id, state: r.state, updatedAt: r.updated_at }
}

function command(r: CommandRow): DeviceCommandRecord {
  return {
    id: r.id, userName: r.user_name, deviceId: r.device_id, appId: r.app_id, kind: r.kind, state: r.state,
    issuedBy: r.issued_by, issuedAt: r.issued_at, deliveredAt: r.delivered_at, acknowledgedAt: r.acknowledged_at,
  }
}

export class DeviceQueries implements DeviceStore {
  constructor(private readonly c: QueryContext) {}

  async getDevice(userName: string, deviceId: string): Promise<DeviceRecord | undefined> {
    const r = await this.c.db.get<DeviceRow>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE user_name = ? AND device_id = ?`, [userName, deviceId])
    return r && device(r)
  }

  async setDeviceState(userName: string, deviceId: string, state: DeviceState, now: number): Promise<void> {
    await this.c.db.run(
      `INSERT INTO devices (${DEVICE_COLUMNS}) VALUES (?, ?, ?, ?)
       ON CONFLICT (user_name, device_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at`,
      [userName, deviceId, state, now],
    )
  }

  /** By user, then device id. */
  async listDevices(filter: Parameters<DeviceStore['listDevices']>[0]): Promise<DeviceRecord[]> {
    const where = new Where().eq('user_name', filter.userName).eq('state', filter.state)
    const page = pageSql(filter)
    const rows = await this.c.db.all<DeviceRow>(
      `SELECT ${DEVICE_COLUMNS} FROM devices${where} ORDER BY user_name, device_id${page.sql}`, [...where.params, ...page.params],
    )
    return rows.map(device)
  }

  async createCommand(cmd: DeviceCommandRecord): Promise<void> {
    await insertOrExists(this.c.db.run(
      `INSERT INTO device_commands (${COMMAND_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [cmd.id, cmd.userName, cmd.deviceId, cmd.appId, cmd.kind, cmd.state, cmd.issuedBy, cmd.issuedAt, cmd.deliveredAt, cmd.acknowledgedAt],
    ), 'command already exists')
  }

  /** Oldest first: commands are carried out in the order issued. */
  async openCommands(userName: string, deviceId: string, appId?: string): Promise<DeviceCommandRecord[]> {
    const where = new Where().eq('user_name', userName).eq('device_id', deviceId).add(`state <> 'acknowledged'`)
    if (appId !== undefined) where.add('(app_id IS NULL OR app_id = ?)', appId)
    const rows = await this.c.db.all<CommandRow>(`SELECT ${COMMAND_COLUMNS} FROM device_commands${where} ORDER BY issued_at, id`, where.params)
    return rows.map(command)
  }

  /** Only a pending command moves to delivered (the first delivery time is kept). */
  async markCommandDelivered(id: string, now: number): Promise<void> {
    await this.c.db.run(`UPDATE device_commands SET state = 'delivered', delivered_at = ? WHERE id = ? AND state = 'pending'`, [now, id])
  }

  async acknowledgeCommand(id: string, now: number): Promise<boolean> {
    const { changes } = await this.c.db.run(
      `UPDATE device_commands SET state = 'acknowledged', acknowledged_at = ? WHERE id = ? AND state <> 'acknowledged'`, [now, id],
    )
    return changes > 0
  }

  /** Oldest first. */
  async listCommands(filter: Parameters<DeviceStore['listCommands']>[0]): Promise<DeviceCommandRecord[]> {
    const where = new Where().eq('user_name', filter.userName).eq('device_id', filter.deviceId).eq('state', filter.state)
    const page = pageSql(filter)
    const rows = await this.c.db.all<CommandRow>(
      `SELECT ${COMMAND_COLUMNS} FROM device_commands${where} ORDER BY issued_at, id${page.sql}`, [...where.params, ...page.params],
    )
    return rows.map(command)
  }
}
