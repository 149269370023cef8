import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { initPki, type PkiFiles } from '../../src/pki/devCa.js'

/**
 * A fresh development PKI in its own temporary directory, for tests that need real TLS.
 * Nothing is cached: every call issues a new CA, so tests never trust each other's certificates.
 * Call `cleanup()` (e.g. in afterAll) to delete the directory.
 */
export async function makeTestPki(names?: string[]): Promise<PkiFiles & { cleanup(): void }> {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-pki-'))
  try {
    const files = await initPki({ dir, names })
    return { ...files, cleanup: () => rmSync(dir, { recursive: true, force: true }) }
  } catch (err) {
    rmSync(dir, { recursive: true, force: true })
    throw err
  }
}
