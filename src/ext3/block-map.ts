/**
 * The ext2/3 block map: logical file block -> physical block, through the
 * inode's i_block[15] (fs/ext2/inode.c ext2_block_to_path):
 *
 *   i_block[0..11]  direct blocks                   logical 0 .. 11
 *   i_block[12]     indirect: P pointers             12 .. 12+P-1
 *   i_block[13]     double indirect: P x P           ... +P^2
 *   i_block[14]     triple indirect: P x P x P       ... +P^3
 *
 * P = blockSize / 4. A zero pointer anywhere is a hole. Indirect blocks are
 * metadata (journaled, read through the engine's block cache); the blocks
 * they point to are file data. The depth is fixed at three, so no walk can
 * loop; every pointer is checked against the filesystem's block range before
 * it is followed.
 */
import { CorruptError, withErrno } from '../errors.js';
import type { Inode } from './inode.js';
import { EXT2_DIND_BLOCK, EXT2_IND_BLOCK, EXT2_NDIR_BLOCKS, EXT2_TIND_BLOCK } from './inode.js';

/** What the block map needs from the engine. */
export interface BlockMapIO {
  readonly blockSize: number;
  /** First and one-past-last valid block numbers. */
  readonly firstDataBlock: number;
  readonly blocksCount: number;
  /** A metadata block's current contents (read-only use). */
  readMeta(block: number): Promise<Buffer>;
  /** The metadata block's buffer, marked dirty: callers mutate it in place. */
  writeMeta(block: number): Promise<Buffer>;
  /** A freshly allocated metadata block: zeroed, dirty, no read. */
  newMeta(block: number): Buffer;
  /** Allocates one block near `goal`; throws FsError ENOSPC. */
  allocBlock(goal: number): Promise<number>;
  /** Frees a block (data or metadata). */
  freeBlock(block: number, wasMeta: boolean): Promise<void>;
  /** Frees `count` consecutive blocks from `start`, as that many freeBlock calls would. */
  freeRun(start: number, count: number, wasMeta: boolean): Promise<void>;
}

export type BlockPath = number[];

/**
 * The path to a logical block: [slot in i_block, index in level 1, ...].
 * Throws EFBIG past the triple-indirect range.
 */
export function blockPath(lbn: number, perBlock: number): BlockPath {
  if (!Number.isSafeInteger(lbn) || lbn < 0) throw withErrno('EINVAL', `logical block ${lbn}`);
  if (lbn < EXT2_NDIR_BLOCKS) return [lbn];
  let n = lbn - EXT2_NDIR_BLOCKS;
  if (n < perBlock) return [EXT2_IND_BLOCK, n];
  n -= perBlock;
  const p2 = perBlock * perBlock;
  if (n < p2) return [EXT2_DIND_BLOCK, Math.floor(n / perBlock), n % perBlock];
  n -= p2;
  if (n < p2 * perBlock) {
    return [EXT2_TIND_BLOCK, Math.floor(n / p2), Math.floor(n / perBlock) % perBlock, n % perBlock];
  }
  throw withErrno('EFBIG', `logical block ${lbn} beyond triple indirection`);
}

/** The index of `lbn`'s pointer in the block that holds it (its last path step), for lbn past the direct blocks. */
export function leafIndex(lbn: number, perBlock: number): number {
  const path = blockPath(lbn, perBlock);
  return path[path.length - 1]!;
}

/** Logical blocks addressable through i_block (12 + P + P^2 + P^3). */
export function maxLogicalBlocks(perBlock: number): number {
  return EXT2_NDIR_BLOCKS + perBlock + perBlock * perBlock + perBlock * perBlock * perBlock;
}

function checkPtr(io: BlockMapIO, ptr: number, what: string): number {
  if (ptr !== 0 && (ptr < io.firstDataBlock || ptr >= io.blocksCount)) {
    throw new CorruptError(`${what} points to block ${ptr}, outside the filesystem (${io.blocksCount} blocks)`);
  }
  return ptr;
}

