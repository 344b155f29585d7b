/**
 * Hashed (htree, dir_index) directories: reading the index to find the one
 * leaf block a name can be in (fs/ext4/namei.c dx_probe, e2fsprogs
 * lib/ext2fs/dirhash.c). Logical block 0 of an indexed directory is the
 * dx_root; to a linear reader it looks like "." and a ".." spanning the block:
 *
 *   0x00 "." dirent (rec_len 12)   0x0C ".." dirent (rec_len blocksize - 12)
 *   0x18 dx_root_info: reserved_zero u32, hash_version u8, info_length u8 (8),
 *        indirect_levels u8, unused_flags u8
 *   0x20 limit u16, count u16, block u32   (entry 0: hash 0 implied)
 *   0x28 { hash u32, block u32 } x (count - 1), sorted by hash
 * Interior dx_node blocks: an empty dirent (inode 0, rec_len blocksize), then
 * the same limit/count/entries at 0x08. Leaf blocks are ordinary dirent
 * blocks. Bit 0 of an entry's hash marks a hash collision continuing from the
 * previous leaf.
 *
 * The engine keeps every change linear (it clears EXT2_INDEX_FL before the
 * first change, which leaves valid linear blocks), so this module only reads.
 */
import { CorruptError } from '../errors.js';
import { EXT2_HASH_HALF_MD4, EXT2_HASH_LEGACY, EXT2_HASH_TEA } from './superblock.js';

/** Hash versions incl. the unsigned-char variants (s_flags EXT2_FLAGS_UNSIGNED_HASH adds 3). */
export const EXT2_HASH_LEGACY_UNSIGNED = 3;
export const EXT2_HASH_HALF_MD4_UNSIGNED = 4;
export const EXT2_HASH_TEA_UNSIGNED = 5;

function charAt(name: Buffer, i: number, unsigned: boolean): number {
  const c = name[i]!;
  return unsigned || c < 128 ? c : c - 256;
}

function dxHackHash(name: Buffer, unsigned: boolean): number {
  let hash0 = 0x12a3fe2d;
  let hash1 = 0x37abe8f9;
  for (let i = 0; i < name.length; i++) {
    const c = charAt(name, i, unsigned);
    let hash = (hash1 + ((hash0 ^ Math.imul(c, 7152373)) >>> 0)) >>> 0;
    if (hash & 0x80000000) hash = (hash - 0x7fffffff) >>> 0;
    hash1 = hash0;
    hash0 = hash;
  }
  return (hash0 << 1) >>> 0;
}

/** str2hashbuf: packs up to num*4 name bytes into num words, padded with the length. */
function str2hashbuf(name: Buffer, start: number, len: number, num: number, unsigned: boolean): number[] {
  const out: number[] = [];
  let pad = (len | (len << 8)) >>> 0;
  pad = (pad | (pad << 16)) >>> 0;
  let val = pad;
  const n = Math.min(len, num * 4);
  let left = num;
  for (let i = 0; i < n; i++) {
    val = (charAt(name, start + i, unsigned) + ((val << 8) >>> 0)) >>> 0;
    if (i % 4 === 3) {
      out.push(val);
      val = pad;
      left--;
    }
  }
  if (--left >= 0) out.push(val);
  while (--left >= 0) out.push(pad);
  return out;
}

const rotl = (x: number, s: number) => ((x << s) | (x >>> (32 - s))) >>> 0;

function halfMD4Transform(buf: number[], inp: number[]): void {
  let [a, b, c, d] = buf as [number, number, number, number];
  const F = (x: number, y: number, z: number) => (z ^ (x & (y ^ z))) >>> 0;
  const G = (x: number, y: number, z: number) => (((x & y) >>> 0) + (((x ^ y) & z) >>> 0)) >>> 0;
  const H = (x: number, y: number, z: number) => (x ^ y ^ z) >>> 0;
  const K2 = 0o13240474631;
  const K3 = 0o15666365641;
  const R = (f: typeof F, w: number, x: number, y: number, z: number, k: number, s: number) =>
    rotl((w + f(x, y, z) + k) >>> 0, s);
  a = R(F, a, b, c, d, inp[0]!, 3);
  d = R(F, d, a, b, c, inp[1]!, 7);
  c = R(F, c, d, a, b, inp[2]!, 11);
  b = R(F, b, c, d, a, inp[3]!, 19);
  a = R(F, a, b, c, d, inp[4]!, 3);
  d = R(F, d, a, b, c, inp[5]!, 7);
  c = R(F, c, d, a, b, inp[6]!, 11);
  b = R(F, b, c, d, a, inp[7]!, 19);
  a = R(G, a, b, c, d, (inp[1]! + K2) >>> 0, 3);
  d = R(G, d, a, b, c, (inp[3]! + K2) >>> 0, 5);
  c = R(G, c, d, a, b, (inp[5]! + K2) >>> 0, 9);
  b = R(G, b, c, d, a, (inp[7]! + K2) >>> 0, 13);
  a = R(G, a, b, c, d, (inp[0]! + K2) >>> 0, 3);
  d = R(G, d, a, b, c, (inp[2]! + K2) >>> 0, 5);
  c = R(G, c, d, a, b, (inp[4]! + K2) >>> 0, 9);
  b = R(G, b, c, d, a, (inp[6]! + K2) >>> 0, 13);
  a = R(H, a, b, c, d, (inp[3]! + K3) >>> 0, 3);
  d = R(H, d, a, b, c, (inp[7]! + K3) >>> 0, 9);
  c = R(H, c, d, a, b, (inp[2]! + K3) >>> 0, 11);
  b = R(H, b, c, d, a, (inp[6]! + K3) >>> 0, 15);
  a = R(H, a, b, c, d, (inp[1]! + K3) >>> 0, 3);
  d = R(H, d, a, b, c, (inp[5]! + K3) >>> 0, 9);
  c = R(H, c, d, a, b, (inp[0]! + K3) >>> 0, 11);
  b = R(H, b, c, d, a, (inp[4]! + K3) >>> 0, 15);
  buf[0] = (buf[0]! + a) >>> 0;
  buf[1] = (buf[1]! + b) >>> 0;
  buf[2] = (buf[2]! + c) >>> 0;
  buf[3] = (buf[3]! + d) >>> 0;
}

