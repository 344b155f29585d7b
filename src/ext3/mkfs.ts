/**
 * mkfs in-process: the ext3 filesystem `mkfs.ext3 IMG` (e2fsprogs 1.47 with
 * Debian's /etc/mke2fs.conf) makes for the same size, block for block, with
 * no external tool.
 *
 * Geometry (mke2fs.c + lib/ext2fs/initialize.c):
 *   size type   < 3 MiB floppy, < 512 MiB small, < 4 TiB default, < 16 TiB big, else huge
 *   block size  1024 for floppy/small, else 4096
 *   inode_ratio floppy 8192, small 4096, default 16384, big 32768, huge 65536
 *   features    has_journal ext_attr resize_inode dir_index filetype sparse_super large_file
 *   inodes      256 bytes; inodes/group rounded up to fill whole inode-table blocks, multiple of 8
 *   reserved    5 % of the blocks for root
 *   last group  dropped when shorter than its metadata + 50 blocks
 *
 * Layout of each group (sparse_super: backups only in groups 0, 1, 3^n, 5^n, 7^n):
 *
 *   +------------+-----------+-------------------+--------+--------+-------------+-------------
 *   | superblock | GDT       | reserved GDT      | block  | inode  | inode table | data ...
 *   | (backup)   | (backup)  | (resize_inode)    | bitmap | bitmap |             |
 *   +------------+-----------+-------------------+--------+--------+-------------+-------------
 *    only in groups with a superblock backup
 *
 * Then, allocated first-fit from the start of group 0 in mke2fs's order:
 * root directory block, lost+found (16 KiB, at least 2 blocks), the resize
 * inode's double-indirect block, the journal (its indirect blocks in line
 * with its data, as ext2fs_bmap allocates them). Inodes 1-10 are reserved,
 * lost+found is 11.
 *
 * Resize inode (7): i_block[DIND] points to a block whose entry
 * (desc_blocks + i) % addr_per_block names the i-th primary reserved GDT
 * block; that block in turn lists the same reserved block in every backup
 * group (ext2fs_create_resize_inode). resize2fs and the kernel's online
 * resize grow the GDT into these blocks.
 *
 * The store must read as zeros (a new sparse or zero-filled file): only
 * blocks with content are written, so a sparse image stays sparse.
 */
import { randomBytes } from 'node:crypto';
import { UsageError, UnsupportedError } from '../errors.js';
import type { ByteStore } from '../io/byte-source.js';
import { encodeDirent, EXT2_FT_DIR, emptyDirBlock, encodeDotBlock, setRecLen } from './dir.js';
import { COMPAT, INCOMPAT, RO_COMPAT } from './features.js';
import { encodeGroupDesc, newGroupDesc, type GroupDesc } from './group-desc.js';
import { emptyInode, encodeInode, type Inode } from './inode.js';
import { encodeJournalSuperblock, newJournalSuperblock } from './journal/format.js';
import {
  EXT2_DYNAMIC_REV,
  EXT2_FLAGS_SIGNED_HASH,
  EXT2_FLAGS_UNSIGNED_HASH,
  EXT2_HASH_HALF_MD4,
  EXT2_SUPER_MAGIC,
  EXT2_VALID_FS,
  encodeSuperblock,
  groupHasSuper,
  type Superblock,
  SUPERBLOCK_OFFSET,
} from './superblock.js';

const MiB = 1024 * 1024;
const INODE_SIZE = 256;
/** sizeof(struct ext2_inode_large) - EXT2_GOOD_OLD_INODE_SIZE */
const EXTRA_ISIZE = 32;
const FIRST_INO = 11;
const ROOT_INO = 2;
const RESIZE_INO = 7;
const JOURNAL_INO = 8;
const LOST_FOUND_INO = 11;
/** s_default_mount_opts: EXT2_DEFM_XATTR_USER | EXT2_DEFM_ACL (mke2fs.conf default_mntopts). */
const DEFM_XATTR_USER_ACL = 0x0004 | 0x0008;
/** s_jnl_backup_type: EXT3_JNL_BACKUP_BLOCKS */
const JNL_BACKUP_BLOCKS = 1;
/** s_overhead_clusters (not in the superblock codec's model; kept through `raw`). */
const S_OVERHEAD_CLUSTERS = 0x248;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;

