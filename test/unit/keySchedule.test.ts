import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { lengthPrefixed } from '../../src/protocol/bytes.js'
import { pooledRandom } from '../../src/protocol/randomPool.js'
import {
  deriveResponseKey, deriveSessionKeys, deriveSharedKey, ecdhSecret, enrollConfirmation, generateEcdhKeyPair, hkdf,
  safeEqual, sessionAcceptProof, sessionCloseProof, sessionOpenProof, type EnrollmentContext,
} from '../../src/protocol/keySchedule.js'

const hex = (b: Buffer): string => b.toString('hex')

describe('ECDH P-256', () => {
  it('both sides compute the same 32-byte secret', () => {
    const device = generateEcdhKeyPair()
    const server = generateEcdhKeyPair()
    const a = ecdhSecret(device.privateKey, server.publicKey)
    const b = ecdhSecret(server.privateKey, device.publicKey)
    expect(a).toHaveLength(32)
    expect(a.equals(b)).toBe(true)
    expect(ecdhSecret(device.privateKey, generateEcdhKeyPair().publicKey).equals(a)).toBe(false)
  })

  it('public keys are 65-byte uncompressed points; a fixed private key gives a fixed public key', () => {
    const k = generateEcdhKeyPair()
    expect(k.publicKey).toHaveLength(65)
    expect(k.publicKey[0]).toBe(0x04)
    expect(k.privateKey).toHaveLength(32)
    expect(generateEcdhKeyPair(k.privateKey).publicKey.equals(k.publicKey)).toBe(true)
  })

  it('throws on an invalid peer point', () => {
    const me = generateEcdhKeyPair()
    const peer = generateEcdhKeyPair().publicKey
    const offCurve = Buffer.from(peer)
    offCurve[64] = offCurve[64]! ^ 0x01 // y no longer matches x
    const bad = [
      Buffer.alloc(0),
      Buffer.from([0x00]), // point at infinity
      peer.subarray(0, 64), // truncated
      Buffer.concat([peer, Buffer.from([0])]), // too long
      offCurve,
      Buffer.concat([Buffer.from([0x04]), Buffer.alloc(64, 0xff)]), // coordinates above p
      Buffer.concat([Buffer.from([0x05]), peer.subarray(1)]), // unknown point format
    ]
    for (const p of bad) expect(() => ecdhSecret(me.privateKey, p), hex(p)).toThrow()
  })
})

describe('enrollment shared key', () => {
  const z = randomBytes(32)
  const base: EnrollmentContext = {
    appId: 'com.example.app',
    deviceId: 'device-1',
    devicePublicKey: generateEcdhKeyPair().publicKey,
    serverPublicKey: generateEcdhKeyPair().publicKey,
    salt: randomBytes(32),
  }
  const key = deriveSharedKey(z, base)

  it('is 32 bytes and deterministic', () => {
    expect(key).toHaveLength(32)
    expect(deriveSharedKey(Buffer.from(z), { ...base }).equals(key)).toBe(true)
  })

  it('depends on Z and on every context field', () => {
    const variants: [string, Buffer][] = [
      ['z', deriveSharedKey(randomBytes(32), base)],
      ['appId', deriveSharedKey(z, { ...base, appId: 'com.example.app2' })],
      ['deviceId', deriveSharedKey(z, { ...base, deviceId: 'device-2' })],
      ['devicePublicKey', deriveSharedKey(z, { ...base, devicePublicKey: generateEcdhKeyPair().publicKey })],
      ['serverPublicKey', deriveSharedKey(z, { ...base, serverPublicKey: generateEcdhKeyPair().publicKey })],
      ['salt', deriveSharedKey(z, { ...base, salt: randomBytes(32) })],
      ['public keys swapped', deriveSharedKey(z, { ...base, devicePublicKey: base.serverPublicKey, serverPublicKey: base.devicePublicKey })],
    ]
    for (const [name, k] of variants) expect(k.equals(key), name).toBe(false)
    expect(new Set(variants.map(([, k]) => hex(k))).size).toBe(variants.length)
  })

  it('length prefixes keep field boundaries: ("ab","c") and ("a","bc") differ', () => {
    const a = deriveSharedKey(z, { ...base, appId: 'ab', deviceId: 'c' })
    const b = deriveSharedKey(z, { ...base, appId: 'a', deviceId: 'bc' })
    expect(a.equals(b)).toBe(false)
  })
})

