/**
 * Block and inode allocation over the per-group bitmaps (one block each,
 * bit i of group g = block s_first_data_block + g * s_blocks_per_group + i,
 * or inode g * s_inodes_per_group + i + 1).
 *
 * Invariants kept on every call: a bit and its group's bg_free_*_count and
 * the superblock's s_free_*_count change together, so the counts are always
 * exact (what e2fsck pass 5 recounts).
 *
 * Policy: blocks go at or after a goal (the previous block of the same file,
 * or the start of the inode's group), so files are contiguous when space
 * allows; new directories go to a group with more free inodes than average
 * and the most free blocks (a simple Orlov), other inodes next to their
 * parent directory.
 *
 * Ordered-mode rule: a block freed in the running transaction is not handed
 * out again before that transaction commits. Otherwise a crash could leave
 * the old owner (still referencing it on disk) pointing at new file data.
 *
 * Search hints: per group, every bit below blockHint[g] (inodeHint[g]) is
 * set in the bitmap, so a search may start there instead of at the group's
 * first bit (a file's first block has the group's start as its goal, and a
 * filling group would otherwise be rescanned from its first bit every time).
 * Only this allocator changes the bitmaps while the engine is open: an
 * allocation moves the hint past the bits now set, a free moves it down.
 * The bit found is the same the full scan finds.
 */
import { CorruptError, InternalError, withErrno } from '../errors.js';
import { inodeGroup, inodeIndex } from './geometry.js';
import type { GroupDesc } from './group-desc.js';
import type { Superblock } from './superblock.js';
import { firstIno, groupCount } from './superblock.js';

export interface AllocContext {
  readonly sb: Superblock;
  readonly groups: GroupDesc[];
  readMeta(block: number): Promise<Buffer>;
  writeMeta(block: number): Promise<Buffer>;
  /**
   * Group descriptor `g` changed: it must reach the GDT block before the next
   * commit. Returns a promise only when it has I/O to wait for.
   */
  groupChanged(g: number): Promise<void> | undefined;
  /**
   * Optional: start reading (not awaited) the metadata a new directory in
   * group `g` will want next, its inode `ino` likely: allocInode calls it
   * just before it reads a group's inode bitmap that is not cached.
   */
  warmGroup?(g: number, ino: number): void;
  /** Whether metadata block `block` is in memory (no read needed). */
  hasMeta?(block: number): boolean;
}

/** First zero bit in [from, to) of `bm`, skipping those `skip` rejects, or -1. */
function findZeroBit(bm: Buffer, from: number, to: number, skip?: (bit: number) => boolean): number {
  let bit = from;
  while (bit < to) {
    const byte = bm[bit >>> 3]!;
    if (byte === 0xff) {
      bit = (bit | 7) + 1;
      continue;
    }
    if ((byte & (1 << (bit & 7))) === 0 && !(skip && skip(bit))) return bit;
    bit++;
  }
  return -1;
}

/**
 * The blocks freed since the last commit, as one bitmap per block group
 * (allocated on first use): add and has cost a bit operation, where a Set
 * of every block freed by a big rm grows and rehashes to hundreds of
 * thousands of entries.
 */
export class FreedBlocks {
  private readonly maps = new Map<number, Uint8Array>();
  size = 0;

  constructor(
    private readonly firstDataBlock: number,
    private readonly blocksPerGroup: number,
  ) {}

  add(block: number): void {
    const rel = block - this.firstDataBlock;
    const g = Math.floor(rel / this.blocksPerGroup);
    const bit = rel - g * this.blocksPerGroup;
    let m = this.maps.get(g);
    if (!m) {
      m = new Uint8Array((this.blocksPerGroup + 7) >>> 3);
      this.maps.set(g, m);
    }
    const mask = 1 << (bit & 7);
    if ((m[bit >>> 3]! & mask) === 0) {
      m[bit >>> 3] = m[bit >>> 3]! | mask;
      this.size++;
    }
  }

  has(block: number): boolean {
    if (this.size === 0) return false;
    const rel = block - this.firstDataBlock;
    const g = Math.floor(rel / this.blocksPerGroup);
    const m = this.maps.get(g);
    if (!m) return false;
    const bit = rel - g * this.blocksPerGroup;
    return (m[bit >>> 3]! & (1 << (bit & 7))) !== 0;
  }

