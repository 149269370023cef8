/** Catalog rules: development mode, groups, versions, routes, packages on disk, update choice. */
import { createHash } from 'node:crypto'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { AppNotAllowedError, AppVersionError, ExistsError, MalformedError, NotFoundError } from '../../src/errors.js'
import { CatalogService } from '../../src/security/catalog.js'
import { newMasterKey, SecretBox } from '../../src/store/secretBox.js'
import { openStore } from '../../src/store/openStore.js'
import type { SqlStore } from '../../src/store/sqlStore.js'

let store: SqlStore
let dir: string
let catalog: CatalogService
const changed: string[] = []

beforeEach(async () => {
  const key = newMasterKey()
  store = await openStore({ path: ':memory:', secretBox: new SecretBox({ version: 1, current: key.id, keys: [key] }) })
  dir = mkdtempSync(path.join(tmpdir(), 'gh-catalog-'))
  changed.length = 0
  catalog = new CatalogService({ store, packagesDir: path.join(dir, 'packages'), onChange: async (id) => { changed.push(id) } })
})
afterEach(async () => {
  await store.close()
  rmSync(dir, { recursive: true, force: true })
})

describe('development mode (empty catalog)', () => {
  it('every app may enroll in any version and reach every route', async () => {
    expect(await catalog.isOpen()).toBe(true)
    expect(await catalog.mayEnroll('anything', [])).toBe(true)
    await expect(catalog.assertMayEnroll('anything', 'nightly', [])).resolves.toBeUndefined()
    expect(await catalog.appContext('anything', '0.1')).toEqual({ allowed: true, routes: ['*'] })
  })

  it('the first app switches enforcement on for every other app', async () => {
    await catalog.upsertApp({ id: 'mail', routes: ['/mail/'] })
    expect(await catalog.isOpen()).toBe(false)
    expect(await catalog.mayEnroll('other', [])).toBe(false)
    await expect(catalog.assertMayEnroll('other', '1.0', [])).rejects.toBeInstanceOf(AppNotAllowedError)
    expect(await catalog.appContext('other', '1.0')).toEqual({ allowed: false, code: 'GH_ERR_APP_NOT_ALLOWED', routes: [] })
  })
})

describe('apps', () => {
  it('groups: empty = everyone; otherwise one of the user\'s groups', async () => {
    await catalog.upsertApp({ id: 'mail' })
    await catalog.upsertApp({ id: 'crm', groups: ['sales', 'execs'] })
    expect(await catalog.mayEnroll('mail', [])).toBe(true)
    expect(await catalog.mayEnroll('crm', ['staff'])).toBe(false)
    expect(await catalog.mayEnroll('crm', ['staff', 'execs'])).toBe(true)
    await expect(catalog.assertMayEnroll('crm', '1.0', ['staff'])).rejects.toBeInstanceOf(AppNotAllowedError)
  })

  it('versions: enrollment refused and app context "not allowed" below minVersion', async () => {
    await catalog.upsertApp({ id: 'mail', minVersion: '2.1', routes: ['/mail/', '/calendar/'] })
    await expect(catalog.assertMayEnroll('mail', '2.0.9', [])).rejects.toBeInstanceOf(AppVersionError)
    await expect(catalog.assertMayEnroll('mail', '2.10', [])).resolves.toBeUndefined()
    expect(await catalog.appContext('mail', '2.0')).toEqual({ allowed: false, code: 'GH_ERR_APP_VERSION', routes: ['/mail/', '/calendar/'] })
    expect(await catalog.appContext('mail', '2.1.0')).toEqual({ allowed: true, routes: ['/mail/', '/calendar/'] })
  })

  it('upsert keeps createdAt, dedups lists and announces the change; delete removes the files', async () => {
    const a = await catalog.upsertApp({ id: 'mail', name: 'Mail', routes: ['/mail/', '/mail/'] })
    expect(a.routes).toEqual(['/mail/'])
    await catalog.addPackage('mail', '1.0.0', 'mail.apk', Buffer.from('v1'))
    const b = await catalog.upsertApp({ id: 'mail', name: 'Mail 2' })
    expect(b.createdAt).toBe(a.createdAt)
    expect((await catalog.getApp('mail'))!.name).toBe('Mail 2')
    expect(await catalog.deleteApp('mail')).toBe(true)
    expect(existsSync(path.join(dir, 'packages', 'mail'))).toBe(false)
    expect(await catalog.listPackages('mail')).toEqual([])
    expect(changed).toEqual(['mail', 'mail', 'mail'])
  })

  it.each([
    [{ id: '../etc' }, 'id must match'],
    [{ id: 'mail', minVersion: 'latest' }, 'minVersion must be a dotted numeric version'],
    [{ id: 'mail', routes: ['mail'] }, 'routes[0] must be a route prefix'],
    [{ id: 'mail', allowedVersions: ['1.0', '/x'] }, 'allowedVersions[1] must be a version'],
    [{ id: 'mail', groups: [''] }, 'groups[0] must be a group name'],
  ])('%j is refused', async (input, message) => {
    const err = await catalog.upsertApp(input).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(MalformedError)
    expect((err as Error).message).toContain(message)
  })
})