function teaTransform(buf: number[], inp: number[]): void {
  let sum = 0;
  let b0 = buf[0]!;
  let b1 = buf[1]!;
  const [a, b, c, d] = inp as [number, number, number, number];
  for (let n = 0; n < 16; n++) {
    sum = (sum + 0x9e3779b9) >>> 0;
    b0 = (b0 + ((((b1 << 4) + a) ^ (b1 + sum) ^ ((b1 >>> 5) + b)) >>> 0)) >>> 0;
    b1 = (b1 + ((((b0 << 4) + c) ^ (b0 + sum) ^ ((b0 >>> 5) + d)) >>> 0)) >>> 0;
  }
  buf[0] = (buf[0]! + b0) >>> 0;
  buf[1] = (buf[1]! + b1) >>> 0;
}

/**
 * ext2fs_dirhash: the major hash (bit 0 cleared) of `name` for a hash
 * version 0-5 and the superblock's s_hash_seed; null for an unknown version.
 */
export function dirHash(version: number, name: Buffer, seed: readonly number[]): number | null {
  const buf = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
  if (seed.some((w) => w !== 0)) for (let i = 0; i < 4; i++) buf[i] = seed[i]! >>> 0;
  let hash: number;
  switch (version) {
    case EXT2_HASH_LEGACY:
    case EXT2_HASH_LEGACY_UNSIGNED:
      hash = dxHackHash(name, version === EXT2_HASH_LEGACY_UNSIGNED);
      break;
    case EXT2_HASH_HALF_MD4:
    case EXT2_HASH_HALF_MD4_UNSIGNED: {
      const unsigned = version === EXT2_HASH_HALF_MD4_UNSIGNED;
      for (let p = 0, len = name.length; len > 0; len -= 32, p += 32) {
        halfMD4Transform(buf, str2hashbuf(name, p, len, 8, unsigned));
      }
      hash = buf[1]!;
      break;
    }
    case EXT2_HASH_TEA:
    case EXT2_HASH_TEA_UNSIGNED: {
      const unsigned = version === EXT2_HASH_TEA_UNSIGNED;
      for (let p = 0, len = name.length; len > 0; len -= 16, p += 16) {
        teaTransform(buf, str2hashbuf(name, p, len, 4, unsigned));
      }
      hash = buf[0]!;
      break;
    }
    default:
      return null;
  }
  return (hash & ~1) >>> 0;
}

export interface DxEntry {
  hash: number;
  block: number;
}

export interface DxRoot {
  hashVersion: number;
  levels: number;
  entries: DxEntry[];
}

function decodeEntries(block: Buffer, off: number, what: string): DxEntry[] {
  if (off + 8 > block.length) throw new CorruptError(`${what}: index header outside the block`);
  const limit = block.readUInt16LE(off);
  const count = block.readUInt16LE(off + 2);
  if (count === 0 || count > limit || off + 8 * limit > block.length) {
    throw new CorruptError(`${what}: index count ${count}, limit ${limit}`);
  }
  const out: DxEntry[] = [{ hash: 0, block: block.readUInt32LE(off + 4) }];
  for (let i = 1; i < count; i++) {
    out.push({ hash: block.readUInt32LE(off + 8 * i), block: block.readUInt32LE(off + 8 * i + 4) });
  }
  return out;
}

/** Decodes the dx_root in logical block 0 of an indexed directory. */
export function decodeDxRoot(block: Buffer): DxRoot {
  if (block.length < 0x28) throw new CorruptError('dx_root block too small');
  const infoLength = block.readUInt8(0x1d);
  const levels = block.readUInt8(0x1e);
  if (block.readUInt32LE(0x18) !== 0 || infoLength !== 8) throw new CorruptError('dx_root info is invalid');
  if (levels > 2) throw new CorruptError(`dx_root has ${levels} indirect levels`);
  return { hashVersion: block.readUInt8(0x1c), levels, entries: decodeEntries(block, 0x18 + infoLength, 'dx_root') };
}

export function decodeDxNode(block: Buffer): DxEntry[] {
  if (block.readUInt32LE(0) !== 0) throw new CorruptError('dx_node does not start with an empty record');
  return decodeEntries(block, 8, 'dx_node');
}

/** Index of the last entry whose hash is <= `hash` (entry 0 has hash 0). */
export function dxSearch(entries: DxEntry[], hash: number): number {
  let lo = 1;
  let hi = entries.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    if (entries[mid]!.hash > hash) hi = mid - 1;
    else lo = mid + 1;
  }
  return lo - 1;
}
