/**
 * End-to-end helpers: the built `gatehouse` CLI (dist/cli/main.js, built by `npm test`'s pretest)
 * run as real child processes, each in its own process group so that cleanup can kill whatever
 * it started even when a test fails half-way. Every wait is bounded.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type AddressInfo, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { stringify as toYaml } from 'yaml'

export const MAIN = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url))

/** Default bound of every wait (process start, a line of output, a command to finish). */
export const WAIT_MS = 20_000

export interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
}

export interface RunResult extends Exit {
  stdout: string
  stderr: string
  ms: number
}

/** Environment of a child: ours without the variables that would change what the CLI reads. */
function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env }
  for (const k of ['GATEHOUSE_CONFIG', 'GATEHOUSE_PASSWORD', 'GATEHOUSE_DEBUG', 'NODE_OPTIONS']) delete env[k]
  return { ...env, ...extra }
}

/** Every live child of this test process, so an exit handler can still kill them. */
const live = new Set<GatehouseProcess>()
process.once('exit', () => {
  for (const p of live) p.killGroup('SIGKILL')
})

/** A running `gatehouse …` process with its collected output. */
export class GatehouseProcess {
  readonly child: ChildProcess
  readonly args: string[]
  stdout = ''
  stderr = ''
  exit: Exit | undefined
  readonly exited: Promise<Exit>
  private readonly started = performance.now()
  private listeners = new Set<() => void>()

