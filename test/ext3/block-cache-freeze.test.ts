/**
 * BlockCache freeze/thaw (the background journal commit, block-cache.ts):
 * a block frozen for a commit whose live buffer left the clean cache must
 * read back as its newest bytes while the commit writes it home, also
 * through prefetch, whose one big read may have been issued before the
 * checkpoint wrote the block home and return only after thaw() (and after
 * the next commit's freeze refilled the chunk the frozen copy was cut from).
 */
import { describe, expect, it } from 'vitest';
import { BlockCache } from '../../src/ext3/block-cache.js';
import { MemoryRegion } from '../../src/io/memory-region.js';

const BS = 1024;

/** A region whose reads, once held, wait until released (a slow disk). */
class HeldReads extends MemoryRegion {
  gate: Promise<void> | null = null;
  /** Only reads longer than this wait at the gate (0: every read). */
  holdOver = 0;
  override async read(position: number, length: number): Promise<Buffer> {
    // The bytes are taken now (the read is issued), delivered once the gate opens.
    const bytes = Buffer.from(this.bytes.subarray(position, position + length));
    if (this.gate && length > this.holdOver) await this.gate;
    return bytes;
  }
}

describe('BlockCache freeze and thaw', () => {
  it('a prefetch that read a frozen block before its checkpoint and returns after thaw caches the newest bytes', async () => {
    const store = new HeldReads(Buffer.alloc(64 * BS));
    // Room for 2 clean blocks: the frozen block's live buffer is evicted by reads of others.
    const cache = new BlockCache(store, BS, new Map(), 2 * BS);
    const w = await cache.write(5);
    w.fill(0xab);
    const frozen = cache.freeze();
    await cache.read(20);
    await cache.read(21);
    expect(cache.has(5)).toBe(false);
    // Evicted, still committing: a read takes the frozen copy.
    expect((await cache.read(5))[0]).toBe(0xab);
    await cache.read(22);
    await cache.read(23);
    expect(cache.has(5)).toBe(false);

    let open!: () => void;
    store.gate = new Promise((r) => (open = r));
    const pf = cache.prefetch(4, 2); // blocks 4 and 5, read from the image before block 5 is home
    // The commit's checkpoint writes block 5 home, then thaws.
    await store.write(5 * BS, frozen.get(5)!);
    cache.thaw(frozen);
    // The next commit freezes another block into the recycled chunk meanwhile.
    cache.fresh(30).fill(0xcd);
    const next = cache.freeze();
    expect(next.get(30)![0]).toBe(0xcd);
    store.gate = null;
    open();
    await pf;
    expect((await cache.read(5))[0]).toBe(0xab);
  });

  it('a block loaded, changed, committed, written home and evicted while a prefetch of it is in flight keeps its newest bytes', async () => {
    const store = new HeldReads(Buffer.alloc(64 * BS));
    const cache = new BlockCache(store, BS, new Map(), 2 * BS);
    let open!: () => void;
    store.gate = new Promise((r) => (open = r));
    store.holdOver = BS; // the prefetch's one big read waits; single-block reads do not
    const pf = cache.prefetch(4, 2); // blocks 4 and 5, read from the image now (zeros)
    // Meanwhile an operation changes block 5, its commit writes it home, and its live buffer
    // leaves the clean cache (room for 2 blocks).
    const op = (async () => {
      const buf = await cache.write(5);
      buf.fill(0xab);
      const frozen = cache.freeze();
      await store.write(5 * BS, frozen.get(5)!);
      cache.thaw(frozen);
      await cache.read(20);
      await cache.read(21);
    })();
    // It runs as far as it can while the prefetch's read is held (all of it, unless it waits
    // for that read), then the read returns.
    for (let k = 0; k < 20; k++) await new Promise((r) => setImmediate(r));
    open();
    await pf;
    await op;
    expect((await cache.read(5))[0]).toBe(0xab);
  });
});
