/**
 * The running transaction (the kernel's jbd2 handle and ext3_journal_* glue):
 * one writer queue that every mutation runs on, so no two operations
 * interleave inside an allocation, a directory update or a commit; the
 * commit itself (ordered mode: file data first, then every dirty metadata
 * block through the journal); reservations taken before an operation changes
 * anything; and the timer that commits at most commitIntervalMs after a
 * change.
 */
import { CorruptError, describeProblem, InternalError, withErrno } from '../errors.js';
import type { Ext3Context } from './context.js';
import { gdtBlockOf, gdtOffsetOf } from './geometry.js';
import { encodeGroupDesc } from './group-desc.js';
import { Journal } from './journal/journal.js';
import { openJournalFile } from './journal/journal-file.js';
import { COMPAT, encodeSuperblock, hasCompat, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE } from './superblock.js';

export class Transaction {
  journal: Journal | null = null;
  closed = false;
  /**
   * The write-out of the last transaction closed (see closeRunning): in
   * flight until it settles, then kept, so settled() reports that commit's
   * own error even after it ended.
   */
  private lastCommit: Promise<void> | null = null;
  /** Metadata blocks freed in the running transaction (revoke records). */
  private readonly revoked = new Set<number>();
  private readonly dirtyGroups = new Set<number>();
  private queue: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;
  private threshold = 0;

  constructor(
    private readonly c: Ext3Context,
    private readonly commitIntervalMs: number,
  ) {}

  /** Opens the journal, when the filesystem has one (writable opens). */
  async openJournal(): Promise<void> {
    const sb = this.c.sb;
    if (hasCompat(sb, COMPAT.has_journal) && sb.s_journal_inum !== 0) {
      this.journal = await Journal.open(await openJournalFile(this.c.store, sb));
    }
  }

  /** Dirty metadata blocks plus revoked ones: the running transaction's size. */
  get size(): number {
    return this.c.cache.dirty.size + this.revoked.size;
  }

  revoke(block: number): void {
    this.revoked.add(block);
  }

  /**
   * Group descriptor `g` changed. Its GDT block joins the transaction now
   * (that may need a read); the descriptor itself is encoded into it once, at
   * commit (encodeDirtyGroups), however many allocations change it before.
   */
  groupChanged(g: number): Promise<void> | undefined {
    this.dirtyGroups.add(g);
    const blk = gdtBlockOf(this.c.sb, g);
    if (this.c.cache.dirty.has(blk)) return undefined;
    return this.c.cache.write(blk).then(() => undefined);
  }

  /** Encodes the changed group descriptors into their (dirty) GDT blocks; before each commit. */
  private encodeDirtyGroups(): void {
    for (const g of this.dirtyGroups) {
      const buf = this.c.cache.dirty.get(gdtBlockOf(this.c.sb, g));
      if (!buf) throw new InternalError(`group ${g} changed but its descriptor block left the transaction`);
      encodeGroupDesc(this.c.groups[g]!, buf, gdtOffsetOf(this.c.sb, g));
    }
    this.dirtyGroups.clear();
  }

  /** Runs `fn` on the writer queue; EROFS on a read-only engine, EIO once closed or after a failed commit. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.c.writable) return Promise.reject(withErrno('EROFS'));
    if (this.closed) return Promise.reject(withErrno('EIO', `${this.c.name} is closed`));
    if (this.failed !== null) return Promise.reject(this.failedError());
    this.queued++;
    const result = this.queue.then(async () => {
      try {
        if (this.failed !== null) throw this.failedError();
        try {
          return await fn();
        } catch (err) {
          // Bad bytes found (or an engine bug) half way through a change: what it already did
          // must never be committed, or the change would not be atomic. Abort, as jbd2 does.
          if (err instanceof CorruptError || err instanceof InternalError) this.latch(err);
          throw err;
        } finally {
          if (this.failed === null) await this.afterMutation();
        }
      } catch (err) {
        // Every failure names the image here (Ext3Fs names its own errors: NAMES_OWN_ERRORS).
        throw this.c.named(err);
      } finally {
        this.queued--;
      }
    });
    this.queue = result.catch(() => undefined);
    return result;
  }

  /** Jobs on the writer queue (run's and the commit timer's) that have not finished. */
  private queued = 0;

  /**
   * Nothing on the writer queue, and changes are accepted: a job queued now
   * would run next, before anything issued after it, so a step that needs
   * no await may be taken at once instead (Ext3Fs.ref).
   */
  get queueEmpty(): boolean {
    return this.queued === 0 && this.c.writable && !this.closed && this.failed === null;
  }

