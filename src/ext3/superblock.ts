/**
 * The ext2/3 superblock: 1024 bytes at byte 1024 of the filesystem, whatever
 * the block size (e2fsprogs lib/ext2fs/ext2_fs.h `struct ext2_super_block`,
 * kernel fs/ext4/ext4.h). Backups sit at the start of groups 0, 1 and powers
 * of 3, 5 and 7 with sparse_super; only the primary is read and written here
 * (the kernel does the same; e2fsck and resize2fs refresh the backups).
 *
 * decodeSuperblock validates every field the engine relies on for geometry
 * (block size, group sizes, counts against the image size) so no later
 * computation can divide by zero, over-allocate, or address outside the image.
 * Fields not modelled here survive a decode/encode round trip through `raw`.
 */
import { CorruptError } from '../errors.js';
import { COMPAT, INCOMPAT, RO_COMPAT } from './features.js';

export const SUPERBLOCK_OFFSET = 1024;
export const SUPERBLOCK_SIZE = 1024;
export const EXT2_SUPER_MAGIC = 0xef53;

/** s_state bits. */
export const EXT2_VALID_FS = 0x0001;
export const EXT2_ERROR_FS = 0x0002;
export const EXT3_ORPHAN_FS = 0x0004;

/** s_flags bits: which char signedness the directory hash uses. */
export const EXT2_FLAGS_SIGNED_HASH = 0x0001;
export const EXT2_FLAGS_UNSIGNED_HASH = 0x0002;

/** s_def_hash_version / dx_root_info.hash_version. */
export const EXT2_HASH_LEGACY = 0;
export const EXT2_HASH_HALF_MD4 = 1;
export const EXT2_HASH_TEA = 2;

export const EXT2_GOOD_OLD_REV = 0;
export const EXT2_DYNAMIC_REV = 1;
export const EXT2_GOOD_OLD_INODE_SIZE = 128;
export const EXT2_GOOD_OLD_FIRST_INO = 11;

export interface Superblock {
  s_inodes_count: number; // 0x00
  s_blocks_count: number; // 0x04 (lo) | 0x150 (hi, 64bit only)
  s_r_blocks_count: number; // 0x08 | 0x154
  s_free_blocks_count: number; // 0x0C | 0x158
  s_free_inodes_count: number; // 0x10
  s_first_data_block: number; // 0x14
  s_log_block_size: number; // 0x18: block size = 1024 << this
  s_log_cluster_size: number; // 0x1C
  s_blocks_per_group: number; // 0x20
  s_clusters_per_group: number; // 0x24
  s_inodes_per_group: number; // 0x28
  s_mtime: number; // 0x2C
  s_wtime: number; // 0x30
  s_mnt_count: number; // 0x34 u16
  s_max_mnt_count: number; // 0x36 s16
  s_magic: number; // 0x38 u16
  s_state: number; // 0x3A u16
  s_errors: number; // 0x3C u16
  s_minor_rev_level: number; // 0x3E u16
  s_lastcheck: number; // 0x40
  s_checkinterval: number; // 0x44
  s_creator_os: number; // 0x48
  s_rev_level: number; // 0x4C
  s_def_resuid: number; // 0x50 u16
  s_def_resgid: number; // 0x52 u16
  s_first_ino: number; // 0x54
  s_inode_size: number; // 0x58 u16
  s_block_group_nr: number; // 0x5A u16
  s_feature_compat: number; // 0x5C
  s_feature_incompat: number; // 0x60
  s_feature_ro_compat: number; // 0x64
  s_uuid: Buffer; // 0x68 [16]
  s_volume_name: Buffer; // 0x78 [16]
  s_last_mounted: Buffer; // 0x88 [64]
  s_algorithm_usage_bitmap: number; // 0xC8
  s_prealloc_blocks: number; // 0xCC u8
  s_prealloc_dir_blocks: number; // 0xCD u8
  s_reserved_gdt_blocks: number; // 0xCE u16
  s_journal_uuid: Buffer; // 0xD0 [16]
  s_journal_inum: number; // 0xE0
  s_journal_dev: number; // 0xE4
  s_last_orphan: number; // 0xE8
  s_hash_seed: [number, number, number, number]; // 0xEC u32[4]
  s_def_hash_version: number; // 0xFC u8
  s_jnl_backup_type: number; // 0xFD u8
  s_desc_size: number; // 0xFE u16
  s_default_mount_opts: number; // 0x100
  s_first_meta_bg: number; // 0x104
  s_mkfs_time: number; // 0x108
  s_jnl_blocks: number[]; // 0x10C u32[17]: i_block[15], i_size_high, i_size of the journal inode
  s_min_extra_isize: number; // 0x15C u16
  s_want_extra_isize: number; // 0x15E u16
  s_flags: number; // 0x160
  s_raid_stride: number; // 0x164 u16
  s_mmp_interval: number; // 0x166 u16
  s_mmp_block: number; // 0x168 u64
  s_raid_stripe_width: number; // 0x170
  s_log_groups_per_flex: number; // 0x174 u8
  s_checksum_type: number; // 0x175 u8
  s_kbytes_written: number; // 0x178 u64
  /** The 1024 bytes this was decoded from (fields not listed above are kept). */
  raw?: Buffer;
}

