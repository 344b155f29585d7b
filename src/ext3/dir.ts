/**
 * Linear directory blocks (`struct ext2_dir_entry_2`). A directory's data
 * blocks are each a chain of records that exactly covers the block:
 *
 *   0x0 inode     u32   0 = unused record (free space)
 *   0x4 rec_len   u16   bytes to the next record; multiple of 4, >= 8 + name_len
 *   0x6 name_len  u8
 *   0x7 file_type u8    EXT2_FT_* with the filetype feature
 *   0x8 name[name_len]  not NUL-terminated
 *
 * Free space is the slack after a live record (rec_len minus its real size)
 * and whole unused records. Deleting a record merges it into its predecessor
 * in the block (or zeroes its inode when it is first), as the kernel does, so
 * live records never move and their (block, offset) stays a stable address.
 * The first block starts with "." (rec_len 12) and "..".
 */
import { CorruptError } from '../errors.js';
import type { FileType } from '../engine.js';

export const EXT2_FT_UNKNOWN = 0;
export const EXT2_FT_REG_FILE = 1;
export const EXT2_FT_DIR = 2;
export const EXT2_FT_CHRDEV = 3;
export const EXT2_FT_BLKDEV = 4;
export const EXT2_FT_FIFO = 5;
export const EXT2_FT_SOCK = 6;
export const EXT2_FT_SYMLINK = 7;

export const EXT2_NAME_LEN = 255;
export const DIRENT_HEADER = 8;

const FT_OF_TYPE: Record<FileType, number> = {
  f: EXT2_FT_REG_FILE,
  d: EXT2_FT_DIR,
  c: EXT2_FT_CHRDEV,
  b: EXT2_FT_BLKDEV,
  p: EXT2_FT_FIFO,
  s: EXT2_FT_SOCK,
  l: EXT2_FT_SYMLINK,
};
const TYPE_OF_FT: (FileType | null)[] = [null, 'f', 'd', 'c', 'b', 'p', 's', 'l'];

export function fileTypeToFt(type: FileType): number {
  return FT_OF_TYPE[type];
}

/** The FileType for an EXT2_FT_* value, or null (unknown: ask the inode). */
export function ftToFileType(ft: number): FileType | null {
  return TYPE_OF_FT[ft] ?? null;
}

/** Bytes a record with an `nameLen`-byte name needs (EXT2_DIR_REC_LEN). */
export function direntSize(nameLen: number): number {
  return (DIRENT_HEADER + nameLen + 3) & ~3;
}

export interface Dirent {
  inode: number;
  rec_len: number;
  name_len: number;
  file_type: number;
  /** A view into the block (copy it before keeping it past a block change). */
  name: Buffer;
  /** Offset of the record in its block. */
  offset: number;
}

/**
 * rec_len as stored: blocks of 64 KiB use 0 or 65535 for a record spanning
 * the whole block (ext4_rec_len_from_disk).
 */
function recLenFromDisk(v: number, blockSize: number): number {
  if (blockSize < 65536) return v;
  if (v === 65535 || v === 0) return blockSize;
  return (v & 65532) | ((v & 3) << 16);
}
function recLenToDisk(len: number, blockSize: number): number {
  if (blockSize < 65536) return len;
  if (len === blockSize) return 65535;
  return (len & 65532) | ((len >> 16) & 3);
}

/** Decodes the record at `off`, validating it against the block end. */
export function decodeDirent(block: Buffer, off: number): Dirent {
  const bs = block.length;
  if (off < 0 || off + DIRENT_HEADER > bs || (off & 3) !== 0) {
    throw new CorruptError(`directory record at offset ${off} does not fit the ${bs}-byte block`);
  }
  const recLen = recLenFromDisk(block.readUInt16LE(off + 4), bs);
  const nameLen = block.readUInt8(off + 6);
  if (recLen < DIRENT_HEADER || (recLen & 3) !== 0 || off + recLen > bs) {
    throw new CorruptError(`directory record at offset ${off} has bad rec_len ${recLen}`);
  }
  const inode = block.readUInt32LE(off);
  if (inode !== 0 && direntSize(nameLen) > recLen) {
    throw new CorruptError(`directory record at offset ${off}: name_len ${nameLen} exceeds rec_len ${recLen}`);
  }
  const nameEnd = Math.min(off + DIRENT_HEADER + nameLen, off + recLen);
  return {
    inode,
    rec_len: recLen,
    name_len: nameLen,
    file_type: block.readUInt8(off + 7),
    name: block.subarray(off + DIRENT_HEADER, nameEnd),
    offset: off,
  };
}

