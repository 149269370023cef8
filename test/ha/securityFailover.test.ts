/**
 * High availability, item 2: security-server failover without re-login.
 *
 *   20 devices ──securityUrls [S1, S2]──▶ S1 (behind a cuttable relay)  ─┐
 *        │                               S2                              ├─ one PostgreSQL database
 *        └──requests──▶ proxy ──controlPlane.servers [S1, S2]──▶ …       ┘  (sealed sessions)
 *
 * Two SecurityServer instances share one database (the local test PostgreSQL, a fresh schema);
 * one proxy lists both, the devices list both. Under continuous load (every device requesting in
 * a loop, and opening a new session now and then), S1 is killed as the network sees it: its relay
 * destroys every connection and stops listening. The devices must keep working with no
 * enrollment and no refused request: cached sessions stay served by the proxy, sessions whose
 * cache entry expires (1 s here) are validated by S2, new sessions are opened on S2.
 */
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { GatehouseClientError, type GatehouseDevice } from '../../src/client/device.js'
import { createLogger } from '../../src/observability/logger.js'
import type { ProxyServer } from '../../src/proxy/server.js'
import { LocalUserAuthenticator } from '../../src/security/localUsers.js'
import { SecurityServer } from '../../src/security/server.js'
import { openStore, redactUrl } from '../../src/store/openStore.js'
import { PgDb } from '../../src/store/pgDb.js'
import { loadOrCreateMasterKey, SecretBox } from '../../src/store/secretBox.js'
import { postgresAvailable, skipWithout } from '../helpers/services.js'
import { closedPort, counterValue, LogSink, PASSWORD, startRelay, startStack, type Relay, type Stack } from '../helpers/stack.js'

const PG_URL = process.env.GATEHOUSE_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const skip = skipWithout('PostgreSQL', await postgresAvailable(PG_URL), redactUrl(PG_URL))