  clear(): void {
    this.maps.clear();
    this.size = 0;
  }
}

/** The first clear bit at or after `from` (below `to`), else `to`: the new hint once `from` is taken. */
function nextZeroFrom(bm: Buffer, from: number, to: number): number {
  const bit = findZeroBit(bm, from, to);
  return bit < 0 ? to : bit;
}

export class Allocator {
  /** Blocks freed in the running transaction: not reusable until its commit is durable. */
  freedThisTx: FreedBlocks;
  /** Blocks freed in the transaction being committed (sealFreed), until its commit is durable. */
  private freedCommitting: FreedBlocks | null = null;
  private readonly ngroups: number;
  private readonly blockHint: Uint32Array;
  private readonly inodeHint: Uint32Array;

  constructor(private readonly ctx: AllocContext) {
    this.ngroups = groupCount(ctx.sb);
    this.freedThisTx = new FreedBlocks(ctx.sb.s_first_data_block, ctx.sb.s_blocks_per_group);
    this.blockHint = new Uint32Array(this.ngroups);
    this.inodeHint = new Uint32Array(this.ngroups);
  }

  private groupFirstBlock(g: number): number {
    return this.ctx.sb.s_first_data_block + g * this.ctx.sb.s_blocks_per_group;
  }

  private blocksInGroup(g: number): number {
    const sb = this.ctx.sb;
    return Math.min(sb.s_blocks_per_group, sb.s_blocks_count - this.groupFirstBlock(g));
  }

  groupOfBlock(block: number): number {
    return Math.floor((block - this.ctx.sb.s_first_data_block) / this.ctx.sb.s_blocks_per_group);
  }

  groupOfInode(ino: number): number {
    return inodeGroup(this.ctx.sb, ino);
  }

  /** Blocks an allocation can get right now (free minus those freed by transactions not yet durable). */
  availableBlocks(): number {
    return Math.max(0, this.ctx.sb.s_free_blocks_count - this.freedPending);
  }

  /** Blocks freed but not yet reusable (by the running and the committing transaction). */
  get freedPending(): number {
    return this.freedThisTx.size + (this.freedCommitting?.size ?? 0);
  }

  /**
   * The running transaction closes: the blocks it freed stay unusable until
   * its commit is durable (releaseFreed), so no block of the last committed
   * state is overwritten as data before the commit that frees it (jbd2's
   * b_committed_data rule); the next transaction's frees start a new set.
   */
  sealFreed(): FreedBlocks {
    if (this.freedCommitting) throw new InternalError('a transaction closed while another was still committing');
    const sealed = this.freedThisTx;
    this.freedCommitting = sealed;
    this.freedThisTx = new FreedBlocks(this.ctx.sb.s_first_data_block, this.ctx.sb.s_blocks_per_group);
    return sealed;
  }

  /** The commit that freed `sealed` is durable: its blocks can be allocated again. */
  releaseFreed(sealed: FreedBlocks): void {
    if (this.freedCommitting === sealed) this.freedCommitting = null;
  }

  /** The first block of the group holding inode `ino`: the default goal for its data. */
  goalForInode(ino: number): number {
    return this.groupFirstBlock(this.groupOfInode(ino));
  }

  async allocBlock(goal: number): Promise<number> {
    return (await this.allocRun(goal, 1)).start;
  }

