/**
 * Journal recovery, as the kernel's fs/jbd2/recovery.c and e2fsck do it:
 *
 * 1. Scan from s_start expecting transaction s_sequence. Each block must carry
 *    the JBD2 magic and the expected sequence number; a descriptor is followed
 *    by the images its tags name, a commit block closes the transaction (and
 *    the next one is expected), a revoke block lists revoked home blocks. The
 *    scan ends at the first block that does not fit (wrong magic, wrong
 *    sequence, unknown type, bad checksum): the transaction in progress there
 *    was never committed and is ignored, revokes included.
 * 2. Revokes: a record for block B in transaction R suppresses B's images in
 *    every transaction up to and including R (later ones still replay).
 * 3. Replay: the newest surviving image of every home block is written home
 *    (un-escaping the magic where the tag says ESCAPE), then fdatasync, then
 *    the journal superblock is reset (s_start 0, s_sequence past everything
 *    seen, so stale log blocks can never match again) and synced. The
 *    filesystem's own superblock (needs_recovery, free counts) is not this
 *    module's: recovery.ts updates it after a replay.
 *
 * Termination: the scan visits each log block at most once (a full lap of
 * s_maxlen - s_first blocks ends it), and every tag, revoke record and write
 * is bounded by the journal's own size. Home block numbers must lie inside
 * the filesystem and outside the journal, so nothing outside the image (or
 * the log being replayed) is ever written.
 */
import { CorruptError } from '../../errors.js';
import { blockTailChecksum, commitBlockChecksum, dataBlockChecksum, journalChecksumSeed } from './checksum.js';
import {
  BlockType,
  decodeBlockHeader,
  decodeCommitBlock,
  decodeDescriptorTags,
  decodeJournalSuperblock,
  decodeRevokeRecords,
  encodeJournalSuperblock,
  JBD2_MAGIC,
  JOURNAL_SUPERBLOCK_SIZE,
  type JournalSuperblock,
  TagFlag,
  tagLayout,
} from './format.js';
import { type JournalFile, journalBlockSet, readLogBlock, writeLogBlock } from './journal-file.js';

export interface ReplayResult {
  /** Committed transactions found in the log. */
  transactions: number;
  /** Home blocks written. */
  blocksReplayed: number;
  /** Images skipped because a revoke record covered them. */
  revokedImages: number;
  /** Images skipped because their CSUM_V2/V3 checksum did not match. */
  badChecksumImages: number;
  /** s_sequence of the reset journal: the ID the next transaction will carry. */
  nextSequence: number;
}

/** Sequence numbers wrap at 2^32; compare them as the kernel's tid_geq/tid_gt do. */
export function tidGeq(a: number, b: number): boolean {
  return ((a - b) | 0) >= 0;
}

/** One block image recorded in the log. */
export interface LoggedImage {
  /** Logical log block holding the image. */
  logBlock: number;
  home: number;
  escaped: boolean;
  checksum: number;
}

interface Transaction {
  sequence: number;
  images: LoggedImage[];
}

export async function readJournalSuperblock(file: JournalFile): Promise<JournalSuperblock> {
  const block = await readLogBlock(file, 0);
  return decodeJournalSuperblock(block.subarray(0, JOURNAL_SUPERBLOCK_SIZE), file.blockSize, file.map.length);
}

/** What a scan of the log found: the newest surviving image of each home block. */
export interface ReplayPlan {
  jsb: JournalSuperblock;
  result: ReplayResult;
  /** Home block -> its image, in the order the images were found. */
  images: Map<number, LoggedImage & { sequence: number }>;
  /** CSUM_V2/V3 seed (0 without checksums). */
  seed: number;
}

