/** The error catalogue of src/errors.ts: names, stable codes, HTTP statuses, what reaches a client. */
import { STATUS_CODES } from 'node:http'
import { describe, expect, it } from 'vitest'
import * as errors from '../../src/errors.js'
import { GatehouseError, errorBody, statusOf } from '../../src/errors.js'

type ErrorClass = new (message: string, options?: { cause?: unknown }) => GatehouseError

const classes = Object.entries(errors as Record<string, unknown>).filter(
  (entry): entry is [string, ErrorClass] => typeof entry[1] === 'function' && entry[1].prototype instanceof GatehouseError,
)

describe('error classes', () => {
  it('exports a good number of GatehouseError subclasses', () => {
    expect(classes.length).toBeGreaterThanOrEqual(20)
  })

  it.each(classes)('%s: name, code and status', (exportName, Cls) => {
    const err = new Cls('something went wrong')
    expect(Cls.name).toBe(exportName)
    expect(err.name).toBe(exportName)
    expect(err).toBeInstanceOf(Error)
    expect(err).toBeInstanceOf(GatehouseError)
    expect(err).toBeInstanceOf(Cls)
    expect(err.message).toBe('something went wrong')
    expect(err.code).toMatch(/^GH_ERR_[A-Z_]+$/)
    expect(Number.isInteger(err.status)).toBe(true)
    expect(err.status).toBeGreaterThanOrEqual(400)
    expect(err.status).toBeLessThanOrEqual(599)
    expect(STATUS_CODES[err.status], `status ${err.status}`).toBeDefined()
    expect(typeof err.expose).toBe('boolean')
    expect(statusOf(err)).toBe(err.status)
    expect(String(err.stack)).toContain(exportName)
  })

  it('codes are unique (also against the base class)', () => {
    const codes = [new GatehouseError('x').code, ...classes.map(([, Cls]) => new Cls('x').code)]
    const duplicated = codes.filter((c, i) => codes.indexOf(c) !== i)
    expect(duplicated).toEqual([])
  })

  it('keeps the cause', () => {
    const cause = new Error('low level')
    expect(new errors.UpstreamError('upstream failed', { cause }).cause).toBe(cause)
  })

  it('the base class is internal and not exposed', () => {
    const err = new GatehouseError('boom')
    expect(err.name).toBe('GatehouseError')
    expect(err.code).toBe('GH_ERR_INTERNAL')
    expect(err.status).toBe(500)
    expect(err.expose).toBe(false)
  })
})

describe('errorBody', () => {
  const SECRET = 'key=0123456789abcdef session=s3cr3t'

  it.each(classes)('%s: the message reaches the client only when exposed', (_name, Cls) => {
    const err = new Cls(SECRET)
    const body = errorBody(err)
    expect(body.error.code).toBe(err.code)
    if (err.expose) expect(body.error.message).toBe(SECRET)
    else expect(JSON.stringify(body)).not.toContain('s3cr3t')
  })

  it('never exposes the message of a non-exposed error', () => {
    expect(errorBody(new errors.SecretStoreError(SECRET))).toEqual({ error: { code: 'GH_ERR_SECRET_STORE', message: 'internal error' } })
    expect(errorBody(new GatehouseError(SECRET))).toEqual({ error: { code: 'GH_ERR_INTERNAL', message: 'internal error' } })
    expect(errorBody(new Error(SECRET))).toEqual({ error: { code: 'GH_ERR_INTERNAL', message: 'internal error' } })
    expect(errorBody(SECRET)).toEqual({ error: { code: 'GH_ERR_INTERNAL', message: 'internal error' } })
    expect(errorBody(undefined)).toEqual({ error: { code: 'GH_ERR_INTERNAL', message: 'internal error' } })
  })

  it('statusOf maps anything else to 500', () => {
    expect(statusOf(new Error('x'))).toBe(500)
    expect(statusOf('x')).toBe(500)
    expect(statusOf(new errors.NotFoundError('x'))).toBe(404)
  })
})
