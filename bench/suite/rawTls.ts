/**
 * A minimal HTTP/1.1-over-TLS client on raw sockets, for what autocannon cannot do: a new TLS
 * connection per request (full handshakes, no session resumption), and thousands of connections
 * kept open with almost no client memory each.
 */
import tls from 'node:tls'

/** Resolves when one HTTP/1.1 response has fully arrived on the socket (content-length or chunked). */
class ResponseReader {
  private buf: Buffer = Buffer.alloc(0)
  private waiting: { resolve: (status: number) => void; reject: (e: Error) => void } | undefined
  private closed: Error | undefined

  constructor(private readonly socket: tls.TLSSocket) {
    socket.on('data', (d: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d
      this.check()
    })
    const fail = (e?: Error) => {
      this.closed = e ?? new Error('connection closed before the response ended')
      const w = this.waiting
      this.waiting = undefined
      w?.reject(this.closed)
    }
    socket.on('error', fail)
    socket.on('close', () => fail())
  }

  /** The next response's status; rejects when the connection closes first or after `timeoutMs`. */
  next(timeoutMs = 30_000): Promise<number> {
    if (this.closed) return Promise.reject(this.closed)
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiting = undefined
        reject(new Error('no response in time'))
      }, timeoutMs)
      this.waiting = { resolve: (s) => { clearTimeout(t); resolve(s) }, reject: (e) => { clearTimeout(t); reject(e) } }
      this.check()
    })
  }

  private check(): void {
    if (!this.waiting) return
    const end = this.buf.indexOf('\r\n\r\n')
    if (end < 0) return
    const head = this.buf.subarray(0, end).toString('latin1')
    const status = Number(head.slice(9, 12))
    const len = /\r\ncontent-length:\s*(\d+)/i.exec(head)
    let total: number
    if (len) {
      total = end + 4 + Number(len[1])
      if (this.buf.length < total) return
    } else if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
      const term = this.buf.indexOf('\r\n0\r\n\r\n', end)
      const first = this.buf.subarray(end + 4, end + 9).toString('latin1') === '0\r\n\r\n'
      if (first) total = end + 9
      else if (term >= 0) total = term + 7
      else return
    } else {
      total = end + 4
    }
    this.buf = this.buf.subarray(total)
    const w = this.waiting
    this.waiting = undefined
    w.resolve(status)
  }
}

export function httpRequest(method: string, target: string, headers: Record<string, string>, body?: Buffer): Buffer {
  const lines = [`${method} ${target} HTTP/1.1`, 'host: localhost', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)]
  if (body) lines.push(`content-length: ${body.length}`)
  const head = Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1')
  return body ? Buffer.concat([head, body]) : head
}

export function connect(port: number, ca: Buffer, timeoutMs = 30_000): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca })
    const t = setTimeout(() => { s.destroy(); reject(new Error('TLS handshake timed out')) }, timeoutMs)
    s.once('secureConnect', () => { clearTimeout(t); s.removeListener('error', reject); resolve(s) })
    s.once('error', (e) => { clearTimeout(t); reject(e) })
  })
}

/** One request on a new connection (`connection: close`), then the connection is closed. */
export async function oneShot(port: number, ca: Buffer, request: Buffer): Promise<number> {
  const s = await connect(port, ca)
  try {
    const r = new ResponseReader(s)
    s.write(request)
    return await r.next()
  } finally {
    s.destroy()
  }
}

export interface HandshakeFigures { rps: number; p50: number; p99: number; p999: number; requests: number; errors: number; non2xx: number }

/** New connection per request, `concurrency` at a time, for `duration` s. */
export async function handshakeLoad(port: number, ca: Buffer, nextRequest: () => Buffer, duration: number, concurrency: number): Promise<HandshakeFigures> {
  const lat: number[] = []
  let errors = 0
  let non2xx = 0
  const t0 = performance.now()
  const end = t0 + duration * 1000
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < end) {
      const s = performance.now()
      try {
        const status = await oneShot(port, ca, nextRequest())
        if (status < 200 || status > 299) non2xx++
        lat.push(performance.now() - s)
      } catch {
        errors++
      }
    }
  }))
  const wall = (performance.now() - t0) / 1000
  lat.sort((a, b) => a - b)
  const pct = (p: number) => lat.length ? lat[Math.min(lat.length - 1, Math.ceil(p * lat.length) - 1)]! : NaN
  return { rps: lat.length / wall, p50: pct(0.5), p99: pct(0.99), p999: pct(0.999), requests: lat.length, errors, non2xx }
}

/** A connection kept open: send a request now and then so that the server's idle timer never fires. */
export class KeptConnection {
  private constructor(readonly socket: tls.TLSSocket, private readonly reader: ResponseReader) {}

  static async open(port: number, ca: Buffer): Promise<KeptConnection> {
    const s = await connect(port, ca)
    return new KeptConnection(s, new ResponseReader(s))
  }

  async request(bytes: Buffer): Promise<number> {
    const p = this.reader.next()
    this.socket.write(bytes)
    return p
  }

  close(): void {
    this.socket.destroy()
  }
}
