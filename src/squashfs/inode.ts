import { CorruptError } from '../errors.js';
import { typeBits, type FileType } from '../engine.js';
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
    case 'd':
      return 120 + inode.index.reduce((n, e) => n + 48 + e.name.length, 0);
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
  const h = cur.take(INODE_HEADER_SIZE);
  const inodeType = h.readUInt16LE(0x00);
  const kind = fileTypeOfInodeType(inodeType);
  if (kind === null || inodeType < 1 || inodeType > 14) throw new CorruptError(`inode has invalid type ${inodeType}`);
  const inodeNumber = h.readUInt32LE(0x0c);
  if (inodeNumber === 0 || inodeNumber > limits.inodes) {
    throw new CorruptError(`inode number ${inodeNumber} is outside 1..${limits.inodes}`);
  }
  // Each kind is built as one object literal: spreading a shared header
  // object measured 100x slower (about 20 us per inode) in V8.
  const mode = typeBits(kind) | (h.readUInt16LE(0x02) & 0o7777);
  const uidIndex = h.readUInt16LE(0x04);
  const gidIndex = h.readUInt16LE(0x06);
  const mtime = h.readUInt32LE(0x08);
  const noXattr = SQUASHFS_INVALID_XATTR;
  switch (inodeType) {
    case 1: {
      const b = cur.take(16);
      return checkDir(
        {
          kind: 'd',
          inodeType,
          mode,
          uidIndex,
          gidIndex,
          mtime,
          inodeNumber,
          startBlock: b.readUInt32LE(0x00),
          nlink: b.readUInt32LE(0x04),
          fileSize: b.readUInt16LE(0x08),
          offset: b.readUInt16LE(0x0a),
          parentInode: b.readUInt32LE(0x0c),
          xattr: noXattr,
          index: [],
        },
        limits,
      );
    }
    case 8: {
      const b = cur.take(24);
      const count = b.readUInt16LE(0x10);
      const dir: DirInode = checkDir(
        {
          kind: 'd',
          inodeType,
          mode,
          uidIndex,
          gidIndex,
          mtime,
          inodeNumber,
          nlink: b.readUInt32LE(0x00),
          fileSize: b.readUInt32LE(0x04),
          startBlock: b.readUInt32LE(0x08),
          parentInode: b.readUInt32LE(0x0c),
          offset: b.readUInt16LE(0x12),
          xattr: b.readUInt32LE(0x14),
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
        const e = cur.take(12);
        const size = e.readUInt32LE(0x08) + 1;
        if (size > 256) throw new CorruptError(`directory index name of ${size} bytes is too long`);
        const entry: DirIndexEntry = {
          index: e.readUInt32LE(0x00),
          startBlock: e.readUInt32LE(0x04),
          name: Buffer.from(cur.take(size)),
        };
        if (entry.index <= prevIndex || entry.index >= dir.fileSize - 3)
          throw new CorruptError('directory index entries are out of order');
        prevIndex = entry.index;
        dir.index.push(entry);
      }
      return dir;
    }
    case 2: {
      const b = cur.take(16);
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
          startBlock: b.readUInt32LE(0x00),
          fragment: b.readUInt32LE(0x04),
          fragmentOffset: b.readUInt32LE(0x08),
          fileSize: b.readUInt32LE(0x0c),
          sparse: 0,
          blockSizes: EMPTY_BLOCKS,
        },
        limits,
      );
    }
    case 9: {
      const b = cur.take(40);
      const start = b.readBigUInt64LE(0x00);
      const size = b.readBigUInt64LE(0x08);
      const sparse = b.readBigUInt64LE(0x10);
      if (start > BigInt(limits.imageSize)) throw new CorruptError(`file data start ${start} lies past the end of the image`);
      if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw new CorruptError(`file size ${size} is impossible`);
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
          startBlock: Number(start),
          fileSize: Number(size),
          sparse: sparse > size ? 0 : Number(sparse),
          nlink: b.readUInt32LE(0x18),
          fragment: b.readUInt32LE(0x1c),
          fragmentOffset: b.readUInt32LE(0x20),
          xattr: b.readUInt32LE(0x24),
          blockSizes: EMPTY_BLOCKS,
        },
        limits,
      );
    }
    case 3:
    case 10: {
      const b = cur.take(8);
      const size = b.readUInt32LE(0x04);
      if (size === 0 || size > 4096) throw new CorruptError(`symlink target of ${size} bytes is invalid`);
      const target = Buffer.from(cur.take(size));
      return {
        kind: 'l',
        inodeType,
        mode,
        uidIndex,
        gidIndex,
        mtime,
        inodeNumber,
        nlink: b.readUInt32LE(0x00),
        target,
        xattr: inodeType === 10 ? cur.take(4).readUInt32LE(0) : noXattr,
      };
    }
    case 4:
    case 5:
    case 11:
    case 12: {
      const b = cur.take(inodeType > 7 ? 12 : 8);
      return {
        kind: kind as 'b' | 'c',
        inodeType,
        mode,
        uidIndex,
        gidIndex,
        mtime,
        inodeNumber,
        nlink: b.readUInt32LE(0x00),
        rdev: b.readUInt32LE(0x04),
        xattr: inodeType > 7 ? b.readUInt32LE(0x08) : noXattr,
      };
    }
    default: {
      const b = cur.take(inodeType > 7 ? 8 : 4);
      return {
        kind: kind as 'p' | 's',
        inodeType,
        mode,
        uidIndex,
        gidIndex,
        mtime,
        inodeNumber,
        nlink: b.readUInt32LE(0x00),
        xattr: inodeType > 7 ? b.readUInt32LE(0x04) : noXattr,
      };
    }
  }
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
  const raw = cur.take(count * 4);
  const sizes = new Uint32Array(count);
  for (let i = 0; i < count; i++) {
    const v = raw.readUInt32LE(i * 4);
    if ((v & BLOCK_SIZE_MASK) > limits.blockSize || v >>> 25 !== 0) {
      throw new CorruptError(`file inode ${file.inodeNumber} block ${i} has invalid size entry 0x${v.toString(16)}`);
    }
    sizes[i] = v;
  }
  file.blockSizes = sizes;
  return file;
}
