/**
 * Hands values on in the order they were added, whether each is ready now or still a promise (a
 * record sealed or opened in the crypto pool). A ready value with nothing pending ahead of it is
 * delivered at once, in the same tick: without the pool this adds no latency and no promise.
 * The first rejection stops delivery for good and is reported once.
 */
export class InOrder<T> {
  private readonly queue: { value: T | undefined; ready: boolean }[] = []
  private failed = false

  constructor(
    private readonly deliver: (value: T) => void,
    private readonly fail: (err: unknown) => void,
    /** Called when the last pending value has been delivered. */
    private readonly idle: () => void = () => {},
  ) {}

  /** Values added and not yet delivered. */
  get pending(): number {
    return this.queue.length
  }

  add(v: T | Promise<T>): void {
    if (this.failed) return
    if (!(v instanceof Promise)) {
      if (this.queue.length === 0) return this.deliver(v)
      this.queue.push({ value: v, ready: true })
      return
    }
    const entry: { value: T | undefined; ready: boolean } = { value: undefined, ready: false }
    this.queue.push(entry)
    v.then(
      (value) => {
        entry.value = value
        entry.ready = true
        this.flush()
      },
      (err: unknown) => {
        if (this.failed) return
        this.failed = true
        this.queue.length = 0
        this.fail(err)
      },
    )
  }

  /** Stop: nothing more is delivered or reported. */
  stop(): void {
    this.failed = true
    this.queue.length = 0
  }

  private flush(): void {
    let delivered = false
    while (!this.failed && this.queue.length > 0 && this.queue[0]!.ready) {
      const { value } = this.queue.shift()!
      delivered = true
      this.deliver(value as T)
    }
    if (delivered && !this.failed && this.queue.length === 0) this.idle()
  }
}