const DEVICES = 20
/** Each device opens a new session this often, staggered (session opens go to the security servers). */
const OPEN_EVERY_MS = 500

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe.skipIf(skip)('security-server failover without re-login', () => {
  const schema = `gh_ha_${process.pid}_${randomBytes(3).toString('hex')}`
  let stack: Stack | undefined
  let second: SecurityServer | undefined
  const relays: Relay[] = []

  afterAll(async () => {
    try {
      for (const r of relays) await r.cut()
      await second?.close()
      await stack?.close()
    } finally {
      const admin = await PgDb.open({ url: PG_URL })
      try {
        await admin.exec(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
      } finally {
        await admin.close()
      }
    }
  })

  it(`keeps ${DEVICES} devices working through the death of the first security server, with no sign-in and no refused request`, async () => {
    // S1: the stack's security server, on PostgreSQL, reached only through relays (cut = killed).
    stack = await startStack({ database: { url: PG_URL, schema } })
    const s1 = stack.security
    const [s1Device, s1ProxyApi] = [await startRelay(s1.ports.device), await startRelay(s1.ports.proxyApi)]
    relays.push(s1Device, s1ProxyApi)

    // S2: a second instance on the same database, master key and user file.
    const logs2 = new LogSink()
    second = new SecurityServer({
      store: await openStore({ url: PG_URL, schema, secretBox: new SecretBox(loadOrCreateMasterKey(path.join(stack.dir, 'master.key'))) }),
      auth: new LocalUserAuthenticator(path.join(stack.dir, 'users.json')),
      log: createLogger({ level: 'debug', destination: logs2 }),
      tls: { cert: readFileSync(stack.pki.serverCert), key: readFileSync(stack.pki.serverKey), ca: stack.ca },
      listen: { host: '127.0.0.1', port: 0 }, proxyApi: { host: '127.0.0.1', port: 0 },
      proxyUrl: 'https://localhost:1',
      policy: { maxLifetimeMs: 3600_000, idleTimeoutMs: 600_000, clockSkewMs: 300_000 },
      maxBodyBytes: 16 * 1024,
      packagesDir: path.join(stack.dir, 'packages'),
    })
    await second.start()
    const s2 = second

    // One proxy listing both (S1 first); cached sessions re-validated after 1 s.
    const proxy: ProxyServer = await stack.startProxy({
      controlPlane: {
        servers: [`https://localhost:${s1ProxyApi.port}`, `https://localhost:${s2.ports.proxyApi}`],
        tls: { cert: readFileSync(stack.pki.clientCert), key: readFileSync(stack.pki.clientKey), ca: stack.ca },
        timeoutMs: 10_000, // a loaded test machine must not turn a slow answer into a refusal; S1's death is a refused connection
      },
      sessionCache: { maxEntries: 1000, ttlSeconds: 1 },
    })
    const securityUrls = [`https://localhost:${s1Device.port}`, `https://localhost:${s2.ports.device}`]
    const devices: GatehouseDevice[] = []
    for (let i = 0; i < DEVICES; i++) {
      const d = stack.device({ deviceId: `ha-load-${i}`, securityUrls, proxyUrl: `https://localhost:${proxy.port}` })
      await d.enroll('alice', PASSWORD)
      await d.openSession()
      devices.push(d)
    }
    const enrollsOnS2 = () => counterValue(s2.registry, 'gatehouse_security_requests_total', { route: '/v1/enroll' })
    const opensOnS2 = () => counterValue(s2.registry, 'gatehouse_security_session_opens_total', { result: 'ok' })
    const validationsOnS2 = () => counterValue(s2.registry, 'gatehouse_security_validations_total', { result: 'valid' })
    expect(await opensOnS2()).toBe(0) // every device sticks to S1 while it answers

    // Continuous load: every device requests in a loop and opens a new session every OPEN_EVERY_MS.
    let killedAt = Infinity
    let stop = false
    const refused: string[] = []
    const tally = { ok: 0, okAfterKill: 0, opens: 0, opensAfterKill: 0, silentReopens: 0, slowestBefore: 0, slowestAfter: 0 }
    const progress = devices.map(() => ({ okBefore: 0, okAfter: 0, opensBefore: 0, opensAfter: 0 }))
    const describeFailure = (err: unknown) => err instanceof GatehouseClientError ? `${err.status} ${err.code}` : String(err)
    const load = devices.map(async (d, i) => {
      const mine = progress[i]!
      let nextOpen = performance.now() + (OPEN_EVERY_MS * i) / DEVICES
      while (!stop) {
        const now = performance.now()
        if (now >= nextOpen) {
          nextOpen = now + OPEN_EVERY_MS
          try {
            await d.openSession()
            tally.opens++
            if (now >= killedAt) {
              tally.opensAfterKill++
              mine.opensAfter++
            } else mine.opensBefore++
          } catch (err) {
            refused.push(`session open: ${describeFailure(err)}`)
          }
        }
        try {
          const sid = d.sessionId
          const t0 = performance.now()
          const r = await d.request('GET', '/demo/hello')
          const ms = performance.now() - t0
          if (t0 >= killedAt) tally.slowestAfter = Math.max(tally.slowestAfter, ms)
          else tally.slowestBefore = Math.max(tally.slowestBefore, ms)
          // request() re-opens the session by itself on a 401: a session the servers stopped honouring.
          if (d.sessionId !== sid) tally.silentReopens++
          if (r.status !== 200) refused.push(`status ${r.status}`)
          else {
            tally.ok++
            if (t0 >= killedAt) {
              tally.okAfterKill++
              mine.okAfter++
            } else mine.okBefore++
          }
        } catch (err) {
          refused.push(`request: ${describeFailure(err)}`)
          await sleep(10) // a failing device must not spin
        }
      }
    })
    /** Wait for `done` (progress, not time: test machines are shared and sometimes slow). */
    const until = async (what: string, done: () => boolean, minMs: number, maxMs: number) => {
      const start = performance.now()
      while (!(done() && performance.now() - start >= minMs)) {
        if (performance.now() - start > maxMs || refused.length > 50) throw new Error(`${what}: not reached in ${maxMs} ms (${JSON.stringify(tally)}, ${refused.length} refused)`)
        await sleep(50)
      }
    }
    let opensOnS2BeforeKill = -1
    try {
      await until('load on S1', () => progress.every((p) => p.okBefore >= 3 && p.opensBefore >= 1), 1000, 20_000)
      opensOnS2BeforeKill = await opensOnS2()
      // Kill S1: every connection to it destroyed, nothing listening any more.
      killedAt = performance.now()
      await Promise.all([s1Device.cut(), s1ProxyApi.cut()])
      await until('load after the kill', () => progress.every((p) => p.okAfter >= 5 && p.opensAfter >= 2), 2000, 25_000)
    } finally {
      stop = true
      await Promise.all(load)
    }

    const enrollments = await stack.store.listEnrollments({ userName: 'alice' })
    const s2Opens = await opensOnS2()
    const report = `${tally.ok} requests (${tally.okAfterKill} after the kill), ${tally.opens} session opens (${tally.opensAfterKill} after the kill, ` +
      `${s2Opens} served by S2), ${await validationsOnS2()} validations by S2, ${tally.silentReopens} sessions re-opened after a 401, ` +
      `slowest request ${tally.slowestBefore.toFixed(0)} ms before the kill, ${tally.slowestAfter.toFixed(0)} ms after, ${refused.length} refused`
    console.log(`[ha] security-server failover: ${report}${refused.length ? `: ${[...new Set(refused)].join('; ')}` : ''}`)

    expect(refused).toEqual([])
    expect(tally.silentReopens).toBe(0)
    // Before the kill, every session was opened on S1 (devices stick to the server that answers)…
    expect(opensOnS2BeforeKill).toBe(0)
    // …after it, on S2 (S2 also served the opens that were in flight on S1 when it died), and S2 validated for the proxy.
    expect(s2Opens).toBeGreaterThanOrEqual(tally.opensAfterKill)
    expect(s2Opens).toBeLessThanOrEqual(tally.opens)
    expect(await validationsOnS2()).toBeGreaterThan(0)
    // No sign-in and no re-enrollment: S2 never saw an enrollment, the database holds the first ones only.
    expect(await enrollsOnS2()).toBe(0)
    expect(enrollments.map((e) => e.deviceId).sort()).toEqual(devices.map((_, i) => `ha-load-${i}`).sort())
    // The proxy follows S2's revocation log now.
    for (let i = 0; i < 100 && !proxy.revocationStreamConnected; i++) await sleep(50)
    expect(proxy.revocationStreamConnected).toBe(true)
  }, 60_000)
})

describe('device SDK: an ordered list of security servers', () => {
  let stack: Stack | undefined
  let closeBroken: (() => Promise<void>) | undefined

  afterAll(async () => {
    await closeBroken?.()
    await stack?.close()
  })

  it('moves on from a closed port and from a 5xx, sticks to the server that answered, and takes a 4xx as final', async () => {
    stack = await startStack()
    // A security server that answers every request with 503 (its database is down, say).
    let brokenHits = 0
    const broken = createServer({ cert: readFileSync(stack.pki.serverCert), key: readFileSync(stack.pki.serverKey) }, (req, res) => {
      brokenHits++
      req.resume()
      res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":{"code":"GH_ERR_UNAVAILABLE","message":"database unavailable"}}')
    })
    await new Promise<void>((resolve) => broken.listen(0, '127.0.0.1', () => resolve()))
    closeBroken = () => new Promise<void>((resolve) => { broken.close(() => resolve()); broken.closeAllConnections() })
    const brokenUrl = `https://localhost:${(broken.address() as AddressInfo).port}`
    const securityUrls = [`https://localhost:${await closedPort()}`, brokenUrl, stack.securityUrl]

    const d = stack.device({ securityUrls })
    await d.enroll('alice', PASSWORD)
    expect(brokenHits).toBe(1)
    // Sticky: the session open, the request's validation and a second open go straight to the server that answered.
    await d.openSession()
    expect((await d.request('GET', '/demo/hello')).status).toBe(200)
    await d.openSession()
    expect(brokenHits).toBe(1)

    // A 4xx is an answer: a wrong password is not tried on the next server.
    const e = stack.device({ securityUrls: [stack.securityUrl, brokenUrl] })
    const err = await e.enroll('alice', 'wrong password').then(() => undefined, (x: unknown) => x)
    expect(err).toBeInstanceOf(GatehouseClientError)
    expect((err as GatehouseClientError).status).toBe(401)
    expect(brokenHits).toBe(1)

    // Every server failing: the last failure is reported (here the 503).
    const f = stack.device({ securityUrls: [`https://localhost:${await closedPort()}`, brokenUrl] })
    await expect(f.enroll('alice', PASSWORD)).rejects.toMatchObject({ status: 503, code: 'GH_ERR_UNAVAILABLE' })
    expect(brokenHits).toBe(2)
  })
})
