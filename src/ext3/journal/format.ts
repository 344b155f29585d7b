/**
 * JBD2 on-disk format: the journal superblock, block header, descriptor tags,
 * commit block and revoke block (Linux include/linux/jbd2.h). Every field is
 * big-endian, unlike the rest of ext3.
 *
 * The journal is an ordinary file (inode 8, s_journal_inum) whose logical
 * blocks form a circular log:
 *
 *   logical block 0                 s_first                         s_maxlen
 *   +--------------+----------------------------------------------------+
 *   | journal sb   |  ... T(n) ... | T(n+1) ...       free       ...    |
 *   +--------------+----------------------------------------------------+
 *                  ^ wraps back here after s_maxlen - 1
 *
 *   s_start = logical block of the oldest transaction still needed
 *             (0: the log is empty, nothing to replay)
 *   s_sequence = that transaction's ID (IDs increase by one per commit)
 *
 * One transaction T(n), each block stamped with a header {magic, type, n}:
 *
 *   +------------+-------+-------+-----+------------+-----+--------+--------+
 *   | descriptor | data  | data  | ... | descriptor | ... | revoke | commit |
 *   | tag,tag,.. | image | image |     | tag,...    |     | blknr..|        |
 *   +------------+-------+-------+-----+------------+-----+--------+--------+
 *        |          ^
 *        +----------+  tag i = home block number of the i-th image after
 *                      its descriptor; flags: ESCAPE (the image began with
 *                      the magic, which was zeroed), SAME_UUID (no 16-byte
 *                      UUID follows the tag), LAST_TAG.
 *
 * Revoke records name home blocks whose images in this or earlier
 * transactions must not be replayed (the block was freed and may now hold
 * file data). A transaction counts only if its commit block is present with
 * the right sequence number; replay stops at the first one that is not.
 *
 * Tag sizes depend on the journal's incompat features:
 *   CSUM_V3                 16 bytes {blocknr, flags(32), blocknr_high, csum}
 *   otherwise               {blocknr, csum(16), flags(16), blocknr_high}
 *                           = 12 bytes, -4 without 64BIT, +2 with CSUM_V2
 * With CSUM_V2 or CSUM_V3, descriptor and revoke blocks end in a 4-byte
 * checksum tail that tags and records never occupy.
 */
import { CorruptError, UnsupportedError } from '../../errors.js';
import { crc32cRaw } from './checksum.js';

export const JBD2_MAGIC = 0xc03b3998;

export const BlockType = {
  DESCRIPTOR: 1,
  COMMIT: 2,
  SUPERBLOCK_V1: 3,
  SUPERBLOCK_V2: 4,
  REVOKE: 5,
} as const;

export const JournalCompat = {
  CHECKSUM: 0x1,
} as const;

export const JournalIncompat = {
  REVOKE: 0x1,
  BIT64: 0x2,
  ASYNC_COMMIT: 0x4,
  CSUM_V2: 0x8,
  CSUM_V3: 0x10,
  FAST_COMMIT: 0x20,
} as const;

/** Incompat features replay understands. FAST_COMMIT needs ext4's fast-commit area: refused. */
const INCOMPAT_KNOWN =
  JournalIncompat.REVOKE |
  JournalIncompat.BIT64 |
  JournalIncompat.ASYNC_COMMIT |
  JournalIncompat.CSUM_V2 |
  JournalIncompat.CSUM_V3;

export const TagFlag = {
  ESCAPE: 1,
  SAME_UUID: 2,
  DELETED: 4,
  LAST_TAG: 8,
} as const;

/** Size of the fixed header {h_magic, h_blocktype, h_sequence} at the start of every log block. */
export const HEADER_SIZE = 12;
/** jbd2_journal_revoke_header_t: header + r_count. */
export const REVOKE_HEADER_SIZE = 16;
/** jbd2_journal_block_tail: the checksum at the end of descriptor/revoke blocks (CSUM_V2/V3). */
export const BLOCK_TAIL_SIZE = 4;
const UUID_SIZE = 16;
/** The journal superblock occupies the first 1024 bytes of logical block 0. */
export const JOURNAL_SUPERBLOCK_SIZE = 1024;

