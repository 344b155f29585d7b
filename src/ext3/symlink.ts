/**
 * Symlink targets. A "fast" symlink keeps its target in i_block itself (60
 * bytes, so targets up to 59 bytes: the kernel stores a terminating NUL
 * only conceptually); a "slow" one keeps it in one data block. Which one an
 * inode is follows ext2fs_is_fast_symlink / the kernel: size < 60 and no
 * data blocks (i_blocks minus an xattr block is zero).
 */
import { CorruptError } from '../errors.js';
import type { Inode } from './inode.js';
import { EXT2_N_BLOCKS } from './inode.js';

export const FAST_SYMLINK_MAX = EXT2_N_BLOCKS * 4 - 1;

export function isFastSymlink(inode: Inode, blockSize: number): boolean {
  const eaBlocks = inode.i_file_acl !== 0 ? blockSize / 512 : 0;
  return inode.i_size <= FAST_SYMLINK_MAX && inode.i_blocks - eaBlocks === 0;
}

/** The target held in i_block. */
export function decodeFastSymlink(inode: Inode): Buffer {
  const raw = Buffer.alloc(EXT2_N_BLOCKS * 4);
  for (let i = 0; i < EXT2_N_BLOCKS; i++) raw.writeUInt32LE(inode.i_block[i]! >>> 0, 4 * i);
  if (inode.i_size > raw.length) throw new CorruptError(`fast symlink size ${inode.i_size}`);
  return raw.subarray(0, inode.i_size);
}

/** i_block words for a fast symlink target (< 60 bytes). */
export function encodeFastSymlink(target: Buffer): number[] {
  const raw = Buffer.alloc(EXT2_N_BLOCKS * 4);
  target.copy(raw);
  const out: number[] = [];
  for (let i = 0; i < EXT2_N_BLOCKS; i++) out.push(raw.readUInt32LE(4 * i));
  return out;
}

/** The target held in a slow symlink's block. */
export function decodeSlowSymlink(inode: Inode, block: Buffer): Buffer {
  if (inode.i_size >= block.length) throw new CorruptError(`symlink size ${inode.i_size} exceeds its block`);
  return Buffer.from(block.subarray(0, inode.i_size));
}
