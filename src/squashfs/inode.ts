import { CorruptError } from '../errors.js';
import { typeBits, type FileType } from '../engine.js';
import { u16, u32 } from './le.js';
import type { SyncMetaCursor } from './metablock.js';

/**
 * Inodes (squashfs_fs.h). Every inode starts with the same 16-byte header,
 * followed by a type-specific body; types 8-14 are the "extended" (l*) forms
 * with wider fields, an nlink or an xattr index.
 *
 *   header  0x00 u16 inode_type  0x02 u16 mode  0x04 u16 uid (id index)
 *           0x06 u16 guid        0x08 u32 mtime 0x0C u32 inode_number
 *
 *   1  dir       u32 start_block, u32 nlink, u16 file_size, u16 offset, u32 parent_inode
 *   8  ldir      u32 nlink, u32 file_size, u32 start_block, u32 parent_inode,
 *                u16 i_count, u16 offset, u32 xattr, then i_count index entries:
 *                u32 index, u32 start_block, u32 size, name[size + 1]
 *   2  reg       u32 start_block, u32 fragment, u32 offset, u32 file_size, u32 block_list[]
 *   9  lreg      u64 start_block, u64 file_size, u64 sparse, u32 nlink, u32 fragment,
 *                u32 offset, u32 xattr, u32 block_list[]
 *   3  symlink   u32 nlink, u32 symlink_size, symlink[symlink_size]
 *   10 lsymlink  same, then u32 xattr
 *   4/5  blkdev/chrdev    u32 nlink, u32 rdev          11/12: then u32 xattr
 *   6/7  fifo/socket      u32 nlink                    13/14: then u32 xattr
 *
 * block_list has one u32 per full block, plus one for the tail when the file
 * has no fragment (fragment == 0xFFFFFFFF). Each u32: bits 0-23 on-disk size
 * (0 = a sparse block of zeros), bit 24 set = stored uncompressed.
 */

export const SQUASHFS_INVALID_FRAG = 0xffffffff;
/** Block size entries (block_list, fragment entries): bit 24 = stored uncompressed. */
export const BLOCK_UNCOMPRESSED = 1 << 24;
/** Block size entries: bits 0-23 hold the on-disk size. */
export const BLOCK_SIZE_MASK = 0xffffff;
export const SQUASHFS_INVALID_XATTR = 0xffffffff;
export const INODE_HEADER_SIZE = 16;
const EMPTY_BLOCKS = new Uint32Array(0);

const TYPE_LETTER: Record<number, FileType> = { 1: 'd', 2: 'f', 3: 'l', 4: 'b', 5: 'c', 6: 'p', 7: 's' };

/** The FileType of a basic inode / directory entry type (1-7), or null. */
export function fileTypeOfInodeType(type: number): FileType | null {
  return TYPE_LETTER[type > 7 ? type - 7 : type] ?? null;
}

export interface DirIndexEntry {
  /** Byte offset of the directory header, relative to the listing's start. */
  index: number;
  /** That header's metadata block, relative to directory_table_start. */
  startBlock: number;
  /** First name under that header. */
  name: Buffer;
}

interface InodeCommon {
  /** inode_type, 1-14 */
  inodeType: number;
  /** Full st_mode (type bits from inode_type | stored permission bits). */
  mode: number;
  uidIndex: number;
  gidIndex: number;
  mtime: number;
  inodeNumber: number;
  nlink: number;
  /** xattr index, or SQUASHFS_INVALID_XATTR */
  xattr: number;
}

export interface DirInode extends InodeCommon {
  kind: 'd';
  /** Directory listing location: metadata block relative to directory_table_start, and offset. */
  startBlock: number;
  offset: number;
  /** file_size: listing bytes + 3 (mksquashfs counts "." and ".."). */
  fileSize: number;
  parentInode: number;
  index: DirIndexEntry[];
}

