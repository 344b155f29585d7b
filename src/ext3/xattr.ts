/**
 * Extended attributes (e2fsprogs lib/ext2fs/ext_attr.c, fs/ext4/xattr.[ch]).
 *
 * Two places hold them:
 * - in the inode body, after 128 + i_extra_isize: u32 magic 0xEA020000, then
 *   entries; value offsets count from the first entry; values are packed at
 *   the end of the inode record;
 * - in one xattr block (i_file_acl), possibly shared by several inodes:
 *     0x00 h_magic 0xEA020000  0x04 h_refcount  0x08 h_blocks (1)  0x0C h_hash
 *     0x10 h_checksum          0x14 reserved[3]   entries from 0x20;
 *   value offsets count from the block start; values packed from the end.
 *
 * Entry (`struct ext2_ext_attr_entry`, 16 bytes + name padded to 4):
 *     0x0 e_name_len u8  0x1 e_name_index u8  0x2 e_value_offs u16
 *     0x4 e_value_inum u32 (ea_inode; refused)  0x8 e_value_size u32  0xC e_hash u32
 * A u32 zero ends the entry list. The name index stands for a prefix
 * ("user.", "trusted.", ...), and index 2/3 are the POSIX ACLs (acl.ts).
 */
import { CorruptError } from '../errors.js';

export const EXT2_EXT_ATTR_MAGIC = 0xea020000;
export const XATTR_BLOCK_HEADER = 0x20;
export const XATTR_ENTRY_HEADER = 16;

export const XATTR_INDEX_USER = 1;
export const XATTR_INDEX_POSIX_ACL_ACCESS = 2;
export const XATTR_INDEX_POSIX_ACL_DEFAULT = 3;
export const XATTR_INDEX_TRUSTED = 4;
export const XATTR_INDEX_SECURITY = 6;
export const XATTR_INDEX_SYSTEM = 7;

/**
 * Index -> prefix bytes; the ACL indexes name a whole attribute (empty
 * suffix). Names are bytes end to end: the prefix is matched on bytes and the
 * suffix stored as given (the kernel's ext4_xattr_set_handle does the same).
 */
const PREFIXES: [number, Buffer][] = (
  [
    [XATTR_INDEX_POSIX_ACL_ACCESS, 'system.posix_acl_access'],
    [XATTR_INDEX_POSIX_ACL_DEFAULT, 'system.posix_acl_default'],
    [XATTR_INDEX_USER, 'user.'],
    [XATTR_INDEX_TRUSTED, 'trusted.'],
    [XATTR_INDEX_SECURITY, 'security.'],
    [XATTR_INDEX_SYSTEM, 'system.'],
  ] as const
).map(([i, p]) => [i, Buffer.from(p)]);

export interface XattrEntry {
  index: number;
  /** The name after the prefix (bytes as stored). */
  name: Buffer;
  value: Buffer;
}

export function xattrEntrySize(nameLen: number): number {
  return (XATTR_ENTRY_HEADER + nameLen + 3) & ~3;
}

export function xattrValueSize(len: number): number {
  return (len + 3) & ~3;
}

/** The full name users see (prefix + stored suffix bytes), or null for an index we do not know. */
export function fullXattrName(index: number, name: Buffer): Buffer | null {
  for (const [i, prefix] of PREFIXES) if (i === index) return Buffer.concat([prefix, name]);
  return null;
}

/** Splits a full name into index and stored suffix (a copy); null if no prefix matches. */
export function splitXattrName(full: Buffer): { index: number; name: Buffer } | null {
  for (const [i, prefix] of PREFIXES) {
    if (i === XATTR_INDEX_POSIX_ACL_ACCESS || i === XATTR_INDEX_POSIX_ACL_DEFAULT) {
      if (full.equals(prefix)) return { index: i, name: Buffer.alloc(0) };
      continue;
    }
    if (full.length > prefix.length && full.subarray(0, prefix.length).equals(prefix)) {
      return { index: i, name: Buffer.from(full.subarray(prefix.length)) };
    }
  }
  return null;
}

