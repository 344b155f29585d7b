/**
 * Ext3Fs: an ext2/ext3 filesystem image read and written in-process
 * (implements WritableFs from src/engine.ts). This is the façade: the work
 * is done by the modules context.ts lists (transaction, inode table,
 * directories, namei, file data, orphans, xattr storage), which share one
 * Ext3Context; every mutation enters the writer queue here.
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
 * kernel marks a mounted ext3); a clean close commits, empties the journal
 * and only then (synced, in that order) clears the flag and leaves s_state
 * valid.
 */
import { CorruptError, NAMES_OWN_ERRORS, withErrno } from '../errors.js';
import type { ByteStore } from '../io/byte-source.js';
import type { DataRange, DirEntry, InodeId, NewNode, RenameFlags, SetAttr, Stat, StatFs, WritableFs } from '../engine.js';
import { makedev, S_IFLNK, S_IFMT } from '../engine.js';
import type { Ext3Options, Ext3Stats } from './context.js';
import { Ext3Context } from './context.js';
import { EXT2_NAME_LEN } from './dir.js';
import { isDirMode } from './directory.js';
import { inodeTableBlocks } from './geometry.js';
import { decodeGroupDesc, gdtBlockCount, validateGroupDesc } from './group-desc.js';
import { decodeDevice, EXT2_ROOT_INO } from './inode.js';
import type { Inode } from './inode.js';
import type { Superblock } from './superblock.js';
import { COMPAT, EXT2_VALID_FS, groupCount, groupHasSuper, hasCompat, INCOMPAT } from './superblock.js';
import { decodeSlowSymlink, decodeFastSymlink, isFastSymlink } from './symlink.js';

export { COMMIT_INTERVAL_MS } from './context.js';
export type { Ext3Options } from './context.js';
export { EXT3_LINK_MAX } from './directory.js';

export class Ext3Fs implements WritableFs {
  readonly name: string;
  readonly rootId: InodeId = EXT2_ROOT_INO;
  readonly writable: boolean;
  readonly sb: Superblock;
  readonly blockSize: number;
  readonly inodeSize: number;
  /** Counters for tests and benchmarks. */
  readonly stats: Ext3Stats;
  private readonly c: Ext3Context;

  /** Use openExt3() (index.ts): it replays the journal and validates first. */
  constructor(store: ByteStore, sb: Superblock, options: Ext3Options) {
    this.c = new Ext3Context(store, sb, options);
    this.name = this.c.name;
    this.writable = this.c.writable;
    this.sb = sb;
    this.blockSize = this.c.blockSize;
    this.inodeSize = this.c.inodeSize;
    this.stats = this.c.stats;
  }

  // ---------------------------------------------------------------- setup

  /** Reads the group descriptors; for writing, opens the journal and processes orphans. */
  async load(): Promise<void> {
    const c = this.c;
    const sb = this.sb;
    const n = groupCount(sb);
    const gdtStart = sb.s_first_data_block + 1;
    const gdtBlocks = gdtBlockCount(sb, c.descSize);
    const itBlocks = inodeTableBlocks(sb);
    for (let g = 0; g < n; g++) {
      const byte = g * c.descSize;
      const blk = gdtStart + Math.floor(byte / this.blockSize);
      if (blk >= gdtStart + gdtBlocks) throw new CorruptError('group descriptor table overflows');
      const buf = await c.cache.read(blk);
      const gd = decodeGroupDesc(buf, byte % this.blockSize, c.descSize);
      validateGroupDesc(sb, g, gd, itBlocks);
      c.groups.push(gd);
    }
    // The kernel keeps the superblock's free counts only approximately (it sums the group
    // descriptors at mount, as statfs shows); a crash can leave them stale. Use the sums.
    let freeBlocks = 0;
    let freeInodes = 0;
    for (const gd of c.groups) {
      freeBlocks += gd.bg_free_blocks_count;
      freeInodes += gd.bg_free_inodes_count;
    }
    if (freeBlocks > sb.s_blocks_count || freeInodes > sb.s_inodes_count) {
      throw new CorruptError('group descriptors count more free blocks or inodes than exist');
    }
    sb.s_free_blocks_count = freeBlocks;
    sb.s_free_inodes_count = freeInodes;
    if (!this.writable) return;
    await c.tx.openJournal();
    await c.orphans.processOrphans();
    // Mark the filesystem in use, as a kernel mount does.
    if (c.tx.journal) sb.s_feature_incompat |= INCOMPAT.needs_recovery;
    else sb.s_state &= ~EXT2_VALID_FS;
    sb.s_mnt_count = (sb.s_mnt_count + 1) & 0xffff;
    sb.s_mtime = c.now().sec;
    await c.tx.commit();
  }

