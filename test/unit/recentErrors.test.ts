/** The ring of recent warnings and errors, and the logger that feeds it (and writes log.file 0600). */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { createLogger, recentErrorsOf } from '../../src/observability/logger.js'
import { RecentErrors } from '../../src/observability/recentErrors.js'
import { LogSink } from '../helpers/stack.js'

const line = (level: string, msg: string, extra = '') => `{"level":"${level}","time":"2026-01-01T00:00:00.000Z","pid":1,"msg":"${msg}"${extra}}`

describe('RecentErrors', () => {
  it('keeps warn, error and fatal lines only, newest first', () => {
    const r = new RecentErrors(10)
    r.offer(line('info', 'a'))
    r.offer(line('warn', 'b', ',"event":"x"'))
    r.offer(line('debug', 'c'))
    r.offer(line('error', 'd'))
    r.offer(line('fatal', 'e'))
    expect(r.list().map((e) => `${e.level}:${e.msg}`)).toEqual(['fatal:e', 'error:d', 'warn:b'])
    expect(r.list()[2]!.fields).toEqual({ event: 'x' })
    expect(r.total).toBe(3)
  })

  it('overwrites the oldest entry when full and counts seq across wraps', () => {
    const r = new RecentErrors(3)
    for (let i = 1; i <= 7; i++) r.offer(line('error', `m${i}`))
    expect(r.list().map((e) => e.msg)).toEqual(['m7', 'm6', 'm5'])
    expect(r.list().map((e) => e.seq)).toEqual([7, 6, 5])
    expect(r.list({ after: 5 }).map((e) => e.msg)).toEqual(['m7', 'm6'])
    expect(r.list({ limit: 1 }).map((e) => e.msg)).toEqual(['m7'])
    expect(r.list({ levels: ['warn'] })).toEqual([])
  })

  it('ignores junk and lines whose level is not first; refuses a bad capacity', () => {
    const r = new RecentErrors(2)
    r.offer('{"level":"error", broken')
    r.offer('{"msg":"x","level":"error"}')
    r.offer('not json')
    expect(r.list()).toEqual([])
    r.offer(`{"level":"error","msg":"${'x'.repeat(20_000)}"}`)
    expect(r.list()[0]!.fields).toEqual({ truncated: true })
    expect(() => new RecentErrors(0)).toThrow(RangeError)
  })
})

describe('createLogger', () => {
  it('feeds the ring of each logger (children included) with redacted lines', () => {
    const sink = new LogSink()
    const log = createLogger({ level: 'info', destination: sink })
    log.child({ component: 'x' }).warn({ password: 'pw-123456', token: 'tok-abcdef', event: 'e' }, 'careful')
    log.info('routine')
    const kept = recentErrorsOf(log)!.list()
    expect(kept).toHaveLength(1)
    expect(kept[0]!.fields).toMatchObject({ password: '[redacted]', token: '[redacted]', component: 'x', event: 'e' })
    expect(JSON.stringify(kept)).not.toContain('pw-123456')
    expect(sink.lines).toHaveLength(2)
    expect(recentErrorsOf(createLogger({ destination: new LogSink() }))).not.toBe(recentErrorsOf(log))
  })

  it('log.file: lines also go to the file, created 0600 (and made 0600 if it existed)', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'gh-logfile-'))
    try {
      const file = path.join(dir, 'logs', 'security.log')
      const log = createLogger({ level: 'info', destination: new LogSink(), file })
      log.info({ event: 'hello' }, 'to the file')
      await new Promise<void>((resolve) => log.flush(() => resolve()))
      await new Promise((r) => setTimeout(r, 50))
      expect(statSync(file).mode & 0o777).toBe(0o600)
      expect(readFileSync(file, 'utf8')).toContain('"event":"hello"')
      const existing = path.join(dir, 'old.log')
      writeFileSync(existing, '', { mode: 0o644 })
      const second = createLogger({ destination: new LogSink(), file: existing })
      expect(statSync(existing).mode & 0o777).toBe(0o600)
      second.info('x')
      await new Promise((r) => setTimeout(r, 50))
      await new Promise<void>((resolve) => second.flush(() => resolve()))
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
