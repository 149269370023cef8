import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startStack, type Stack } from '../helpers/stack.js'

describe('data path: device → proxy → upstream → device', () => {
  let stack: Stack
  beforeAll(async () => { stack = await startStack() })
  afterAll(async () => { await stack?.close() })

  it('enrolls, opens a session and round-trips GET and POST', async () => {
    const dev = await stack.enrolledDevice()
    const hello = await dev.request('GET', '/demo/hello')
    expect(hello.status).toBe(200)
    expect(hello.json()).toMatchObject({ message: 'Hello from the intranet', user: 'alice', app: 'mail' })
    const body = JSON.stringify({ x: 'y'.repeat(100_000) })
    const echo = await dev.request('POST', '/demo/echo', { headers: [['content-type', 'application/json']], body })
    expect(echo.status).toBe(200)
    expect(echo.text()).toBe(body)
    expect(echo.header('content-type')).toBe('application/json')
  })
})