export type SizeType = 'floppy' | 'small' | 'default' | 'big' | 'huge';

/** mke2fs.conf [fs_types] as Debian ships it: block size and bytes-per-inode per size type. */
const SIZE_TYPES: Record<SizeType, { blockSize: number; inodeRatio: number }> = {
  floppy: { blockSize: 1024, inodeRatio: 8192 },
  small: { blockSize: 1024, inodeRatio: 4096 },
  default: { blockSize: 4096, inodeRatio: 16384 },
  big: { blockSize: 4096, inodeRatio: 32768 },
  huge: { blockSize: 4096, inodeRatio: 65536 },
};

export function sizeType(bytes: number): SizeType {
  if (bytes < 3 * MiB) return 'floppy';
  if (bytes < 512 * MiB) return 'small';
  if (bytes < 4 * 1024 * 1024 * MiB) return 'default';
  if (bytes < 16 * 1024 * 1024 * MiB) return 'big';
  return 'huge';
}

/** ext2fs_default_journal_size (lib/ext2fs/mkjournal.c), in blocks; -1 below 2048 blocks (no journal). */
export function defaultJournalBlocks(blocks: number): number {
  if (blocks < 2048) return -1;
  if (blocks < 32768) return 1024;
  if (blocks < 256 * 1024) return 4096;
  if (blocks < 512 * 1024) return 8192;
  if (blocks < 4096 * 1024) return 16384;
  if (blocks < 8192 * 1024) return 32768;
  if (blocks < 16384 * 1024) return 65536;
  if (blocks < 32768 * 1024) return 131072;
  return 262144;
}

export interface Geometry {
  blockSize: number;
  blocksCount: number;
  reservedBlocks: number;
  firstDataBlock: number;
  blocksPerGroup: number;
  groupCount: number;
  inodesPerGroup: number;
  inodesCount: number;
  inodeTableBlocks: number;
  descBlocks: number;
  reservedGdtBlocks: number;
  journalBlocks: number;
  sizeType: SizeType;
}

