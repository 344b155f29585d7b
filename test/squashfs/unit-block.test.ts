/**
 * The off-main-thread block path (src/native/block.c through FileRegion.readBlock,
 * used by file.ts): gzip and zstd blocks read and decompressed on libuv's pool,
 * complete stored blocks pread directly. It must return exactly what the inline
 * path (a MemoryRegion source: read() and the decompressor on this thread)
 * returns, turn corrupt or oversized blocks into a CorruptError for that read
 * only, and read and decompress a block once however many readers want it at
 * the same time.
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CorruptError } from '../../src/errors.js';
import type { BlockCodec } from '../../src/io/byte-source.js';
import { FileRegion } from '../../src/io/file-region.js';
import { MemoryRegion } from '../../src/io/memory-region.js';
import { openSquashfs, type SquashfsFs } from '../../src/squashfs/index.js';
import { mksquashfs, pseudoRandom, removeDir, tempDir, textData } from './unit-fixtures.js';

const zstdNapi = createRequire(import.meta.url)('zstd-napi') as { compress(d: Buffer): Buffer };
let work: string;
let image: string;
let zimage: string;
const files: Record<string, Buffer> = {
  text: textData(1_000_000), // compressed blocks, a fragment tail
  random: pseudoRandom(600_000, 5), // stored blocks (incompressible), a fragment tail
  mixed: Buffer.concat([textData(131072), pseudoRandom(131072 * 2, 9), textData(70_000)]),
  small: Buffer.from('a small file in a fragment\n'),
  exact: pseudoRandom(262_144, 11), // stored blocks, no tail
};

interface Call {
  position: number;
  length: number;
  codec: BlockCodec;
}

/** A FileRegion whose readBlock calls are recorded. */
async function recorded(path: string): Promise<{ region: FileRegion; calls: Call[] }> {
  const region = await FileRegion.open(path);
  expect(region.readBlock, 'the sifuse_block addon is built').toBeDefined();
  const calls: Call[] = [];
  const inner = region.readBlock!.bind(region);
  Object.defineProperty(region, 'readBlock', {
    value: (into: Buffer, position: number, length: number, codec: BlockCodec) => {
      calls.push({ position, length, codec });
      return inner(into, position, length, codec);
    },
  });
  return { region, calls };
}

async function idOf(fs: SquashfsFs, name: string): Promise<number> {
  return (await fs.lookup(fs.rootId, Buffer.from(name)))!;
}

beforeAll(() => {
  work = tempDir('block');
  mkdirSync(join(work, 'src'));
  for (const [name, data] of Object.entries(files)) writeFileSync(join(work, 'src', name), data);
  image = mksquashfs(join(work, 'src'), join(work, 'g.sqfs'), ['-comp', 'gzip']);
  zimage = mksquashfs(join(work, 'src'), join(work, 'z.sqfs'), ['-comp', 'zstd']);
});
afterAll(() => removeDir(work));

