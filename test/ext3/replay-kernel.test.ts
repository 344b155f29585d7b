/**
 * Journal replay of images the kernel left needing recovery (root only).
 *
 * The kernel writes on a loop mount (random operation sequences through the
 * harness's helper, a sync in the middle), then the mount is shut down with
 * `xfs_io -x -c shutdown` before unmounting, so the image keeps
 * needs_recovery and a non-empty journal (checked with dumpe2fs). Then, on
 * copies of that image:
 * - the kernel's own recovery (mounting a copy) is the reference;
 * - the engine opening a copy writable shows exactly the reference tree,
 *   mtimes included, and after its clean close `e2fsck -fn` is clean, the
 *   journal is empty (Journal start 0) and needs_recovery is gone;
 * - the engine opening a copy read-only shows the same tree and leaves every
 *   byte of the image as it was;
 * - with `shutdown -f` (log flushed) every operation was committed, so the
 *   engine's tree must also equal the model of all operations.
 *
 * And the other way round: a copy of an image taken while the engine has it
 * open (a crash snapshot: committed metadata, an open-unlinked file on the
 * orphan list, later uncommitted changes) opens in the engine with its
 * committed content, the orphan freed and e2fsck clean after close, and, as
 * root, shows the same tree as the kernel's own recovery of another copy.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { copyFileSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { isRoot, makeTempDir, removeTempDir, skipNote, treeManifest } from '../tools/helpers.js';
import { openImageFile } from '../tools/ext3-engine.js';
import { ModelFs } from '../conformance/model.js';
import { OpGenerator, listTree } from '../conformance/ops.js';
import { VfsDriver } from '../conformance/vfs.js';
import { diffLines, walkManifest } from '../conformance/manifest.js';
import { FsTarget, KernelTarget, compareWithModel, runSequence } from '../conformance/harness.js';
import { fsck, loopMount, mkfsExt3, unmount, type MkfsOptions } from './image-tools.js';
import { itIf, describeIf } from '../tools/skip.js';

if (!isRoot) skipNote('ext3 journal replay of kernel images', 'needs root (loop mounts, xfs_io shutdown)');

let dir: string;
beforeAll(() => {
  dir = makeTempDir('e3-replay');
});
afterAll(() => removeTempDir(dir));

const split = (b: Buffer) =>
  b
    .toString('latin1')
    .split('\n')
    .filter((l) => l.length > 0);
const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

async function superblockInfo(image: string): Promise<{ needsRecovery: boolean; journalStart: number }> {
  const r = await execa('dumpe2fs', ['-h', image], { reject: false });
  const features = /Filesystem features:\s*(.*)/.exec(r.stdout)?.[1] ?? '';
  const start = /Journal start:\s*(\d+)/.exec(r.stdout)?.[1];
  if (start === undefined) throw new Error(`dumpe2fs -h ${image} shows no journal start:\n${r.stdout}\n${r.stderr}`);
  return { needsRecovery: features.split(/\s+/).includes('needs_recovery'), journalStart: Number(start) };
}

/** The kernel's tree of an image (a read-write mount: the kernel refuses read-only mounts that need recovery). */
async function kernelView(image: string, label: string): Promise<string[]> {
  const mnt = join(dir, `view-${label}`);
  await loopMount(image, mnt);
  try {
    return split(await treeManifest(mnt, { exclude: ['/lost+found'] }));
  } finally {
    await unmount(mnt);
  }
}

const mkfsInit = (m: ModelFs) => {
  m.addDir(m.rootId, 'lost+found', 0o700);
};

interface Crashed {
  image: string;
  model: ModelFs;
  seed: number;
}

/** Kernel writes, sync, more writes, then shutdown (with or without log flush) and unmount. */
async function crashKernel(g: MkfsOptions, seed: number, flush: boolean): Promise<Crashed> {
  const image = join(dir, `crashed-${seed}.img`);
  await mkfsExt3(image, g);
  const mnt = join(dir, `mnt-${seed}`);
  await loopMount(image, mnt);
  const kernel = new KernelTarget(mnt);
  let model: ModelFs;
  try {
    const first = await runSequence(kernel, { seed, ops: 80, blockSize: g.blockSize, init: mkfsInit, exclude: ['/lost+found'] });
    model = first.model;
    await execa('sync', ['-f', mnt]);
    // More operations after the sync, continuing the same model.
    const gen = new OpGenerator(seed + 1, { blockSize: g.blockSize, exclude: ['/lost+found'] });
    const driver = new VfsDriver(model);
    for (let i = 0; i < 60; i++) {
      const op = gen.next(await listTree(model, new Set(['/lost+found'])));
      const [got] = (await kernel.apply([op])).outcomes;
      const want = await driver.apply(op);
      expect(got, JSON.stringify(op)).toBe(want);
    }
  } catch (e) {
    await kernel.close();
    await unmount(mnt).catch(() => undefined);
    throw e;
  }
  await kernel.close();
  await execa('xfs_io', ['-x', '-c', flush ? 'shutdown -f' : 'shutdown', mnt]);
  await unmount(mnt);
  return { image, model, seed };
}

const CASES: { g: MkfsOptions; flush: boolean }[] = [
  { g: { blockSize: 1024, inodeSize: 256, sizeKiB: 32 * 1024 }, flush: true },
  { g: { blockSize: 4096, inodeSize: 128, sizeKiB: 64 * 1024 }, flush: true },
  { g: { blockSize: 1024, inodeSize: 128, sizeKiB: 32 * 1024 }, flush: false },
  { g: { blockSize: 2048, inodeSize: 256, sizeKiB: 32 * 1024 }, flush: false },
];

