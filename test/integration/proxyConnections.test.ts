/**
 * The connection gauges through a real proxy (uWebSockets.js, real TLS), scraped over HTTP from
 * its admin port: keep-alive TLS connections counted while open and no more once closed, and the
 * accept backlog of the device listener while the proxy's event loop is held.
 */
import { spawn } from 'node:child_process'
import { existsSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { Agent, request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { procSource, readPortsSync } from '../../src/proxy/socketTable.js'
import { ENVELOPE_MEDIA_TYPE, SESSION_HEADER } from '../../src/protocol/constants.js'
import { EnvelopeCrafter, startStack, type Stack } from '../helpers/stack.js'

async function scrape(adminPort: number): Promise<string> {
  const res = await request(`http://127.0.0.1:${adminPort}/metrics`)
  return res.body.text()
}

function gauge(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name}\\{listener="device"[^}]*\\} ([0-9.e+-]+)$`, 'm').exec(text)
  return m ? Number(m[1]) : undefined
}

/** Scrape until `name` equals `want` (the reading is cached 1 s); its last value otherwise. */
async function until(adminPort: number, name: string, want: number, ms = 6000): Promise<number | undefined> {
  const end = Date.now() + ms
  let v: number | undefined
  while (Date.now() < end) {
    v = gauge(await scrape(adminPort), name)
    if (v === want) return v
    await new Promise((r) => setTimeout(r, 200))
  }
  return v
}

/** A TLS connection that got one 200 answer (a sealed envelope through the route) and stays open. */
async function keptAlive(port: number, ca: Buffer, envelope: Uint8Array, sid: string): Promise<TLSSocket> {
  const s = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca })
  s.on('error', () => undefined)
  await new Promise<void>((resolve, reject) => {
    s.once('secureConnect', () => {
      s.write(`GET /demo/hello HTTP/1.1\r\nhost: localhost\r\n${SESSION_HEADER}: ${sid}\r\ncontent-type: ${ENVELOPE_MEDIA_TYPE}\r\ncontent-length: ${envelope.length}\r\n\r\n`)
      s.write(envelope)
    })
    s.once('data', (d: Buffer) => {
      const head = d.toString('latin1')
      if (head.startsWith('HTTP/1.1 200') && !/^connection: close/im.test(head)) resolve()
      else reject(new Error(head.slice(0, 200)))
    })
    s.once('error', reject)
  })
  return s
}

describe('proxy connection gauges', () => {
  let stack: Stack
  let agent: Agent

  beforeAll(async () => {
    stack = await startStack()
    agent = new Agent({ connect: { ca: stack.ca } })
  })
  afterAll(async () => {
    await agent?.close()
    await stack?.close()
  })

  it('counts keep-alive TLS connections on the device port while open, and not once closed', async () => {
    const { port, adminPort } = stack.proxy
    const idle = await scrape(adminPort)
    expect(gauge(idle, 'gatehouse_proxy_connections_active')).toBe(0)
    expect(gauge(idle, 'gatehouse_proxy_listen_queue')).toBe(0)
    expect(idle).toMatch(/^# TYPE gatehouse_proxy_connections_active gauge$/m)

    const dev = await stack.enrolledDevice()
    const cr = new EnvelopeCrafter(dev, agent, () => port)
    const session = await cr.freshSession()
    // The device only spoke to the security server: nothing of it is on the device port.
    expect(await until(adminPort, 'gatehouse_proxy_connections_active', 0)).toBe(0)
    const n = 12
    const sockets: TLSSocket[] = []
    try {
      await Promise.all(Array.from({ length: n }, async () => {
        sockets.push(await keptAlive(port, stack.ca, cr.seal(session, 'GET', '/demo/hello').bytes, session.sessionId))
      }))
      // The scrapes go to the admin port: not counted. uWS closes idle connections after 8–12 s.
      expect(await until(adminPort, 'gatehouse_proxy_connections_active', n)).toBe(n)
      await new Promise((r) => setTimeout(r, 1100))
      expect(gauge(await scrape(adminPort), 'gatehouse_proxy_connections_active')).toBe(n)
      sockets.slice(0, 5).forEach((s) => s.destroy())
      expect(await until(adminPort, 'gatehouse_proxy_connections_active', n - 5)).toBe(n - 5)
    } finally {
      sockets.forEach((s) => s.destroy())
    }
    expect(await until(adminPort, 'gatehouse_proxy_connections_active', 0)).toBe(0)
  })

  it('shows the accept backlog while the proxy\'s event loop is held, then the accepted connections', async () => {
    const { port, adminPort } = stack.proxy
    expect(await until(adminPort, 'gatehouse_proxy_connections_active', 0)).toBe(0)
    const flag = path.join(os.tmpdir(), `gh-conns-${process.pid}-${Date.now()}`)
    const k = 6
    // Plain TCP connections from another process: the kernel completes them, uWS accepts them
    // only when this process's event loop (the proxy's) runs again.
    const child = spawn(process.execPath, ['-e', `
      const net = require('node:net'); let n = 0; const keep = []
      for (let i = 0; i < ${k}; i++) keep.push(net.connect(${port}, '127.0.0.1', () => { if (++n === ${k}) require('node:fs').writeFileSync(process.argv[1], '') }).on('error', () => {}))
      setTimeout(() => {}, 30000)`, flag], { stdio: 'ignore' })
    try {
      const sleep = new Int32Array(new SharedArrayBuffer(4))
      const end = Date.now() + 10_000
      while (!existsSync(flag) && Date.now() < end) Atomics.wait(sleep, 0, 0, 20)
      expect(existsSync(flag)).toBe(true)
      const held = readPortsSync([port], procSource('127.0.0.1')).get(port)!
      expect(held).toEqual({ connections: 0, listenQueue: k, listening: true })
      // Loop released: uWS accepts them (they send nothing; uWS would close them in 8–12 s).
      expect(await until(adminPort, 'gatehouse_proxy_connections_active', k)).toBe(k)
      expect(gauge(await scrape(adminPort), 'gatehouse_proxy_listen_queue')).toBe(0)
    } finally {
      child.kill('SIGKILL')
      rmSync(flag, { force: true })
    }
    expect(await until(adminPort, 'gatehouse_proxy_connections_active', 0)).toBe(0)
  })
})
