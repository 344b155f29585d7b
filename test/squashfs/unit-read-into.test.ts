/**
 * SquashfsFs.readInto (file.ts readInto): the bytes read() gives, placed in
 * the caller's buffer, for every kind of piece (gzip blocks, stored blocks,
 * sparse blocks, the fragment tail), through the sifuse_block path (a file)
 * and the JS path (bytes in memory); nothing past the count is written, and
 * a corrupt block rejects as read() does. hostExtent names stored bytes'
 * place in the image file only.
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CorruptError } from '../../src/errors.js';
import type { SquashfsFs } from '../../src/squashfs/fs.js';
import { mksquashfs, openBytes, openFile, pseudoRandom, removeDir, tempDir, textData } from './unit-fixtures.js';

const BS = 128 * 1024;
let work: string;
let imagePath: string;
/** text, then random (stored), then zeros (sparse), then text again, ending in a fragment tail. */
const mixed = Buffer.concat([textData(3 * BS), pseudoRandom(2 * BS, 7), Buffer.alloc(2 * BS), textData(BS + 5_000)]);

beforeAll(() => {
  work = tempDir('read-into');
  mkdirSync(join(work, 'src'));
  writeFileSync(join(work, 'src', 'mixed'), mixed);
  imagePath = mksquashfs(join(work, 'src'), join(work, 'm.sqfs'));
});
afterAll(() => removeDir(work));

async function idOf(fs: SquashfsFs, name: string): Promise<number> {
  return (await fs.lookup(fs.rootId, Buffer.from(name)))!;
}

/** Ranges crossing every kind of boundary: [position, length]. */
const ranges: [number, number][] = [
  [0, 1 << 20], // 8 blocks: gzip, stored, sparse
  [100, 4096], // inside one gzip block
  [3 * BS - 10, 20], // gzip into stored
  [3 * BS + 5, 2 * BS], // stored into sparse, not block-aligned
  [5 * BS, 2 * BS], // all sparse
  [6 * BS, 2 * BS + 100], // sparse into text
  [8 * BS, BS + 5_000], // last full block and the fragment tail
  [9 * BS + 1_000, 1 << 20], // inside the tail, short at end of file
  [mixed.length - 1, 10], // the last byte
];

for (const [how, open] of [
  ['a file (sifuse_block jobs)', () => openFile(imagePath)],
  ['bytes in memory (the JS path)', () => openBytes(readFileSync(imagePath))],
] as const) {
  describe(`readInto from ${how}`, () => {
    it('places read()’s bytes in the caller’s buffer and writes nothing past the count', async () => {
      const fs = await open();
      try {
        const id = await idOf(fs, 'mixed');
        for (const [pos, len] of ranges) {
          const into = Buffer.alloc(len + 64, 0xa5);
          const n = await fs.readInto(id, pos, into.subarray(0, len));
          const want = mixed.subarray(pos, Math.min(mixed.length, pos + len));
          expect(n, `count at ${pos}+${len}`).toBe(want.length);
          expect(into.subarray(0, n).equals(want), `bytes at ${pos}+${len}`).toBe(true);
          expect(
            into.subarray(n).every((b) => b === 0xa5),
            `untouched past ${pos}+${n}`,
          ).toBe(true);
          // read() of the same range agrees (and a cached block serves readInto again).
          expect((await fs.read(id, pos, len)).equals(want)).toBe(true);
          const again = Buffer.alloc(len, 0x5a);
          expect(await fs.readInto(id, pos, again)).toBe(n);
          expect(again.subarray(0, n).equals(want)).toBe(true);
        }
        expect(await fs.readInto(id, mixed.length, Buffer.alloc(10))).toBe(0);
        expect(await fs.readInto(id, mixed.length + 99, Buffer.alloc(10))).toBe(0);
      } finally {
        await fs.close();
      }
    });

    it('a sequential reader reusing one buffer gets every byte', async () => {
      const fs = await open();
      try {
        const id = await idOf(fs, 'mixed');
        const buf = Buffer.alloc(200_000);
        const parts: Buffer[] = [];
        for (let pos = 0; ;) {
          const n = await fs.readInto(id, pos, buf);
          if (n === 0) break;
          parts.push(Buffer.from(buf.subarray(0, n)));
          pos += n;
        }
        expect(Buffer.concat(parts).equals(mixed)).toBe(true);
      } finally {
        await fs.close();
      }
    });

    it('refuses directories and bad positions as read() does', async () => {
      const fs = await open();
      try {
        await expect(fs.readInto(fs.rootId, 0, Buffer.alloc(10))).rejects.toMatchObject({ code: 'EISDIR' });
        await expect(fs.readInto(await idOf(fs, 'mixed'), -1, Buffer.alloc(10))).rejects.toMatchObject({ code: 'EINVAL' });
      } finally {
        await fs.close();
      }
    });
  });
}

describe('hostExtent', () => {
  it('names where stored bytes lie in the image file, and nothing else', async () => {
    const fs = await openFile(imagePath);
    const image = readFileSync(imagePath);
    try {
      const id = await idOf(fs, 'mixed');
      // Inside the two stored blocks, one piece: the extent holds exactly the file's bytes.
      for (const [pos, len] of [
        [3 * BS, 2 * BS],
        [3 * BS + 77, 4096],
        [4 * BS - 5, 10],
      ] as const) {
        const x = (await fs.hostExtent(id, pos, len))!;
        expect(x, `${pos}+${len}`).not.toBeNull();
        expect(x.length).toBe(len);
        expect(image.subarray(x.position, x.position + x.length).equals(mixed.subarray(pos, pos + len))).toBe(true);
      }
      // Compressed, sparse, crossing out of the stored blocks, the fragment tail, past the end.
      for (const [pos, len] of [
        [0, 4096],
        [3 * BS - 1, 2],
        [5 * BS - 1, 2],
        [5 * BS, 4096],
        [9 * BS + 10, 100],
        [mixed.length, 10],
      ] as const) {
        expect(await fs.hostExtent(id, pos, len), `${pos}+${len}`).toBeNull();
      }
      expect(await fs.hostExtent(fs.rootId, 0, 10)).toBeNull();
    } finally {
      await fs.close();
    }
    const mem = await openBytes(readFileSync(imagePath));
    try {
      expect(await mem.hostExtent(await idOf(mem, 'mixed'), 3 * BS, 100)).toBeNull();
    } finally {
      await mem.close();
    }
  });
});

describe('readInto of a corrupt block', () => {
  it('rejects with a CorruptError naming the image, and the rest still reads', async () => {
    const bad = join(work, 'bad.sqfs');
    copyFileSync(imagePath, bad);
    const bytes = readFileSync(bad);
    // The first data block is the first text block, right after the 96-byte superblock.
    bytes.fill(0x5a, 96 + 2, 96 + 40);
    writeFileSync(bad, bytes);
    const fs = await openFile(bad);
    try {
      const id = await idOf(fs, 'mixed');
      const err = await fs.readInto(id, 0, Buffer.alloc(1 << 20)).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(CorruptError);
      expect((err as CorruptError).file).toBe(bad);
      const into = Buffer.alloc(2 * BS);
      expect(await fs.readInto(id, 3 * BS, into)).toBe(2 * BS);
      expect(into.equals(mixed.subarray(3 * BS, 5 * BS))).toBe(true);
    } finally {
      await fs.close();
    }
  });
});