describe('blocks through sifuse_block', () => {
  for (const [comp, codec] of [
    ['gzip', 'zlib'],
    ['zstd', 'zstd'],
  ] as const)
    it(`${comp}: returns the same bytes as the inline path for every read of every file`, async () => {
      const img = comp === 'gzip' ? image : zimage;
      const { region, calls } = await recorded(img);
      const native = await openSquashfs(region);
      const inline = await openSquashfs(new MemoryRegion(readFileSync(img), { writable: false }));
      try {
        for (const [name, data] of Object.entries(files)) {
          const a = await idOf(native, name);
          const b = await idOf(inline, name);
          // Sequential 128 KiB reads (read-ahead), then odd ranges across block edges.
          for (let pos = 0; pos < data.length; pos += 131072) {
            const got = await native.read(a, pos, 131072);
            expect(got.equals(data.subarray(pos, pos + 131072)), `${name} @${pos}`).toBe(true);
            expect(got.equals(await inline.read(b, pos, 131072))).toBe(true);
          }
          for (const [pos, len] of [
            [0, 1],
            [131_000, 200],
            [100, 300_000],
            [data.length - 5, 100],
            [262_143, 2],
          ] as const) {
            const got = await native.read(a, pos, len);
            expect(got.equals(data.subarray(pos, pos + len)), `${name} ${pos}+${len}`).toBe(true);
            expect(got.equals(await inline.read(b, pos, len))).toBe(true);
          }
        }
        // Both kinds of job really ran, and no other codec.
        expect(calls.some((c) => c.codec === codec)).toBe(true);
        expect(calls.some((c) => c.codec === 'stored')).toBe(true);
        expect(calls.every((c) => c.codec === codec || c.codec === 'stored')).toBe(true);
      } finally {
        await native.close();
        await inline.close();
      }
    });

  it('a read inside stored blocks costs exactly its bytes, across a block edge too', async () => {
    const { region, calls } = await recorded(image);
    const fs = await openSquashfs(region);
    try {
      const id = await idOf(fs, 'exact');
      const got = await fs.read(id, 131_000, 4096);
      expect(got.equals(files.exact!.subarray(131_000, 135_096))).toBe(true);
      const data = calls.filter((c) => c.codec === 'stored');
      expect(data).toHaveLength(1);
      expect(data[0]!.length).toBe(4096);
    } finally {
      await fs.close();
    }
  });

  it('reads and inflates a block once for concurrent readers, and reads ahead once', async () => {
    const { region, calls } = await recorded(image);
    const fs = await openSquashfs(region);
    try {
      const id = await idOf(fs, 'text');
      const before = calls.length;
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) => fs.read(id, 300_000 + i * 7, 100)));
      for (let i = 0; i < 8; i++) expect(results[i]!.equals(files.text!.subarray(300_000 + i * 7, 300_100 + i * 7))).toBe(true);
      expect(calls.length - before).toBe(1);
      // Sequential reads: every block is fetched once, read-ahead included.
      for (let pos = 0; pos < files.text!.length; pos += 65536) await fs.read(id, pos, 65536);
      const inflated = calls.filter((c) => c.codec !== 'stored').map((c) => c.position);
      expect(new Set(inflated).size).toBe(inflated.length);
    } finally {
      await fs.close();
    }
  });

  it('a read across blocks loads each block once, cached ones from the cache', async () => {
    const { region, calls } = await recorded(image);
    const fs = await openSquashfs(region);
    try {
      const id = await idOf(fs, 'text');
      await fs.read(id, 131072 + 7, 10); // block 1 now cached
      const before = calls.length;
      const got = await fs.read(id, 0, 400_000); // blocks 0-2 whole, part of 3
      expect(got.equals(files.text!.subarray(0, 400_000))).toBe(true);
      const positions = calls.slice(before).map((c) => c.position);
      expect(positions).toHaveLength(3); // 0, 2, 3: not 1
      expect(new Set(positions).size).toBe(3);
      const whole = await fs.read(await idOf(fs, 'mixed'), 0, 1 << 20); // gzip, stored, stored, fragment tail
      expect(whole.equals(files.mixed!)).toBe(true);
    } finally {
      await fs.close();
    }
  });

  it('drops a data block its reader finished, keeps partly read blocks and fragments', async () => {
    const { region, calls } = await recorded(image);
    const fs = await openSquashfs(region);
    try {
      const id = await idOf(fs, 'text');
      const count = (): number => calls.filter((c) => c.codec !== 'stored').length;
      await fs.read(id, 131072, 1000); // part of block 1: kept
      let n = count();
      await fs.read(id, 131072 + 500, 1000);
      expect(count()).toBe(n);
      await fs.read(id, 131072, 131072); // all of block 1: dropped
      n = count();
      await fs.read(id, 131072, 10);
      expect(count()).toBe(n + 1);
      // A small file lives in a fragment block: read whole, it stays cached for the other files in it.
      const small = await idOf(fs, 'small');
      expect((await fs.read(small, 0, 4096)).equals(files.small!)).toBe(true);
      n = calls.length;
      expect((await fs.read(small, 0, 4096)).equals(files.small!)).toBe(true);
      expect(calls.length).toBe(n);
    } finally {
      await fs.close();
    }
  });

  it('a corrupt block is a CorruptError for its reads only', async () => {
    const { region, calls } = await recorded(image);
    const probe = await openSquashfs(region);
    const id = await idOf(probe, 'text');
    await probe.read(id, 0, 100);
    const block = calls.find((c) => c.codec !== 'stored')!;
    await probe.close();

    const bad = join(work, 'bad.sqfs');
    copyFileSync(image, bad);
    const bytes = readFileSync(bad);
    bytes.fill(0x5a, block.position + 2, block.position + 40); // past the zlib header: bad data
    writeFileSync(bad, bytes);
    const fs = await openSquashfs(await FileRegion.open(bad));
    try {
      const err = await fs.read(id, 0, 100).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(CorruptError);
      expect((err as CorruptError).message).toMatch(/gzip block does not decompress/);
      expect((err as CorruptError).file).toBe(bad);
      // Again (a failed load is not cached), and the rest of the image still reads.
      await expect(fs.read(id, 10, 10)).rejects.toBeInstanceOf(CorruptError);
      expect((await fs.read(await idOf(fs, 'random'), 0, 600_000)).equals(files.random!)).toBe(true);
    } finally {
      await fs.close();
    }
  });

  it('a block that inflates past the block size is a CorruptError, not a bigger buffer', async () => {
    const { region, calls } = await recorded(image);
    const probe = await openSquashfs(region);
    const id = await idOf(probe, 'text');
    await probe.read(id, 0, 100);
    const block = calls.find((c) => c.codec !== 'stored')!;
    await probe.close();

    const bomb = deflateSync(Buffer.alloc(4 << 20), { level: 9 }); // 4 MiB of zeros in ~4 KiB
    expect(bomb.length).toBeLessThan(block.length);
    const bad = join(work, 'bomb.sqfs');
    const bytes = readFileSync(image);
    bomb.copy(bytes, block.position);
    writeFileSync(bad, bytes);
    const fs = await openSquashfs(await FileRegion.open(bad));
    try {
      await expect(fs.read(id, 0, 100)).rejects.toThrow(/expands to more than the 131072-byte limit/);
      await expect(fs.read(id, 0, 100)).rejects.toBeInstanceOf(CorruptError);
    } finally {
      await fs.close();
    }
  });
});

