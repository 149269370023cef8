/**
 * Device API of the app catalog: update check and package download. Open to every network, but
 * only to enrolled devices: each request carries the `gatehouse-session` header of a live session
 * of that same app (an outdated app version still opens sessions; the proxy refuses its requests
 * with GH_ERR_APP_VERSION, and these paths are how it gets the update).
 *
 *   GET /v1/catalog/:appId/update?version=X     200 {update} · 204 nothing newer
 *   GET /v1/catalog/:appId/packages/:version    200 the file, streamed (content-length, x-gatehouse-sha256)
 */
import { pipeline } from 'node:stream'
import { AppContextError, MalformedError, NotFoundError } from '../../errors.js'
import { SESSION_HEADER } from '../../protocol/constants.js'
import type { SessionRecord } from '../../store/types.js'
import type { RouteContext, RouteSpec } from '../router.js'
import type { SecurityServices } from '../services.js'
import { versionAllowed } from '../versions.js'

const VERSION_RE = /^[0-9A-Za-z.+-]{1,32}$/

export function catalogRoutes(s: SecurityServices): RouteSpec[] {
  /** The caller's live session, which must belong to the app of the path. */
  const session = async ({ req, params }: RouteContext): Promise<SessionRecord> => {
    const rec = await s.sessions.live(req.headers[SESSION_HEADER])
    if (rec.appId !== params.appId) throw new AppContextError('a session of this app is required')
    return rec
  }
  return [
    {
      method: 'GET', path: '/v1/catalog/:appId/update', access: 'device',
      async handler(ctx) {
        const rec = await session(ctx)
        const version = ctx.query.get('version') ?? rec.appVersion
        if (!VERSION_RE.test(version)) throw new MalformedError('version must match [0-9A-Za-z.+-]{1,32}')
        const update = await s.catalog.checkUpdate(rec.appId, version)
        return update ? { status: 200, body: { update } } : { status: 204 }
      },
    },
    {
      method: 'GET', path: '/v1/catalog/:appId/packages/:version', access: 'device',
      async handler(ctx) {
        const rec = await session(ctx)
        const app = await s.catalog.getApp(rec.appId)
        const pkg = app && versionAllowed(app, ctx.params.version!) ? await s.catalog.packageFile(rec.appId, ctx.params.version!) : undefined
        if (!pkg) throw new NotFoundError('no such package')
        ctx.log.info({ event: 'package_download', appId: rec.appId, version: pkg.record.version, deviceId: rec.deviceId }, 'package download')
        return {
          status: 200,
          headers: {
            'content-type': 'application/octet-stream',
            'content-length': String(pkg.record.size),
            'content-disposition': `attachment; filename="${pkg.record.fileName}"`,
            'x-gatehouse-sha256': pkg.record.sha256,
          },
          stream: (res) => {
            pipeline(pkg.open(), res, (err) => {
              if (err && !res.destroyed) res.destroy()
            })
          },
        }
      },
    },
  ]
}
