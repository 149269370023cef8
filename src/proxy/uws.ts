/**
 * The one module that touches uWebSockets.js. The package is not on the npm registry; we use the
 * `@trufflesuite/uws-js-unofficial` build, which loads on Node 20 and this glibc. Everything else
 * in Gatehouse sees only these types, so swapping the build means editing this file.
 *
 * Caveat (verified): its SSLApp with `ca_file_name` does not refuse clients without a certificate,
 * so it cannot enforce mutual TLS; the mTLS listener of the security server uses node:https.
 */
import { createRequire } from 'node:module'
import type * as Uws from '@trufflesuite/uws-js-unofficial'

const require = createRequire(import.meta.url)
const uws = require('@trufflesuite/uws-js-unofficial') as typeof Uws

export type HttpResponse = Uws.HttpResponse
export type HttpRequest = Uws.HttpRequest
export type TemplatedApp = Uws.TemplatedApp
export type ListenSocket = Uws.us_listen_socket

export interface TlsFiles {
  certFile: string
  keyFile: string
}

export function createTlsApp(tls: TlsFiles): TemplatedApp {
  return uws.SSLApp({ cert_file_name: tls.certFile, key_file_name: tls.keyFile })
}

export function createPlainApp(): TemplatedApp {
  return uws.App()
}

/** Listen; resolves to the bound port (useful with port 0). */
export function listen(app: TemplatedApp, host: string, port: number): Promise<{ socket: ListenSocket; port: number }> {
  return new Promise((resolve, reject) => {
    app.listen(host, port, (socket) => {
      if (!socket) reject(new Error(`cannot listen on ${host}:${port}`))
      else resolve({ socket, port: uws.us_socket_local_port(socket) })
    })
  })
}

/** Stop accepting new connections; existing ones continue until they end. */
export function closeListenSocket(socket: ListenSocket): void {
  uws.us_listen_socket_close(socket)
}

/** Close every connection of the app (after a drain window). */
export function closeApp(app: TemplatedApp): void {
  const a = app as TemplatedApp & { close?: () => void }
  a.close?.()
}

/** Copy a uWS chunk: the ArrayBuffer handed to onData is only valid during the callback. */
export function copyChunk(chunk: ArrayBuffer): Buffer {
  return Buffer.from(new Uint8Array(chunk).slice())
}

export function remoteAddress(res: HttpResponse): string {
  return Buffer.from(res.getRemoteAddressAsText()).toString()
}
