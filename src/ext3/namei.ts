/**
 * Names (the kernel's fs/ext2/namei.c): lookup, through the htree index when
 * the directory has one and is not loaded yet, else through the directory
 * index; and the namespace operations built from directory edits
 * (directory.ts), the inode table and the orphan list: create (mknod, mkdir,
 * symlink), link, unlink, rmdir, rename. The mutations run on the writer
 * queue (the façade puts them there).
 */
import type { InodeId, NewNode, RenameFlags } from '../engine.js';
import { devMajor, devMinor, fileTypeOf, S_IFCHR, S_IFDIR, S_IFLNK } from '../engine.js';
import { CorruptError, withErrno } from '../errors.js';
import type { Ext3Context } from './context.js';
import { decodeDirBlock, EXT2_NAME_LEN, encodeDotBlock, fileTypeToFt } from './dir.js';
import { nameKey } from './dir-index.js';
import { DOT, DOTDOT, EXT3_LINK_MAX, fileTypeOfInode, isDirMode } from './directory.js';
import { decodeDxNode, decodeDxRoot, dirHash, dxSearch } from './htree.js';
import type { Inode, Time } from './inode.js';
import { emptyInode, encodeDevice, EXT2_INDEX_FL, EXT2_ROOT_INO } from './inode.js';
import { hasIncompat, INCOMPAT, unsignedHash } from './superblock.js';
import { encodeFastSymlink, FAST_SYMLINK_MAX } from './symlink.js';

export class Namei {
  constructor(private readonly c: Ext3Context) {}

  async lookup(dir: InodeId, name: Buffer): Promise<InodeId | null> {
    const c = this.c;
    const inode = await c.itable.live(dir);
    if (!isDirMode(inode.i_mode)) throw withErrno('ENOTDIR');
    if (name.length > EXT2_NAME_LEN) throw withErrno('ENAMETOOLONG');
    if (!c.dirs.has(dir) && inode.i_flags & EXT2_INDEX_FL && inode.i_size > c.blockSize) {
      const found = await this.htreeLookup(dir, inode, name);
      if (found !== undefined) {
        c.stats.htreeLookups++;
        return found;
      }
      c.stats.htreeFallbacks++;
    }
    const idx = await c.dirs.index(dir, inode);
    return idx.entries.get(nameKey(name))?.ino ?? null;
  }

