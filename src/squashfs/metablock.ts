import type { ByteSource } from '../io/byte-source.js';
import { CorruptError } from '../errors.js';
import type { BlockCache } from './cache.js';
import type { Decompressor } from './compress/index.js';
import { METADATA_SIZE } from './superblock.js';

/**
 * Metadata blocks (inode, directory, fragment, export, id and xattr tables).
 *
 *   +--------+---------------------------------+
 *   | u16 hdr| data (hdr & 0x7fff bytes)       |   hdr & 0x8000: stored uncompressed
 *   +--------+---------------------------------+
 *
 * A table is a run of such blocks; each decompresses to 8 KiB (the last may be
 * shorter) and a record may straddle two blocks. A position inside a table is
 * (block, offset): the block's byte position relative to the table start and an
 * offset into its decompressed data. Walking only ever moves forward
 * (next = pos + 2 + size), so no chain of blocks can loop.
 */
export interface MetaBlock {
  data: Buffer;
  /** Absolute position of the block that follows. */
  next: number;
  readonly length: number;
}

/**
 * Bytes read per cold metadata block: the block plus what follows it. Tables
 * are runs of blocks, and walks read them in order, so the blocks after the
 * one asked for are kept (compressed, not decoded) for the next miss: one
 * pread per WINDOW instead of one per 8 KiB block. Each pread is a hop through
 * libuv's thread pool, and on a loaded machine the hops, not the bytes, are
 * the cost (bench/engine-ab.mjs walk).
 */
const WINDOW = 64 * 1024;
/** Compressed blocks held from windows, at most (a few windows' worth). */
const AHEAD_MAX = 128;

export class MetadataReader {
  /** Blocks read as part of an earlier window, not decoded yet: position -> header + data. */
  private readonly ahead = new Map<number, Buffer>();
  /** The metadata area read whole (preload), from `areaStart` to the end of the filesystem; null when not. */
  private area: Buffer | null = null;
  private areaStart = 0;

  constructor(
    private readonly source: ByteSource,
    private readonly decompressor: Decompressor,
    private readonly cache: BlockCache<MetaBlock>,
    /** Bytes of the filesystem; no metadata block may reach past it. */
    private readonly limit: number,
  ) {}

  /**
   * Reads the metadata area, [start, end of the filesystem), in one read when
   * it holds at most `maxBytes`, and keeps it: blocks there then decode with
   * no I/O for the life of the reader, however cold the page cache gets.
   * SquashFS writes every metadata table (inodes, directories, fragments,
   * export, ids, xattrs) after the data, so `start` is inode_table_start; the
   * whole area of a 10,000-file root filesystem is about 200 KiB, where a walk
   * or a program's start would otherwise wait on a cold read per window
   * (about 5 ms each, measured on a cold page cache). A short read keeps
   * nothing (the windows then read as before).
   */
  async preload(start: number, maxBytes: number): Promise<void> {
    const length = this.limit - start;
    if (!Number.isSafeInteger(start) || start < 0 || length <= 0 || length > maxBytes) return;
    const area = await this.source.read(start, length);
    if (area.length !== length) return;
    this.area = area;
    this.areaStart = start;
  }

  /** The decompressed block at absolute position `pos` (cached). */
  block(pos: number): Promise<MetaBlock> {
    return this.cache.get(pos, () => this.load(pos));
  }

  peek(pos: number): MetaBlock | undefined {
    return this.cache.peek(pos);
  }

  private async load(pos: number): Promise<MetaBlock> {
    if (!Number.isSafeInteger(pos) || pos < 0 || pos + 2 > this.limit) {
      throw new CorruptError(`metadata block at ${pos} lies outside the filesystem`);
    }
    if (this.area !== null && pos >= this.areaStart) return this.decodeBlock(pos, this.area.subarray(pos - this.areaStart));
    const held = this.ahead.get(pos);
    if (held) {
      this.ahead.delete(pos);
      return this.decodeBlock(pos, held);
    }
    // One read covers the header, the largest possible block and the blocks
    // after it, so a cold block costs one I/O rather than two.
    const window = await this.source.read(pos, Math.min(WINDOW, this.limit - pos));
    const block = this.decodeBlock(pos, window);
    this.holdFollowing(block.next, pos, window);
    return block;
  }