/** What mke2fs + ext2fs_initialize compute for an image of `bytes` bytes. */
export function planGeometry(bytes: number): Geometry {
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new UsageError(`bad filesystem size ${bytes}`);
  const type = sizeType(bytes);
  const { blockSize, inodeRatio } = SIZE_TYPES[type];
  const paramBlocks = Math.floor(bytes / blockSize);
  if (paramBlocks > 0xffffffff) {
    throw new UnsupportedError(`a ${bytes}-byte ext3 filesystem needs more than 2^32 blocks (the 64bit feature)`);
  }
  const paramReserved = Math.floor((5.0 * paramBlocks) / 100.0);
  const paramInodes = Math.floor((paramBlocks * blockSize) / inodeRatio);
  const firstDataBlock = blockSize === 1024 ? 1 : 0;
  const descPerBlock = blockSize / 32;
  const addrPerBlock = blockSize / 4;
  const inodesPerBlock = blockSize / INODE_SIZE;
  const maxInodesPerGroup = 65536 - inodesPerBlock;

  let blocksPerGroup = blockSize * 8;
  let blocksCount = paramBlocks;
  let reservedBlocks = paramReserved;
  // The retry loop of ext2fs_initialize: each pass either settles or shrinks
  // the filesystem (drops a short last group) or the group size; both are
  // bounded, so the loop ends.
  for (let pass = 0; pass < 100000; pass++) {
    const groupCount = Math.ceil((blocksCount - firstDataBlock) / blocksPerGroup);
    if (groupCount === 0) throw new UsageError(`${bytes} bytes is too small for an ext3 filesystem`);
    const descBlocks = Math.ceil(groupCount / descPerBlock);
    let inodesCount = paramInodes;
    if (inodesCount < FIRST_INO + 1) inodesCount = FIRST_INO + 1;
    let ipg = Math.ceil(inodesCount / groupCount);
    if (ipg > blockSize * 8) {
      if (blocksPerGroup >= 256) {
        blocksPerGroup -= 8;
        blocksCount = paramBlocks;
        continue;
      }
      throw new UsageError(`${bytes} bytes: too many inodes for an ext3 filesystem`);
    }
    if (ipg > maxInodesPerGroup) ipg = maxInodesPerGroup;
    let inodesPerGroup: number;
    let inodeTableBlocks: number;
    for (;;) {
      inodeTableBlocks = Math.ceil((ipg * INODE_SIZE) / blockSize);
      inodesPerGroup = Math.floor((inodeTableBlocks * blockSize) / INODE_SIZE);
      if (inodesPerGroup < 8) inodesPerGroup = 8;
      inodesPerGroup &= ~7;
      inodeTableBlocks = Math.ceil((inodesPerGroup * INODE_SIZE) / blockSize);
      if (inodesPerGroup * groupCount > 0xffffffff) {
        ipg--;
        continue;
      }
      break;
    }
    // calc_reserved_gdt_blocks: room to grow to 1024x the size or 2^32 blocks.
    let maxBlocks = 0xffffffff;
    if (blocksCount < Math.floor(maxBlocks / 1024)) maxBlocks = blocksCount * 1024;
    const rsvGroups = Math.ceil((maxBlocks - firstDataBlock) / blocksPerGroup);
    let reservedGdtBlocks = Math.ceil(rsvGroups / descPerBlock) - descBlocks;
    if (reservedGdtBlocks > addrPerBlock) reservedGdtBlocks = addrPerBlock;
    if (reservedGdtBlocks < 0) reservedGdtBlocks = 0;
    if (reservedGdtBlocks + descBlocks > Math.floor((blocksPerGroup * 3) / 4)) {
      throw new UnsupportedError(`a ${bytes}-byte filesystem would need meta_bg, which ext3 overlays do not use`);
    }
    const overheadFull = 3 + inodeTableBlocks + reservedGdtBlocks + descBlocks;
    if (overheadFull > blocksPerGroup) throw new UsageError(`${bytes} bytes: too many inodes per group`);
    // The last group must hold its own metadata plus 50 blocks, or it goes.
    let overhead = 2 + inodeTableBlocks;
    const sparseProbe = { s_feature_ro_compat: RO_COMPAT.sparse_super } as Superblock;
    if (groupHasSuper(sparseProbe, groupCount - 1)) overhead += 1 + descBlocks + reservedGdtBlocks;
    const rem = (blocksCount - firstDataBlock) % blocksPerGroup;
    if (groupCount === 1 && rem && rem < overhead) {
      throw new UsageError(`${bytes} bytes is too small for an ext3 filesystem`);
    }
    if (rem && rem < overhead + 50) {
      blocksCount -= rem;
      const ratio = (100.0 * paramReserved) / paramBlocks;
      reservedBlocks = Math.floor((ratio * blocksCount) / 100.0);
      continue;
    }
    const journalBlocks = defaultJournalBlocks(blocksCount);
    if (journalBlocks < 0) throw new UsageError(`${bytes} bytes is too small for an ext3 journal`);
    return {
      blockSize,
      blocksCount,
      reservedBlocks,
      firstDataBlock,
      blocksPerGroup,
      groupCount,
      inodesPerGroup,
      inodesCount: inodesPerGroup * groupCount,
      inodeTableBlocks,
      descBlocks,
      reservedGdtBlocks,
      journalBlocks,
      sizeType: type,
    };
  }
  throw new UsageError(`${bytes} bytes: no ext3 geometry found`);
}

