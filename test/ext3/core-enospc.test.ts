import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { S_IFREG } from '../../src/engine.js';
import { FsError } from '../../src/errors.js';
import { makeTempDir, removeTempDir } from '../tools/helpers.js';
import { debugfsCat, expectFsckClean, mkfs, openImage } from './core-helpers.js';

let dir: string;
beforeAll(() => {
  dir = makeTempDir('ext3-core-enospc');
});
afterAll(async () => {
  await removeTempDir(dir);
});

const REG = { mode: S_IFREG | 0o644, uid: 0, gid: 0 };
const fill = (i: number, n: number) => Buffer.alloc(n, (i * 37 + 1) & 0xff);

describe('full filesystems', () => {
  it('fails writes with ENOSPC (short write first), corrupting nothing, and recovers space after unlink', async () => {
    const img = join(dir, 'full.img');
    mkfs(img, { sizeK: 3072, blockSize: 1024, inodeSize: 256 });
    const fs = await openImage(img, true);
    const r = fs.rootId;
    const sizes: number[] = [];
    let err: unknown = null;
    for (let i = 0; i < 100 && !err; i++) {
      const id = await fs.mknod(r, Buffer.from(`f${i}`), REG).catch((e: unknown) => {
        err = e;
        return 0;
      });
      if (!id) break;
      const want = 100 * 1024;
      const n = await fs.write(id, 0, fill(i, want)).catch((e: unknown) => {
        err = e;
        return 0;
      });
      sizes.push(n);
      if (n < want && !err) {
        // The next write at the end finds no space at all.
        err = await fs.write(id, n, Buffer.alloc(1024)).catch((e: unknown) => e);
      }
    }
    expect(err).toBeInstanceOf(FsError);
    expect((err as FsError).code).toBe('ENOSPC');
    // A write that could not place a single byte changes no size (found by the property tests).
    const last = (await fs.readdir(r)).filter((e) => e.type === 'f').at(-1)!;
    const sizeBefore = (await fs.getattr(last.id)).size;
    await expect(fs.write(last.id, sizeBefore + 50_000, Buffer.alloc(5000, 1))).rejects.toMatchObject({ code: 'ENOSPC' });
    expect((await fs.getattr(last.id)).size).toBe(sizeBefore);
    expect((await fs.statfs()).bfree).toBeLessThan(20);
    // Nothing half-made: mkdir and a big xattr fail cleanly.
    await expect(fs.mkdir(r, Buffer.from('nospace'), { mode: 0o755, uid: 0, gid: 0 })).rejects.toMatchObject({ code: 'ENOSPC' });
    expect(await fs.lookup(r, Buffer.from('nospace'))).toBeNull();
    const f0 = (await fs.lookup(r, Buffer.from('f0')))!;
    await expect(fs.setxattr(f0, Buffer.from('user.big'), Buffer.alloc(600, 1))).rejects.toMatchObject({ code: 'ENOSPC' });
    expect(await fs.getxattr(f0, Buffer.from('user.big'))).toBeNull();
    await fs.sync();
    expectFsckClean(img);
    // Freed blocks are usable again (the engine commits to reuse blocks freed in this transaction).
    await fs.unlink(r, Buffer.from('f1'));
    const again = await fs.mknod(r, Buffer.from('again'), REG);
    expect(await fs.write(again, 0, fill(99, 50 * 1024))).toBe(50 * 1024);
    await fs.close();
    expectFsckClean(img);
    expect(debugfsCat(img, '/f0').equals(fill(0, sizes[0]!))).toBe(true);
    expect(debugfsCat(img, '/again').equals(fill(99, 50 * 1024))).toBe(true);
  });

  it('fails creates with ENOSPC when inodes run out, corrupting nothing', async () => {
    const img = join(dir, 'inodes.img');
    mkfs(img, { sizeK: 4096, blockSize: 1024, inodeSize: 128, inodes: 32 });
    const fs = await openImage(img, true);
    const r = fs.rootId;
    let made = 0;
    let err: unknown = null;
    while (!err && made < 1000) {
      await fs.mknod(r, Buffer.from(`n${made}`), REG).then(
        () => made++,
        (e: unknown) => (err = e),
      );
    }
    expect((err as FsError).code).toBe('ENOSPC');
    expect((await fs.statfs()).ffree).toBe(0);
    await expect(fs.mkdir(r, Buffer.from('d'), { mode: 0o755, uid: 0, gid: 0 })).rejects.toMatchObject({ code: 'ENOSPC' });
    await expect(fs.symlink(r, Buffer.from('s'), Buffer.from('t'), { uid: 0, gid: 0 })).rejects.toMatchObject({ code: 'ENOSPC' });
    await fs.close();
    expectFsckClean(img);
    expect(made).toBeGreaterThan(10);
  });
});
