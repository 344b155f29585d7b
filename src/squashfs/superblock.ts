import { CorruptError, UnsupportedError } from '../errors.js';
import { compressorName } from './compress/index.js';

/** The 96-byte superblock at offset 0 (squashfs_fs.h: struct squashfs_super_block). */
export const SUPERBLOCK_SIZE = 96;
export const SQUASHFS_MAGIC = 0x73717368; // "hsqs" little-endian
export const METADATA_SIZE = 8192;
/** "No table here" value of the optional u64 table pointers. */
export const INVALID_BLK = 0xffffffffffffffffn;

export const FLAG_UNCOMPRESSED_INODES = 0x0001;
export const FLAG_UNCOMPRESSED_DATA = 0x0002;
export const FLAG_CHECK = 0x0004;
export const FLAG_UNCOMPRESSED_FRAGMENTS = 0x0008;
export const FLAG_NO_FRAGMENTS = 0x0010;
export const FLAG_ALWAYS_FRAGMENTS = 0x0020;
export const FLAG_DUPLICATES = 0x0040;
export const FLAG_EXPORTABLE = 0x0080;
export const FLAG_UNCOMPRESSED_XATTRS = 0x0100;
export const FLAG_NO_XATTRS = 0x0200;
export const FLAG_COMPRESSOR_OPTIONS = 0x0400;
export const FLAG_UNCOMPRESSED_IDS = 0x0800;

export interface Superblock {
  /** 0x04 s_inodes */
  inodes: number;
  /** 0x08 mkfs_time */
  mkfsTime: number;
  /** 0x0C block_size: 4 KiB .. 1 MiB, a power of two */
  blockSize: number;
  /** 0x10 fragments */
  fragments: number;
  /** 0x14 compression: 1 gzip, 2 lzma, 3 lzo, 4 xz, 5 lz4, 6 zstd */
  compression: number;
  /** 0x16 block_log = log2(block_size) */
  blockLog: number;
  /** 0x18 flags */
  flags: number;
  /** 0x1A no_ids */
  noIds: number;
  /** 0x20 root_inode: inode reference (block << 16 | offset) */
  rootInode: number;
  /** 0x28 bytes_used */
  bytesUsed: number;
  /** 0x30 id_table_start */
  idTableStart: number;
  /** 0x38 xattr_id_table_start, null when absent */
  xattrIdTableStart: number | null;
  /** 0x40 inode_table_start */
  inodeTableStart: number;
  /** 0x48 directory_table_start */
  directoryTableStart: number;
  /** 0x50 fragment_table_start, null when absent */
  fragmentTableStart: number | null;
  /** 0x58 lookup_table_start (export table), null when absent */
  lookupTableStart: number | null;
}

function u64(bytes: Buffer, at: number, field: string, imageSize: number, optional: boolean): number | null {
  const v = bytes.readBigUInt64LE(at);
  if (optional && v === INVALID_BLK) return null;
  if (v > BigInt(imageSize)) {
    throw new CorruptError(`superblock ${field} (${v}) points past the end of the ${imageSize}-byte image`);
  }
  return Number(v);
}

/**
 * Decodes and validates the superblock. `imageSize` is the size of the region
 * holding the filesystem: every table pointer must lie inside both it and
 * bytes_used, and the tables must appear in the order mksquashfs writes them
 * (inode < directory < fragment < export < id < xattr), which later decoders
 * rely on to bound each table by the start of the next.
 */