describe('packages', () => {
  beforeEach(async () => {
    await catalog.upsertApp({ id: 'mail', minVersion: '1.0' })
  })

  it('stored under <dir>/<app>/<version>/<file> with SHA-256 and size; served back whole', async () => {
    const bytes = Buffer.from('package bytes '.repeat(1000))
    const rec = await catalog.addPackage('mail', '1.2.0', 'mail-1.2.0.apk', bytes)
    expect(rec).toMatchObject({ appId: 'mail', version: '1.2.0', fileName: 'mail-1.2.0.apk', size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') })
    const file = path.join(dir, 'packages', 'mail', '1.2.0', 'mail-1.2.0.apk')
    expect(readFileSync(file)).toEqual(bytes)
    expect(readdirSync(path.dirname(file))).toEqual(['mail-1.2.0.apk'])
    const got = await catalog.packageFile('mail', '1.2.0')
    expect(got!.record).toEqual(rec)
    const chunks: Buffer[] = []
    for await (const c of got!.open()) chunks.push(c as Buffer)
    expect(Buffer.concat(chunks)).toEqual(bytes)
  })

  it('refuses path traversal and odd names in every part', async () => {
    for (const [appId, version, fileName] of [
      ['mail', '1.0', '../../evil'], ['mail', '1.0', '.hidden'], ['mail', '1.0', 'a/b.apk'], ['mail', '1.0', 'a\\b.apk'],
      ['mail', '1.0', 'a..apk'], ['mail', '../1.0', 'x.apk'], ['mail', '1.0/..', 'x.apk'], ['..', '1.0', 'x.apk'], ['mail', 'latest', 'x.apk'],
    ] as const) {
      await expect(catalog.addPackage(appId, version, fileName, Buffer.from('x')), `${appId} ${version} ${fileName}`).rejects.toBeInstanceOf(MalformedError)
    }
    expect(existsSync(path.join(dir, 'evil'))).toBe(false)
    expect(await catalog.packageFile('mail', '../1.0')).toBeUndefined()
  })

  it('unknown app: not found; same version twice: exists; the first file stays', async () => {
    await expect(catalog.addPackage('nope', '1.0', 'x.apk', Buffer.from('x'))).rejects.toBeInstanceOf(NotFoundError)
    await catalog.addPackage('mail', '1.0', 'x.apk', Buffer.from('first'))
    await expect(catalog.addPackage('mail', '1.0', 'y.apk', Buffer.from('second'))).rejects.toBeInstanceOf(ExistsError)
    expect(readFileSync(path.join(dir, 'packages', 'mail', '1.0', 'x.apk'), 'utf8')).toBe('first')
  })

  it('a file that vanished or changed size is not served', async () => {
    await catalog.addPackage('mail', '1.0', 'x.apk', Buffer.from('12345'))
    rmSync(path.join(dir, 'packages', 'mail', '1.0', 'x.apk'))
    expect(await catalog.packageFile('mail', '1.0')).toBeUndefined()
  })

  it('update check: the newest allowed version above the current one, numerically', async () => {
    for (const v of ['1.2.0', '1.10.0', '1.9.5', '0.9']) await catalog.addPackage('mail', v, `mail-${v}.apk`, Buffer.from(v))
    const u = await catalog.checkUpdate('mail', '1.2.0')
    expect(u).toMatchObject({ appId: 'mail', version: '1.10.0', fileName: 'mail-1.10.0.apk', size: 6, downloadPath: '/v1/catalog/mail/packages/1.10.0' })
    expect(u!.sha256).toBe(createHash('sha256').update('1.10.0').digest('hex'))
    expect(await catalog.checkUpdate('mail', '1.10')).toBeUndefined()
    expect(await catalog.checkUpdate('mail', '2.0')).toBeUndefined()
    expect((await catalog.checkUpdate('mail', 'nightly'))?.version).toBe('1.10.0')
    // A version the catalog no longer allows is never offered.
    await catalog.upsertApp({ id: 'mail', allowedVersions: ['1.2.0', '1.9.5'] })
    expect((await catalog.checkUpdate('mail', '1.0'))?.version).toBe('1.9.5')
    expect(await catalog.checkUpdate('nope', '1.0')).toBeUndefined()
  })
})
