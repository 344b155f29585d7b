import type { HostExtent } from '../engine.js';
import type { BlockCodec, ByteSource } from '../io/byte-source.js';
import { ScratchPool } from '../io/scratch-pool.js';
import { CorruptError } from '../errors.js';
import type { BlockCache } from './cache.js';
import type { Decompressor } from './compress/index.js';
import { tooBig } from './compress/decompressor.js';
import type { FragmentTable } from './fragment-table.js';
import { BLOCK_SIZE_MASK, BLOCK_UNCOMPRESSED, SQUASHFS_INVALID_FRAG, type FileInode } from './inode.js';

/**
 * Regular file contents.
 *
 *   file_size = n * block_size + tail
 *   blocks:   [start_block][b0 ][b1 ]...[bn-1]      consecutive on disk, each
 *             compressed alone (or stored, bit 24); size 0 = sparse (zeros)
 *   tail:     either one more block (no fragment; also used for -no-fragments),
 *             or `tail` bytes at `offset` inside fragment block `fragment`
 *             (tail-end packing: many small files and tails share a fragment)
 *
 * Decompressed data and fragment blocks live in one byte-bounded cache keyed
 * by disk position (so duplicate files, which mksquashfs stores once, share
 * entries). A read fetches all blocks it spans concurrently. Sequential reads
 * trigger read-ahead of the next blocks, not awaited, so the next call finds
 * them decoded. Where the source offers readBlock (a file region with the
 * sifuse_block addon), a gzip or zstd block's read and decompression are one
 * job on libuv's pool, so read-ahead blocks decompress in parallel, off the
 * main thread.
 * Complete stored (uncompressed) blocks bypass the cache: a read inside them
 * is one pread of exactly its bytes.
 */

/**
 * What a sparse block reads as: views of one shared zero buffer (the largest
 * block size), so holes cost neither allocation nor page faults. Like views of
 * cached blocks, results of read() are read-only.
 */
const ZEROS = Buffer.alloc(1 << 20);
/** Read-ahead blocks at least this big (compressed) decompress off the main thread. */
const ASYNC_MIN_BYTES = 16 * 1024;

/** A readBlock rejection as the error to report: the decompressor's codes become CorruptError naming the block. */
function blockFailure(err: unknown, pos: number, limit: number, codec: string): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ETOOBIG') return new CorruptError(`data block at ${pos}: ${tooBig(codec, null, limit).message}`);
  if (code === 'EZDATA')
    return new CorruptError(`data block at ${pos}: ${codec} block does not decompress (${(err as Error).message})`);
  return err;
}

/** The sifuse_block codec of a compressor whose blocks decompress there, or null (they decompress here). */
function blockCodecOf(compressor: string): BlockCodec | null {
  if (compressor === 'gzip') return 'zlib';
  if (compressor === 'zstd') return 'zstd';
  return null;
}

export interface FileReaderOptions {
  readAheadBlocks: number;
  poolReadAhead: boolean;
}

/**
 * Where one file's blocks are, derived once per inode and cached with it.
 * Positions are prefix sums of the block sizes; one in every CHECKPOINT is
 * kept, and a block's position is its checkpoint plus at most CHECKPOINT-1
 * sizes, so a huge (sparse) file costs 1/16 of its block list, not twice it.
 */
export class BlockMap {
  private static readonly SHIFT = 4;
  private readonly checkpoints: Float64Array;

  constructor(
    private readonly sizes: Uint32Array,
    start: number,
    dataEnd: number,
    inodeNumber: number,
  ) {
    const n = sizes.length;
    this.checkpoints = new Float64Array(BlockMap.bytesFor(n) / Float64Array.BYTES_PER_ELEMENT);
    let pos = start;
    for (let i = 0; i < n; i++) {
      if ((i & ((1 << BlockMap.SHIFT) - 1)) === 0) this.checkpoints[i >> BlockMap.SHIFT] = pos;
      pos += sizes[i]! & BLOCK_SIZE_MASK;
    }
    if (pos > dataEnd) {
      throw new CorruptError(
        `file inode ${inodeNumber}: its data blocks run past the data area (to ${pos}, data ends at ${dataEnd})`,
      );
    }
  }

