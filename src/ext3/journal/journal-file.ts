/**
 * The journal as a file of the filesystem: logical journal block i lives at
 * filesystem block map[i]. Replay and the writer address the log only through
 * this, so every journal I/O is checked against the map and lands inside the
 * journal inode's own blocks.
 *
 * The map comes from the journal inode's (inode 8, s_journal_inum) block map,
 * read straight from the image with the engine's codecs and block-map walk
 * (block-map.ts), bounded by i_size and the filesystem's block count: replay
 * runs before the engine is open, since nothing else may trust the metadata
 * until it has.
 */
import { CorruptError, InternalError, UnsupportedError } from '../../errors.js';
import type { ByteStore } from '../../io/byte-source.js';
import { type BlockMapIO, mapRange } from '../block-map.js';
import { mapExtents } from '../extents.js';
import { decodeGroupDesc } from '../group-desc.js';
import { gdtBlockOf, gdtOffsetOf, inodeGroup, inodeLocation, inodeTableBlocks } from '../geometry.js';
import { decodeInode, EXT4_EXTENTS_FL, type Inode } from '../inode.js';
import {
  blockSize as sbBlockSize,
  COMPAT,
  decodeSuperblock,
  descSize,
  INCOMPAT,
  inodeSize,
  SUPERBLOCK_OFFSET,
  SUPERBLOCK_SIZE,
  type Superblock,
} from '../superblock.js';

export interface JournalFile {
  /** The filesystem's bytes. */
  store: ByteStore;
  blockSize: number;
  /** s_blocks_count: home block numbers must be below this. */
  fsBlocks: number;
  /** Logical journal block -> filesystem block. */
  map: Uint32Array;
}

/** Filesystem blocks owned by the journal file, for rejecting tags that would overwrite the log itself. */
export function journalBlockSet(file: JournalFile): Set<number> {
  return new Set(file.map);
}

export function readLogBlock(file: JournalFile, logical: number): Promise<Buffer> {
  const phys = physicalBlock(file, logical);
  return file.store.read(phys * file.blockSize, file.blockSize);
}

export function writeLogBlock(file: JournalFile, logical: number, data: Buffer): Promise<void> {
  const phys = physicalBlock(file, logical);
  return file.store.write(phys * file.blockSize, data);
}

export function physicalBlock(file: JournalFile, logical: number): number {
  if (!Number.isInteger(logical) || logical < 0 || logical >= file.map.length) {
    throw new CorruptError(`journal block ${logical} lies outside the ${file.map.length}-block journal`);
  }
  return file.map[logical]!;
}

/**
 * Writes `blocks` (consecutive log blocks starting at `logical`) with as few
 * writes as the physical layout allows: runs of contiguous filesystem blocks
 * go out as one write.
 */
export async function writeLogRun(file: JournalFile, logical: number, blocks: Buffer[]): Promise<void> {
  let i = 0;
  while (i < blocks.length) {
    const start = physicalBlock(file, logical + i);
    let n = 1;
    while (i + n < blocks.length && physicalBlock(file, logical + i + n) === start + n) n++;
    const data = n === 1 ? blocks[i]! : Buffer.concat(blocks.slice(i, i + n));
    await file.store.write(start * file.blockSize, data);
    i += n;
  }
}

/** The superblock of the filesystem in `store` (the journal needs only its geometry and features). */
export async function readFsSuperblock(store: ByteStore): Promise<Superblock> {
  const raw = await store.read(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE);
  return decodeSuperblock(raw, store.size);
}

/** Inode `ino` read straight from its inode table. */
async function readInodeRecord(store: ByteStore, sb: Superblock, ino: number): Promise<Inode> {
  const bs = sbBlockSize(sb);
  if (ino < 1 || ino > sb.s_inodes_count) throw new CorruptError(`inode ${ino} out of range`);
  const group = inodeGroup(sb, ino);
  const dsz = descSize(sb);
  const descOff = gdtBlockOf(sb, group) * bs + gdtOffsetOf(sb, group);
  const gd = decodeGroupDesc(await store.read(descOff, dsz), 0, dsz);
  const isz = inodeSize(sb);
  if (gd.bg_inode_table < sb.s_first_data_block || gd.bg_inode_table + inodeTableBlocks(sb) > sb.s_blocks_count) {
    throw new CorruptError(`group ${group} inode table at block ${gd.bg_inode_table} lies outside the filesystem`);
  }
  const { block, off } = inodeLocation(sb, gd.bg_inode_table, ino);
  const raw = await store.read(block * bs + off, isz);
  return decodeInode(raw, isz);
}

/**
 * The journal inode's block map. Holes, pointers outside the filesystem, and
 * a size that is not whole blocks are corruption: a journal is always fully
 * allocated.
 */
export async function readJournalMap(store: ByteStore, sb: Superblock): Promise<Uint32Array> {
  if (!(sb.s_feature_compat & COMPAT.has_journal)) throw new CorruptError('filesystem has no journal');
  if (sb.s_feature_incompat & INCOMPAT.journal_dev || sb.s_journal_inum === 0) {
    throw new UnsupportedError('filesystem uses an external journal device');
  }
  const bs = sbBlockSize(sb);
  const inode = await readInodeRecord(store, sb, sb.s_journal_inum);
  if (inode.i_size % bs !== 0 || inode.i_size === 0) {
    throw new CorruptError(`journal inode size ${inode.i_size} is not a whole number of ${bs}-byte blocks`);
  }
  const count = inode.i_size / bs;
  if (count > sb.s_blocks_count) {
    throw new CorruptError(`journal of ${count} blocks is larger than the filesystem (${sb.s_blocks_count} blocks)`);
  }
  const io: BlockMapIO = {
    blockSize: bs,
    firstDataBlock: sb.s_first_data_block,
    blocksCount: sb.s_blocks_count,
    readMeta: (block) => store.read(block * bs, bs),
    writeMeta: () => Promise.reject(new InternalError('journal block map is read-only here')),
    newMeta: () => {
      throw new InternalError('journal block map is read-only here');
    },
    allocBlock: () => Promise.reject(new InternalError('journal block map is read-only here')),
    freeBlock: () => Promise.reject(new InternalError('journal block map is read-only here')),
    freeRun: () => Promise.reject(new InternalError('journal block map is read-only here')),
  };
  // The engine's block-map and extent walks check every pointer against the
  // filesystem; an ext4 journal (extent-mapped) can thus be replayed too.
  const mapped = inode.i_flags & EXT4_EXTENTS_FL ? await mapExtents(io, inode, 0, count) : await mapRange(io, inode, 0, count);
  const map = Uint32Array.from(mapped);
  const hole = map.indexOf(0);
  if (hole >= 0) throw new CorruptError(`journal inode has a hole at logical block ${hole}`);
  return map;
}

/** Opens the journal of the filesystem in `store` with the map read from its inode. */
export async function openJournalFile(store: ByteStore, sb?: Superblock): Promise<JournalFile> {
  const s = sb ?? (await readFsSuperblock(store));
  const map = await readJournalMap(store, s);
  return { store, blockSize: sbBlockSize(s), fsBlocks: s.s_blocks_count, map };
}
