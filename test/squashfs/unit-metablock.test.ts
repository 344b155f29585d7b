/**
 * Metadata read windows (metablock.ts): a cold metadata block is read with
 * the blocks after it, and those are decoded from the held bytes without
 * another read. The walk sees exactly what a reader without windows sees
 * (every name, type and stat), with fewer reads than metadata blocks; with
 * the metadata area preloaded at open (MetadataReader.preload), with none.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ByteSource } from '../../src/io/byte-source.js';
import { MemoryRegion } from '../../src/io/memory-region.js';
import { openSquashfs } from '../../src/squashfs/index.js';
import type { SquashfsFs } from '../../src/squashfs/fs.js';
import { readFileSync } from 'node:fs';
import { mksquashfs, removeDir, tempDir } from './unit-fixtures.js';

let work: string;
let image: Buffer;

beforeAll(() => {
  work = tempDir('metablock');
  for (let d = 0; d < 40; d++) {
    const dir = join(work, 'src', `dir-${d}`);
    mkdirSync(dir, { recursive: true });
    for (let f = 0; f < 60; f++) writeFileSync(join(dir, `file-${f}-${'y'.repeat(f % 23)}`), `${d}/${f}\n`);
  }
  image = readFileSync(mksquashfs(join(work, 'src'), join(work, 'm.sqfs'), ['-all-root']));
});
afterAll(() => removeDir(work));

/** Reads only through read() (no readInto, no windows of its own), counting calls. */
function counting(bytes: Buffer): ByteSource & { reads: number } {
  const mem = new MemoryRegion(bytes, { writable: false });
  const src = {
    reads: 0,
    name: 'm.sqfs',
    size: mem.size,
    read(position: number, length: number) {
      src.reads++;
      return mem.read(position, length);
    },
    close: () => mem.close(),
  };
  return src;
}

async function walkAll(fs: SquashfsFs): Promise<string[]> {
  const out: string[] = [];
  const stack: [number, string][] = [[fs.rootId, '']];
  while (stack.length > 0) {
    const [id, path] = stack.pop()!;
    for (const e of await fs.readdir(id)) {
      const st = await fs.getattr(e.id);
      const p = `${path}/${e.name.toString('latin1')}`;
      out.push(`${p} ${e.type} ${st.mode} ${st.size} ${st.ino}`);
      if (e.type === 'd') stack.push([e.id, p]);
    }
  }
  return out.sort();
}

describe('metadata read windows', () => {
  it('serve the blocks after a cold one without another read, and the walk is unchanged', async () => {
    const src = counting(image);
    const fs = await openSquashfs(src, { preloadMetadataBytes: 0 });
    const seen = await walkAll(fs);
    expect(seen.length).toBe(40 + 40 * 60);
    // Metadata blocks decoded (each one read without windows) against the reads made.
    const blocks = fs.metaCache.misses;
    expect(blocks).toBeGreaterThan(6);
    expect(src.reads).toBeLessThan(blocks / 2);
    // The same walk on a fresh engine whose reads never reach past a block's
    // own bytes (windows cut to the block by a source that refuses longer reads).
    const strict = counting(image);
    const fs2 = await openSquashfs(
      { ...strict, read: (p: number, n: number) => strict.read(p, Math.min(n, 8194)) },
      { preloadMetadataBytes: 0 },
    );
    expect(await walkAll(fs2)).toEqual(seen);
    await fs.close();
    await fs2.close();
  });

  it('with the metadata area preloaded at open, the walk reads nothing more and is unchanged', async () => {
    const plain = await openSquashfs(counting(image), { preloadMetadataBytes: 0 });
    const seen = await walkAll(plain);
    await plain.close();
    const src = counting(image);
    const fs = await openSquashfs(src);
    const atOpen = src.reads;
    expect(await walkAll(fs)).toEqual(seen);
    expect(fs.metaCache.misses).toBeGreaterThan(6);
    expect(src.reads).toBe(atOpen);
    await fs.close();
    // An area over the limit is not read whole: the walk reads windows.
    const small = counting(image);
    const fs2 = await openSquashfs(small, { preloadMetadataBytes: 1024 });
    const opened = small.reads;
    expect(await walkAll(fs2)).toEqual(seen);
    expect(small.reads).toBeGreaterThan(opened);
    await fs2.close();
  });
});