export interface JournalSuperblock {
  /** h_blocktype: SUPERBLOCK_V1 or SUPERBLOCK_V2. */
  blockType: number;
  /** 0x0C s_blocksize */
  blockSize: number;
  /** 0x10 s_maxlen: blocks in the journal file. */
  maxLen: number;
  /** 0x14 s_first: first log block (after the superblock). */
  first: number;
  /** 0x18 s_sequence: ID of the transaction at s_start (or of the next one when empty). */
  sequence: number;
  /** 0x1C s_start: log block of the oldest live transaction; 0 = empty. */
  start: number;
  /** 0x20 s_errno */
  errno: number;
  /** 0x24 s_feature_compat (v2 only; 0 for v1). */
  featureCompat: number;
  /** 0x28 s_feature_incompat */
  featureIncompat: number;
  /** 0x2C s_feature_ro_compat */
  featureRoCompat: number;
  /** 0x30 s_uuid[16] */
  uuid: Buffer;
  /** 0x40 s_nr_users */
  nrUsers: number;
  /** 0x48 s_max_transaction */
  maxTransaction: number;
  /** 0x4C s_max_trans_data */
  maxTransData: number;
  /** 0x50 s_checksum_type (u8) */
  checksumType: number;
  /** 0x54 s_num_fc_blks */
  numFcBlocks: number;
  /** 0xFC s_checksum: crc32c(~0, superblock with this field zeroed), with CSUM_V2/V3. */
  checksum: number;
  /**
   * The whole 1024-byte superblock as read, so encoding keeps fields this
   * codec does not model (s_users[], s_checksum, padding) byte-for-byte.
   */
  raw: Buffer;
}

function u32(b: Buffer, off: number): number {
  return b.readUInt32BE(off);
}

/** Decodes and validates the journal superblock against the journal file's size in blocks. */
export function decodeJournalSuperblock(bytes: Buffer, fsBlockSize: number, journalBlocks: number): JournalSuperblock {
  if (bytes.length < JOURNAL_SUPERBLOCK_SIZE) throw new CorruptError('journal superblock is truncated');
  if (u32(bytes, 0x0) !== JBD2_MAGIC) throw new CorruptError('journal superblock has a bad magic number');
  const blockType = u32(bytes, 0x4);
  if (blockType !== BlockType.SUPERBLOCK_V1 && blockType !== BlockType.SUPERBLOCK_V2) {
    throw new CorruptError(`journal superblock has unknown block type ${blockType}`);
  }
  const v2 = blockType === BlockType.SUPERBLOCK_V2;
  const sb: JournalSuperblock = {
    blockType,
    blockSize: u32(bytes, 0x0c),
    maxLen: u32(bytes, 0x10),
    first: u32(bytes, 0x14),
    sequence: u32(bytes, 0x18),
    start: u32(bytes, 0x1c),
    errno: bytes.readInt32BE(0x20),
    featureCompat: v2 ? u32(bytes, 0x24) : 0,
    featureIncompat: v2 ? u32(bytes, 0x28) : 0,
    featureRoCompat: v2 ? u32(bytes, 0x2c) : 0,
    uuid: Buffer.from(bytes.subarray(0x30, 0x40)),
    nrUsers: u32(bytes, 0x40),
    maxTransaction: u32(bytes, 0x48),
    maxTransData: u32(bytes, 0x4c),
    checksumType: bytes[0x50]!,
    numFcBlocks: u32(bytes, 0x54),
    checksum: u32(bytes, 0xfc),
    raw: Buffer.from(bytes.subarray(0, JOURNAL_SUPERBLOCK_SIZE)),
  };
  if (sb.blockSize !== fsBlockSize) {
    throw new CorruptError(`journal block size ${sb.blockSize} differs from the filesystem's ${fsBlockSize}`);
  }
  // The log needs at least the superblock plus a minimal transaction
  // (descriptor, one block, commit); the kernel insists on 1024 blocks but
  // e2fsck accepts smaller, so only what the format itself needs is checked.
  if (sb.maxLen > journalBlocks) {
    throw new CorruptError(`journal s_maxlen ${sb.maxLen} exceeds the journal file's ${journalBlocks} blocks`);
  }
  if (sb.first < 1 || sb.first + 3 > sb.maxLen) {
    throw new CorruptError(`journal s_first ${sb.first} does not fit s_maxlen ${sb.maxLen}`);
  }
  if (sb.start !== 0 && (sb.start < sb.first || sb.start >= sb.maxLen)) {
    throw new CorruptError(`journal s_start ${sb.start} lies outside the log [${sb.first}, ${sb.maxLen})`);
  }
  const unknown = (sb.featureIncompat & ~INCOMPAT_KNOWN) >>> 0;
  if (unknown) {
    const what = unknown & JournalIncompat.FAST_COMMIT ? 'fast_commit' : `0x${unknown.toString(16)}`;
    throw new UnsupportedError(`journal uses incompatible feature(s) this engine cannot replay: ${what}`);
  }
  if (sb.featureIncompat & JournalIncompat.CSUM_V2 && sb.featureIncompat & JournalIncompat.CSUM_V3) {
    throw new CorruptError('journal claims both CSUM_V2 and CSUM_V3');
  }
  if (hasChecksums(sb) && superblockChecksum(bytes) !== sb.checksum) {
    throw new CorruptError('journal superblock checksum does not match');
  }
  return sb;
}

