/**
 * Block group descriptors (`struct ext2_group_desc`, 32 bytes; 64 bytes or
 * s_desc_size with the 64bit feature, whose upper halves are read but which
 * the engine never writes). The table starts in the block after the
 * superblock (block s_first_data_block + 1) and fills
 * ceil(groups * descSize / blockSize) blocks; with resize_inode it is followed
 * by s_reserved_gdt_blocks reserved blocks.
 *
 *   0x00 bg_block_bitmap      u32   block of the group's block bitmap
 *   0x04 bg_inode_bitmap      u32   block of the inode bitmap
 *   0x08 bg_inode_table       u32   first block of the inode table
 *   0x0C bg_free_blocks_count u16
 *   0x0E bg_free_inodes_count u16
 *   0x10 bg_used_dirs_count   u16
 *   0x12 bg_flags             u16   INODE_UNINIT 1, BLOCK_UNINIT 2, ITABLE_ZEROED 4 (uninit_bg only)
 *   0x14 bg_exclude_bitmap_lo u32
 *   0x18 bg_block_bitmap_csum_lo, 0x1A bg_inode_bitmap_csum_lo u16
 *   0x1C bg_itable_unused     u16
 *   0x1E bg_checksum          u16
 *   (64bit: 0x20 bg_block_bitmap_hi, 0x24 bg_inode_bitmap_hi, 0x28 bg_inode_table_hi,
 *    0x2C bg_free_blocks_count_hi, 0x2E bg_free_inodes_count_hi, 0x30 bg_used_dirs_count_hi ...)
 */
import { CorruptError } from '../errors.js';
import type { Superblock } from './superblock.js';
import { blockSize, groupCount } from './superblock.js';

export interface GroupDesc {
  bg_block_bitmap: number;
  bg_inode_bitmap: number;
  bg_inode_table: number;
  bg_free_blocks_count: number;
  bg_free_inodes_count: number;
  bg_used_dirs_count: number;
  bg_flags: number;
  bg_exclude_bitmap_lo: number;
  bg_block_bitmap_csum_lo: number;
  bg_inode_bitmap_csum_lo: number;
  bg_itable_unused: number;
  bg_checksum: number;
}

export const GROUP_DESC_SIZE = 32;
/** bg_flags: the inode table is known to be zeroed (mke2fs sets it on every group). */
export const EXT2_BG_INODE_ZEROED = 0x0004;

/**
 * The descriptor of a new group (mkfs, resize): its bitmaps and inode table,
 * free counts, no directories, inode table marked zeroed, no checksums.
 */
export function newGroupDesc(
  blockBitmap: number,
  inodeBitmap: number,
  inodeTable: number,
  freeBlocks: number,
  freeInodes: number,
): GroupDesc {
  return {
    bg_block_bitmap: blockBitmap,
    bg_inode_bitmap: inodeBitmap,
    bg_inode_table: inodeTable,
    bg_free_blocks_count: freeBlocks,
    bg_free_inodes_count: freeInodes,
    bg_used_dirs_count: 0,
    bg_flags: EXT2_BG_INODE_ZEROED,
    bg_exclude_bitmap_lo: 0,
    bg_block_bitmap_csum_lo: 0,
    bg_inode_bitmap_csum_lo: 0,
    bg_itable_unused: 0,
    bg_checksum: 0,
  };
}

