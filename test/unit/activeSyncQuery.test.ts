/** The ActiveSync query parser (MS-ASHTTP §2.2.1.1.1): both forms, and strict refusal of anything else. */
import { describe, expect, it } from 'vitest'
import { MalformedError } from '../../src/errors.js'
import { activeSyncUserKey } from '../../src/protocol/activeSyncIdentity.js'
import { encodeActiveSyncQuery, parseActiveSyncQuery } from '../../src/proxy/activeSyncQuery.js'
import { basicUser } from '../../src/proxy/activeSync.js'

function refused(q: string): string {
  try {
    parseActiveSyncQuery(q)
  } catch (err) {
    expect(err).toBeInstanceOf(MalformedError)
    return (err as Error).message
  }
  throw new Error(`expected ${JSON.stringify(q)} to be refused`)
}

describe('base64 form', () => {
  it('decodes the example of the specification', () => {
    expect(parseActiveSyncQuery('jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l')).toEqual({
      form: 'base64', command: 'Sync', user: undefined, deviceId: 'v140Device', deviceType: 'SmartPhone', protocolVersion: '14.0', policyKey: undefined,
    })
  })

  it('reads the policy key (u32 little-endian), the User parameter and other parameters', () => {
    const q = encodeActiveSyncQuery({ version: 161, command: 'Ping', deviceId: 'ApplC39GQ8NNDTDL', policyKey: 3769048351, deviceType: 'iPhone', user: 'CORP\\alice', params: [[7, Buffer.from([1])], [1, Buffer.from('5')]] })
    expect(parseActiveSyncQuery(q)).toEqual({
      form: 'base64', command: 'Ping', user: 'CORP\\alice', deviceId: 'ApplC39GQ8NNDTDL', deviceType: 'iPhone', protocolVersion: '16.1', policyKey: 3769048351,
    })
  })

  it('a binary device id (a GUID) becomes upper-case hex; percent-encoded base64 is accepted', () => {
    const guid = Buffer.from('6f24cad599a5bf1a690246b8c68fae8d', 'hex')
    const q = encodeActiveSyncQuery({ command: 'FolderSync', deviceId: guid, deviceType: 'PocketPC' })
    expect(parseActiveSyncQuery(q).deviceId).toBe('6F24CAD599A5BF1A690246B8C68FAE8D')
    expect(parseActiveSyncQuery(encodeURIComponent(q)).deviceId).toBe('6F24CAD599A5BF1A690246B8C68FAE8D')
  })

  it('refuses every structural fault with 400', () => {
    const ok = Buffer.from(encodeActiveSyncQuery({ command: 'Sync', deviceId: 'DEV1', deviceType: 'iPhone', user: 'alice' }), 'base64')
    const b64 = (b: Buffer | number[]) => Buffer.from(b as Buffer).toString('base64')
    expect(refused(b64(ok.subarray(0, 3)))).toMatch(/ends before the locale/)
    expect(refused(b64([141, 0, 9, 4]))).toMatch(/ends before the device id length/)
    expect(refused(b64([141, 0, 9, 4, 0]))).toMatch(/device id length must be greater than 0/)
    expect(refused(b64([141, 0, 9, 4, 9, 0x41]))).toMatch(/ends inside the device id/)
    expect(refused(b64([141, 0, 9, 4, 1, 0x41, 3, 1, 2, 3]))).toMatch(/policy key length must be 0 or 4/)
    expect(refused(b64([141, 0, 9, 4, 1, 0x41, 4, 1, 2]))).toMatch(/ends inside the policy key/)
    expect(refused(b64([141, 0, 9, 4, 1, 0x41, 0, 0]))).toMatch(/device type length must be greater than 0/)
    expect(refused(b64([141, 0, 9, 4, 1, 0x41, 0, 1, 0x0a]))).toMatch(/device type must be visible/)
    expect(refused(b64([100, ...ok.subarray(1)]))).toMatch(/protocol version 100/)
    expect(refused(b64([141, 5, ...ok.subarray(2)]))).toMatch(/unknown command code 5/)
    expect(refused(b64([...ok, 8]))).toMatch(/ends before a parameter length/)
    expect(refused(b64([...ok, 0, 5, 0x41]))).toMatch(/ends inside a parameter value/)
    expect(refused(b64([...ok, 9, 1, 0x41]))).toMatch(/unknown parameter tag 9/)
    expect(refused(b64([...ok, 8, 1, 0x41]))).toMatch(/User given twice/)
    expect(refused(b64([...ok, 7, 2, 1, 1]))).toMatch(/Options parameter must be one byte/)
    expect(refused(b64([141, 0, 9, 4, 1, 0x41, 0, 1, 0x41, 8, 2, 0xc3, 0x28]))).toMatch(/User parameter must be UTF-8/)
    // A device id that is neither letters/digits nor a 16-byte GUID.
    expect(refused(b64([141, 0, 9, 4, 17, ...Buffer.alloc(17, 0xff), 0, 1, 0x41]))).toMatch(/device id must be 1 to 32/)
    expect(refused(b64([141, 0, 9, 4, 3, 0x41, 0x2d, 0x42, 0, 1, 0x41]))).toMatch(/device id must be 1 to 32/)
    // Non-canonical: the unused low bits of the last character set (Node would decode it anyway).
    const padded = ok.length % 3 === 0 ? Buffer.concat([ok, Buffer.from([6, 0])]) : ok
    expect(parseActiveSyncQuery(padded.toString('base64')).deviceId).toBe('DEV1')
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
    const data = padded.toString('base64').replace(/=+$/, '')
    const last = alphabet[alphabet.indexOf(data.slice(-1)) | 1]!
    expect(refused(`${data.slice(0, -1)}${last}`)).toMatch(/canonical/)
    expect(refused('%zz')).toMatch(/percent-encoding/)
  })
})