  /**
   * Keeps the whole blocks of `window` (read at `start`) from `from` on.
   * Only the chain from the block asked for is followed, so these are the
   * same bytes a read at each position would return; sizes are checked again
   * when each is decoded.
   */
  private holdFollowing(from: number, start: number, window: Buffer): void {
    const end = start + window.length;
    let p = from;
    while (p + 2 <= end) {
      const size = window.readUInt16LE(p - start) & 0x7fff;
      if (size === 0 || size > METADATA_SIZE || p + 2 + size > end) break;
      if (!this.cache.has(p)) {
        if (this.ahead.size >= AHEAD_MAX) this.ahead.delete(this.ahead.keys().next().value!);
        this.ahead.set(p, window.subarray(p - start, p - start + 2 + size));
      }
      p += 2 + size;
    }
  }

  /** Drops the compressed blocks held from windows and the preloaded area. */
  clear(): void {
    this.ahead.clear();
    this.area = null;
  }

  /** The block at `pos` from `chunk` (its header and data; the chunk is not kept). */
  private decodeBlock(pos: number, chunk: Buffer): MetaBlock {
    const hdr = chunk.readUInt16LE(0);
    const size = hdr & 0x7fff;
    const compressed = (hdr & 0x8000) === 0;
    if (size === 0 || size > METADATA_SIZE) throw new CorruptError(`metadata block at ${pos} has invalid size ${size}`);
    if (pos + 2 + size > this.limit) throw new CorruptError(`metadata block at ${pos} runs past the end of the filesystem`);
    // Uncompressed blocks are kept: copy them out so the window is not pinned.
    const raw = compressed ? chunk.subarray(2, 2 + size) : Buffer.from(chunk.subarray(2, 2 + size));
    let data: Buffer;
    if (compressed) {
      try {
        data = this.decompressor.decompress(raw, METADATA_SIZE);
      } catch (err) {
        if (err instanceof CorruptError) err.message = `metadata block at ${pos}: ${err.message}`;
        throw err;
      }
    } else {
      data = raw;
    }
    return { data, next: pos + 2 + size, length: data.length };
  }

  /**
   * `length` bytes of a table starting at absolute block position `pos`,
   * `offset` bytes in, crossing blocks as needed. Returns the bytes (a view of
   * the cached block when they lie in one) and the position just after them.
   * `end` bounds the table: no block at or past it is read (the start of the
   * next table, or the end of the filesystem).
   */
  read(pos: number, offset: number, length: number, end: number): Promise<{ bytes: Buffer; pos: number; offset: number }> {
    return this.decode(pos, offset, end, 'metadata record', (cur) => {
      const bytes = cur.take(length);
      return { bytes, pos: cur.pos, offset: cur.offset };
    });
  }

  /**
   * Runs a synchronous decoder on a cursor at (pos, offset) of a table ending
   * at `end` over cached blocks only: its result, or undefined when a block
   * it needs is not decompressed yet (then use `decode`). Decoder errors are
   * thrown.
   */
  decodeCached<T>(pos: number, offset: number, end: number, decoder: (cur: SyncMetaCursor) => T): T | undefined {
    try {
      return decoder(new SyncMetaCursor(this, pos, offset, end, null));
    } catch (err) {
      if (err instanceof MissingBlock) return undefined;
      throw err;
    }
  }

  /**
   * Runs a synchronous decoder on a cursor at (pos, offset) of a table ending
   * at `end`: at once when the blocks it touches are cached, else loading
   * what it reports missing and running it again. The first round loads just
   * the bytes reported; later rounds at least twice as much each time, so even
   * a hostile record spanning thousands of blocks takes a few rounds. Blocks
   * loaded are held for this decode, so cache eviction cannot undo progress.
   */
  async decode<T>(pos: number, offset: number, end: number, what: string, decoder: (cur: SyncMetaCursor) => T): Promise<T> {
    let local: Map<number, MetaBlock> | null = null;
    for (let round = 0; ; round++) {
      try {
        return decoder(new SyncMetaCursor(this, pos, offset, end, local));
      } catch (err) {
        if (!(err instanceof MissingBlock)) throw err;
        if (round >= 40) throw new CorruptError(`${what} spans too many metadata blocks`);
        local ??= new Map();
        let at = err.pos;
        // At least one block, even for a zero-length read at offset 0.
        let want = Math.max(err.bytes, round === 0 ? 1 : METADATA_SIZE * 2 ** Math.min(round, 16));
        while (want > 0 && at < end) {
          const b = local.get(at) ?? (await this.block(at));
          local.set(at, b);
          want -= b.data.length;
          at = b.next;
        }
      }
    }
  }
}

