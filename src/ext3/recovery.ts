/**
 * Recovering a filesystem at open: replay its journal (journal/replay.ts),
 * then bring the filesystem superblock up to date in place, as e2fsck does
 * after a replay: needs_recovery cleared, free counts summed from the
 * (replayed) group descriptors. This is the only code that writes the
 * filesystem superblock outside the engine's own commits.
 */
import { decodeGroupDesc } from './group-desc.js';
import { openJournalFile } from './journal/journal-file.js';
import { crc32cRaw } from './journal/checksum.js';
import { readJournalSuperblock, replayInMemory, replayJournal, type ReplayResult } from './journal/replay.js';
import type { ByteStore } from '../io/byte-source.js';
import {
  blockSize,
  decodeSuperblock,
  descSize,
  encodeSuperblock,
  groupCount,
  INCOMPAT,
  RO_COMPAT,
  SUPERBLOCK_OFFSET,
  SUPERBLOCK_SIZE,
} from './superblock.js';

/**
 * Writes the primary superblock (1024 bytes at 1024) in place and syncs,
 * refreshing s_checksum (0x3FC: crc32c(~0, bytes 0..0x3FB)) when the
 * filesystem uses metadata_csum, as ext4 images do.
 */
async function writeFsSuperblock(store: ByteStore, raw: Buffer): Promise<void> {
  if (raw.readUInt32LE(0x64) & RO_COMPAT.metadata_csum) {
    raw.writeUInt32LE(crc32cRaw(0xffffffff, raw.subarray(0, 0x3fc)), 0x3fc);
  }
  await store.write(SUPERBLOCK_OFFSET, raw);
  await store.sync();
}

/**
 * Sets or clears the filesystem's needs_recovery flag (incompat 0x4 at
 * superblock 0x60) in place and syncs. The engine's own superblock image must
 * carry the same bit, or a later checkpoint of it would undo this.
 */
export async function setNeedsRecovery(store: ByteStore, on: boolean): Promise<void> {
  const raw = await store.read(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE);
  const v = raw.readUInt32LE(0x60);
  const nv = on ? (v | INCOMPAT.needs_recovery) >>> 0 : (v & ~INCOMPAT.needs_recovery) >>> 0;
  if (nv === v) return;
  raw.writeUInt32LE(nv, 0x60);
  await writeFsSuperblock(store, raw);
}

/**
 * The kernel keeps the superblock's free block and inode counts in memory
 * (summed from the group descriptors at mount) and writes them outside the
 * journal, so after a crash they are stale while the replayed group
 * descriptors are right. Recompute them from the descriptors, as e2fsck does
 * after replaying a journal.
 */
export async function refreshFreeCounts(store: ByteStore): Promise<void> {
  const raw = await store.read(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE);
  const sb = decodeSuperblock(raw, store.size);
  const bs = blockSize(sb);
  const dsz = descSize(sb);
  const groups = groupCount(sb);
  const table = await store.read((sb.s_first_data_block + 1) * bs, Math.ceil((groups * dsz) / bs) * bs);
  let freeBlocks = 0;
  let freeInodes = 0;
  for (let g = 0; g < groups; g++) {
    const gd = decodeGroupDesc(table, g * dsz, dsz);
    freeBlocks += Math.min(gd.bg_free_blocks_count, sb.s_blocks_per_group);
    freeInodes += Math.min(gd.bg_free_inodes_count, sb.s_inodes_per_group);
  }
  freeBlocks = Math.min(freeBlocks, sb.s_blocks_count);
  freeInodes = Math.min(freeInodes, sb.s_inodes_count);
  if (freeBlocks === sb.s_free_blocks_count && freeInodes === sb.s_free_inodes_count) return;
  sb.s_free_blocks_count = freeBlocks;
  sb.s_free_inodes_count = freeInodes;
  await writeFsSuperblock(store, encodeSuperblock(sb));
}

export interface RecoveryResult extends ReplayResult {
  /** Whether anything had to be done (needs_recovery set or a non-empty log). */
  needed: boolean;
  /** Read-only stores only: replayed home blocks to read instead of the image's. */
  overlay: Map<number, Buffer>;
}

/**
 * Opening a filesystem: if it has a journal and either needs_recovery is set
 * or the log is not empty, replay it and clear needs_recovery. Must run
 * before the engine reads any metadata. A read-only store is left untouched:
 * the replayed blocks come back in `overlay` for the engine to read through.
 */
export async function recoverFilesystem(store: ByteStore): Promise<RecoveryResult> {
  const file = await openJournalFile(store);
  const sbFlags = (await store.read(SUPERBLOCK_OFFSET + 0x60, 4)).readUInt32LE(0);
  const flagged = (sbFlags & INCOMPAT.needs_recovery) !== 0;
  const jsb = await readJournalSuperblock(file);
  if (!flagged && jsb.start === 0) {
    return {
      needed: false,
      overlay: new Map(),
      transactions: 0,
      blocksReplayed: 0,
      revokedImages: 0,
      badChecksumImages: 0,
      nextSequence: jsb.sequence,
    };
  }
  if (!store.writable) {
    const { result, blocks } = await replayInMemory(file);
    return { needed: true, overlay: blocks, ...result };
  }
  const r = await replayJournal(file);
  await setNeedsRecovery(store, false);
  await refreshFreeCounts(store);
  return { needed: true, overlay: new Map(), ...r };
}