/** The physical block of logical block `lbn`, or 0 for a hole. */
export async function mapBlock(io: BlockMapIO, inode: Inode, lbn: number): Promise<number> {
  const path = blockPath(lbn, io.blockSize / 4);
  let ptr = checkPtr(io, inode.i_block[path[0]!]!, 'i_block');
  for (let level = 1; level < path.length && ptr !== 0; level++) {
    const buf = await io.readMeta(ptr);
    ptr = checkPtr(io, buf.readUInt32LE(path[level]! * 4), `indirect block ${ptr}`);
  }
  return ptr;
}

/**
 * The mapping of `count` logical blocks from `lbn` (0 = hole), reading each
 * indirect block once per run of consecutive entries.
 */
export async function mapRange(io: BlockMapIO, inode: Inode, lbn: number, count: number): Promise<number[]> {
  const out: number[] = [];
  const per = io.blockSize / 4;
  let i = 0;
  if (!Number.isSafeInteger(lbn) || lbn < 0) throw withErrno('EINVAL', `logical block ${lbn}`);
  // The direct blocks (every small file) need no path.
  for (; i < count && lbn + i < EXT2_NDIR_BLOCKS; i++) out.push(checkPtr(io, inode.i_block[lbn + i]!, 'i_block'));
  while (i < count) {
    const cur = lbn + i;
    const path = blockPath(cur, per);
    // Walk to the last-level indirect block, then take as many entries from it as the range needs.
    let ptr = checkPtr(io, inode.i_block[path[0]!]!, 'i_block');
    for (let level = 1; level < path.length - 1 && ptr !== 0; level++) {
      const buf = await io.readMeta(ptr);
      ptr = checkPtr(io, buf.readUInt32LE(path[level]! * 4), `indirect block ${ptr}`);
    }
    const first = path[path.length - 1]!;
    const take = Math.min(per - first, count - i);
    if (ptr === 0) {
      for (let k = 0; k < take; k++) out.push(0);
    } else {
      const buf = await io.readMeta(ptr);
      for (let k = 0; k < take; k++) {
        out.push(checkPtr(io, buf.readUInt32LE((first + k) * 4), `indirect block ${ptr}`));
      }
    }
    i += take;
  }
  return out;
}

/** How many indirect blocks mapping `lbn` would have to allocate (0..3). */
export async function indirectBlocksNeeded(io: BlockMapIO, inode: Inode, lbn: number): Promise<number> {
  const path = blockPath(lbn, io.blockSize / 4);
  let ptr = inode.i_block[path[0]!]!;
  let level = 1;
  for (; level < path.length; level++) {
    if (ptr === 0) return path.length - level;
    const buf = await io.readMeta(checkPtr(io, ptr, 'i_block'));
    ptr = buf.readUInt32LE(path[level]! * 4);
  }
  return 0;
}

/**
 * Points logical block `lbn` at `pbn`, allocating missing indirect blocks
 * near `pbn`. Returns the number of indirect blocks allocated (the caller
 * adds them to i_blocks). The caller re-encodes the inode (i_block may change).
 */
export async function setBlock(io: BlockMapIO, inode: Inode, lbn: number, pbn: number): Promise<number> {
  const path = blockPath(lbn, io.blockSize / 4);
  if (path.length === 1) {
    inode.i_block[path[0]!] = pbn;
    return 0;
  }
  let allocated = 0;
  let ptr = checkPtr(io, inode.i_block[path[0]!]!, 'i_block');
  if (ptr === 0) {
    ptr = await io.allocBlock(pbn);
    io.newMeta(ptr);
    allocated++;
    inode.i_block[path[0]!] = ptr;
  }
  for (let level = 1; level < path.length; level++) {
    const off = path[level]! * 4;
    if (level === path.length - 1) {
      const buf = await io.writeMeta(ptr);
      buf.writeUInt32LE(pbn >>> 0, off);
      break;
    }
    const buf = await io.readMeta(ptr);
    let next = checkPtr(io, buf.readUInt32LE(off), `indirect block ${ptr}`);
    if (next === 0) {
      next = await io.allocBlock(pbn);
      io.newMeta(next);
      allocated++;
      (await io.writeMeta(ptr)).writeUInt32LE(next, off);
    }
    ptr = next;
  }
  return allocated;
}