/** Groups 1, 3, 5, 7, 9, 25, 27, 49, ... in increasing order (ext2fs_list_backups). */
export function backupGroups(groupCount: number): number[] {
  const out: number[] = [];
  if (groupCount > 1) out.push(1);
  const powers = [3, 5, 7];
  for (;;) {
    let min = Infinity;
    let which = -1;
    powers.forEach((p, i) => {
      if (p < min) {
        min = p;
        which = i;
      }
    });
    if (min >= groupCount) break;
    out.push(min);
    powers[which] = powers[which]! * [3, 5, 7][which]!;
  }
  return out;
}

export interface MkfsOptions {
  /** Filesystem size; default: the whole store. */
  bytes?: number;
  /** s_uuid (16 bytes); random by default. */
  uuid?: Buffer;
  /** s_hash_seed (16 bytes); random by default. */
  hashSeed?: Buffer;
  /** Seconds since the epoch for every timestamp; default: now. */
  now?: number;
  /** Root directory owner (mke2fs -E root_owner); default 0:0. */
  rootOwner?: { uid: number; gid: number };
}

export interface MkfsResult {
  geometry: Geometry;
  uuid: Buffer;
  freeBlocks: number;
  freeInodes: number;
  /** Filesystem blocks of the journal, in logical order. */
  journalMap: Uint32Array;
}

const POPCOUNT = (() => {
  const t = new Uint8Array(256);
  for (let i = 1; i < 256; i++) t[i] = (i & 1) + t[i >> 1]!;
  return t;
})();

/**
 * One bit per block (or inode) numbered from `base`, laid out as the on-disk
 * bitmaps are: a group's bits start on a byte boundary (blocks and inodes per
 * group are multiples of 8), so its bitmap block is a copy of a byte range.
 */
class BitSet {
  readonly bits: Uint8Array;
  constructor(
    readonly size: number,
    readonly base: number,
  ) {
    this.bits = new Uint8Array(Math.ceil(size / 8));
  }
  get(n: number): boolean {
    const i = n - this.base;
    return (this.bits[i >>> 3]! & (1 << (i & 7))) !== 0;
  }
  set(n: number): void {
    const i = n - this.base;
    this.bits[i >>> 3] = this.bits[i >>> 3]! | (1 << (i & 7));
  }
  /** Set bits among [from, from + count), `from - base` a multiple of 8. */
  count(from: number, count: number): number {
    const start = (from - this.base) >>> 3;
    const whole = count >>> 3;
    let n = 0;
    for (let k = start; k < start + whole; k++) n += POPCOUNT[this.bits[k]!]!;
    for (let b = from + whole * 8; b < from + count; b++) if (this.get(b)) n++;
    return n;
  }
  /** The bytes holding [from, from + count) (`from - base` a multiple of 8). */
  bytes(from: number, count: number): Uint8Array {
    const start = (from - this.base) >>> 3;
    return this.bits.subarray(start, start + Math.ceil(count / 8));
  }
}

/** A block image filled in little-endian u32 words (indirect blocks). */
function wordsBlock(bs: number, words: number[]): Buffer {
  const b = Buffer.alloc(bs);
  words.forEach((w, i) => b.writeUInt32LE(w >>> 0, 4 * i));
  return b;
}

/** C `char` signedness decides the directory hash flavour mke2fs records (x86: signed). */
function hashFlags(): number {
  return ['arm', 'arm64', 'ppc', 'ppc64', 's390', 's390x', 'riscv64'].includes(process.arch)
    ? EXT2_FLAGS_UNSIGNED_HASH
    : EXT2_FLAGS_SIGNED_HASH;
}

/**
 * Writes a fresh ext3 filesystem into `store` (which must read as zeros).
 * Nothing outside [0, geometry.blocksCount * blockSize) is touched.
 */