  /**
   * Up to `max` contiguous blocks: the first free block at or after `goal`
   * (as allocBlock finds it), and the free blocks right after it in its
   * group. Block by block with goals prev + 1 would take the same blocks;
   * this reads and marks the bitmap once for all of them.
   */
  async allocRun(goal: number, max: number): Promise<{ start: number; count: number }> {
    const { sb, groups } = this.ctx;
    if (this.availableBlocks() <= 0) throw withErrno('ENOSPC');
    max = Math.max(1, Math.min(max, this.availableBlocks()));
    if (!(goal >= sb.s_first_data_block && goal < sb.s_blocks_count)) goal = sb.s_first_data_block;
    const g0 = this.groupOfBlock(goal);
    const freed = this.freedThisTx;
    const sealed = this.freedCommitting !== null && this.freedCommitting.size > 0 ? this.freedCommitting : null;
    for (let k = 0; k <= this.ngroups; k++) {
      const g = (g0 + k) % this.ngroups;
      const gd = groups[g]!;
      if (gd.bg_free_blocks_count === 0) continue;
      const base = this.groupFirstBlock(g);
      const skip =
        freed.size > 0 || sealed ? (bit: number) => freed.has(base + bit) || (sealed?.has(base + bit) ?? false) : undefined;
      const bm = await this.ctx.readMeta(gd.bg_block_bitmap);
      const n = this.blocksInGroup(g);
      const hint = this.blockHint[g]!;
      const start = k === 0 ? goal - base : 0;
      let bit = findZeroBit(bm, Math.max(start, hint), n, skip);
      // Every bit from the hint up to the one found is set when the search that found it
      // began at the hint and passed over no free bit (no skip).
      let fromHint = start <= hint;
      if (bit < 0 && start > hint) {
        bit = findZeroBit(bm, hint, start, skip);
        fromHint = true;
      }
      if (bit < 0) continue;
      const w = await this.ctx.writeMeta(gd.bg_block_bitmap);
      let count = 0;
      do {
        const b = bit + count;
        w[b >>> 3] = w[b >>> 3]! | (1 << (b & 7));
        count++;
      } while (
        count < max &&
        count < gd.bg_free_blocks_count &&
        bit + count < n &&
        (w[(bit + count) >>> 3]! & (1 << ((bit + count) & 7))) === 0 &&
        !(skip && skip(bit + count))
      );
      // Past the run when nothing free lies before it: a file's first block (goal: the group's
      // start) then never rescans the blocks its neighbours took after their goals.
      if (bit === hint || (fromHint && !skip)) this.blockHint[g] = nextZeroFrom(w, bit + count, n);
      gd.bg_free_blocks_count -= count;
      sb.s_free_blocks_count -= count;
      const io = this.ctx.groupChanged(g);
      if (io) await io;
      return { start: base + bit, count };
    }
    throw withErrno('ENOSPC');
  }

  async freeBlock(block: number): Promise<void> {
    const { sb, groups } = this.ctx;
    if (block < sb.s_first_data_block || block >= sb.s_blocks_count) {
      throw new CorruptError(`freeing block ${block} outside the filesystem`);
    }
    const g = this.groupOfBlock(block);
    const gd = groups[g]!;
    const bit = block - this.groupFirstBlock(g);
    const w = await this.ctx.writeMeta(gd.bg_block_bitmap);
    if ((w[bit >>> 3]! & (1 << (bit & 7))) === 0) {
      throw new CorruptError(`block ${block} is referenced twice or already free in the block bitmap`);
    }
    w[bit >>> 3] = w[bit >>> 3]! & ~(1 << (bit & 7));
    if (bit < this.blockHint[g]!) this.blockHint[g] = bit;
    gd.bg_free_blocks_count++;
    sb.s_free_blocks_count++;
    this.freedThisTx.add(block);
    const io = this.ctx.groupChanged(g);
    if (io) await io;
  }

  /**
   * Frees the `count` blocks from `start` (a run of one file's pointers), as
   * that many freeBlock calls would: the first one not in use stops it with
   * CorruptError, the blocks before it freed.
   */
  async freeRun(start: number, count: number): Promise<void> {
    const { sb, groups } = this.ctx;
    if (start < sb.s_first_data_block || start + count > sb.s_blocks_count) {
      throw new CorruptError(`freeing blocks ${start}+${count} outside the filesystem`);
    }
    let block = start;
    const end = start + count;
    while (block < end) {
      const g = this.groupOfBlock(block);
      const gd = groups[g]!;
      const base = this.groupFirstBlock(g);
      const stop = Math.min(end, base + this.ctx.sb.s_blocks_per_group);
      const w = await this.ctx.writeMeta(gd.bg_block_bitmap);
      let freed = 0;
      let bad = -1;
      for (; block < stop; block++) {
        const bit = block - base;
        if ((w[bit >>> 3]! & (1 << (bit & 7))) === 0) {
          bad = block;
          break;
        }
        w[bit >>> 3] = w[bit >>> 3]! & ~(1 << (bit & 7));
        if (bit < this.blockHint[g]!) this.blockHint[g] = bit;
        this.freedThisTx.add(block);
        freed++;
      }
      gd.bg_free_blocks_count += freed;
      sb.s_free_blocks_count += freed;
      const io = this.ctx.groupChanged(g);
      if (io) await io;
      if (bad >= 0) throw new CorruptError(`block ${bad} is referenced twice or already free in the block bitmap`);
    }
  }

