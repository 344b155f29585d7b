/**
 * Property tests of the ext3 engine against the in-memory model (whose
 * agreement with the kernel oracle-kernel.test.ts proves), through the
 * conformance suite (test/conformance/index.ts) with the ext3 target
 * (conformance-target.ts): random operation sequences, with batches of
 * independent operations issued concurrently (FUSE requests interleave) and
 * open/unlink/create races, on fresh `mkfs.ext3` images of every geometry.
 * After EVERY sequence: outcomes, manifests and link structure equal the
 * model's, the engine closes cleanly and `e2fsck -fn` finds the image clean.
 * On every third sequence the image is reopened (writable or read-only) and
 * compared again; as root, every KERNEL_EVERY-th sequence runs on a real image
 * file and the kernel mounts the engine-written image and shows the model's
 * tree.
 *
 * Small images run the same way until they are full: ENOSPC (blocks or
 * inodes) must be a clean error that changes nothing, with e2fsck clean after.
 *
 * Speed (thousands of sequences by default): each mkfs image is made once
 * and each sequence runs on a copy-on-write view of it (model-image.ts);
 * e2fsck reads a work file onto which only the sequence's changed chunks are
 * laid, spawned by a small helper process; three sequences are in flight at
 * once so the engine's work overlaps the e2fsck and kernel processes.
 *
 * Counts scale with SIFUSE_PROPERTY_RUNS (a multiplier, default 1).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRoot, makeTempDir, removeTempDir, runSifuse, skipNote } from '../tools/helpers.js';
import type { ModelFs } from '../conformance/model.js';
import { conformanceSuite, fillSequences, newStats, runSequences, runs, summary, timeoutFor } from '../conformance/index.js';
import { ext3Target } from './conformance-target.js';
import { mkfsExt3, type MkfsOptions } from './image-tools.js';
import { itIf } from '../tools/skip.js';

if (!isRoot) skipNote('kernel views of engine-written images and kernel-then-engine sequences', 'loop mounts need root');

let dir = '';
let startCpu: NodeJS.CpuUsage;
let startWall = 0;
const targets: { sequences: () => number }[] = [];
beforeAll(() => {
  dir = makeTempDir('e3-prop');
  startCpu = process.cpuUsage();
  startWall = Date.now();
});
afterAll(async () => {
  await removeTempDir(dir);
  const cpu = process.cpuUsage(startCpu);
  const total = targets.reduce((n, t) => n + t.sequences(), 0);
  console.log(
    `property-engine: ${total} engine sequences in ${((Date.now() - startWall) / 1000).toFixed(1)} s wall, ` +
      `${((cpu.user + cpu.system) / 1e6).toFixed(1)} s CPU in the test process (e2fsck and kernel helpers not counted)`,
  );
});

const mkfsInit = (m: ModelFs) => {
  m.addDir(m.rootId, 'lost+found', 0o700);
};

function mkfsTarget(name: string, g: MkfsOptions, extra: { kernelFirst?: { ops: number; maxOffset: number } } = {}) {
  const t = ext3Target({
    name,
    blockSize: g.blockSize,
    make: (path) => mkfsExt3(path, g),
    init: mkfsInit,
    dir: () => dir,
    ...extra,
  });
  targets.push(t);
  return t;
}

const GEOMETRIES: MkfsOptions[] = [
  { blockSize: 1024, inodeSize: 128, sizeKiB: 16 * 1024 },
  { blockSize: 1024, inodeSize: 256, sizeKiB: 16 * 1024 },
  { blockSize: 2048, inodeSize: 256, sizeKiB: 16 * 1024 },
  { blockSize: 4096, inodeSize: 256, sizeKiB: 32 * 1024 },
];

/** Default sequences per geometry; a kernel view every KERNEL_EVERY-th, a reopen every third (writable and read-only in turn). */
const PER_GEOMETRY = 440;
const KERNEL_EVERY = 60;

for (const g of GEOMETRIES) {
  conformanceSuite(mkfsTarget(`ext3 ${g.blockSize}-byte blocks, ${g.inodeSize}-byte inodes`, g), {
    sequences: PER_GEOMETRY,
    ops: 40,
    seedBase: 7_000_000 + g.blockSize * 1000 + g.inodeSize * 10,
    viewEvery: KERNEL_EVERY,
    reopenEvery: 3,
    maxOffset: 6 << 20,
  });
}