  // ---------------------------------------------------------------- ReadableFs

  /**
   * Every contract method names this image on its CorruptError,
   * UnsupportedError, UsageError and InternalError (Ext3Context.named: in
   * Transaction.run for every queued change, in each other method's own
   * async frame), so the nameEngineErrors boundary adds no wrapper and no
   * derived promise to each call.
   */
  get [NAMES_OWN_ERRORS](): string {
    return this.name;
  }

  async getattr(id: InodeId): Promise<Stat> {
    try {
      return statOf(id, await this.c.itable.live(id));
    } catch (err) {
      throw this.c.named(err);
    }
  }

  /** ReadableFs.statNow: getattr's answer when the inode is decoded in memory (no I/O), else undefined. */
  statNow(id: InodeId): Stat | undefined {
    const inode = this.c.itable.liveNow(id);
    return inode === undefined ? undefined : statOf(id, inode);
  }

  async lookup(dir: InodeId, name: Buffer): Promise<InodeId | null> {
    try {
      return await this.c.ns.shared(() => this.c.namei.lookup(dir, name));
    } catch (err) {
      throw this.c.named(err);
    }
  }

  /** The directory's snapshot: the same frozen array until the directory changes. */
  async readdir(dir: InodeId): Promise<readonly DirEntry[]> {
    try {
      return await this.c.ns.shared(async () => {
        const inode = await this.c.itable.live(dir);
        if (!isDirMode(inode.i_mode)) throw withErrno('ENOTDIR');
        return this.c.dirs.list(dir, inode);
      });
    } catch (err) {
      throw this.c.named(err);
    }
  }

  async read(id: InodeId, position: number, length: number): Promise<Buffer> {
    try {
      return await this.c.data.read(id, position, length);
    } catch (err) {
      throw this.c.named(err);
    }
  }

  async dataRanges(id: InodeId): Promise<DataRange[]> {
    try {
      return await this.c.data.dataRanges(id);
    } catch (err) {
      throw this.c.named(err);
    }
  }

  async readlink(id: InodeId): Promise<Buffer> {
    try {
      return await this.readlinkOf(id);
    } catch (err) {
      throw this.c.named(err);
    }
  }

  private async readlinkOf(id: InodeId): Promise<Buffer> {
    const inode = await this.c.itable.live(id);
    if ((inode.i_mode & S_IFMT) !== S_IFLNK) throw withErrno('EINVAL', 'not a symlink');
    if (isFastSymlink(inode, this.blockSize)) return Buffer.from(decodeFastSymlink(inode));
    if (inode.i_size >= this.blockSize) throw new CorruptError(`symlink ${id} size ${inode.i_size}`);
    const pbn = await this.c.data.mapOne(inode, 0);
    if (pbn === 0) throw new CorruptError(`symlink ${id} has no block`);
    return decodeSlowSymlink(inode, await this.c.cache.read(pbn));
  }

  async listxattr(id: InodeId): Promise<Buffer[]> {
    try {
      return await this.c.xattrs.listxattr(id);
    } catch (err) {
      throw this.c.named(err);
    }
  }

  async getxattr(id: InodeId, name: Buffer): Promise<Buffer | null> {
    try {
      return await this.c.xattrs.getxattr(id, name);
    } catch (err) {
      throw this.c.named(err);
    }
  }

