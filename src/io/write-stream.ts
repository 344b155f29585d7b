import type { Writable } from 'node:stream';

/**
 * Writes `data` to a stream and resolves once the stream will take more:
 * at once while it is below its high-water mark, else on 'drain'. Output
 * of any size (a manifest, `cat` of a large file) is written without
 * buffering it all in memory.
 */
export function writeWithBackpressure(out: Writable, data: Uint8Array): Promise<void> {
  if (out.write(data)) return Promise.resolve();
  return new Promise<void>((resolve) => out.once('drain', resolve));
}

/**
 * Lines written to a stream in batches of about `batchBytes`, each line
 * followed by a newline: one write per batch instead of one per line (for
 * `ls -l -R` of a rootfs, 9,000 writes and their stream bookkeeping were a
 * fifth of the run). Call flush() at the end.
 */
export class LineWriter {
  private parts: Buffer[] = [];
  private bytes = 0;
  private static readonly NL = Buffer.from('\n');

  constructor(
    private readonly out: Writable,
    private readonly batchBytes = 64 * 1024,
  ) {}

  /** Resolves at once unless a batch went out and the stream asked to wait. */
  line(data: Buffer): Promise<void> {
    this.parts.push(data, LineWriter.NL);
    this.bytes += data.length + 1;
    return this.bytes >= this.batchBytes ? this.flush() : Promise.resolve();
  }

  flush(): Promise<void> {
    if (this.parts.length === 0) return Promise.resolve();
    const batch = Buffer.concat(this.parts, this.bytes);
    this.parts = [];
    this.bytes = 0;
    return writeWithBackpressure(this.out, batch);
  }
}