function u64(buf: Buffer, off: number): number {
  const v = buf.readBigUInt64LE(off);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}

/** Decodes and validates 1024 superblock bytes. `imageSize` bounds the counts. */
export function decodeSuperblock(buf: Buffer, imageSize?: number): Superblock {
  if (buf.length < SUPERBLOCK_SIZE) throw new CorruptError(`superblock truncated (${buf.length} bytes)`);
  const magic = buf.readUInt16LE(0x38);
  if (magic !== EXT2_SUPER_MAGIC) {
    throw new CorruptError(`not an ext2/3/4 filesystem (superblock magic 0x${magic.toString(16)}, want 0xef53)`);
  }
  const is64 = (buf.readUInt32LE(0x60) & INCOMPAT['64bit']) !== 0;
  const hi = (off: number) => (is64 ? buf.readUInt32LE(off) * 0x100000000 : 0);
  const jnl: number[] = [];
  for (let i = 0; i < 17; i++) jnl.push(buf.readUInt32LE(0x10c + 4 * i));
  const sb: Superblock = {
    s_inodes_count: buf.readUInt32LE(0x00),
    s_blocks_count: buf.readUInt32LE(0x04) + hi(0x150),
    s_r_blocks_count: buf.readUInt32LE(0x08) + hi(0x154),
    s_free_blocks_count: buf.readUInt32LE(0x0c) + hi(0x158),
    s_free_inodes_count: buf.readUInt32LE(0x10),
    s_first_data_block: buf.readUInt32LE(0x14),
    s_log_block_size: buf.readUInt32LE(0x18),
    s_log_cluster_size: buf.readUInt32LE(0x1c),
    s_blocks_per_group: buf.readUInt32LE(0x20),
    s_clusters_per_group: buf.readUInt32LE(0x24),
    s_inodes_per_group: buf.readUInt32LE(0x28),
    s_mtime: buf.readUInt32LE(0x2c),
    s_wtime: buf.readUInt32LE(0x30),
    s_mnt_count: buf.readUInt16LE(0x34),
    s_max_mnt_count: buf.readInt16LE(0x36),
    s_magic: magic,
    s_state: buf.readUInt16LE(0x3a),
    s_errors: buf.readUInt16LE(0x3c),
    s_minor_rev_level: buf.readUInt16LE(0x3e),
    s_lastcheck: buf.readUInt32LE(0x40),
    s_checkinterval: buf.readUInt32LE(0x44),
    s_creator_os: buf.readUInt32LE(0x48),
    s_rev_level: buf.readUInt32LE(0x4c),
    s_def_resuid: buf.readUInt16LE(0x50),
    s_def_resgid: buf.readUInt16LE(0x52),
    s_first_ino: buf.readUInt32LE(0x54),
    s_inode_size: buf.readUInt16LE(0x58),
    s_block_group_nr: buf.readUInt16LE(0x5a),
    s_feature_compat: buf.readUInt32LE(0x5c),
    s_feature_incompat: buf.readUInt32LE(0x60),
    s_feature_ro_compat: buf.readUInt32LE(0x64),
    s_uuid: Buffer.from(buf.subarray(0x68, 0x78)),
    s_volume_name: Buffer.from(buf.subarray(0x78, 0x88)),
    s_last_mounted: Buffer.from(buf.subarray(0x88, 0xc8)),
    s_algorithm_usage_bitmap: buf.readUInt32LE(0xc8),
    s_prealloc_blocks: buf.readUInt8(0xcc),
    s_prealloc_dir_blocks: buf.readUInt8(0xcd),
    s_reserved_gdt_blocks: buf.readUInt16LE(0xce),
    s_journal_uuid: Buffer.from(buf.subarray(0xd0, 0xe0)),
    s_journal_inum: buf.readUInt32LE(0xe0),
    s_journal_dev: buf.readUInt32LE(0xe4),
    s_last_orphan: buf.readUInt32LE(0xe8),
    s_hash_seed: [buf.readUInt32LE(0xec), buf.readUInt32LE(0xf0), buf.readUInt32LE(0xf4), buf.readUInt32LE(0xf8)],
    s_def_hash_version: buf.readUInt8(0xfc),
    s_jnl_backup_type: buf.readUInt8(0xfd),
    s_desc_size: buf.readUInt16LE(0xfe),
    s_default_mount_opts: buf.readUInt32LE(0x100),
    s_first_meta_bg: buf.readUInt32LE(0x104),
    s_mkfs_time: buf.readUInt32LE(0x108),
    s_jnl_blocks: jnl,
    s_min_extra_isize: buf.readUInt16LE(0x15c),
    s_want_extra_isize: buf.readUInt16LE(0x15e),
    s_flags: buf.readUInt32LE(0x160),
    s_raid_stride: buf.readUInt16LE(0x164),
    s_mmp_interval: buf.readUInt16LE(0x166),
    s_mmp_block: u64(buf, 0x168),
    s_raid_stripe_width: buf.readUInt32LE(0x170),
    s_log_groups_per_flex: buf.readUInt8(0x174),
    s_checksum_type: buf.readUInt8(0x175),
    s_kbytes_written: u64(buf, 0x178),
    raw: Buffer.from(buf.subarray(0, SUPERBLOCK_SIZE)),
  };
  validateSuperblock(sb, imageSize);
  return sb;
}