export function decodeSuperblock(bytes: Buffer, imageSize: number): Superblock {
  if (bytes.length < SUPERBLOCK_SIZE) {
    throw new CorruptError(`image of ${bytes.length} bytes is too small for a SquashFS superblock`);
  }
  const magic = bytes.readUInt32LE(0x00);
  if (magic !== SQUASHFS_MAGIC) {
    throw new CorruptError(`not a SquashFS image (magic 0x${magic.toString(16).padStart(8, '0')}, expected "hsqs")`);
  }
  const major = bytes.readUInt16LE(0x1c);
  const minor = bytes.readUInt16LE(0x1e);
  if (major !== 4 || minor !== 0) throw new UnsupportedError(`SquashFS version ${major}.${minor} is not supported (only 4.0)`);

  const blockSize = bytes.readUInt32LE(0x0c);
  const blockLog = bytes.readUInt16LE(0x16);
  if (blockSize < 4096 || blockSize > 1 << 20 || (blockSize & (blockSize - 1)) !== 0) {
    throw new CorruptError(`superblock block_size ${blockSize} is not a power of two between 4 KiB and 1 MiB`);
  }
  if (1 << blockLog !== blockSize)
    throw new CorruptError(`superblock block_log ${blockLog} does not match block_size ${blockSize}`);

  const compression = bytes.readUInt16LE(0x14);
  if (compression < 1 || compression > 6) throw new UnsupportedError(`unknown SquashFS compressor id ${compression}`);

  const bytesUsedBig = bytes.readBigUInt64LE(0x28);
  if (bytesUsedBig > BigInt(imageSize) || bytesUsedBig < BigInt(SUPERBLOCK_SIZE)) {
    throw new CorruptError(`superblock bytes_used (${bytesUsedBig}) does not fit the ${imageSize}-byte image (truncated?)`);
  }
  const bytesUsed = Number(bytesUsedBig);

  const sb: Superblock = {
    inodes: bytes.readUInt32LE(0x04),
    mkfsTime: bytes.readUInt32LE(0x08),
    blockSize,
    fragments: bytes.readUInt32LE(0x10),
    compression,
    blockLog,
    flags: bytes.readUInt16LE(0x18),
    noIds: bytes.readUInt16LE(0x1a),
    rootInode: Number(bytes.readBigUInt64LE(0x20) & 0xffffffffffffn),
    bytesUsed,
    idTableStart: u64(bytes, 0x30, 'id_table_start', bytesUsed, false)!,
    xattrIdTableStart: u64(bytes, 0x38, 'xattr_id_table_start', bytesUsed, true),
    inodeTableStart: u64(bytes, 0x40, 'inode_table_start', bytesUsed, false)!,
    directoryTableStart: u64(bytes, 0x48, 'directory_table_start', bytesUsed, false)!,
    fragmentTableStart: u64(bytes, 0x50, 'fragment_table_start', bytesUsed, true),
    lookupTableStart: u64(bytes, 0x58, 'lookup_table_start', bytesUsed, true),
  };
  if (bytes.readBigUInt64LE(0x20) >> 48n !== 0n) throw new CorruptError('superblock root_inode reference has bits above 48 set');
  if (sb.inodeTableStart < SUPERBLOCK_SIZE) throw new CorruptError('superblock inode_table_start overlaps the superblock');
  if (sb.directoryTableStart < sb.inodeTableStart) {
    throw new CorruptError('superblock directory_table_start lies before inode_table_start');
  }
  if (sb.idTableStart < sb.directoryTableStart)
    throw new CorruptError('superblock id_table_start lies before the directory table');
  if (sb.noIds === 0) throw new CorruptError('superblock no_ids is 0 (every inode needs an owner)');
  // Every inode takes at least 16 bytes of (decompressed) inode table, every
  // fragment 16 bytes of fragment table, and a metadata block of at least 3
  // bytes on disk holds at most 8 KiB: the counts cannot exceed that.
  const capacity = Math.ceil(bytesUsed / 3) * METADATA_SIZE;
  if (sb.inodes === 0 || sb.inodes * 16 > capacity)
    throw new CorruptError(`superblock inode count ${sb.inodes} is impossible for this image`);
  if (sb.fragments * 16 > capacity)
    throw new CorruptError(`superblock fragment count ${sb.fragments} is impossible for this image`);
  return sb;
}

export function describeSuperblock(sb: Superblock): string {
  return `SquashFS 4.0, ${compressorName(sb.compression)}, block size ${sb.blockSize}, ${sb.inodes} inodes`;
}
