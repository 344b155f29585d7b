/**
 * Ext3Fs: an ext2/ext3 filesystem image read and written in-process
 * (implements WritableFs from src/engine.ts).
 *
 *  block 0/1          GDT (+ reserved GDT for resize_inode)
 *  +-------+------------+--------+---------+--------------+--------------------+
 *  | boot  | superblock |  GDT   | res.GDT |  group 0 ... |  group 1 ...       |
 *  +-------+------------+--------+---------+--------------+--------------------+
 *                          |  one descriptor per group:
 *                          +--> block bitmap, inode bitmap, inode table (group-desc.ts)
 *  inode N = inode table of group (N-1)/ipg, slot (N-1)%ipg (inode.ts)
 *     i_block[0..11] -> data; [12] -> indirect; [13] -> double; [14] -> triple (block-map.ts)
 *     directory data = dirent blocks (dir.ts), maybe indexed (htree.ts)
 *     i_file_acl -> shared xattr block (xattr.ts); in-inode xattrs after i_extra_isize
 *  inode 8 = the JBD2 journal (journal/), inode 7 = resize inode (never touched)
 *  groups 0, 1, 3^k, 5^k, 7^k carry superblock + GDT backups (sparse_super)
 *
 * Data paths: file data goes to the image directly (new blocks via an
 * in-memory pending set flushed before each commit); metadata through the
 * block cache and the journal (below).
 *
 * Concurrency: every mutation runs on one writer queue, so no two operations
 * interleave inside an allocation, a directory update or a commit. Reads run
 * beside it on the in-memory state, which each mutation changes between its
 * awaits only in consistent steps.
 *
 * Durability (ordered mode, like the kernel's ext3): file data reaches the
 * image before the commit that references it; every metadata change goes to
 * the dirty-block cache
 * (block-cache.ts) and reaches the image only through a journal commit
 * (journal/journal.ts) on fsync, sync, close, when the transaction grows
 * near the journal's capacity, and at most 5 s after a change. The journal's
 * fdatasync before its commit record also makes that data durable first.
 * Without a journal (ext2), a commit writes the blocks home and syncs.
 *
 * While open for writing, a journaled image carries needs_recovery (as the
 * kernel marks a mounted ext3); a clean close commits, clears it, empties the
 * journal and leaves s_state valid.
 */
