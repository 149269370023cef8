/**
 * Admin API: the app catalog (apps, allowed versions, routes, groups) and app packages, through
 * the CatalogService (src/security/catalog.ts). Reading is for every role; changing is admin-only.
 *
 * Packages are uploaded as the raw request body (`PUT …/packages/:version?fileName=…`,
 * content-type application/octet-stream), at most 128 MiB, and downloaded the same way.
 */
import { MalformedError, NotFoundError, UnsupportedMediaTypeError } from '../../errors.js'
import type { RouteSpec } from '../router.js'
import type { SecurityServices } from '../services.js'
import {
  adminRoute, auditAdmin, bodyStr, bodyStrArray, onlyFields, onlyQuery, PAGE_PARAMS, paging, param, qStr, readRawBody, slicePage,
} from './adminKit.js'

export const MAX_PACKAGE_BYTES = 128 * 1024 * 1024
const APP_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/
const VERSION_RE = /^[0-9][0-9A-Za-z.+-]{0,31}$/
const FILE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/

export function adminCatalogRoutes(s: SecurityServices): RouteSpec[] {
  return [
    adminRoute(s, {
      method: 'GET', path: '/admin/v1/apps', perm: 'read',
      async handler({ query }) {
        onlyQuery(query, PAGE_PARAMS)
        return { status: 200, body: slicePage(await s.catalog.listApps(), paging(query)) }
      },
    }),
    adminRoute(s, {
      method: 'GET', path: '/admin/v1/apps/:id', perm: 'read',
      async handler({ params, query }) {
        onlyQuery(query, [])
        const app = await s.catalog.getApp(param(params, 'id', APP_ID_RE))
        if (!app) throw new NotFoundError('no such app')
        return { status: 200, body: app }
      },
    }),
    adminRoute(s, {
      method: 'PUT', path: '/admin/v1/apps/:id', perm: 'catalog.write',
      async handler(ctx) {
        onlyFields(ctx.body, ['name', 'minVersion', 'allowedVersions', 'routes', 'groups'])
        const id = param(ctx.params, 'id', APP_ID_RE)
        const b = ctx.body
        const minVersion = b.minVersion === null ? null : bodyStr(b, 'minVersion', { max: 32, optional: true })
        const catalog = s.catalog
        const existed = (await catalog.getApp(id)) !== undefined
        const app = await catalog.upsertApp({
          id, name: bodyStr(b, 'name', { optional: true }), minVersion,
          allowedVersions: bodyStrArray(b, 'allowedVersions', { maxItems: 256 }),
          routes: bodyStrArray(b, 'routes', { maxItems: 256 }),
          groups: bodyStrArray(b, 'groups', { maxItems: 256 }),
        })
        await auditAdmin(s, ctx, existed ? 'app.update' : 'app.create', `app:${id}`, {
          minVersion: app.minVersion, allowedVersions: app.allowedVersions, routes: app.routes, groups: app.groups,
        })
        return { status: existed ? 200 : 201, body: app }
      },
    }),
    adminRoute(s, {
      method: 'DELETE', path: '/admin/v1/apps/:id', perm: 'catalog.write',
      async handler(ctx) {
        const id = param(ctx.params, 'id', APP_ID_RE)
        if (!(await s.catalog.deleteApp(id))) throw new NotFoundError('no such app')
        await auditAdmin(s, ctx, 'app.delete', `app:${id}`)
        return { status: 204 }
      },
    }),
    adminRoute(s, {
      method: 'GET', path: '/admin/v1/apps/:id/packages', perm: 'read',
      async handler({ params, query }) {
        onlyQuery(query, PAGE_PARAMS)
        const id = param(params, 'id', APP_ID_RE)
        const catalog = s.catalog
        if (!(await catalog.getApp(id))) throw new NotFoundError('no such app')
        return { status: 200, body: slicePage(await catalog.listPackages(id), paging(query)) }
      },
    }),
    adminRoute(s, {
      method: 'PUT', path: '/admin/v1/apps/:id/packages/:version', perm: 'catalog.write', rawBody: true,
      async handler(ctx) {
        onlyQuery(ctx.query, ['fileName'])
        const id = param(ctx.params, 'id', APP_ID_RE)
        const version = param(ctx.params, 'version', VERSION_RE)
        const fileName = qStr(ctx.query, 'fileName', FILE_NAME_RE)
        if (!fileName) throw new MalformedError('fileName is required (query parameter)')
        const type = ctx.req.headers['content-type'] ?? ''
        if (!/^application\/octet-stream\s*(;|$)/i.test(type)) throw new UnsupportedMediaTypeError('content-type must be application/octet-stream')
        const bytes = await readRawBody(ctx.req, MAX_PACKAGE_BYTES)
        const rec = await s.catalog.addPackage(id, version, fileName, bytes)
        await auditAdmin(s, ctx, 'package.add', `app:${id}`, { version, fileName, sha256: rec.sha256, size: rec.size })
        return { status: 201, body: rec }
      },
    }),
    adminRoute(s, {
      method: 'GET', path: '/admin/v1/apps/:id/packages/:version', perm: 'read',
      async handler({ params, query }) {
        onlyQuery(query, [])
        const f = await s.catalog.packageFile(param(params, 'id', APP_ID_RE), param(params, 'version', VERSION_RE))
        if (!f) throw new NotFoundError('no such package')
        return {
          status: 200,
          headers: {
            'content-type': 'application/octet-stream',
            'content-length': String(f.record.size),
            'content-disposition': `attachment; filename="${f.record.fileName}"`,
            'x-content-sha256': f.record.sha256,
          },
          stream: (res) => {
            const file = f.open()
            file.on('error', () => res.destroy())
            file.pipe(res)
          },
        }
      },
    }),
  ]
}