describe('ext3 engine: images of its own mkfs, kernel-written images, small images', () => {
  // upper/ and work/ belong to whoever ran `overlay create` (Apptainer's rule).
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const overlay = ext3Target({
    name: 'ext3 overlay create --sparse',
    blockSize: 1024,
    make: async (path) => {
      const made = await runSifuse(['overlay', 'create', '--size', '64', '--sparse', path]);
      if (made.exitCode !== 0) throw new Error(`sifuse overlay create ${path}: ${made.stderr}`);
    },
    init: (m) => {
      m.addDir(m.rootId, 'lost+found', 0o700);
      m.addDir(m.rootId, 'upper', 0o755, uid, gid);
      m.addDir(m.rootId, 'work', 0o755, uid, gid);
    },
    dir: () => dir,
  });
  targets.push(overlay);
  beforeAll(() => overlay.setup!(), 300_000);
  afterAll(() => overlay.teardown!());

  it(
    "images made by `sifuse overlay create --sparse` (the engine's own mkfs), operations under / and /upper",
    async () => {
      const stats = newStats();
      const plan = { ops: 40, viewEvery: KERNEL_EVERY, reopenEvery: 3 };
      await runSequences(overlay, { ...plan, sequences: 60, seedBase: 8_800_000, maxOffset: 70 << 20 }, stats);
      await runSequences(overlay, { ...plan, sequences: 60, seedBase: 8_810_000, maxOffset: 4 << 20 }, stats);
      await runSequences(overlay, { ...plan, sequences: 120, seedBase: 8_820_000, maxOffset: 4 << 20, base: '/upper' }, stats);
      console.log(`engine on overlay-create images: ${summary(stats)}`);
      expect(stats.sequences).toBe(runs(60) * 2 + runs(120));
    },
    timeoutFor(40_000),
  );

  itIf(isRoot, 'loop mounts need root')(
    'the kernel writes first, the engine continues on the same image (root)',
    async () => {
      const stats = newStats();
      const geometries: MkfsOptions[] = [
        { blockSize: 1024, inodeSize: 128, sizeKiB: 16 * 1024 },
        { blockSize: 4096, inodeSize: 256, sizeKiB: 32 * 1024 },
      ];
      for (const [i, g] of geometries.entries()) {
        const t = mkfsTarget(`ext3 kernel first ${i}`, g, { kernelFirst: { ops: 60, maxOffset: 6 << 20 } });
        await t.setup!();
        try {
          await runSequences(
            t,
            { sequences: 4, ops: 40, seedBase: 6_600_000 + i * 1000, reopenEvery: 1, viewEvery: 4, maxOffset: 6 << 20 },
            stats,
          );
        } finally {
          await t.teardown!();
        }
      }
      console.log(`kernel then engine: ${summary(stats)}`);
      expect(stats.sequences).toBe(runs(4) * 2);
    },
    timeoutFor(40_000),
  );

  it(
    'small images: ENOSPC and inode exhaustion are clean errors, nothing corrupted',
    async () => {
      const stats = newStats();
      const small: MkfsOptions[] = [
        { blockSize: 1024, inodeSize: 256, sizeKiB: 2048, inodes: 32 },
        { blockSize: 1024, inodeSize: 128, sizeKiB: 3072 },
        { blockSize: 4096, inodeSize: 256, sizeKiB: 8192, inodes: 64 },
      ];
      for (const [i, g] of small.entries()) {
        const t = mkfsTarget(`ext3 small ${i}`, g);
        await t.setup!();
        try {
          await fillSequences(t, 20, { seedBase: 9_100_000 + i * 1000 }, stats);
        } finally {
          await t.teardown!();
        }
      }
      console.log(`engine small images: ${summary(stats)}`);
      expect(stats.sequences).toBe(runs(20) * 3);
      expect(stats.enospc).toBeGreaterThan(0);
    },
    timeoutFor(40_000),
  );
});