  /** Like the kernel's ext3/4 statfs (bsddf): metadata overhead left out of f_blocks. */
  async statfs(): Promise<StatFs> {
    try {
      return await this.statfsNow();
    } catch (err) {
      throw this.c.named(err);
    }
  }

  private async statfsNow(): Promise<StatFs> {
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
    const gdt = gdtBlockCount(sb, this.c.descSize);
    const itBlocks = inodeTableBlocks(sb);
    let total = sb.s_first_data_block;
    for (let g = 0; g < this.c.groups.length; g++) {
      if (groupHasSuper(sb, g)) total += 1 + gdt + sb.s_reserved_gdt_blocks;
      total += 2 + itBlocks;
    }
    if (hasCompat(sb, COMPAT.has_journal) && sb.s_journal_inum !== 0) {
      const j = await this.c.itable.iget(sb.s_journal_inum);
      total += Math.floor(j.i_size / this.blockSize);
    }
    this.overheadCache = total;
    return total;
  }

  // ---------------------------------------------------------------- WritableFs

  /** A namespace mutation: on the writer queue, and exclusive of lookup and readdir. */
  private namespace<T>(fn: () => Promise<T>): Promise<T> {
    return this.c.tx.run(() => this.c.ns.exclusive(fn));
  }

  mknod(dir: InodeId, name: Buffer, node: NewNode): Promise<InodeId> {
    return this.namespace(() => this.c.namei.mknod(dir, name, node));
  }

  mkdir(dir: InodeId, name: Buffer, node: NewNode): Promise<InodeId> {
    return this.namespace(() => this.c.namei.mkdir(dir, name, node));
  }

  symlink(dir: InodeId, name: Buffer, target: Buffer, owner: { uid: number; gid: number }): Promise<InodeId> {
    return this.namespace(() => this.c.namei.symlink(dir, name, target, owner));
  }

  link(id: InodeId, dir: InodeId, name: Buffer): Promise<void> {
    return this.namespace(() => this.c.namei.link(id, dir, name));
  }

  unlink(dir: InodeId, name: Buffer): Promise<void> {
    return this.namespace(() => this.c.namei.unlink(dir, name));
  }

  rmdir(dir: InodeId, name: Buffer): Promise<void> {
    return this.namespace(() => this.c.namei.rmdir(dir, name));
  }

  /** rename(2)/renameat2(2): noreplace, exchange, whiteout, each one queued operation (one transaction). */
  rename(oldDir: InodeId, oldName: Buffer, newDir: InodeId, newName: Buffer, flags?: RenameFlags): Promise<void> {
    return this.namespace(() => this.c.namei.rename(oldDir, oldName, newDir, newName, flags ?? {}));
  }

  write(id: InodeId, position: number, data: Buffer): Promise<number> {
    return this.c.tx.run(() => this.c.data.write(id, position, data));
  }

  truncate(id: InodeId, size: number): Promise<void> {
    return this.c.tx.run(() => this.c.data.truncate(id, size));
  }

  setattr(id: InodeId, attr: SetAttr): Promise<void> {
    const c = this.c;
    return c.tx.run(async () => {
      const inode = await c.itable.live(id);
      if (attr.mode !== undefined) {
        inode.i_mode = (inode.i_mode & S_IFMT) | (attr.mode & 0o7777);
        await c.xattrs.chmodAcl(id, inode);
      }
      if (attr.uid !== undefined) inode.i_uid = attr.uid >>> 0;
      if (attr.gid !== undefined) inode.i_gid = attr.gid >>> 0;
      if (attr.atime) inode.i_atime = { sec: attr.atime.sec, nsec: attr.atime.nsec };
      if (attr.mtime) inode.i_mtime = { sec: attr.mtime.sec, nsec: attr.mtime.nsec };
      c.stamp(inode, { c: true });
      await c.itable.iput(id, inode);
    });
  }

