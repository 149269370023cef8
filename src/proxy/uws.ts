/**
 * The one module that touches uWebSockets.js. The package is not on the npm registry; we use the
 * `@trufflesuite/uws-js-unofficial` build, which loads on Node 20 and this glibc. Everything else
 * in Gatehouse sees only these types, so swapping the build means editing this file.
 *
 * Caveats (verified on this build, 20.30.0-unofficial.0; test/integration/proxyLimits.test.ts):
 * - Its SSLApp with `ca_file_name` does not refuse clients without a certificate, so it cannot
 *   enforce mutual TLS; the mTLS listener of the security server uses node:https.
 * - It does not read UWS_HTTP_MAX_HEADERS_SIZE (newer uWS builds do, at load): a header block that
 *   arrives in one read is parsed whatever its size; one split over several reads and larger
 *   than 4 KiB closes the connection without an answer. We still set the variable before the
 *   first load (setMaxHeaderBytes), so that a newer build enforces the configured size itself.
 * - addServerName with an unreadable or mismatched certificate crashes the process (SIGSEGV):
 *   certificates are checked with node:crypto first (certCheck.ts). `domain()` prints two debug
 *   lines on stdout per server name.
 * - A port bound as 0 (any free port) cannot be shared by a second listen (SO_REUSEPORT needs an
 *   explicit port on both): listen() turns 0 into an explicit port first.
 */
import { createRequire } from 'node:module'
import type * as Uws from '@trufflesuite/uws-js-unofficial'

const require = createRequire(import.meta.url)
let loaded: typeof Uws | undefined

/** The native module, loaded on first use (after setMaxHeaderBytes had its chance). */
function lib(): typeof Uws {
  return (loaded ??= require('@trufflesuite/uws-js-unofficial') as typeof Uws)
}

export type HttpResponse = Uws.HttpResponse
export type HttpRequest = Uws.HttpRequest
export type TemplatedApp = Uws.TemplatedApp
export type ListenSocket = Uws.us_listen_socket

export interface TlsFiles {
  certFile: string
  keyFile: string
}

/**
 * Export UWS_HTTP_MAX_HEADERS_SIZE for uWS builds that read it at load. Only the first call before
 * the module loads counts (a process loads it once, for every thread); returns whether it did.
 */
export function setMaxHeaderBytes(bytes: number): boolean {
  if (loaded) return false
  process.env.UWS_HTTP_MAX_HEADERS_SIZE = String(bytes)
  return true
}

export function createTlsApp(tls: TlsFiles): TemplatedApp {
  return lib().SSLApp({ cert_file_name: tls.certFile, key_file_name: tls.keyFile })
}

export function createPlainApp(): TemplatedApp {
  return lib().App()
}

/**
 * Serve another certificate to clients asking for `serverName` (SNI; exact, case-sensitive, or
 * one label of wildcard: "*.example.org"). Returns the app switched to that name's router: routes
 * registered on it next serve that name only. Check the files first (certCheck.ts).
 */
export function addServerName(app: TemplatedApp, serverName: string, tls: TlsFiles): TemplatedApp {
  return app.addServerName(serverName, { cert_file_name: tls.certFile, key_file_name: tls.keyFile }).domain(serverName)
}

function listenOnce(app: TemplatedApp, host: string, port: number): Promise<ListenSocket | false> {
  return new Promise((resolve) => app.listen(host, port, (socket) => resolve(socket)))
}

/**
 * Listen; resolves to the bound port. Port 0 picks a free port, then binds it explicitly, so that
 * another app (a reload, a worker thread) can listen on the same port later (SO_REUSEPORT).
 */
export async function listen(app: TemplatedApp, host: string, port: number): Promise<{ socket: ListenSocket; port: number }> {
  let bind = port
  if (port === 0) {
    const probe = await listenOnce(app, host, 0)
    if (!probe) throw new Error(`cannot listen on ${host}:0`)
    bind = lib().us_socket_local_port(probe as unknown as Uws.us_socket)
    lib().us_listen_socket_close(probe)
  }
  const socket = await listenOnce(app, host, bind)
  if (!socket) throw new Error(`cannot listen on ${host}:${bind}`)
  return { socket, port: lib().us_socket_local_port(socket as unknown as Uws.us_socket) }
}

/** Stop accepting new connections; existing ones continue until they end. */
export function closeListenSocket(socket: ListenSocket): void {
  lib().us_listen_socket_close(socket)
}

/** Close every connection of the app (after a drain window). */
export function closeApp(app: TemplatedApp): void {
  const a = app as TemplatedApp & { close?: () => void }
  a.close?.()
}

/**
 * Copy a uWS chunk: the ArrayBuffer handed to onData is only valid during the callback. One copy
 * into Buffer's pool (small chunks), not a fresh ArrayBuffer per chunk: a malloc'd backing store
 * per request showed in the profile (malloc, ArrayBufferSweeper).
 */
export function copyChunk(chunk: ArrayBuffer): Buffer {
  const out = Buffer.allocUnsafe(chunk.byteLength)
  out.set(new Uint8Array(chunk))
  return out
}

export function remoteAddress(res: HttpResponse): string {
  return Buffer.from(res.getRemoteAddressAsText()).toString('latin1')
}
