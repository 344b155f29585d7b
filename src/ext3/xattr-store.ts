/**
 * Xattr storage (the kernel's fs/ext2/xattr.c with ext3's in-inode part):
 * entries live in the inode body after i_extra_isize and in one shared
 * xattr block (i_file_acl), copied on write when its refcount says it is
 * shared. POSIX ACLs are stored in the on-disk ACL format (acl.ts).
 */
import type { InodeId } from '../engine.js';
import { CorruptError, withErrno } from '../errors.js';
import { aclChmodDisk, aclDiskToXattr, aclModeOf, aclXattrToDisk } from './acl.js';
import type { Ext3Context } from './context.js';
import { isDirMode } from './directory.js';
import type { Inode } from './inode.js';
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

export class XattrStore {
  constructor(private readonly c: Ext3Context) {}

  private async xattrBlockEntries(inode: Inode): Promise<{ refcount: number; entries: XattrEntry[] }> {
    if (inode.i_file_acl === 0) return { refcount: 0, entries: [] };
    const b = inode.i_file_acl;
    if (b < this.c.sb.s_first_data_block || b >= this.c.sb.s_blocks_count) {
      throw new CorruptError(`xattr block ${b} outside the filesystem`);
    }
    return decodeXattrBlock(await this.c.cache.read(b));
  }

  async allXattrs(inode: Inode): Promise<{ inInode: XattrEntry[]; inBlock: XattrEntry[] }> {
    const inInode = decodeInodeXattrs(inode.raw, inode.i_extra_isize);
    const inBlock = (await this.xattrBlockEntries(inode)).entries;
    return { inInode, inBlock };
  }

  /** Releases this inode's reference to its xattr block. */
  async dropXattrBlock(inode: Inode): Promise<void> {
    const b = inode.i_file_acl;
    const { refcount } = await this.xattrBlockEntries(inode);
    if (refcount <= 1) {
      await this.c.io.freeBlock(b, true);
    } else {
      const buf = await this.c.cache.write(b);
      buf.writeUInt32LE(refcount - 1, 4);
    }
    inode.i_file_acl = 0;
    this.c.addBlocks(inode, -1);
  }

  /**
   * Stores `list` for the inode: as many as fit in the inode body (those
   * already there first), the rest in an xattr block, copied on write when
   * shared. ENOSPC when they cannot fit.
   */
  async storeXattrs(ino: number, inode: Inode, list: XattrEntry[], wasInInode: Set<XattrEntry>): Promise<void> {
    const c = this.c;
    const cap = inodeXattrCapacity(c.inodeSize, inode.i_extra_isize);
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
    if (inBlock.length > 0 && !fitsXattrBlock(c.blockSize, inBlock)) throw withErrno('ENOSPC', 'xattrs do not fit');
    const old = inode.i_file_acl;
    const oldRef = old ? (await this.xattrBlockEntries(inode)).refcount : 0;
    if (inBlock.length > 0 && (old === 0 || oldRef > 1)) await c.tx.reserve(1);
    if (!encodeInodeXattrs(inode.raw, inode.i_extra_isize, inInode)) throw withErrno('ENOSPC', 'xattrs do not fit');
    if (inBlock.length === 0) {
      if (old !== 0) await this.dropXattrBlock(inode);
    } else {
      const img = encodeXattrBlock(c.blockSize, 1, inBlock)!;
      if (old !== 0 && oldRef <= 1) {
        img.copy(await c.cache.write(old));
      } else {
        if (old !== 0) await this.dropXattrBlock(inode);
        const nb = await c.alloc.allocBlock(c.alloc.goalForInode(ino));
        img.copy(c.cache.fresh(nb));
        inode.i_file_acl = nb;
        c.addBlocks(inode, 1);
      }
    }
    await c.itable.iput(ino, inode);
  }

  /** chmod with an access ACL present rewrites it to match (posix_acl_chmod). */
  async chmodAcl(id: number, inode: Inode): Promise<void> {
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

  async listxattr(id: InodeId): Promise<Buffer[]> {
    const inode = await this.c.itable.live(id);
    const { inInode, inBlock } = await this.allXattrs(inode);
    const out: Buffer[] = [];
    for (const e of [...inInode, ...inBlock]) {
      const n = fullXattrName(e.index, e.name);
      if (n !== null) out.push(n);
    }
    return out;
  }

  async getxattr(id: InodeId, name: Buffer): Promise<Buffer | null> {
    const inode = await this.c.itable.live(id);
    const key = splitXattrName(name);
    if (!key) return null;
    const { inInode, inBlock } = await this.allXattrs(inode);
    const e = [...inInode, ...inBlock].find((x) => x.index === key.index && x.name.equals(key.name));
    if (!e) return null;
    if (key.index === XATTR_INDEX_POSIX_ACL_ACCESS || key.index === XATTR_INDEX_POSIX_ACL_DEFAULT) {
      return aclDiskToXattr(e.value);
    }
    return Buffer.from(e.value);
  }

  /** setxattr() on the queue. */
  async setxattr(id: InodeId, name: Buffer, value: Buffer, flags?: 'create' | 'replace'): Promise<void> {
    const inode = await this.c.itable.live(id);
    const key = splitXattrName(name);
    if (!key) throw withErrno('EOPNOTSUPP', `xattr namespace of ${JSON.stringify(name.toString('latin1'))}`);
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
      this.c.stamp(inode, { c: true });
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
    this.c.stamp(inode, { c: true });
    await this.storeXattrs(id, inode, all, wasIn);
  }

  /** removexattr() on the queue. */
  async removexattr(id: InodeId, name: Buffer): Promise<void> {
    const inode = await this.c.itable.live(id);
    const key = splitXattrName(name);
    if (!key) throw withErrno('ENODATA');
    const { inInode, inBlock } = await this.allXattrs(inode);
    const all = [...inInode, ...inBlock];
    const at = all.findIndex((x) => x.index === key.index && x.name.equals(key.name));
    if (at < 0) throw withErrno('ENODATA');
    all.splice(at, 1);
    this.c.stamp(inode, { c: true });
    await this.storeXattrs(id, inode, all, new Set(inInode));
  }
}