/** Writes one record header and name at `off`. */
export function encodeDirent(
  block: Buffer,
  off: number,
  d: { inode: number; rec_len: number; file_type: number; name: Buffer },
): void {
  if (d.name.length > EXT2_NAME_LEN) throw new CorruptError(`directory entry name of ${d.name.length} bytes`);
  if (off + d.rec_len > block.length || d.rec_len < direntSize(d.name.length)) {
    throw new CorruptError(`directory record of ${d.rec_len} bytes at ${off} does not fit`);
  }
  block.writeUInt32LE(d.inode >>> 0, off);
  block.writeUInt16LE(recLenToDisk(d.rec_len, block.length), off + 4);
  block.writeUInt8(d.name.length, off + 6);
  block.writeUInt8(d.file_type, off + 7);
  d.name.copy(block, off + DIRENT_HEADER);
}

/** Overwrites only rec_len (merging or splitting records). */
export function setRecLen(block: Buffer, off: number, recLen: number): void {
  block.writeUInt16LE(recLenToDisk(recLen, block.length), off + 4);
}

/**
 * All records of one block in order, validated so that they chain exactly to
 * the block's end (at most blockSize/8 records: the loop always advances).
 */
export function decodeDirBlock(block: Buffer): Dirent[] {
  const out: Dirent[] = [];
  let off = 0;
  while (off < block.length) {
    const d = decodeDirent(block, off);
    out.push(d);
    off += d.rec_len;
  }
  return out;
}

/** An empty directory block: one unused record spanning it. */
export function emptyDirBlock(blockSize: number): Buffer {
  const b = Buffer.alloc(blockSize);
  setRecLen(b, 0, blockSize);
  return b;
}

/** The first block of a new directory: "." and ".." (which spans the rest). */
export function encodeDotBlock(blockSize: number, self: number, parent: number, filetype: boolean): Buffer {
  const b = Buffer.alloc(blockSize);
  const ft = filetype ? EXT2_FT_DIR : 0;
  encodeDirent(b, 0, { inode: self, rec_len: 12, file_type: ft, name: Buffer.from('.') });
  encodeDirent(b, 12, { inode: parent, rec_len: blockSize - 12, file_type: ft, name: Buffer.from('..') });
  return b;
}

/**
 * Largest record size insertable in a validated block (0 when full),
 * computed from the raw headers without decoding names (hot path).
 */
export function scanFreeSpace(block: Buffer): number {
  let best = 0;
  let off = 0;
  const bs = block.length;
  while (off + DIRENT_HEADER <= bs) {
    const recLen = recLenFromDisk(block.readUInt16LE(off + 4), bs);
    if (recLen < DIRENT_HEADER || off + recLen > bs)
      throw new CorruptError(`directory record at offset ${off} has bad rec_len ${recLen}`);
    const slack = block.readUInt32LE(off) === 0 ? recLen : recLen - direntSize(block[off + 6]!);
    if (slack > best) best = slack;
    off += recLen;
  }
  return best;
}

/**
 * Where a record of `need` bytes can go: the offset of the record to reuse
 * (inode 0) or to split (live, with enough slack), or -1.
 */
export function findInsertSlot(block: Buffer, need: number): { off: number; split: boolean } | null {
  let off = 0;
  const bs = block.length;
  while (off + DIRENT_HEADER <= bs) {
    const recLen = recLenFromDisk(block.readUInt16LE(off + 4), bs);
    if (recLen < DIRENT_HEADER || off + recLen > bs)
      throw new CorruptError(`directory record at offset ${off} has bad rec_len ${recLen}`);
    if (block.readUInt32LE(off) === 0) {
      if (recLen >= need) return { off, split: false };
    } else if (recLen - direntSize(block[off + 6]!) >= need) {
      return { off, split: true };
    }
    off += recLen;
  }
  return null;
}

/** rec_len of the record at `off` (validated by the caller's earlier scan). */
export function recLenAt(block: Buffer, off: number): number {
  return recLenFromDisk(block.readUInt16LE(off + 4), block.length);
}

/** Largest record size insertable in this block (0 when full). */
export function blockFreeSpace(records: Dirent[]): number {
  let best = 0;
  for (const d of records) {
    const slack = d.inode === 0 ? d.rec_len : d.rec_len - direntSize(d.name_len);
    if (slack > best) best = slack;
  }
  return best;
}
