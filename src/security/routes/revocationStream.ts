/**
 * Proxy API (mutual TLS listener): the revocation stream that proxies follow.
 *
 *   GET /v1/revocations[?since=<seq>]
 *   200 application/x-ndjson, never ends on its own, one JSON object per line:
 *     {"seq":41,"kind":"session","target":"<sha256 hex>","at":1700000000000}   a revocation
 *     {"heartbeat":41}            every heartbeat interval, and first: every record up to 41 was sent
 *   410 GH_ERR_REVOCATION_GAP     record `since` is no longer in the log (truncated, other database):
 *                                 the proxy clears its session cache and follows from now on
 *
 * Without `since` the stream starts at the end of the log (a proxy that has just started has nothing
 * cached to revoke). Each line is written as soon as the record is appended (no buffering); a
 * proxy that stops reading is cut off once too much is queued for it, and resumes with `since`.
 */
import type { ServerResponse } from 'node:http'
import { MalformedError } from '../../errors.js'
import type { RevocationRecord } from '../../store/types.js'
import type { RouteSpec } from '../router.js'
import type { SecurityServices } from '../services.js'

export const NDJSON_TYPE = 'application/x-ndjson'

/** Bytes queued for one slow proxy before its stream is cut (it reconnects and resumes). */
const MAX_QUEUED_BYTES = 1024 * 1024

const SEQ_RE = /^\d{1,15}$/

function parseSince(v: string | null): number | undefined {
  if (v === null) return undefined
  if (!SEQ_RE.test(v)) throw new MalformedError('since must be a non-negative integer')
  return Number(v)
}

function recordLine(r: RevocationRecord): string {
  return `${JSON.stringify({ seq: r.seq, kind: r.kind, target: r.target, at: r.at })}\n`
}

export function revocationStreamRoutes(s: SecurityServices): RouteSpec[] {
  return [
    {
      method: 'GET', path: '/v1/revocations', access: 'proxy',
      async handler({ query, remote, log }) {
        const since = parseSince(query.get('since'))
        // Lines produced before the response is handed over (the replay) wait here.
        const early: string[] = []
        let out: ServerResponse | undefined
        const write = (line: string) => {
          if (!out) {
            early.push(line)
            return
          }
          if (out.destroyed || out.writableEnded) return
          if (out.writableLength > MAX_QUEUED_BYTES) {
            log.warn({ event: 'revocation_stream_cut', remote }, 'revocation stream cut: the proxy does not read')
            out.destroy()
            return
          }
          out.write(line)
        }
        // Subscribing first turns a gap into a plain 410 answer rather than a broken stream.
        const sub = await s.hub.subscribe(since, (r) => write(recordLine(r)))
        return {
          status: 200,
          // connection: close, so that ending the stream (server shutdown) also closes the socket.
          headers: { 'content-type': NDJSON_TYPE, connection: 'close' },
          stream(res) {
            if (res.closed || res.destroyed) {
              sub.close()
              return
            }
            out = res
            res.socket?.setNoDelay(true)
            for (const line of early.splice(0)) write(line)
            const beat = () => write(`{"heartbeat":${sub.cursor}}\n`)
            beat()
            const timer = setInterval(beat, s.hub.heartbeatIntervalMs)
            log.info({ event: 'revocation_stream_open', remote, since: since ?? null, cursor: sub.cursor }, 'proxy follows the revocation log')
            res.on('close', () => {
              clearInterval(timer)
              sub.close()
              log.info({ event: 'revocation_stream_closed', remote, cursor: sub.cursor }, 'revocation stream closed')
            })
          },
        }
      },
    },
  ]
}
