/**
 * Directories (the kernel's fs/ext2/dir.c): the in-memory index of each
 * directory's entries and free space (dir-index.ts), loaded once per
 * directory and kept up to date by every edit, and the edits themselves:
 * inserting, removing and retargeting an entry, rewriting "..", and the
 * directory link counts (dir_nlink).
 */
import { LRUCache } from 'lru-cache';
import type { DirEntry, FileType, InodeId } from '../engine.js';
import { fileTypeOf, S_IFDIR, S_IFMT } from '../engine.js';
import { CorruptError, InternalError, withErrno } from '../errors.js';
import { indirectBlocksNeeded, mapBlock, setBlock } from './block-map.js';
import type { Ext3Context } from './context.js';
import {
  blockFreeSpace,
  decodeDirBlock,
  decodeDirent,
  direntSize,
  emptyDirBlock,
  encodeDirent,
  findInsertSlot,
  ftToFileType,
  recLenAt,
  scanFreeSpace,
  setRecLen,
} from './dir.js';
import type { DirSlot } from './dir-index.js';
import { DirIndex, nameKey } from './dir-index.js';
import type { Inode } from './inode.js';
import { EXT2_INDEX_FL } from './inode.js';
import { hasIncompat, hasRoCompat, INCOMPAT, RO_COMPAT } from './superblock.js';

/** i_links_count ceiling (EXT4_LINK_MAX, what the kernel's ext3 driver enforces). */
export const EXT3_LINK_MAX = 65000;
/** Directory indexes kept in memory at once (each is dropped and rebuilt at will). */
const DIR_INDEX_CACHE = 4096;

export const DOT = Buffer.from('.');
export const DOTDOT = Buffer.from('..');

export function isDirMode(mode: number): boolean {
  return (mode & S_IFMT) === S_IFDIR;
}

export function fileTypeOfInode(inode: Inode): FileType {
  const t = fileTypeOf(inode.i_mode);
  if (!t) throw new CorruptError(`inode has invalid mode 0${inode.i_mode.toString(8)}`);
  return t;
}

export class Directories {
  private readonly cache = new LRUCache<number, DirIndex>({ max: DIR_INDEX_CACHE });
  private readonly loads = new Map<number, Promise<DirIndex>>();

  constructor(private readonly c: Ext3Context) {}

  /** Whether directory `ino`'s index is loaded. */
  has(ino: number): boolean {
    return this.cache.has(ino);
  }

  /** Drops a (freed or reused) inode number's index. */
  forget(ino: number): void {
    this.cache.delete(ino);
  }

  /**
   * The directory's in-memory index, loaded once. Concurrent callers (a
   * reader beside the writer) share one load, so no stale copy can replace
   * an index a mutation has already updated.
   */
  index(ino: number, inode: Inode): Promise<DirIndex> {
    const hit = this.cache.get(ino);
    if (hit) return Promise.resolve(hit);
    if (!isDirMode(inode.i_mode)) return Promise.reject(withErrno('ENOTDIR'));
    const pending = this.loads.get(ino);
    if (pending) return pending;
    const p = this.load(ino, inode).finally(() => this.loads.delete(ino));
    this.loads.set(ino, p);
    return p;
  }

  private async load(ino: number, inode: Inode): Promise<DirIndex> {
    const c = this.c;
    const nblocks = Math.ceil(inode.i_size / c.blockSize);
    if (nblocks > c.sb.s_blocks_count) {
      throw new CorruptError(`directory inode ${ino} claims ${inode.i_size} bytes, more than the filesystem`);
    }
    c.stats.dirLoads++;
    const idx = new DirIndex(ino);
    const pblocks = await c.data.mapMany(inode, 0, nblocks);
    for (let l = 0; l < nblocks; l++) {
      const pbn = pblocks[l]!;
      idx.pblocks.push(pbn);
      if (pbn === 0) {
        idx.free.set(l, 0);
        continue;
      }
      const recs = decodeDirBlock(await c.cache.read(pbn));
      for (const d of recs) {
        if (d.inode === 0) continue;
        if (l === 0 && d.offset <= 12 && (d.name.equals(DOT) || d.name.equals(DOTDOT))) continue;
        c.itable.checkIno(d.inode);
        idx.entries.set(nameKey(d.name), { ino: d.inode, ft: d.file_type, lblk: l, off: d.offset });
      }
      idx.free.set(l, blockFreeSpace(recs));
    }
    this.cache.set(ino, idx);
    return idx;
  }

