/**
 * A new directory spreading to a group not visited yet (Orlov) reads that
 * group's inode bitmap, block bitmap and inode-table block at once: all
 * three are asked of the image before the first of them has arrived (one
 * round trip instead of three), and the directory is made as before.
 */
import { describe, expect, it } from 'vitest';
import { openExt3 } from '../../src/ext3/index.js';
import { mkfsExt3 } from '../../src/ext3/mkfs.js';
import { MemoryRegion } from '../../src/io/memory-region.js';

/** A region whose reads at or past `from`, while held, wait until released; it notes those positions. */
class HeldReads extends MemoryRegion {
  gate: Promise<void> | null = null;
  from = 0;
  asked: number[] = [];
  override async read(position: number, length: number): Promise<Buffer> {
    const bytes = Buffer.from(this.bytes.subarray(position, position + length));
    if (this.gate && position >= this.from) {
      this.asked.push(position);
      await this.gate;
    }
    return bytes;
  }
}

describe('allocInode warms a new group', () => {
  it("reads a fresh group's bitmaps and inode-table block together for a new directory", async () => {
    const store = new HeldReads(Buffer.alloc(32 << 20), { name: 'warm.img' });
    const made = await mkfsExt3(store, { now: 1_700_000_000 });
    expect(made.geometry.blockSize).toBe(1024);
    const fs = await openExt3(store, { writable: true });
    // Held: reads of every group but the first (the root's, read freely).
    const bs = made.geometry.blockSize;
    store.from = (fs.sb.s_first_data_block + fs.sb.s_blocks_per_group) * bs;
    let open!: () => void;
    store.gate = new Promise((r) => (open = r));
    const mk = fs.mkdir(fs.rootId, Buffer.from('spread'), { mode: 0o40755, uid: 0, gid: 0 });
    // Let the engine issue what it issues before any read completes.
    for (let i = 0; i < 50 && store.asked.length < 3; i++) await new Promise((r) => setImmediate(r));
    const pending = [...store.asked];
    store.gate = null;
    open();
    const id = await mk;
    // The directory went to another group than the root's, with all three reads in flight at once.
    const group = Math.floor((id - 1) / fs.sb.s_inodes_per_group);
    expect(group).toBeGreaterThan(0);
    expect(pending.length).toBeGreaterThanOrEqual(3);
    expect((await fs.getattr(id)).mode).toBe(0o40755);
    expect(await fs.readdir(id)).toEqual([]);
    await fs.close();
  });
});