/**
 * Points the `count` logical blocks from `lbn` at the physical blocks from
 * `pbn` on (a run just allocated), as `count` setBlock calls would, walking
 * to the pointers once: the blocks must share one leaf, the direct range or
 * one indirect block. Returns the number of indirect blocks allocated.
 */
export async function setBlockRun(io: BlockMapIO, inode: Inode, lbn: number, pbn: number, count: number): Promise<number> {
  const per = io.blockSize / 4;
  const path = blockPath(lbn, per);
  const first = path[path.length - 1]!;
  const room = path.length === 1 ? EXT2_NDIR_BLOCKS - first : per - first;
  if (!(count >= 1 && count <= room)) throw new RangeError(`run of ${count} blocks at logical ${lbn} crosses its pointer block`);
  if (path.length === 1) {
    for (let k = 0; k < count; k++) inode.i_block[lbn + k] = pbn + k;
    return 0;
  }
  const allocated = await setBlock(io, inode, lbn, pbn);
  if (count === 1) return allocated;
  // setBlock made the path; walk it again to the leaf (now cached and dirty).
  let ptr = checkPtr(io, inode.i_block[path[0]!]!, 'i_block');
  for (let level = 1; level < path.length - 1; level++) {
    const buf = await io.readMeta(ptr);
    ptr = checkPtr(io, buf.readUInt32LE(path[level]! * 4), `indirect block ${ptr}`);
  }
  const leaf = await io.writeMeta(ptr);
  for (let k = 1; k < count; k++) leaf.writeUInt32LE((pbn + k) >>> 0, (first + k) * 4);
  return allocated;
}

/**
 * Frees every block at logical index >= `keep` (data and the indirect
 * blocks left empty), zeroing the pointers that referenced them. Returns the
 * number of blocks freed. Holes cost nothing: empty subtrees are skipped.
 */
export async function truncateBlocks(io: BlockMapIO, inode: Inode, keep: number, leavesAreMeta = false): Promise<number> {
  const per = io.blockSize / 4;
  let freed = 0;
  const run = new FreeRun(io, leavesAreMeta);
  for (let i = Math.min(keep, EXT2_NDIR_BLOCKS); i < EXT2_NDIR_BLOCKS; i++) {
    const b = checkPtr(io, inode.i_block[i]!, 'i_block');
    if (b !== 0) {
      const freeing = run.add(b);
      if (freeing) await freeing;
      inode.i_block[i] = 0;
      freed++;
    }
  }
  await run.flush();
  let start = EXT2_NDIR_BLOCKS;
  let span = per;
  for (let slot = EXT2_IND_BLOCK, depth = 1; slot <= EXT2_TIND_BLOCK; slot++, depth++) {
    const keepHere = Math.max(0, keep - start);
    const root = checkPtr(io, inode.i_block[slot]!, 'i_block');
    if (root !== 0 && keepHere < span) {
      const r = await truncateTree(io, root, depth, keepHere, per, leavesAreMeta);
      freed += r.freed;
      if (r.empty) inode.i_block[slot] = 0;
    }
    start += span;
    span *= per;
  }
  return freed;
}

/** Blocks to free, gathered into runs of consecutive numbers, each freed with one freeRun. */
class FreeRun {
  private start = 0;
  private count = 0;

  constructor(
    private readonly io: BlockMapIO,
    private readonly wasMeta: boolean,
  ) {}

  /** A promise only when a run had to be freed first (callers await it then). */
  add(block: number): Promise<void> | undefined {
    if (this.count > 0 && block === this.start + this.count) {
      this.count++;
      return undefined;
    }
    if (this.count === 0) {
      this.start = block;
      this.count = 1;
      return undefined;
    }
    return this.flush().then(() => {
      this.start = block;
      this.count = 1;
    });
  }

  async flush(): Promise<void> {
    if (this.count === 0) return;
    const { start, count } = this;
    this.count = 0;
    if (count === 1) await this.io.freeBlock(start, this.wasMeta);
    else await this.io.freeRun(start, count, this.wasMeta);
  }
}

/**
 * Truncates the subtree under indirect block `block` of `depth` levels
 * (1: entries are data blocks) to its first `keep` leaves.
 */
