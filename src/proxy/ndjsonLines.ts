/**
 * Splits a byte stream into lines (NDJSON: one JSON value per "\n"-terminated line) with a bound on
 * the line length, so a misbehaving peer cannot make us buffer without limit. Chunk boundaries may
 * fall anywhere, including inside a multi-byte UTF-8 character: bytes are kept until the newline.
 */
import { TooLargeError } from '../errors.js'

const NEWLINE = 0x0a

export class NdjsonLineReader {
  private parts: Buffer[] = []
  private size = 0

  constructor(private readonly maxLineBytes: number) {}

  /**
   * The complete lines in `chunk` (without "\n", a trailing "\r" removed, empty lines skipped).
   * Throws TooLargeError when a line grows past the bound; the reader is then unusable.
   */
  push(chunk: Buffer): string[] {
    const lines: string[] = []
    let start = 0
    for (let nl = chunk.indexOf(NEWLINE); nl !== -1; nl = chunk.indexOf(NEWLINE, start)) {
      const piece = chunk.subarray(start, nl)
      this.check(this.size + piece.length)
      const bytes = this.size === 0 ? piece : Buffer.concat([...this.parts, piece], this.size + piece.length)
      this.parts = []
      this.size = 0
      start = nl + 1
      let line = bytes.toString('utf8')
      if (line.endsWith('\r')) line = line.slice(0, -1)
      if (line.length > 0) lines.push(line)
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start)
      this.check(this.size + rest.length)
      // Copied: the caller may reuse the chunk's memory.
      this.parts.push(Buffer.from(rest))
      this.size += rest.length
    }
    return lines
  }

  /** Bytes of an unfinished line held. */
  get pending(): number {
    return this.size
  }

  private check(n: number): void {
    if (n > this.maxLineBytes) throw new TooLargeError(`line over ${this.maxLineBytes} bytes`)
  }
}
