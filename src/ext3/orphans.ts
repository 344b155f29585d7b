/**
 * Freeing inodes and the orphan list (the kernel's ext3 orphan.c and
 * ext2_evict_inode): an inode whose last link goes while it is still
 * referenced (ref/unref) is parked on the on-disk orphan list
 * (s_last_orphan -> i_dtime chain) until its last reference drops; a large
 * truncate parks it there too, so a crash between its freeing steps is
 * finished at the next open (processOrphans).
 */
import { S_IFLNK, S_IFMT, S_IFREG } from '../engine.js';
import { CorruptError } from '../errors.js';
import { truncateBlocks } from './block-map.js';
import type { Ext3Context } from './context.js';
import { isDirMode } from './directory.js';
import type { Inode } from './inode.js';
import { EXT2_N_BLOCKS } from './inode.js';
import { isFastSymlink } from './symlink.js';

export class Orphans {
  /** The orphan list, head first (mirrors s_last_orphan -> i_dtime chain). */
  private list: number[] = [];

  constructor(private readonly c: Ext3Context) {}

  has(ino: number): boolean {
    return this.list.includes(ino);
  }

  /** The listed inodes, head first (a copy). */
  all(): number[] {
    return [...this.list];
  }

  /** Frees an inode's blocks, xattr block and the inode itself. */
  async destroy(ino: number, inode: Inode): Promise<void> {
    const c = this.c;
    const dir = isDirMode(inode.i_mode);
    const type = inode.i_mode & S_IFMT;
    const hasBlocks = type === S_IFREG || dir || (type === S_IFLNK && !isFastSymlink(inode, c.blockSize));
    if (hasBlocks && !c.data.usesExtents(inode)) {
      await this.freeFrom(ino, inode, 0, dir || type === S_IFLNK);
    }
    if (inode.i_file_acl !== 0) await c.xattrs.dropXattrBlock(inode);
    inode.i_block = new Array<number>(EXT2_N_BLOCKS).fill(0);
    inode.i_blocks = 0;
    inode.i_size = 0;
    inode.i_links_count = 0;
    inode.i_dtime = c.now().sec;
    await c.itable.iput(ino, inode);
    await c.alloc.freeInode(ino, dir);
    c.dirs.forget(ino);
    c.itable.forget(ino);
  }

  /**
   * Frees the blocks from logical block `keep` on (`oldEnd`: where they end,
   * default i_size). A large range is freed in steps with a commit whenever
   * the transaction grows near the journal's capacity, the inode parked on
   * the orphan list with its final i_size meanwhile (as the kernel does), so
   * a crash between steps is finished at the next open.
   */
  async freeFrom(ino: number, inode: Inode, keep: number, leavesAreMeta: boolean, oldEnd?: number): Promise<void> {
    const c = this.c;
    const step = (c.blockSize / 4) * 16;
    let cur = Math.max(keep, oldEnd ?? Math.ceil(inode.i_size / c.blockSize));
    const big = c.tx.journal !== null && cur - keep > step;
    const listed = this.list.includes(ino);
    if (big && !listed) await this.add(ino, inode);
    for (;;) {
      const next = Math.max(keep, cur - step);
      const freed = await truncateBlocks(c.io, inode, next, leavesAreMeta);
      c.addBlocks(inode, -freed);
      await c.itable.iput(ino, inode);
      if (next === keep) break;
      cur = next;
      if (c.tx.size >= c.tx.commitThreshold()) await c.tx.closeRunning(true);
    }
    if (big && !listed) {
      await this.remove(ino);
      await c.itable.iput(ino, inode);
    }
  }

  async add(ino: number, inode: Inode): Promise<void> {
    const sb = this.c.sb;
    inode.i_dtime = sb.s_last_orphan;
    sb.s_last_orphan = ino;
    this.list.unshift(ino);
    await this.c.itable.iput(ino, inode);
  }

  async remove(ino: number): Promise<void> {
    const c = this.c;
    const i = this.list.indexOf(ino);
    if (i < 0) return;
    const next = this.list[i + 1] ?? 0;
    if (i === 0) {
      c.sb.s_last_orphan = next;
    } else {
      const prevIno = this.list[i - 1]!;
      const prev = await c.itable.iget(prevIno);
      prev.i_dtime = next;
      await c.itable.iput(prevIno, prev);
    }
    this.list.splice(i, 1);
    const me = await c.itable.iget(ino);
    me.i_dtime = 0;
  }

  /**
   * The orphan list left by a crash (or a kernel mount): inodes unlinked
   * while open are freed, inodes truncated mid-way are cut to i_size.
   */
  async processOrphans(): Promise<void> {
    const c = this.c;
    let ino = c.sb.s_last_orphan;
    const seen = new Set<number>();
    while (ino !== 0) {
      c.itable.checkIno(ino);
      if (seen.has(ino)) throw new CorruptError(`orphan list loops at inode ${ino}`);
      seen.add(ino);
      const inode = await c.itable.iget(ino);
      const next = inode.i_dtime;
      if (inode.i_links_count === 0) {
        await this.destroy(ino, inode);
      } else {
        if ((inode.i_mode & S_IFMT) === S_IFREG && !c.data.usesExtents(inode)) {
          const freed = await truncateBlocks(c.io, inode, Math.ceil(inode.i_size / c.blockSize));
          c.addBlocks(inode, -freed);
        }
        inode.i_dtime = 0;
        await c.itable.iput(ino, inode);
      }
      ino = next;
    }
    c.sb.s_last_orphan = 0;
  }

  /** Drops one link; frees the inode (or parks it on the orphan list while referenced). */
  async dropLink(ino: number, inode: Inode): Promise<void> {
    if (inode.i_links_count > 0) inode.i_links_count--;
    this.c.stamp(inode, { c: true });
    if (inode.i_links_count > 0) {
      await this.c.itable.iput(ino, inode);
      return;
    }
    if (this.c.refs.has(ino)) await this.add(ino, inode);
    else await this.destroy(ino, inode);
  }

  /** An emptied directory loses both its links (its name and its "."). */
  async killDir(ino: number, inode: Inode): Promise<void> {
    inode.i_links_count = 0;
    this.c.stamp(inode, { c: true });
    if (this.c.refs.has(ino)) await this.add(ino, inode);
    else await this.destroy(ino, inode);
  }

  /** The last reference to an unlinked (orphaned) inode went: free it. On the queue. */
  async release(ino: number): Promise<void> {
    if (this.c.refs.has(ino) || !this.list.includes(ino)) return;
    const inode = await this.c.itable.iget(ino);
    if (inode.i_links_count !== 0) return;
    await this.remove(ino);
    await this.destroy(ino, inode);
  }

  /** At close: every orphan still referenced is freed now. */
  async releaseAll(): Promise<void> {
    for (const ino of [...this.list]) {
      await this.remove(ino);
      await this.destroy(ino, await this.c.itable.iget(ino));
    }
  }
}