function hasChecksums(sb: JournalSuperblock): boolean {
  return (sb.featureIncompat & (JournalIncompat.CSUM_V2 | JournalIncompat.CSUM_V3)) !== 0;
}

/** jbd2_superblock_csum: crc32c over the 1024 bytes with s_checksum (0xFC) zeroed. */
export function superblockChecksum(bytes: Buffer): number {
  const copy = Buffer.from(bytes.subarray(0, JOURNAL_SUPERBLOCK_SIZE));
  copy.writeUInt32BE(0, 0xfc);
  return crc32cRaw(0xffffffff, copy);
}

/**
 * The 1024-byte superblock; fields not modelled are kept from `raw`, and
 * s_checksum is recomputed when the journal uses checksums.
 */
export function encodeJournalSuperblock(sb: JournalSuperblock): Buffer {
  const out = Buffer.alloc(JOURNAL_SUPERBLOCK_SIZE);
  sb.raw.copy(out, 0, 0, Math.min(sb.raw.length, JOURNAL_SUPERBLOCK_SIZE));
  out.writeUInt32BE(JBD2_MAGIC, 0x0);
  out.writeUInt32BE(sb.blockType, 0x4);
  out.writeUInt32BE(0, 0x8);
  out.writeUInt32BE(sb.blockSize, 0x0c);
  out.writeUInt32BE(sb.maxLen, 0x10);
  out.writeUInt32BE(sb.first, 0x14);
  out.writeUInt32BE(sb.sequence >>> 0, 0x18);
  out.writeUInt32BE(sb.start, 0x1c);
  out.writeInt32BE(sb.errno, 0x20);
  if (sb.blockType === BlockType.SUPERBLOCK_V2) {
    out.writeUInt32BE(sb.featureCompat >>> 0, 0x24);
    out.writeUInt32BE(sb.featureIncompat >>> 0, 0x28);
    out.writeUInt32BE(sb.featureRoCompat >>> 0, 0x2c);
  }
  sb.uuid.copy(out, 0x30, 0, UUID_SIZE);
  out.writeUInt32BE(sb.nrUsers, 0x40);
  out.writeUInt32BE(sb.maxTransaction, 0x48);
  out.writeUInt32BE(sb.maxTransData, 0x4c);
  out[0x50] = sb.checksumType;
  out.writeUInt32BE(sb.numFcBlocks, 0x54);
  if (hasChecksums(sb)) {
    sb.checksum = superblockChecksum(out);
    out.writeUInt32BE(sb.checksum, 0xfc);
  }
  return out;
}

/**
 * A fresh v2 journal superblock as mke2fs writes it
 * (ext2fs_create_journal_superblock2): s_first 1, s_sequence 1, empty log,
 * one user (the filesystem), s_uuid = the filesystem's UUID.
 */
export function newJournalSuperblock(blockSize: number, maxLen: number, fsUuid: Buffer): JournalSuperblock {
  return {
    blockType: BlockType.SUPERBLOCK_V2,
    blockSize,
    maxLen,
    first: 1,
    sequence: 1,
    start: 0,
    errno: 0,
    featureCompat: 0,
    featureIncompat: 0,
    featureRoCompat: 0,
    uuid: Buffer.from(fsUuid.subarray(0, UUID_SIZE)),
    nrUsers: 1,
    maxTransaction: 0,
    maxTransData: 0,
    checksumType: 0,
    numFcBlocks: 0,
    checksum: 0,
    raw: Buffer.alloc(JOURNAL_SUPERBLOCK_SIZE),
  };
}

