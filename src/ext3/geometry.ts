/**
 * Where things are in an ext2/ext3 image, from the superblock alone: the one
 * place for inode-table and group-descriptor arithmetic.
 *
 *  inode N (1-based) -> group (N-1) / s_inodes_per_group,
 *                       slot  (N-1) % s_inodes_per_group,
 *                       byte  slot * inode size within that group's inode table
 *  group g's descriptor -> GDT block s_first_data_block + 1 + (g * desc size) / block size
 */
import type { Superblock } from './superblock.js';
import { blockSize, descSize, inodeSize } from './superblock.js';

/** The group holding inode `ino`. */
export function inodeGroup(sb: Superblock, ino: number): number {
  return Math.floor((ino - 1) / sb.s_inodes_per_group);
}

/** Inode `ino`'s slot within its group's inode table (and bit in its inode bitmap). */
export function inodeIndex(sb: Superblock, ino: number): number {
  return (ino - 1) % sb.s_inodes_per_group;
}

/** Blocks of one group's inode table. */
export function inodeTableBlocks(sb: Superblock): number {
  return Math.ceil((sb.s_inodes_per_group * inodeSize(sb)) / blockSize(sb));
}

/** The block holding inode `ino` and its byte offset there, given its group's inode table start. */
export function inodeLocation(sb: Superblock, tableStart: number, ino: number): { block: number; off: number } {
  const bs = blockSize(sb);
  const byte = inodeIndex(sb, ino) * inodeSize(sb);
  return { block: tableStart + Math.floor(byte / bs), off: byte % bs };
}

/** The GDT block holding group `g`'s descriptor (primary copy). */
export function gdtBlockOf(sb: Superblock, g: number): number {
  return sb.s_first_data_block + 1 + Math.floor((g * descSize(sb)) / blockSize(sb));
}

/** Byte offset of group `g`'s descriptor within its GDT block. */
export function gdtOffsetOf(sb: Superblock, g: number): number {
  return (g * descSize(sb)) % blockSize(sb);
}