/**
 * A forward cursor over one table, for variable-length records (inodes with
 * block lists, directory listings).
 */
export class MetaCursor {
  constructor(
    private readonly reader: MetadataReader,
    public pos: number,
    public offset: number,
    private readonly end: number,
  ) {}

  async take(length: number): Promise<Buffer> {
    const r = await this.reader.read(this.pos, this.offset, length, this.end);
    this.pos = r.pos;
    this.offset = r.offset;
    return r.bytes;
  }
}

/**
 * Thrown (not an Error: no stack is captured) by SyncMetaCursor when a block
 * it needs is not decompressed yet: `bytes` more bytes are wanted from the
 * block at `pos` on.
 */
export class MissingBlock {
  constructor(
    readonly pos: number,
    readonly bytes: number,
  ) {}
}

const NO_BYTES = Buffer.alloc(0);

/**
 * A synchronous forward cursor over blocks already decompressed: those in
 * `local` (loaded for this decode) or in the cache. Decoders run on it without
 * awaiting per field; see MissingBlock and MetadataReader.decode.
 */
export class SyncMetaCursor {
  constructor(
    private readonly reader: MetadataReader,
    public pos: number,
    public offset: number,
    private readonly end: number,
    /** Blocks loaded for the current decode (MetadataReader.decode), or null. */
    private readonly local: Map<number, MetaBlock> | null,
  ) {}

  /** The block found last: records mostly come in several takes from one block, so each costs no cache lookup. */
  private lastPos = -1;
  private last: MetaBlock | null = null;

  private blockAt(pos: number, wanted: number): MetaBlock {
    if (pos === this.lastPos) return this.last!;
    if (pos >= this.end) throw new CorruptError(`metadata read runs past the end of its table (at ${pos})`);
    const b = this.local?.get(pos) ?? this.reader.peek(pos);
    if (!b) throw new MissingBlock(pos, wanted);
    this.lastPos = pos;
    this.last = b;
    return b;
  }

  /** The bytes the last `at` call handed out: a cached block's data, or a copy for a record spanning blocks. */
  bytes: Buffer = NO_BYTES;

  /**
   * `take` without a view: the next `length` bytes are `bytes[start, start +
   * length)`, start returned. Decoders read fields straight from there.
   */
  at(length: number): number {
    const block = this.blockAt(this.pos, length + this.offset);
    const start = this.offset;
    if (start + length <= block.data.length) {
      this.offset = start + length;
      this.bytes = block.data;
      return start;
    }
    this.bytes = this.take(length);
    return 0;
  }

  take(length: number): Buffer {
    let block = this.blockAt(this.pos, length + this.offset);
    if (this.offset > block.data.length) {
      throw new CorruptError(`metadata offset ${this.offset} lies past the end of the block at ${this.pos}`);
    }
    if (this.offset + length <= block.data.length) {
      const out = block.data.subarray(this.offset, this.offset + length);
      this.offset += length;
      return out;
    }
    // Spans blocks: make sure all are at hand before allocating the result.
    let pos = this.pos;
    let have = block.data.length - this.offset;
    while (have < length) {
      pos = block.next;
      block = this.blockAt(pos, length - have);
      have += block.data.length;
    }
    const out = Buffer.allocUnsafe(length);
    let done = 0;
    block = this.blockAt(this.pos, 0);
    for (;;) {
      const n = Math.min(length - done, block.data.length - this.offset);
      block.data.copy(out, done, this.offset, this.offset + n);
      done += n;
      this.offset += n;
      if (done === length) return out;
      this.pos = block.next;
      this.offset = 0;
      block = this.blockAt(this.pos, 0);
    }
  }
}
