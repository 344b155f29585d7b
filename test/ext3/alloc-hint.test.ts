/**
 * Allocator.allocRun with its per-group search hints hands out exactly the
 * blocks a full scan of the bitmap would (the first free block at or after
 * the goal in its group, else from the group's start, then the free blocks
 * right after it), through seeded runs of files allocated the way the write
 * path does (a first block with the group's start as goal, the next ones
 * after the previous), frees, and transactions sealed and made durable.
 */
import { describe, expect, it } from 'vitest';
import { Allocator, type AllocContext } from '../../src/ext3/alloc.js';
import type { GroupDesc } from '../../src/ext3/group-desc.js';
import type { Superblock } from '../../src/ext3/superblock.js';

const PER_GROUP = 512;
const GROUPS = 2;

function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

function setup(): { alloc: Allocator; bitmaps: Buffer[]; groups: GroupDesc[] } {
  const bitmaps = Array.from({ length: GROUPS }, () => Buffer.alloc(PER_GROUP / 8));
  // Block 0 of each group (its "metadata") is in use from the start.
  for (const bm of bitmaps) bm[0] = 1;
  const groups = bitmaps.map((_, g) => ({ bg_block_bitmap: 10_000 + g, bg_free_blocks_count: PER_GROUP - 1 }) as GroupDesc);
  const sb = {
    s_first_data_block: 0,
    s_blocks_per_group: PER_GROUP,
    s_blocks_count: PER_GROUP * GROUPS,
    s_free_blocks_count: (PER_GROUP - 1) * GROUPS,
  } as Superblock;
  const ctx: AllocContext = {
    sb,
    groups,
    readMeta: async (b) => bitmaps[b - 10_000]!,
    writeMeta: async (b) => bitmaps[b - 10_000]!,
    groupChanged: () => undefined,
  };
  return { alloc: new Allocator(ctx), bitmaps, groups };
}

const isSet = (bm: Buffer, bit: number): boolean => (bm[bit >>> 3]! & (1 << (bit & 7))) !== 0;

/** What a scan from scratch gives for allocRun(goal, max), `unusable` the blocks freed but not yet durable. */
function expected(bitmaps: Buffer[], unusable: Set<number>, goal: number, max: number): { start: number; count: number } | null {
  const g0 = Math.floor(goal / PER_GROUP);
  for (let k = 0; k <= GROUPS; k++) {
    const g = (g0 + k) % GROUPS;
    const bm = bitmaps[g]!;
    const free = (bit: number): boolean => !isSet(bm, bit) && !unusable.has(g * PER_GROUP + bit);
    const start = k === 0 ? goal - g * PER_GROUP : 0;
    let bit = -1;
    for (let b = start; b < PER_GROUP && bit < 0; b++) if (free(b)) bit = b;
    for (let b = 0; b < start && bit < 0; b++) if (free(b)) bit = b;
    if (bit < 0) continue;
    let count = 1;
    while (count < max && bit + count < PER_GROUP && free(bit + count)) count++;
    return { start: g * PER_GROUP + bit, count };
  }
  return null;
}

describe('allocRun search hints', () => {
  for (const seed of [1, 2, 3, 4]) {
    it(`seed ${seed}: every run is the one a full scan finds`, async () => {
      const next = rng(seed);
      const { alloc, bitmaps } = setup();
      const files: number[][] = [];
      const unusable = new Set<number>();
      let sealed: ReturnType<Allocator['sealFreed']> | null = null;
      let sealedBlocks: number[] = [];
      for (let step = 0; step < 600; step++) {
        const r = next();
        if (r < 0.08 && files.length > 0) {
          // Remove a file: its blocks are freed (unusable until the transaction is durable).
          const f = files.splice(Math.floor(next() * files.length), 1)[0]!;
          for (const b of f) {
            await alloc.freeBlock(b);
            unusable.add(b);
          }
          continue;
        }
        if (r < 0.12) {
          // A commit: the running transaction's frees sealed, the one before made durable.
          if (sealed) {
            alloc.releaseFreed(sealed);
            for (const b of sealedBlocks) unusable.delete(b);
          }
          sealedBlocks = [...unusable];
          sealed = alloc.sealFreed();
          continue;
        }
        // A file of 1..12 blocks in a random group: first block aimed at the group's start,
        // the rest at the block after the previous one, in runs of up to 3.
        const g = Math.floor(next() * GROUPS);
        const blocks: number[] = [];
        let goal = g * PER_GROUP;
        const want = 1 + Math.floor(next() * 12);
        while (blocks.length < want) {
          const max = Math.min(3, want - blocks.length);
          const exp = expected(bitmaps, unusable, goal, max);
          if (exp === null || alloc.availableBlocks() <= 0) break;
          const got = await alloc.allocRun(goal, max);
          expect(got).toEqual(exp);
          for (let i = 0; i < got.count; i++) blocks.push(got.start + i);
          goal = got.start + got.count;
        }
        files.push(blocks);
      }
    });
  }
});
