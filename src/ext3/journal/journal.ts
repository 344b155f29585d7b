/**
 * Write-ahead journaling of metadata blocks (JBD2, ordered mode).
 *
 * The engine owns a dirty-block cache; at commit it has already written the
 * file data its metadata points to, then hands over every modified metadata
 * block (`blocks`) and the blocks it freed from metadata use (`revoked`).
 * A commit, in order:
 *
 *   1. (only if earlier checkpoints are not yet durable and the log must be
 *      reused) fdatasync, reset the journal superblock (s_start 0), fdatasync
 *   2. descriptor block(s) + block images (magic-escaped) + revoke block(s)
 *      at the log head; when the log was empty, the journal superblock gets
 *      s_start/s_sequence pointing at them
 *   3. fdatasync                      <- images durable before the commit
 *   4. commit block, fdatasync        <- the transaction is durable here
 *   5. checkpoint: each block written home (no sync: the next reuse of log
 *      space, step 1, or close() syncs them first)
 *
 * A crash before 4 completes leaves the transaction without a valid commit
 * block: replay ignores it and the home blocks still hold the previous
 * committed state (nothing was written home yet). A crash after 4 replays it.
 * Transactions accumulate in the log until the next one does not fit; then
 * step 1 makes the checkpoints durable and the log starts over at the head
 * (wrapping from s_maxlen - 1 to s_first).
 * close() does step 1 unconditionally, so a clean close leaves s_start = 0.
 *
 * Revoke records stop replay from writing an old metadata image over a block
 * that was freed and now holds file data. A block both revoked and journaled
 * in one transaction is journaled only (as jbd2_journal_cancel_revoke does).
 */
import { CorruptError, InternalError } from '../../errors.js';
import { eachLimited } from '../../io/each-limited.js';
import { blockTailChecksum, commitBlockChecksum, dataBlockChecksum, journalChecksumSeed } from './checksum.js';
import {
  BlockType,
  encodeBlockHeader,
  encodeCommitBlock,
  encodeDescriptorTag,
  encodeJournalSuperblock,
  encodeRevokeBlock,
  HEADER_SIZE,
  JBD2_MAGIC,
  JournalIncompat,
  type JournalSuperblock,
  revokesPerBlock,
  TagFlag,
  type TagLayout,
  tagLayout,
  tagsPerDescriptor,
} from './format.js';
import { type JournalFile, journalBlockSet, readLogBlock, writeLogBlock, writeLogRun } from './journal-file.js';
import { readJournalSuperblock, resetJournal } from './replay.js';

export interface CommitStats {
  sequence: number;
  /** Log block of the transaction's first block. */
  logStart: number;
  /** Log blocks it took (descriptors, images, revokes, commit). */
  logBlocks: number;
  syncs: number;
}

export class Journal {
  readonly file: JournalFile;
  private readonly jsb: JournalSuperblock;
  private readonly layout: TagLayout;
  private readonly seed: number;
  private readonly ownBlocks: Set<number>;
  /** Next log block to write. */
  private head: number;
  /** Log blocks in use since the last reset (from s_start up to head). */
  private used = 0;
  /** ID of the next transaction. */
  private sequence: number;
  /** Home writes done since the last fdatasync. */
  private checkpointsPending = false;
  private closed = false;
  /** Totals, for tests and benchmarks. */
  readonly stats = { commits: 0, syncs: 0, logBlocks: 0, resets: 0 };

  private constructor(file: JournalFile, jsb: JournalSuperblock) {
    this.file = file;
    this.jsb = jsb;
    this.layout = tagLayout(jsb.featureIncompat);
    this.seed = this.layout.csumV2 || this.layout.csumV3 ? journalChecksumSeed(jsb.uuid) : 0;
    this.ownBlocks = journalBlockSet(file);
    this.head = jsb.first;
    this.sequence = jsb.sequence;
  }

  /**
   * Opens the journal for writing. The log must be empty: replay
   * (replay.ts) runs first on any image that needs it.
   */
  static async open(file: JournalFile): Promise<Journal> {
    if (!file.store.writable) throw new InternalError('journal opened for writing on a read-only image');
    const jsb = await readJournalSuperblock(file);
    if (jsb.start !== 0) throw new InternalError('journal still holds transactions: replay it before writing');
    if (jsb.blockType !== BlockType.SUPERBLOCK_V2 && jsb.featureIncompat !== 0) {
      throw new CorruptError('v1 journal superblock with features');
    }
    return new Journal(file, jsb);
  }

  /** s_maxlen: the log wraps from s_maxlen - 1 to s_first. */
  get maxLen(): number {
    return this.jsb.maxLen;
  }