  /** Absolute disk position of block `i` (a sparse block takes no space). */
  start(i: number): number {
    const c = i >> BlockMap.SHIFT;
    let pos = this.checkpoints[c]!;
    for (let k = c << BlockMap.SHIFT; k < i; k++) pos += this.sizes[k]! & BLOCK_SIZE_MASK;
    return pos;
  }

  /** The bytes the map of a file of `blocks` blocks holds (its checkpoints), before it is made. */
  static bytesFor(blocks: number): number {
    return ((blocks >> BlockMap.SHIFT) + 1) * Float64Array.BYTES_PER_ELEMENT;
  }
}

export function mapBlocks(file: FileInode, dataEnd: number): BlockMap {
  return new BlockMap(file.blockSizes, file.startBlock, dataEnd, file.inodeNumber);
}

export class FileReader {
  /** Per file, where the last read ended: a read starting there is sequential. */
  private readonly nextPos = new Map<number, number>();
  /** Compressed blocks are read into these and decompressed from them (inline only). */
  private readonly scratch: ScratchPool;
  /** How this image's compressed blocks go to sifuse_block, or null when they decompress on this thread. */
  private readonly blockCodec: BlockCodec | null;

  constructor(
    private readonly source: ByteSource,
    private readonly decompressor: Decompressor,
    private readonly cache: BlockCache<Buffer>,
    private readonly fragments: FragmentTable | null,
    private readonly blockSize: number,
    private readonly options: FileReaderOptions,
  ) {
    this.scratch = new ScratchPool(blockSize);
    this.blockCodec = blockCodecOf(decompressor.name);
  }

  /** Bytes of block `i` of `file` when complete (the last block may be short). */
  private blockLength(file: FileInode, i: number): number {
    return Math.min(this.blockSize, file.fileSize - i * this.blockSize);
  }

  private loadBlock(file: FileInode, map: BlockMap, i: number, background = false): Promise<Buffer> {
    const entry = file.blockSizes[i]!;
    const size = entry & BLOCK_SIZE_MASK;
    const want = this.blockLength(file, i);
    if (size === 0) return Promise.resolve(ZEROS.subarray(0, want));
    const pos = map.start(i);
    return this.cache
      .get(pos, () => this.loadData(pos, size, (entry & BLOCK_UNCOMPRESSED) === 0, background, want))
      .then((data) => {
        if (data.length < want) {
          throw new CorruptError(`file inode ${file.inodeNumber} block ${i} holds ${data.length} bytes, expected ${want}`);
        }
        return data.length === want ? data : data.subarray(0, want);
      });
  }

  /**
   * `expected` is what a data block must decode to (its blockLength), or 0 for
   * a fragment block (anything up to the block size).
   */
  private async loadData(pos: number, size: number, compressed: boolean, background = false, expected = 0): Promise<Buffer> {
    if (this.offThread(compressed)) return this.loadOffThread(pos, size, compressed, expected);
    const pooled = background && this.options.poolReadAhead;
    if (compressed && !pooled && this.source.readInto && size <= this.scratch.size) {
      // The inline path: read into a reused buffer, decompress, give it back.
      const buf = this.scratch.take();
      try {
        await this.source.readInto(buf, pos, size);
        return this.decompressor.decompress(buf.subarray(0, size), this.blockSize);
      } catch (err) {
        if (err instanceof CorruptError) err.message = `data block at ${pos}: ${err.message}`;
        throw err;
      } finally {
        this.scratch.give(buf);
      }
    }
    const raw = await this.source.read(pos, size);
    if (!compressed) return raw;
    try {
      // With options.poolReadAhead, read-ahead decompresses on the thread
      // pool (where the library allows), in parallel with the main thread. A
      // block someone waits for always decompresses inline. Off by default:
      // on a busy 2-core machine inline was faster (manifest of a 155 MB
      // image: 4.6-7.0 s inline vs 6.5-8.0 s with pooling).
      if (background && this.options.poolReadAhead && this.decompressor.decompressAsync && size >= ASYNC_MIN_BYTES) {
        return await this.decompressor.decompressAsync(raw, this.blockSize);
      }
      return this.decompressor.decompress(raw, this.blockSize);
    } catch (err) {
      if (err instanceof CorruptError) err.message = `data block at ${pos}: ${err.message}`;
      throw err;
    }
  }

