/**
 * The on-disk inode (`struct ext2_inode_large`): s_inode_size bytes (128 or
 * 256 here; any power of two up to the block size is accepted) in the group's
 * inode table. Inode N lives in group (N-1) / s_inodes_per_group at index
 * (N-1) % s_inodes_per_group.
 *
 *   0x00 i_mode u16        0x02 i_uid u16 (low)    0x04 i_size_lo
 *   0x08 i_atime           0x0C i_ctime            0x10 i_mtime
 *   0x14 i_dtime (deletion time; on the orphan list: the next orphan's number)
 *   0x18 i_gid u16 (low)   0x1A i_links_count u16  0x1C i_blocks_lo (512-byte units)
 *   0x20 i_flags           0x24 osd1 (l_i_version)
 *   0x28 i_block[15]       12 direct, [12] indirect, [13] double, [14] triple;
 *                          a fast symlink's target; a device number
 *   0x64 i_generation      0x68 i_file_acl_lo (xattr block)   0x6C i_size_high
 *   0x70 i_faddr           0x74 l_i_blocks_high u16  0x76 l_i_file_acl_high u16
 *   0x78 l_i_uid_high u16  0x7A l_i_gid_high u16     0x7C l_i_checksum_lo u16
 *   ---- large inodes (s_inode_size > 128) ----
 *   0x80 i_extra_isize u16 0x82 i_checksum_hi u16
 *   0x84 i_ctime_extra     0x88 i_mtime_extra   0x8C i_atime_extra
 *   0x90 i_crtime          0x94 i_crtime_extra  0x98 i_version_hi  0x9C i_projid
 *   [0x80 + i_extra_isize ...) in-inode xattrs (xattr.ts)
 *
 * *_extra times: bits 0-1 extend the signed 32-bit seconds by 2^32 epochs,
 * bits 2-31 are nanoseconds (fs/ext4/ext4.h ext4_encode_extra_time).
 */
import { CorruptError } from '../errors.js';

export const EXT2_GOOD_OLD_INODE_SIZE = 128;
export const EXT2_N_BLOCKS = 15;
export const EXT2_NDIR_BLOCKS = 12;
export const EXT2_IND_BLOCK = 12;
export const EXT2_DIND_BLOCK = 13;
export const EXT2_TIND_BLOCK = 14;

export const EXT2_ROOT_INO = 2;
export const EXT2_RESIZE_INO = 7;
export const EXT2_JOURNAL_INO = 8;

/** i_flags bits that matter here. */
export const EXT2_SECRM_FL = 0x1;
export const EXT2_IMMUTABLE_FL = 0x10;
export const EXT2_APPEND_FL = 0x20;
export const EXT2_INDEX_FL = 0x1000;
export const EXT4_HUGE_FILE_FL = 0x40000;
export const EXT4_EXTENTS_FL = 0x80000;
export const EXT4_EA_INODE_FL = 0x200000;
export const EXT4_INLINE_DATA_FL = 0x10000000;

export interface Time {
  sec: number;
  nsec: number;
}

export interface Inode {
  i_mode: number;
  i_uid: number; // low | l_i_uid_high << 16
  i_size: number; // i_size_lo | i_size_high << 32
  i_atime: Time;
  i_ctime: Time;
  i_mtime: Time;
  i_crtime: Time;
  i_dtime: number;
  i_gid: number;
  i_links_count: number;
  i_blocks: number; // in 512-byte units (huge_file's fs-block units are refused)
  i_flags: number;
  i_version: number; // osd1
  i_block: number[]; // 15 u32
  i_generation: number;
  i_file_acl: number;
  i_faddr: number;
  /** 0 for 128-byte inodes. */
  i_extra_isize: number;
  i_version_hi: number;
  i_projid: number;
  /** The inode's whole on-disk record; in-inode xattrs live in its tail. */
  raw: Buffer;
}

function decodeExtraTime(sec32: number, extra: number | undefined): Time {
  // Seconds are signed 32-bit; the 2 epoch bits extend them (kernel >= 4.20 semantics).
  const base = sec32 | 0;
  if (extra === undefined) return { sec: base, nsec: 0 };
  const epoch = extra & 3;
  const nsec = extra >>> 2;
  return { sec: base + epoch * 0x100000000, nsec: nsec < 1_000_000_000 ? nsec : 0 };
}

/**
 * Decodes one inode record of `size` bytes. Validates only what must hold
 * for the bytes to be addressable (i_extra_isize); semantic checks (mode,
 * block pointers) happen where the values are used.
 */