export interface FileInode extends InodeCommon {
  kind: 'f';
  /** Absolute position of the first data block. */
  startBlock: number;
  fileSize: number;
  /** Bytes saved by sparse blocks (extended inodes only, else 0). */
  sparse: number;
  fragment: number;
  fragmentOffset: number;
  /** One entry per data block (see header comment). */
  blockSizes: Uint32Array;
}

export interface SymlinkInode extends InodeCommon {
  kind: 'l';
  target: Buffer;
}

export interface DeviceInode extends InodeCommon {
  kind: 'b' | 'c';
  /** rdev as stored: Linux new_encode_dev(major, minor). */
  rdev: number;
}

export interface IpcInode extends InodeCommon {
  kind: 'p' | 's';
}

export type Inode = DirInode | FileInode | SymlinkInode | DeviceInode | IpcInode;

/** Limits from the image, so no decoded count can make us allocate or loop beyond it. */
export interface InodeLimits {
  blockSize: number;
  blockLog: number;
  /** bytes_used: no file's stored blocks or table can be larger. */
  imageSize: number;
  /** Size of the directory table region (bounds directory file_size and index). */
  directoryTableSize: number;
  /** Size of the inode table region (bounds block lists). */
  inodeTableSize: number;
  fragments: number;
  inodes: number;
}

/** Approximate memory held by a decoded inode, for the byte-bounded inode cache. */
export function inodeCost(inode: Inode): number {
  switch (inode.kind) {
    case 'f':
      return 120 + inode.blockSizes.byteLength;
    case 'd': {
      // A loop, not reduce: an index-less directory's empty array and a filled
      // one have different maps, which deoptimized the hot caller (readdirplus).
      let n = 120;
      for (let i = 0; i < inode.index.length; i++) n += 48 + inode.index[i]!.name.length;
      return n;
    }
    case 'l':
      return 120 + inode.target.length;
    default:
      return 120;
  }
}

/**
 * Decodes one inode at the cursor (positioned at its header). Synchronous: the
 * cursor reads decompressed metadata blocks already at hand and throws
 * MissingBlock for one that is not; the caller loads it and decodes again
 * (fs.ts), so a cached inode block costs no promise per field.
 */
