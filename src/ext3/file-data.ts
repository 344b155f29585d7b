/**
 * File data (the kernel's fs/ext2/inode.c get_block and file.c): logical to
 * physical block mapping (indirect blocks, or extents read-only), read,
 * write and truncate of regular files, and ordered-mode data: blocks
 * allocated in the running transaction keep their bytes in memory
 * (pendingData) until a flush (startFlush) writes them, before the commit that makes
 * their block pointers durable. A block freed first is simply dropped.
 * Past MAX_PENDING_DATA a write hands the pending blocks to a background
 * flush (startFlush) and returns; they stay readable (`flushing`) until on
 * disk, and a later write to one of them copies it back into pendingData
 * rather than racing its write.
 */
import type { DataRange, InodeId } from '../engine.js';
import { S_IFDIR, S_IFMT, S_IFREG } from '../engine.js';
import { InternalError, UnsupportedError, withErrno } from '../errors.js';
import { indirectBlocksNeeded, leafIndex, mappedRuns, mapBlock, mapRange, maxLogicalBlocks, setBlockRun } from './block-map.js';
import type { Ext3Context } from './context.js';
import { eachLimited } from '../io/each-limited.js';
import { mapExtents } from './extents.js';
import type { Inode } from './inode.js';
import { EXT2_NDIR_BLOCKS, EXT4_EXTENTS_FL, EXT4_INLINE_DATA_FL } from './inode.js';
import { hasRoCompat, RO_COMPAT } from './superblock.js';

/** Pending new-block data written early beyond this many bytes. */
const MAX_PENDING_DATA = 8 * 1024 * 1024;
/** Bytes per allocation that pending data blocks are carved from. */
const PENDING_SLAB = 128 * 1024;
/** Groups with a slab of their own at once. */
const MAX_SLABS = 64;
/** Blocks one flush write takes at most (4 MiB of 4 KiB blocks). */
const FLUSH_RUN_BLOCKS = 1024;
/** Data writes in flight at once in a flush (libuv's default thread pool size). */
const FLUSH_WRITERS = 4;
/** Slabs kept for reuse after a flush (bytes held: this times PENDING_SLAB). */
const MAX_FREE_SLABS = 128;

export class FileData {
  /**
   * Data of blocks allocated in the running transaction, not yet on disk.
   * Ordered mode: a flush writes them (coalesced, in block order) before
   * the commit that makes their block pointers durable; a block freed first
   * is simply dropped, never written.
   */
  private pendingData = new Map<number, Buffer>();
  private pendingBytes = 0;
  /**
   * The pending blocks background flushes are writing (startFlush), oldest
   * batch first, each block until its own write is done; readers look here
   * after pendingData, newest batch first. At most two batches: a commit's
   * may queue behind a running one, a write's waits for both.
   */
  private readonly flushing: Map<number, Buffer>[] = [];
  /** The last flush started; batches are written one after another. It never rejects, see flushError. */
  private flushJob: Promise<void> | null = null;
  /** A background flush's failure, thrown by flushed()'s wait (the commit's). */
  private flushError: unknown = null;
  /** The slab pending blocks of each block group are carved from (pendingBlock). */
  private readonly slabs = new Map<number, { buf: Buffer; used: number }>();
  /** Every slab carved from since the last flush started; free again once it is done. */
  private readonly slabsInUse: Buffer[] = [];
  /** Slabs whose pieces are all on disk or dropped, for reuse (warm memory, no GC churn). */
  private readonly freeSlabs: Buffer[] = [];
  private readonly maxFileBlocks: number;

  constructor(private readonly c: Ext3Context) {
    const per = c.blockSize / 4;
    // i_blocks counts 512-byte sectors in 32 bits (without huge_file): that caps files too.
    this.maxFileBlocks = Math.min(maxLogicalBlocks(per), Math.floor(0xffffffff / c.sectorsPerBlock) - 3 * per);
  }

  usesExtents(inode: Inode): boolean {
    if (inode.i_flags & EXT4_INLINE_DATA_FL) {
      throw new UnsupportedError('inline_data inodes are not supported', this.c.name);
    }
    return (inode.i_flags & EXT4_EXTENTS_FL) !== 0;
  }

  async mapOne(inode: Inode, lbn: number): Promise<number> {
    if (this.usesExtents(inode)) return (await mapExtents(this.c.io, inode, lbn, 1))[0]!;
    return mapBlock(this.c.io, inode, lbn);
  }

  async mapMany(inode: Inode, lbn: number, count: number): Promise<number[]> {
    if (this.usesExtents(inode)) return mapExtents(this.c.io, inode, lbn, count);
    return mapRange(this.c.io, inode, lbn, count);
  }