describe('proofs', () => {
  const k = randomBytes(32)
  const nonceA = randomBytes(16)
  const nonceB = randomBytes(16)
  const id = 'AAAAAAAAAAAAAAAAAAAAAA'
  const ts = 1_700_000_000_000

  it('differ per label for the same key and similar inputs', () => {
    const proofs = [
      enrollConfirmation(k, id),
      sessionOpenProof(k, id, ts, nonceA),
      sessionAcceptProof(k, id, nonceA, nonceB),
      sessionCloseProof(k, id, ts),
    ]
    for (const p of proofs) expect(p).toHaveLength(32)
    expect(new Set(proofs.map(hex)).size).toBe(proofs.length)
  })

  it('depend on each input', () => {
    const open = sessionOpenProof(k, id, ts, nonceA)
    expect(sessionOpenProof(k, id, ts, nonceA).equals(open)).toBe(true)
    expect(sessionOpenProof(randomBytes(32), id, ts, nonceA).equals(open)).toBe(false)
    expect(sessionOpenProof(k, 'BAAAAAAAAAAAAAAAAAAAAA', ts, nonceA).equals(open)).toBe(false)
    expect(sessionOpenProof(k, id, ts + 1, nonceA).equals(open)).toBe(false)
    expect(sessionOpenProof(k, id, ts, nonceB).equals(open)).toBe(false)

    const accept = sessionAcceptProof(k, id, nonceA, nonceB)
    expect(sessionAcceptProof(k, id, nonceB, nonceA).equals(accept)).toBe(false)
    expect(sessionAcceptProof(k, id, nonceA, randomBytes(16)).equals(accept)).toBe(false)

    const close = sessionCloseProof(k, id, ts)
    expect(sessionCloseProof(k, id, ts + 1).equals(close)).toBe(false)
    expect(sessionCloseProof(k, 'BAAAAAAAAAAAAAAAAAAAAA', ts).equals(close)).toBe(false)

    expect(enrollConfirmation(k, 'enr-1').equals(enrollConfirmation(k, 'enr-2'))).toBe(false)
  })
})

describe('session keys', () => {
  const shared = randomBytes(32)
  const dn = randomBytes(16)
  const sn = randomBytes(16)
  const sid = randomBytes(16).toString('base64url')
  const keys = deriveSessionKeys(shared, sid, dn, sn)

  it('c2s and s2c are distinct 32-byte keys, both different from the shared key', () => {
    expect(keys.c2s).toHaveLength(32)
    expect(keys.s2c).toHaveLength(32)
    expect(keys.c2s.equals(keys.s2c)).toBe(false)
    expect(keys.c2s.equals(shared)).toBe(false)
    expect(keys.s2c.equals(shared)).toBe(false)
  })

  it('depend on the shared key, the session id and both nonces (in order)', () => {
    const variants = [
      deriveSessionKeys(randomBytes(32), sid, dn, sn),
      deriveSessionKeys(shared, randomBytes(16).toString('base64url'), dn, sn),
      deriveSessionKeys(shared, sid, randomBytes(16), sn),
      deriveSessionKeys(shared, sid, dn, randomBytes(16)),
      deriveSessionKeys(shared, sid, sn, dn),
    ]
    for (const v of variants) {
      expect(v.c2s.equals(keys.c2s)).toBe(false)
      expect(v.s2c.equals(keys.s2c)).toBe(false)
    }
    const again = deriveSessionKeys(shared, sid, dn, sn)
    expect(again.c2s.equals(keys.c2s) && again.s2c.equals(keys.s2c)).toBe(true)
  })

  it('each response salt gives its own response key', () => {
    const s1 = randomBytes(16)
    const r1 = deriveResponseKey(keys.s2c, s1)
    expect(r1).toHaveLength(32)
    expect(deriveResponseKey(keys.s2c, Buffer.from(s1)).equals(r1)).toBe(true)
    expect(deriveResponseKey(keys.s2c, randomBytes(16)).equals(r1)).toBe(false)
    expect(deriveResponseKey(keys.c2s, s1).equals(r1)).toBe(false)
    expect(r1.equals(keys.s2c)).toBe(false)
  })
})

describe('hkdf and safeEqual', () => {
  it('hkdf honours the length parameter (default 32)', () => {
    const ikm = randomBytes(32)
    const salt = randomBytes(16)
    const info = Buffer.from('x')
    expect(hkdf(ikm, salt, info)).toHaveLength(32)
    const long = hkdf(ikm, salt, info, 100)
    expect(long).toHaveLength(100)
    expect(long.subarray(0, 32).equals(hkdf(ikm, salt, info))).toBe(true)
    expect(hkdf(ikm, salt, info, 1)).toHaveLength(1)
  })

  it('safeEqual compares content and tolerates different lengths', () => {
    const a = randomBytes(32)
    expect(safeEqual(a, Buffer.from(a))).toBe(true)
    const b = Buffer.from(a)
    b[31] = b[31]! ^ 1
    expect(safeEqual(a, b)).toBe(false)
    expect(safeEqual(a, a.subarray(0, 31))).toBe(false)
    expect(safeEqual(a.subarray(0, 31), a)).toBe(false)
    expect(safeEqual(Buffer.alloc(0), Buffer.alloc(0))).toBe(true)
    expect(safeEqual(Buffer.alloc(0), a)).toBe(false)
  })
})

describe('deriveResponseKey', () => {
  it('equals generic HKDF-SHA256(s2c, salt, info) for many random inputs', () => {
    for (let i = 0; i < 50; i++) {
      const k = randomBytes(32), salt = randomBytes(16)
      expect(deriveResponseKey(k, salt).equals(hkdf(k, salt, lengthPrefixed('gatehouse/v1 response')))).toBe(true)
    }
  })
})

describe('pooledRandom', () => {
  it('returns fresh, distinct values across pool refills', () => {
    const seen = new Set<string>()
    for (let i = 0; i < 1000; i++) {
      const b = pooledRandom(16)
      expect(b.length).toBe(16)
      seen.add(b.toString('hex'))
    }
    expect(seen.size).toBe(1000)
  })
})
