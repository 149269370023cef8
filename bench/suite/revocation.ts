/**
 * Revocation delay: from the admin's action (POST /admin/v1/sessions/:idHash/revoke on the
 * security server) to the first refusal (401) of that session at every proxy. Two `gatehouse
 * proxy` processes follow the security server's revocation stream; each holds the session in its
 * cache (one request through each first). Each proxy is polled with sealed requests back to back
 * from the moment the admin call is sent; the delay of one revocation is the later of the two.
 */
import { Agent, request } from 'undici'
import { ENVELOPE_MEDIA_TYPE, SESSION_HEADER } from '../../src/protocol/constants.js'
import { sessionIdHash } from '../../src/store/sqlStore.js'
import type { BenchDevice } from './load.js'
import type { Row } from './scenarios.js'
import type { World } from './targets.js'

export async function revocationScenario(w: World, dev: BenchDevice, count: number): Promise<Row[]> {
  const ports = [w.ports.proxy, w.ports.proxy2]
  const agent = new Agent({ connect: { ca: w.ca }, connections: 4 })
  let seq = 10
  const call = async (port: number): Promise<number> => {
    const s = dev.device.currentSession!
    const body = dev.device.seal(s, ++seq, Date.now() + s.clockOffset, 'GET /app/bytes?n=0', {})
    const res = await request(`https://localhost:${port}/app/bytes?n=0`, {
      method: 'GET', dispatcher: agent, headers: { [SESSION_HEADER]: s.sessionId, 'content-type': ENVELOPE_MEDIA_TYPE }, body,
    })
    await res.body.dump()
    return res.statusCode
  }
  const delays: number[] = []
  const adminCall: number[] = []
  let failures = 0
  for (let i = 0; i < count; i++) {
    await dev.device.openSession()
    seq = 10
    const sid = dev.device.currentSession!.sessionId
    if ((await Promise.all(ports.map(call))).some((st) => st !== 200)) { failures++; continue }
    const t0 = performance.now()
    const admin = request(`https://localhost:${w.ports.device}/admin/v1/sessions/${sessionIdHash(sid)}/revoke`, {
      method: 'POST', dispatcher: agent, headers: { authorization: `Bearer ${w.adminToken}`, 'content-type': 'application/json' }, body: '{}',
    }).then(async (r) => { await r.body.dump(); adminCall.push(performance.now() - t0); return r.statusCode })
    const refusedAt = await Promise.all(ports.map(async (port) => {
      for (;;) {
        const st = await call(port)
        if (st === 401) return performance.now() - t0
        if (performance.now() - t0 > 10_000) return Infinity
      }
    }))
    if ((await admin) !== 200) failures++
    delays.push(Math.max(...refusedAt))
  }
  await agent.close()
  delays.sort((a, b) => a - b)
  adminCall.sort((a, b) => a - b)
  const pct = (xs: number[], p: number) => xs[Math.max(0, Math.ceil(p * xs.length) - 1)]
  return [{
    scenario: `revocation: admin action to refusal at both proxies (${count} sessions)`, target: 'gatehouse', status: failures ? 'failed' : 'ok', errors: failures,
    p50: pct(delays, 0.5), p99: pct(delays, 0.99), p999: delays.at(-1),
    extra: { adminCallP50Ms: pct(adminCall, 0.5) ?? NaN, maxMs: delays.at(-1) ?? NaN },
  }]
}