export function readInode(cur: SyncMetaCursor, limits: InodeLimits): Inode {
  // Fields are read straight from the cursor's bytes (cur.at): no view and no
  // Buffer method call per field, which a fresh daemon runs uncompiled.
  let o = cur.at(INODE_HEADER_SIZE);
  let b = cur.bytes;
  const inodeType = u16(b, o);
  const kind = fileTypeOfInodeType(inodeType);
  if (kind === null || inodeType < 1 || inodeType > 14) throw new CorruptError(`inode has invalid type ${inodeType}`);
  const inodeNumber = u32(b, o + 0x0c);
  if (inodeNumber === 0 || inodeNumber > limits.inodes) {
    throw new CorruptError(`inode number ${inodeNumber} is outside 1..${limits.inodes}`);
  }
  // Each kind is built as one object literal: spreading a shared header
  // object measured 100x slower (about 20 us per inode) in V8.
  const mode = typeBits(kind) | (u16(b, o + 0x02) & 0o7777);
  const uidIndex = u16(b, o + 0x04);
  const gidIndex = u16(b, o + 0x06);
  const mtime = u32(b, o + 0x08);
  const noXattr = SQUASHFS_INVALID_XATTR;
  switch (inodeType) {
    case 1: {
      o = cur.at(16);
      b = cur.bytes;
      return checkDir(
        {
          kind: 'd',
          inodeType,
          mode,
          uidIndex,
          gidIndex,
          mtime,
          inodeNumber,
          startBlock: u32(b, o + 0x00),
          nlink: u32(b, o + 0x04),
          fileSize: u16(b, o + 0x08),
          offset: u16(b, o + 0x0a),
          parentInode: u32(b, o + 0x0c),
          xattr: noXattr,
          index: [],
        },
        limits,
      );
    }
    case 8: {
      o = cur.at(24);
      b = cur.bytes;
      const count = u16(b, o + 0x10);
      const dir: DirInode = checkDir(
        {
          kind: 'd',
          inodeType,
          mode,
          uidIndex,
          gidIndex,
          mtime,
          inodeNumber,
          nlink: u32(b, o + 0x00),
          fileSize: u32(b, o + 0x04),
          startBlock: u32(b, o + 0x08),
          parentInode: u32(b, o + 0x0c),
          offset: u16(b, o + 0x12),
          xattr: u32(b, o + 0x14),
          index: [],
        },
        limits,
      );
      // One index entry per metadata block of listing at most: bounded by
      // the listing's size, checked before reading any of them.
      if (count > Math.ceil(dir.fileSize / 8192) + 1)
        throw new CorruptError(`directory index of ${count} entries is larger than its listing`);
      let prevIndex = -1;
      for (let i = 0; i < count; i++) {
        const e = cur.at(12);
        const eb = cur.bytes;
        const index = u32(eb, e + 0x00);
        const startBlock = u32(eb, e + 0x04);
        const size = u32(eb, e + 0x08) + 1;
        if (size > 256) throw new CorruptError(`directory index name of ${size} bytes is too long`);
        const entry: DirIndexEntry = { index, startBlock, name: Buffer.from(cur.take(size)) };
        if (entry.index <= prevIndex || entry.index >= dir.fileSize - 3)
          throw new CorruptError('directory index entries are out of order');
        prevIndex = entry.index;
        dir.index.push(entry);
      }
      return dir;
    }
    case 2: {
      o = cur.at(16);
      b = cur.bytes;
      return readBlockList(
        cur,
        {
          kind: 'f',
          inodeType,
          mode,
          uidIndex,
          gidIndex,
          mtime,
          inodeNumber,
          nlink: 1,
          xattr: noXattr,
          startBlock: u32(b, o + 0x00),
          fragment: u32(b, o + 0x04),
          fragmentOffset: u32(b, o + 0x08),
          fileSize: u32(b, o + 0x0c),
          sparse: 0,
          blockSizes: EMPTY_BLOCKS,
        },
        limits,
      );
    }
    case 9: {
      o = cur.at(40);
      b = cur.bytes;
      // u64 fields: a high word above 2^21 makes the value unsafe as a number, and is refused.
      const start = u64(b, o + 0x00);
      const size = u64(b, o + 0x08);
      const sparse = u64(b, o + 0x10);
      if (start > limits.imageSize) throw new CorruptError(`file data start ${u64Text(b, o)} lies past the end of the image`);
      if (size > Number.MAX_SAFE_INTEGER) throw new CorruptError(`file size ${u64Text(b, o + 0x08)} is impossible`);
      return readBlockList(
        cur,
        {
          kind: 'f',
          inodeType,
          mode,
          uidIndex,
          gidIndex,
          mtime,
          inodeNumber,
          startBlock: start,
          fileSize: size,
          sparse: sparse > size ? 0 : sparse,
          nlink: u32(b, o + 0x18),
          fragment: u32(b, o + 0x1c),
          fragmentOffset: u32(b, o + 0x20),
          xattr: u32(b, o + 0x24),
          blockSizes: EMPTY_BLOCKS,
        },
        limits,
      );
    }
    case 3:
    case 10: {
      o = cur.at(8);
      b = cur.bytes;
      const nlink = u32(b, o + 0x00);
      const size = u32(b, o + 0x04);
      if (size === 0 || size > 4096) throw new CorruptError(`symlink target of ${size} bytes is invalid`);
      const target = Buffer.from(cur.take(size));
      let xattr = noXattr;
      if (inodeType === 10) {
        o = cur.at(4);
        xattr = u32(cur.bytes, o);
      }
      return { kind: 'l', inodeType, mode, uidIndex, gidIndex, mtime, inodeNumber, nlink, target, xattr };
    }
    case 4:
    case 5:
    case 11:
    case 12: {
      o = cur.at(inodeType > 7 ? 12 : 8);
      b = cur.bytes;
      return {
        kind: kind as 'b' | 'c',
        inodeType,
        mode,
        uidIndex,
        gidIndex,
        mtime,
        inodeNumber,
        nlink: u32(b, o + 0x00),
        rdev: u32(b, o + 0x04),
        xattr: inodeType > 7 ? u32(b, o + 0x08) : noXattr,
      };
    }
    default: {
      o = cur.at(inodeType > 7 ? 8 : 4);
      b = cur.bytes;
      return {
        kind: kind as 'p' | 's',
        inodeType,
        mode,
        uidIndex,
        gidIndex,
        mtime,
        inodeNumber,
        nlink: u32(b, o + 0x00),
        xattr: inodeType > 7 ? u32(b, o + 0x04) : noXattr,
      };
    }
  }
}