  /** A freed block's pending data is never written. */
  dropPending(block: number): void {
    if (this.pendingData.delete(block)) this.pendingBytes -= this.c.blockSize;
    // Its write may be under way already: harmless, the block stays unallocatable until the
    // commit that frees it is durable, and that commit waits for the write (flushed).
    for (const batch of this.flushing) batch.delete(block);
  }

  private flushingOf(pbn: number): Buffer | undefined {
    for (let i = this.flushing.length - 1; i >= 0; i--) {
      const b = this.flushing[i]!.get(pbn);
      if (b) return b;
    }
    return undefined;
  }

  /** A pending block's bytes, wherever they wait (pendingData, else the background flush). */
  private pendingOf(pbn: number): Buffer | undefined {
    return this.pendingData.get(pbn) ?? (this.flushing.length > 0 ? this.flushingOf(pbn) : undefined);
  }

  /**
   * The pending block to change in place: pendingData's, or a copy of the one
   * a background flush holds, put into pendingData (the flush writes the old
   * bytes; the copy is written by the next flush, which waits for it).
   */
  private writablePending(pbn: number): Buffer | undefined {
    const p = this.pendingData.get(pbn);
    if (p || this.flushing.length === 0) return p;
    const f = this.flushingOf(pbn);
    if (!f) return undefined;
    const block = this.pendingBlock(pbn);
    f.copy(block);
    this.pendingData.set(pbn, block);
    this.pendingBytes += this.c.blockSize;
    return block;
  }

  /** A file past 2 GiB needs the large_file feature (the kernel sets it the same way). */
  private noteSize(size: number): void {
    const sb = this.c.sb;
    if (size > 0x7fffffff && !hasRoCompat(sb, RO_COMPAT.large_file)) sb.s_feature_ro_compat |= RO_COMPAT.large_file;
  }

  /** A live regular file that this engine can change (write, truncate). */
  async liveRegularFile(id: InodeId): Promise<Inode> {
    const inode = await this.c.itable.live(id);
    const type = inode.i_mode & S_IFMT;
    if (type === S_IFDIR) throw withErrno('EISDIR');
    if (type !== S_IFREG) throw withErrno('EINVAL', 'not a regular file');
    if (this.usesExtents(inode)) throw withErrno('EROFS', 'extent-mapped files are read-only here');
    return inode;
  }

  async read(id: InodeId, position: number, length: number): Promise<Buffer> {
    const c = this.c;
    const inode = await c.itable.live(id);
    const type = inode.i_mode & S_IFMT;
    if (type === S_IFDIR) throw withErrno('EISDIR');
    if (type !== S_IFREG) throw withErrno('EINVAL', 'not a regular file');
    if (!Number.isSafeInteger(position) || position < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw withErrno('EINVAL');
    }
    const size = inode.i_size;
    if (position >= size || length === 0) return Buffer.alloc(0);
    const end = Math.min(size, position + length);
    const bs = c.blockSize;
    const first = Math.floor(position / bs);
    const last = Math.floor((end - 1) / bs);
    const map = await this.mapMany(inode, first, last - first + 1);
    if (map.length === 1 && map[0] !== 0 && this.pendingOf(map[0]!) === undefined) {
      // One block on disk (every small-file read): its bytes are the answer, no copy.
      return c.store.read(map[0]! * bs + (position - first * bs), end - position);
    }
    const out = Buffer.alloc(end - position);
    let i = 0;
    while (i < map.length) {
      const pbn = map[i]!;
      if (pbn === 0) {
        i++;
        continue;
      }
      const pending = this.pendingOf(pbn);
      if (pending) {
        const bStart = (first + i) * bs;
        const from = Math.max(bStart, position);
        const to = Math.min(bStart + bs, end);
        pending.copy(out, from - position, from - bStart, to - bStart);
        i++;
        continue;
      }
      let j = i + 1;
      while (j < map.length && map[j] === pbn + (j - i) && this.pendingOf(map[j]!) === undefined) j++;
      const runStart = (first + i) * bs;
      const runEnd = (first + j) * bs;
      const from = Math.max(runStart, position);
      const to = Math.min(runEnd, end);
      const bytes = await c.store.read(pbn * bs + (from - runStart), to - from);
      bytes.copy(out, from - position);
      i = j;
    }
    return out;
  }

