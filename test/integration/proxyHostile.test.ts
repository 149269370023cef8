/**
 * Hostile input at the proxy, through the real server over real TLS: malformed and tampered
 * envelopes, bad or dead sessions, replays, media types and unsafe paths. Every refusal is checked
 * for its status, its stable error code and that nothing reached the upstream.
 */
import { randomBytes } from 'node:crypto'
import { Agent } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { GatehouseDevice } from '../../src/client/device.js'
import { EnvelopeEncoder, sealRecordJob } from '../../src/protocol/envelope.js'
import { encodeRequestHead } from '../../src/protocol/head.js'
import { EnvelopeCrafter, PASSWORD, startCountingUpstream, startStack, type CountingUpstream, type Stack } from '../helpers/stack.js'

describe('proxy: hostile input', () => {
  let stack: Stack
  let up: CountingUpstream
  let agent: Agent
  let dev: GatehouseDevice
  let cr: EnvelopeCrafter
  const freshSession = (d?: GatehouseDevice) => cr.freshSession(d)
  const seal: EnvelopeCrafter['seal'] = (...a) => cr.seal(...a)
  const post: EnvelopeCrafter['post'] = (...a) => cr.post(...a)
  const call: EnvelopeCrafter['call'] = (...a) => cr.call(...a)

  beforeAll(async () => {
    up = await startCountingUpstream()
    stack = await startStack({ routes: [{ prefix: '/c/', upstream: up.url, stripPrefix: true, timeoutSeconds: 5 }] })
    agent = new Agent({ connect: { ca: stack.ca } })
    dev = stack.device()
    await dev.enroll('alice', PASSWORD)
    cr = new EnvelopeCrafter(dev, agent, () => stack.proxy.port)
  })
  afterAll(async () => {
    await agent?.close()
    await stack?.close()
    await up?.close()
  })

  it('answers a correct request (control for everything below)', async () => {
    const s = await freshSession()
    const before = up.hits
    const a = await call(s, 'GET', '/c/hello?x=1')
    expect(a.status).toBe(200)
    expect(a.inner).toBe(200)
    expect(up.hits).toBe(before + 1)
    expect(up.paths.at(-1)).toBe('/hello?x=1')
  })

  it('refuses malformed envelopes with 400 GH_ERR_MALFORMED and calls no upstream', async () => {
    const s = await freshSession()
    const good = () => Buffer.from(seal(s, 'POST', '/c/echo', { body: 'hello' }).bytes)
    const randomJunk = randomBytes(200)
    randomJunk[0] = 0x00 // never 'G'
    const badMagic = good(); badMagic[0] = 0x58
    const badVersion = good(); badVersion[2] = 0x02
    const responseKind = good(); responseKind[3] = 0x02
    const unknownFlags = good(); unknownFlags[20] = 0x0a // HEAD | 0x08 (undefined bit)
    const overLong = good(); overLong.writeUIntBE(64 * 1024 + 1, 21, 3)
    const zeroSeq = good(); zeroSeq.fill(0, 4, 12)
    const noHead = good(); noHead[20] = 0x00 // first record without the HEAD flag
    const afterFinal = Buffer.concat([good(), Buffer.from('x')])
    const before = up.hits
    for (const [name, body] of Object.entries({ randomJunk, badMagic, badVersion, responseKind, unknownFlags, overLong, zeroSeq, noHead, afterFinal })) {
      const a = await post('/c/echo', { sid: s.sessionId, body })
      expect({ name, status: a.status, code: a.code }).toEqual({ name, status: 400, code: 'GH_ERR_MALFORMED' })
    }
    expect(up.hits).toBe(before)
  })

  it('refuses a body that ends inside the preamble or before the final record with 400 GH_ERR_TRUNCATED', async () => {
    const s = await freshSession()
    const before = up.hits
    // A preamble cut short is a truncated body, not a malformed one (docs/protocol.md §7, §9 and the
    // `truncated-in-preamble` vector): what arrived is a valid prefix of an envelope.
    const e = seal(s, 'POST', '/c/echo', { body: 'x'.repeat(100) })
    const lastRecord = 4 + 100 + 16
    const cases = {
      empty: Buffer.alloc(0),
      preamble: e.bytes.subarray(0, 10),
      noFinal: e.bytes.subarray(0, e.bytes.length - lastRecord),
      insideRecord: e.bytes.subarray(0, e.bytes.length - 1),
    }
    for (const [name, body] of Object.entries(cases)) {
      const a = await post('/c/echo', { sid: s.sessionId, body })
      expect({ name, status: a.status, code: a.code }).toEqual({ name, status: 400, code: 'GH_ERR_TRUNCATED' })
    }
    expect(up.hits).toBe(before)
    // The refused attempts did not burn the sequence number: the whole envelope still goes through.
    const ok = await post('/c/echo', { sid: s.sessionId, body: e.bytes })
    expect(ok.status).toBe(200)
    expect(up.hits).toBe(before + 1)
  })

  it('refuses tampered envelopes and envelopes sealed for another request or key with 400 GH_ERR_DECRYPT', async () => {
    const s = await freshSession()
    const other = await freshSession()
    const e = seal(s, 'POST', '/c/echo?q=1', { body: 'payload' })
    const cipherFlip = Buffer.from(e.bytes); cipherFlip[24] = cipherFlip[24]! ^ 0x01 // first ciphertext byte of the head record
    const tagFlip = Buffer.from(e.bytes); tagFlip[tagFlip.length - 1] = tagFlip[tagFlip.length - 1]! ^ 0x80 // last tag byte
    const flagFlip = Buffer.from(e.bytes); flagFlip[20] = flagFlip[20]! ^ 0x01 // head record marked FINAL: known flag, but not what was sealed
    const before = up.hits
    const cases: [string, { target: string; method: string; body: Buffer }][] = [
      ['ciphertext byte', { target: '/c/echo?q=1', method: 'POST', body: cipherFlip }],
      ['tag byte', { target: '/c/echo?q=1', method: 'POST', body: tagFlip }],
      ['flags byte', { target: '/c/echo?q=1', method: 'POST', body: flagFlip }],
      ['other path', { target: '/c/hello?q=1', method: 'POST', body: e.bytes }],
      ['other method', { target: '/c/echo?q=1', method: 'PUT', body: e.bytes }],
      ['other query', { target: '/c/echo?q=2', method: 'POST', body: e.bytes }],
      ['query dropped', { target: '/c/echo', method: 'POST', body: e.bytes }],
    ]
    for (const [name, c] of cases) {
      const a = await post(c.target, { method: c.method, sid: s.sessionId, body: c.body })
      expect({ name, status: a.status, code: a.code }).toEqual({ name, status: 400, code: 'GH_ERR_DECRYPT' })
    }
    // Sealed with another session's key, presented under this session id.
    const foreign = seal(other, 'GET', '/c/hello', { seq: 500 })
    const a = await post('/c/hello', { method: 'GET', sid: s.sessionId, body: foreign.bytes })
    expect([a.status, a.code]).toEqual([400, 'GH_ERR_DECRYPT'])
    expect(up.hits).toBe(before)
    // None of that consumed the sequence number: the untouched envelope is accepted once.
    const ok = await post('/c/echo?q=1', { sid: s.sessionId, body: e.bytes })
    expect(ok.status).toBe(200)
    expect(up.hits).toBe(before + 1)
  })

  it('refuses unknown, malformed, missing and closed sessions with 401', async () => {
    const s = await freshSession()
    const body = seal(s, 'GET', '/c/hello').bytes
    const before = up.hits
    const unknown = randomBytes(16).toString('base64url')
    expect(unknown).toHaveLength(22)
    const bad = [unknown, undefined, '', 'short', `${unknown}A`, `${unknown.slice(0, 21)}!`, `${unknown.slice(0, 21)}=`, ' '.repeat(22)]
    for (const sid of bad) {
      const a = await post('/c/hello', { method: 'GET', sid, body })
      expect({ sid, status: a.status, code: a.code }).toEqual({ sid, status: 401, code: 'GH_ERR_SESSION_INVALID' })
    }
    // A session closed by its device before the proxy ever saw it.
    const closed = await freshSession()
    await dev.closeSession()
    const c = await call(closed, 'GET', '/c/hello')
    expect([c.status, c.code]).toEqual([401, 'GH_ERR_SESSION_INVALID'])
    expect(up.hits).toBe(before)
  })

  it('stops serving a closed session and a revoked enrollment once the proxy cache entry expires', async () => {
    const p = await stack.startProxy({ sessionCache: { maxEntries: 100, ttlSeconds: 1 } })
    const other = stack.device()
    const enrollment = await other.enroll('alice', PASSWORD)
    const closing = await freshSession(other)
    expect((await call(closing, 'GET', '/c/hello', { port: p.port })).status).toBe(200)
    await other.closeSession() // closes `closing`, its current session
    const victim = await freshSession(other)
    const unaffected = await freshSession(dev)
    expect((await call(victim, 'GET', '/c/hello', { port: p.port })).status).toBe(200)
    expect((await call(unaffected, 'GET', '/c/hello', { port: p.port })).status).toBe(200)
    expect(await stack.store.revokeEnrollment(enrollment.enrollmentId)).toBe(true)
    await new Promise((r) => setTimeout(r, 1300))
    const before = up.hits
    const a = await call(closing, 'GET', '/c/hello', { port: p.port })
    expect([a.status, a.code]).toEqual([401, 'GH_ERR_SESSION_INVALID'])
    const b = await call(victim, 'GET', '/c/hello', { port: p.port })
    expect([b.status, b.code]).toEqual([401, 'GH_ERR_SESSION_INVALID'])
    expect(up.hits).toBe(before)
    // A session of another enrollment is unaffected.
    expect((await call(unaffected, 'GET', '/c/hello', { port: p.port })).status).toBe(200)
  })

  it('refuses replays, sequence numbers behind the window and stale timestamps with 409', async () => {
    const s = await freshSession()
    const before = up.hits
    const e = seal(s, 'GET', '/c/hello')
    const first = await post('/c/hello', { method: 'GET', sid: s.sessionId, body: e.bytes })
    const again = await post('/c/hello', { method: 'GET', sid: s.sessionId, body: e.bytes })
    expect(first.status).toBe(200)
    expect([again.status, again.code]).toEqual([409, 'GH_ERR_REPLAY'])
    expect(up.hits).toBe(before + 1)

    // Out of order within the window is fine; each number still counts once.
    for (const seq of [10, 5, 7]) expect((await call(s, 'GET', '/c/hello', { seq })).status).toBe(200)
    const dup = await call(s, 'GET', '/c/hello', { seq: 5 })
    expect([dup.status, dup.code]).toEqual([409, 'GH_ERR_REPLAY'])
    expect(up.hits).toBe(before + 4)

    // Window is 1024: after 5000, 100 is too old to tell whether it was used.
    expect((await call(s, 'GET', '/c/hello', { seq: 5000 })).status).toBe(200)
    const old = await call(s, 'GET', '/c/hello', { seq: 100 })
    expect([old.status, old.code]).toEqual([409, 'GH_ERR_REPLAY'])
    expect(up.hits).toBe(before + 5)

    // Correctly sealed, but 10 minutes old or 10 minutes ahead (max skew 120 s).
    for (const ts of [Date.now() - 600_000, Date.now() + 600_000]) {
      const stale = await call(s, 'GET', '/c/hello', { ts })
      expect([stale.status, stale.code]).toEqual([409, 'GH_ERR_STALE'])
    }
    expect(up.hits).toBe(before + 5)
  })

  it('refuses other media types (415), unsafe paths (400) and unrouted paths (404)', async () => {
    const s = await freshSession()
    const before = up.hits
    for (const contentType of ['application/json', 'text/plain', null]) {
      const a = await post('/c/hello', { method: 'GET', sid: s.sessionId, body: seal(s, 'GET', '/c/hello').bytes, contentType })
      expect({ contentType, status: a.status, code: a.code }).toEqual({ contentType, status: 415, code: 'GH_ERR_MEDIA_TYPE' })
    }
    for (const target of ['/c/../admin', '/c/./hello', '/c/%2e%2e/admin', '/c/%2E%2e/admin', '/c/a%2fb', '/c/a%2Fb', '/c/a%5cb', '/c/a\\b', '/c/a%00']) {
      const a = await post(target, { method: 'GET', sid: s.sessionId, body: seal(s, 'GET', target).bytes })
      expect({ target, status: a.status, code: a.code }).toEqual({ target, status: 400, code: 'GH_ERR_MALFORMED' })
    }
    for (const target of ['/', '/nothing/here', '/cc/hello', '/C/hello']) {
      const a = await post(target, { method: 'GET', sid: s.sessionId, body: seal(s, 'GET', target).bytes })
      expect({ target, status: a.status, code: a.code }).toEqual({ target, status: 404, code: 'GH_ERR_NOT_FOUND' })
    }
    expect(up.hits).toBe(before)
  })

  it('joined head records (FLAG_JOINED): answered joined only when the request was, bodies intact both ways', async () => {
    const s = await freshSession()
    const body = randomBytes(60_000)
    for (const [size, joined] of [[5, true], [5, false], [60_000, true], [60_000, false]] as const) {
      const a = await call(s, 'POST', '/c/echo', { body: body.subarray(0, size), joined })
      expect(a.status, `${size} ${joined}`).toBe(200)
      expect(a.joined, `${size} ${joined}`).toBe(joined)
      expect(JSON.parse(a.innerBody!.toString())).toMatchObject({ method: 'POST', bytes: size })
    }
    // A GET joins an empty body to its head (2 bytes): its answer comes back joined.
    for (const joined of [true, false]) {
      const get = await call(s, 'GET', '/c/hello', { joined })
      expect(get.status).toBe(200)
      expect(get.joined).toBe(joined)
      expect(JSON.parse(get.innerBody!.toString())).toMatchObject({ method: 'GET', url: '/hello', bytes: 0 })
    }
    // A body that cannot join the head (over one record) travels unjoined, answered unjoined.
    const big = await call(s, 'POST', '/c/echo', { body: randomBytes(70_000), joined: true })
    expect(big.status).toBe(200)
    expect(big.joined).toBe(false)
    expect(JSON.parse(big.innerBody!.toString())).toMatchObject({ bytes: 70_000 })
  })

  it('refuses joined records that lie about their layout with 400 GH_ERR_MALFORMED and calls no upstream', async () => {
    const s = await freshSession()
    const head = encodeRequestHead({ headers: [['content-type', 'text/plain']] })
    const prefix = (n: number) => Buffer.from([n >> 8, n & 0xff])
    let seq = 50_000
    /** One properly sealed record with any flags (authentication passes: only the layout is wrong). */
    const sealedWith = (records: Array<{ flags: number; plaintext: Buffer }>) => {
      const enc = new EnvelopeEncoder({ kind: 'request', key: s.c2s, sessionId: s.sessionId, requestLine: 'POST /c/echo', seq: ++seq, timestampMs: Date.now() })
      return Buffer.concat([enc.preamble, ...records.map((r, i) => {
        const job = enc.prepare(r.plaintext, i === records.length - 1)
        job.aad[job.aad.length - 1] = r.flags
        job.header[0] = r.flags
        return sealRecordJob(job)
      })])
    }
    const cases = {
      'head length past the record': sealedWith([{ flags: 0x07, plaintext: Buffer.concat([prefix(head.length + 1), head]) }]),
      'shorter than its length prefix': sealedWith([{ flags: 0x07, plaintext: Buffer.from([0]) }]),
      'joined flag on a body record': sealedWith([{ flags: 0x02, plaintext: head }, { flags: 0x05, plaintext: Buffer.concat([prefix(0), Buffer.from('x')]) }]),
      'joined head that is not JSON': sealedWith([{ flags: 0x07, plaintext: Buffer.concat([prefix(3), Buffer.from('{{{body')]) }]),
    }
    const before = up.hits
    for (const [name, bytes] of Object.entries(cases)) {
      const a = await post('/c/echo', { sid: s.sessionId, body: bytes })
      expect(a.status, name).toBe(400)
      expect(JSON.parse(a.text).error.code, name).toBe('GH_ERR_MALFORMED')
    }
    expect(up.hits).toBe(before)
    // The session still works past the sequence numbers those authenticated envelopes used.
    expect((await call(s, 'POST', '/c/echo', { body: 'after', joined: true, seq: ++seq })).status).toBe(200)
  })

  it('logged and answered no secret and no stack trace', async () => {
    const { secrets, errorBodies } = cr
    const logs = stack.logs.text
    const lower = logs.toLowerCase()
    expect(stack.logs.lines.length).toBeGreaterThan(10)
    expect(secrets.size).toBeGreaterThan(10)
    for (const v of [PASSWORD, ...secrets]) {
      expect(logs.includes(v), `log contains a secret (${v.length} chars)`).toBe(false)
      expect(lower.includes(v.toLowerCase()), `log contains a secret (${v.length} chars)`).toBe(false)
    }
    expect(logs).not.toMatch(/(^|\\n|\n)\s+at /)
    expect(errorBodies.length).toBeGreaterThan(30)
    for (const b of errorBodies) {
      expect(b).toMatch(/^\{"error":\{"code":"GH_ERR_[A-Z_]+","message":"[^"]*"\}\}$/)
      expect(b).not.toMatch(/\bat .*[(/]/)
      for (const v of secrets) expect(b.includes(v)).toBe(false)
    }
  })
})
