/**
 * Large directories: lookups go through the directory index (binary search,
 * then one bounded scan) without decoding the whole listing, and agree with
 * readdir for every name, present or absent, including names that sort
 * between, before and after all entries and names with bytes >= 0x80.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DirInode } from '../../src/squashfs/inode.js';
import { FileRegion } from '../../src/io/file-region.js';
import { openSquashfs } from '../../src/squashfs/index.js';
import { mksquashfs, openBytes, openFile, removeDir, tempDir } from './unit-fixtures.js';
import { readFileSync } from 'node:fs';

const COUNT = 8_000;
let work: string;
let image: string;
const names: Buffer[] = [];

beforeAll(() => {
  work = tempDir('dir');
  const big = join(work, 'src/big');
  mkdirSync(big, { recursive: true });
  for (let i = 0; i < COUNT; i++) {
    // Varied lengths and a few high bytes, so runs and index spans differ in size.
    const name = Buffer.concat([
      Buffer.from(`n${(i * 7919) % COUNT}-${'x'.repeat(i % 37)}`),
      i % 50 === 0 ? Buffer.from([0xc3, 0xa9, 0xff]) : Buffer.alloc(0),
    ]);
    names.push(name);
    writeFileSync(Buffer.concat([Buffer.from(big + '/'), name]), '');
  }
  writeFileSync(join(work, 'src/other'), 'x');
  image = mksquashfs(join(work, 'src'), join(work, 'big.sqfs'), ['-b', '4K']);
});
afterAll(() => removeDir(work));

describe('large directories', () => {
  it('switches from index lookups to a cached listing after many lookups', async () => {
    const fs = await openSquashfs(await FileRegion.open(image), { listingAfterLookups: 50 });
    try {
      const big = (await fs.lookup(fs.rootId, Buffer.from('big')))!;
      const before = fs.listingCacheEntries; // the root's listing
      for (const name of names.slice(0, 49)) expect(await fs.lookup(big, name)).not.toBeNull();
      expect(fs.listingCacheEntries).toBe(before);
      for (const name of names.slice(49, 300)) expect(await fs.lookup(big, name)).not.toBeNull();
      expect(fs.listingCacheEntries).toBe(before + 1);
    } finally {
      await fs.close();
    }
  });

  it('finds every name through the index, before any listing is cached', async () => {
    const fs = await openSquashfs(await FileRegion.open(image), { listingAfterLookups: Infinity });
    try {
      const big = (await fs.lookup(fs.rootId, Buffer.from('big')))!;
      const before = fs.listingCacheEntries; // the root's listing
      const inode = (await fs.inode(big)) as DirInode;
      expect(inode.index.length).toBeGreaterThan(15);
      const seen = new Set<number>();
      for (const name of names) {
        const id = await fs.lookup(big, name);
        expect(id, name.toString('latin1')).not.toBeNull();
        seen.add(id!);
      }
      expect(seen.size).toBe(COUNT);
      for (const missing of ['', 'a', 'n', 'n0', 'n1-', 'n5000-xx', 'n9999-', 'zzz', 'n1-' + 'x'.repeat(60)]) {
        if (missing === '') continue;
        const isThere = names.some((n) => n.equals(Buffer.from(missing)));
        expect((await fs.lookup(big, Buffer.from(missing))) !== null, missing).toBe(isThere);
      }
      expect(await fs.lookup(big, Buffer.from([0xff, 0xff]))).toBeNull();
      expect(await fs.lookup(big, Buffer.from([0x00]))).toBeNull();
      expect(fs.listingCacheEntries).toBe(before);
    } finally {
      await fs.close();
    }
  });

  it('the first readdir of a large directory lets the event loop run while it decodes', async () => {
    // No listing fits the listing cache, so every readdir decodes again.
    const fs = await openSquashfs(await FileRegion.open(image), { listingCacheBytes: 1 });
    try {
      const big = (await fs.lookup(fs.rootId, Buffer.from('big')))!;
      // Warm the metadata blocks, so no I/O wait yields for the decoder.
      expect((await fs.readdir(big)).length).toBe(COUNT);
      let turns = 0;
      let listed = false;
      const spin = (): void => {
        if (listed) return;
        turns++;
        setImmediate(spin);
      };
      setImmediate(spin);
      const entries = await fs.readdir(big);
      listed = true;
      expect(entries.length).toBe(COUNT);
      // 8,000 entries decode in at least 25 slices of at most 256 entries (and a run).
      expect(turns).toBeGreaterThanOrEqual(25);
    } finally {
      await fs.close();
    }
  });

  it('lists every entry in name order, and cached lookups agree with the index', async () => {
    const fs = await openFile(image);
    try {
      const big = (await fs.lookup(fs.rootId, Buffer.from('big')))!;
      const before = fs.listingCacheEntries;
      const viaIndex = await Promise.all(names.slice(0, 500).map((n) => fs.lookup(big, n)));
      const entries = await fs.readdir(big);
      expect(entries.length).toBe(COUNT);
      const sorted = names.slice().sort(Buffer.compare);
      expect(entries.every((e, i) => e.name.equals(sorted[i]!))).toBe(true);
      const viaListing = await Promise.all(names.slice(0, 500).map((n) => fs.lookup(big, n)));
      expect(viaListing).toEqual(viaIndex);
      expect(fs.listingCacheEntries).toBe(before + 1);
      for (const e of entries.slice(0, 200)) expect(e.type).toBe('f');
    } finally {
      await fs.close();
    }
  });
});

describe('small directories', () => {
  it('lookups by binary search agree with readdir, and a listing out of order is still searched whole', async () => {
    const src = join(work, 'small');
    mkdirSync(src);
    const small = ['alpha-xx', 'delta', 'e', 'omega-xx', 'zz\xff'];
    for (const n of small) writeFileSync(join(src, n), '');
    // Uncompressed tables, so the names can be swapped in place below.
    const bytes = readFileSync(mksquashfs(src, join(work, 'small.sqfs'), ['-noI', '-noD', '-noF', '-noX', '-all-root']));
    const check = async (image: Buffer): Promise<string[]> => {
      const fs = await openBytes(image);
      try {
        const entries = await fs.readdir(fs.rootId);
        for (const e of entries) expect(await fs.lookup(fs.rootId, e.name), e.name.toString('latin1')).toBe(e.id);
        for (const absent of ['', 'a', 'alpha-x', 'alpha-xxx', 'f', 'zz', '\xff'])
          expect(await fs.lookup(fs.rootId, Buffer.from(absent, 'latin1'))).toBeNull();
        return entries.map((e) => e.name.toString('latin1'));
      } finally {
        await fs.close();
      }
    };
    expect(await check(bytes)).toEqual(small.map((n) => Buffer.from(n).toString('latin1')));
    // Swap two names of one length: the listing is now out of strcmp order.
    const a = bytes.indexOf('alpha-xx');
    const o = bytes.indexOf('omega-xx');
    expect(a).toBeGreaterThan(0);
    expect(bytes.indexOf('alpha-xx', a + 1)).toBe(-1);
    const swapped = Buffer.from(bytes);
    swapped.write('omega-xx', a, 'latin1');
    swapped.write('alpha-xx', o, 'latin1');
    expect(await check(swapped)).toEqual(['omega-xx', 'delta', 'e', 'alpha-xx', Buffer.from('zz\xff').toString('latin1')]);
  });
});