  /**
   * The read, and for gzip the inflate, as one job on libuv's pool (sifuse_block):
   * the main thread neither waits for nor spends the inflate, and a
   * sequential reader's read-ahead blocks inflate in parallel.
   */
  private async loadOffThread(pos: number, size: number, compressed: boolean, expected: number): Promise<Buffer> {
    // A data block inflates into a buffer of exactly its length (more is
    // ETOOBIG, less fails loadBlock's check): no trimming copy for a file's
    // short last block, and no 128 KiB allocation behind it.
    const out = Buffer.allocUnsafeSlow(compressed ? expected || this.blockSize : size);
    const n = await this.readBlockInto(out, pos, size, compressed);
    // A short block is copied out, so the cache, counting lengths, does not pin the rest.
    if (n === out.length) return out;
    return n * 2 < out.length ? Buffer.from(out.subarray(0, n)) : out.subarray(0, n);
  }

  /** Whether a block is read (and, compressed, decompressed) by one sifuse_block job: gzip, zstd and stored blocks of a file region. */
  private offThread(compressed: boolean): boolean {
    return this.source.readBlock !== undefined && (!compressed || this.blockCodec !== null);
  }

  /** One sifuse_block job into `out`: the bytes it holds, or the image's error naming the block. */
  private async readBlockInto(out: Buffer, pos: number, size: number, compressed: boolean): Promise<number> {
    try {
      return await this.source.readBlock!(out, pos, size, compressed ? this.blockCodec! : 'stored');
    } catch (err) {
      throw blockFailure(err, pos, out.length, this.decompressor.name);
    }
  }

  private async loadTail(file: FileInode): Promise<Buffer> {
    if (!this.fragments)
      throw new CorruptError(`file inode ${file.inodeNumber} uses a fragment, but the image has no fragment table`);
    const frag = await this.fragments.get(file.fragment);
    const data = await this.cache.get(frag.start, () => this.loadData(frag.start, frag.size, frag.compressed));
    const tail = file.fileSize % this.blockSize;
    if (file.fragmentOffset + tail > data.length) {
      throw new CorruptError(
        `file inode ${file.inodeNumber}: tail of ${tail} bytes at ${file.fragmentOffset} lies past its ${data.length}-byte fragment`,
      );
    }
    return data.subarray(file.fragmentOffset, file.fragmentOffset + tail);
  }

  /** Piece `i` of the file: a data block, or the fragment tail when i == blockSizes.length. */
  private piece(file: FileInode, map: BlockMap, i: number): Promise<Buffer> {
    if (i < file.blockSizes.length) return this.loadBlock(file, map, i);
    if (file.fragment === SQUASHFS_INVALID_FRAG) {
      return Promise.reject(new CorruptError(`file inode ${file.inodeNumber} has fewer blocks than its size needs`));
    }
    return this.loadTail(file);
  }

  /**
   * Up to `length` bytes at `position`. The result may be a view of a cached
   * block: callers must not modify it.
   */
  async read(file: FileInode, map: BlockMap, position: number, length: number): Promise<Buffer> {
    const end = Math.min(file.fileSize, position + length);
    if (position >= end) return Buffer.alloc(0);
    const bs = this.blockSize;
    const first = Math.floor(position / bs);
    const last = Math.floor((end - 1) / bs);
    const sequential = this.track(file, map, position, end, last);
    // A range that is all hole reads as a view of the shared zeros: no
    // allocation, no copy (hashing a multi-GiB sparse file costs the hash only).
    if (end - position <= ZEROS.length && this.hole(file, first, last)) return ZEROS.subarray(0, end - position);
    // A range wholly inside complete stored (uncompressed) blocks is one
    // contiguous span of the image: one pread of just its bytes, not cached
    // and not read ahead. A 4 KiB random read costs 4 KiB of I/O (bench
    // rand-read); a sequential stream of incompressible data is not copied
    // into 128 KiB cache entries the kernel's page cache holds anyway, and
    // its buffers die young (bench seq-read: GC and LRU work per READ).
    if (last < file.blockSizes.length && this.storedSpan(file, first, last)) {
      return this.readStored(map.start(first) + (position - first * bs), end - position);
    }
    if (first !== last) {
      const out = Buffer.allocUnsafe(end - position);
      await this.readSpan(file, map, sequential, position, end, first, last, out);
      return out;
    }
    const piece = await this.piece(file, map, first);
    this.release(file, map, sequential, position, end, first, last);
    const off = position - first * bs;
    return piece.subarray(off, off + (end - position));
  }