export function decodeInode(buf: Buffer, size: number = buf.length): Inode {
  if (buf.length < size || size < EXT2_GOOD_OLD_INODE_SIZE) {
    throw new CorruptError(`inode record truncated (${buf.length} of ${size} bytes)`);
  }
  let extra = 0;
  if (size > EXT2_GOOD_OLD_INODE_SIZE) {
    extra = buf.readUInt16LE(0x80);
    if (extra > size - EXT2_GOOD_OLD_INODE_SIZE || (extra & 3) !== 0) {
      throw new CorruptError(`inode i_extra_isize ${extra} does not fit its ${size}-byte record`);
    }
  }
  const has = (field: number) => extra >= field + 4 - EXT2_GOOD_OLD_INODE_SIZE;
  const blocks: number[] = [];
  for (let i = 0; i < EXT2_N_BLOCKS; i++) blocks.push(buf.readUInt32LE(0x28 + 4 * i));
  return {
    i_mode: buf.readUInt16LE(0x00),
    i_uid: (buf.readUInt16LE(0x02) | (buf.readUInt16LE(0x78) << 16)) >>> 0,
    i_size: buf.readUInt32LE(0x04) + buf.readUInt32LE(0x6c) * 0x100000000,
    i_atime: decodeExtraTime(buf.readUInt32LE(0x08), has(0x8c) ? buf.readUInt32LE(0x8c) : undefined),
    i_ctime: decodeExtraTime(buf.readUInt32LE(0x0c), has(0x84) ? buf.readUInt32LE(0x84) : undefined),
    i_mtime: decodeExtraTime(buf.readUInt32LE(0x10), has(0x88) ? buf.readUInt32LE(0x88) : undefined),
    i_crtime: has(0x90)
      ? decodeExtraTime(buf.readUInt32LE(0x90), has(0x94) ? buf.readUInt32LE(0x94) : undefined)
      : { sec: 0, nsec: 0 },
    i_dtime: buf.readUInt32LE(0x14),
    i_gid: (buf.readUInt16LE(0x18) | (buf.readUInt16LE(0x7a) << 16)) >>> 0,
    i_links_count: buf.readUInt16LE(0x1a),
    i_blocks: buf.readUInt32LE(0x1c) + buf.readUInt16LE(0x74) * 0x100000000,
    i_flags: buf.readUInt32LE(0x20),
    i_version: buf.readUInt32LE(0x24),
    i_block: blocks,
    i_generation: buf.readUInt32LE(0x64),
    i_file_acl: buf.readUInt32LE(0x68) + buf.readUInt16LE(0x76) * 0x100000000,
    i_faddr: buf.readUInt32LE(0x70),
    i_extra_isize: extra,
    i_version_hi: has(0x98) ? buf.readUInt32LE(0x98) : 0,
    i_projid: has(0x9c) ? buf.readUInt32LE(0x9c) : 0,
    raw: Buffer.from(buf.subarray(0, size)),
  };
}

/**
 * Encodes into a copy of `inode.raw` (so the in-inode xattr area and unknown
 * fields survive). Fields beyond i_extra_isize are not written.
 */
export function encodeInode(inode: Inode, size: number = inode.raw.length): Buffer {
  const buf = Buffer.alloc(size);
  inode.raw.copy(buf, 0, 0, Math.min(size, inode.raw.length));
  return encodeInodeInto(inode, buf);
}

/** Little-endian stores without Node's per-call range checks (callers pass in-range values). */
function put16(b: Buffer, o: number, v: number): void {
  b[o] = v;
  b[o + 1] = v >>> 8;
}

function put32(b: Buffer, o: number, v: number): void {
  b[o] = v;
  b[o + 1] = v >>> 8;
  b[o + 2] = v >>> 16;
  b[o + 3] = v >>> 24;
}

/** The seconds' 2 epoch bits above the signed 32-bit value (ext4_encode_extra_time). */
function epochBits(sec: number): number {
  return Math.floor((sec - (sec | 0)) / 0x100000000) & 3;
}

/**
 * Writes the fields into `buf` (which holds the record's other bytes, e.g.
 * `inode.raw` itself: the engine's allocation-free hot path). Byte stores
 * rather than Buffer.writeUInt*: this runs for every changed inode at every
 * commit, often before the JIT has warmed up.
 */