  async allocInode(parentIno: number, isDir: boolean): Promise<number> {
    const { sb, groups } = this.ctx;
    if (sb.s_free_inodes_count === 0) throw withErrno('ENOSPC', 'no free inodes');
    // The order of groups tried: a directory's Orlov pick first, then from the parent's group on
    // (walked without building the list: a file's create usually stops at the first).
    let best = -1;
    if (isDir) {
      const avg = sb.s_free_inodes_count / this.ngroups;
      for (let g = 0; g < this.ngroups; g++) {
        const gd = groups[g]!;
        if (gd.bg_free_inodes_count === 0 || gd.bg_free_inodes_count < avg) continue;
        if (best < 0 || gd.bg_free_blocks_count > groups[best]!.bg_free_blocks_count) best = g;
      }
    }
    const pg = Math.min(this.groupOfInode(Math.max(1, parentIno)), this.ngroups - 1);
    const ipg = sb.s_inodes_per_group;
    for (let k = best >= 0 ? -1 : 0; k < this.ngroups; k++) {
      const g = k < 0 ? best : (pg + k) % this.ngroups;
      const gd = groups[g]!;
      if (gd.bg_free_inodes_count === 0) continue;
      const from = Math.max(g === 0 ? firstIno(sb) - 1 : 0, this.inodeHint[g]!);
      // A directory spreading to a group not visited yet: its block bitmap and inode-table
      // block are read beside its inode bitmap (one round trip to the image, not three).
      if (isDir && this.ctx.warmGroup && this.ctx.hasMeta && !this.ctx.hasMeta(gd.bg_inode_bitmap)) {
        this.ctx.warmGroup(g, g * ipg + from + 1);
      }
      const bm = await this.ctx.readMeta(gd.bg_inode_bitmap);
      const bit = findZeroBit(bm, from, ipg);
      if (bit < 0) continue;
      const w = await this.ctx.writeMeta(gd.bg_inode_bitmap);
      w[bit >>> 3] = w[bit >>> 3]! | (1 << (bit & 7));
      if (bit === from) this.inodeHint[g] = nextZeroFrom(w, from, ipg);
      gd.bg_free_inodes_count--;
      if (isDir) gd.bg_used_dirs_count++;
      sb.s_free_inodes_count--;
      const io = this.ctx.groupChanged(g);
      if (io) await io;
      return g * ipg + bit + 1;
    }
    throw withErrno('ENOSPC', 'no free inodes');
  }

  async freeInode(ino: number, isDir: boolean): Promise<void> {
    const { sb, groups } = this.ctx;
    if (ino < 1 || ino > sb.s_inodes_count) throw new CorruptError(`freeing inode ${ino} outside the filesystem`);
    const g = this.groupOfInode(ino);
    const gd = groups[g]!;
    const bit = inodeIndex(sb, ino);
    const w = await this.ctx.writeMeta(gd.bg_inode_bitmap);
    if ((w[bit >>> 3]! & (1 << (bit & 7))) === 0) throw new CorruptError(`inode ${ino} is already free in the inode bitmap`);
    w[bit >>> 3] = w[bit >>> 3]! & ~(1 << (bit & 7));
    if (bit < this.inodeHint[g]!) this.inodeHint[g] = bit;
    gd.bg_free_inodes_count++;
    if (isDir && gd.bg_used_dirs_count > 0) gd.bg_used_dirs_count--;
    sb.s_free_inodes_count++;
    const io = this.ctx.groupChanged(g);
    if (io) await io;
  }
}