  /**
   * Where the file has blocks, from the block map: a hole is an unmapped
   * block (blocks allocated but never written count as data, as the kernel's
   * SEEK_DATA does). Extent-mapped files (read-only here) answer with the
   * whole file, which the contract allows.
   */
  async dataRanges(id: InodeId): Promise<DataRange[]> {
    const c = this.c;
    const inode = await c.itable.live(id);
    const type = inode.i_mode & S_IFMT;
    if (type === S_IFDIR) throw withErrno('EISDIR');
    if (type !== S_IFREG) throw withErrno('EINVAL', 'not a regular file');
    const size = inode.i_size;
    if (size === 0) return [];
    if (this.usesExtents(inode)) return [{ offset: 0, length: size }];
    const bs = c.blockSize;
    const limit = Math.min(Math.ceil(size / bs), maxLogicalBlocks(bs / 4));
    const out: DataRange[] = [];
    for (const run of await mappedRuns(c.io, inode, limit)) {
      const offset = run.first * bs;
      out.push({ offset, length: Math.min(size, (run.first + run.count) * bs) - offset });
    }
    return out;
  }

  /** write() on the queue. */
  async write(id: InodeId, position: number, data: Buffer): Promise<number> {
    const c = this.c;
    const inode = await this.liveRegularFile(id);
    if (!Number.isSafeInteger(position) || position < 0) throw withErrno('EINVAL');
    if (data.length === 0) return 0;
    const bs = c.blockSize;
    const end = position + data.length;
    if (Math.ceil(end / bs) > this.maxFileBlocks) throw withErrno('EFBIG');
    this.noteSize(end);
    if (position > inode.i_size) await this.zeroPastEof(inode, inode.i_size);
    const first = Math.floor(position / bs);
    const last = Math.floor((end - 1) / bs);
    const t = c.now();
    let written = 0;
    const CHUNK = 1024;
    let prevPbn = 0;
    /** Blocks of the last allocated run not yet mapped (runNext the next of them). */
    let runLeft = 0;
    let runNext = 0;
    const perBlock = bs / 4;
    let failed: unknown = null;
    outer: for (let k = first; k <= last; k += CHUNK) {
      const n = Math.min(CHUNK, last - k + 1);
      const map = await mapRange(c.io, inode, k, n);
      let holes = 0;
      for (const b of map) if (b === 0) holes++;
      if (holes > 0) {
        const need = holes + Math.ceil(holes / (bs / 4)) + 3;
        if (need > c.alloc.availableBlocks() && c.alloc.freedPending > 0) {
          await c.itable.iput(id, inode);
          await c.tx.commit();
        }
      }
      // Overwrites of blocks already on disk, coalesced into runs of adjacent bytes.
      const runs: { pbn: number; buf: Buffer[]; bytes: number }[] = [];
      for (let i = 0; i < n; i++) {
        const lbn = k + i;
        const bStart = lbn * bs;
        const from = Math.max(bStart, position);
        const to = Math.min(bStart + bs, end);
        let pbn = map[i]!;
        if (pbn === 0) {
          if (runLeft === 0) {
            let goal = prevPbn ? prevPbn + 1 : lbn > 0 ? await mapBlock(c.io, inode, lbn - 1) : 0;
            if (goal === 0) goal = c.alloc.goalForInode(id);
            // Checked first, so a failed allocation never leaves half a mapping behind.
            const ind = lbn < EXT2_NDIR_BLOCKS ? 0 : await indirectBlocksNeeded(c.io, inode, lbn);
            if (1 + ind > c.alloc.availableBlocks()) {
              failed = withErrno('ENOSPC');
              await this.flushRuns(runs);
              break outer;
            }
            // The holes ahead whose pointers need no new indirect block (the rest of the
            // direct range, or of lbn's indirect block) are allocated as one run.
            let want = 1;
            if (ind === 0) {
              const limit = lbn < EXT2_NDIR_BLOCKS ? EXT2_NDIR_BLOCKS - lbn : perBlock - leafIndex(lbn, perBlock);
              while (want < limit && i + want < n && map[i + want] === 0) want++;
            }
            const got = await c.alloc.allocRun(goal, want);
            c.addBlocks(inode, got.count + (await setBlockRun(c.io, inode, lbn, got.start, got.count)));
            runNext = got.start;
            runLeft = got.count;
          }
          pbn = runNext++;
          runLeft--;
          // A new block's data waits in memory until the commit (or the pending cap) writes it.
          const block = this.pendingBlock(pbn);
          if (from > bStart) block.fill(0, 0, from - bStart);
          data.copy(block, from - bStart, from - position, to - position);
          if (to < bStart + bs) block.fill(0, to - bStart);
          this.pendingData.set(pbn, block);
          this.pendingBytes += bs;
          prevPbn = pbn;
          written = to - position;
          continue;
        }
        const pending = this.writablePending(pbn);
        if (pending) {
          data.copy(pending, from - bStart, from - position, to - position);
          prevPbn = pbn;
          written = to - position;
          continue;
        }
        const piece = data.subarray(from - position, to - position);
        const pieceDisk = pbn * bs + (from - bStart);
        prevPbn = pbn;
        const lastRun = runs[runs.length - 1];
        if (lastRun && lastRun.pbn * bs + lastRun.bytes === pieceDisk) {
          lastRun.buf.push(piece);
          lastRun.bytes += piece.length;
        } else {
          runs.push({ pbn: pieceDisk / bs, buf: [piece], bytes: piece.length });
        }
        written = to - position;
      }
      if (runLeft !== 0) throw new InternalError(`write to inode ${id}: ${runLeft} allocated blocks left unmapped`);
      if (runs.length > 0) await this.flushRuns(runs);
      if (written > 0 && position + written > inode.i_size) inode.i_size = position + written;
      c.stamp(inode, { m: true, c: true }, t);
      await c.itable.iput(id, inode);
      if (c.cache.dirty.size >= c.tx.commitThreshold()) await c.tx.closeRunning(true);
      else if (this.pendingBytes >= MAX_PENDING_DATA) await this.startFlush(true);
    }
    if (written > 0 && position + written > inode.i_size) inode.i_size = position + written;
    c.stamp(inode, { m: true, c: true }, t);
    await c.itable.iput(id, inode);
    if (failed && written === 0) throw failed;
    return written;
  }

