import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileRegion } from '../src/io/file-region.js';
import { MemoryRegion } from '../src/io/memory-region.js';
import { CorruptError } from '../src/errors.js';
import { ScratchPool } from '../src/io/scratch-pool.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sifuse-io-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('FileRegion', () => {
  it('reads and writes only inside its region', async () => {
    const path = join(dir, 'r.bin');
    writeFileSync(path, Buffer.alloc(100, 0xaa));
    const region = await FileRegion.open(path, { offset: 10, length: 20, writable: true });
    expect(region.size).toBe(20);
    await region.write(0, Buffer.from('hello'));
    expect((await region.read(0, 5)).toString()).toBe('hello');
    await expect(region.read(15, 6)).rejects.toBeInstanceOf(CorruptError);
    await expect(region.write(18, Buffer.alloc(3))).rejects.toBeInstanceOf(CorruptError);
    await expect(region.read(-1, 1)).rejects.toBeInstanceOf(CorruptError);
    await region.sync();
    await region.close();
    const bytes = readFileSync(path);
    expect(bytes.subarray(10, 15).toString()).toBe('hello');
    // Bytes outside the region are untouched.
    expect(bytes.subarray(0, 10).every((b) => b === 0xaa)).toBe(true);
    expect(bytes.subarray(30).every((b) => b === 0xaa)).toBe(true);
  });

  it('writev writes its parts back to back, inside the region only', async () => {
    const path = join(dir, 'v.bin');
    writeFileSync(path, Buffer.alloc(3000, 0xaa));
    const region = await FileRegion.open(path, { offset: 100, length: 2800, writable: true });
    // More parts than one pwritev takes (IOV_MAX 1024), of uneven sizes, one empty.
    const parts = Array.from({ length: 1300 }, (_, i) => Buffer.alloc(i % 3, i & 0xff));
    const joined = Buffer.concat(parts);
    await region.writev!(5, parts);
    expect((await region.read(5, joined.length)).equals(joined)).toBe(true);
    await expect(region.writev!(2790, [Buffer.alloc(6), Buffer.alloc(6)])).rejects.toBeInstanceOf(CorruptError);
    await region.close();
    const bytes = readFileSync(path);
    expect(bytes.subarray(105, 105 + joined.length).equals(joined)).toBe(true);
    expect(bytes.subarray(0, 105).every((b) => b === 0xaa)).toBe(true);
    expect(bytes.subarray(105 + joined.length).every((b) => b === 0xaa)).toBe(true);
  });

  it('refuses a region past the end of the file', async () => {
    const path = join(dir, 's.bin');
    writeFileSync(path, Buffer.alloc(10));
    await expect(FileRegion.open(path, { offset: 4, length: 7 })).rejects.toBeInstanceOf(CorruptError);
  });
});

describe('MemoryRegion', () => {
  it('bounds-checks like FileRegion', async () => {
    const region = new MemoryRegion(Buffer.alloc(8));
    await region.write(4, Buffer.from([1, 2, 3, 4]));
    expect([...(await region.read(4, 4))]).toEqual([1, 2, 3, 4]);
    await expect(region.read(5, 4)).rejects.toBeInstanceOf(CorruptError);
  });
});

describe('readInto', () => {
  it('fills a caller buffer with the region bytes, bounds-checked, on both regions', async () => {
    const path = join(dir, 'ri.bin');
    const bytes = Buffer.from(Array.from({ length: 64 }, (_, i) => i));
    writeFileSync(path, bytes);
    const file = await FileRegion.open(path, { offset: 8, length: 40 });
    const mem = new MemoryRegion(bytes.subarray(8, 48), { writable: false });
    for (const region of [file, mem]) {
      const into = Buffer.alloc(16, 0xee);
      await region.readInto(into, 4, 10);
      expect([...into.subarray(0, 10)]).toEqual([...bytes.subarray(12, 22)]);
      expect(into.subarray(10).every((b) => b === 0xee)).toBe(true);
      await expect(region.readInto(into, 35, 6)).rejects.toBeInstanceOf(CorruptError);
      await expect(region.readInto(Buffer.alloc(4), 0, 5)).rejects.toBeInstanceOf(RangeError);
    }
    await file.close();
  });
});

describe('ScratchPool', () => {
  it('hands a buffer to one taker at a time and keeps at most `keep` free', () => {
    const pool = new ScratchPool(32, 2);
    const a = pool.take();
    const b = pool.take();
    const c = pool.take();
    expect(new Set([a, b, c]).size).toBe(3);
    expect(a.length).toBe(32);
    pool.give(a);
    pool.give(b);
    pool.give(c); // beyond keep: dropped
    pool.give(Buffer.alloc(8)); // wrong size: never pooled
    const again = [pool.take(), pool.take(), pool.take()];
    expect(again).toContain(a);
    expect(again).toContain(b);
    expect(again).not.toContain(c);
  });
});