/**
 * A u64 as a number: exact up to 2^53; a larger value comes out above
 * Number.MAX_SAFE_INTEGER (the high word scaled), so bound checks refuse it.
 */
function u64(b: Uint8Array, at: number): number {
  const high = u32(b, at + 4);
  return high >= 0x200000 ? Number.MAX_SAFE_INTEGER + 1 + high : high * 0x100000000 + u32(b, at);
}

/** The exact decimal text of a u64, for messages. */
function u64Text(b: Uint8Array, at: number): string {
  return ((BigInt(u32(b, at + 4)) << 32n) | BigInt(u32(b, at))).toString();
}

/** The most a metadata table of `size` bytes on disk can decompress to (8 KiB per block of at least 3 bytes). */
function maxDecompressed(size: number): number {
  return Math.ceil(size / 3) * 8192;
}

function checkDir(dir: DirInode, limits: InodeLimits): DirInode {
  if (dir.fileSize < 3) throw new CorruptError(`directory inode ${dir.inodeNumber} has file_size ${dir.fileSize} < 3`);
  if (dir.fileSize - 3 > maxDecompressed(limits.directoryTableSize)) {
    throw new CorruptError(`directory inode ${dir.inodeNumber} is larger than the directory table`);
  }
  if (dir.offset >= 8192) throw new CorruptError(`directory inode ${dir.inodeNumber} has listing offset ${dir.offset}`);
  if (dir.startBlock >= limits.directoryTableSize) {
    throw new CorruptError(`directory inode ${dir.inodeNumber} listing starts past the directory table`);
  }
  return dir;
}

function readBlockList(cur: SyncMetaCursor, file: FileInode, limits: InodeLimits): FileInode {
  const hasFragment = file.fragment !== SQUASHFS_INVALID_FRAG;
  if (hasFragment && file.fragment >= limits.fragments) {
    throw new CorruptError(`file inode ${file.inodeNumber} uses fragment ${file.fragment}, but there are ${limits.fragments}`);
  }
  if (hasFragment && file.fragmentOffset >= limits.blockSize) {
    throw new CorruptError(`file inode ${file.inodeNumber} has fragment offset ${file.fragmentOffset}`);
  }
  const full = Math.floor(file.fileSize / limits.blockSize);
  const count = hasFragment ? full : Math.ceil(file.fileSize / limits.blockSize);
  // Each block takes 4 bytes of the decompressed inode table: a count the
  // table cannot hold is corrupt, and is refused before reading. The cursor
  // copies only once every block it spans has really been decompressed.
  if (count * 4 > maxDecompressed(limits.inodeTableSize)) {
    throw new CorruptError(
      `file inode ${file.inodeNumber} of ${file.fileSize} bytes needs more block entries than the inode table holds`,
    );
  }
  if (count === 0) return file;
  const at = cur.at(count * 4);
  const raw = cur.bytes;
  const sizes = new Uint32Array(count);
  for (let i = 0; i < count; i++) {
    const v = u32(raw, at + i * 4);
    if ((v & BLOCK_SIZE_MASK) > limits.blockSize || v >>> 25 !== 0) {
      throw new CorruptError(`file inode ${file.inodeNumber} block ${i} has invalid size entry 0x${v.toString(16)}`);
    }
    sizes[i] = v;
  }
  file.blockSizes = sizes;
  return file;
}
