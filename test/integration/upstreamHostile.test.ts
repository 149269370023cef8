/**
 * A hostile or broken upstream, through the whole stack: answers that would smuggle or desync
 * (Transfer-Encoding with Content-Length, bytes after the answer, two lengths), garbage, a header
 * block that never ends, a lying chunked body. The device gets 502 GH_ERR_UPSTREAM (or an answer
 * cut before its FINAL record), the proxy keeps serving, and the next request on the same route
 * gets its own answer, never bytes left over from a bad one.
 */
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { GatehouseClientError, type GatehouseDevice } from '../../src/client/device.js'
import { startStack, type Stack } from '../helpers/stack.js'

const OK = (body: string) => `HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\n\r\n${body}`

/** Raw answers by request path: what a hostile upstream could send. */
const ANSWERS: Record<string, string> = {
  '/te-and-cl': 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
  '/two-lengths': 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 50\r\n\r\nhello',
  '/garbage': 'SSH-2.0-OpenSSH_9.2\r\n\r\n',
  '/obs-fold': 'HTTP/1.1 200 OK\r\nx-a: one\r\n two\r\ncontent-length: 2\r\n\r\nok',
  '/nul-in-value': 'HTTP/1.1 200 OK\r\nx-a: a\0b\r\ncontent-length: 2\r\n\r\nok',
  '/huge-head': `HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(20_000)}\r\ncontent-length: 2\r\n\r\nok`,
  '/bad-chunk': 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n',
  // A smuggled second answer right after the first: must never reach the next request.
  '/smuggle': OK('first') + OK('SMUGGLED'),
  '/switching': 'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n',
}

async function rawUpstream(): Promise<{ url: string; close(): Promise<void>; connections: () => number }> {
  const sockets = new Set<Socket>()
  let connections = 0
  const server = createServer((s) => {
    connections++
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
    s.on('error', () => undefined)
    let buf = ''
    s.on('data', (d) => {
      buf += d.toString('latin1')
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        const head = buf.slice(0, end)
        const len = /content-length: (\d+)/i.exec(head)
        const total = end + 4 + (len ? Number(len[1]) : 0)
        if (buf.length < total) return
        buf = buf.slice(total)
        const path = head.split(' ')[1]! // the route strips its prefix
        s.write(ANSWERS[path] ?? OK(`ok ${path}`), 'latin1')
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    connections: () => connections,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy()
      server.close(() => resolve())
    }),
  }
}

async function call(dev: GatehouseDevice, path: string): Promise<{ status: number; code?: string; body?: string }> {
  try {
    const r = await dev.request('GET', path)
    return { status: r.status, body: r.text() }
  } catch (err) {
    if (err instanceof GatehouseClientError) return { status: err.status, code: err.code }
    throw err
  }
}

describe('a hostile upstream, through the proxy', () => {
  let stack: Stack
  let up: Awaited<ReturnType<typeof rawUpstream>>
  let dev: GatehouseDevice

  beforeAll(async () => {
    stack = await startStack()
    up = await rawUpstream()
    // One connection: every request reuses what the one before it left behind.
    const p = await stack.startProxy({ routes: [{ prefix: '/h/', upstream: up.url, stripPrefix: true, timeoutSeconds: 5 }], upstreamConnections: 1 })
    dev = await stack.enrolledDevice({ proxyUrl: `https://localhost:${p.port}` })
  })
  afterAll(async () => {
    await stack?.close()
    await up?.close()
  })

  it('answers 502 GH_ERR_UPSTREAM for every framing attack and garbage, and the next request gets its own answer', async () => {
    expect(await call(dev, '/h/plain')).toEqual({ status: 200, body: 'ok /plain' })
    for (const path of Object.keys(ANSWERS).filter((p) => p !== '/smuggle')) {
      expect(await call(dev, `/h${path}`), path).toEqual({ status: 502, code: 'GH_ERR_UPSTREAM' })
      expect(await call(dev, `/h/after${path}`), `after ${path}`).toEqual({ status: 200, body: `ok /after${path}` })
    }
  })

  it('a smuggled second answer is dropped with its connection, never handed to the next request', async () => {
    const before = up.connections()
    expect(await call(dev, '/h/smuggle')).toEqual({ status: 200, body: 'first' })
    for (let i = 0; i < 5; i++) expect(await call(dev, `/h/next-${i}`)).toEqual({ status: 200, body: `ok /next-${i}` })
    // The connection that carried the extra bytes was closed: a new one served the rest.
    expect(up.connections()).toBeGreaterThan(before)
  })

  it('the proxy logged the refusals without crashing, and no secret', () => {
    expect(stack.logs.text).not.toMatch(/"level":"?(fatal|60)/)
    expect(dev.sessionId).toBeTruthy()
    expect(stack.logs.text).not.toContain(dev.sessionId!)
  })
})
