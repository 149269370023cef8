/**
 * Load generation for the suite: autocannon for every target of a scenario (the same generator,
 * connections and duration, so that ratios are fair), and enrolled devices whose requests are
 * sealed ahead of time (every envelope needs a fresh sequence number, so autocannon cannot
 * replay one; sealing during the run would put the device's crypto on the generator's core).
 */
import autocannon from 'autocannon'
import { GatehouseDevice } from '../../src/client/device.js'
import { ENVELOPE_MEDIA_TYPE, SESSION_HEADER } from '../../src/protocol/constants.js'
import { USER, USER_PASSWORD, type World } from './targets.js'

export interface LoadFigures {
  rps: number
  p50: number
  p99: number
  p999: number
  /** Bytes per second read by the generator (response bodies and headers). */
  throughput: number
  requests: number
  errors: number
  non2xx: number
  timeouts: number
}

export interface LoadOptions {
  url: string
  duration: number
  connections: number
  ca?: Buffer
  method?: string
  path: string
  headers?: Record<string, string>
  body?: Buffer
  /** Per request body (sealed envelopes); wins over `body`. */
  nextBody?: () => Buffer
  /** Requests per second over all connections (fixed-rate runs); default as fast as possible. */
  overallRate?: number
}

export function load(o: LoadOptions): Promise<LoadFigures> {
  const next = o.nextBody
  const request: autocannon.Request = {
    method: (o.method ?? 'GET') as autocannon.Request['method'], path: o.path, headers: o.headers,
    ...(next ? { setupRequest: (req: autocannon.Request) => ({ ...req, body: next() }) } : o.body ? { body: o.body } : {}),
  }
  return new Promise((resolve, reject) => {
    autocannon({
      url: o.url, duration: o.duration, connections: o.connections, pipelining: 1, timeout: 30,
      ...(o.ca ? { tlsOptions: { ca: o.ca } } : {}), ...(o.overallRate ? { overallRate: o.overallRate } : {}), requests: [request],
    }, (err, r) => {
      if (err) return reject(err)
      resolve({
        rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, p999: r.latency.p99_9, throughput: r.throughput.average,
        requests: r.requests.total, errors: r.errors, non2xx: r.non2xx, timeouts: r.timeouts,
      })
    })
  })
}

export interface BenchDevice {
  device: GatehouseDevice
  sessionId: string
  headers: Record<string, string>
  /**
   * A ring of envelopes sealed ahead; sealed on the fly once it runs out. Head and body joined in
   * one record where they fit (as the SDK sends them) unless `joined` is false.
   */
  sealer(method: string, target: string, body: Buffer | undefined, count: number, joined?: boolean): () => Buffer
}

/** Enroll a device (password sign-in) and open a session. */
export async function enrolledDevice(w: World, o: { appId?: string; deviceId: string; proxyPort?: number }): Promise<BenchDevice> {
  const device = new GatehouseDevice({
    securityUrl: `https://localhost:${w.ports.device}`, ca: w.ca, appId: o.appId ?? 'bench', appVersion: '1.0.0', deviceId: o.deviceId,
    proxyUrl: `https://localhost:${o.proxyPort ?? w.ports.proxy}`, connections: 64,
  })
  await device.enroll(USER, USER_PASSWORD)
  const session = await device.openSession()
  let seq = 1_000_000 // far above anything the SDK itself sends on this session
  const sealOne = (method: string, target: string, body: Buffer | undefined, joined = true) => {
    const s = device.currentSession!
    return device.seal(s, ++seq, Date.now() + s.clockOffset, `${method} ${target}`, body ? { body, headers: [['content-type', 'application/octet-stream']], joined } : {})
  }
  return {
    device, sessionId: session.sessionId,
    headers: { [SESSION_HEADER]: session.sessionId, 'content-type': ENVELOPE_MEDIA_TYPE },
    sealer(method, target, body, count, joined = true) {
      const ring: Buffer[] = []
      for (let i = 0; i < count; i++) ring.push(sealOne(method, target, body, joined))
      let i = 0
      return () => (i < ring.length ? ring[i++]! : sealOne(method, target, body, joined))
    },
  }
}

/** How many envelopes to seal ahead: enough for `duration` s at `rate` req/s, at most ~384 MiB. */
export function presealCount(duration: number, bodyBytes: number, rate = 20_000): number {
  return Math.max(1000, Math.min(Math.ceil(duration * rate), Math.floor((384 * 1024 * 1024) / (bodyBytes + 200))))
}