/** Geometry checks: everything later arithmetic trusts. */
export function validateSuperblock(sb: Superblock, imageSize?: number): void {
  const bad = (what: string) => {
    throw new CorruptError(`bad superblock: ${what}`);
  };
  if (sb.s_log_block_size > 6) bad(`s_log_block_size ${sb.s_log_block_size} (block size above 64 KiB)`);
  const bs = 1024 << sb.s_log_block_size;
  if (sb.s_rev_level > EXT2_DYNAMIC_REV) bad(`s_rev_level ${sb.s_rev_level}`);
  if (sb.s_blocks_count === 0) bad('s_blocks_count is 0');
  if (sb.s_blocks_count > 0xffffffff) bad('more than 2^32 blocks');
  if (sb.s_blocks_per_group === 0 || sb.s_blocks_per_group > 8 * bs) {
    bad(`s_blocks_per_group ${sb.s_blocks_per_group} (must be 1..${8 * bs})`);
  }
  if (sb.s_inodes_per_group === 0 || sb.s_inodes_per_group > 8 * bs) {
    bad(`s_inodes_per_group ${sb.s_inodes_per_group} (must be 1..${8 * bs})`);
  }
  const expectFirst = bs === 1024 ? 1 : 0;
  if (sb.s_first_data_block !== expectFirst) bad(`s_first_data_block ${sb.s_first_data_block} with ${bs}-byte blocks`);
  if (sb.s_first_data_block >= sb.s_blocks_count) bad('s_first_data_block beyond the last block');
  const groups = Math.ceil((sb.s_blocks_count - sb.s_first_data_block) / sb.s_blocks_per_group);
  if (sb.s_inodes_count !== groups * sb.s_inodes_per_group) {
    bad(`s_inodes_count ${sb.s_inodes_count} is not ${groups} groups x ${sb.s_inodes_per_group}`);
  }
  const isz = inodeSize(sb);
  if (isz < EXT2_GOOD_OLD_INODE_SIZE || isz > bs || (isz & (isz - 1)) !== 0) bad(`s_inode_size ${isz}`);
  if (firstIno(sb) < EXT2_GOOD_OLD_FIRST_INO || firstIno(sb) > sb.s_inodes_count) bad(`s_first_ino ${firstIno(sb)}`);
  if (sb.s_free_blocks_count > sb.s_blocks_count) bad('more free blocks than blocks');
  if (sb.s_free_inodes_count > sb.s_inodes_count) bad('more free inodes than inodes');
  if ((sb.s_feature_incompat & INCOMPAT['64bit']) !== 0) {
    if (sb.s_desc_size < 32 || sb.s_desc_size > bs || (sb.s_desc_size & (sb.s_desc_size - 1)) !== 0) {
      bad(`s_desc_size ${sb.s_desc_size}`);
    }
  }
  if (sb.s_reserved_gdt_blocks > bs / 4) bad(`s_reserved_gdt_blocks ${sb.s_reserved_gdt_blocks}`);
  if (imageSize !== undefined && sb.s_blocks_count * bs > imageSize) {
    throw new CorruptError(
      `filesystem claims ${sb.s_blocks_count} blocks of ${bs} bytes (${sb.s_blocks_count * bs} bytes) but the image has ${imageSize}`,
    );
  }
}

