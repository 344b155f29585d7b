import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { S_IFREG } from '../../src/engine.js';
import { makeTempDir, removeTempDir } from '../tools/helpers.js';
import { debugfs, expectFsckClean, mkfs, openImage } from './core-helpers.js';

let dir: string;
beforeAll(() => {
  dir = makeTempDir('ext3-core-bigdir');
});
afterAll(async () => {
  await removeTempDir(dir);
});

describe('large directories', () => {
  it('creates and looks up 100,000 entries, then removes a tenth, without quadratic cost', async () => {
    const img = join(dir, 'big.img');
    mkfs(img, { sizeK: 64 * 1024, blockSize: 1024, inodeSize: 128, inodes: 110_000 });
    const fs = await openImage(img, true);
    const d = await fs.mkdir(fs.rootId, Buffer.from('many'), { mode: 0o755, uid: 0, gid: 0 });
    const N = 100_000;
    const name = (i: number) => Buffer.from(`entry-${i.toString(36)}-${(i * 7919) % 1000}`);
    const ids: number[] = [];
    const t0 = Date.now();
    for (let i = 0; i < N; i++) ids.push(await fs.mknod(d, name(i), { mode: S_IFREG | 0o644, uid: 0, gid: 0 }));
    const t1 = Date.now();
    for (let i = 0; i < N; i += 1) expect(await fs.lookup(d, name(i))).toBe(ids[i]);
    expect(await fs.lookup(d, Buffer.from('absent'))).toBeNull();
    for (let i = 0; i < N; i += 10) await fs.unlink(d, name(i));
    // Freed slots are reused: new names go into the holes, not at the end.
    const sizeBefore = (await fs.getattr(d)).size;
    for (let i = 0; i < 1000; i++) await fs.mknod(d, Buffer.from(`again-${i}`), { mode: S_IFREG | 0o644, uid: 0, gid: 0 });
    expect((await fs.getattr(d)).size).toBe(sizeBefore);
    const t2 = Date.now();
    expect((await fs.readdir(d)).length).toBe(N - N / 10 + 1000);
    console.log(`100k creates: ${t1 - t0} ms; 100k lookups + 10k unlinks + 1k creates: ${t2 - t1} ms`);
    await fs.close();
    expectFsckClean(img);
    expect(debugfs(img, 'ls /many').includes('entry-1-')).toBe(true);
  });
});