async function truncateTree(
  io: BlockMapIO,
  block: number,
  depth: number,
  keep: number,
  per: number,
  leavesAreMeta: boolean,
): Promise<{ freed: number; empty: boolean }> {
  const leavesPerEntry = per ** (depth - 1);
  const firstEntry = Math.floor(keep / leavesPerEntry);
  let freed = 0;
  const buf = await io.readMeta(block);
  let writable: Buffer | null = null;
  const run = new FreeRun(io, leavesAreMeta);
  for (let e = firstEntry; e < per; e++) {
    const child = checkPtr(io, buf.readUInt32LE(e * 4), `indirect block ${block}`);
    if (child === 0) continue;
    const keepChild = Math.max(0, keep - e * leavesPerEntry);
    let childGone = true;
    if (depth > 1) {
      const r = await truncateTree(io, child, depth - 1, keepChild, per, leavesAreMeta);
      freed += r.freed;
      childGone = r.empty;
    } else {
      const freeing = run.add(child);
      if (freeing) await freeing;
      freed++;
    }
    if (childGone && keep > 0) {
      writable ??= await io.writeMeta(block);
      writable.writeUInt32LE(0, e * 4);
    }
  }
  await run.flush();
  if (keep === 0) {
    await io.freeBlock(block, true);
    return { freed: freed + 1, empty: true };
  }
  return { freed, empty: false };
}

/**
 * The mapped logical blocks below `limit`, as runs of consecutive logical
 * blocks in order (SEEK_DATA/SEEK_HOLE at block granularity). A zero pointer
 * at any level is a hole skipped whole, so a sparse file costs its indirect
 * blocks, not its size.
 */
export async function mappedRuns(io: BlockMapIO, inode: Inode, limit: number): Promise<{ first: number; count: number }[]> {
  const runs: { first: number; count: number }[] = [];
  const per = io.blockSize / 4;
  const add = (lbn: number): void => {
    const last = runs[runs.length - 1];
    if (last && last.first + last.count === lbn) last.count++;
    else runs.push({ first: lbn, count: 1 });
  };
  for (let i = 0; i < EXT2_NDIR_BLOCKS && i < limit; i++) {
    if (checkPtr(io, inode.i_block[i]!, 'i_block') !== 0) add(i);
  }
  // `block` maps logical blocks from `start`, each of its entries `span` of them.
  const walk = async (block: number, depth: number, start: number, span: number): Promise<void> => {
    const buf = await io.readMeta(block);
    for (let e = 0; e < per; e++) {
      const lbn = start + e * span;
      if (lbn >= limit) return;
      const child = checkPtr(io, buf.readUInt32LE(e * 4), `indirect block ${block}`);
      if (child === 0) continue;
      if (depth === 1) add(lbn);
      else await walk(child, depth - 1, lbn, span / per);
    }
  };
  let base = EXT2_NDIR_BLOCKS;
  for (let slot = EXT2_IND_BLOCK, depth = 1; slot <= EXT2_TIND_BLOCK && base < limit; slot++, depth++) {
    const root = checkPtr(io, inode.i_block[slot]!, 'i_block');
    if (root !== 0) await walk(root, depth, base, per ** (depth - 1));
    base += per ** depth;
  }
  return runs;
}

/** Every indirect (metadata) block of a file, for checks and the journal. */
export async function indirectBlocks(io: BlockMapIO, inode: Inode): Promise<number[]> {
  const out: number[] = [];
  const per = io.blockSize / 4;
  const walk = async (block: number, depth: number): Promise<void> => {
    out.push(block);
    if (depth === 1) return;
    const buf = await io.readMeta(block);
    for (let e = 0; e < per; e++) {
      const child = checkPtr(io, buf.readUInt32LE(e * 4), `indirect block ${block}`);
      if (child !== 0) await walk(child, depth - 1);
    }
  };
  for (let slot = EXT2_IND_BLOCK, depth = 1; slot <= EXT2_TIND_BLOCK; slot++, depth++) {
    const root = checkPtr(io, inode.i_block[slot]!, 'i_block');
    if (root !== 0) await walk(root, depth);
  }
  return out;
}