  /**
   * The entries of a directory except '.' and '..', in block order: one
   * frozen array per directory state, handed out again until an edit.
   */
  async list(dir: InodeId, inode: Inode): Promise<readonly DirEntry[]> {
    const c = this.c;
    const idx = await this.index(dir, inode);
    if (idx.listing) return idx.listing;
    const version = idx.version;
    const out: DirEntry[] = [];
    const typed = hasIncompat(c.sb, INCOMPAT.filetype);
    for (let l = 0; l < idx.pblocks.length; l++) {
      const pbn = idx.pblocks[l]!;
      if (pbn === 0) continue;
      for (const d of decodeDirBlock(await c.cache.read(pbn))) {
        if (d.inode === 0) continue;
        if (l === 0 && d.offset <= 12 && (d.name.equals(DOT) || d.name.equals(DOTDOT))) continue;
        let type = typed ? ftToFileType(d.file_type) : null;
        if (!type) type = fileTypeOfInode(await c.itable.iget(d.inode));
        out.push(Object.freeze({ name: Buffer.from(d.name), id: d.inode, type }));
      }
    }
    const listing = Object.freeze(out);
    if (idx.version === version && this.cache.get(dir) === idx) idx.listing = listing;
    return listing;
  }

  /** Blocks an insert of a `nameLen` name into the directory would allocate. */
  async insertCost(dir: number, inode: Inode, nameLen: number): Promise<number> {
    const idx = await this.index(dir, inode);
    if (idx.free.findFirst(direntSize(nameLen)) >= 0) return 0;
    if (this.c.data.usesExtents(inode)) throw withErrno('EROFS');
    return 1 + (await indirectBlocksNeeded(this.c.io, inode, idx.pblocks.length));
  }

  /** Clears the htree flag before the first change: the blocks stay valid as a linear directory. */
  private async unindex(dir: number, inode: Inode): Promise<void> {
    if (inode.i_flags & EXT2_INDEX_FL) {
      inode.i_flags &= ~EXT2_INDEX_FL;
      await this.c.itable.iput(dir, inode);
    }
  }

  async insertEntry(dir: number, inode: Inode, name: Buffer, ino: number, ft: number): Promise<void> {
    const c = this.c;
    const idx = await this.index(dir, inode);
    await this.unindex(dir, inode);
    const need = direntSize(name.length);
    let l = idx.free.findFirst(need);
    if (l < 0) {
      l = idx.pblocks.length;
      const goal = l > 0 ? idx.pblocks[l - 1]! + 1 : c.alloc.goalForInode(dir);
      const pbn = await c.alloc.allocBlock(goal);
      const buf = c.cache.fresh(pbn);
      emptyDirBlock(c.blockSize).copy(buf);
      const ind = await setBlock(c.io, inode, l, pbn);
      c.addBlocks(inode, 1 + ind);
      inode.i_size += c.blockSize;
      idx.pblocks.push(pbn);
      idx.free.set(l, c.blockSize);
    }
    const pbn = idx.pblocks[l]!;
    const buf = await c.cache.write(pbn);
    const ftStored = hasIncompat(c.sb, INCOMPAT.filetype) ? ft : 0;
    const slot = findInsertSlot(buf, need);
    if (!slot) throw new InternalError(`directory ${dir} block ${l} has less room than its index says`);
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
    idx.changed();
  }