/** Decodes one descriptor at `off` of `buf`; `size` is 32 or s_desc_size. */
export function decodeGroupDesc(buf: Buffer, off = 0, size = GROUP_DESC_SIZE): GroupDesc {
  if (off < 0 || off + size > buf.length || size < GROUP_DESC_SIZE) {
    throw new CorruptError(`group descriptor at ${off} runs past its ${buf.length}-byte block`);
  }
  const hi32 = (o: number) => (size >= 64 ? buf.readUInt32LE(off + o) * 0x100000000 : 0);
  const hi16 = (o: number) => (size >= 64 ? buf.readUInt16LE(off + o) * 0x10000 : 0);
  return {
    bg_block_bitmap: buf.readUInt32LE(off + 0x00) + hi32(0x20),
    bg_inode_bitmap: buf.readUInt32LE(off + 0x04) + hi32(0x24),
    bg_inode_table: buf.readUInt32LE(off + 0x08) + hi32(0x28),
    bg_free_blocks_count: buf.readUInt16LE(off + 0x0c) + hi16(0x2c),
    bg_free_inodes_count: buf.readUInt16LE(off + 0x0e) + hi16(0x2e),
    bg_used_dirs_count: buf.readUInt16LE(off + 0x10) + hi16(0x30),
    bg_flags: buf.readUInt16LE(off + 0x12),
    bg_exclude_bitmap_lo: buf.readUInt32LE(off + 0x14),
    bg_block_bitmap_csum_lo: buf.readUInt16LE(off + 0x18),
    bg_inode_bitmap_csum_lo: buf.readUInt16LE(off + 0x1a),
    bg_itable_unused: buf.readUInt16LE(off + 0x1c),
    bg_checksum: buf.readUInt16LE(off + 0x1e),
  };
}

/** Encodes a 32-byte descriptor into `buf` at `off` (the low halves only). */
export function encodeGroupDesc(gd: GroupDesc, buf: Buffer = Buffer.alloc(GROUP_DESC_SIZE), off = 0): Buffer {
  buf.writeUInt32LE(gd.bg_block_bitmap >>> 0, off + 0x00);
  buf.writeUInt32LE(gd.bg_inode_bitmap >>> 0, off + 0x04);
  buf.writeUInt32LE(gd.bg_inode_table >>> 0, off + 0x08);
  buf.writeUInt16LE(gd.bg_free_blocks_count & 0xffff, off + 0x0c);
  buf.writeUInt16LE(gd.bg_free_inodes_count & 0xffff, off + 0x0e);
  buf.writeUInt16LE(gd.bg_used_dirs_count & 0xffff, off + 0x10);
  buf.writeUInt16LE(gd.bg_flags, off + 0x12);
  buf.writeUInt32LE(gd.bg_exclude_bitmap_lo >>> 0, off + 0x14);
  buf.writeUInt16LE(gd.bg_block_bitmap_csum_lo, off + 0x18);
  buf.writeUInt16LE(gd.bg_inode_bitmap_csum_lo, off + 0x1a);
  buf.writeUInt16LE(gd.bg_itable_unused, off + 0x1c);
  buf.writeUInt16LE(gd.bg_checksum, off + 0x1e);
  return buf;
}

/** Blocks holding the descriptor table (without reserved GDT blocks). */
export function gdtBlockCount(sb: Superblock, descSize: number): number {
  return Math.ceil((groupCount(sb) * descSize) / blockSize(sb));
}

/**
 * Checks that a group's bitmaps and inode table lie inside the filesystem
 * and do not overlap its superblock/GDT area, so later reads and writes of
 * them are safe.
 */
export function validateGroupDesc(sb: Superblock, g: number, gd: GroupDesc, inodeTableBlocks: number): void {
  const bad = (what: string) => {
    throw new CorruptError(`group ${g} descriptor: ${what}`);
  };
  const total = sb.s_blocks_count;
  const first = sb.s_first_data_block;
  const inRange = (b: number) => b >= first && b < total;
  if (!inRange(gd.bg_block_bitmap)) bad(`block bitmap at ${gd.bg_block_bitmap} outside the filesystem`);
  if (!inRange(gd.bg_inode_bitmap)) bad(`inode bitmap at ${gd.bg_inode_bitmap} outside the filesystem`);
  if (!inRange(gd.bg_inode_table) || gd.bg_inode_table + inodeTableBlocks > total) {
    bad(`inode table at ${gd.bg_inode_table} (+${inodeTableBlocks}) outside the filesystem`);
  }
  if (gd.bg_block_bitmap === gd.bg_inode_bitmap) bad('block and inode bitmaps share a block');
  if (gd.bg_free_inodes_count > sb.s_inodes_per_group) bad(`${gd.bg_free_inodes_count} free inodes of ${sb.s_inodes_per_group}`);
  if (gd.bg_free_blocks_count > sb.s_blocks_per_group) bad(`${gd.bg_free_blocks_count} free blocks of ${sb.s_blocks_per_group}`);
}
