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
 *
 * At commit the dirty blocks are frozen (freeze): copied, the copies handed
 * to the journal, the live buffers kept as clean. Until the journal has
 * written the copies home (thaw), `committing` holds them and a read that
 * misses the cache takes them instead of the image's older bytes; the next
 * transaction changes the live buffers meanwhile, never the copies.
 */
import { LRUCache } from 'lru-cache';
import { InternalError } from '../errors.js';
import type { ByteStore } from '../io/byte-source.js';

/** Bytes per chunk that a commit's frozen block copies are carved from. */
const FREEZE_CHUNK = 1024 * 1024;
/** Chunks kept between commits (their bytes: this times FREEZE_CHUNK). */
const MAX_SPARE_CHUNKS = 32;

export class BlockCache {
  readonly dirty = new Map<number, Buffer>();
  private readonly clean: LRUCache<number, Buffer>;
  private readonly inflight = new Map<number, Promise<Buffer>>();
  /** Frozen copies of the committing transaction's blocks, until written home. */
  private readonly committing = new Map<number, Buffer>();
  /** The chunks those copies are carved from (one commit at a time), returned by thaw(). */
  private frozenChunks: Buffer[] = [];
  /**
   * Chunks kept for the next commit's copies: a fresh 10-20 MiB buffer per
   * commit is external memory V8 answers with a full collection (30-50 ms
   * on a daemon's heap, inside the freeze).
   */
  private readonly spareChunks: Buffer[] = [];

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
    const replayed = this.committing.get(block) ?? this.overlay.get(block);
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
   * The blocks it will cache are in flight until it does, so a read or
   * write of one of them meanwhile waits for these bytes instead of loading
   * (and maybe changing, committing and evicting) its own copy, which this
   * read's older bytes would then replace.
   */
  async prefetch(block: number, count: number): Promise<void> {
    if (this.has(block) || count <= 1) return;
    const wanted: number[] = [];
    for (let i = 0; i < count; i++) if (!this.has(block + i) && !this.inflight.has(block + i)) wanted.push(i);
    if (wanted.length === 0) return;
    // The frozen copies as the read is issued: one thawed before it returns may have been
    // written home after the read took the image's older bytes. Copied: thaw() recycles
    // their chunk, which the next commit's freeze may fill before the read returns.
    let frozen: Map<number, Buffer> | null = null;
    if (this.committing.size > 0) {
      for (const i of wanted) {
        const copy = this.committing.get(block + i);
        if (copy) (frozen ??= new Map()).set(block + i, Buffer.from(copy));
      }
    }
    const bytes = this.store.read(block * this.blockSize, count * this.blockSize);
    const claimed: Promise<Buffer>[] = [];
    for (const i of wanted) {
      const b = block + i;
      const p: Promise<Buffer> = bytes
        .then((all) => {
          // A block made fresh (dirty, unread) meanwhile: its bytes win.
          const now = this.dirty.get(b) ?? this.clean.get(b);
          if (now) return now;
          const replayed = this.committing.get(b) ?? frozen?.get(b) ?? this.overlay.get(b);
          const copy = Buffer.from(replayed ?? all.subarray(i * this.blockSize, (i + 1) * this.blockSize));
          this.clean.set(b, copy);
          return copy;
        })
        .finally(() => {
          if (this.inflight.get(b) === p) this.inflight.delete(b);
        });
      this.inflight.set(b, p);
      claimed.push(p);
    }
    await Promise.all(claimed);
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

  /**
   * The running transaction closes: every dirty block is copied (into one
   * slab) for the journal, and the live buffers become clean cached blocks
   * the next transaction may dirty again. Returns the copies by block.
   */
  freeze(): Map<number, Buffer> {
    const bs = this.blockSize;
    const perChunk = Math.max(1, Math.floor(FREEZE_CHUNK / bs));
    const frozen = new Map<number, Buffer>();
    if (this.frozenChunks.length > 0) throw new InternalError('a transaction froze while another was still committing');
    let chunk: Buffer | null = null;
    let used = perChunk;
    for (const [b, buf] of this.dirty) {
      if (used === perChunk) {
        chunk = this.spareChunks.pop() ?? Buffer.allocUnsafeSlow(perChunk * bs);
        this.frozenChunks.push(chunk);
        used = 0;
      }
      const copy = chunk!.subarray(used * bs, (used + 1) * bs);
      used++;
      buf.copy(copy);
      frozen.set(b, copy);
      this.committing.set(b, copy);
      this.clean.set(b, buf);
    }
    this.dirty.clear();
    return frozen;
  }

  /** The frozen blocks are written home: reads may go to the image again. */
  thaw(frozen: Map<number, Buffer>): void {
    for (const [b, copy] of frozen) if (this.committing.get(b) === copy) this.committing.delete(b);
    // The journal is done with the copies (written to the log and home): the chunks are free.
    for (const chunk of this.frozenChunks) if (this.spareChunks.length < MAX_SPARE_CHUNKS) this.spareChunks.push(chunk);
    this.frozenChunks = [];
  }
}
