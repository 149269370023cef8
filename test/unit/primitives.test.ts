/**
 * The primitives under the protocol, against their published test vectors:
 *   HKDF-SHA256  RFC 5869 Appendix A, test cases 1-3 (through keySchedule.hkdf, and extract via hmac)
 *   HMAC-SHA256  RFC 4231 §4.2-4.3, test cases 1-2 (through keySchedule.hmac)
 *   AES-256-GCM  McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", test cases 13-16
 *                (256-bit keys, 96-bit IVs), through node:crypto exactly as envelope.ts uses it.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { hkdf, hmac } from '../../src/protocol/keySchedule.js'

const h = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex')
const range = (from: number, to: number): Buffer => Buffer.from(Array.from({ length: to - from + 1 }, (_, i) => from + i))

describe('HKDF-SHA256 (RFC 5869 Appendix A)', () => {
  const cases = [
    {
      name: 'A.1 basic',
      ikm: h('0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b'),
      salt: h('000102030405060708090a0b0c'),
      info: h('f0f1f2f3f4f5f6f7f8f9'),
      length: 42,
      prk: '077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5',
      okm: '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865',
    },
    {
      name: 'A.2 longer inputs and outputs',
      ikm: range(0x00, 0x4f),
      salt: range(0x60, 0xaf),
      info: range(0xb0, 0xff),
      length: 82,
      prk: '06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244',
      okm:
        'b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c' +
        '59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71' +
        'cc30c58179ec3e87c14c01d5c1f3434f1d87',
    },
    {
      name: 'A.3 zero-length salt and info',
      ikm: h('0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b'),
      salt: Buffer.alloc(0),
      info: Buffer.alloc(0),
      length: 42,
      prk: '19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04',
      okm: '8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8',
    },
  ]

  it('test case inputs have the published lengths', () => {
    expect(cases.map((c) => [c.ikm.length, c.salt.length, c.info.length])).toEqual([[22, 13, 10], [80, 80, 80], [22, 0, 0]])
  })

  for (const c of cases) {
    it(`${c.name}: OKM`, () => {
      expect(hkdf(c.ikm, c.salt, c.info, c.length).toString('hex')).toBe(c.okm)
    })
    it(`${c.name}: PRK = HMAC(salt, IKM), the extract step`, () => {
      // RFC 5869 §2.2: an absent salt is HashLen zero bytes.
      const salt = c.salt.length > 0 ? c.salt : Buffer.alloc(32)
      expect(hmac(salt, c.ikm).toString('hex')).toBe(c.prk)
    })
  }

  it('defaults to 32 bytes, a prefix of the longer output', () => {
    const c = cases[0]!
    const k = hkdf(c.ikm, c.salt, c.info)
    expect(k).toHaveLength(32)
    expect(k.toString('hex')).toBe(c.okm.slice(0, 64))
  })
})

describe('HMAC-SHA256 (RFC 4231)', () => {
  it('test case 1', () => {
    expect(hmac(h('0b'.repeat(20)), Buffer.from('Hi There', 'ascii')).toString('hex'))
      .toBe('b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7')
  })

  it('test case 2 (key shorter than the block, "Jefe")', () => {
    expect(hmac(Buffer.from('Jefe', 'ascii'), Buffer.from('what do ya want for nothing?', 'ascii')).toString('hex'))
      .toBe('5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843')
  })
})

describe('AES-256-GCM (GCM specification test cases 13-16)', () => {
  const K15 = 'feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308'
  const P15 =
    'd9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72' +
    '1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255'
  const C15 =
    '522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa' +
    '8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad'
  const cases = [
    { name: '13', key: '00'.repeat(32), iv: '00'.repeat(12), pt: '', aad: '', ct: '', tag: '530f8afbc74536b9a963b4f1c4cb738b' },
    { name: '14', key: '00'.repeat(32), iv: '00'.repeat(12), pt: '00'.repeat(16), aad: '', ct: 'cea7403d4d606b6e074ec5d3baf39d18', tag: 'd0d1c8a799996bf0265b98b5d48ab919' },
    { name: '15', key: K15, iv: 'cafebabefacedbaddecaf888', pt: P15, aad: '', ct: C15, tag: 'b094dac5d93471bdec1a502270e3cc6c' },
    {
      name: '16 (AAD, 60-byte plaintext)', key: K15, iv: 'cafebabefacedbaddecaf888', pt: P15.slice(0, 120),
      aad: 'feedfacedeadbeeffeedfacedeadbeefabaddad2', ct: C15.slice(0, 120), tag: '76fc6ece0f4e1768cddf8853bb2d551b',
    },
  ]

  for (const c of cases) {
    it(`test case ${c.name}: encrypt`, () => {
      const cipher = createCipheriv('aes-256-gcm', h(c.key), h(c.iv), { authTagLength: 16 })
      if (c.aad) cipher.setAAD(h(c.aad))
      const ct = Buffer.concat([cipher.update(h(c.pt)), cipher.final()])
      expect(ct.toString('hex')).toBe(c.ct)
      expect(cipher.getAuthTag().toString('hex')).toBe(c.tag)
    })

    it(`test case ${c.name}: decrypt, and reject a flipped tag bit`, () => {
      const open = (tag: Buffer) => {
        const d = createDecipheriv('aes-256-gcm', h(c.key), h(c.iv), { authTagLength: 16 })
        if (c.aad) d.setAAD(h(c.aad))
        d.setAuthTag(tag)
        return Buffer.concat([d.update(h(c.ct)), d.final()])
      }
      expect(open(h(c.tag)).toString('hex')).toBe(c.pt)
      const bad = h(c.tag)
      bad[15] = bad[15]! ^ 0x01
      expect(() => open(bad)).toThrow()
    })
  }

  it('test case 16 plaintext is 60 bytes and its AAD 20 bytes', () => {
    expect(h(cases[3]!.pt)).toHaveLength(60)
    expect(h(cases[3]!.aad)).toHaveLength(20)
  })
})