describe('FileRegion.readBlock', () => {
  it('reads stored bytes at the region offset, bounds-checked, and inflates zlib streams', async () => {
    const path = join(work, 'region.bin');
    const payload = pseudoRandom(300_000, 3);
    const z = deflateSync(textData(100_000));
    writeFileSync(path, Buffer.concat([Buffer.alloc(1000, 0xee), payload, z]));
    const region = await FileRegion.open(path, { offset: 1000 });
    try {
      const out = Buffer.alloc(200_000);
      expect(await region.readBlock!(out, 50_000, 200_000, 'stored')).toBe(200_000);
      expect(out.equals(payload.subarray(50_000, 250_000))).toBe(true);
      const inflated = Buffer.alloc(131072);
      expect(await region.readBlock!(inflated, 300_000, z.length, 'zlib')).toBe(100_000);
      expect(inflated.subarray(0, 100_000).equals(textData(100_000))).toBe(true);
      await expect(region.readBlock!(out, region.size - 10, 11, 'stored')).rejects.toBeInstanceOf(CorruptError);
      await expect(region.readBlock!(Buffer.alloc(1000), 300_000, z.length, 'zlib')).rejects.toMatchObject({ code: 'ETOOBIG' });
      await expect(region.readBlock!(inflated, 0, 5000, 'zlib')).rejects.toMatchObject({ code: 'EZDATA' });
      await expect(region.readBlock!(inflated, 300_000, z.length - 20, 'zlib')).rejects.toMatchObject({ code: 'EZDATA' });
    } finally {
      await region.close();
    }
  });

  it('decompresses zstd frames into the buffer, refusing one that expands past it and garbage', async () => {
    const path = join(work, 'zregion.bin');
    const plain = textData(100_000);
    const z = zstdNapi.compress(plain);
    const two = Buffer.concat([zstdNapi.compress(plain.subarray(0, 40_000)), zstdNapi.compress(plain.subarray(40_000))]);
    writeFileSync(path, Buffer.concat([Buffer.alloc(500, 0xee), z, two]));
    const region = await FileRegion.open(path, { offset: 500 });
    try {
      const out = Buffer.alloc(131072);
      expect(await region.readBlock!(out, 0, z.length, 'zstd')).toBe(100_000);
      expect(out.subarray(0, 100_000).equals(plain)).toBe(true);
      // Frames back to back decompress as one block, as libzstd's ZSTD_decompressDCtx does.
      out.fill(0);
      expect(await region.readBlock!(out, z.length, two.length, 'zstd')).toBe(100_000);
      expect(out.subarray(0, 100_000).equals(plain)).toBe(true);
      await expect(region.readBlock!(Buffer.alloc(1000), 0, z.length, 'zstd')).rejects.toMatchObject({ code: 'ETOOBIG' });
      await expect(region.readBlock!(out, 0, z.length - 10, 'zstd')).rejects.toMatchObject({ code: 'EZDATA' });
      // Bytes after the last frame: not a frame.
      await expect(region.readBlock!(out, 0, z.length + 20, 'zstd')).rejects.toMatchObject({ code: 'EZDATA' });
      const garbage = Buffer.from(z);
      garbage[garbage.length >> 1]! ^= 0xff;
      writeFileSync(path, Buffer.concat([Buffer.alloc(500, 0xee), garbage]));
      await expect(region.readBlock!(out, 0, garbage.length, 'zstd')).rejects.toMatchObject({ code: 'EZDATA' });
      // A zlib stream is not zstd, nor the other way round.
      const zl = deflateSync(plain);
      writeFileSync(path, Buffer.concat([Buffer.alloc(500, 0xee), zl, z]));
      await expect(region.readBlock!(out, 0, zl.length, 'zstd')).rejects.toMatchObject({ code: 'EZDATA' });
      await expect(region.readBlock!(out, zl.length, z.length, 'zlib')).rejects.toMatchObject({ code: 'EZDATA' });
    } finally {
      await region.close();
    }
  });

  it('inflates an input larger than the kept per-thread buffer (1 MiB)', async () => {
    const path = join(work, 'large.bin');
    const data = pseudoRandom(3 << 20, 8);
    const z = deflateSync(data, { level: 1 });
    expect(z.length).toBeGreaterThan(1 << 20);
    writeFileSync(path, z);
    const region = await FileRegion.open(path);
    try {
      const out = Buffer.alloc(data.length);
      expect(await region.readBlock!(out, 0, z.length, 'zlib')).toBe(data.length);
      expect(out.equals(data)).toBe(true);
      // And the kept buffer still serves small blocks afterwards.
      const small = deflateSync(textData(5000));
      writeFileSync(path, small);
      expect(await region.readBlock!(out, 0, small.length, 'zlib')).toBe(5000);
      expect(out.subarray(0, 5000).equals(textData(5000))).toBe(true);
    } finally {
      await region.close();
    }
  });

  it('close waits for jobs in flight', async () => {
    const path = join(work, 'region2.bin');
    writeFileSync(path, pseudoRandom(1 << 20, 4));
    const region = await FileRegion.open(path);
    const out = Buffer.alloc(1 << 20);
    const pending = region.readBlock!(out, 0, 1 << 20, 'zlib').catch((e: unknown) => e); // garbage: EZDATA
    await region.close();
    expect(await pending).toMatchObject({ code: 'EZDATA' });
  });
});

describe('review: edges of the off-thread path', () => {
  it('an engine read of more than 16 MiB of stored blocks returns the bytes (the addon caps one job)', async () => {
    const dir = join(work, 'big');
    mkdirSync(join(dir, 'src'), { recursive: true });
    const data = pseudoRandom(17 << 20, 21);
    writeFileSync(join(dir, 'src', 'big'), data);
    const img = mksquashfs(join(dir, 'src'), join(dir, 'big.sqfs'), ['-comp', 'gzip', '-noD', '-noF']);
    const fs = await openSquashfs(await FileRegion.open(img));
    try {
      const id = await idOf(fs, 'big');
      const got = await fs.read(id, 0, data.length);
      expect(got.length).toBe(data.length);
      expect(got.equals(data)).toBe(true);
    } finally {
      await fs.close();
    }
  });
});