  /**
   * A block-sized buffer for pendingData (not zeroed: the caller fills all of
   * it), carved from a slab of the block group `pbn` lies in: one allocation
   * per PENDING_SLAB bytes instead of one per block or per write (small
   * files). Blocks allocated one after another in a group usually sit side by
   * side on disk, and so they do in the group's slab, so a flush writes
   * such runs without copying them, however the writes interleave between
   * directories (whose files live in different groups). Pieces are never
   * reused: a piece leaves pendingData (flushed or freed) and is garbage with it.
   */
  private pendingBlock(pbn: number): Buffer {
    const bs = this.c.blockSize;
    const g = this.c.alloc.groupOfBlock(pbn);
    let slab = this.slabs.get(g);
    if (!slab || slab.buf.length - slab.used < bs) {
      // Bounded: writes scattered over many groups start over rather than pin a slab each.
      if (this.slabs.size >= MAX_SLABS) this.slabs.clear();
      slab = { buf: this.freeSlabs.pop() ?? Buffer.allocUnsafeSlow(Math.max(bs, PENDING_SLAB)), used: 0 };
      this.slabsInUse.push(slab.buf);
      this.slabs.set(g, slab);
    }
    const block = slab.buf.subarray(slab.used, slab.used + bs);
    slab.used += bs;
    return block;
  }

  /**
   * The wait for the flush running now (none: resolves at once), which
   * throws its write error: the commit's ordered-mode step, taken in the
   * background after startFlush() handed it the transaction's data.
   */
  flushed(): () => Promise<void> {
    const job = this.flushJob;
    return async () => {
      if (job) await job;
      if (this.flushError !== null) throw this.flushError;
    };
  }