/** Encodes into a copy of `sb.raw` (or zeros), so unmodelled fields survive. */
export function encodeSuperblock(sb: Superblock): Buffer {
  const buf = Buffer.alloc(SUPERBLOCK_SIZE);
  if (sb.raw) sb.raw.copy(buf, 0, 0, SUPERBLOCK_SIZE);
  const is64 = (sb.s_feature_incompat & INCOMPAT['64bit']) !== 0;
  const lohi = (v: number, lo: number, hi: number) => {
    buf.writeUInt32LE(v % 0x100000000, lo);
    if (is64) buf.writeUInt32LE(Math.floor(v / 0x100000000), hi);
  };
  buf.writeUInt32LE(sb.s_inodes_count, 0x00);
  lohi(sb.s_blocks_count, 0x04, 0x150);
  lohi(sb.s_r_blocks_count, 0x08, 0x154);
  lohi(sb.s_free_blocks_count, 0x0c, 0x158);
  buf.writeUInt32LE(sb.s_free_inodes_count, 0x10);
  buf.writeUInt32LE(sb.s_first_data_block, 0x14);
  buf.writeUInt32LE(sb.s_log_block_size, 0x18);
  buf.writeUInt32LE(sb.s_log_cluster_size, 0x1c);
  buf.writeUInt32LE(sb.s_blocks_per_group, 0x20);
  buf.writeUInt32LE(sb.s_clusters_per_group, 0x24);
  buf.writeUInt32LE(sb.s_inodes_per_group, 0x28);
  buf.writeUInt32LE(sb.s_mtime >>> 0, 0x2c);
  buf.writeUInt32LE(sb.s_wtime >>> 0, 0x30);
  buf.writeUInt16LE(sb.s_mnt_count & 0xffff, 0x34);
  buf.writeInt16LE(sb.s_max_mnt_count, 0x36);
  buf.writeUInt16LE(sb.s_magic, 0x38);
  buf.writeUInt16LE(sb.s_state, 0x3a);
  buf.writeUInt16LE(sb.s_errors, 0x3c);
  buf.writeUInt16LE(sb.s_minor_rev_level, 0x3e);
  buf.writeUInt32LE(sb.s_lastcheck >>> 0, 0x40);
  buf.writeUInt32LE(sb.s_checkinterval >>> 0, 0x44);
  buf.writeUInt32LE(sb.s_creator_os, 0x48);
  buf.writeUInt32LE(sb.s_rev_level, 0x4c);
  buf.writeUInt16LE(sb.s_def_resuid, 0x50);
  buf.writeUInt16LE(sb.s_def_resgid, 0x52);
  buf.writeUInt32LE(sb.s_first_ino, 0x54);
  buf.writeUInt16LE(sb.s_inode_size, 0x58);
  buf.writeUInt16LE(sb.s_block_group_nr, 0x5a);
  buf.writeUInt32LE(sb.s_feature_compat >>> 0, 0x5c);
  buf.writeUInt32LE(sb.s_feature_incompat >>> 0, 0x60);
  buf.writeUInt32LE(sb.s_feature_ro_compat >>> 0, 0x64);
  sb.s_uuid.copy(buf, 0x68, 0, 16);
  sb.s_volume_name.copy(buf, 0x78, 0, 16);
  sb.s_last_mounted.copy(buf, 0x88, 0, 64);
  buf.writeUInt32LE(sb.s_algorithm_usage_bitmap, 0xc8);
  buf.writeUInt8(sb.s_prealloc_blocks, 0xcc);
  buf.writeUInt8(sb.s_prealloc_dir_blocks, 0xcd);
  buf.writeUInt16LE(sb.s_reserved_gdt_blocks, 0xce);
  sb.s_journal_uuid.copy(buf, 0xd0, 0, 16);
  buf.writeUInt32LE(sb.s_journal_inum, 0xe0);
  buf.writeUInt32LE(sb.s_journal_dev, 0xe4);
  buf.writeUInt32LE(sb.s_last_orphan, 0xe8);
  for (let i = 0; i < 4; i++) buf.writeUInt32LE(sb.s_hash_seed[i]! >>> 0, 0xec + 4 * i);
  buf.writeUInt8(sb.s_def_hash_version, 0xfc);
  buf.writeUInt8(sb.s_jnl_backup_type, 0xfd);
  buf.writeUInt16LE(sb.s_desc_size, 0xfe);
  buf.writeUInt32LE(sb.s_default_mount_opts >>> 0, 0x100);
  buf.writeUInt32LE(sb.s_first_meta_bg, 0x104);
  buf.writeUInt32LE(sb.s_mkfs_time >>> 0, 0x108);
  for (let i = 0; i < 17; i++) buf.writeUInt32LE((sb.s_jnl_blocks[i] ?? 0) >>> 0, 0x10c + 4 * i);
  buf.writeUInt16LE(sb.s_min_extra_isize, 0x15c);
  buf.writeUInt16LE(sb.s_want_extra_isize, 0x15e);
  buf.writeUInt32LE(sb.s_flags >>> 0, 0x160);
  buf.writeUInt16LE(sb.s_raid_stride, 0x164);
  buf.writeUInt16LE(sb.s_mmp_interval, 0x166);
  buf.writeBigUInt64LE(BigInt(sb.s_mmp_block), 0x168);
  buf.writeUInt32LE(sb.s_raid_stripe_width, 0x170);
  buf.writeUInt8(sb.s_log_groups_per_flex, 0x174);
  buf.writeUInt8(sb.s_checksum_type, 0x175);
  buf.writeBigUInt64LE(BigInt(sb.s_kbytes_written), 0x178);
  return buf;
}

