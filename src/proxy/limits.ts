/**
 * Connection-level limits of the device listener, with the standard answers:
 *
 *   request header block over maxHeaderBytes ─────────▶ 431, connection closed
 *   maxConcurrentRequests already in flight (thread) ─▶ 503 + Retry-After, connection closed
 *   no body byte for bodyTimeoutSeconds ──────────────▶ 408, upstream request aborted, closed
 *
 * and what uWebSockets.js enforces by itself, not configurable in this build (measured, see
 * docs/operations.md "Limits"): the whole header block within 8–12 s of the connection or of the
 * previous answer (slowloris: closed without an answer, trickled bytes do not extend it); a body
 * that grows by less than 16 KiB in 8–12 s is closed without an answer; an idle keep-alive
 * connection is closed after 8–12 s. uWS has no per-connection hook, so connections are not
 * capped (they are counted from the kernel, connectionMetrics.ts; docs/operations.md says why no
 * cap): the concurrency limit counts requests in flight per event-loop thread.
 */
import { HeadersTooLargeError, OverloadedError } from '../errors.js'
import type { HttpRequest } from './uws.js'

export interface ProxyLimits {
  maxBodyBytes: number
  maxResponseBytes: number
  /** Request line plus header block (names, values, ": " and CRLF each); 431 above. */
  maxHeaderBytes?: number
  /** Longest pause in a request body (no byte received); 408 past it. At most 7 (uWS, see above). */
  bodyTimeoutSeconds?: number
  /** Requests in flight per event-loop thread; 503 for the next one. */
  maxConcurrentRequests?: number
}

/**
 * Defaults, after hardened edge configs:
 * - 8 KiB of headers: nginx `large_client_header_buffers 4 8k` (one line), Apache
 *   `LimitRequestFieldSize 8190`; a device sends five short headers, the rest is in the envelope.
 * - 5 s without a body byte: below uWS's own 8–12 s cut, so that the device gets an answer; the
 *   hardening guides' `client_body_timeout 10s` (nginx) / `timeout http-request 10s` (HAProxy).
 * - 1024 requests in flight per thread: Envoy's circuit-breaker default `max_requests: 1024`,
 *   nginx's shipped `worker_connections 1024`.
 */
export const LIMIT_DEFAULTS = { maxHeaderBytes: 8192, bodyTimeoutSeconds: 5, maxConcurrentRequests: 1024 } as const

/** uWS closes a stalled body after 8–12 s: a body timeout must fire before, or nobody answers. */
export const MAX_BODY_TIMEOUT_SECONDS = 7

/** The limits with every optional one filled in. */
export function withDefaults(l: ProxyLimits): Required<ProxyLimits> {
  return {
    maxBodyBytes: l.maxBodyBytes,
    maxResponseBytes: l.maxResponseBytes,
    maxHeaderBytes: l.maxHeaderBytes ?? LIMIT_DEFAULTS.maxHeaderBytes,
    bodyTimeoutSeconds: Math.min(l.bodyTimeoutSeconds ?? LIMIT_DEFAULTS.bodyTimeoutSeconds, MAX_BODY_TIMEOUT_SECONDS),
    maxConcurrentRequests: l.maxConcurrentRequests ?? LIMIT_DEFAULTS.maxConcurrentRequests,
  }
}

/**
 * Size of the request line and header block as sent, give or take the HTTP version: what nginx
 * and Node count against their header limits. One native forEach call; measured with
 * `npm run bench:quick` (docs/performance.md).
 */
export function headerBytes(req: HttpRequest, method: string, url: string, query: string): number {
  // "METHOD /url?query HTTP/1.1\r\n", each "name: value\r\n", the blank line.
  let n = method.length + 1 + url.length + (query ? query.length + 1 : 0) + 11 + 2
  req.forEach((k, v) => {
    n += k.length + v.length + 4
  })
  return n
}

/** The refusal for a request over a limit checked before it reaches the request path. */
export function admissionError(limits: Required<ProxyLimits>, inflight: number, req: HttpRequest, method: string, url: string, query: string):
  InstanceType<typeof HeadersTooLargeError> | InstanceType<typeof OverloadedError> | undefined {
  if (headerBytes(req, method, url, query) > limits.maxHeaderBytes) return new HeadersTooLargeError('request header block over the limit')
  if (inflight >= limits.maxConcurrentRequests) return new OverloadedError('too many requests in flight; retry shortly')
  return undefined
}
