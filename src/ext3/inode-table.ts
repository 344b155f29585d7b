/**
 * The inode table (the kernel's ext2_iget / ext2_write_inode): decoded inodes
 * kept in an LRU, read with read-ahead over the inode-table blocks, and
 * changed ones encoded back into their (dirty) table blocks once, at commit
 * or when the cache lets them go, however often they change before.
 */
import { LRUCache } from 'lru-cache';
import type { InodeId } from '../engine.js';
import { CorruptError, InternalError, withErrno } from '../errors.js';
import type { Ext3Context } from './context.js';
import { inodeGroup, inodeLocation, inodeTableBlocks } from './geometry.js';
import type { Inode } from './inode.js';
import { decodeInode, EXT4_EXTENTS_FL, encodeInode, encodeInodeInto } from './inode.js';
import { maxLogicalBlocks } from './block-map.js';
import { S_IFDIR, S_IFMT, S_IFREG } from '../engine.js';

/** Inode-table blocks read at once on a miss. */
const INODE_READAHEAD = 32;
/** Decoded inodes kept in memory (their blocks remain cached separately). */
const INODE_CACHE = 65536;

export class InodeTable {
  /** Decoded inodes; a changed one is written back into its block when it leaves. */
  // maxSize with unit sizes, not `max`: lru-cache preallocates `max`-sized
  // arrays, which cost ~11 ms on every open.
  private readonly inodes = new LRUCache<number, Inode>({
    maxSize: INODE_CACHE,
    sizeCalculation: () => 1,
    dispose: (inode, ino) => this.writeBack(ino, inode),
  });
  /** Inodes changed since the last commit and not yet encoded into their blocks. */
  private readonly dirty = new Map<number, Inode>();
  private readonly tableBlocks: number;

  constructor(private readonly c: Ext3Context) {
    this.tableBlocks = inodeTableBlocks(c.sb);
  }

  checkIno(ino: number): void {
    if (!Number.isSafeInteger(ino) || ino < 1 || ino > this.c.sb.s_inodes_count) {
      throw new CorruptError(`inode number ${ino} outside 1..${this.c.sb.s_inodes_count}`);
    }
  }

  private location(ino: number): { block: number; off: number } {
    return inodeLocation(this.c.sb, this.c.groups[inodeGroup(this.c.sb, ino)]!.bg_inode_table, ino);
  }

  /**
   * A file or directory whose i_size lies beyond what its block map (or
   * extent tree) can address is corrupt the moment it is read: nothing
   * downstream (a manifest hashing the holes) has to find out the slow way.
   */
  private checkSize(ino: number, inode: Inode): void {
    const type = inode.i_mode & S_IFMT;
    if (type !== S_IFREG && type !== S_IFDIR) return;
    const extents = (inode.i_flags & EXT4_EXTENTS_FL) !== 0;
    const limit = (extents ? 0x100000000 : maxLogicalBlocks(this.c.blockSize / 4)) * this.c.blockSize;
    if (inode.i_size > limit) {
      throw new CorruptError(
        `inode ${ino} has i_size ${inode.i_size}, beyond the ${limit} bytes its ${extents ? 'extent tree' : 'block map'} can address`,
      );
    }
  }

  async iget(ino: number): Promise<Inode> {
    // LRU order: an inode in use by the running operation is never the one evicted,
    // so one operation never ends up with two copies of the same inode.
    const hit = this.inodes.get(ino);
    if (hit) return hit;
    this.checkIno(ino);
    const { block, off } = this.location(ino);
    await this.prefetch(ino, block);
    const buf = await this.c.cache.read(block);
    const again = this.inodes.get(ino);
    if (again) return again;
    const inode = decodeInode(buf.subarray(off, off + this.c.inodeSize), this.c.inodeSize);
    this.checkSize(ino, inode);
    this.inodes.set(ino, inode);
    return inode;
  }

  /** Starts reading the inode-table blocks around `ino` (not awaited; iget/iput read them anyway). */
  warm(ino: number): void {
    if (!Number.isSafeInteger(ino) || ino < 1 || ino > this.c.sb.s_inodes_count) return;
    this.prefetch(ino, this.location(ino).block).catch(() => undefined);
  }

  private async prefetch(ino: number, block: number): Promise<void> {
    if (this.c.cache.has(block)) return;
    const tableEnd = this.c.groups[inodeGroup(this.c.sb, ino)]!.bg_inode_table + this.tableBlocks;
    await this.c.cache.prefetch(block, Math.min(INODE_READAHEAD, tableEnd - block));
  }

  /** Writes the inode into its (dirty) inode-table block. */
  async iput(ino: number, inode: Inode): Promise<void> {
    const { block } = this.location(ino);
    // The table block joins the transaction now; the inode is encoded into it once, at
    // commit (or when the inode cache lets it go), however often it changes before.
    if (!this.c.cache.dirty.has(block)) {
      await this.prefetch(ino, block);
      await this.c.cache.write(block);
    }
    if (inode.raw.length !== this.c.inodeSize) inode.raw = encodeInode(inode, this.c.inodeSize);
    if (this.inodes.peek(ino) !== inode) this.inodes.set(ino, inode);
    this.dirty.set(ino, inode);
  }

  /** Drops a freed inode's decoded copy (after its last iput). */
  forget(ino: number): void {
    this.inodes.delete(ino);
  }

  /** Encodes a changed inode into its table block (dirty since its iput). */
  private writeBack(ino: number, inode: Inode): void {
    if (this.dirty.get(ino) !== inode) return;
    this.dirty.delete(ino);
    const { block, off } = this.location(ino);
    const buf = this.c.cache.dirty.get(block);
    if (!buf) throw new InternalError(`inode ${ino} changed but its table block left the transaction`);
    encodeInodeInto(inode, inode.raw).copy(buf, off);
  }

  /** Encodes every changed inode; before each commit. */
  writeBackAll(): void {
    for (const [ino, inode] of [...this.dirty]) this.writeBack(ino, inode);
  }

  /** The id as a user passed it: an in-use inode, else ENOENT. */
  async live(id: InodeId): Promise<Inode> {
    if (!Number.isSafeInteger(id) || id < 1 || id > this.c.sb.s_inodes_count) throw withErrno('ENOENT', `inode ${id}`);
    const inode = await this.iget(id);
    if (!this.isLive(id, inode)) throw withErrno('ENOENT', `inode ${id}`);
    return inode;
  }

  /** What live(id) resolves to when the inode is decoded in memory already; undefined otherwise (and where live throws). */
  liveNow(id: InodeId): Inode | undefined {
    if (!Number.isSafeInteger(id) || id < 1 || id > this.c.sb.s_inodes_count) return undefined;
    const inode = this.inodes.get(id);
    return inode !== undefined && this.isLive(id, inode) ? inode : undefined;
  }

  private isLive(id: InodeId, inode: Inode): boolean {
    return inode.i_mode !== 0 && (inode.i_links_count !== 0 || this.c.refs.has(id));
  }
}