/** ext2_xattr_hash_entry: name bytes (unsigned) then value words. */
export function xattrEntryHash(name: Buffer, value: Buffer): number {
  let hash = 0;
  for (let i = 0; i < name.length; i++) {
    hash = ((hash << 5) ^ (hash >>> 27) ^ name[i]!) >>> 0;
  }
  const words = Math.ceil(value.length / 4);
  for (let w = 0; w < words; w++) {
    let word = 0;
    for (let b = 0; b < 4; b++) {
      const i = w * 4 + b;
      word |= (i < value.length ? value[i]! : 0) << (8 * b);
    }
    hash = ((hash << 16) ^ (hash >>> 16) ^ (word >>> 0)) >>> 0;
  }
  return hash >>> 0;
}

/** ext2_xattr_rehash: the block hash over the entry hashes (0 if any is 0). */
export function xattrBlockHash(hashes: number[]): number {
  let hash = 0;
  for (const h of hashes) {
    if (h === 0) return 0;
    hash = ((hash << 16) ^ (hash >>> 16) ^ h) >>> 0;
  }
  return hash >>> 0;
}

/**
 * Decodes entries from `buf[start, end)`; value offsets are relative to
 * `valueBase`. Every entry and value must lie inside [start, end).
 */
function decodeEntries(buf: Buffer, start: number, end: number, valueBase: number, where: string): XattrEntry[] {
  const out: XattrEntry[] = [];
  let off = start;
  // At most (end-start)/16 entries: the offset strictly grows.
  while (true) {
    if (off + 4 > end) throw new CorruptError(`${where}: xattr entries run past the end`);
    if (buf.readUInt32LE(off) === 0) break;
    if (off + XATTR_ENTRY_HEADER > end) throw new CorruptError(`${where}: xattr entry header runs past the end`);
    const nameLen = buf.readUInt8(off);
    const index = buf.readUInt8(off + 1);
    const valueOffs = buf.readUInt16LE(off + 2);
    const valueInum = buf.readUInt32LE(off + 4);
    const valueSize = buf.readUInt32LE(off + 8);
    const size = xattrEntrySize(nameLen);
    if (nameLen === 0 && index !== XATTR_INDEX_POSIX_ACL_ACCESS && index !== XATTR_INDEX_POSIX_ACL_DEFAULT) {
      throw new CorruptError(`${where}: xattr entry with an empty name`);
    }
    if (off + size > end) throw new CorruptError(`${where}: xattr name runs past the end`);
    if (valueInum !== 0) throw new CorruptError(`${where}: xattr value in an EA inode (ea_inode) is not supported`);
    const vStart = valueBase + valueOffs;
    if (valueSize > 0 && (vStart < start || vStart + valueSize > end)) {
      throw new CorruptError(`${where}: xattr value at ${valueOffs} (+${valueSize}) outside its area`);
    }
    out.push({
      index,
      name: Buffer.from(buf.subarray(off + XATTR_ENTRY_HEADER, off + XATTR_ENTRY_HEADER + nameLen)),
      value: Buffer.from(buf.subarray(vStart, vStart + valueSize)),
    });
    off += size;
  }
  return out;
}

/**
 * Lays out entries in [start, end) of `buf` (zeroing it first): entries from
 * `start`, a zero terminator, values from `end` downwards. Returns the entry
 * hashes, or null when the entries do not fit.
 */
function encodeEntries(buf: Buffer, start: number, end: number, valueBase: number, entries: XattrEntry[]): number[] | null {
  let need = 4;
  for (const e of entries) need += xattrEntrySize(e.name.length) + xattrValueSize(e.value.length);
  if (need > end - start) return null;
  buf.fill(0, start, end);
  let off = start;
  let vEnd = end;
  const hashes: number[] = [];
  for (const e of entries) {
    const vsz = xattrValueSize(e.value.length);
    let vOff = 0;
    if (e.value.length > 0) {
      vEnd -= vsz;
      e.value.copy(buf, vEnd);
      vOff = vEnd - valueBase;
    }
    const hash = xattrEntryHash(e.name, e.value);
    buf.writeUInt8(e.name.length, off);
    buf.writeUInt8(e.index, off + 1);
    buf.writeUInt16LE(vOff, off + 2);
    buf.writeUInt32LE(0, off + 4);
    buf.writeUInt32LE(e.value.length, off + 8);
    buf.writeUInt32LE(hash, off + 12);
    e.name.copy(buf, off + XATTR_ENTRY_HEADER);
    hashes.push(hash);
    off += xattrEntrySize(e.name.length);
  }
  return hashes;
}