  /**
   * Lookup through an htree index without loading the whole directory:
   * the inode number, null (not there), or undefined when the index cannot
   * answer (damaged, unknown hash, a collision chain crossing index nodes):
   * then the caller reads the directory linearly, which is always valid.
   */
  private async htreeLookup(dir: number, inode: Inode, name: Buffer): Promise<number | null | undefined> {
    const c = this.c;
    try {
      const nblocks = Math.ceil(inode.i_size / c.blockSize);
      const blockOf = async (lb: number) => {
        if (lb >= nblocks) throw new CorruptError(`directory ${dir} index points past its end`);
        const pbn = await c.data.mapOne(inode, lb);
        if (pbn === 0) throw new CorruptError(`directory ${dir} index points to a hole`);
        return c.cache.read(pbn);
      };
      const root = decodeDxRoot(await blockOf(0));
      let version = root.hashVersion;
      if (version <= 2 && unsignedHash(c.sb)) version += 3;
      const hash = dirHash(version, name, c.sb.s_hash_seed);
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
            c.itable.checkIno(d.inode);
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

  private checkName(name: Buffer): void {
    if (name.length === 0) throw withErrno('ENOENT', 'empty name');
    if (name.length > EXT2_NAME_LEN) throw withErrno('ENAMETOOLONG');
    let bad = name.equals(DOT) || name.equals(DOTDOT);
    for (let i = 0; i < name.length && !bad; i++) bad = name[i] === 0x2f || name[i] === 0;
    if (bad) throw withErrno('EINVAL', `bad name ${JSON.stringify(name.toString('latin1'))}`);
  }

  async mknod(dir: InodeId, name: Buffer, node: NewNode): Promise<InodeId> {
    const t = fileTypeOf(node.mode);
    if (t === null || t === 'd' || t === 'l') throw withErrno('EINVAL', 'mknod of a directory or symlink');
    return this.create(dir, name, node.mode, node.uid, node.gid, 0, async (_ino, inode) => {
      if (t === 'c' || t === 'b') inode.i_block = encodeDevice(devMajor(node.rdev ?? 0), devMinor(node.rdev ?? 0));
    });
  }

  async mkdir(dir: InodeId, name: Buffer, node: NewNode): Promise<InodeId> {
    const c = this.c;
    const parent = await c.itable.live(dir);
    if (isDirMode(parent.i_mode) && !c.dirs.canAddSubdir(parent)) throw withErrno('EMLINK');
    const mode = S_IFDIR | (node.mode & 0o7777);
    const ino = await this.create(dir, name, mode, node.uid, node.gid, 1, async (newIno, inode) => {
      const pbn = await c.alloc.allocBlock(c.alloc.goalForInode(newIno));
      encodeDotBlock(c.blockSize, newIno, dir, hasIncompat(c.sb, INCOMPAT.filetype)).copy(c.cache.fresh(pbn));
      inode.i_block[0] = pbn;
      inode.i_size = c.blockSize;
      inode.i_links_count = 2;
      c.addBlocks(inode, 1);
    });
    const p = await c.itable.iget(dir);
    await c.dirs.linkDir(dir, p, +1);
    return ino;
  }

  async symlink(dir: InodeId, name: Buffer, target: Buffer, owner: { uid: number; gid: number }): Promise<InodeId> {
    const c = this.c;
    if (target.length === 0) throw withErrno('ENOENT', 'empty symlink target');
    if (target.length >= c.blockSize) throw withErrno('ENAMETOOLONG');
    const slow = target.length > FAST_SYMLINK_MAX;
    return this.create(dir, name, S_IFLNK | 0o777, owner.uid, owner.gid, slow ? 1 : 0, async (newIno, inode) => {
      inode.i_size = target.length;
      if (!slow) {
        inode.i_block = encodeFastSymlink(target);
        return;
      }
      const pbn = await c.alloc.allocBlock(c.alloc.goalForInode(newIno));
      const buf = c.cache.fresh(pbn);
      target.copy(buf);
      inode.i_block[0] = pbn;
      c.addBlocks(inode, 1);
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
    const c = this.c;
    const parent = await c.itable.live(dir);
    if (!isDirMode(parent.i_mode)) throw withErrno('ENOTDIR');
    this.checkName(name);
    const idx = await c.dirs.index(dir, parent);
    if (idx.entries.has(nameKey(name))) throw withErrno('EEXIST');
    const type = fileTypeOf(mode);
    if (!type) throw withErrno('EINVAL', 'bad mode');
    await c.tx.reserve((await c.dirs.insertCost(dir, parent, name.length)) + extraBlocks, 1);
    const ino = await c.alloc.allocInode(dir, type === 'd');
    const t = c.now();
    const inode = this.freshInode(ino, mode, { uid, gid }, t);
    await init(ino, inode);
    await c.itable.iput(ino, inode);
    await c.dirs.insertEntry(dir, parent, name, ino, fileTypeToFt(type));
    c.stamp(parent, { m: true, c: true }, t);
    await c.itable.iput(dir, parent);
    return ino;
  }

  async link(id: InodeId, dir: InodeId, name: Buffer): Promise<void> {
    const c = this.c;
    const inode = await c.itable.live(id);
    if (isDirMode(inode.i_mode)) throw withErrno('EPERM', 'hard link to a directory');
    const parent = await c.itable.live(dir);
    if (!isDirMode(parent.i_mode)) throw withErrno('ENOTDIR');
    this.checkName(name);
    const idx = await c.dirs.index(dir, parent);
    if (idx.entries.has(nameKey(name))) throw withErrno('EEXIST');
    if (inode.i_links_count >= EXT3_LINK_MAX) throw withErrno('EMLINK');
    if (inode.i_links_count === 0) throw withErrno('ENOENT', 'linking an unlinked inode');
    await c.tx.reserve(await c.dirs.insertCost(dir, parent, name.length));
    const t = c.now();
    await c.dirs.insertEntry(dir, parent, name, id, fileTypeToFt(fileTypeOfInode(inode)));
    inode.i_links_count++;
    c.stamp(inode, { c: true }, t);
    await c.itable.iput(id, inode);
    c.stamp(parent, { m: true, c: true }, t);
    await c.itable.iput(dir, parent);
  }

  /** Directory `dir` (ENOTDIR if it is none), its entry `name` (ENOENT) and that entry's inode. */
  private async entryOf(dir: InodeId, name: Buffer) {
    const c = this.c;
    const parent = await c.itable.live(dir);
    if (!isDirMode(parent.i_mode)) throw withErrno('ENOTDIR');
    const idx = await c.dirs.index(dir, parent);
    const slot = idx.entries.get(nameKey(name));
    if (!slot) throw withErrno('ENOENT');
    return { parent, slot, inode: await c.itable.iget(slot.ino) };
  }

  async unlink(dir: InodeId, name: Buffer): Promise<void> {
    const c = this.c;
    const { parent, slot, inode } = await this.entryOf(dir, name);
    if (isDirMode(inode.i_mode)) throw withErrno('EISDIR');
    const t = c.now();
    await c.dirs.removeEntry(dir, parent, name);
    c.stamp(parent, { m: true, c: true }, t);
    await c.itable.iput(dir, parent);
    await c.orphans.dropLink(slot.ino, inode);
  }

  async rmdir(dir: InodeId, name: Buffer): Promise<void> {
    const c = this.c;
    const { parent, slot, inode } = await this.entryOf(dir, name);
    if (!isDirMode(inode.i_mode)) throw withErrno('ENOTDIR');
    const child = await c.dirs.index(slot.ino, inode);
    if (child.entries.size > 0) throw withErrno('ENOTEMPTY');
    const t = c.now();
    await c.dirs.removeEntry(dir, parent, name);
    c.stamp(parent, { m: true, c: true }, t);
    await c.dirs.linkDir(dir, parent, -1);
    await c.orphans.killDir(slot.ino, inode);
  }

  /**
   * rename(2) and renameat2(2)'s flags, checked in the kernel's order
   * (do_renameat2, vfs_rename, ext4_rename): flag combinations, the source,
   * noreplace, exchange's target, moving a directory under itself, then the
   * types. One call, one transaction: the whiteout (a char 0/0 inode put in
   * the source's entry) is made in the same step as the move.
   */
  async rename(oldDir: InodeId, oldName: Buffer, newDir: InodeId, newName: Buffer, flags: RenameFlags): Promise<void> {
    const c = this.c;
    if (flags.exchange && (flags.noreplace || flags.whiteout)) throw withErrno('EINVAL', 'exchange with noreplace or whiteout');
    const op = await c.itable.live(oldDir);
    const np = await c.itable.live(newDir);
    if (!isDirMode(op.i_mode) || !isDirMode(np.i_mode)) throw withErrno('ENOTDIR');
    this.checkName(newName);
    const oidx = await c.dirs.index(oldDir, op);
    const src = oidx.entries.get(nameKey(oldName));
    if (!src) throw withErrno('ENOENT');
    // The entry slots are rewritten below, so keep the inode numbers now.
    const srcIno = src.ino;
    const srcInode = await c.itable.iget(srcIno);
    const srcIsDir = isDirMode(srcInode.i_mode);
    const nidx = await c.dirs.index(newDir, np);
    const dst = nidx.entries.get(nameKey(newName));
    const dstIno = dst ? dst.ino : 0;
    if (flags.noreplace && dst) throw withErrno('EEXIST');
    if (flags.exchange && !dst) throw withErrno('ENOENT');
    if (dst && dstIno === srcIno && !flags.exchange) return;
    const dstInode = dst ? await c.itable.iget(dstIno) : null;
    const dstIsDir = dstInode !== null && isDirMode(dstInode.i_mode);
    if (srcIsDir) await this.checkNotUnder(srcIno, newDir);
    if (flags.exchange && dstIsDir) await this.checkNotUnder(dstIno, oldDir);
    if (dst && dstIno === srcIno) return;
    if (flags.exchange) {
      await this.exchange(oldDir, op, oldName, srcIno, srcInode, newDir, np, newName, dstIno, dstInode!);
      return;
    }
    if (dstInode) {
      if (srcIsDir && !dstIsDir) throw withErrno('ENOTDIR');
      if (!srcIsDir && dstIsDir) throw withErrno('EISDIR');
      if (dstIsDir && (await c.dirs.index(dstIno, dstInode)).entries.size > 0) throw withErrno('ENOTEMPTY');
      if (flags.whiteout) await c.tx.reserve(0, 1);
    } else {
      if (srcIsDir && oldDir !== newDir && !c.dirs.canAddSubdir(np)) throw withErrno('EMLINK');
      await c.tx.reserve(await c.dirs.insertCost(newDir, np, newName.length), flags.whiteout ? 1 : 0);
    }
    const t = c.now();
    const ft = fileTypeToFt(fileTypeOfInode(srcInode));
    if (dst) await c.dirs.retargetEntry(newDir, np, newName, srcIno, ft);
    else await c.dirs.insertEntry(newDir, np, newName, srcIno, ft);
    if (flags.whiteout) {
      const w = await this.newWhiteout(oldDir, flags.whiteout, t);
      await c.dirs.retargetEntry(oldDir, op, oldName, w, fileTypeToFt('c'));
    } else {
      await c.dirs.removeEntry(oldDir, op, oldName);
    }
    c.stamp(srcInode, { c: true }, t);
    await c.itable.iput(srcIno, srcInode);
    c.stamp(op, { m: true, c: true }, t);
    c.stamp(np, { m: true, c: true }, t);
    await c.itable.iput(oldDir, op);
    if (newDir !== oldDir) await c.itable.iput(newDir, np);
    if (srcIsDir && oldDir !== newDir) {
      await c.dirs.setDotDot(srcIno, srcInode, newDir);
      await c.dirs.linkDir(oldDir, op, -1);
      if (!dstIsDir) await c.dirs.linkDir(newDir, np, +1);
    }
    if (dstInode) {
      if (dstIsDir) {
        if (oldDir === newDir) await c.dirs.linkDir(newDir, np, -1);
        await c.orphans.killDir(dstIno, dstInode);
      } else {
        await c.orphans.dropLink(dstIno, dstInode);
      }
    }
  }

  /** EINVAL when directory `ino` is `dir` or one of its ancestors (a move under itself). */
  private async checkNotUnder(ino: number, dir: number): Promise<void> {
    const c = this.c;
    let cur = dir;
    for (let hops = 0; cur !== EXT2_ROOT_INO; hops++) {
      if (cur === ino) throw withErrno('EINVAL', 'moving a directory under itself');
      if (hops > c.sb.s_inodes_count) throw new CorruptError('directory parent chain loops');
      cur = await c.dirs.parentOf(cur, await c.itable.iget(cur));
    }
    if (ino === dir) throw withErrno('EINVAL', 'moving a directory under itself');
  }

  /** RENAME_EXCHANGE: both entries swap inodes; '..' and the parents' link counts follow directories. */
  private async exchange(
    oldDir: number,
    op: Inode,
    oldName: Buffer,
    srcIno: number,
    srcInode: Inode,
    newDir: number,
    np: Inode,
    newName: Buffer,
    dstIno: number,
    dstInode: Inode,
  ): Promise<void> {
    const c = this.c;
    const srcIsDir = isDirMode(srcInode.i_mode);
    const dstIsDir = isDirMode(dstInode.i_mode);
    if (oldDir !== newDir) {
      if (srcIsDir && !dstIsDir && !c.dirs.canAddSubdir(np)) throw withErrno('EMLINK');
      if (dstIsDir && !srcIsDir && !c.dirs.canAddSubdir(op)) throw withErrno('EMLINK');
    }
    const t = c.now();
    await c.dirs.retargetEntry(oldDir, op, oldName, dstIno, fileTypeToFt(fileTypeOfInode(dstInode)));
    await c.dirs.retargetEntry(newDir, np, newName, srcIno, fileTypeToFt(fileTypeOfInode(srcInode)));
    c.stamp(srcInode, { c: true }, t);
    c.stamp(dstInode, { c: true }, t);
    await c.itable.iput(srcIno, srcInode);
    await c.itable.iput(dstIno, dstInode);
    c.stamp(op, { m: true, c: true }, t);
    c.stamp(np, { m: true, c: true }, t);
    await c.itable.iput(oldDir, op);
    if (newDir !== oldDir) await c.itable.iput(newDir, np);
    if (oldDir === newDir) return;
    if (srcIsDir) await c.dirs.setDotDot(srcIno, srcInode, newDir);
    if (dstIsDir) await c.dirs.setDotDot(dstIno, dstInode, oldDir);
    if (srcIsDir && !dstIsDir) {
      await c.dirs.linkDir(oldDir, op, -1);
      await c.dirs.linkDir(newDir, np, +1);
    } else if (dstIsDir && !srcIsDir) {
      await c.dirs.linkDir(newDir, np, -1);
      await c.dirs.linkDir(oldDir, op, +1);
    }
  }

  /** A whiteout inode (char 0/0, mode 0, the kernel's WHITEOUT_DEV/WHITEOUT_MODE) near `dir`; reserved by the caller. */
  private async newWhiteout(dir: number, owner: { uid: number; gid: number }, t: Time): Promise<number> {
    const c = this.c;
    const ino = await c.alloc.allocInode(dir, false);
    const inode = this.freshInode(ino, S_IFCHR, owner, t);
    inode.i_block = encodeDevice(0, 0);
    await c.itable.iput(ino, inode);
    return ino;
  }

  /** A new in-memory inode for the just-allocated number `ino`: one link, times `t`, a random generation. */
  private freshInode(ino: number, mode: number, owner: { uid: number; gid: number }, t: Time): Inode {
    const c = this.c;
    const inode = emptyInode(c.inodeSize, c.inodeSize > 128 ? Math.max(32, c.sb.s_want_extra_isize) : 0);
    inode.i_mode = mode;
    inode.i_uid = owner.uid >>> 0;
    inode.i_gid = owner.gid >>> 0;
    inode.i_links_count = 1;
    inode.i_atime = inode.i_mtime = inode.i_ctime = inode.i_crtime = t;
    inode.i_generation = (Math.random() * 0x100000000) >>> 0;
    // A reused inode number must not keep a stale cached index.
    c.dirs.forget(ino);
    return inode;
  }
}
