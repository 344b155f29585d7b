/**
 * Opening an ext2/ext3 image: `openExt3(store, { writable })`.
 *
 * Order matters and is the whole contract of this file:
 *   1. decode and validate the superblock against the store's size;
 *   2. refuse features we cannot read (or, writable, cannot write) before a
 *      single byte is written;
 *   3. replay the journal if it needs recovery (a read-only store gets the
 *      replayed blocks in memory and the image stays untouched);
 *   4. re-read the superblock (replay may have changed it), load the group
 *      descriptors, and for writing open the journal, process the orphan
 *      list and mark the filesystem in use.
 */
import { inFile, nameEngineErrors, UnsupportedError, UsageError } from '../errors.js';
import type { ByteStore } from '../io/byte-source.js';
import { checkFeatures, COMPAT, INCOMPAT } from './features.js';
import { Ext3Fs } from './fs.js';
import type { Time } from './inode.js';
import { recoverFilesystem } from './recovery.js';
import { decodeSuperblock, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE } from './superblock.js';
import type { Superblock } from './superblock.js';

export { Ext3Fs } from './fs.js';

export interface OpenExt3Options {
  writable: boolean;
  /** Clock for timestamps (tests). */
  now?: () => Time;
  /** Longest delay between a change and its commit, at most (and by default) 5000 ms. */
  commitIntervalMs?: number;
}

export function openExt3(store: ByteStore, options: OpenExt3Options): Promise<Ext3Fs> {
  return inFile(store.name, async () => {
    if (options.writable && !store.writable) throw new UsageError('image opened read-only cannot be written', store.name);
    const readSb = async () => decodeSuperblock(await store.read(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE), store.size);
    let sb = await readSb();
    const feats = { compat: sb.s_feature_compat, incompat: sb.s_feature_incompat, roCompat: sb.s_feature_ro_compat };
    checkFeatures(feats, options.writable);
    let replayed = new Map<number, Buffer>();
    if ((sb.s_feature_compat & COMPAT.has_journal) !== 0 && sb.s_journal_inum !== 0) {
      const flagged = (sb.s_feature_incompat & INCOMPAT.needs_recovery) !== 0;
      // An ext4 journal (extent-mapped) is out of the journal module's reach; a read-only
      // open of an image that does not need recovery does not need it at all.
      const r = await recoverFilesystem(store).catch((err: unknown) => {
        if (err instanceof UnsupportedError && !options.writable && !flagged) return null;
        throw err;
      });
      if (!r) return finish(sb, replayed);
      replayed = r.overlay;
      if (r.needed && store.writable) sb = await readSb();
      else if (r.needed) {
        // Read-only: the replayed superblock (if the journal held it) is in the overlay.
        const bs = 1024 << sb.s_log_block_size;
        const sbBlock = replayed.get(Math.floor(SUPERBLOCK_OFFSET / bs));
        if (sbBlock) {
          const off = SUPERBLOCK_OFFSET % bs;
          sb = decodeSuperblock(sbBlock.subarray(off, off + SUPERBLOCK_SIZE), store.size);
        }
      }
    }
    return finish(sb, replayed);
  });
  async function finish(sb: Superblock, replayed: Map<number, Buffer>): Promise<Ext3Fs> {
    const fs = new Ext3Fs(store, sb, {
      writable: options.writable,
      now: options.now,
      replayed,
      commitIntervalMs: options.commitIntervalMs,
    });
    await fs.load();
    // Errors found later (any method) name the image too.
    return nameEngineErrors(fs, store.name);
  }
}