/** Where in-inode xattrs start in a record, or -1 for 128-byte inodes. */
export function inodeXattrStart(inodeSize: number, extraIsize: number): number {
  if (inodeSize <= 128) return -1;
  return 128 + extraIsize;
}

/** In-inode xattrs of an inode record (empty without the magic). */
export function decodeInodeXattrs(raw: Buffer, extraIsize: number): XattrEntry[] {
  const start = inodeXattrStart(raw.length, extraIsize);
  if (start < 0 || start + 4 > raw.length) return [];
  if (raw.readUInt32LE(start) !== EXT2_EXT_ATTR_MAGIC) return [];
  return decodeEntries(raw, start + 4, raw.length, start + 4, 'in-inode xattrs');
}

/** Bytes available for in-inode entries + values (after the magic and the 4-byte end marker). */
export function inodeXattrCapacity(inodeSize: number, extraIsize: number): number {
  const start = inodeXattrStart(inodeSize, extraIsize);
  return start < 0 ? 0 : Math.max(0, inodeSize - start - 8);
}

/** Rewrites the in-inode xattr area of `raw`; false if they do not fit. */
export function encodeInodeXattrs(raw: Buffer, extraIsize: number, entries: XattrEntry[]): boolean {
  const start = inodeXattrStart(raw.length, extraIsize);
  if (start < 0 || start + 4 > raw.length) return entries.length === 0;
  if (entries.length === 0) {
    raw.fill(0, start);
    return true;
  }
  const scratch = Buffer.from(raw);
  if (!encodeEntries(scratch, start + 4, raw.length, start + 4, entries)) return false;
  scratch.writeUInt32LE(EXT2_EXT_ATTR_MAGIC, start);
  scratch.copy(raw);
  return true;
}

export interface XattrBlock {
  refcount: number;
  entries: XattrEntry[];
}

export function decodeXattrBlock(block: Buffer): XattrBlock {
  if (block.length < XATTR_BLOCK_HEADER + 4) throw new CorruptError('xattr block too small');
  const magic = block.readUInt32LE(0);
  if (magic !== EXT2_EXT_ATTR_MAGIC) throw new CorruptError(`xattr block magic 0x${magic.toString(16)}`);
  const blocks = block.readUInt32LE(8);
  if (blocks !== 1) throw new CorruptError(`xattr block h_blocks ${blocks}, want 1`);
  return {
    refcount: block.readUInt32LE(4),
    entries: decodeEntries(block, XATTR_BLOCK_HEADER, block.length, 0, 'xattr block'),
  };
}

/**
 * Encodes a whole xattr block, entries sorted as the kernel keeps them
 * (index, name length, name); null when they do not fit.
 */
export function encodeXattrBlock(blockSize: number, refcount: number, entries: XattrEntry[]): Buffer | null {
  const sorted = [...entries].sort(
    (a, b) => a.index - b.index || a.name.length - b.name.length || Buffer.compare(a.name, b.name),
  );
  const block = Buffer.alloc(blockSize);
  const hashes = encodeEntries(block, XATTR_BLOCK_HEADER, blockSize, 0, sorted);
  if (!hashes) return null;
  block.writeUInt32LE(EXT2_EXT_ATTR_MAGIC, 0);
  block.writeUInt32LE(refcount, 4);
  block.writeUInt32LE(1, 8);
  block.writeUInt32LE(xattrBlockHash(hashes), 0x0c);
  return block;
}

/** Whether `entries` fit one block of `blockSize`. */
export function fitsXattrBlock(blockSize: number, entries: XattrEntry[]): boolean {
  let need = XATTR_BLOCK_HEADER + 4;
  for (const e of entries) need += xattrEntrySize(e.name.length) + xattrValueSize(e.value.length);
  return need <= blockSize;
}
