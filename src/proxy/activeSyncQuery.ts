/**
 * The query of an ActiveSync request (MS-ASHTTP §2.2.1.1.1), in either of its two forms, parsed
 * strictly: anything that does not follow the grammar is refused (400) before it reaches the gate
 * or Exchange.
 *
 * Plain text form (§2.2.1.1.1.2), names matched case-insensitively (ABNF literals):
 *
 *   Cmd=Sync&User=alice&DeviceId=ABC123&DeviceType=iPhone[&name=value…]
 *
 * Base64 form (§2.2.1.1.1.1): the whole query is one base64 value encoding
 *
 *   ┌─────────┬─────────┬──────────┬──────┬──────────┬──────┬──────────┬──────┬──────────┬─────────────┐
 *   │ version │ command │ locale   │ idLen│ DeviceId │ pkLen│ PolicyKey│ dtLen│DeviceType│ parameters… │
 *   │ 1 byte  │ 1 byte  │ u16 LE   │ 1    │ idLen    │ 0|4  │ u32 LE   │ 1    │ dtLen    │ tag,len,val │
 *   └─────────┴─────────┴──────────┴──────┴──────────┴──────┴──────────┴──────┴──────────┴─────────────┘
 *
 *   e.g. jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l = 14.0, Sync, locale 0x0409, "v140Device", no
 *   policy key, "SmartPhone" (the example of the specification).
 *
 * Parameters are `tag (1 byte) · length (1 byte) · value`; tag 8 is User. A DeviceId made only of
 * ASCII letters and digits is taken as text; 16 other bytes (a binary GUID) as upper-case hex.
 * The query is passed to Exchange exactly as the client sent it: this parse only decides.
 */
import { MalformedError } from '../errors.js'
import { ACTIVESYNC_DEVICE_ID_RE, MAX_ACTIVESYNC_USER_LENGTH } from '../protocol/activeSyncIdentity.js'

export interface ActiveSyncQuery {
  form: 'plain' | 'base64'
  /** Command name (Sync, Ping, FolderSync, Provision, …). */
  command: string
  /** User as named in the query; undefined when absent (allowed in the base64 form only). */
  user: string | undefined
  deviceId: string
  deviceType: string
  /** Base64 form only: the protocol version ("14.1"). The plain form sends it as MS-ASProtocolVersion. */
  protocolVersion: string | undefined
  /** Base64 form only (the plain form sends X-MS-PolicyKey). */
  policyKey: number | undefined
}

/** Command codes of the base64 form (§2.2.1.1.1.1.2); 23 (Find) came with protocol 16.1. */
export const COMMAND_CODES: ReadonlyMap<number, string> = new Map([
  [0, 'Sync'], [1, 'SendMail'], [2, 'SmartForward'], [3, 'SmartReply'], [4, 'GetAttachment'],
  [9, 'FolderSync'], [10, 'FolderCreate'], [11, 'FolderDelete'], [12, 'FolderUpdate'], [13, 'MoveItems'],
  [14, 'GetItemEstimate'], [15, 'MeetingResponse'], [16, 'Search'], [17, 'Settings'], [18, 'Ping'],
  [19, 'ItemOperations'], [20, 'Provision'], [21, 'ResolveRecipients'], [22, 'ValidateCert'], [23, 'Find'],
])

/** Command names used as metric labels; anything else is counted as OTHER. */
export const KNOWN_COMMANDS: ReadonlySet<string> = new Set(COMMAND_CODES.values())

/** Protocol versions the base64 form may carry (§2.2.1.1.1.1: 121, 140, 141, 160, 161). */
const BASE64_VERSIONS = new Set([121, 140, 141, 160, 161])

/** Parameter tags of the base64 form (§2.2.1.1.1.1.3); 2 and 5 are older tags some clients still send. */
const PARAMETER_TAGS: ReadonlyMap<number, string> = new Map([
  [0, 'AttachmentName'], [1, 'CollectionId'], [2, 'CollectionName'], [3, 'ItemId'], [4, 'LongId'],
  [5, 'ParentId'], [6, 'Occurrence'], [7, 'Options'], [8, 'User'],
])
const USER_TAG = 8
const OPTIONS_TAG = 7