  /** Log blocks available to transactions. */
  get logLength(): number {
    return this.jsb.maxLen - this.jsb.first;
  }

  /**
   * The most blocks (journaled plus revoked) one transaction may carry; the
   * engine commits before exceeding it. Half the log, so a transaction with
   * all its descriptor, revoke and commit blocks always fits an empty log.
   */
  get maxTransactionBlocks(): number {
    return Math.floor(this.logLength / 2);
  }

  /** The ID the next commit will carry. */
  get nextSequence(): number {
    return this.sequence;
  }

  /** Log blocks a transaction of `nBlocks` images and `nRevoked` revokes occupies. */
  logBlocksFor(nBlocks: number, nRevoked: number): number {
    const tpd = tagsPerDescriptor(this.file.blockSize, this.layout);
    const rpb = revokesPerBlock(this.file.blockSize, this.layout);
    return Math.ceil(nBlocks / tpd) + nBlocks + Math.ceil(nRevoked / rpb) + 1;
  }

  /**
   * Commits one transaction (see the file comment for the order of writes).
   * Resolves once the commit block is durable and the blocks are written home.
   */
  async commit(blocks: Map<number, Buffer>, revoked: Set<number> = new Set()): Promise<CommitStats> {
    if (this.closed) throw new InternalError('journal is closed');
    const bs = this.file.blockSize;
    const homes = [...blocks.keys()];
    for (const home of homes) {
      const img = blocks.get(home)!;
      if (img.length !== bs) throw new InternalError(`journaled block ${home} is ${img.length} bytes, not ${bs}`);
      this.checkHome(home);
    }
    const revokes = [...revoked].filter((b) => !blocks.has(b));
    for (const r of revokes) this.checkHome(r);
    if (homes.length === 0 && revokes.length === 0) {
      return { sequence: this.sequence, logStart: this.head, logBlocks: 0, syncs: 0 };
    }
    const need = this.logBlocksFor(homes.length, revokes.length);
    if (need > this.logLength) {
      throw new InternalError(
        `transaction of ${homes.length} blocks and ${revokes.length} revokes needs ${need} log blocks; the journal has ${this.logLength}`,
      );
    }
    let syncs = 0;
    if (this.used + need > this.logLength) syncs += await this.resetLog();

    const seq = this.sequence;
    const logStart = this.head;
    const out = this.buildTransaction(seq, homes, blocks, revokes);
    const payload = out.slice(0, -1);
    const commitBlock = out[out.length - 1]!;

    let superblockChanged = false;
    if (revokes.length > 0 && !(this.jsb.featureIncompat & JournalIncompat.REVOKE)) {
      // jbd2 sets the REVOKE feature before writing its first revoke record.
      this.jsb.featureIncompat |= JournalIncompat.REVOKE;
      superblockChanged = true;
    }
    if (this.jsb.start === 0) {
      // The log was empty: point the superblock at this transaction. It
      // becomes durable with the images (one fdatasync for both); until the
      // commit block follows, replay finds nothing committed there.
      this.jsb.start = logStart;
      this.jsb.sequence = seq;
      superblockChanged = true;
    }
    if (superblockChanged) await this.writeSuperblock();
    await this.writeCircular(logStart, payload);
    await this.file.store.sync();
    await this.writeCircular(this.advance(logStart, payload.length), [commitBlock]);
    await this.file.store.sync();
    syncs += 2;

    // Checkpoint: home writes, coalesced over contiguous block runs, up to
    // CHECKPOINT_WRITERS in flight (their order does not matter: the commit
    // block is durable, and replay would write the same bytes).
    const sorted = homes.slice().sort((a, b) => a - b);
    const writes: { pos: number; data: Buffer }[] = [];
    let i = 0;
    while (i < sorted.length) {
      let n = 1;
      while (i + n < sorted.length && sorted[i + n] === sorted[i]! + n) n++;
      const run = sorted.slice(i, i + n).map((b) => blocks.get(b)!);
      writes.push({ pos: sorted[i]! * bs, data: n === 1 ? run[0]! : Buffer.concat(run) });
      i += n;
    }
    this.checkpointsPending = true;
    await eachLimited(writes, CHECKPOINT_WRITERS, (w) => this.file.store.write(w.pos, w.data));

    this.head = this.advance(logStart, out.length);
    this.used += out.length;
    this.sequence = (seq + 1) >>> 0;
    this.stats.commits++;
    this.stats.syncs += 2; // resetLog() counts its own
    this.stats.logBlocks += out.length;
    return { sequence: seq, logStart, logBlocks: out.length, syncs };
  }