  constructor(args: string[], o: { cwd: string; input?: string; env?: Record<string, string> }) {
    this.args = args
    // detached: the child leads its own process group, killed as a whole on cleanup.
    this.child = spawn(process.execPath, [MAIN, ...args], { cwd: o.cwd, env: childEnv(o.env), stdio: ['pipe', 'pipe', 'pipe'], detached: true })
    live.add(this)
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => { this.stdout += d; this.notify() })
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => { this.stderr += d; this.notify() })
    this.child.stdin!.on('error', () => undefined) // a child that exits before reading stdin
    this.child.stdin!.end(o.input ?? '')
    this.exited = new Promise<Exit>((resolve) => {
      const done = (code: number | null, signal: NodeJS.Signals | null) => {
        if (this.exit) return
        this.exit = { code, signal }
        live.delete(this)
        this.notify()
        resolve(this.exit)
      }
      this.child.on('error', (err) => {
        this.stderr += `\n[spawn error] ${err.message}\n`
        done(null, null)
      })
      // 'close': the process ended and its stdout/stderr are fully read.
      this.child.on('close', done)
    })
  }

  get pid(): number {
    return this.child.pid ?? -1
  }

  get alive(): boolean {
    return this.exit === undefined
  }

  /** Milliseconds since spawn. */
  get elapsedMs(): number {
    return performance.now() - this.started
  }

  /** Describe the process and its output, for assertion messages. */
  describe(): string {
    return `gatehouse ${this.args.join(' ')} (pid ${this.pid}, exit ${JSON.stringify(this.exit)})\n--- stdout ---\n${this.stdout}\n--- stderr ---\n${this.stderr}`
  }

  private notify(): void {
    for (const l of [...this.listeners]) l()
  }

  /** Resolve with the first match of `re` in stdout; reject after `timeoutMs` or if the process exits first. */
  waitFor(re: RegExp, timeoutMs = WAIT_MS, stream: 'stdout' | 'stderr' = 'stdout'): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const m = re.exec(this[stream])
        if (m) {
          finish()
          resolve(m)
        } else if (this.exit) {
          finish()
          reject(new Error(`exited before ${stream} matched ${re}: ${this.describe()}`))
        }
      }
      const timer = setTimeout(() => {
        finish()
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${re} on ${stream}: ${this.describe()}`))
      }, timeoutMs)
      const finish = () => {
        clearTimeout(timer)
        this.listeners.delete(check)
      }
      this.listeners.add(check)
      check()
    })
  }

  /** Wait for the exit, at most `timeoutMs`; rejects (leaving the process running) on timeout. */
  waitExit(timeoutMs = WAIT_MS): Promise<Exit> {
    if (this.exit) return Promise.resolve(this.exit)
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`did not exit within ${timeoutMs} ms: ${this.describe()}`)), timeoutMs)
    })
    return Promise.race([this.exited, timeout]).finally(() => clearTimeout(timer))
  }

  /** Send a signal to the process itself (what `kill PID` does). */
  signal(sig: NodeJS.Signals): void {
    if (this.exit) return
    try {
      process.kill(this.pid, sig)
    } catch {
      // already gone
    }
  }

  /** Send a signal to the whole process group (the child and anything it started). */
  killGroup(sig: NodeJS.Signals = 'SIGKILL'): void {
    if (this.pid <= 0) return
    try {
      process.kill(-this.pid, sig)
    } catch {
      // group already gone
    }
  }

  /** SIGKILL the group and wait (bounded) for the exit. */
  async kill(): Promise<void> {
    // Once the leader is reaped its id may be reused: only a live group is signalled.
    if (this.exit) return
    this.killGroup('SIGKILL')
    await this.waitExit(5000).catch(() => undefined)
  }
}

/**
 * A test's sandbox: a fresh temporary working directory and every process started in it.
 * Call `cleanup()` from afterEach/afterAll: it kills every process group and removes the folder.
 */
export class Sandbox {
  readonly dir: string
  readonly procs: GatehouseProcess[] = []

  constructor(prefix = 'gh-e2e-') {
    if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run npm run build (npm test builds it first)`)
    this.dir = mkdtempSync(join(tmpdir(), prefix))
  }

  path(...parts: string[]): string {
    return join(this.dir, ...parts)
  }

  /** Write a YAML file into the sandbox; returns its name relative to the sandbox. */
  writeYaml(name: string, doc: unknown): string {
    writeFileSync(this.path(name), toYaml(doc))
    return name
  }

  /** Start a long-running command (`start`, `security`, `proxy`). */
  spawn(args: string[], o: { input?: string; env?: Record<string, string> } = {}): GatehouseProcess {
    const p = new GatehouseProcess(args, { cwd: this.dir, ...o })
    this.procs.push(p)
    return p
  }

  /** Run a command to completion (killed, and rejected, after `timeoutMs`). */
  async run(args: string[], o: { input?: string; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<RunResult> {
    const p = this.spawn(args, o)
    try {
      const exit = await p.waitExit(o.timeoutMs ?? WAIT_MS)
      return { ...exit, stdout: p.stdout, stderr: p.stderr, ms: p.elapsedMs }
    } finally {
      await p.kill()
    }
  }

  /** Kill every process group started here (SIGKILL), wait for them, then remove the folder. */
  async killAll(): Promise<void> {
    await Promise.all(this.procs.map((p) => p.kill()))
  }

  async cleanup(): Promise<void> {
    await this.killAll()
    rmSync(this.dir, { recursive: true, force: true })
  }
}

/**
 * `n` distinct free TCP ports on 127.0.0.1: listen on port 0 (all at once, so they differ), read
 * the ports, close. Another process may in principle take one before we do; tests accept that.
 */
export async function freePorts(n: number): Promise<number[]> {
  const servers: Server[] = []
  try {
    for (let i = 0; i < n; i++) {
      const s = createServer()
      servers.push(s)
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject)
        s.listen(0, '127.0.0.1', () => resolve())
      })
    }
    return servers.map((s) => (s.address() as AddressInfo).port)
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))))
  }
}

/** GET a plain-HTTP admin URL (bounded). */
export async function httpGet(url: string, timeoutMs = 5000): Promise<{ status: number; text: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) })
  return { status: res.status, text: await res.text() }
}

/** Value of the first sample of `name` whose labels include all of `labels` (Prometheus text). */
export function metricSample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return undefined
}
