/**
 * Reusable buffers of one size for bytes that live only until a synchronous
 * consumer has run (a compressed block read from disk and decompressed at
 * once). Each cold 128 KiB block otherwise allocated a fresh buffer of its
 * compressed size, garbage right after inflate: with the external-memory GC
 * heuristics that was a large share of the engine's peak RSS.
 *
 * A buffer is either taken (owned by exactly one reader) or free; at most
 * `keep` free buffers are held, so concurrent reads beyond that allocate and
 * the extra buffers go to the GC when given back.
 */
export class ScratchPool {
  private readonly free: Buffer[] = [];

  constructor(
    readonly size: number,
    private readonly keep = 8,
  ) {}

  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  give(buf: Buffer): void {
    if (buf.length === this.size && this.free.length < this.keep) this.free.push(buf);
  }
}