/** Longest query accepted, in characters (a full base64 structure is well under this). */
export const MAX_QUERY_LENGTH = 4096

const BASE64_RE = /^[A-Za-z0-9+/]+={0,2}$/
const COMMAND_RE = /^[A-Za-z]{1,32}$/
const PARAM_NAME_RE = /^[A-Za-z]{1,64}$/
// VCHAR and beyond: no controls, no space.
const VALUE_RE = /^[^\p{Cc}\s]{1,256}$/u

function malformed(what: string): never {
  throw new MalformedError(`ActiveSync query: ${what}`)
}

/** Parse the query (without "?"); throws MalformedError (400). */
export function parseActiveSyncQuery(raw: string): ActiveSyncQuery {
  if (raw.length === 0) malformed('missing (Cmd, User, DeviceId and DeviceType are required)')
  if (raw.length > MAX_QUERY_LENGTH) malformed('too long')
  // The plain form always has "name=value&…"; a base64 value has no "&" and "=" only as padding.
  if (!raw.includes('&')) {
    let decoded: string
    try {
      decoded = decodeURIComponent(raw)
    } catch {
      malformed('bad percent-encoding')
    }
    if (BASE64_RE.test(decoded)) return parseBase64Query(decoded)
  }
  return parsePlainQuery(raw)
}

function parsePlainQuery(raw: string): ActiveSyncQuery {
  const seen = new Map<string, string>()
  for (const part of raw.split('&')) {
    const eq = part.indexOf('=')
    if (eq <= 0) malformed('every parameter must be name=value')
    const name = part.slice(0, eq)
    if (!PARAM_NAME_RE.test(name)) malformed('a parameter name must be letters only')
    let value: string
    try {
      value = decodeURIComponent(part.slice(eq + 1).replace(/\+/g, ' '))
    } catch {
      malformed('bad percent-encoding')
    }
    const key = name.toLowerCase()
    if (seen.has(key)) malformed(`parameter ${name} given twice`)
    seen.set(key, value)
  }
  const cmd = seen.get('cmd')
  const user = seen.get('user')
  const deviceId = seen.get('deviceid')
  const deviceType = seen.get('devicetype')
  if (cmd === undefined || !COMMAND_RE.test(cmd)) malformed('Cmd must be a command name')
  if (user === undefined || user.length === 0 || user.length > MAX_ACTIVESYNC_USER_LENGTH || /\p{Cc}/u.test(user)) malformed('User must be a user name')
  if (deviceId === undefined || !ACTIVESYNC_DEVICE_ID_RE.test(deviceId)) malformed('DeviceId must be 1 to 32 letters or digits')
  if (deviceType === undefined || !VALUE_RE.test(deviceType)) malformed('DeviceType must be 1 to 256 visible characters')
  return { form: 'plain', command: cmd, user, deviceId, deviceType, protocolVersion: undefined, policyKey: undefined }
}

/** Bounds-checked reader over the decoded bytes. */
class Reader {
  private at = 0
  constructor(private readonly b: Buffer) {}
  get left(): number {
    return this.b.length - this.at
  }
  u8(what: string): number {
    if (this.left < 1) malformed(`base64 structure ends before ${what}`)
    return this.b[this.at++]!
  }
  u16le(what: string): number {
    if (this.left < 2) malformed(`base64 structure ends before ${what}`)
    const v = this.b.readUInt16LE(this.at)
    this.at += 2
    return v
  }
  bytes(n: number, what: string): Buffer {
    if (this.left < n) malformed(`base64 structure ends inside ${what}`)
    const v = this.b.subarray(this.at, this.at + n)
    this.at += n
    return v
  }
}