export interface BlockHeader {
  magic: number;
  blockType: number;
  sequence: number;
}

export function decodeBlockHeader(block: Buffer): BlockHeader {
  if (block.length < HEADER_SIZE) throw new CorruptError('journal block shorter than its header');
  return { magic: u32(block, 0), blockType: u32(block, 4), sequence: u32(block, 8) };
}

export function encodeBlockHeader(block: Buffer, blockType: number, sequence: number): void {
  block.writeUInt32BE(JBD2_MAGIC, 0);
  block.writeUInt32BE(blockType, 4);
  block.writeUInt32BE(sequence >>> 0, 8);
}

/** The tag geometry a journal's features imply. */
export interface TagLayout {
  /** Bytes per tag, without the optional 16-byte UUID. */
  tagSize: number;
  bit64: boolean;
  csumV2: boolean;
  csumV3: boolean;
  /** Bytes at the end of descriptor/revoke blocks reserved for the checksum tail. */
  tailSize: number;
  /** Bytes per revoke record: 8 with 64BIT, else 4. */
  revokeRecordSize: number;
}

export function tagLayout(featureIncompat: number): TagLayout {
  const bit64 = (featureIncompat & JournalIncompat.BIT64) !== 0;
  const csumV2 = (featureIncompat & JournalIncompat.CSUM_V2) !== 0;
  const csumV3 = (featureIncompat & JournalIncompat.CSUM_V3) !== 0;
  let tagSize: number;
  if (csumV3) tagSize = 16;
  else tagSize = 12 + (csumV2 ? 2 : 0) - (bit64 ? 0 : 4);
  return {
    tagSize,
    bit64,
    csumV2,
    csumV3,
    tailSize: csumV2 || csumV3 ? BLOCK_TAIL_SIZE : 0,
    revokeRecordSize: bit64 ? 8 : 4,
  };
}

export interface BlockTag {
  /** Home (filesystem) block number the image belongs to. */
  blockNr: number;
  flags: number;
  /** t_checksum: low 16 bits of crc32c for CSUM_V2, full 32 bits for CSUM_V3; 0 otherwise. */
  checksum: number;
}

/**
 * The tags of a descriptor block, in order. Bounded by the block size: a
 * descriptor without LAST_TAG simply ends where no further tag fits.
 */
export function decodeDescriptorTags(block: Buffer, layout: TagLayout): BlockTag[] {
  const tags: BlockTag[] = [];
  const end = block.length - layout.tailSize;
  let off = HEADER_SIZE;
  while (off + layout.tagSize <= end) {
    let blockNr: number;
    let flags: number;
    let checksum: number;
    let high = 0;
    if (layout.csumV3) {
      blockNr = u32(block, off);
      flags = u32(block, off + 4);
      if (layout.bit64) high = u32(block, off + 8);
      checksum = u32(block, off + 12);
    } else {
      blockNr = u32(block, off);
      checksum = block.readUInt16BE(off + 4);
      flags = block.readUInt16BE(off + 6);
      if (layout.bit64) high = u32(block, off + 8);
    }
    if (high >= 0x200000) throw new CorruptError(`journal tag names block ${high}:${blockNr}, beyond 2^53`);
    tags.push({ blockNr: high * 0x100000000 + blockNr, flags, checksum });
    off += layout.tagSize;
    if (!(flags & TagFlag.SAME_UUID)) off += UUID_SIZE;
    if (flags & TagFlag.LAST_TAG) break;
  }
  return tags;
}

/** Writes one tag at `off`; returns the offset after it (and after the UUID when SAME_UUID is clear). */
export function encodeDescriptorTag(block: Buffer, off: number, layout: TagLayout, tag: BlockTag, uuid: Buffer): number {
  const low = tag.blockNr % 0x100000000;
  const high = Math.floor(tag.blockNr / 0x100000000);
  if (high && !layout.bit64) throw new CorruptError(`block ${tag.blockNr} needs a 64-bit journal`);
  block.fill(0, off, off + layout.tagSize);
  if (layout.csumV3) {
    block.writeUInt32BE(low, off);
    block.writeUInt32BE(tag.flags, off + 4);
    block.writeUInt32BE(high, off + 8);
    block.writeUInt32BE(tag.checksum >>> 0, off + 12);
  } else {
    block.writeUInt32BE(low, off);
    block.writeUInt16BE(tag.checksum & 0xffff, off + 4);
    block.writeUInt16BE(tag.flags, off + 6);
    if (layout.bit64) block.writeUInt32BE(high, off + 8);
  }
  off += layout.tagSize;
  if (!(tag.flags & TagFlag.SAME_UUID)) {
    uuid.copy(block, off, 0, UUID_SIZE);
    off += UUID_SIZE;
  }
  return off;
}