  private async afterMutation(): Promise<void> {
    if (this.c.cache.dirty.size === 0) return;
    if (this.c.cache.dirty.size >= this.commitThreshold()) {
      await this.closeRunning(true);
      return;
    }
    if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = null;
        if (this.closed) return;
        // No caller to tell: the failure is latched (the next call reports it) and logged.
        // (An earlier failure was already reported to its caller: nothing to commit, nothing to log.)
        this.queued++;
        this.queue = this.queue
          .then(() => (this.failed === null ? this.closeRunning(true).catch((err: unknown) => this.log(err)) : undefined))
          .finally(() => {
            this.queued--;
          });
      }, this.commitIntervalMs);
      this.timer.unref();
    }
  }

  /** Dirty blocks at which a transaction is committed early (half the journal's capacity). */
  commitThreshold(): number {
    if (this.threshold === 0) {
      this.threshold = this.journal ? Math.max(16, Math.floor(this.journal.maxTransactionBlocks / 2)) : 4096;
    }
    return this.threshold;
  }

  /**
   * The first commit failure, or a CorruptError/InternalError raised inside a
   * change, latched (as jbd2 aborts its journal): the image holds the last
   * committed state and memory is ahead of it (or half way through a
   * change), so from then on every change, fsync, sync and close fails with
   * EIO (reads go on) and nothing more is written. A timer commit has no caller to tell: its failure is logged, once,
   * naming the image (a foreground one reaches its caller instead).
   */
  private failed: unknown = null;

  get failure(): unknown {
    return this.failed;
  }

  failedError(): Error {
    return withErrno(
      'EIO',
      `${this.c.name}: an earlier commit failed (${describeProblem(this.failed)}); reopen the image to recover`,
    );
  }

  private latch(err: unknown): void {
    if (this.failed === null) this.failed = err;
  }

  private logged = false;

  private log(err: unknown): void {
    if (this.logged) return;
    this.logged = true;
    const why = describeProblem(err);
    process.stderr.write(`sifuse: ${this.c.name}: background journal commit failed, no further changes are written: ${why}\n`);
  }

  /**
   * Commits the running transaction and waits until it is durable (callers
   * hold the queue); a failure is latched, and reaches the caller as it is.
   */
  async commit(): Promise<void> {
    await this.closeRunning(false);
    await this.settled();
  }

  /**
   * fsync and sync: the running transaction closes on the queue, and its
   * write-out is waited for off the queue, so operations that arrive
   * meanwhile run (in the next transaction) instead of waiting behind it.
   */
  async sync(): Promise<void> {
    await this.run(() => this.closeRunning(false));
    await this.settled();
  }

  /**
   * Resolves once the last closed transaction is durable (and written home);
   * rejects with its error if it failed, or with EIO after an earlier failure.
   */
  async settled(): Promise<void> {
    if (this.lastCommit) await this.lastCommit;
    if (this.failed !== null) throw this.failedError();
  }

  /** Waits for a commit in flight to end, whatever its outcome (close() before releasing the image). */
  async idle(): Promise<void> {
    if (this.lastCommit) await this.lastCommit.catch(() => undefined);
  }

  /**
   * Closes the running transaction (callers hold the queue) and starts its
   * commit in the background, as jbd2's commit thread does: the foreground
   * half (freeze) hands the transaction's file data to the background flush,
   * encodes the inodes, group descriptors and superblock into their blocks
   * and takes a copy of every dirty block; the background half waits for the
   * data (ordered mode), then (writeOut) writes the copies to the log, the
   * commit block once they are durable, then the checkpoint, while the next
   * transaction runs on the live buffers. At most
   * one transaction commits at a time: closing the next one first waits for
   * it, which also orders every write of one commit before the next's. The
   * blocks a transaction freed stay unusable until its commit is durable
   * (Allocator.sealFreed). With `logFailure` (nobody waits for the result:
   * the timer and the size threshold), a background failure is also logged.
   */
  async closeRunning(logFailure: boolean): Promise<void> {
    const t0 = performance.now();
    if (this.lastCommit) await this.lastCommit.catch(() => undefined);
    if (this.failed !== null) throw this.failedError();
    let writeOut: () => Promise<void>;
    try {
      writeOut = await this.freeze();
    } catch (err) {
      this.latch(err);
      throw err;
    }
    const held = performance.now() - t0;
    const stats = this.c.stats;
    stats.commitHoldMs += held;
    if (held > stats.commitHoldMaxMs) stats.commitHoldMaxMs = held;
    const p: Promise<void> = writeOut().catch((err: unknown) => {
      this.latch(err);
      if (logFailure) this.log(err);
      throw err;
    });
    // Awaited by settled() when someone waits; a failure nobody waits for is latched (and logged) above.
    p.catch(() => undefined);
    this.lastCommit = p;
  }

  /** The foreground half of a commit (see closeRunning); returns the background half. */
  private async freeze(): Promise<() => Promise<void>> {
    const c = this.c;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    // Ordered mode: the transaction's file data goes to the background flush now and the
    // write-out waits for it before the log's first fdatasync, so it is durable before the
    // commit block; the next transaction's data goes to new pending blocks meanwhile.
    await c.data.startFlush(false);
    const dataWritten = c.data.flushed();
    c.itable.writeBackAll();
    this.encodeDirtyGroups();
    const sbBlock = Math.floor(SUPERBLOCK_OFFSET / c.blockSize);
    const sbOff = SUPERBLOCK_OFFSET % c.blockSize;
    if (c.cache.dirty.size === 0 && this.revoked.size === 0) {
      // Nothing but maybe the superblock itself (flags at open/close, the orphan head).
      const current = await c.cache.read(sbBlock);
      if (encodeSuperblock(c.sb).equals(current.subarray(sbOff, sbOff + SUPERBLOCK_SIZE))) {
        return async () => {
          await dataWritten();
          await c.store.sync();
        };
      }
    }
    c.sb.s_wtime = c.now().sec;
    const sbBuf = await c.cache.write(sbBlock);
    c.sb.raw = encodeSuperblock(c.sb);
    c.sb.raw.copy(sbBuf, sbOff);
    c.stats.commits++;
    const blocks = c.cache.freeze();
    const revoked = new Set<number>();
    for (const b of this.revoked) if (!blocks.has(b)) revoked.add(b);
    this.revoked.clear();
    const freed = c.alloc.sealFreed();
    return async () => {
      await dataWritten();
      await this.writeOut(blocks, revoked);
      c.cache.thaw(blocks);
      c.alloc.releaseFreed(freed);
    };
  }

  /** The background half of a commit: the frozen blocks through the journal (or home, without one). */
  private async writeOut(blocks: Map<number, Buffer>, revoked: Set<number>): Promise<void> {
    const c = this.c;
    if (this.journal && this.journal.logBlocksFor(blocks.size, revoked.size) <= this.journal.logLength) {
      await this.journal.commit(blocks, revoked);
      return;
    }
    // No journal (ext2), or a transaction larger than the whole log (operations commit
    // early and free big files in steps, so only a pathologically small journal gets
    // here): write the blocks home in place, then sync. Not atomic against a crash.
    if (this.journal) {
      // Empty the log first, so no older logged copy can be replayed over these blocks.
      const file = this.journal.file;
      await this.journal.close();
      this.journal = await Journal.open(file);
    }
    const sorted = [...blocks.keys()].sort((a, b) => a - b);
    for (const b of sorted) await c.store.write(b * c.blockSize, blocks.get(b)!);
    await c.store.sync();
  }

  /**
   * Makes sure `blocks` blocks and `inodes` inodes can be allocated, first
   * committing when blocks freed in this transaction are what is missing.
   * Operations call it before changing anything, so ENOSPC leaves no trace.
   */
  async reserve(blocks: number, inodes = 0): Promise<void> {
    const { sb, alloc } = this.c;
    if (inodes > sb.s_free_inodes_count) throw withErrno('ENOSPC', 'no free inodes');
    if (blocks <= alloc.availableBlocks()) return;
    if (blocks <= sb.s_free_blocks_count && alloc.freedPending > 0) await this.commit();
    if (blocks > alloc.availableBlocks()) throw withErrno('ENOSPC');
  }

  /** Closes the journal (after the last commit, once it is durable). */
  async closeJournal(): Promise<void> {
    await this.settled();
    if (this.journal) await this.journal.close();
  }

  /**
   * The primary superblock written in place and synced, outside any
   * transaction: only for close(), once the journal is closed and empty.
   */
  async writeSuperblockHome(): Promise<void> {
    const c = this.c;
    c.sb.s_wtime = c.now().sec;
    c.sb.raw = encodeSuperblock(c.sb);
    await c.store.write(SUPERBLOCK_OFFSET, c.sb.raw);
    await c.store.sync();
  }

  stop(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
