/**
 * Master key rotation while a whole Gatehouse runs: the key file gains a new current key (the
 * running server picks it up by watching the file), every stored secret is re-sealed, devices
 * keep working during and after, every row ends up under the new key, and pruning removes the
 * old key only once no row uses it.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLogger } from '../../src/observability/logger.js'
import { addCurrentKey, keyIdsInUse, pruneUnusedKeys, ReloadableSecretBox, watchMasterKey } from '../../src/security/masterKeys.js'
import { openStore } from '../../src/store/openStore.js'
import { loadMasterKey, loadOrCreateMasterKey } from '../../src/store/secretBox.js'
import type { SqlStore } from '../../src/store/sqlStore.js'
import { LogSink, startStack, type Stack } from '../helpers/stack.js'

const until = async (cond: () => boolean, ms = 5000) => {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time')
    await new Promise((r) => setTimeout(r, 20))
  }
}

describe('master key rotation while serving', () => {
  let dir: string
  let keyFile: string
  let store: SqlStore
  let box: ReloadableSecretBox
  let stack: Stack
  let stopWatch: () => void
  const logs = new LogSink()

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'gh-rotate-'))
    keyFile = path.join(dir, 'master.key')
    box = new ReloadableSecretBox(loadOrCreateMasterKey(keyFile))
    store = await openStore({ path: path.join(dir, 'gatehouse.db'), secretBox: box })
    stopWatch = watchMasterKey(keyFile, box, createLogger({ level: 'info', destination: logs }), { intervalMs: 50 })
    stack = await startStack({ security: { store } })
  })
  afterAll(async () => {
    stopWatch?.()
    await stack?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('re-seals every secret under the new key while devices keep working; prune then drops the old key', async () => {
    const oldKey = loadMasterKey(keyFile).current
    const devices = await Promise.all([1, 2, 3].map(() => stack.enrolledDevice()))
    expect(await keyIdsInUse(store.db)).toEqual([oldKey])

    // Traffic during the rotation: requests and fresh sessions, all must succeed.
    let stop = false
    const failures: unknown[] = []
    let done = 0
    const traffic = (async () => {
      while (!stop) {
        for (const d of devices) {
          try {
            expect((await d.request('GET', '/demo/hello')).status).toBe(200)
            await d.openSession()
            done++
          } catch (err) {
            failures.push(err)
          }
        }
      }
    })()

    const r = addCurrentKey(keyFile)
    expect(statSync(keyFile).mode & 0o777).toBe(0o600)
    expect(loadMasterKey(keyFile).keys.map((k) => k.id)).toEqual([oldKey, r.added])
    await until(() => box.currentKeyId === r.added)
    expect(logs.text).toContain('master_key_reloaded')
    const resealed = await store.reencryptSecrets()
    expect(resealed).toBeGreaterThan(0)
    const during = done
    await until(() => done >= during + 6)
    stop = true
    await traffic
    expect(failures).toEqual([])

    expect(await keyIdsInUse(store.db)).toEqual([r.added])
    // After: existing enrollments keep working, new ones are sealed with the new key.
    for (const d of devices) {
      await d.openSession()
      expect((await d.request('GET', '/demo/hello')).status).toBe(200)
    }
    await stack.enrolledDevice()
    expect(await keyIdsInUse(store.db)).toEqual([r.added])

    const pruned = await pruneUnusedKeys(keyFile, store.db)
    expect(pruned).toEqual({ removed: [oldKey], kept: [r.added] })
    expect(loadMasterKey(keyFile).keys.map((k) => k.id)).toEqual([r.added])
    expect(statSync(keyFile).mode & 0o777).toBe(0o600)
    // The running server still knows every key it had (a reload never forgets one).
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(box.keyIds).toEqual([oldKey, r.added])
    expect((await devices[0]!.request('GET', '/demo/hello')).status).toBe(200)
  })

  it('prune keeps a key that a row still uses', async () => {
    const before = loadMasterKey(keyFile)
    addCurrentKey(keyFile) // new current; rows are still under the previous one (not re-sealed)
    await until(() => box.currentKeyId !== before.current)
    const r = await pruneUnusedKeys(keyFile, store.db)
    expect(r.removed).toEqual([])
    expect(r.kept).toContain(before.current)
  })

  it('a broken key file is ignored by the running server (it keeps its keys)', async () => {
    const current = box.currentKeyId
    const { writeFileSync, chmodSync } = await import('node:fs')
    writeFileSync(keyFile, '{ not json', { mode: 0o600 })
    chmodSync(keyFile, 0o600)
    await until(() => logs.text.includes('master_key_reload_failed'))
    expect(box.currentKeyId).toBe(current)
    expect(logs.text).not.toMatch(/"key":"[A-Za-z0-9+/]{40,}/)
    expect((await (await stack.enrolledDevice()).request('GET', '/demo/hello')).status).toBe(200)
  })
})