/** Passes 1 and 2: scan the log and decide which images survive. Reads only. */
export async function planReplay(file: JournalFile): Promise<ReplayPlan> {
  const jsb = await readJournalSuperblock(file);
  const result: ReplayResult = {
    transactions: 0,
    blocksReplayed: 0,
    revokedImages: 0,
    badChecksumImages: 0,
    nextSequence: jsb.sequence,
  };
  const latest = new Map<number, LoggedImage & { sequence: number }>();
  const layout = tagLayout(jsb.featureIncompat);
  const checksums = layout.csumV2 || layout.csumV3;
  const seed = checksums ? journalChecksumSeed(jsb.uuid) : 0;
  if (jsb.start === 0) return { jsb, result, images: latest, seed };
  const journalBlocks = journalBlockSet(file);
  const logLength = jsb.maxLen - jsb.first;
  const wrap = (b: number) => (b >= jsb.maxLen ? b - logLength : b);

  // Pass 1: scan. `committed` collects whole transactions; revokes go into
  // `revoked` (home block -> newest revoking transaction) only once the
  // transaction that carries them commits.
  const committed: Transaction[] = [];
  const revoked = new Map<number, number>();
  let sequence = jsb.sequence;
  let block = jsb.start;
  let visited = 0;
  let current: Transaction = { sequence, images: [] };
  let pendingRevokes: number[] = [];
  const checkHome = (home: number, what: string) => {
    if (home >= file.fsBlocks) {
      throw new CorruptError(`journal ${what} names block ${home}, beyond the filesystem's ${file.fsBlocks} blocks`);
    }
    if (journalBlocks.has(home)) throw new CorruptError(`journal ${what} names block ${home}, inside the journal itself`);
  };
  scan: while (visited < logLength) {
    const buf = await readLogBlock(file, block);
    visited++;
    const logBlock = block;
    block = wrap(block + 1);
    const h = decodeBlockHeader(buf);
    if (h.magic !== JBD2_MAGIC || h.sequence !== sequence) break;
    switch (h.blockType) {
      case BlockType.DESCRIPTOR: {
        if (checksums && blockTailChecksum(seed, buf) !== buf.readUInt32BE(buf.length - 4)) break scan;
        const tags = decodeDescriptorTags(buf, layout);
        if (tags.length === 0) throw new CorruptError(`journal descriptor at log block ${logBlock} has no tags`);
        for (const tag of tags) {
          if (visited >= logLength) break scan;
          checkHome(tag.blockNr, 'descriptor tag');
          current.images.push({
            logBlock: block,
            home: tag.blockNr,
            escaped: (tag.flags & TagFlag.ESCAPE) !== 0,
            checksum: tag.checksum,
          });
          block = wrap(block + 1);
          visited++;
        }
        break;
      }
      case BlockType.COMMIT: {
        if (checksums) {
          const c = decodeCommitBlock(buf);
          if (commitBlockChecksum(seed, buf) !== c.checksum) break scan;
        }
        committed.push(current);
        for (const home of pendingRevokes) {
          const prev = revoked.get(home);
          if (prev === undefined || tidGeq(sequence, prev)) revoked.set(home, sequence);
        }
        pendingRevokes = [];
        sequence = (sequence + 1) >>> 0;
        current = { sequence, images: [] };
        break;
      }
      case BlockType.REVOKE: {
        if (checksums && blockTailChecksum(seed, buf) !== buf.readUInt32BE(buf.length - 4)) break scan;
        for (const home of decodeRevokeRecords(buf, layout)) {
          checkHome(home, 'revoke record');
          pendingRevokes.push(home);
        }
        break;
      }
      default:
        break scan;
    }
  }
  result.transactions = committed.length;
  // The next transaction must not match anything left in the log: one past
  // the first uncommitted ID, as the kernel does (++info.end_transaction).
  result.nextSequence = (sequence + 1) >>> 0;

  // Pass 2: newest surviving image per home block, in log order.
  for (const t of committed) {
    for (const img of t.images) {
      const r = revoked.get(img.home);
      if (r !== undefined && tidGeq(r, t.sequence)) {
        result.revokedImages++;
        continue;
      }
      latest.set(img.home, { ...img, sequence: t.sequence });
    }
  }
  return { jsb, result, images: latest, seed };
}

/**
 * The images a replay would write, read from the log and un-escaped. A bad
 * data checksum drops that image (the kernel reports it and goes on); an
 * older image of the block is not substituted.
 */
async function* replayImages(file: JournalFile, plan: ReplayPlan): AsyncGenerator<[number, Buffer]> {
  const layout = tagLayout(plan.jsb.featureIncompat);
  for (const img of plan.images.values()) {
    const data = await readLogBlock(file, img.logBlock);
    if (layout.csumV2 || layout.csumV3) {
      const sum = dataBlockChecksum(plan.seed, img.sequence, data);
      const ok = layout.csumV3 ? sum === img.checksum : (sum & 0xffff) === img.checksum;
      if (!ok) {
        plan.result.badChecksumImages++;
        continue;
      }
    }
    if (img.escaped) data.writeUInt32BE(JBD2_MAGIC, 0);
    yield [img.home, data];
  }
}

/**
 * Scans and replays the log of `file` if it holds anything, then resets it.
 * Safe to call on an empty journal (returns zero counts and writes nothing).
 */
export async function replayJournal(file: JournalFile): Promise<ReplayResult> {
  const plan = await planReplay(file);
  if (plan.jsb.start === 0) return plan.result;
  for await (const [home, data] of replayImages(file, plan)) {
    await file.store.write(home * file.blockSize, data);
    plan.result.blocksReplayed++;
  }
  await file.store.sync();
  await resetJournal(file, plan.jsb, plan.result.nextSequence);
  return plan.result;
}

/**
 * For a read-only open of an image that needs recovery: the replayed images
 * as a map (home block -> bytes) the engine lays over the image's blocks,
 * leaving the file untouched. Memory is bounded by the journal's size.
 */
export async function replayInMemory(file: JournalFile): Promise<{ result: ReplayResult; blocks: Map<number, Buffer> }> {
  const plan = await planReplay(file);
  const blocks = new Map<number, Buffer>();
  for await (const [home, data] of replayImages(file, plan)) {
    blocks.set(home, data);
    plan.result.blocksReplayed++;
  }
  return { result: plan.result, blocks };
}

/** Marks the log empty (s_start 0) with `sequence` as the next transaction ID, and syncs. */
export async function resetJournal(file: JournalFile, jsb: JournalSuperblock, sequence: number): Promise<void> {
  jsb.start = 0;
  jsb.sequence = sequence >>> 0;
  const block = await readLogBlock(file, 0);
  encodeJournalSuperblock(jsb).copy(block, 0);
  await writeLogBlock(file, 0, block);
  await file.store.sync();
}