export function encodeInodeInto(inode: Inode, buf: Buffer): Buffer {
  const size = buf.length;
  if (size < EXT2_GOOD_OLD_INODE_SIZE) throw new RangeError(`inode record of ${size} bytes`);
  const extra = size > EXT2_GOOD_OLD_INODE_SIZE ? inode.i_extra_isize : 0;
  // Field at `field` (>= 0x80) present: it lies within i_extra_isize.
  const has = (field: number) => extra >= field + 4 - EXT2_GOOD_OLD_INODE_SIZE;
  const { i_atime: at, i_ctime: ct, i_mtime: mt, i_crtime: crt } = inode;
  put16(buf, 0x00, inode.i_mode & 0xffff);
  put16(buf, 0x02, inode.i_uid & 0xffff);
  put32(buf, 0x04, inode.i_size % 0x100000000);
  put32(buf, 0x08, at.sec | 0);
  put32(buf, 0x0c, ct.sec | 0);
  put32(buf, 0x10, mt.sec | 0);
  put32(buf, 0x14, inode.i_dtime >>> 0);
  put16(buf, 0x18, inode.i_gid & 0xffff);
  put16(buf, 0x1a, inode.i_links_count & 0xffff);
  put32(buf, 0x1c, inode.i_blocks % 0x100000000);
  put32(buf, 0x20, inode.i_flags >>> 0);
  put32(buf, 0x24, inode.i_version >>> 0);
  const blocks = inode.i_block;
  for (let i = 0; i < EXT2_N_BLOCKS; i++) put32(buf, 0x28 + 4 * i, (blocks[i] ?? 0) >>> 0);
  put32(buf, 0x64, inode.i_generation >>> 0);
  put32(buf, 0x68, inode.i_file_acl % 0x100000000);
  put32(buf, 0x6c, Math.floor(inode.i_size / 0x100000000) >>> 0);
  put32(buf, 0x70, inode.i_faddr >>> 0);
  put16(buf, 0x74, Math.floor(inode.i_blocks / 0x100000000) & 0xffff);
  put16(buf, 0x76, Math.floor(inode.i_file_acl / 0x100000000) & 0xffff);
  put16(buf, 0x78, (inode.i_uid >>> 16) & 0xffff);
  put16(buf, 0x7a, (inode.i_gid >>> 16) & 0xffff);
  if (size > EXT2_GOOD_OLD_INODE_SIZE) {
    put16(buf, 0x80, extra);
    if (has(0x84)) put32(buf, 0x84, (ct.nsec << 2) | epochBits(ct.sec));
    if (has(0x88)) put32(buf, 0x88, (mt.nsec << 2) | epochBits(mt.sec));
    if (has(0x8c)) put32(buf, 0x8c, (at.nsec << 2) | epochBits(at.sec));
    if (has(0x90)) put32(buf, 0x90, crt.sec | 0);
    if (has(0x94)) put32(buf, 0x94, (crt.nsec << 2) | epochBits(crt.sec));
    if (has(0x98)) put32(buf, 0x98, inode.i_version_hi >>> 0);
    if (has(0x9c)) put32(buf, 0x9c, inode.i_projid >>> 0);
  }
  return buf;
}

/** A zeroed inode record of `size` bytes with i_extra_isize set (new inodes). */
export function emptyInode(size: number, extraIsize: number): Inode {
  // Decoded from a shared template: decodeInode copies `raw` out of it (into Node's
  // small-buffer pool), so a create costs no zero-filled allocation of its own.
  const key = size * 0x10000 + extraIsize;
  let template = emptyTemplates.get(key);
  if (!template) {
    template = Buffer.alloc(size);
    if (size > EXT2_GOOD_OLD_INODE_SIZE) template.writeUInt16LE(Math.min(extraIsize, size - EXT2_GOOD_OLD_INODE_SIZE), 0x80);
    // What decodeInode would refuse of this record is refused once, here.
    decodeInode(template, size);
    emptyTemplates.set(key, template);
  }
  // The fields decodeInode(template) yields, built directly (same shape, no decode per create).
  return {
    i_mode: 0,
    i_uid: 0,
    i_size: 0,
    i_atime: { sec: 0, nsec: 0 },
    i_ctime: { sec: 0, nsec: 0 },
    i_mtime: { sec: 0, nsec: 0 },
    i_crtime: { sec: 0, nsec: 0 },
    i_dtime: 0,
    i_gid: 0,
    i_links_count: 0,
    i_blocks: 0,
    i_flags: 0,
    i_version: 0,
    i_block: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    i_generation: 0,
    i_file_acl: 0,
    i_faddr: 0,
    i_extra_isize: size > EXT2_GOOD_OLD_INODE_SIZE ? template.readUInt16LE(0x80) : 0,
    i_version_hi: 0,
    i_projid: 0,
    raw: Buffer.from(template),
  };
}

/** Zeroed inode records by (size, i_extra_isize); never modified once made. */
const emptyTemplates = new Map<number, Buffer>();

/**
 * Device numbers in i_block (fs/ext4/inode.c ext4_inode_{set,get}_dev): old
 * 16-bit encoding in i_block[0] when major and minor fit a byte each, else
 * i_block[0] = 0 and the new 32-bit encoding in i_block[1].
 */
export function decodeDevice(iBlock: number[]): { major: number; minor: number } {
  const old = iBlock[0]!;
  if (old !== 0) return { major: (old >>> 8) & 0xff, minor: old & 0xff };
  const dev = iBlock[1]!;
  return { major: (dev & 0xfff00) >>> 8, minor: (dev & 0xff) | ((dev >>> 12) & 0xfff00) };
}

export function encodeDevice(major: number, minor: number): number[] {
  const blocks = new Array<number>(EXT2_N_BLOCKS).fill(0);
  if (major < 256 && minor < 256) {
    blocks[0] = (major << 8) | minor;
  } else {
    blocks[1] = ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
  }
  return blocks;
}