/** How many tags a descriptor block holds when only the first carries a UUID. */
export function tagsPerDescriptor(blockSize: number, layout: TagLayout): number {
  const space = blockSize - HEADER_SIZE - layout.tailSize - UUID_SIZE;
  return Math.floor(space / layout.tagSize);
}

/** Home block numbers revoked by one revoke block. r_count (0x0C) bounds the records. */
export function decodeRevokeRecords(block: Buffer, layout: TagLayout): number[] {
  const count = u32(block, 0x0c);
  const limit = block.length - layout.tailSize;
  if (count < REVOKE_HEADER_SIZE || count > limit) {
    throw new CorruptError(`journal revoke block r_count ${count} is outside [16, ${limit}]`);
  }
  const out: number[] = [];
  for (let off = REVOKE_HEADER_SIZE; off + layout.revokeRecordSize <= count; off += layout.revokeRecordSize) {
    if (layout.bit64) {
      const high = u32(block, off);
      if (high >= 0x200000) throw new CorruptError(`journal revoke record names block ${high}:..., beyond 2^53`);
      out.push(high * 0x100000000 + u32(block, off + 4));
    } else {
      out.push(u32(block, off));
    }
  }
  return out;
}

/** Records per revoke block. */
export function revokesPerBlock(blockSize: number, layout: TagLayout): number {
  return Math.floor((blockSize - REVOKE_HEADER_SIZE - layout.tailSize) / layout.revokeRecordSize);
}

/** Fills a revoke block with `records` (at most revokesPerBlock of them). */
export function encodeRevokeBlock(blockSize: number, sequence: number, layout: TagLayout, records: number[]): Buffer {
  const block = Buffer.alloc(blockSize);
  encodeBlockHeader(block, BlockType.REVOKE, sequence);
  let off = REVOKE_HEADER_SIZE;
  for (const nr of records) {
    if (layout.bit64) {
      block.writeUInt32BE(Math.floor(nr / 0x100000000), off);
      block.writeUInt32BE(nr % 0x100000000, off + 4);
    } else {
      if (nr >= 0x100000000) throw new CorruptError(`block ${nr} needs a 64-bit journal`);
      block.writeUInt32BE(nr, off);
    }
    off += layout.revokeRecordSize;
  }
  block.writeUInt32BE(off, 0x0c);
  return block;
}

export interface CommitBlock {
  /** 0x0C h_chksum_type */
  checksumType: number;
  /** 0x0D h_chksum_size */
  checksumSize: number;
  /** 0x10 h_chksum[0]: crc32_be of the transaction (COMPAT_CHECKSUM) or crc32c of this block (CSUM_V2/V3). */
  checksum: number;
  /** 0x30 h_commit_sec (be64) */
  commitSec: number;
  /** 0x38 h_commit_nsec */
  commitNsec: number;
}

export function decodeCommitBlock(block: Buffer): CommitBlock {
  if (block.length < 0x3c) throw new CorruptError('journal commit block is truncated');
  const hi = u32(block, 0x30);
  return {
    checksumType: block[0x0c]!,
    checksumSize: block[0x0d]!,
    checksum: u32(block, 0x10),
    commitSec: hi * 0x100000000 + u32(block, 0x34),
    commitNsec: u32(block, 0x38),
  };
}

export function encodeCommitBlock(blockSize: number, sequence: number, when: { sec: number; nsec: number }): Buffer {
  const block = Buffer.alloc(blockSize);
  encodeBlockHeader(block, BlockType.COMMIT, sequence);
  const sec = Math.max(0, Math.floor(when.sec));
  block.writeUInt32BE(Math.floor(sec / 0x100000000) >>> 0, 0x30);
  block.writeUInt32BE(sec % 0x100000000, 0x34);
  block.writeUInt32BE(when.nsec >>> 0, 0x38);
  return block;
}
