/**
 * The admin dashboard's static files under /admin/ (access 'admin'). The page holds no data: it
 * signs in and reads everything through the admin API. Served with a strict CSP: same-origin
 * script, style and fetch only, no inline code, no framing.
 */
import { DASHBOARD_CSS, DASHBOARD_HTML, DASHBOARD_JS } from '../dashboard/page.js'
import type { RouteSpec } from '../router.js'

export const DASHBOARD_CSP = [
  "default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "img-src 'self' data:",
  "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
].join('; ')

const SECURITY_HEADERS = {
  'content-security-policy': DASHBOARD_CSP,
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
}

function file(path: string, type: string, content: string): RouteSpec {
  const raw = Buffer.from(content, 'utf8')
  return {
    method: 'GET', path, access: 'admin', label: path,
    async handler() {
      return { status: 200, raw, headers: { ...SECURITY_HEADERS, 'content-type': type, 'content-length': String(raw.length) } }
    },
  }
}

export function dashboardRoutes(): RouteSpec[] {
  return [
    {
      method: 'GET', path: '/admin', access: 'admin',
      async handler() {
        return { status: 308, headers: { location: '/admin/', 'content-length': '0' }, raw: '' }
      },
    },
    file('/admin/', 'text/html; charset=utf-8', DASHBOARD_HTML),
    file('/admin/dashboard.js', 'text/javascript; charset=utf-8', DASHBOARD_JS),
    file('/admin/dashboard.css', 'text/css; charset=utf-8', DASHBOARD_CSS),
  ]
}
