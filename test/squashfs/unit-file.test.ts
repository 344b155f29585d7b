/**
 * Random reads of stored-uncompressed blocks (file.ts): a read inside one
 * such block that is not cached fetches only its own bytes; the bytes are the
 * file's, for random and sequential readers alike.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ByteSource } from '../../src/io/byte-source.js';
import { MemoryRegion } from '../../src/io/memory-region.js';
import { openSquashfs } from '../../src/squashfs/index.js';
import { mksquashfs, pseudoRandom, removeDir, tempDir } from './unit-fixtures.js';

let work: string;
let image: Buffer;
const data = pseudoRandom(1 << 20, 99);

beforeAll(() => {
  work = tempDir('file');
  mkdirSync(join(work, 'src'));
  writeFileSync(join(work, 'src', 'big'), data);
  // -noD: data blocks stored uncompressed (random bytes would be anyway).
  image = readFileSync(mksquashfs(join(work, 'src'), join(work, 'u.sqfs'), ['-noD', '-no-fragments']));
});
afterAll(() => removeDir(work));

function counting(bytes: Buffer): ByteSource & { bytesRead: number } {
  const mem = new MemoryRegion(bytes, { writable: false });
  const src = {
    bytesRead: 0,
    name: 'u.sqfs',
    size: mem.size,
    read(position: number, length: number) {
      src.bytesRead += length;
      return mem.read(position, length);
    },
    close: () => mem.close(),
  };
  return src;
}

describe('uncompressed blocks', () => {
  it('a random 4 KiB read costs about 4 KiB of I/O and returns the file bytes', async () => {
    const src = counting(image);
    const fs = await openSquashfs(src);
    const id = (await fs.lookup(fs.rootId, Buffer.from('big')))!;
    const before = src.bytesRead;
    // Descending offsets: never sequential.
    const offsets = [900_000, 700_123, 500_000, 262_150, 132_000, 4_096];
    for (const off of offsets) expect((await fs.read(id, off, 4096)).equals(data.subarray(off, off + 4096))).toBe(true);
    expect(src.bytesRead - before).toBe(offsets.length * 4096);
    // A read spanning two blocks (131,000 + 200 crosses 131,072) and reads
    // of cached blocks still agree with the file.
    expect((await fs.read(id, 131_000, 200)).equals(data.subarray(131_000, 131_200))).toBe(true);
    await fs.close();
  });

  it('a sequential reader gets every byte', async () => {
    const fs = await openSquashfs(counting(image));
    const id = (await fs.lookup(fs.rootId, Buffer.from('big')))!;
    const parts: Buffer[] = [];
    for (let pos = 0; pos < data.length; pos += 65536) parts.push(await fs.read(id, pos, 65536));
    expect(Buffer.concat(parts).equals(data)).toBe(true);
    await fs.close();
  });
});