  /**
   * Hands the pending blocks to a background flush. With `wait` (a write
   * past the cap: the back-pressure on writers) it first waits for the
   * flushes under way; without (a commit closing its transaction) the new
   * batch queues behind them. Each run of blocks adjacent on disk is one
   * write of views of the slabs (no copy; a run crossing slabs is one
   * pwritev where the store has it). Up to FLUSH_WRITERS writes
   * are in flight at once (the thread pool's size), in block order; a batch
   * starts once the one before is written, so a block in two batches (changed
   * again meanwhile, writablePending) reaches the disk in order.
   */
  async startFlush(wait: boolean): Promise<void> {
    if (wait && this.flushJob) await this.flushJob;
    if (this.flushError !== null) return;
    if (this.pendingData.size === 0) {
      this.recycleSlabs(this.slabsInUse.splice(0));
      this.slabs.clear();
      return;
    }
    const batch = this.pendingData;
    this.flushing.push(batch);
    this.pendingData = new Map();
    this.pendingBytes = 0;
    // New pieces come from other slabs: these stay as they are until written.
    const slabs = this.slabsInUse.splice(0);
    this.slabs.clear();
    const blocks = [...batch.keys()].sort((a, b) => a - b);
    // Runs of blocks adjacent on disk; each part a view of one stretch adjacent in a slab too.
    const runs: { from: number; to: number; parts: Buffer[] }[] = [];
    let i = 0;
    while (i < blocks.length) {
      const start = i;
      const parts: Buffer[] = [];
      do {
        const first = batch.get(blocks[i]!)!;
        let end = first.byteOffset + first.length;
        let j = i + 1;
        while (j < blocks.length && blocks[j] === blocks[j - 1]! + 1 && j - start < FLUSH_RUN_BLOCKS) {
          const next = batch.get(blocks[j]!)!;
          if (next.buffer !== first.buffer || next.byteOffset !== end) break;
          end += next.length;
          j++;
        }
        parts.push(Buffer.from(first.buffer, first.byteOffset, end - first.byteOffset));
        i = j;
      } while (i < blocks.length && blocks[i] === blocks[i - 1]! + 1 && i - start < FLUSH_RUN_BLOCKS);
      runs.push({ from: start, to: i, parts });
    }
    const store = this.c.store;
    const write = async (): Promise<void> => {
      // After a failed batch nothing more is written (the commit waiting on it fails).
      if (this.flushError !== null) return;
      await eachLimited(runs, FLUSH_WRITERS, async (r) => {
        const at = blocks[r.from]! * this.c.blockSize;
        if (r.parts.length === 1) await store.write(at, r.parts[0]!);
        else if (store.writev) await store.writev(at, r.parts);
        else for (let k = 0, pos = at; k < r.parts.length; pos += r.parts[k]!.length, k++) await store.write(pos, r.parts[k]!);
        // Dropped only once on disk, so an unqueued reader always finds the bytes somewhere.
        for (let k = r.from; k < r.to; k++) batch.delete(blocks[k]!);
      });
      this.flushing.splice(this.flushing.indexOf(batch), 1);
      this.recycleSlabs(slabs);
    };
    const job: Promise<void> = (this.flushJob ?? Promise.resolve())
      .then(write)
      .catch((err: unknown) => {
        // The blocks not written stay readable from their batch.
        if (this.flushError === null) this.flushError = err;
      })
      .finally(() => {
        if (this.flushJob === job) this.flushJob = null;
      });
    this.flushJob = job;
  }

  /**
   * Slabs whose pieces are all on disk (or dropped) and that nothing else
   * keeps (reads copy out of them): free for new pieces.
   */
  private recycleSlabs(slabs: Buffer[]): void {
    for (const buf of slabs) if (this.freeSlabs.length < MAX_FREE_SLABS) this.freeSlabs.push(buf);
  }

  private async flushRuns(runs: { pbn: number; buf: Buffer[]; bytes: number }[]): Promise<void> {
    if (runs.length === 0) return;
    for (const r of runs) {
      await this.c.store.write(r.pbn * this.c.blockSize, r.buf.length === 1 ? r.buf[0]! : Buffer.concat(r.buf));
    }
    runs.length = 0;
  }

  /**
   * Zeroes the last block's bytes past `eof` (the file's size). They are not
   * necessarily zero on disk: data goes in place before the commit that
   * extends i_size, so a crash in between leaves bytes past the replayed
   * size, which any later extension (truncate up, a write past EOF) would
   * expose. So every extension zeroes them first, as the kernel's
   * ext4_zero_partial_blocks / block_truncate_page do; in place, before the
   * commit of the new size (ordered mode), like the data itself.
   */
  private async zeroPastEof(inode: Inode, eof: number): Promise<void> {
    const bs = this.c.blockSize;
    const tail = eof % bs;
    if (tail === 0) return;
    const pbn = await mapBlock(this.c.io, inode, Math.floor(eof / bs));
    if (pbn === 0) return;
    const pending = this.writablePending(pbn);
    if (pending) pending.fill(0, tail);
    else await this.c.store.write(pbn * bs + tail, Buffer.alloc(bs - tail));
  }

  /** truncate() on the queue. */
  async truncate(id: InodeId, size: number): Promise<void> {
    const c = this.c;
    const inode = await this.liveRegularFile(id);
    if (!Number.isSafeInteger(size) || size < 0) throw withErrno('EINVAL');
    const bs = c.blockSize;
    if (Math.ceil(size / bs) > this.maxFileBlocks) throw withErrno('EFBIG');
    this.noteSize(size);
    if (size > inode.i_size) await this.zeroPastEof(inode, inode.i_size);
    if (size < inode.i_size) {
      // The target size first: a crash between the freeing steps is finished at open (orphan list).
      const oldEnd = Math.ceil(inode.i_size / bs);
      inode.i_size = size;
      await c.orphans.freeFrom(id, inode, Math.ceil(size / bs), false, oldEnd);
      await this.zeroPastEof(inode, size);
    }
    inode.i_size = size;
    c.stamp(inode, { m: true, c: true });
    await c.itable.iput(id, inode);
  }
}