describeIf(isRoot, 'loop mounts and xfs_io shutdown need root')(
  'journal replay of images the kernel left needing recovery',
  () => {
    for (const [i, c] of CASES.entries()) {
      const what = `${c.g.blockSize}-byte blocks, ${c.g.inodeSize}-byte inodes, shutdown ${c.flush ? '-f (log flushed)' : 'without log flush'}`;
      it(what, async () => {
        const crashed = await crashKernel(c.g, 5_000 + i, c.flush);
        const before = await superblockInfo(crashed.image);
        expect(before.needsRecovery).toBe(true);
        expect(before.journalStart).toBeGreaterThan(0);

        // Reference: the kernel's own recovery on a copy.
        const ref = join(dir, `ref-${i}.img`);
        copyFileSync(crashed.image, ref);
        const reference = await kernelView(ref, `ref-${i}`);

        // Read-only engine: same tree, image untouched.
        const ro = join(dir, `ro-${i}.img`);
        copyFileSync(crashed.image, ro);
        const roSha = sha(ro);
        const roFs = await openImageFile(ro, false);
        try {
          const lines = (await walkManifest(roFs, { exclude: ['/lost+found'] })).map((e) => e.line);
          expect(diffLines(reference, lines), 'read-only engine vs kernel recovery').toBe('');
        } finally {
          await roFs.close();
        }
        expect(sha(ro)).toBe(roSha);

        // Writable engine: replays in place, same tree, clean and empty journal after close.
        const rw = join(dir, `rw-${i}.img`);
        copyFileSync(crashed.image, rw);
        const fs = await openImageFile(rw, true);
        try {
          const lines = (await walkManifest(fs, { exclude: ['/lost+found'] })).map((e) => e.line);
          expect(diffLines(reference, lines), 'writable engine vs kernel recovery').toBe('');
          if (c.flush) {
            await compareWithModel(
              new FsTarget(fs, ['/lost+found']),
              { ops: [], outcomes: [], model: crashed.model, enospc: 0 },
              { seed: crashed.seed, exclude: ['/lost+found'] },
              'after replay (every op was committed)',
            );
          }
        } finally {
          await fs.close();
        }
        const check = await fsck(rw);
        expect(check.clean, check.output).toBe(true);
        const after = await superblockInfo(rw);
        expect(after).toEqual({ needsRecovery: false, journalStart: 0 });

        // The kernel agrees with what the engine left.
        const kernelAfter = await kernelView(rw, `after-${i}`);
        expect(diffLines(reference, kernelAfter), 'kernel view of the engine-recovered image').toBe('');
      });
    }
  },
);

describe('journal replay of a crash snapshot of an image the engine had open', () => {
  let snapshot: string;
  beforeAll(async () => {
    const image = join(dir, 'live.img');
    await mkfsExt3(image, { blockSize: 1024, inodeSize: 256, sizeKiB: 16 * 1024 });
    const fs = await openImageFile(image, true);
    const file = async (name: string, text: string) => {
      const id = await fs.mknod(fs.rootId, Buffer.from(name), { mode: 0o100644, uid: 0, gid: 0 });
      await fs.write(id, 0, Buffer.from(text));
      return id;
    };
    await file('keep', 'committed before the crash\n');
    const gone = await file('gone', 'x'.repeat(300_000));
    await fs.ref(gone);
    await fs.unlink(fs.rootId, Buffer.from('gone'));
    await fs.sync();
    await file('late', 'written after the last commit\n');
    snapshot = join(dir, 'snapshot.img');
    copyFileSync(image, snapshot);
    await fs.unref(gone);
    await fs.close();
    const clean = await fsck(image);
    if (!clean.clean) throw new Error(`the live image itself is not clean after close:\n${clean.output}`);
  });

  it('opens with the committed content, frees the orphan, and is clean after close', async () => {
    expect((await superblockInfo(snapshot)).needsRecovery).toBe(true);
    const copy = join(dir, 'snapshot-engine.img');
    copyFileSync(snapshot, copy);
    const fs = await openImageFile(copy, true);
    try {
      const keep = await fs.lookup(fs.rootId, Buffer.from('keep'));
      expect(keep).not.toBeNull();
      expect((await fs.read(keep!, 0, 100)).toString()).toBe('committed before the crash\n');
      expect(await fs.lookup(fs.rootId, Buffer.from('gone'))).toBeNull();
    } finally {
      await fs.close();
    }
    const check = await fsck(copy);
    expect(check.clean, check.output).toBe(true);
    expect(await superblockInfo(copy), (await execa('dumpe2fs', ['-h', copy], { reject: false })).stdout).toEqual({
      needsRecovery: false,
      journalStart: 0,
    });
  });

  itIf(isRoot, 'loop mounts need root')('shows the tree the kernel recovers from the same snapshot (root)', async () => {
    const forKernel = join(dir, 'snapshot-kernel.img');
    copyFileSync(snapshot, forKernel);
    const reference = await kernelView(forKernel, 'snapshot');
    const copy = join(dir, 'snapshot-engine-2.img');
    copyFileSync(snapshot, copy);
    const fs = await openImageFile(copy, false);
    try {
      const lines = (await walkManifest(fs, { exclude: ['/lost+found'] })).map((e) => e.line);
      expect(diffLines(reference, lines)).toBe('');
    } finally {
      await fs.close();
    }
  });
});