  /**
   * read() into the caller's buffer: up to into.length bytes at `position`,
   * the count returned. Blocks not cached are read (and inflated) by their
   * pool jobs straight into `into`, so a caller reusing one buffer (copy-up)
   * allocates and page-faults nothing per read.
   */
  async readInto(file: FileInode, map: BlockMap, position: number, into: Buffer): Promise<number> {
    const end = Math.min(file.fileSize, position + into.length);
    if (position >= end) return 0;
    const bs = this.blockSize;
    const first = Math.floor(position / bs);
    const last = Math.floor((end - 1) / bs);
    const sequential = this.track(file, map, position, end, last);
    const out = into.subarray(0, end - position);
    if (this.hole(file, first, last)) out.fill(0);
    else if (last < file.blockSizes.length && this.storedSpan(file, first, last)) {
      await this.readStoredInto(out, map.start(first) + (position - first * bs));
    } else await this.readSpan(file, map, sequential, position, end, first, last, out);
    return out.length;
  }

  /**
   * Where read()'s bytes at `position` (up to `length`) lie in the image file,
   * when they are wholly inside complete stored blocks (which lie back to
   * back, each as it reads) of a region on a host file; null otherwise.
   */
  hostExtent(file: FileInode, map: BlockMap, position: number, length: number): HostExtent | null {
    const end = Math.min(file.fileSize, position + length);
    if (position >= end || !this.source.hostExtent) return null;
    const bs = this.blockSize;
    const first = Math.floor(position / bs);
    const last = Math.floor((end - 1) / bs);
    if (last >= file.blockSizes.length || !this.storedSpan(file, first, last)) return null;
    const at = this.source.hostExtent(map.start(first) + (position - first * bs), end - position);
    if (at === null) return null;
    this.track(file, map, position, end, last);
    return { fd: at.fd, position: at.position, length: end - position };
  }

  /**
   * Notes where this read of [position, end) ends, and starts read-ahead past
   * block `last` when it continues the file's previous read: whether it did.
   */
  private track(file: FileInode, map: BlockMap, position: number, end: number, last: number): boolean {
    const sequential = this.nextPos.get(file.inodeNumber) === position;
    this.nextPos.delete(file.inodeNumber);
    if (this.nextPos.size >= 256) this.nextPos.delete(this.nextPos.keys().next().value!);
    this.nextPos.set(file.inodeNumber, end);
    if (sequential && end < file.fileSize) this.readAhead(file, map, last + 1);
    return sequential;
  }

  /** Blocks first..last are all sparse (none is the fragment tail). */
  private hole(file: FileInode, first: number, last: number): boolean {
    if (last >= file.blockSizes.length) return false;
    for (let i = first; i <= last; i++) if ((file.blockSizes[i]! & BLOCK_SIZE_MASK) !== 0) return false;
    return true;
  }

  /**
   * A read of blocks first..last fills `out` (end - position bytes): a block it
   * covers whole that is not cached is read (and inflated) by its pool job
   * straight into its place, with no buffer of its own and no copy (copy-up's
   * 1 MiB reads: 8 blocks); the others come from the cache as usual and are
   * copied in.
   */
  private async readSpan(
    file: FileInode,
    map: BlockMap,
    sequential: boolean,
    position: number,
    end: number,
    first: number,
    last: number,
    out: Buffer,
  ): Promise<void> {
    const bs = this.blockSize;
    const jobs: Promise<void>[] = [];
    for (let i = first; i <= last; i++) {
      const at = i * bs - position;
      if (at >= 0 && i < file.blockSizes.length && at + this.blockLength(file, i) <= out.length && this.loadsInto(file, map, i)) {
        jobs.push(this.loadInto(file, map, i, out.subarray(at, at + this.blockLength(file, i))));
        continue;
      }
      jobs.push(
        this.piece(file, map, i).then((p) => {
          const from = Math.max(position, i * bs);
          const to = Math.min(end, i * bs + p.length);
          if (to > from) p.copy(out, from - position, from - i * bs, to - i * bs);
        }),
      );
    }
    // Every job settles before a failure is reported: none still writes into `out` after.
    for (const r of await Promise.allSettled(jobs)) if (r.status === 'rejected') throw r.reason;
    this.release(file, map, sequential, position, end, first, last);
  }

