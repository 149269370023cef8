/**
 * Processes of the benchmark suite: spawn one (optionally pinned to a core with taskset) and wait
 * for its ready line, stop it, and read its CPU time and RSS from /proc (all threads included).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'

const TICKS_PER_SECOND = 100 // USER_HZ on Linux

export interface Spawned {
  name: string
  proc: ChildProcess
  /** Every pid that counts for this target (nginx: master and worker). */
  pids: () => number[]
}

let pinning = false

/** Turn core pinning on (`--pin`). Off by default: on a machine shared with other work a pinned core may be the busy one. */
export function setPinning(on: boolean): void {
  pinning = on
}

/** Whether processes are pinned: asked for, and taskset exists (the report says which). */
export function hasTaskset(): boolean {
  if (!pinning) return false
  try {
    readFileSync('/usr/bin/taskset')
    return true
  } catch {
    return false
  }
}

/**
 * Start `cmd args` (pinned to `core` when given), resolve once `ready` appears on stdout or
 * stderr. Output after that is drained; stderr is kept (last 8 KiB) for error messages.
 */
export async function spawnReady(name: string, cmd: string, args: string[], o: { cwd: string; ready: string | RegExp; core?: number; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<Spawned> {
  const [file, argv] = o.core !== undefined && hasTaskset() ? ['taskset', ['-c', String(o.core), cmd, ...args]] : [cmd, args]
  const proc = spawn(file, argv, { cwd: o.cwd, stdio: ['ignore', 'pipe', 'pipe'], env: o.env ?? process.env })
  let out = ''
  const match = (s: string) => (typeof o.ready === 'string' ? s.includes(o.ready) : o.ready.test(s))
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${name} did not start in time:\n${out.slice(-4000)}`)), o.timeoutMs ?? 30_000)
    const onData = (d: Buffer) => {
      out = (out + d.toString()).slice(-8192)
      if (match(out)) {
        clearTimeout(t)
        proc.removeListener('exit', onExit)
        resolve()
      }
    }
    const onExit = (code: number | null) => {
      clearTimeout(t)
      reject(new Error(`${name} exited ${code}:\n${out.slice(-4000)}`))
    }
    proc.stdout!.on('data', onData)
    proc.stderr!.on('data', onData)
    proc.once('exit', onExit)
  })
  return { name, proc, pids: () => [proc.pid!] }
}

export function stopProcess(p: ChildProcess, signal: NodeJS.Signals = 'SIGINT'): Promise<void> {
  return new Promise((resolve) => {
    if (p.exitCode !== null || p.signalCode !== null) return resolve()
    const t = setTimeout(() => p.kill('SIGKILL'), 10_000)
    p.once('exit', () => { clearTimeout(t); resolve() })
    p.kill(signal)
  })
}

/** utime + stime of a process (every thread), in seconds; 0 when it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND
  } catch {
    return 0
  }
}

/** Resident set size in bytes; 0 when it is gone. */
export function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) * 1024 : 0
  } catch {
    return 0
  }
}

/** Children of a process (nginx's workers), from /proc/<pid>/task/<pid>/children. */
export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
  } catch {
    return []
  }
}

export interface ProcFigures {
  /** CPU used over the interval, in % of one core. */
  cpuPct: number
  /** RSS at the end, and the peak sampled every 250 ms, bytes. */
  rss: number
  peakRss: number
}

/**
 * Watch a set of named targets while `run` goes: CPU % of one core and RSS per target (the sum
 * over its pids).
 */
export async function watched<T>(targets: Spawned[], run: () => Promise<T>): Promise<{ result: T; procs: Record<string, ProcFigures> }> {
  const sum = (s: Spawned, f: (pid: number) => number) => s.pids().reduce((a, pid) => a + f(pid), 0)
  const cpu0 = targets.map((s) => sum(s, cpuSeconds))
  const self0 = process.cpuUsage()
  const peak = targets.map((s) => sum(s, rssBytes))
  let selfPeak = process.memoryUsage.rss()
  const timer = setInterval(() => {
    targets.forEach((s, i) => { peak[i] = Math.max(peak[i]!, sum(s, rssBytes)) })
    selfPeak = Math.max(selfPeak, process.memoryUsage.rss())
  }, 250)
  const t0 = performance.now()
  try {
    const result = await run()
    const wall = (performance.now() - t0) / 1000
    const procs: Record<string, ProcFigures> = {}
    targets.forEach((s, i) => {
      const rss = sum(s, rssBytes)
      procs[s.name] = { cpuPct: ((sum(s, cpuSeconds) - cpu0[i]!) / wall) * 100, rss, peakRss: Math.max(peak[i]!, rss) }
    })
    const self = process.cpuUsage(self0)
    procs['load generator'] = { cpuPct: ((self.user + self.system) / 1e6 / wall) * 100, rss: process.memoryUsage.rss(), peakRss: selfPeak }
    return { result, procs }
  } finally {
    clearInterval(timer)
  }
}