  async removeEntry(dir: number, inode: Inode, name: Buffer): Promise<DirSlot> {
    const c = this.c;
    const idx = await this.index(dir, inode);
    const key = nameKey(name);
    const slot = idx.entries.get(key);
    if (!slot) throw withErrno('ENOENT');
    await this.unindex(dir, inode);
    const buf = await c.cache.write(idx.pblocks[slot.lblk]!);
    let prev: number | null = null;
    let off = 0;
    while (off < slot.off) {
      const len = recLenAt(buf, off);
      if (len < 8) throw new CorruptError(`directory ${dir}: bad rec_len at ${off}`);
      prev = off;
      off += len;
    }
    if (off !== slot.off) throw new InternalError(`directory ${dir}: entry not where its index says`);
    const me = decodeDirent(buf, off);
    if (prev === null) {
      buf.writeUInt32LE(0, off);
    } else {
      setRecLen(buf, prev, recLenAt(buf, prev) + me.rec_len);
    }
    idx.entries.delete(key);
    idx.free.set(slot.lblk, scanFreeSpace(buf));
    idx.changed();
    return slot;
  }

  /** Points an existing entry at another inode (rename over a target). */
  async retargetEntry(dir: number, inode: Inode, name: Buffer, ino: number, ft: number): Promise<void> {
    const c = this.c;
    const idx = await this.index(dir, inode);
    const slot = idx.entries.get(nameKey(name));
    if (!slot) throw withErrno('ENOENT');
    await this.unindex(dir, inode);
    const buf = await c.cache.write(idx.pblocks[slot.lblk]!);
    const ftStored = hasIncompat(c.sb, INCOMPAT.filetype) ? ft : 0;
    buf.writeUInt32LE(ino, slot.off);
    buf.writeUInt8(ftStored, slot.off + 7);
    slot.ino = ino;
    slot.ft = ftStored;
    idx.changed();
  }

  /** Rewrites a directory's ".." (second record of its first block). */
  async setDotDot(dir: number, inode: Inode, parent: number): Promise<void> {
    const c = this.c;
    if (c.data.usesExtents(inode)) throw withErrno('EROFS');
    const pbn = await mapBlock(c.io, inode, 0);
    if (pbn === 0) throw new CorruptError(`directory ${dir} has no first block`);
    const buf = await c.cache.write(pbn);
    const dot = decodeDirent(buf, 0);
    const dd = decodeDirent(buf, dot.rec_len);
    if (!dd.name.equals(DOTDOT)) throw new CorruptError(`directory ${dir} has no ".." entry`);
    buf.writeUInt32LE(parent, dd.offset);
  }

  async parentOf(dir: number, inode: Inode): Promise<number> {
    const c = this.c;
    const pbn = await c.data.mapOne(inode, 0);
    if (pbn === 0) throw new CorruptError(`directory ${dir} has no first block`);
    const buf = await c.cache.read(pbn);
    const dot = decodeDirent(buf, 0);
    const dd = decodeDirent(buf, dot.rec_len);
    if (!dd.name.equals(DOTDOT)) throw new CorruptError(`directory ${dir} has no ".." entry`);
    c.itable.checkIno(dd.inode);
    return dd.inode;
  }

  async linkDir(dirIno: number, dirInode: Inode, delta: number): Promise<void> {
    let n = dirInode.i_links_count;
    if (delta > 0) {
      if (n >= EXT3_LINK_MAX || n === 1) n = hasRoCompat(this.c.sb, RO_COMPAT.dir_nlink) ? 1 : n + delta;
      else n += delta;
    } else if (n > 1 && n <= EXT3_LINK_MAX) {
      n = Math.max(2, n + delta);
    }
    dirInode.i_links_count = n;
    await this.c.itable.iput(dirIno, dirInode);
  }

  canAddSubdir(dirInode: Inode): boolean {
    return hasRoCompat(this.c.sb, RO_COMPAT.dir_nlink) || dirInode.i_links_count < EXT3_LINK_MAX;
  }
}