import { LRUCache } from 'lru-cache';
import { CorruptError, UnsupportedError, withErrno } from '../errors.js';
import type { ByteStore } from '../io/byte-source.js';
import type { DataRange, DirEntry, FileType, InodeId, NewNode, RenameFlags, SetAttr, Stat, StatFs, WritableFs } from '../engine.js';
import { devMajor, devMinor, fileTypeOf, makedev, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from '../engine.js';
import { aclChmodDisk, aclDiskToXattr, aclModeOf, aclXattrToDisk } from './acl.js';
import { Allocator } from './alloc.js';
import { BlockCache } from './block-cache.js';
import type { BlockMapIO } from './block-map.js';
import { indirectBlocksNeeded, mapBlock, mapRange, maxLogicalBlocks, setBlock, truncateBlocks } from './block-map.js';
import {
  blockFreeSpace,
  decodeDirBlock,
  decodeDirent,
  direntSize,
  EXT2_NAME_LEN,
  emptyDirBlock,
  encodeDirent,
  encodeDotBlock,
  fileTypeToFt,
  findInsertSlot,
  recLenAt,
  scanFreeSpace,
  ftToFileType,
  setRecLen,
} from './dir.js';
import { DirIndex, nameKey } from './dir-index.js';
import { decodeDxNode, decodeDxRoot, dirHash, dxSearch } from './htree.js';
import type { DirSlot } from './dir-index.js';
import { COMPAT, INCOMPAT, RO_COMPAT } from './features.js';
import type { GroupDesc } from './group-desc.js';
import { decodeGroupDesc, encodeGroupDesc, gdtBlockCount, validateGroupDesc } from './group-desc.js';
import type { Inode, Time } from './inode.js';
import {
  decodeDevice,
  decodeInode,
  emptyInode,
  encodeDevice,
  encodeInode,
  encodeInodeInto,
  EXT2_INDEX_FL,
  EXT2_N_BLOCKS,
  EXT2_ROOT_INO,
  EXT4_EXTENTS_FL,
  EXT4_INLINE_DATA_FL,
} from './inode.js';
import { mapExtents } from './extents.js';
import { Journal } from './journal/journal.js';
import { openJournalFile } from './journal/journal-file.js';
import type { Superblock } from './superblock.js';
import {
  blockSize as sbBlockSize,
  descSize as sbDescSize,
  encodeSuperblock,
  EXT2_VALID_FS,
  groupCount,
  groupHasSuper,
  hasCompat,
  hasIncompat,
  hasRoCompat,
  inodeSize as sbInodeSize,
  SUPERBLOCK_OFFSET,
  SUPERBLOCK_SIZE,
  unsignedHash,
} from './superblock.js';
import { decodeFastSymlink, decodeSlowSymlink, encodeFastSymlink, FAST_SYMLINK_MAX, isFastSymlink } from './symlink.js';
import type { XattrEntry } from './xattr.js';
import {
  decodeInodeXattrs,
  decodeXattrBlock,
  encodeInodeXattrs,
  encodeXattrBlock,
  fitsXattrBlock,
  fullXattrName,
  inodeXattrCapacity,
  splitXattrName,
  XATTR_INDEX_POSIX_ACL_ACCESS,
  XATTR_INDEX_POSIX_ACL_DEFAULT,
  xattrEntrySize,
  xattrValueSize,
} from './xattr.js';

/** i_links_count ceiling (EXT4_LINK_MAX, what the kernel's ext3 driver enforces). */
export const EXT3_LINK_MAX = 65000;
/** At most this long between a change and its commit. */
export const COMMIT_INTERVAL_MS = 5000;

export interface Ext3Options {
  writable: boolean;
  /** Clock for timestamps (tests pin it). */
  now?: () => Time;
  /** Journal blocks replayed in memory for a read-only image that needs recovery. */
  replayed?: Map<number, Buffer>;
  /** Longest delay between a change and its commit (default COMMIT_INTERVAL_MS). */
  commitIntervalMs?: number;
}

/** Directory indexes kept in memory at once (each is dropped and rebuilt at will). */
const DIR_INDEX_CACHE = 4096;
/** Pending new-block data written early beyond this many bytes. */
const MAX_PENDING_DATA = 16 * 1024 * 1024;
/** Bytes per allocation that pending data blocks are carved from. */
const PENDING_SLAB = 256 * 1024;
/** Inode-table blocks read at once on a miss. */
const INODE_READAHEAD = 32;
/** Decoded inodes kept in memory (their blocks remain cached separately). */
const INODE_CACHE = 65536;

function defaultNow(): Time {
  const ms = Date.now();
  return { sec: Math.floor(ms / 1000), nsec: (ms % 1000) * 1_000_000 };
}

function isDirMode(mode: number): boolean {
  return (mode & S_IFMT) === S_IFDIR;
}

export class Ext3Fs implements WritableFs {
  readonly name: string;
  readonly rootId: InodeId = EXT2_ROOT_INO;
  readonly writable: boolean;
  readonly sb: Superblock;
  readonly blockSize: number;
  readonly inodeSize: number;
  private readonly store: ByteStore;
  private readonly cache: BlockCache;
  private readonly groups: GroupDesc[] = [];
  private readonly descSize: number;
  private readonly alloc: Allocator;
  private readonly io: BlockMapIO;
  private readonly now: () => Time;
  private readonly commitIntervalMs: number;
  private journal: Journal | null = null;
  /** Decoded inodes; a changed one is written back into its block when it leaves. */
  // maxSize with unit sizes, not `max`: lru-cache preallocates `max`-sized
  // arrays, which cost ~11 ms on every open.
  private readonly inodes = new LRUCache<number, Inode>({
    maxSize: INODE_CACHE,
    sizeCalculation: () => 1,
    dispose: (inode, ino) => this.writeBackInode(ino, inode),
  });
  /** Inodes changed since the last commit and not yet encoded into their blocks. */
  private readonly dirtyInodes = new Map<number, Inode>();
  private readonly dirs = new LRUCache<number, DirIndex>({ max: DIR_INDEX_CACHE });
  private readonly dirLoads = new Map<number, Promise<DirIndex>>();
  /**
   * Data of blocks allocated in the running transaction, not yet on disk.
   * Ordered mode: flushData() writes them (coalesced, in block order) before
   * the commit that makes their block pointers durable; a block freed first
   * is simply dropped, never written.
   */
  private readonly pendingData = new Map<number, Buffer>();
  private pendingBytes = 0;
  private readonly openCount = new Map<number, number>();
  /** The orphan list, head first (mirrors s_last_orphan -> i_dtime chain). */
  private orphans: number[] = [];
  /** Metadata blocks freed in the running transaction (revoke records). */
  private readonly revoked = new Set<number>();
  private queue: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly sectorsPerBlock: number;
  private readonly maxFileBlocks: number;
  private readonly inodeTableBlocks: number;
  /** Counters for tests and benchmarks. */
  readonly stats = { htreeLookups: 0, htreeFallbacks: 0, dirLoads: 0, commits: 0 };

  /** Use openExt3() (index.ts): it replays the journal and validates first. */
  constructor(store: ByteStore, sb: Superblock, options: Ext3Options) {
    this.store = store;
    this.name = store.name;
    this.sb = sb;
    this.writable = options.writable;
    this.blockSize = sbBlockSize(sb);
    this.inodeSize = sbInodeSize(sb);
    this.descSize = sbDescSize(sb);
    this.sectorsPerBlock = this.blockSize / 512;
    this.inodeTableBlocks = Math.ceil((sb.s_inodes_per_group * this.inodeSize) / this.blockSize);
    this.now = options.now ?? defaultNow;
    this.commitIntervalMs = Math.max(1, Math.min(options.commitIntervalMs ?? COMMIT_INTERVAL_MS, COMMIT_INTERVAL_MS));
    this.cache = new BlockCache(store, this.blockSize, options.replayed);
    const per = this.blockSize / 4;
    // i_blocks counts 512-byte sectors in 32 bits (without huge_file): that caps files too.
    this.maxFileBlocks = Math.min(maxLogicalBlocks(per), Math.floor(0xffffffff / this.sectorsPerBlock) - 3 * per);
    this.alloc = new Allocator({
      sb,
      groups: this.groups,
      readMeta: (b) => this.cache.read(b),
      writeMeta: (b) => this.cache.write(b),
      groupChanged: (g) => this.groupChanged(g),
    });
    this.io = {
      blockSize: this.blockSize,
      firstDataBlock: sb.s_first_data_block,
      blocksCount: sb.s_blocks_count,
      readMeta: (b) => this.cache.read(b),
      writeMeta: (b) => this.cache.write(b),
      newMeta: (b) => this.cache.fresh(b),
      allocBlock: (goal) => this.alloc.allocBlock(goal),
      freeBlock: async (b, wasMeta) => {
        await this.alloc.freeBlock(b);
        this.cache.forget(b);
        if (this.pendingData.delete(b)) this.pendingBytes -= this.blockSize;
        if (wasMeta) this.revoked.add(b);
      },
    };
  }

  // ---------------------------------------------------------------- setup

  /** Reads the group descriptors; for writing, opens the journal and processes orphans. */
  async load(): Promise<void> {
    const sb = this.sb;
    const n = groupCount(sb);
    const gdtStart = sb.s_first_data_block + 1;
    const gdtBlocks = gdtBlockCount(sb, this.descSize);
    const itBlocks = Math.ceil((sb.s_inodes_per_group * this.inodeSize) / this.blockSize);
    for (let g = 0; g < n; g++) {
      const byte = g * this.descSize;
      const blk = gdtStart + Math.floor(byte / this.blockSize);
      if (blk >= gdtStart + gdtBlocks) throw new CorruptError('group descriptor table overflows');
      const buf = await this.cache.read(blk);
      const gd = decodeGroupDesc(buf, byte % this.blockSize, this.descSize);
      validateGroupDesc(sb, g, gd, itBlocks);
      this.groups.push(gd);
    }
    // The kernel keeps the superblock's free counts only approximately (it sums the group
    // descriptors at mount, as statfs shows); a crash can leave them stale. Use the sums.
    let freeBlocks = 0;
    let freeInodes = 0;
    for (const gd of this.groups) {
      freeBlocks += gd.bg_free_blocks_count;
      freeInodes += gd.bg_free_inodes_count;
    }
    if (freeBlocks > sb.s_blocks_count || freeInodes > sb.s_inodes_count) {
      throw new CorruptError('group descriptors count more free blocks or inodes than exist');
    }
    sb.s_free_blocks_count = freeBlocks;
    sb.s_free_inodes_count = freeInodes;
    if (!this.writable) return;
    if (hasCompat(sb, COMPAT.has_journal) && sb.s_journal_inum !== 0) {
      this.journal = await Journal.open(await openJournalFile(this.store, sb));
    }
    await this.processOrphans();
    // Mark the filesystem in use, as a kernel mount does.
    if (this.journal) sb.s_feature_incompat |= INCOMPAT.needs_recovery;
    else sb.s_state &= ~EXT2_VALID_FS;
    sb.s_mnt_count = (sb.s_mnt_count + 1) & 0xffff;
    sb.s_mtime = this.now().sec;
    await this.commit();
  }

  /**
   * Group descriptor `g` changed. Its GDT block joins the transaction now
   * (that may need a read); the descriptor itself is encoded into it once, at
   * commit (encodeDirtyGroups), however many allocations change it before.
   */
  private groupChanged(g: number): Promise<void> | undefined {
    this.dirtyGroups.add(g);
    const blk = this.gdtBlockOf(g);
    if (this.cache.dirty.has(blk)) return undefined;
    return this.cache.write(blk).then(() => undefined);
  }

  private gdtBlockOf(g: number): number {
    return this.sb.s_first_data_block + 1 + Math.floor((g * this.descSize) / this.blockSize);
  }

  /** Encodes the changed group descriptors into their (dirty) GDT blocks; before each commit. */
  private encodeDirtyGroups(): void {
    for (const g of this.dirtyGroups) {
      const buf = this.cache.dirty.get(this.gdtBlockOf(g));
      if (!buf) throw new CorruptError(`group ${g} changed but its descriptor block left the transaction`);
      encodeGroupDesc(this.groups[g]!, buf, (g * this.descSize) % this.blockSize);
    }
    this.dirtyGroups.clear();
  }

  private readonly dirtyGroups = new Set<number>();

  // ---------------------------------------------------------------- queue, commits

  private run<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.writable) return Promise.reject(withErrno('EROFS'));
    if (this.closed) return Promise.reject(withErrno('EIO', `${this.name} is closed`));
    const result = this.queue.then(async () => {
      try {
        return await fn();
      } finally {
        await this.afterMutation();
      }
    });
    this.queue = result.catch(() => undefined);
    return result;
  }

  private async afterMutation(): Promise<void> {
    if (this.cache.dirty.size === 0) return;
    if (this.cache.dirty.size >= this.commitThreshold()) {
      await this.commit();
      return;
    }
    if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = null;
        if (this.closed) return;
        this.queue = this.queue.then(() => this.commit()).catch(() => undefined);
      }, this.commitIntervalMs);
      this.timer.unref();
    }
  }

  /** Dirty blocks at which a transaction is committed early (half the journal's capacity). */
  private commitThreshold(): number {
    if (this.threshold === 0) {
      this.threshold = this.journal ? Math.max(16, Math.floor(this.journal.maxTransactionBlocks / 2)) : 4096;
    }
    return this.threshold;
  }

  private threshold = 0;

  /** Commits the running transaction (callers hold the queue). */
  private async commit(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    await this.flushData();
    for (const [ino, inode] of [...this.dirtyInodes]) this.writeBackInode(ino, inode);
    this.encodeDirtyGroups();
    const sbBlock = Math.floor(SUPERBLOCK_OFFSET / this.blockSize);
    const sbOff = SUPERBLOCK_OFFSET % this.blockSize;
    if (this.cache.dirty.size === 0 && this.revoked.size === 0) {
      // Nothing but maybe the superblock itself (flags at open/close, the orphan head).
      const current = await this.cache.read(sbBlock);
      if (encodeSuperblock(this.sb).equals(current.subarray(sbOff, sbOff + SUPERBLOCK_SIZE))) {
        await this.store.sync();
        return;
      }
    }
    this.sb.s_wtime = this.now().sec;
    const sbBuf = await this.cache.write(sbBlock);
    this.sb.raw = encodeSuperblock(this.sb);
    this.sb.raw.copy(sbBuf, sbOff);
    this.stats.commits++;
    const blocks = new Map(this.cache.dirty);
    const revoked = new Set([...this.revoked].filter((b) => !blocks.has(b)));
    if (this.journal && this.journal.logBlocksFor(blocks.size, revoked.size) <= this.journal.logLength) {
      await this.journal.commit(blocks, revoked);
    } else {
      // No journal (ext2), or a transaction larger than the whole log (operations commit
      // early and free big files in steps, so only a pathologically small journal gets
      // here): write the blocks home in place, then sync. Not atomic against a crash.
      if (this.journal) {
        // Empty the log first, so no older logged copy can be replayed over these blocks.
        const file = this.journal.file;
        await this.journal.close();
        this.journal = await Journal.open(file);
      }
      const sorted = [...blocks.keys()].sort((a, b) => a - b);
      for (const b of sorted) await this.store.write(b * this.blockSize, blocks.get(b)!);
      await this.store.sync();
    }
    // Only now are they clean: a failed commit leaves them dirty for the next attempt.
    this.cache.markClean(blocks);
    this.revoked.clear();
    this.alloc.freedThisTx.clear();
  }

  /**
   * Makes sure `blocks` blocks and `inodes` inodes can be allocated, first
   * committing when blocks freed in this transaction are what is missing.
   * Operations call it before changing anything, so ENOSPC leaves no trace.
   */
  private async reserve(blocks: number, inodes = 0): Promise<void> {
    if (inodes > this.sb.s_free_inodes_count) throw withErrno('ENOSPC', 'no free inodes');
    if (blocks <= this.alloc.availableBlocks()) return;
    if (blocks <= this.sb.s_free_blocks_count && this.alloc.freedThisTx.size > 0) await this.commit();
    if (blocks > this.alloc.availableBlocks()) throw withErrno('ENOSPC');
  }

  // ---------------------------------------------------------------- inodes

  private checkIno(ino: number): void {
    if (!Number.isSafeInteger(ino) || ino < 1 || ino > this.sb.s_inodes_count) {
      throw new CorruptError(`inode number ${ino} outside 1..${this.sb.s_inodes_count}`);
    }
  }

  private inodeLocation(ino: number): { block: number; off: number } {
    const g = Math.floor((ino - 1) / this.sb.s_inodes_per_group);
    const idx = (ino - 1) % this.sb.s_inodes_per_group;
    const byte = idx * this.inodeSize;
    return { block: this.groups[g]!.bg_inode_table + Math.floor(byte / this.blockSize), off: byte % this.blockSize };
  }

  private async iget(ino: number): Promise<Inode> {
    // LRU order: an inode in use by the running operation is never the one evicted,
    // so one operation never ends up with two copies of the same inode.
    const hit = this.inodes.get(ino);
    if (hit) return hit;
    this.checkIno(ino);
    const { block, off } = this.inodeLocation(ino);
    await this.prefetchInodes(ino, block);
    const buf = await this.cache.read(block);
    const again = this.inodes.get(ino);
    if (again) return again;
    const inode = decodeInode(buf.subarray(off, off + this.inodeSize), this.inodeSize);
    this.inodes.set(ino, inode);
    return inode;
  }

  private async prefetchInodes(ino: number, block: number): Promise<void> {
    if (this.cache.has(block)) return;
    const g = Math.floor((ino - 1) / this.sb.s_inodes_per_group);
    const tableEnd = this.groups[g]!.bg_inode_table + this.inodeTableBlocks;
    await this.cache.prefetch(block, Math.min(INODE_READAHEAD, tableEnd - block));
  }

  /** Writes the inode into its (dirty) inode-table block. */
  private async iput(ino: number, inode: Inode): Promise<void> {
    const { block } = this.inodeLocation(ino);
    // The table block joins the transaction now; the inode is encoded into it once, at
    // commit (or when the inode cache lets it go), however often it changes before.
    if (!this.cache.dirty.has(block)) {
      await this.prefetchInodes(ino, block);
      await this.cache.write(block);
    }
    if (inode.raw.length !== this.inodeSize) inode.raw = encodeInode(inode, this.inodeSize);
    if (this.inodes.peek(ino) !== inode) this.inodes.set(ino, inode);
    this.dirtyInodes.set(ino, inode);
  }

  /** Encodes a changed inode into its table block (dirty since its iput). */
  private writeBackInode(ino: number, inode: Inode): void {
    if (this.dirtyInodes.get(ino) !== inode) return;
    this.dirtyInodes.delete(ino);
    const { block, off } = this.inodeLocation(ino);
    const buf = this.cache.dirty.get(block);
    if (!buf) throw new CorruptError(`inode ${ino} changed but its table block left the transaction`);
    encodeInodeInto(inode, inode.raw).copy(buf, off);
  }


  /** The id as a user passed it: an in-use inode, else ENOENT. */
  private async live(id: InodeId): Promise<Inode> {
    if (!Number.isSafeInteger(id) || id < 1 || id > this.sb.s_inodes_count) throw withErrno('ENOENT', `inode ${id}`);
    const inode = await this.iget(id);
    if (inode.i_mode === 0 || (inode.i_links_count === 0 && !this.openCount.has(id))) {
      throw withErrno('ENOENT', `inode ${id}`);
    }
    return inode;
  }

  private addBlocks(inode: Inode, n: number): void {
    inode.i_blocks = Math.max(0, inode.i_blocks + n * this.sectorsPerBlock);
  }

  private usesExtents(inode: Inode): boolean {
    if (inode.i_flags & EXT4_INLINE_DATA_FL) {
      throw new UnsupportedError('inline_data inodes are not supported', this.name);
    }
    return (inode.i_flags & EXT4_EXTENTS_FL) !== 0;
  }

  private async mapOne(inode: Inode, lbn: number): Promise<number> {
    if (this.usesExtents(inode)) return (await mapExtents(this.io, inode, lbn, 1))[0]!;
    return mapBlock(this.io, inode, lbn);
  }

  private async mapMany(inode: Inode, lbn: number, count: number): Promise<number[]> {
    if (this.usesExtents(inode)) return mapExtents(this.io, inode, lbn, count);
    return mapRange(this.io, inode, lbn, count);
  }

  /** A file past 2 GiB needs the large_file feature (the kernel sets it the same way). */
  private noteSize(size: number): void {
    if (size > 0x7fffffff && !hasRoCompat(this.sb, RO_COMPAT.large_file)) this.sb.s_feature_ro_compat |= RO_COMPAT.large_file;
  }

  private stamp(inode: Inode, which: { a?: boolean; m?: boolean; c?: boolean }, t: Time = this.now()): void {
    if (which.a) inode.i_atime = t;
    if (which.m) inode.i_mtime = t;
    if (which.c) inode.i_ctime = t;
  }

  // ---------------------------------------------------------------- directories

  /**
   * The directory's in-memory index, loaded once. Concurrent callers (a
   * reader beside the writer) share one load, so no stale copy can replace
   * an index a mutation has already updated.
   */
  private dirIndex(ino: number, inode: Inode): Promise<DirIndex> {
    const hit = this.dirs.get(ino);
    if (hit) return Promise.resolve(hit);
    if (!isDirMode(inode.i_mode)) return Promise.reject(withErrno('ENOTDIR'));
    const pending = this.dirLoads.get(ino);
    if (pending) return pending;
    const p = this.loadDirIndex(ino, inode).finally(() => this.dirLoads.delete(ino));
    this.dirLoads.set(ino, p);
    return p;
  }

  private async loadDirIndex(ino: number, inode: Inode): Promise<DirIndex> {
    const nblocks = Math.ceil(inode.i_size / this.blockSize);
    if (nblocks > this.sb.s_blocks_count) {
      throw new CorruptError(`directory inode ${ino} claims ${inode.i_size} bytes, more than the filesystem`);
    }
    this.stats.dirLoads++;
    const idx = new DirIndex(ino);
    const pblocks = await this.mapMany(inode, 0, nblocks);
    for (let l = 0; l < nblocks; l++) {
      const pbn = pblocks[l]!;
      idx.pblocks.push(pbn);
      if (pbn === 0) {
        idx.free.set(l, 0);
        continue;
      }
      const recs = decodeDirBlock(await this.cache.read(pbn));
      for (const d of recs) {
        if (d.inode === 0) continue;
        if (l === 0 && d.offset <= 12 && (d.name.equals(DOT) || d.name.equals(DOTDOT))) continue;
        this.checkIno(d.inode);
        idx.entries.set(nameKey(d.name), { ino: d.inode, ft: d.file_type, lblk: l, off: d.offset });
      }
      idx.free.set(l, blockFreeSpace(recs));
    }
    this.dirs.set(ino, idx);
    return idx;
  }

  /** Blocks an insert of a `nameLen` name into the directory would allocate. */
  private async insertCost(dir: number, inode: Inode, nameLen: number): Promise<number> {
    const idx = await this.dirIndex(dir, inode);
    if (idx.free.findFirst(direntSize(nameLen)) >= 0) return 0;
    if (this.usesExtents(inode)) throw withErrno('EROFS');
    return 1 + (await indirectBlocksNeeded(this.io, inode, idx.pblocks.length));
  }

  /** Clears the htree flag before the first change: the blocks stay valid as a linear directory. */
  private async unindex(dir: number, inode: Inode): Promise<void> {
    if (inode.i_flags & EXT2_INDEX_FL) {
      inode.i_flags &= ~EXT2_INDEX_FL;
      await this.iput(dir, inode);
    }
  }

  private async insertEntry(dir: number, inode: Inode, name: Buffer, ino: number, ft: number): Promise<void> {
    const idx = await this.dirIndex(dir, inode);
    await this.unindex(dir, inode);
    const need = direntSize(name.length);
    let l = idx.free.findFirst(need);
    if (l < 0) {
      l = idx.pblocks.length;
      const goal = l > 0 ? idx.pblocks[l - 1]! + 1 : this.alloc.goalForInode(dir);
      const pbn = await this.alloc.allocBlock(goal);
      const buf = this.cache.fresh(pbn);
      emptyDirBlock(this.blockSize).copy(buf);
      const ind = await setBlock(this.io, inode, l, pbn);
      this.addBlocks(inode, 1 + ind);
      inode.i_size += this.blockSize;
      idx.pblocks.push(pbn);
      idx.free.set(l, this.blockSize);
    }
    const pbn = idx.pblocks[l]!;
    const buf = await this.cache.write(pbn);
    const ftStored = hasIncompat(this.sb, INCOMPAT.filetype) ? ft : 0;
    const slot = findInsertSlot(buf, need);
    if (!slot) throw new CorruptError(`directory ${dir} block ${l} has less room than its index says`);
    let placed = slot.off;
    const recLen = recLenAt(buf, slot.off);
    if (slot.split) {
      const used = direntSize(buf[slot.off + 6]!);
      setRecLen(buf, slot.off, used);
      placed = slot.off + used;
      encodeDirent(buf, placed, { inode: ino, rec_len: recLen - used, file_type: ftStored, name });
    } else {
      encodeDirent(buf, placed, { inode: ino, rec_len: recLen, file_type: ftStored, name });
    }
    idx.free.set(l, scanFreeSpace(buf));
    idx.entries.set(nameKey(name), { ino, ft: ftStored, lblk: l, off: placed });
  }

  private async removeEntry(dir: number, inode: Inode, name: Buffer): Promise<DirSlot> {
    const idx = await this.dirIndex(dir, inode);
    const key = nameKey(name);
    const slot = idx.entries.get(key);
    if (!slot) throw withErrno('ENOENT');
    await this.unindex(dir, inode);
    const buf = await this.cache.write(idx.pblocks[slot.lblk]!);
    let prev: number | null = null;
    let off = 0;
    while (off < slot.off) {
      const len = recLenAt(buf, off);
      if (len < 8) throw new CorruptError(`directory ${dir}: bad rec_len at ${off}`);
      prev = off;
      off += len;
    }
    if (off !== slot.off) throw new CorruptError(`directory ${dir}: entry not where its index says`);
    const me = decodeDirent(buf, off);
    if (prev === null) {
      buf.writeUInt32LE(0, off);
    } else {
      setRecLen(buf, prev, recLenAt(buf, prev) + me.rec_len);
    }
    idx.entries.delete(key);
    idx.free.set(slot.lblk, scanFreeSpace(buf));
    return slot;
  }

  /** Points an existing entry at another inode (rename over a target). */
  private async retargetEntry(dir: number, inode: Inode, name: Buffer, ino: number, ft: number): Promise<void> {
    const idx = await this.dirIndex(dir, inode);
    const slot = idx.entries.get(nameKey(name));
    if (!slot) throw withErrno('ENOENT');
    await this.unindex(dir, inode);
    const buf = await this.cache.write(idx.pblocks[slot.lblk]!);
    const ftStored = hasIncompat(this.sb, INCOMPAT.filetype) ? ft : 0;
    buf.writeUInt32LE(ino, slot.off);
    buf.writeUInt8(ftStored, slot.off + 7);
    slot.ino = ino;
    slot.ft = ftStored;
  }

  /** Rewrites a directory's ".." (second record of its first block). */
  private async setDotDot(dir: number, inode: Inode, parent: number): Promise<void> {
    if (this.usesExtents(inode)) throw withErrno('EROFS');
    const pbn = await mapBlock(this.io, inode, 0);
    if (pbn === 0) throw new CorruptError(`directory ${dir} has no first block`);
    const buf = await this.cache.write(pbn);
    const dot = decodeDirent(buf, 0);
    const dd = decodeDirent(buf, dot.rec_len);
    if (!dd.name.equals(DOTDOT)) throw new CorruptError(`directory ${dir} has no ".." entry`);
    buf.writeUInt32LE(parent, dd.offset);
  }

  private async parentOf(dir: number, inode: Inode): Promise<number> {
    const pbn = await this.mapOne(inode, 0);
    if (pbn === 0) throw new CorruptError(`directory ${dir} has no first block`);
    const buf = await this.cache.read(pbn);
    const dot = decodeDirent(buf, 0);
    const dd = decodeDirent(buf, dot.rec_len);
    if (!dd.name.equals(DOTDOT)) throw new CorruptError(`directory ${dir} has no ".." entry`);
    this.checkIno(dd.inode);
    return dd.inode;
  }

  private checkName(name: Buffer): void {
    if (name.length === 0) throw withErrno('ENOENT', 'empty name');
    if (name.length > EXT2_NAME_LEN) throw withErrno('ENAMETOOLONG');
    let bad = name.equals(DOT) || name.equals(DOTDOT);
    for (let i = 0; i < name.length && !bad; i++) bad = name[i] === 0x2f || name[i] === 0;
    if (bad) throw withErrno('EINVAL', `bad name ${JSON.stringify(name.toString('latin1'))}`);
  }

  private fileTypeOfInode(inode: Inode): FileType {
    const t = fileTypeOf(inode.i_mode);
    if (!t) throw new CorruptError(`inode has invalid mode 0${inode.i_mode.toString(8)}`);
    return t;
  }

  private async linkDir(dirIno: number, dirInode: Inode, delta: number): Promise<void> {
    let n = dirInode.i_links_count;
    if (delta > 0) {
      if (n >= EXT3_LINK_MAX || n === 1) n = hasRoCompat(this.sb, RO_COMPAT.dir_nlink) ? 1 : n + delta;
      else n += delta;
    } else if (n > 1 && n <= EXT3_LINK_MAX) {
      n = Math.max(2, n + delta);
    }
    dirInode.i_links_count = n;
    await this.iput(dirIno, dirInode);
  }

  private canAddSubdir(dirInode: Inode): boolean {
    return hasRoCompat(this.sb, RO_COMPAT.dir_nlink) || dirInode.i_links_count < EXT3_LINK_MAX;
  }

  // ---------------------------------------------------------------- freeing

  /** Frees an inode's blocks, xattr block and the inode itself. */
  private async destroy(ino: number, inode: Inode): Promise<void> {
    const dir = isDirMode(inode.i_mode);
    const type = inode.i_mode & S_IFMT;
    const hasBlocks = type === S_IFREG || dir || (type === S_IFLNK && !isFastSymlink(inode, this.blockSize));
    if (hasBlocks && !this.usesExtents(inode)) {
      await this.freeFrom(ino, inode, 0, dir || type === S_IFLNK);
    }
    if (inode.i_file_acl !== 0) await this.dropXattrBlock(inode);
    inode.i_block = new Array<number>(EXT2_N_BLOCKS).fill(0);
    inode.i_blocks = 0;
    inode.i_size = 0;
    inode.i_links_count = 0;
    inode.i_dtime = this.now().sec;
    await this.iput(ino, inode);
    await this.alloc.freeInode(ino, dir);
    this.dirs.delete(ino);
    this.inodes.delete(ino);
  }

  /**
   * Frees the blocks from logical block `keep` on (`oldEnd`: where they end,
   * default i_size). A large range is freed in steps with a commit whenever
   * the transaction grows near the journal's capacity, the inode parked on
   * the orphan list with its final i_size meanwhile (as the kernel does), so
   * a crash between steps is finished at the next open.
   */
  private async freeFrom(ino: number, inode: Inode, keep: number, leavesAreMeta: boolean, oldEnd?: number): Promise<void> {
    const step = (this.blockSize / 4) * 16;
    let cur = Math.max(keep, oldEnd ?? Math.ceil(inode.i_size / this.blockSize));
    const big = this.journal !== null && cur - keep > step;
    const listed = this.orphans.includes(ino);
    if (big && !listed) await this.orphanAdd(ino, inode);
    for (;;) {
      const next = Math.max(keep, cur - step);
      const freed = await truncateBlocks(this.io, inode, next, leavesAreMeta);
      this.addBlocks(inode, -freed);
      await this.iput(ino, inode);
      if (next === keep) break;
      cur = next;
      if (this.cache.dirty.size + this.revoked.size >= this.commitThreshold()) await this.commit();
    }
    if (big && !listed) {
      await this.orphanRemove(ino);
      await this.iput(ino, inode);
    }
  }

  private async orphanAdd(ino: number, inode: Inode): Promise<void> {
    inode.i_dtime = this.sb.s_last_orphan;
    this.sb.s_last_orphan = ino;
    this.orphans.unshift(ino);
    await this.iput(ino, inode);
  }

  private async orphanRemove(ino: number): Promise<void> {
    const i = this.orphans.indexOf(ino);
    if (i < 0) return;
    const next = this.orphans[i + 1] ?? 0;
    if (i === 0) {
      this.sb.s_last_orphan = next;
    } else {
      const prevIno = this.orphans[i - 1]!;
      const prev = await this.iget(prevIno);
      prev.i_dtime = next;
      await this.iput(prevIno, prev);
    }
    this.orphans.splice(i, 1);
    const me = await this.iget(ino);
    me.i_dtime = 0;
  }

  /**
   * The orphan list left by a crash (or a kernel mount): inodes unlinked
   * while open are freed, inodes truncated mid-way are cut to i_size.
   */
  private async processOrphans(): Promise<void> {
    let ino = this.sb.s_last_orphan;
    const seen = new Set<number>();
    while (ino !== 0) {
      this.checkIno(ino);
      if (seen.has(ino)) throw new CorruptError(`orphan list loops at inode ${ino}`);
      seen.add(ino);
      const inode = await this.iget(ino);
      const next = inode.i_dtime;
      if (inode.i_links_count === 0) {
        await this.destroy(ino, inode);
      } else {
        if ((inode.i_mode & S_IFMT) === S_IFREG && !this.usesExtents(inode)) {
          const freed = await truncateBlocks(this.io, inode, Math.ceil(inode.i_size / this.blockSize));
          this.addBlocks(inode, -freed);
        }
        inode.i_dtime = 0;
        await this.iput(ino, inode);
      }
      ino = next;
    }
    this.sb.s_last_orphan = 0;
  }

  /** Drops one link; frees the inode (or parks it on the orphan list while open). */
  private async dropLink(ino: number, inode: Inode): Promise<void> {
    if (inode.i_links_count > 0) inode.i_links_count--;
    this.stamp(inode, { c: true });
    if (inode.i_links_count > 0) {
      await this.iput(ino, inode);
      return;
    }
    if (this.openCount.has(ino)) await this.orphanAdd(ino, inode);
    else await this.destroy(ino, inode);
  }

  // ---------------------------------------------------------------- xattrs

  private async xattrBlockEntries(inode: Inode): Promise<{ refcount: number; entries: XattrEntry[] }> {
    if (inode.i_file_acl === 0) return { refcount: 0, entries: [] };
    const b = inode.i_file_acl;
    if (b < this.sb.s_first_data_block || b >= this.sb.s_blocks_count) {
      throw new CorruptError(`xattr block ${b} outside the filesystem`);
    }
    return decodeXattrBlock(await this.cache.read(b));
  }

  private async allXattrs(inode: Inode): Promise<{ inInode: XattrEntry[]; inBlock: XattrEntry[] }> {
    const inInode = decodeInodeXattrs(inode.raw, inode.i_extra_isize);
    const inBlock = (await this.xattrBlockEntries(inode)).entries;
    return { inInode, inBlock };
  }

  /** Releases this inode's reference to its xattr block. */
  private async dropXattrBlock(inode: Inode): Promise<void> {
    const b = inode.i_file_acl;
    const { refcount } = await this.xattrBlockEntries(inode);
    if (refcount <= 1) {
      await this.io.freeBlock(b, true);
    } else {
      const buf = await this.cache.write(b);
      buf.writeUInt32LE(refcount - 1, 4);
    }
    inode.i_file_acl = 0;
    this.addBlocks(inode, -1);
  }

  /**
   * Stores `list` for the inode: as many as fit in the inode body (those
   * already there first), the rest in an xattr block, copied on write when
   * shared. ENOSPC when they cannot fit.
   */
  private async storeXattrs(ino: number, inode: Inode, list: XattrEntry[], wasInInode: Set<XattrEntry>): Promise<void> {
    const cap = inodeXattrCapacity(this.inodeSize, inode.i_extra_isize);
    const inInode: XattrEntry[] = [];
    const inBlock: XattrEntry[] = [];
    let used = 0;
    const ordered = [...list.filter((e) => wasInInode.has(e)), ...list.filter((e) => !wasInInode.has(e))];
    for (const e of ordered) {
      const sz = xattrEntrySize(e.name.length) + xattrValueSize(e.value.length);
      if (used + sz <= cap) {
        inInode.push(e);
        used += sz;
      } else {
        inBlock.push(e);
      }
    }
    if (inBlock.length > 0 && !fitsXattrBlock(this.blockSize, inBlock)) throw withErrno('ENOSPC', 'xattrs do not fit');
    const old = inode.i_file_acl;
    const oldRef = old ? (await this.xattrBlockEntries(inode)).refcount : 0;
    if (inBlock.length > 0 && (old === 0 || oldRef > 1)) await this.reserve(1);
    if (!encodeInodeXattrs(inode.raw, inode.i_extra_isize, inInode)) throw withErrno('ENOSPC', 'xattrs do not fit');
    if (inBlock.length === 0) {
      if (old !== 0) await this.dropXattrBlock(inode);
    } else {
      const img = encodeXattrBlock(this.blockSize, 1, inBlock)!;
      if (old !== 0 && oldRef <= 1) {
        img.copy(await this.cache.write(old));
      } else {
        if (old !== 0) await this.dropXattrBlock(inode);
        const nb = await this.alloc.allocBlock(this.alloc.goalForInode(ino));
        img.copy(this.cache.fresh(nb));
        inode.i_file_acl = nb;
        this.addBlocks(inode, 1);
      }
    }
    await this.iput(ino, inode);
  }

  // ---------------------------------------------------------------- ReadableFs

  async getattr(id: InodeId): Promise<Stat> {
    const inode = await this.live(id);
    const type = inode.i_mode & S_IFMT;
    let rdev = 0;
    if (type === 0o020000 || type === 0o060000) {
      const d = decodeDevice(inode.i_block);
      rdev = makedev(d.major, d.minor);
    }
    return {
      ino: id,
      mode: inode.i_mode,
      nlink: inode.i_links_count,
      uid: inode.i_uid,
      gid: inode.i_gid,
      size: inode.i_size,
      blocks: inode.i_blocks,
      atime: inode.i_atime.sec,
      atimeNsec: inode.i_atime.nsec,
      mtime: inode.i_mtime.sec,
      mtimeNsec: inode.i_mtime.nsec,
      ctime: inode.i_ctime.sec,
      ctimeNsec: inode.i_ctime.nsec,
      rdev,
      generation: inode.i_generation,
    };
  }

  async lookup(dir: InodeId, name: Buffer): Promise<InodeId | null> {
    const inode = await this.live(dir);
    if (!isDirMode(inode.i_mode)) throw withErrno('ENOTDIR');
    if (name.length > EXT2_NAME_LEN) throw withErrno('ENAMETOOLONG');
    if (!this.dirs.has(dir) && inode.i_flags & EXT2_INDEX_FL && inode.i_size > this.blockSize) {
      const found = await this.htreeLookup(dir, inode, name);
      if (found !== undefined) {
        this.stats.htreeLookups++;
        return found;
      }
      this.stats.htreeFallbacks++;
    }
    const idx = await this.dirIndex(dir, inode);
    return idx.entries.get(nameKey(name))?.ino ?? null;
  }

  /**
   * Lookup through an htree index without loading the whole directory:
   * the inode number, null (not there), or undefined when the index cannot
   * answer (damaged, unknown hash, a collision chain crossing index nodes):
   * then the caller reads the directory linearly, which is always valid.
   */
  private async htreeLookup(dir: number, inode: Inode, name: Buffer): Promise<number | null | undefined> {
    try {
      const nblocks = Math.ceil(inode.i_size / this.blockSize);
      const blockOf = async (lb: number) => {
        if (lb >= nblocks) throw new CorruptError(`directory ${dir} index points past its end`);
        const pbn = await this.mapOne(inode, lb);
        if (pbn === 0) throw new CorruptError(`directory ${dir} index points to a hole`);
        return this.cache.read(pbn);
      };
      const root = decodeDxRoot(await blockOf(0));
      let version = root.hashVersion;
      if (version <= 2 && unsignedHash(this.sb)) version += 3;
      const hash = dirHash(version, name, this.sb.s_hash_seed);
      if (hash === null) return undefined;
      let entries = root.entries;
      let at = dxSearch(entries, hash);
      for (let level = 0; level < root.levels; level++) {
        entries = decodeDxNode(await blockOf(entries[at]!.block));
        at = dxSearch(entries, hash);
      }
      for (let hops = 0; hops < nblocks; hops++) {
        for (const d of decodeDirBlock(await blockOf(entries[at]!.block))) {
          if (d.inode !== 0 && d.name.equals(name)) {
            this.checkIno(d.inode);
            return d.inode;
          }
        }
        const next = entries[at + 1];
        if (!next) return root.levels > 0 ? undefined : null;
        if (!(next.hash & 1) || (next.hash & ~1) >>> 0 !== hash) return null;
        at++;
      }
      return undefined;
    } catch (err) {
      if (err instanceof CorruptError) return undefined;
      throw err;
    }
  }

  async readdir(dir: InodeId): Promise<DirEntry[]> {
    const inode = await this.live(dir);
    if (!isDirMode(inode.i_mode)) throw withErrno('ENOTDIR');
    const idx = await this.dirIndex(dir, inode);
    const out: DirEntry[] = [];
    const typed = hasIncompat(this.sb, INCOMPAT.filetype);
    for (let l = 0; l < idx.pblocks.length; l++) {
      const pbn = idx.pblocks[l]!;
      if (pbn === 0) continue;
      for (const d of decodeDirBlock(await this.cache.read(pbn))) {
        if (d.inode === 0) continue;
        if (l === 0 && d.offset <= 12 && (d.name.equals(DOT) || d.name.equals(DOTDOT))) continue;
        let type = typed ? ftToFileType(d.file_type) : null;
        if (!type) type = this.fileTypeOfInode(await this.iget(d.inode));
        out.push({ name: Buffer.from(d.name), id: d.inode, type });
      }
    }
    return out;
  }

  async read(id: InodeId, position: number, length: number): Promise<Buffer> {
    const inode = await this.live(id);
    const type = inode.i_mode & S_IFMT;
    if (type === S_IFDIR) throw withErrno('EISDIR');
    if (type !== S_IFREG) throw withErrno('EINVAL', 'not a regular file');
    if (!Number.isSafeInteger(position) || position < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw withErrno('EINVAL');
    }
    const size = inode.i_size;
    if (position >= size || length === 0) return Buffer.alloc(0);
    const end = Math.min(size, position + length);
    const bs = this.blockSize;
    const first = Math.floor(position / bs);
    const last = Math.floor((end - 1) / bs);
    const map = await this.mapMany(inode, first, last - first + 1);
    if (map.length === 1 && map[0] !== 0 && !this.pendingData.has(map[0]!)) {
      // One block on disk (every small-file read): its bytes are the answer, no copy.
      return this.store.read(map[0]! * bs + (position - first * bs), end - position);
    }
    const out = Buffer.alloc(end - position);
    let i = 0;
    while (i < map.length) {
      const pbn = map[i]!;
      if (pbn === 0) {
        i++;
        continue;
      }
      const pending = this.pendingData.get(pbn);
      if (pending) {
        const bStart = (first + i) * bs;
        const from = Math.max(bStart, position);
        const to = Math.min(bStart + bs, end);
        pending.copy(out, from - position, from - bStart, to - bStart);
        i++;
        continue;
      }
      let j = i + 1;
      while (j < map.length && map[j] === pbn + (j - i) && !this.pendingData.has(map[j]!)) j++;
      const runStart = (first + i) * bs;
      const runEnd = (first + j) * bs;
      const from = Math.max(runStart, position);
      const to = Math.min(runEnd, end);
      const bytes = await this.store.read(pbn * bs + (from - runStart), to - from);
      bytes.copy(out, from - position);
      i = j;
    }
    return out;
  }

  async readlink(id: InodeId): Promise<Buffer> {
    const inode = await this.live(id);
    if ((inode.i_mode & S_IFMT) !== S_IFLNK) throw withErrno('EINVAL', 'not a symlink');
    if (isFastSymlink(inode, this.blockSize)) return Buffer.from(decodeFastSymlink(inode));
    if (inode.i_size >= this.blockSize) throw new CorruptError(`symlink ${id} size ${inode.i_size}`);
    const pbn = await this.mapOne(inode, 0);
    if (pbn === 0) throw new CorruptError(`symlink ${id} has no block`);
    return decodeSlowSymlink(inode, await this.cache.read(pbn));
  }

  async listxattr(id: InodeId): Promise<Buffer[]> {
    const inode = await this.live(id);
    const { inInode, inBlock } = await this.allXattrs(inode);
    const out: Buffer[] = [];
    for (const e of [...inInode, ...inBlock]) {
      const n = fullXattrName(e.index, e.name);
      if (n !== null) out.push(Buffer.from(n, 'latin1'));
    }
    return out;
  }

  async getxattr(id: InodeId, nameBytes: Buffer): Promise<Buffer | null> {
    const inode = await this.live(id);
    const key = splitXattrName(nameBytes.toString('latin1'));
    if (!key) return null;
    const { inInode, inBlock } = await this.allXattrs(inode);
    const e = [...inInode, ...inBlock].find((x) => x.index === key.index && x.name.equals(key.name));
    if (!e) return null;
    if (key.index === XATTR_INDEX_POSIX_ACL_ACCESS || key.index === XATTR_INDEX_POSIX_ACL_DEFAULT) {
      return aclDiskToXattr(e.value);
    }
    return Buffer.from(e.value);
  }

  /** Like the kernel's ext3/4 statfs (bsddf): metadata overhead left out of f_blocks. */
  async statfs(): Promise<StatFs> {
    const sb = this.sb;
    const bfree = sb.s_free_blocks_count;
    const bavail = Math.max(0, bfree - sb.s_r_blocks_count);
    return {
      bsize: this.blockSize,
      frsize: this.blockSize,
      blocks: sb.s_blocks_count - (await this.overhead()),
      bfree,
      bavail,
      files: sb.s_inodes_count,
      ffree: sb.s_free_inodes_count,
      namemax: EXT2_NAME_LEN,
    };
  }

  private overheadCache = -1;

  /** ext4_calculate_overhead: first data block, sb/GDT copies, bitmaps, inode tables, the journal. */
  private async overhead(): Promise<number> {
    if (this.overheadCache >= 0) return this.overheadCache;
    const sb = this.sb;
    const gdt = gdtBlockCount(sb, this.descSize);
    const itBlocks = Math.ceil((sb.s_inodes_per_group * this.inodeSize) / this.blockSize);
    let total = sb.s_first_data_block;
    for (let g = 0; g < this.groups.length; g++) {
      if (groupHasSuper(sb, g)) total += 1 + gdt + sb.s_reserved_gdt_blocks;
      total += 2 + itBlocks;
    }
    if (hasCompat(sb, COMPAT.has_journal) && sb.s_journal_inum !== 0) {
      const j = await this.iget(sb.s_journal_inum);
      total += Math.floor(j.i_size / this.blockSize);
    }
    this.overheadCache = total;
    return total;
  }

  // ---------------------------------------------------------------- WritableFs

  mknod(dir: InodeId, name: Buffer, node: NewNode): Promise<InodeId> {
    return this.run(async () => {
      const t = fileTypeOf(node.mode);
      if (t === null || t === 'd' || t === 'l') throw withErrno('EINVAL', 'mknod of a directory or symlink');
      return this.create(dir, name, node.mode, node.uid, node.gid, 0, async (_ino, inode) => {
        if (t === 'c' || t === 'b') inode.i_block = encodeDevice(devMajor(node.rdev ?? 0), devMinor(node.rdev ?? 0));
      });
    });
  }

  mkdir(dir: InodeId, name: Buffer, node: NewNode): Promise<InodeId> {
    return this.run(async () => {
      const parent = await this.live(dir);
      if (isDirMode(parent.i_mode) && !this.canAddSubdir(parent)) throw withErrno('EMLINK');
      const mode = S_IFDIR | (node.mode & 0o7777);
      const ino = await this.create(dir, name, mode, node.uid, node.gid, 1, async (newIno, inode) => {
        const pbn = await this.alloc.allocBlock(this.alloc.goalForInode(newIno));
        encodeDotBlock(this.blockSize, newIno, dir, hasIncompat(this.sb, INCOMPAT.filetype)).copy(this.cache.fresh(pbn));
        inode.i_block[0] = pbn;
        inode.i_size = this.blockSize;
        inode.i_links_count = 2;
        this.addBlocks(inode, 1);
      });
      const p = await this.iget(dir);
      await this.linkDir(dir, p, +1);
      return ino;
    });
  }

  symlink(dir: InodeId, name: Buffer, target: Buffer, owner: { uid: number; gid: number }): Promise<InodeId> {
    return this.run(async () => {
      if (target.length === 0) throw withErrno('ENOENT', 'empty symlink target');
      if (target.length >= this.blockSize) throw withErrno('ENAMETOOLONG');
      const slow = target.length > FAST_SYMLINK_MAX;
      return this.create(dir, name, S_IFLNK | 0o777, owner.uid, owner.gid, slow ? 1 : 0, async (newIno, inode) => {
        inode.i_size = target.length;
        if (!slow) {
          inode.i_block = encodeFastSymlink(target);
          return;
        }
        const pbn = await this.alloc.allocBlock(this.alloc.goalForInode(newIno));
        const buf = this.cache.fresh(pbn);
        target.copy(buf);
        inode.i_block[0] = pbn;
        this.addBlocks(inode, 1);
      });
    });
  }

  /**
   * The common part of every create: checks, reservation (so ENOSPC changes
   * nothing), the inode, `init` (which may allocate up to `extraBlocks`),
   * the directory entry and the parent's times.
   */
  private async create(
    dir: InodeId,
    name: Buffer,
    mode: number,
    uid: number,
    gid: number,
    extraBlocks: number,
    init: (ino: number, inode: Inode) => Promise<void>,
  ): Promise<InodeId> {
    const parent = await this.live(dir);
    if (!isDirMode(parent.i_mode)) throw withErrno('ENOTDIR');
    this.checkName(name);
    const idx = await this.dirIndex(dir, parent);
    if (idx.entries.has(nameKey(name))) throw withErrno('EEXIST');
    const type = fileTypeOf(mode);
    if (!type) throw withErrno('EINVAL', 'bad mode');
    await this.reserve((await this.insertCost(dir, parent, name.length)) + extraBlocks, 1);
    const ino = await this.alloc.allocInode(dir, type === 'd');
    const t = this.now();
    const inode = emptyInode(this.inodeSize, this.inodeSize > 128 ? Math.max(32, this.sb.s_want_extra_isize) : 0);
    inode.i_mode = mode;
    inode.i_uid = uid >>> 0;
    inode.i_gid = gid >>> 0;
    inode.i_links_count = 1;
    inode.i_atime = inode.i_mtime = inode.i_ctime = inode.i_crtime = t;
    inode.i_generation = (Math.random() * 0x100000000) >>> 0;
    // A reused inode number must not keep a stale cached index or decoded inode.
    this.dirs.delete(ino);
    await init(ino, inode);
    await this.iput(ino, inode);
    await this.insertEntry(dir, parent, name, ino, fileTypeToFt(type));
    this.stamp(parent, { m: true, c: true }, t);
    await this.iput(dir, parent);
    return ino;
  }

  link(id: InodeId, dir: InodeId, name: Buffer): Promise<void> {
    return this.run(async () => {
      const inode = await this.live(id);
      if (isDirMode(inode.i_mode)) throw withErrno('EPERM', 'hard link to a directory');
      const parent = await this.live(dir);
      if (!isDirMode(parent.i_mode)) throw withErrno('ENOTDIR');
      this.checkName(name);
      const idx = await this.dirIndex(dir, parent);
      if (idx.entries.has(nameKey(name))) throw withErrno('EEXIST');
      if (inode.i_links_count >= EXT3_LINK_MAX) throw withErrno('EMLINK');
      if (inode.i_links_count === 0) throw withErrno('ENOENT', 'linking an unlinked inode');
      await this.reserve(await this.insertCost(dir, parent, name.length));
      const t = this.now();
      await this.insertEntry(dir, parent, name, id, fileTypeToFt(this.fileTypeOfInode(inode)));
      inode.i_links_count++;
      this.stamp(inode, { c: true }, t);
      await this.iput(id, inode);
      this.stamp(parent, { m: true, c: true }, t);
      await this.iput(dir, parent);
    });
  }

  /** Directory `dir` (ENOTDIR if it is none), its entry `name` (ENOENT) and that entry's inode. */
  private async entryOf(dir: InodeId, name: Buffer) {
    const parent = await this.live(dir);
    if (!isDirMode(parent.i_mode)) throw withErrno('ENOTDIR');
    const idx = await this.dirIndex(dir, parent);
    const slot = idx.entries.get(nameKey(name));
    if (!slot) throw withErrno('ENOENT');
    return { parent, slot, inode: await this.iget(slot.ino) };
  }

  unlink(dir: InodeId, name: Buffer): Promise<void> {
    return this.run(async () => {
      const { parent, slot, inode } = await this.entryOf(dir, name);
      if (isDirMode(inode.i_mode)) throw withErrno('EISDIR');
      const t = this.now();
      await this.removeEntry(dir, parent, name);
      this.stamp(parent, { m: true, c: true }, t);
      await this.iput(dir, parent);
      await this.dropLink(slot.ino, inode);
    });
  }

  rmdir(dir: InodeId, name: Buffer): Promise<void> {
    return this.run(async () => {
      const { parent, slot, inode } = await this.entryOf(dir, name);
      if (!isDirMode(inode.i_mode)) throw withErrno('ENOTDIR');
      const child = await this.dirIndex(slot.ino, inode);
      if (child.entries.size > 0) throw withErrno('ENOTEMPTY');
      const t = this.now();
      await this.removeEntry(dir, parent, name);
      this.stamp(parent, { m: true, c: true }, t);
      await this.linkDir(dir, parent, -1);
      await this.killDir(slot.ino, inode);
    });
  }

  /** An emptied directory loses both its links (its name and its "."). */
  private async killDir(ino: number, inode: Inode): Promise<void> {
    inode.i_links_count = 0;
    this.stamp(inode, { c: true });
    if (this.openCount.has(ino)) await this.orphanAdd(ino, inode);
    else await this.destroy(ino, inode);
  }

  rename(oldDir: InodeId, oldName: Buffer, newDir: InodeId, newName: Buffer, flags?: RenameFlags): Promise<void> {
    if (flags && (flags.noreplace || flags.exchange || flags.whiteout)) {
      return Promise.reject(withErrno('EINVAL', 'rename flags are not supported by the ext3 engine yet'));
    }
    return this.run(async () => {
      const op = await this.live(oldDir);
      const np = await this.live(newDir);
      if (!isDirMode(op.i_mode) || !isDirMode(np.i_mode)) throw withErrno('ENOTDIR');
      this.checkName(newName);
      const oidx = await this.dirIndex(oldDir, op);
      const src = oidx.entries.get(nameKey(oldName));
      if (!src) throw withErrno('ENOENT');
      const srcInode = await this.iget(src.ino);
      const srcIsDir = isDirMode(srcInode.i_mode);
      const nidx = await this.dirIndex(newDir, np);
      const dst = nidx.entries.get(nameKey(newName));
      if (dst && dst.ino === src.ino) return;
      if (srcIsDir) {
        // The target directory must not lie inside the one being moved.
        let cur = newDir;
        for (let hops = 0; cur !== EXT2_ROOT_INO; hops++) {
          if (cur === src.ino) throw withErrno('EINVAL', 'moving a directory under itself');
          if (hops > this.sb.s_inodes_count) throw new CorruptError('directory parent chain loops');
          cur = await this.parentOf(cur, await this.iget(cur));
        }
        if (src.ino === newDir) throw withErrno('EINVAL', 'moving a directory under itself');
      }
      let dstInode: Inode | null = null;
      // retargetEntry rewrites the slot, so keep the replaced inode's number now.
      const dstIno = dst ? dst.ino : 0;
      if (dst) {
        dstInode = await this.iget(dst.ino);
        const dstIsDir = isDirMode(dstInode.i_mode);
        if (srcIsDir && !dstIsDir) throw withErrno('ENOTDIR');
        if (!srcIsDir && dstIsDir) throw withErrno('EISDIR');
        if (dstIsDir && (await this.dirIndex(dstIno, dstInode)).entries.size > 0) throw withErrno('ENOTEMPTY');
      } else {
        if (srcIsDir && oldDir !== newDir && !this.canAddSubdir(np)) throw withErrno('EMLINK');
        await this.reserve(await this.insertCost(newDir, np, newName.length));
      }
      const t = this.now();
      const ft = fileTypeToFt(this.fileTypeOfInode(srcInode));
      if (dst) await this.retargetEntry(newDir, np, newName, src.ino, ft);
      else await this.insertEntry(newDir, np, newName, src.ino, ft);
      await this.removeEntry(oldDir, op, oldName);
      this.stamp(srcInode, { c: true }, t);
      await this.iput(src.ino, srcInode);
      this.stamp(op, { m: true, c: true }, t);
      this.stamp(np, { m: true, c: true }, t);
      await this.iput(oldDir, op);
      if (newDir !== oldDir) await this.iput(newDir, np);
      if (srcIsDir && oldDir !== newDir) {
        await this.setDotDot(src.ino, srcInode, newDir);
        await this.linkDir(oldDir, op, -1);
        if (!(dstInode && isDirMode(dstInode.i_mode))) await this.linkDir(newDir, np, +1);
      }
      if (dst && dstInode) {
        if (isDirMode(dstInode.i_mode)) {
          if (oldDir === newDir) await this.linkDir(newDir, np, -1);
          await this.killDir(dstIno, dstInode);
        } else {
          await this.dropLink(dstIno, dstInode);
        }
      }
    });
  }

  /** A live regular file that this engine can change (write, truncate). */
  private async liveRegularFile(id: InodeId): Promise<Inode> {
    const inode = await this.live(id);
    const type = inode.i_mode & S_IFMT;
    if (type === S_IFDIR) throw withErrno('EISDIR');
    if (type !== S_IFREG) throw withErrno('EINVAL', 'not a regular file');
    if (this.usesExtents(inode)) throw withErrno('EROFS', 'extent-mapped files are read-only here');
    return inode;
  }

  write(id: InodeId, position: number, data: Buffer): Promise<number> {
    return this.run(async () => {
      const inode = await this.liveRegularFile(id);
      if (!Number.isSafeInteger(position) || position < 0) throw withErrno('EINVAL');
      if (data.length === 0) return 0;
      const bs = this.blockSize;
      const end = position + data.length;
      if (Math.ceil(end / bs) > this.maxFileBlocks) throw withErrno('EFBIG');
      this.noteSize(end);
      const first = Math.floor(position / bs);
      const last = Math.floor((end - 1) / bs);
      const t = this.now();
      let written = 0;
      const CHUNK = 1024;
      let prevPbn = 0;
      let failed: unknown = null;
      outer: for (let c = first; c <= last; c += CHUNK) {
        const n = Math.min(CHUNK, last - c + 1);
        const map = await mapRange(this.io, inode, c, n);
        const holes = map.filter((b) => b === 0).length;
        if (holes > 0) {
          const need = holes + Math.ceil(holes / (bs / 4)) + 3;
          if (need > this.alloc.availableBlocks() && this.alloc.freedThisTx.size > 0) {
            await this.iput(id, inode);
            await this.commit();
          }
        }
        // Overwrites of blocks already on disk, coalesced into runs of adjacent bytes.
        const runs: { pbn: number; buf: Buffer[]; bytes: number }[] = [];
        for (let i = 0; i < n; i++) {
          const lbn = c + i;
          const bStart = lbn * bs;
          const from = Math.max(bStart, position);
          const to = Math.min(bStart + bs, end);
          let pbn = map[i]!;
          if (pbn === 0) {
            let goal = prevPbn ? prevPbn + 1 : lbn > 0 ? await mapBlock(this.io, inode, lbn - 1) : 0;
            if (goal === 0) goal = this.alloc.goalForInode(id);
            // Checked first, so a failed allocation never leaves half a mapping behind.
            const need = 1 + (await indirectBlocksNeeded(this.io, inode, lbn));
            if (need > this.alloc.availableBlocks()) {
              failed = withErrno('ENOSPC');
              await this.flushRuns(runs);
              break outer;
            }
            pbn = await this.alloc.allocBlock(goal);
            this.addBlocks(inode, 1 + (await setBlock(this.io, inode, lbn, pbn)));
            // A new block's data waits in memory until the commit (or the pending cap) writes it.
            const block = this.pendingBlock();
            data.copy(block, from - bStart, from - position, to - position);
            this.pendingData.set(pbn, block);
            this.pendingBytes += bs;
            prevPbn = pbn;
            written = to - position;
            continue;
          }
          const pending = this.pendingData.get(pbn);
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
        if (runs.length > 0) await this.flushRuns(runs);
        if (written > 0 && position + written > inode.i_size) inode.i_size = position + written;
        this.stamp(inode, { m: true, c: true }, t);
        await this.iput(id, inode);
        if (this.cache.dirty.size >= this.commitThreshold()) await this.commit();
        else if (this.pendingBytes >= MAX_PENDING_DATA) await this.flushData();
      }
      if (written > 0 && position + written > inode.i_size) inode.i_size = position + written;
      this.stamp(inode, { m: true, c: true }, t);
      await this.iput(id, inode);
      if (failed && written === 0) throw failed;
      return written;
    });
  }

  /**
   * A zeroed block-sized buffer for pendingData, carved from a shared slab:
   * one zero-filled allocation per PENDING_SLAB bytes instead of one per
   * block or per write (small files), and blocks allocated one after another
   * usually sit side by side on disk and in the slab, so flushData() writes
   * such runs without copying them. Pieces are never reused: a piece leaves
   * pendingData (flushed or freed) and is garbage with it.
   */
  private pendingBlock(): Buffer {
    const bs = this.blockSize;
    if (this.slab.length - this.slabUsed < bs) {
      this.slab = Buffer.alloc(Math.max(bs, PENDING_SLAB));
      this.slabUsed = 0;
    }
    const block = this.slab.subarray(this.slabUsed, this.slabUsed + bs);
    this.slabUsed += bs;
    return block;
  }

  private slab: Buffer = Buffer.alloc(0);
  private slabUsed = 0;

  /** Writes pending data blocks, runs of adjacent blocks in one write each. */
  private async flushData(): Promise<void> {
    if (this.pendingData.size === 0) return;
    const blocks = [...this.pendingData.keys()].sort((a, b) => a - b);
    let i = 0;
    while (i < blocks.length) {
      let j = i + 1;
      while (j < blocks.length && blocks[j] === blocks[j - 1]! + 1 && j - i < 1024) j++;
      await this.store.write(blocks[i]! * this.blockSize, joinAdjacent(blocks.slice(i, j).map((b) => this.pendingData.get(b)!)));
      // Dropped only once on disk, so an unqueued reader always finds the bytes somewhere.
      for (let k = i; k < j; k++) this.pendingData.delete(blocks[k]!);
      i = j;
    }
    this.pendingBytes = 0;
  }

  private async flushRuns(runs: { pbn: number; buf: Buffer[]; bytes: number }[]): Promise<void> {
    if (runs.length === 0) return;
    for (const r of runs) {
      await this.store.write(r.pbn * this.blockSize, r.buf.length === 1 ? r.buf[0]! : Buffer.concat(r.buf));
    }
    runs.length = 0;
  }

  truncate(id: InodeId, size: number): Promise<void> {
    return this.run(async () => {
      const inode = await this.liveRegularFile(id);
      if (!Number.isSafeInteger(size) || size < 0) throw withErrno('EINVAL');
      const bs = this.blockSize;
      if (Math.ceil(size / bs) > this.maxFileBlocks) throw withErrno('EFBIG');
      this.noteSize(size);
      if (size < inode.i_size) {
        // The target size first: a crash between the freeing steps is finished at open (orphan list).
        const oldEnd = Math.ceil(inode.i_size / bs);
        inode.i_size = size;
        await this.freeFrom(id, inode, Math.ceil(size / bs), false, oldEnd);
        if (size % bs !== 0) {
          // Zero the tail of the last kept block, so growing the file later reads zeros there.
          const pbn = await mapBlock(this.io, inode, Math.floor(size / bs));
          const pending = this.pendingData.get(pbn);
          if (pending) pending.fill(0, size % bs);
          else if (pbn !== 0) await this.store.write(pbn * bs + (size % bs), Buffer.alloc(bs - (size % bs)));
        }
      }
      inode.i_size = size;
      this.stamp(inode, { m: true, c: true });
      await this.iput(id, inode);
    });
  }

  setattr(id: InodeId, attr: SetAttr): Promise<void> {
    return this.run(async () => {
      const inode = await this.live(id);
      if (attr.mode !== undefined) {
        inode.i_mode = (inode.i_mode & S_IFMT) | (attr.mode & 0o7777);
        await this.chmodAcl(id, inode);
      }
      if (attr.uid !== undefined) inode.i_uid = attr.uid >>> 0;
      if (attr.gid !== undefined) inode.i_gid = attr.gid >>> 0;
      if (attr.atime) inode.i_atime = { sec: attr.atime.sec, nsec: attr.atime.nsec };
      if (attr.mtime) inode.i_mtime = { sec: attr.mtime.sec, nsec: attr.mtime.nsec };
      this.stamp(inode, { c: true });
      await this.iput(id, inode);
    });
  }

  /** chmod with an access ACL present rewrites it to match (posix_acl_chmod). */
  private async chmodAcl(id: number, inode: Inode): Promise<void> {
    const { inInode, inBlock } = await this.allXattrs(inode);
    const all = [...inInode, ...inBlock];
    const at = all.findIndex((x) => x.index === XATTR_INDEX_POSIX_ACL_ACCESS);
    if (at < 0) return;
    const wasIn = new Set(inInode);
    const updated: XattrEntry = { ...all[at]!, value: aclChmodDisk(all[at]!.value, inode.i_mode) };
    if (wasIn.has(all[at]!)) wasIn.add(updated);
    all[at] = updated;
    await this.storeXattrs(id, inode, all, wasIn);
  }

  setxattr(id: InodeId, nameBytes: Buffer, value: Buffer, flags?: 'create' | 'replace'): Promise<void> {
    const name = nameBytes.toString('latin1');
    return this.run(async () => {
      const inode = await this.live(id);
      const key = splitXattrName(name);
      if (!key) throw withErrno('EOPNOTSUPP', `xattr namespace of ${name}`);
      if (key.name.length > 255) throw withErrno('ERANGE', 'xattr name too long');
      let stored = value;
      let dropInstead = false;
      if (key.index === XATTR_INDEX_POSIX_ACL_ACCESS || key.index === XATTR_INDEX_POSIX_ACL_DEFAULT) {
        if (key.index === XATTR_INDEX_POSIX_ACL_DEFAULT && !isDirMode(inode.i_mode)) throw withErrno('EACCES');
        stored = aclXattrToDisk(value);
        if (key.index === XATTR_INDEX_POSIX_ACL_ACCESS) {
          // As the kernel: the access ACL sets the mode's permission bits, and one the mode
          // fully expresses is not stored at all.
          const m = aclModeOf(value);
          inode.i_mode = (inode.i_mode & ~0o777) | m.perm;
          dropInstead = m.equivalent;
        }
      }
      const { inInode, inBlock } = await this.allXattrs(inode);
      const all = [...inInode, ...inBlock];
      const at = all.findIndex((x) => x.index === key.index && x.name.equals(key.name));
      if (flags === 'create' && at >= 0) throw withErrno('EEXIST');
      if (flags === 'replace' && at < 0) throw withErrno('ENODATA');
      if (dropInstead) {
        if (at >= 0) all.splice(at, 1);
        this.stamp(inode, { c: true });
        await this.storeXattrs(id, inode, all, new Set(inInode));
        return;
      }
      const entry: XattrEntry = { index: key.index, name: key.name, value: Buffer.from(stored) };
      const wasIn = new Set(inInode);
      if (at >= 0) {
        if (wasIn.has(all[at]!)) wasIn.add(entry);
        all[at] = entry;
      } else {
        all.push(entry);
      }
      this.stamp(inode, { c: true });
      await this.storeXattrs(id, inode, all, wasIn);
    });
  }

  removexattr(id: InodeId, nameBytes: Buffer): Promise<void> {
    const name = nameBytes.toString('latin1');
    return this.run(async () => {
      const inode = await this.live(id);
      const key = splitXattrName(name);
      if (!key) throw withErrno('ENODATA');
      const { inInode, inBlock } = await this.allXattrs(inode);
      const all = [...inInode, ...inBlock];
      const at = all.findIndex((x) => x.index === key.index && x.name.equals(key.name));
      if (at < 0) throw withErrno('ENODATA');
      all.splice(at, 1);
      this.stamp(inode, { c: true });
      await this.storeXattrs(id, inode, all, new Set(inInode));
    });
  }

  async ref(id: InodeId, count = 1): Promise<void> {
    await this.live(id);
    this.openCount.set(id, (this.openCount.get(id) ?? 0) + count);
  }

  /** Whole-file range: a conservative answer the contract allows (holes reported as data). */
  async dataRanges(id: InodeId): Promise<DataRange[]> {
    const inode = await this.liveRegularFile(id);
    return inode.i_size > 0 ? [{ offset: 0, length: inode.i_size }] : [];
  }

  unref(id: InodeId, count = 1): Promise<void> {
    const n = this.openCount.get(id) ?? 0;
    if (n > count) {
      this.openCount.set(id, n - count);
      return Promise.resolve();
    }
    this.openCount.delete(id);
    if (!this.writable || !this.orphans.includes(id)) return Promise.resolve();
    return this.run(async () => {
      if (this.openCount.has(id) || !this.orphans.includes(id)) return;
      const inode = await this.iget(id);
      if (inode.i_links_count !== 0) return;
      await this.orphanRemove(id);
      await this.destroy(id, inode);
    });
  }

  fsync(id: InodeId, dataOnly: boolean): Promise<void> {
    void id;
    void dataOnly;
    if (!this.writable) return Promise.resolve();
    return this.run(() => this.commit());
  }

  sync(): Promise<void> {
    if (!this.writable) return Promise.resolve();
    return this.run(() => this.commit());
  }

  /**
   * Frees inodes still open-but-unlinked, commits, marks the filesystem
   * clean, empties the journal and closes the image.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.writable) {
      await this.run(async () => {
        for (const ino of [...this.orphans]) {
          await this.orphanRemove(ino);
          await this.destroy(ino, await this.iget(ino));
        }
        this.openCount.clear();
        if (this.journal) this.sb.s_feature_incompat &= ~INCOMPAT.needs_recovery;
        else this.sb.s_state |= EXT2_VALID_FS;
        await this.commit();
        if (this.journal) await this.journal.close();
        await this.store.sync();
      });
    }
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.store.close();
  }
}

/**
 * One buffer for consecutive pieces: a view when they are adjacent slices of
 * one allocation (the usual case for a file's new blocks), else a copy.
 */
function joinAdjacent(bufs: Buffer[]): Buffer {
  if (bufs.length === 1) return bufs[0]!;
  const first = bufs[0]!;
  let end = first.byteOffset + first.length;
  for (let k = 1; k < bufs.length; k++) {
    const b = bufs[k]!;
    if (b.buffer !== first.buffer || b.byteOffset !== end) return Buffer.concat(bufs);
    end += b.length;
  }
  return Buffer.from(first.buffer, first.byteOffset, end - first.byteOffset);
}

const DOT = Buffer.from('.');
const DOTDOT = Buffer.from('..');