function parseBase64Query(text: string): ActiveSyncQuery {
  const bytes = Buffer.from(text, 'base64')
  // Node's decoder skips what it does not understand; only a canonical encoding is accepted.
  if (bytes.toString('base64').replace(/=+$/, '') !== text.replace(/=+$/, '')) malformed('not canonical base64')
  const r = new Reader(bytes)
  const version = r.u8('the protocol version')
  if (!BASE64_VERSIONS.has(version)) malformed(`protocol version ${version} is not one of 121, 140, 141, 160, 161`)
  const code = r.u8('the command code')
  const command = COMMAND_CODES.get(code)
  if (command === undefined) malformed(`unknown command code ${code}`)
  r.u16le('the locale')
  const idLen = r.u8('the device id length')
  if (idLen === 0) malformed('the device id length must be greater than 0')
  const deviceId = deviceIdText(r.bytes(idLen, 'the device id'))
  const pkLen = r.u8('the policy key length')
  if (pkLen !== 0 && pkLen !== 4) malformed('the policy key length must be 0 or 4')
  const policyKey = pkLen === 4 ? r.bytes(4, 'the policy key').readUInt32LE(0) : undefined
  const dtLen = r.u8('the device type length')
  if (dtLen === 0) malformed('the device type length must be greater than 0')
  const deviceType = r.bytes(dtLen, 'the device type').toString('latin1')
  if (!VALUE_RE.test(deviceType)) malformed('the device type must be visible characters')
  let user: string | undefined
  const seen = new Set<number>()
  while (r.left > 0) {
    const tag = r.u8('a parameter tag')
    const len = r.u8('a parameter length')
    const value = r.bytes(len, 'a parameter value')
    if (!PARAMETER_TAGS.has(tag)) malformed(`unknown parameter tag ${tag}`)
    if (seen.has(tag)) malformed(`parameter ${PARAMETER_TAGS.get(tag)} given twice`)
    seen.add(tag)
    if (tag === OPTIONS_TAG && len !== 1) malformed('the Options parameter must be one byte')
    if (tag === USER_TAG) {
      const u = new TextDecoder('utf-8', { fatal: true })
      try {
        user = u.decode(value)
      } catch {
        malformed('the User parameter must be UTF-8')
      }
      if (user.length === 0 || /\p{Cc}/u.test(user)) malformed('the User parameter must be a user name')
    }
  }
  const protocolVersion = `${Math.floor(version / 10)}.${version % 10}`
  return { form: 'base64', command, user, deviceId, deviceType, protocolVersion, policyKey }
}

/** Letters and digits as text; a 16-byte binary GUID as upper-case hex; anything else is refused. */
function deviceIdText(b: Buffer): string {
  let text = true
  for (const c of b) {
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a))) {
      text = false
      break
    }
  }
  const id = text ? b.toString('latin1') : b.length === 16 ? b.toString('hex').toUpperCase() : ''
  if (!ACTIVESYNC_DEVICE_ID_RE.test(id)) malformed('the device id must be 1 to 32 letters or digits, or a 16-byte GUID')
  return id
}

/** Encode a base64 query (tests, the benchmark, the fake Exchange): the inverse of the parse above. */
export function encodeActiveSyncQuery(q: {
  version?: number
  command: string
  locale?: number
  deviceId: string | Buffer
  policyKey?: number
  deviceType: string
  user?: string
  params?: [tag: number, value: Buffer][]
}): string {
  const code = [...COMMAND_CODES].find(([, name]) => name === q.command)?.[0]
  if (code === undefined) throw new Error(`no code for ${q.command}`)
  const id = typeof q.deviceId === 'string' ? Buffer.from(q.deviceId, 'latin1') : q.deviceId
  const type = Buffer.from(q.deviceType, 'latin1')
  const parts: Buffer[] = [Buffer.from([q.version ?? 141, code, (q.locale ?? 0x0409) & 0xff, (q.locale ?? 0x0409) >> 8, id.length]), id]
  if (q.policyKey === undefined) parts.push(Buffer.from([0]))
  else {
    const pk = Buffer.alloc(5)
    pk[0] = 4
    pk.writeUInt32LE(q.policyKey, 1)
    parts.push(pk)
  }
  parts.push(Buffer.from([type.length]), type)
  const params = [...(q.params ?? [])]
  if (q.user !== undefined) params.push([USER_TAG, Buffer.from(q.user, 'utf8')])
  for (const [tag, value] of params) parts.push(Buffer.from([tag, value.length]), value)
  return Buffer.concat(parts).toString('base64')
}