describe('plain form', () => {
  it('reads Cmd, User, DeviceId, DeviceType; names are case-insensitive; other parameters pass', () => {
    expect(parseActiveSyncQuery('Cmd=Sync&User=CORP%5Calice&DeviceId=ABC123&DeviceType=iPhone')).toEqual({
      form: 'plain', command: 'Sync', user: 'CORP\\alice', deviceId: 'ABC123', deviceType: 'iPhone', protocolVersion: undefined, policyKey: undefined,
    })
    expect(parseActiveSyncQuery('deviceid=ABC123&cmd=SmartReply&devicetype=Android&user=alice&ItemId=5%3A1&SaveInSent=T')).toMatchObject({ command: 'SmartReply', deviceId: 'ABC123' })
  })

  it('refuses what does not follow the grammar', () => {
    expect(refused('')).toMatch(/missing/)
    expect(refused('Cmd=Sync')).toMatch(/User must be/)
    expect(refused('Cmd=Sync&User=alice&DeviceType=iPhone')).toMatch(/DeviceId must be/)
    expect(refused('Cmd=Sync&User=alice&DeviceId=ABC123')).toMatch(/DeviceType must be/)
    expect(refused('Cmd=Sync1&User=alice&DeviceId=ABC123&DeviceType=iPhone')).toMatch(/Cmd must be/)
    expect(refused('Cmd=Sync&User=alice&DeviceId=ABC-123&DeviceType=iPhone')).toMatch(/DeviceId must be/)
    expect(refused(`Cmd=Sync&User=alice&DeviceId=${'A'.repeat(33)}&DeviceType=iPhone`)).toMatch(/DeviceId must be/)
    expect(refused('Cmd=Sync&User=al%0Aice&DeviceId=ABC123&DeviceType=iPhone')).toMatch(/User must be/)
    expect(refused('Cmd=Sync&User=alice&User=bob&DeviceId=ABC123&DeviceType=iPhone')).toMatch(/given twice/)
    expect(refused('Cmd=Sync&User=alice&DeviceId=ABC123&DeviceType=iPhone&x')).toMatch(/name=value/)
    expect(refused('Cmd=Sync&User=alice&DeviceId=ABC123&DeviceType=iPhone&a1=b')).toMatch(/letters only/)
    expect(refused('Cmd=Sync&User=%E0%A4%A&DeviceId=ABC123&DeviceType=iPhone')).toMatch(/percent-encoding/)
    expect(refused(`Cmd=Sync&User=alice&DeviceId=ABC123&DeviceType=iPhone&x=${'a'.repeat(5000)}`)).toMatch(/too long/)
  })
})

describe('identity', () => {
  it('reduces DOMAIN\\user and user@domain and folds case', () => {
    expect(activeSyncUserKey('CORP\\Alice')).toBe('alice')
    expect(activeSyncUserKey('Alice@corp.example.com')).toBe('alice')
    expect(activeSyncUserKey('a\\b\\ALICE')).toBe('alice')
    expect(activeSyncUserKey('alice')).toBe('alice')
    expect(activeSyncUserKey('CORP\\')).toBeUndefined()
    expect(activeSyncUserKey('@corp.example')).toBeUndefined()
    expect(activeSyncUserKey('al\nice')).toBeUndefined()
    expect(activeSyncUserKey('a'.repeat(257))).toBeUndefined()
  })

  it('Basic credentials: the user part, never more', () => {
    const b = (s: string) => `Basic ${Buffer.from(s).toString('base64')}`
    expect(basicUser(b('CORP\\alice:pa:ss'))).toBe('CORP\\alice')
    expect(basicUser('basic ' + Buffer.from('bob:x').toString('base64'))).toBe('bob')
    expect(basicUser(undefined)).toBeUndefined()
    expect(basicUser('Bearer abc')).toBeUndefined()
    expect(basicUser(b('nocolon'))).toBeNull()
    expect(basicUser(b(':password'))).toBeNull()
    expect(basicUser('Basic !!!')).toBeNull()
  })
})