export function blockSize(sb: Superblock): number {
  return 1024 << sb.s_log_block_size;
}

export function inodeSize(sb: Superblock): number {
  return sb.s_rev_level === EXT2_GOOD_OLD_REV ? EXT2_GOOD_OLD_INODE_SIZE : sb.s_inode_size;
}

export function firstIno(sb: Superblock): number {
  return sb.s_rev_level === EXT2_GOOD_OLD_REV ? EXT2_GOOD_OLD_FIRST_INO : sb.s_first_ino;
}

export function groupCount(sb: Superblock): number {
  return Math.ceil((sb.s_blocks_count - sb.s_first_data_block) / sb.s_blocks_per_group);
}

/** Bytes per group descriptor: 32, or s_desc_size with the 64bit feature. */
export function descSize(sb: Superblock): number {
  return (sb.s_feature_incompat & INCOMPAT['64bit']) !== 0 ? sb.s_desc_size : 32;
}

export function hasCompat(sb: Superblock, bit: number): boolean {
  return (sb.s_feature_compat & bit) !== 0;
}
export function hasIncompat(sb: Superblock, bit: number): boolean {
  return (sb.s_feature_incompat & bit) !== 0;
}
export function hasRoCompat(sb: Superblock, bit: number): boolean {
  return (sb.s_feature_ro_compat & bit) !== 0;
}

function isPowerOf(n: number, base: number): boolean {
  let p = base;
  while (p < n) p *= base;
  return p === n;
}

/**
 * Whether group `g` carries a superblock + GDT backup: every group without
 * sparse_super; with it groups 0, 1 and powers of 3, 5, 7 (ext2fs_bg_has_super).
 */
export function groupHasSuper(sb: Superblock, g: number): boolean {
  if (g === 0) return true;
  if (!hasRoCompat(sb, RO_COMPAT.sparse_super)) return true;
  if (g === 1) return true;
  if ((g & 1) === 0) return false;
  return isPowerOf(g, 3) || isPowerOf(g, 5) || isPowerOf(g, 7);
}

/** Whether the directory hash treats name bytes as unsigned chars. */
export function unsignedHash(sb: Superblock): boolean {
  return (sb.s_flags & EXT2_FLAGS_UNSIGNED_HASH) !== 0;
}

export { COMPAT, INCOMPAT, RO_COMPAT };