  setxattr(id: InodeId, name: Buffer, value: Buffer, flags?: 'create' | 'replace'): Promise<void> {
    return this.c.tx.run(() => this.c.xattrs.setxattr(id, name, value, flags));
  }

  removexattr(id: InodeId, name: Buffer): Promise<void> {
    return this.c.tx.run(() => this.c.xattrs.removexattr(id, name));
  }

  /**
   * Queued with the mutations (writable engines): a ref issued before an
   * unlink holds the inode, one issued after the unlink freed it fails with
   * ENOENT, never attaching to the inode a later create reuses the number for.
   */
  ref(id: InodeId, count = 1): Promise<void> {
    if (!Number.isSafeInteger(count) || count < 0) return Promise.reject(withErrno('EINVAL', `ref count ${count}`));
    if (count === 0) return Promise.resolve();
    // An inode in memory and nothing queued before this ref: taken now, as the queued take would.
    if (this.writable && this.c.tx.queueEmpty && this.c.itable.liveNow(id) !== undefined) {
      this.c.refs.set(id, (this.c.refs.get(id) ?? 0) + count);
      return Promise.resolve();
    }
    const take = async (): Promise<void> => {
      try {
        await this.c.itable.live(id);
      } catch (err) {
        throw this.c.named(err);
      }
      this.c.refs.set(id, (this.c.refs.get(id) ?? 0) + count);
    };
    return this.writable ? this.c.tx.run(take) : take();
  }

  /** Queued like ref, so an unref never overtakes the ref it drops. */
  unref(id: InodeId, count = 1): Promise<void> {
    if (!Number.isSafeInteger(count) || count < 0) return Promise.reject(withErrno('EINVAL', `unref count ${count}`));
    if (count === 0) return Promise.resolve();
    const c = this.c;
    // After close every reference is gone with the engine: nothing left to drop.
    if (c.tx.closed) return Promise.resolve();
    const drop = async (): Promise<void> => {
      const n = c.refs.get(id) ?? 0;
      if (n > count) {
        c.refs.set(id, n - count);
        return;
      }
      c.refs.delete(id);
      // Only a writable engine gets here, on the writer queue (Transaction.run names its errors).
      if (this.writable && c.orphans.has(id)) await c.orphans.release(id);
    };
    return this.writable ? c.tx.run(drop) : drop();
  }

  fsync(id: InodeId, dataOnly: boolean): Promise<void> {
    void id;
    void dataOnly;
    return this.sync();
  }

  async sync(): Promise<void> {
    if (!this.writable) return;
    try {
      await this.c.tx.sync();
    } catch (err) {
      throw this.c.named(err);
    }
  }

  /**
   * Frees inodes still open-but-unlinked, commits, marks the filesystem
   * clean, empties the journal and closes the image.
   */
  async close(): Promise<void> {
    try {
      await this.closeNow();
    } catch (err) {
      throw this.c.named(err);
    }
  }

  private async closeNow(): Promise<void> {
    const c = this.c;
    if (c.tx.closed) return;
    let failure: unknown = null;
    if (this.writable) {
      await c.tx
        .run(async () => {
          await c.orphans.releaseAll();
          c.refs.clear();
          await c.tx.commit();
          // As jbd2_journal_destroy, then ext4_put_super: the checkpoints are durable and
          // the journal marked empty (both synced) before the superblock says it is clean;
          // a crash until then leaves needs_recovery set and the journal replayable.
          await c.tx.closeJournal();
          await c.store.sync();
          if (c.tx.journal) this.sb.s_feature_incompat &= ~INCOMPAT.needs_recovery;
          else this.sb.s_state |= EXT2_VALID_FS;
          await c.tx.writeSuperblockHome();
        })
        .catch((err: unknown) => {
          failure = err;
        });
    }
    // The image is released even when the last commit failed (it then needs recovery),
    // once no commit is writing to it any more.
    await c.tx.idle();
    c.tx.stop();
    await c.store.close();
    if (failure !== null) throw failure;
  }
}

/** The Stat of live inode `id`. */
function statOf(id: InodeId, inode: Inode): Stat {
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