  /** Block i can be read by one job into a caller's buffer: stored complete, or gzip, and not cached. */
  private loadsInto(file: FileInode, map: BlockMap, i: number): boolean {
    const entry = file.blockSizes[i]!;
    const size = entry & BLOCK_SIZE_MASK;
    const stored = (entry & BLOCK_UNCOMPRESSED) !== 0;
    if (size === 0 || !this.offThread(!stored)) return false;
    if (stored && size !== this.blockLength(file, i)) return false;
    return !this.cache.has(map.start(i));
  }

  private async loadInto(file: FileInode, map: BlockMap, i: number, into: Buffer): Promise<void> {
    const entry = file.blockSizes[i]!;
    const pos = map.start(i);
    const n = await this.readBlockInto(into, pos, entry & BLOCK_SIZE_MASK, (entry & BLOCK_UNCOMPRESSED) === 0);
    if (n !== into.length) {
      throw new CorruptError(`file inode ${file.inodeNumber} block ${i} holds ${n} bytes, expected ${into.length}`);
    }
  }

  /**
   * Drops the data blocks this read finished: those ending inside it that it
   * covered whole, or, for a sequential reader, that it read to their end. The
   * reader will not come back for them (behind a mount the kernel's page cache
   * holds them), so their buffers die young, freed by cheap scavenges instead
   * of aging in the cache into full collections (FUSE read-all: most of the
   * daemon's GC time). Fragment blocks, shared by many files, stay cached.
   */
  private release(
    file: FileInode,
    map: BlockMap,
    sequential: boolean,
    position: number,
    end: number,
    first: number,
    last: number,
  ): void {
    const bs = this.blockSize;
    const stop = Math.min(last, file.blockSizes.length - 1);
    for (let i = first; i <= stop; i++) {
      if (Math.min((i + 1) * bs, file.fileSize) > end || (!sequential && i * bs < position)) continue;
      if ((file.blockSizes[i]! & BLOCK_SIZE_MASK) !== 0) this.cache.delete(map.start(i));
    }
  }

  /** Blocks first..last are all stored uncompressed and complete (so laid out back to back). */
  private storedSpan(file: FileInode, first: number, last: number): boolean {
    for (let i = first; i <= last; i++) {
      const entry = file.blockSizes[i]!;
      if ((entry & BLOCK_UNCOMPRESSED) === 0 || (entry & BLOCK_SIZE_MASK) !== this.blockLength(file, i)) return false;
    }
    return true;
  }

  private async readStored(pos: number, length: number): Promise<Buffer> {
    if (!this.source.readBlock) return this.source.read(pos, length);
    const out = Buffer.allocUnsafe(length);
    await this.source.readBlock(out, pos, length, 'stored');
    return out;
  }

  private async readStoredInto(out: Buffer, pos: number): Promise<void> {
    if (this.source.readBlock) await this.source.readBlock(out, pos, out.length, 'stored');
    else if (this.source.readInto) await this.source.readInto(out, pos, out.length);
    else (await this.source.read(pos, out.length)).copy(out);
  }

  private readAhead(file: FileInode, map: BlockMap, from: number): void {
    const stop = Math.min(file.blockSizes.length, from + this.options.readAheadBlocks);
    for (let i = from; i < stop; i++) {
      const size = file.blockSizes[i]! & BLOCK_SIZE_MASK;
      // Holes cost nothing and complete stored blocks are read directly (read()).
      if (size === 0 || this.storedSpan(file, i, i) || this.cache.has(map.start(i))) continue;
      // Errors surface when the block is really read; here they are dropped.
      this.loadBlock(file, map, i, true).catch(() => undefined);
    }
  }
}