export async function mkfsExt3(store: ByteStore, options: MkfsOptions = {}): Promise<MkfsResult> {
  const bytes = options.bytes ?? store.size;
  if (bytes > store.size) throw new UsageError(`filesystem of ${bytes} bytes does not fit the ${store.size}-byte image`);
  const g = planGeometry(bytes);
  const bs = g.blockSize;
  const apb = bs / 4;
  const now = options.now ?? Math.floor(Date.now() / 1000);
  const uuid = options.uuid ?? uuidV4();
  const hashSeed = options.hashSeed ?? uuidV4();
  if (uuid.length !== 16 || hashSeed.length !== 16) throw new UsageError('UUID and hash seed must be 16 bytes');

  const used = new BitSet(g.blocksCount - g.firstDataBlock, g.firstDataBlock);
  const groupStart = (grp: number) => g.firstDataBlock + grp * g.blocksPerGroup;
  const groupEnd = (grp: number) => Math.min(groupStart(grp) + g.blocksPerGroup, g.blocksCount);
  const sbProbe = { s_feature_ro_compat: RO_COMPAT.sparse_super } as Superblock;
  const hasSuper = (grp: number) => groupHasSuper(sbProbe, grp);
  const descs: GroupDesc[] = [];
  for (let grp = 0; grp < g.groupCount; grp++) {
    let b = groupStart(grp);
    if (hasSuper(grp)) {
      for (let i = 0; i < 1 + g.descBlocks + g.reservedGdtBlocks; i++) used.set(b + i);
      b += 1 + g.descBlocks + g.reservedGdtBlocks;
    }
    const bb = b;
    const ib = b + 1;
    const it = b + 2;
    for (let i = bb; i < it + g.inodeTableBlocks; i++) used.set(i);
    descs.push(newGroupDesc(bb, ib, it, 0, 0));
  }
  // s_overhead_clusters as mke2fs records it: everything in use before the
  // root directory is made, plus the journal's data blocks.
  const overhead = g.firstDataBlock + used.count(g.firstDataBlock, g.blocksCount - g.firstDataBlock) + g.journalBlocks;

  /** First free block at or after `goal`, wrapping to the first data block (ext2fs_new_block2). */
  const alloc = (goal: number): number => {
    let b = goal < g.firstDataBlock || goal >= g.blocksCount ? g.firstDataBlock : goal;
    for (let n = 0; n < g.blocksCount; n++) {
      if (!used.get(b)) {
        used.set(b);
        return b;
      }
      b++;
      if (b >= g.blocksCount) b = g.firstDataBlock;
    }
    throw new UsageError(`filesystem of ${bytes} bytes is too small for its own metadata`);
  };

  const inodesUsed = new BitSet(g.inodesCount, 1);
  for (let ino = 1; ino < FIRST_INO; ino++) inodesUsed.set(ino);
  const inodes = new Map<number, Buffer>();
  const blocks = new Map<number, Buffer>();

  const newInode = (mode: number, uid: number, gid: number, links: number): Inode => {
    const ino = emptyInode(INODE_SIZE, EXTRA_ISIZE);
    ino.i_mode = mode;
    ino.i_uid = uid;
    ino.i_gid = gid;
    ino.i_links_count = links;
    const t = { sec: now, nsec: 0 };
    ino.i_atime = t;
    ino.i_ctime = t;
    ino.i_mtime = t;
    ino.i_crtime = t;
    return ino;
  };

  // Root directory, then lost+found (at least 16 KiB and 2 blocks, mke2fs
  // create_lost_and_found); ext2fs_mkdir takes the first free block of the
  // inode's group, ext2fs_expand_dir the blocks after it.
  const owner = options.rootOwner ?? { uid: 0, gid: 0 };
  const root = newInode(S_IFDIR | 0o755, owner.uid, owner.gid, 3);
  const rootBlock = alloc(groupStart(0));
  const rootImage = encodeDotBlock(bs, ROOT_INO, ROOT_INO, true);
  setRecLen(rootImage, 12, 12);
  encodeDirent(rootImage, 24, {
    inode: LOST_FOUND_INO,
    rec_len: bs - 24,
    file_type: EXT2_FT_DIR,
    name: Buffer.from('lost+found'),
  });
  blocks.set(rootBlock, rootImage);
  root.i_block[0] = rootBlock;
  root.i_size = bs;
  root.i_blocks = bs / 512;
  inodes.set(ROOT_INO, encodeInode(root));

  let lpfBlocks = 1;
  for (let size = bs; size < 16 * 1024 || size < 2 * bs; size += bs) lpfBlocks++;
  // mke2fs expands at most EXT2_NDIR_BLOCKS - 1 times: 12 blocks with 1 KiB blocks.
  if (lpfBlocks > 12) lpfBlocks = 12;
  const lpf = newInode(S_IFDIR | 0o700, 0, 0, 2);
  inodesUsed.set(LOST_FOUND_INO);
  for (let i = 0; i < lpfBlocks; i++) {
    const b = alloc(i === 0 ? groupStart(0) : lpf.i_block[i - 1]! + 1);
    lpf.i_block[i] = b;
    blocks.set(b, i === 0 ? encodeDotBlock(bs, LOST_FOUND_INO, ROOT_INO, true) : emptyDirBlock(bs));
  }
  lpf.i_size = lpfBlocks * bs;
  lpf.i_blocks = (lpfBlocks * bs) / 512;
  inodes.set(LOST_FOUND_INO, encodeInode(lpf));
  const dirsInGroup0 = 2;

  // Resize inode: DIND block at the first free block after group 0's inode table.
  const rsv = g.reservedGdtBlocks;
  const backups = backupGroups(g.groupCount);
  if (rsv > 0) {
    const sbBlk = g.firstDataBlock === 0 && bs === 1024 ? 1 : g.firstDataBlock;
    const dind = alloc(sbBlk + g.descBlocks + rsv + 2 + g.inodeTableBlocks);
    const dindWords = new Array<number>(apb).fill(0);
    for (let i = 0; i < rsv; i++) {
      const gdtBlk = sbBlk + 1 + g.descBlocks + i;
      dindWords[(g.descBlocks + i) % apb] = gdtBlk;
      blocks.set(
        gdtBlk,
        wordsBlock(
          bs,
          backups.map((grp) => gdtBlk + grp * g.blocksPerGroup),
        ),
      );
    }
    blocks.set(dind, wordsBlock(bs, dindWords));
    const ri = newInode(S_IFREG | 0o600, 0, 0, 1);
    ri.i_block[13] = dind;
    ri.i_size = (apb * apb + apb + 12) * bs;
    ri.i_blocks = ((1 + rsv * (1 + backups.length)) * bs) / 512;
    inodes.set(RESIZE_INO, encodeInode(ri));
  }

  // Journal: data blocks in logical order with each indirect block allocated
  // just before the data it maps (ext2fs_bmap with BMAP_ALLOC).
  const jmap = new Uint32Array(g.journalBlocks);
  const ji = newInode(S_IFREG | 0o600, 0, 0, 1);
  let metaBlocks = 0;
  {
    let goal = groupStart(0);
    const take = () => {
      const b = alloc(goal);
      goal = b + 1;
      return b;
    };
    let logical = 0;
    const fill = (n: number) => {
      const out: number[] = [];
      for (let i = 0; i < n && logical < g.journalBlocks; i++) {
        const b = take();
        jmap[logical++] = b;
        out.push(b);
      }
      return out;
    };
    fill(12).forEach((b, i) => (ji.i_block[i] = b));
    if (logical < g.journalBlocks) {
      const ind = take();
      metaBlocks++;
      ji.i_block[12] = ind;
      blocks.set(ind, wordsBlock(bs, fill(apb)));
    }
    if (logical < g.journalBlocks) {
      const dind = take();
      metaBlocks++;
      ji.i_block[13] = dind;
      const words: number[] = [];
      while (logical < g.journalBlocks && words.length < apb) {
        const ind = take();
        metaBlocks++;
        words.push(ind);
        blocks.set(ind, wordsBlock(bs, fill(apb)));
      }
      blocks.set(dind, wordsBlock(bs, words));
    }
    if (logical < g.journalBlocks) throw new UnsupportedError(`journal of ${g.journalBlocks} blocks needs triple indirection`);
  }
  ji.i_size = g.journalBlocks * bs;
  ji.i_blocks = ((g.journalBlocks + metaBlocks) * bs) / 512;
  inodes.set(JOURNAL_INO, encodeInode(ji));
  {
    const jsbBlock = Buffer.alloc(bs);
    encodeJournalSuperblock(newJournalSuperblock(bs, g.journalBlocks, uuid)).copy(jsbBlock, 0);
    blocks.set(jmap[0]!, jsbBlock);
  }

  // Bad blocks inode (1): empty, times set, a 128-byte record (ext2fs_update_bb_inode).
  {
    const bad = emptyInode(INODE_SIZE, 0);
    const t = { sec: now, nsec: 0 };
    bad.i_atime = t;
    bad.i_mtime = t;
    bad.i_ctime = t;
    inodes.set(1, encodeInode(bad));
  }

  // Counts.
  let freeBlocksTotal = 0;
  let freeInodesTotal = 0;
  for (let grp = 0; grp < g.groupCount; grp++) {
    const free = groupEnd(grp) - groupStart(grp) - used.count(groupStart(grp), groupEnd(grp) - groupStart(grp));
    const freeIno = g.inodesPerGroup - inodesUsed.count(grp * g.inodesPerGroup + 1, g.inodesPerGroup);
    descs[grp]!.bg_free_blocks_count = free;
    descs[grp]!.bg_free_inodes_count = freeIno;
    descs[grp]!.bg_used_dirs_count = grp === 0 ? dirsInGroup0 : 0;
    freeBlocksTotal += free;
    freeInodesTotal += freeIno;
  }

  const gdt = Buffer.alloc(g.descBlocks * bs);
  descs.forEach((d, i) => encodeGroupDesc(d, gdt, i * 32));

  const jnl = [...ji.i_block, Math.floor(ji.i_size / 0x100000000), ji.i_size % 0x100000000];
  const sb: Superblock = {
    s_inodes_count: g.inodesCount,
    s_blocks_count: g.blocksCount,
    s_r_blocks_count: g.reservedBlocks,
    s_free_blocks_count: freeBlocksTotal,
    s_free_inodes_count: freeInodesTotal,
    s_first_data_block: g.firstDataBlock,
    s_log_block_size: Math.log2(bs / 1024),
    s_log_cluster_size: Math.log2(bs / 1024),
    s_blocks_per_group: g.blocksPerGroup,
    s_clusters_per_group: g.blocksPerGroup,
    s_inodes_per_group: g.inodesPerGroup,
    s_mtime: 0,
    s_wtime: now,
    s_mnt_count: 0,
    s_max_mnt_count: -1,
    s_magic: EXT2_SUPER_MAGIC,
    s_state: EXT2_VALID_FS,
    s_errors: 1,
    s_minor_rev_level: 0,
    s_lastcheck: now,
    s_checkinterval: 0,
    s_creator_os: 0,
    s_rev_level: EXT2_DYNAMIC_REV,
    s_def_resuid: 0,
    s_def_resgid: 0,
    s_first_ino: FIRST_INO,
    s_inode_size: INODE_SIZE,
    s_block_group_nr: 0,
    s_feature_compat: COMPAT.has_journal | COMPAT.ext_attr | COMPAT.resize_inode | COMPAT.dir_index,
    s_feature_incompat: INCOMPAT.filetype,
    s_feature_ro_compat: RO_COMPAT.sparse_super | RO_COMPAT.large_file,
    s_uuid: uuid,
    s_volume_name: Buffer.alloc(16),
    s_last_mounted: Buffer.alloc(64),
    s_algorithm_usage_bitmap: 0,
    s_prealloc_blocks: 0,
    s_prealloc_dir_blocks: 0,
    s_reserved_gdt_blocks: rsv,
    s_journal_uuid: Buffer.alloc(16),
    s_journal_inum: JOURNAL_INO,
    s_journal_dev: 0,
    s_last_orphan: 0,
    s_hash_seed: [hashSeed.readUInt32LE(0), hashSeed.readUInt32LE(4), hashSeed.readUInt32LE(8), hashSeed.readUInt32LE(12)],
    s_def_hash_version: EXT2_HASH_HALF_MD4,
    s_jnl_backup_type: JNL_BACKUP_BLOCKS,
    s_desc_size: 0,
    s_default_mount_opts: DEFM_XATTR_USER_ACL,
    s_first_meta_bg: 0,
    s_mkfs_time: now,
    s_jnl_blocks: jnl,
    s_min_extra_isize: EXTRA_ISIZE,
    s_want_extra_isize: EXTRA_ISIZE,
    s_flags: hashFlags(),
    s_raid_stride: 0,
    s_mmp_interval: 0,
    s_mmp_block: 0,
    s_raid_stripe_width: 0,
    s_log_groups_per_flex: 0,
    s_checksum_type: 0,
    s_kbytes_written: 0,
  };
  const superFor = (grp: number, state: number): Buffer => {
    sb.s_block_group_nr = grp;
    sb.s_state = state;
    const raw = encodeSuperblock({ ...sb, raw: undefined });
    raw.writeUInt32LE(overhead, S_OVERHEAD_CLUSTERS);
    return raw;
  };

  // Write: per group superblock + GDT (+ reserved GDT content for group 0),
  // bitmaps; then inode table blocks holding used inodes; then data blocks.
  for (let grp = 0; grp < g.groupCount; grp++) {
    const start = groupStart(grp);
    if (hasSuper(grp)) {
      // ext2fs_flush writes backups with EXT2_VALID_FS cleared, the primary as is.
      const sbBytes = superFor(grp, grp === 0 ? EXT2_VALID_FS : 0);
      if (grp === 0) {
        await store.write(SUPERBLOCK_OFFSET, sbBytes);
      } else {
        await store.write(start * bs, sbBytes);
      }
      await store.write((start + 1) * bs, gdt);
    }
    const d = descs[grp]!;
    // Bits past the group's blocks/inodes (to the end of the bitmap block,
    // and past the filesystem's end in the last group) are set, as
    // ext2fs_write_bitmaps pads them.
    const bbm = Buffer.alloc(bs, 0xff);
    bbm.fill(0, 0, g.blocksPerGroup / 8);
    bbm.set(used.bytes(start, groupEnd(grp) - start), 0);
    for (let bit = groupEnd(grp) - start; bit < g.blocksPerGroup; bit++) bbm[bit >>> 3] = bbm[bit >>> 3]! | (1 << (bit & 7));
    const ibm = Buffer.alloc(bs, 0xff);
    ibm.fill(0, 0, g.inodesPerGroup / 8);
    ibm.set(inodesUsed.bytes(grp * g.inodesPerGroup + 1, g.inodesPerGroup), 0);
    await store.write(d.bg_block_bitmap * bs, Buffer.concat([bbm, ibm]));
  }
  for (const [ino, rec] of inodes) {
    const grp = Math.floor((ino - 1) / g.inodesPerGroup);
    const idx = (ino - 1) % g.inodesPerGroup;
    await store.write(descs[grp]!.bg_inode_table * bs + idx * INODE_SIZE, rec);
  }
  const sorted = [...blocks.keys()].sort((a, b) => a - b);
  for (let i = 0; i < sorted.length;) {
    let n = 1;
    while (i + n < sorted.length && sorted[i + n] === sorted[i]! + n) n++;
    const run = sorted.slice(i, i + n).map((b) => blocks.get(b)!);
    await store.write(sorted[i]! * bs, n === 1 ? run[0]! : Buffer.concat(run));
    i += n;
  }
  await store.sync();
  return { geometry: g, uuid, freeBlocks: freeBlocksTotal, freeInodes: freeInodesTotal, journalMap: jmap };
}

/** A random RFC 4122 version-4 UUID, as libuuid's uuid_generate makes. */
function uuidV4(): Buffer {
  const b = randomBytes(16);
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  return b;
}