  /**
   * Makes every checkpoint durable and leaves the log empty (s_start 0), as a
   * clean unmount does. The journal can be committed to again afterwards.
   */
  async flush(): Promise<void> {
    if (this.jsb.start !== 0 || this.checkpointsPending) await this.resetLog();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush();
    this.closed = true;
  }

  private checkHome(home: number): void {
    if (!Number.isInteger(home) || home < 0 || home >= this.file.fsBlocks) {
      throw new InternalError(`block ${home} lies outside the filesystem's ${this.file.fsBlocks} blocks`);
    }
    if (this.ownBlocks.has(home)) throw new CorruptError(`block ${home} belongs to the journal itself`);
  }

  private advance(block: number, n: number): number {
    let b = block + n;
    while (b >= this.jsb.maxLen) b -= this.logLength;
    return b;
  }

  /** fdatasync the checkpoints, then mark the log empty; returns the syncs done. */
  private async resetLog(): Promise<number> {
    await this.file.store.sync();
    this.checkpointsPending = false;
    // The head stays where it is: the next transaction starts there and the
    // log wraps from s_maxlen - 1 to s_first, as jbd2's does.
    await resetJournal(this.file, this.jsb, this.sequence);
    this.used = 0;
    this.stats.resets++;
    this.stats.syncs += 2;
    return 2;
  }

  private async writeSuperblock(): Promise<void> {
    const block = await readLogBlock(this.file, 0);
    encodeJournalSuperblock(this.jsb).copy(block, 0);
    await writeLogBlock(this.file, 0, block);
  }

  /** Writes consecutive log blocks from `start`, splitting where the log wraps. */
  private async writeCircular(start: number, blocks: Buffer[]): Promise<void> {
    const untilEnd = this.jsb.maxLen - start;
    if (blocks.length <= untilEnd) {
      await writeLogRun(this.file, start, blocks);
    } else {
      await writeLogRun(this.file, start, blocks.slice(0, untilEnd));
      await writeLogRun(this.file, this.jsb.first, blocks.slice(untilEnd));
    }
  }

  /** Descriptor/image groups, revoke blocks, and the commit block last. */
  private buildTransaction(seq: number, homes: number[], blocks: Map<number, Buffer>, revokes: number[]): Buffer[] {
    const bs = this.file.blockSize;
    const layout = this.layout;
    const csum = layout.csumV2 || layout.csumV3;
    const tpd = tagsPerDescriptor(bs, layout);
    const out: Buffer[] = [];
    for (let i = 0; i < homes.length; i += tpd) {
      const group = homes.slice(i, i + tpd);
      const desc = Buffer.alloc(bs);
      encodeBlockHeader(desc, BlockType.DESCRIPTOR, seq);
      const images: Buffer[] = [];
      let off = HEADER_SIZE;
      group.forEach((home, k) => {
        const src = blocks.get(home)!;
        let img = src;
        let flags = 0;
        if (src.readUInt32BE(0) === JBD2_MAGIC) {
          img = Buffer.from(src);
          img.writeUInt32BE(0, 0);
          flags |= TagFlag.ESCAPE;
        }
        if (k > 0) flags |= TagFlag.SAME_UUID;
        if (k === group.length - 1) flags |= TagFlag.LAST_TAG;
        // Checksummed as written to the log, i.e. after escaping (jbd2 commit.c).
        const checksum = csum ? dataBlockChecksum(this.seed, seq, img) : 0;
        off = encodeDescriptorTag(desc, off, layout, { blockNr: home, flags, checksum }, this.jsb.uuid);
        images.push(img);
      });
      if (csum) desc.writeUInt32BE(blockTailChecksum(this.seed, desc), bs - 4);
      out.push(desc, ...images);
    }
    if (revokes.length > 0) {
      const rpb = revokesPerBlock(bs, layout);
      for (let i = 0; i < revokes.length; i += rpb) {
        const block = encodeRevokeBlock(bs, seq, layout, revokes.slice(i, i + rpb));
        if (csum) block.writeUInt32BE(blockTailChecksum(this.seed, block), bs - 4);
        out.push(block);
      }
    }
    const commit = encodeCommitBlock(bs, seq, nowTime());
    if (csum) {
      commit[0x0c] = 4; // JBD2_CRC32C_CHKSUM
      commit[0x0d] = 4; // JBD2_CRC32C_CHKSUM_SIZE
      commit.writeUInt32BE(commitBlockChecksum(this.seed, commit), 0x10);
    }
    out.push(commit);
    return out;
  }
}

/** Checkpoint writes in flight at once (libuv's default thread pool size). */
const CHECKPOINT_WRITERS = 4;

function nowTime(): { sec: number; nsec: number } {
  const ms = Date.now();
  return { sec: Math.floor(ms / 1000), nsec: (ms % 1000) * 1_000_000 };
}
