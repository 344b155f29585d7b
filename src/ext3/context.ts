/**
 * The state one open ext3 image shares between its modules, as alloc.ts's
 * AllocContext does for the allocator: the façade (fs.ts) builds one
 * Ext3Context, and each module (transaction, inode table, directories,
 * namei, file data, orphans, xattr storage) holds it and reaches the others
 * through it. Layout, after the kernel's fs/ext2 split:
 *
 *   transaction.ts   the writer queue, commits, reservations, the commit timer
 *   inode-table.ts   iget/iput, inode-table read-ahead, live-inode checks
 *   directory.ts     directory indexes and entry edits (dir.c)
 *   namei.ts         lookup (linear and htree) and the namespace operations
 *   namespace-lock.ts  readers never see a namespace change half done
 *   file-data.ts     block mapping, read, write, truncate, ordered-mode data
 *   orphans.ts       the orphan list, freeing inodes and their blocks
 *   xattr-store.ts   in-inode and block xattr storage, ACL rewriting
 */
import { isFileProblem } from '../errors.js';
import type { ByteStore } from '../io/byte-source.js';
import { Allocator } from './alloc.js';
import { BlockCache } from './block-cache.js';
import type { BlockMapIO } from './block-map.js';
import { Directories } from './directory.js';
import { FileData } from './file-data.js';
import type { GroupDesc } from './group-desc.js';
import type { Time } from './inode.js';
import { InodeTable } from './inode-table.js';
import { Namei } from './namei.js';
import { NamespaceLock } from './namespace-lock.js';
import { Orphans } from './orphans.js';
import type { Superblock } from './superblock.js';
import { blockSize as sbBlockSize, descSize as sbDescSize, inodeSize as sbInodeSize } from './superblock.js';
import { Transaction } from './transaction.js';
import { XattrStore } from './xattr-store.js';

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

/** Counters for tests and benchmarks. */
export interface Ext3Stats {
  htreeLookups: number;
  htreeFallbacks: number;
  dirLoads: number;
  commits: number;
  /** Time commits held the writer queue (their foreground half, closeRunning), total and longest, ms. */
  commitHoldMs: number;
  commitHoldMaxMs: number;
}

function defaultNow(): Time {
  const ms = Date.now();
  return { sec: Math.floor(ms / 1000), nsec: (ms % 1000) * 1_000_000 };
}

export class Ext3Context {
  readonly name: string;
  readonly writable: boolean;
  readonly sb: Superblock;
  readonly blockSize: number;
  readonly inodeSize: number;
  readonly descSize: number;
  readonly sectorsPerBlock: number;
  readonly store: ByteStore;
  readonly cache: BlockCache;
  readonly groups: GroupDesc[] = [];
  readonly alloc: Allocator;
  readonly io: BlockMapIO;
  readonly now: () => Time;
  readonly stats: Ext3Stats = {
    htreeLookups: 0,
    htreeFallbacks: 0,
    dirLoads: 0,
    commits: 0,
    commitHoldMs: 0,
    commitHoldMaxMs: 0,
  };
  /** References held through ref() (lookup counts, open handles), by inode number. */
  readonly refs = new Map<number, number>();
  readonly tx: Transaction;
  /** lookup/readdir shared, namespace mutations exclusive (namespace-lock.ts). */
  readonly ns = new NamespaceLock();
  readonly itable: InodeTable;
  readonly dirs: Directories;
  readonly namei: Namei;
  readonly data: FileData;
  readonly orphans: Orphans;
  readonly xattrs: XattrStore;

  constructor(store: ByteStore, sb: Superblock, options: Ext3Options) {
    this.store = store;
    this.name = store.name;
    this.sb = sb;
    this.writable = options.writable;
    this.blockSize = sbBlockSize(sb);
    this.inodeSize = sbInodeSize(sb);
    this.descSize = sbDescSize(sb);
    this.sectorsPerBlock = this.blockSize / 512;
    this.now = options.now ?? defaultNow;
    this.cache = new BlockCache(store, this.blockSize, options.replayed);
    this.tx = new Transaction(this, Math.max(1, Math.min(options.commitIntervalMs ?? COMMIT_INTERVAL_MS, COMMIT_INTERVAL_MS)));
    this.itable = new InodeTable(this);
    this.dirs = new Directories(this);
    this.namei = new Namei(this);
    this.data = new FileData(this);
    this.orphans = new Orphans(this);
    this.xattrs = new XattrStore(this);
    this.alloc = new Allocator({
      sb,
      groups: this.groups,
      readMeta: (b) => this.cache.read(b),
      writeMeta: (b) => this.cache.write(b),
      groupChanged: (g) => this.tx.groupChanged(g),
      hasMeta: (b) => this.cache.has(b),
      warmGroup: (g, ino) => {
        // Warming only: a failed read here is the later (awaited) read's to report.
        const bb = this.groups[g]!.bg_block_bitmap;
        if (!this.cache.has(bb)) this.cache.read(bb).catch(() => undefined);
        this.itable.warm(ino);
      },
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
        this.data.dropPending(b);
        if (wasMeta) this.tx.revoke(b);
      },
      freeRun: async (start, count, wasMeta) => {
        await this.alloc.freeRun(start, count);
        for (let b = start; b < start + count; b++) {
          this.cache.forget(b);
          this.data.dropPending(b);
          if (wasMeta) this.tx.revoke(b);
        }
      },
    };
  }

  addBlocks(inode: { i_blocks: number }, n: number): void {
    inode.i_blocks = Math.max(0, inode.i_blocks + n * this.sectorsPerBlock);
  }

  /** `err`, naming this image when it is a CorruptError, UnsupportedError, UsageError or InternalError naming none. */
  named(err: unknown): unknown {
    if (isFileProblem(err) && err.file === undefined) err.file = this.name;
    return err;
  }

  stamp(
    inode: { i_atime: Time; i_mtime: Time; i_ctime: Time },
    which: { a?: boolean; m?: boolean; c?: boolean },
    t: Time = this.now(),
  ): void {
    if (which.a) inode.i_atime = t;
    if (which.m) inode.i_mtime = t;
    if (which.c) inode.i_ctime = t;
  }
}
