/**
 * The metadata block cache (superblock, group descriptors, bitmaps, inode
 * tables, directory, indirect, xattr and slow-symlink blocks).
 *
 * Policy: a block modified since the last commit lives in `dirty` and is the
 * authoritative copy (the image still holds the last committed version);
 * dirty blocks are never evicted, only handed to the journal at commit and
 * then moved to the clean LRU. Clean blocks are kept in an LRU bounded by
 * bytes. File data never passes through here: it is read and written on the
 * store directly (ordered mode: before the commit that references it).
 *
 * `overlay` holds blocks replayed from the journal of a read-only image: the
 * image itself must not be written, so reads see the replayed version.
 */
import { LRUCache } from 'lru-cache';
import type { ByteStore } from '../io/byte-source.js';

export class BlockCache {
  readonly dirty = new Map<number, Buffer>();
  private readonly clean: LRUCache<number, Buffer>;
  private readonly inflight = new Map<number, Promise<Buffer>>();

  constructor(
    private readonly store: ByteStore,
    readonly blockSize: number,
    private readonly overlay: Map<number, Buffer> = new Map(),
    maxCleanBytes = 64 * 1024 * 1024,
  ) {
    this.clean = new LRUCache<number, Buffer>({ maxSize: maxCleanBytes, sizeCalculation: (b) => b.length });
  }

  /** Cached or read; the returned buffer must not be modified (use write()). */
  read(block: number): Promise<Buffer> {
    const hit = this.dirty.get(block) ?? this.clean.get(block);
    if (hit) return Promise.resolve(hit);
    const pending = this.inflight.get(block);
    if (pending) return pending;
    const p = this.load(block).finally(() => this.inflight.delete(block));
    this.inflight.set(block, p);
    return p;
  }

  private async load(block: number): Promise<Buffer> {
    const replayed = this.overlay.get(block);
    const buf = replayed ? Buffer.from(replayed) : await this.store.read(block * this.blockSize, this.blockSize);
    // Another caller may have cached (or dirtied) it meanwhile: theirs wins.
    const now = this.dirty.get(block) ?? this.clean.get(block);
    if (now) return now;
    this.clean.set(block, buf);
    return buf;
  }

  /**
   * Reads `count` blocks from `block` in one I/O and caches those not
   * already cached (inode tables are read this way: neighbouring inodes are
   * usually wanted next, and a fresh inode's block must be read anyway).
   */
  async prefetch(block: number, count: number): Promise<void> {
    if (this.has(block) || count <= 1) return;
    const replayedAny = this.overlay.size > 0;
    const bytes = await this.store.read(block * this.blockSize, count * this.blockSize);
    for (let i = 0; i < count; i++) {
      const b = block + i;
      if (this.has(b) || this.inflight.has(b)) continue;
      const replayed = replayedAny ? this.overlay.get(b) : undefined;
      const copy = replayed ? Buffer.from(replayed) : Buffer.from(bytes.subarray(i * this.blockSize, (i + 1) * this.blockSize));
      this.clean.set(b, copy);
    }
  }

  has(block: number): boolean {
    return this.dirty.has(block) || this.clean.has(block);
  }

  /** The block's buffer, now dirty: mutate it in place. */
  async write(block: number): Promise<Buffer> {
    const d = this.dirty.get(block);
    if (d) return d;
    const buf = await this.read(block);
    this.dirty.set(block, buf);
    this.clean.delete(block);
    return buf;
  }

  /** A newly allocated metadata block: zeroed and dirty, without reading it. */
  fresh(block: number): Buffer {
    const buf = Buffer.alloc(this.blockSize);
    this.dirty.set(block, buf);
    this.clean.delete(block);
    return buf;
  }

  /** A freed block: forget any cached copy so a later owner reads its own bytes. */
  forget(block: number): void {
    this.dirty.delete(block);
    this.clean.delete(block);
    this.overlay.delete(block);
  }

  /** After a successful commit: these blocks (still the same buffers) are clean now. */
  markClean(blocks: Map<number, Buffer>): void {
    for (const [b, buf] of blocks) {
      if (this.dirty.get(b) === buf) {
        this.dirty.delete(b);
        this.clean.set(b, buf);
      }
    }
  }
}
