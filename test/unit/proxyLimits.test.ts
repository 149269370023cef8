/**
 * The proxy's limit helpers one by one: defaults and the body-timeout cap (limits.ts), the header
 * size count and admission verdicts, the body-timeout sweep (inFlight.ts), the access log's
 * switch and line (accessLog.ts).
 */
import { Writable } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { HeadersTooLargeError, OverloadedError } from '../../src/errors.js'
import { createLogger } from '../../src/observability/logger.js'
import { AccessLog, ms } from '../../src/proxy/accessLog.js'
import { InFlight } from '../../src/proxy/inFlight.js'
import { admissionError, headerBytes, LIMIT_DEFAULTS, MAX_BODY_TIMEOUT_SECONDS, withDefaults } from '../../src/proxy/limits.js'
import { Listener } from '../../src/proxy/listeners.js'
import type { HttpRequest } from '../../src/proxy/uws.js'

/** The part of a uWS HttpRequest the header count uses. */
function fakeRequest(headers: [string, string][]): HttpRequest {
  return { forEach: (cb: (k: string, v: string) => void) => headers.forEach(([k, v]) => cb(k, v)) } as unknown as HttpRequest
}

describe('limits', () => {
  it('fills in the defaults and caps bodyTimeoutSeconds below uWS\'s own 8 s cut', () => {
    expect(withDefaults({ maxBodyBytes: 1, maxResponseBytes: 2 })).toEqual({ maxBodyBytes: 1, maxResponseBytes: 2, ...LIMIT_DEFAULTS })
    expect(withDefaults({ maxBodyBytes: 1, maxResponseBytes: 2, bodyTimeoutSeconds: 60 }).bodyTimeoutSeconds).toBe(MAX_BODY_TIMEOUT_SECONDS)
    expect(MAX_BODY_TIMEOUT_SECONDS).toBeLessThan(8)
  })

  it('counts the request line and every header line as sent', () => {
    const req = fakeRequest([['host', 'localhost'], ['content-length', '12']])
    // "GET /a?b=1 HTTP/1.1\r\n" = 21, "host: localhost\r\n" = 17, "content-length: 12\r\n" = 20, "\r\n"
    expect(headerBytes(req, 'GET', '/a', 'b=1')).toBe(21 + 17 + 20 + 2)
    expect(headerBytes(fakeRequest([]), 'POST', '/', '')).toBe('POST / HTTP/1.1\r\n\r\n'.length)
  })

  it('refuses a header block over the limit (431) before counting requests in flight (503)', () => {
    const l = withDefaults({ maxBodyBytes: 1, maxResponseBytes: 1, maxHeaderBytes: 100, maxConcurrentRequests: 2 })
    const small = fakeRequest([['host', 'x']])
    const big = fakeRequest([['x-pad', 'a'.repeat(100)]])
    expect(admissionError(l, 0, small, 'GET', '/', '')).toBeUndefined()
    expect(admissionError(l, 1, small, 'GET', '/', '')).toBeUndefined()
    expect(admissionError(l, 2, small, 'GET', '/', '')).toBeInstanceOf(OverloadedError)
    expect(admissionError(l, 2, big, 'GET', '/', '')).toBeInstanceOf(HeadersTooLargeError)
    expect(new OverloadedError('x').status).toBe(503)
  })
})

describe('InFlight: the body timeout sweep', () => {
  interface X { bodyDone: boolean; finished: boolean; paused: boolean }
  const make = (): X => ({ bodyDone: false, finished: false, paused: false })

  it('fires a request whose body has not progressed for the timeout, once', () => {
    const fired: X[] = []
    const f = new InFlight<X>({ bodyTimeoutMs: () => 1000, bodyTimedOut: (x) => fired.push(x) })
    const stalled = make(), moving = make(), done = make()
    f.add(stalled, '', undefined, 0)
    f.add(moving, '', undefined, 0)
    f.add(done, '', undefined, 0)
    f.body(moving, 10, 900)
    done.bodyDone = true
    f.sweep(1001)
    expect(fired).toEqual([stalled])
    f.sweep(1500)
    expect(fired).toEqual([stalled])
    f.sweep(1901)
    expect(fired).toEqual([stalled, moving])
    // Neither was finished by the callback: each fires again a timeout later, not at every sweep.
    f.sweep(2000)
    expect(fired.length).toBe(2)
    f.sweep(5000)
    expect(fired).toEqual([stalled, moving, stalled, moving])
  })

  it('does not fire while the proxy itself paused reading (backpressure), and restarts the clock on resume', () => {
    const fired: X[] = []
    const f = new InFlight<X>({ bodyTimeoutMs: () => 1000, bodyTimedOut: (x) => fired.push(x) })
    const x = make()
    f.add(x, '', undefined, 0)
    x.paused = true
    f.sweep(5000)
    x.paused = false
    f.sweep(5500)
    expect(fired).toEqual([])
    f.sweep(6001)
    expect(fired).toEqual([x])
  })

  it('counts bytes and upstream time for the access log, and the listener\'s requests in flight', () => {
    const f = new InFlight<X>({ bodyTimeoutMs: () => 1000, bodyTimedOut: () => undefined })
    const l = new Listener(1, {} as never, { certFile: 'c', keyFile: 'k' })
    const x = make()
    f.add(x, '203.0.113.7', l)
    expect(l.inflight).toBe(1)
    f.body(x, 100)
    f.body(x, 50)
    f.sent(x, 70)
    f.upstream(x, 12.34)
    expect(f.end(x)).toMatchObject({ bytesIn: 150, bytesOut: 70, upstreamMs: 12.34, remote: '203.0.113.7' })
    expect(l.inflight).toBe(0)
    expect(f.end(x)).toBeUndefined()
    expect(l.inflight).toBe(0)
  })
})

describe('AccessLog', () => {
  const sink = () => {
    const lines: string[] = []
    const stream = new Writable({ write(chunk: Buffer, _e, cb) { lines.push(...chunk.toString().split('\n').filter(Boolean)); cb() } })
    return { lines, log: createLogger({ level: 'info', destination: stream }) }
  }
  const entry = { route: '/mail/', method: 'POST', status: 200, durationMs: 1.2, bytesIn: 10, bytesOut: 20, remote: '203.0.113.7', upstreamMs: 0.9 }

  it('writes one info line with event "access" when on, nothing when off or below the level', () => {
    const { lines, log } = sink()
    const a = new AccessLog(log, true)
    expect(a.enabled).toBe(true)
    a.write(entry)
    a.enabled = false
    expect(a.enabled).toBe(false)
    a.write(entry)
    a.enabled = true
    expect(a.enabled).toBe(true)
    const quiet = sink()
    quiet.log.level = 'warn'
    const b = new AccessLog(quiet.log, true)
    expect(b.enabled).toBe(false)
    b.write(entry)
    expect(quiet.lines).toEqual([])
    expect(lines.length).toBe(1)
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 'info', event: 'access', msg: 'request', ...entry })
  })

  it('rounds milliseconds to one decimal', () => {
    expect([ms(1.26), ms(0.04), ms(12)]).toEqual([1.3, 0, 12])
  })
})
