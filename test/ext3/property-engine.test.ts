/**
 * Property tests of the ext3 engine against the in-memory model (whose
 * agreement with the kernel oracle-kernel.test.ts proves): random operation
 * sequences, with batches of independent operations issued concurrently (FUSE
 * requests interleave), on fresh `mkfs.ext3` images of every geometry. After
 * each sequence: manifests and link structure equal the model's; the engine
 * closes cleanly and `e2fsck -fn` finds the image clean; reopened, the image
 * still equals the model; as root, every few sequences, the kernel mounts the
 * engine-written image and shows the model's tree too.
 *
 * Small images run the same way until they are full: ENOSPC (blocks or
 * inodes) must be a clean error that changes nothing, with e2fsck clean after.
 *
 * Counts scale with SIFUSE_PROPERTY_RUNS (a multiplier, default 1).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { copyFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRoot, makeTempDir, removeTempDir, runSifuse, skipNote } from '../tools/helpers.js';
import { loadEngine, openImageFile } from '../tools/ext3-engine.js';
import { ModelFs } from './model.js';
import { EDGE_CASES, type Op } from './model-ops.js';
import { VfsDriver } from './model-vfs.js';
import {
  FsTarget,
  KernelTarget,
  compareWithModel,
  formatOps,
  fsck,
  loopMount,
  mkfsExt3,
  SequenceMismatch,
  runSequence,
  runs,
  shrinkFailure,
  timeoutFor,
  unmount,
  type MkfsOptions,
  type SequenceLog,
  type SequenceOptions,
} from './model-harness.js';

const engine = await loadEngine();
if (!engine) skipNote('ext3 engine property tests', 'the ext3 engine (openExt3 in src/ext3/index.ts) has not landed yet');
if (!isRoot) skipNote('kernel views of engine-written images and kernel-then-engine sequences', 'loop mounts need root');

let dir: string;
beforeAll(() => {
  dir = makeTempDir('e3-prop');
});
afterAll(() => removeTempDir(dir));

const mkfsInit = (m: ModelFs) => {
  m.addDir(m.rootId, 'lost+found', 0o700);
};

interface Stats {
  sequences: number;
  ops: number;
  outcomes: Map<string, number>;
  enospc: number;
  kernelChecks: number;
}

function record(stats: Stats, log: SequenceLog): void {
  stats.sequences++;
  stats.ops += log.ops.length;
  stats.enospc += log.enospc;
  for (const o of log.outcomes) stats.outcomes.set(o, (stats.outcomes.get(o) ?? 0) + 1);
}

/**
 * One sequence on a copy of `pristine`: run, compare, close, e2fsck, reopen,
 * compare, close, e2fsck; as root and when `kernel`, mount and compare.
 */
interface Setup {
  init?: (m: ModelFs) => void;
  /** Runs on the fresh image before the engine opens it; returns the model of what it did. */
  before?: (image: string) => Promise<ModelFs>;
}

async function copyImage(from: string, to: string): Promise<void> {
  await execa('cp', ['--sparse=always', from, to]);
}

async function engineSequence(pristine: string, seq: Omit<SequenceOptions, 'init'>, stats: Stats, kernel: boolean, setup: Setup = {}): Promise<void> {
  const image = join(dir, 'e.img');
  await copyImage(pristine, image);
  const model = setup.before ? await setup.before(image) : undefined;
  const opts: SequenceOptions = { ...seq, init: setup.init ?? mkfsInit, model, exclude: ['/lost+found'] };
  let fs = await openImageFile(image, true);
  const target = new FsTarget(fs, ['/lost+found']);
  let log: SequenceLog;
  try {
    log = await runSequence(target, opts);
  } catch (e) {
    await fs.close().catch(() => undefined);
    const keep = join(tmpdir(), `sifuse-e3-prop-seed-${seq.seed}.img`);
    copyFileSync(image, keep);
    let report = String(e);
    if (e instanceof SequenceMismatch && e.ops.length > 0 && !setup.before) {
      // Replayed one op at a time on fresh copies, cut down to what still fails.
      const shrunk = await shrinkFailure(async () => {
        const img = join(dir, 'shrink.img');
        await copyImage(pristine, img);
        const f = await openImageFile(img, true);
        return { target: new FsTarget(f, ['/lost+found']), done: () => f.close().catch(() => undefined) };
      }, opts, e.ops);
      report += `\nshrunk to ${shrunk.ops.length} ops:\n${shrunk.ops.map((op) => JSON.stringify(op)).join('\n')}\n${shrunk.error}`;
    } else if (e instanceof SequenceMismatch) {
      report += `\nengine ops:\n${e.ops.map((op) => JSON.stringify(op)).join('\n')}`;
    }
    writeFileSync(`${keep}.txt`, report);
    throw new Error(`${report}\n(image kept as ${keep})`);
  }
  // Every third sequence syncs first, so close also runs with nothing left to commit.
  if (seq.seed % 3 === 0) await fs.sync();
  await fs.close();
  const after = await fsck(image);
  if (!after.clean) {
    throw new Error(`seed ${seq.seed}: e2fsck -fn after the engine's close:\n${after.output}\n${formatOps(log.ops, log.outcomes)}`);
  }
  // Reopen: writable on even seeds (then e2fsck again after its close), read-only on odd ones.
  const writable = seq.seed % 2 === 0;
  fs = await openImageFile(image, writable);
  target.replace(fs);
  try {
    await compareWithModel(target, log, opts, `after close and ${writable ? 'writable' : 'read-only'} reopen`);
  } finally {
    await fs.close();
  }
  if (writable) {
    const again = await fsck(image);
    if (!again.clean) throw new Error(`seed ${seq.seed}: e2fsck -fn after reopen and close:\n${again.output}`);
  }
  if (kernel && isRoot) {
    const mnt = join(dir, 'mnt');
    await loopMount(image, mnt);
    const k = new KernelTarget(mnt);
    try {
      await compareWithModel(k, log, opts, 'as the kernel sees the engine-written image');
    } finally {
      await k.close();
      await unmount(mnt);
    }
    stats.kernelChecks++;
  }
  record(stats, log);
}

const GEOMETRIES: MkfsOptions[] = [
  { blockSize: 1024, inodeSize: 128, sizeKiB: 16 * 1024 },
  { blockSize: 1024, inodeSize: 256, sizeKiB: 16 * 1024 },
  { blockSize: 2048, inodeSize: 256, sizeKiB: 16 * 1024 },
  { blockSize: 4096, inodeSize: 256, sizeKiB: 32 * 1024 },
];

describe.runIf(engine !== null)('ext3 engine against the model (mkfs.ext3 images)', () => {
  it('the fixed edge-case sequence (proven on the kernel in oracle-kernel.test.ts)', async () => {
    const stats: Stats = { sequences: 0, ops: 0, outcomes: new Map(), enospc: 0, kernelChecks: 0 };
    for (const g of [GEOMETRIES[0]!, GEOMETRIES[3]!]) {
      const pristine = join(dir, `edge-${g.blockSize}-${g.inodeSize}.img`);
      await mkfsExt3(pristine, g);
      await engineSequence(pristine, { seed: g.blockSize, ops: 0, blockSize: g.blockSize, replay: EDGE_CASES }, stats, true);
    }
    expect(stats.sequences).toBe(2);
  });

  for (const g of GEOMETRIES) {
    it(`${g.blockSize}-byte blocks, ${g.inodeSize}-byte inodes: outcomes, manifests, e2fsck, reopen`, async () => {
      const pristine = join(dir, `p-${g.blockSize}-${g.inodeSize}.img`);
      await mkfsExt3(pristine, g);
      const stats: Stats = { sequences: 0, ops: 0, outcomes: new Map(), enospc: 0, kernelChecks: 0 };
      const n = runs(30);
      for (let s = 0; s < n; s++) {
        const seed = 7_000_000 + g.blockSize * 1000 + g.inodeSize * 10 + s;
        await engineSequence(pristine, { seed, ops: 40, blockSize: g.blockSize, concurrency: true, maxOffset: 6 << 20 }, stats, s % 6 === 0);
      }
      console.log(`engine ${g.blockSize}/${g.inodeSize}: ${stats.sequences} sequences, ${stats.ops} ops, ${stats.kernelChecks} kernel checks, outcomes ${JSON.stringify(Object.fromEntries(stats.outcomes))}`);
      expect(stats.sequences).toBe(n);
      expect(stats.outcomes.get('ok') ?? 0).toBeGreaterThan(n * 10);
    }, timeoutFor(30_000));
  }

  it('images made by `sifuse overlay create --sparse` (the engine\'s own mkfs), operations under /upper', async () => {
    const pristine = join(dir, 'overlay.img');
    const made = await runSifuse(['overlay', 'create', '--size', '64', '--sparse', pristine]);
    expect(made.exitCode, made.stderr).toBe(0);
    // upper/ and work/ belong to whoever ran `overlay create` (Apptainer's rule).
    const uid = process.getuid?.() ?? 0;
    const gid = process.getgid?.() ?? 0;
    const init = (m: ModelFs) => {
      m.addDir(m.rootId, 'lost+found', 0o700);
      m.addDir(m.rootId, 'upper', 0o755, uid, gid);
      m.addDir(m.rootId, 'work', 0o755, uid, gid);
    };
    const stats: Stats = { sequences: 0, ops: 0, outcomes: new Map(), enospc: 0, kernelChecks: 0 };
    const n = runs(16);
    for (let s = 0; s < n; s++) {
      await engineSequence(pristine, { seed: 8_800_000 + s, ops: 40, blockSize: 1024, concurrency: true, base: s % 2 ? '/upper' : '/', maxOffset: s % 4 === 0 ? 70 << 20 : 4 << 20 }, stats, s % 8 === 0, { init });
    }
    console.log(`engine on overlay-create images: ${stats.sequences} sequences, ${stats.ops} ops, ${stats.kernelChecks} kernel checks, outcomes ${JSON.stringify(Object.fromEntries(stats.outcomes))}`);
    expect(stats.sequences).toBe(n);
  }, timeoutFor(30_000));

  it.runIf(isRoot)('the kernel writes first, the engine continues on the same image (root)', async () => {
    const stats: Stats = { sequences: 0, ops: 0, outcomes: new Map(), enospc: 0, kernelChecks: 0 };
    const geometries: MkfsOptions[] = [
      { blockSize: 1024, inodeSize: 128, sizeKiB: 16 * 1024 },
      { blockSize: 4096, inodeSize: 256, sizeKiB: 32 * 1024 },
    ];
    for (const [i, g] of geometries.entries()) {
      const pristine = join(dir, `hybrid-${i}.img`);
      await mkfsExt3(pristine, g);
      for (let s = 0; s < runs(4); s++) {
        const seed = 6_600_000 + i * 1000 + s;
        const before = async (image: string): Promise<ModelFs> => {
          const mnt = join(dir, 'hybrid-mnt');
          await loopMount(image, mnt);
          const k = new KernelTarget(mnt);
          try {
            const log = await runSequence(k, { seed: seed + 500, ops: 60, blockSize: g.blockSize, init: mkfsInit, exclude: ['/lost+found'], maxOffset: 6 << 20 });
            return log.model;
          } finally {
            await k.close();
            await unmount(mnt);
          }
        };
        await engineSequence(pristine, { seed, ops: 40, blockSize: g.blockSize, concurrency: true, maxOffset: 6 << 20 }, stats, s === 0, { before });
      }
    }
    console.log(`kernel then engine: ${stats.sequences} sequences, ${stats.ops} engine ops, outcomes ${JSON.stringify(Object.fromEntries(stats.outcomes))}`);
    expect(stats.sequences).toBe(runs(4) * 2);
  }, timeoutFor(40_000));

  it('bursts of concurrent operations on one file and in one directory (order-independent by construction)', async () => {
    for (const g of [GEOMETRIES[0]!, GEOMETRIES[3]!]) {
      const image = join(dir, `burst-${g.blockSize}.img`);
      await mkfsExt3(image, g);
      const model = new ModelFs({ blockSize: g.blockSize });
      mkfsInit(model);
      const driver = new VfsDriver(model);
      const fs = await openImageFile(image, true);
      const target = new FsTarget(fs, ['/lost+found']);
      const burst = async (ops: Op[]) => {
        const got = await target.apply(ops, true);
        for (const [i, op] of ops.entries()) expect(got.outcomes[i], JSON.stringify(op)).toBe(await driver.apply(op));
      };
      await burst([{ op: 'mknod', path: '/f', kind: 'f', mode: 0o644, major: 0, minor: 0 }, { op: 'mkdir', path: '/d', mode: 0o755 }]);
      // 64 writes of 3000 bytes at disjoint offsets of one file, spanning direct, indirect and double-indirect blocks.
      const slots = Array.from({ length: 64 }, (_, i) => i).sort((a, b) => ((a * 37) % 64) - ((b * 37) % 64));
      await burst(slots.map((i) => ({ op: 'write', path: '/f', offset: i * 70_001, length: 3000, seed: i })));
      // 300 creates, then 100 unlinks and 100 more creates, each burst at once in one directory.
      await burst(Array.from({ length: 300 }, (_, i) => ({ op: 'mknod', path: `/d/n${i}`, kind: 'f', mode: 0o644, major: 0, minor: 0 }) as Op));
      await burst([
        ...Array.from({ length: 100 }, (_, i) => ({ op: 'unlink', path: `/d/n${i * 3}` }) as Op),
        ...Array.from({ length: 100 }, (_, i) => ({ op: 'mkdir', path: `/d/m${i}`, mode: 0o700 }) as Op),
      ]);
      await burst(Array.from({ length: 50 }, (_, i) => ({ op: 'write', path: `/d/n${i * 3 + 1}`, offset: 0, length: 5000, seed: 1000 + i }) as Op));
      const log = { ops: [], outcomes: [], model, enospc: 0 };
      try {
        await compareWithModel(target, log, { seed: g.blockSize, exclude: ['/lost+found'] });
      } finally {
        await fs.close();
      }
      const check = await fsck(image);
      expect(check.clean, check.output).toBe(true);
    }
  });

  it('small images: ENOSPC and inode exhaustion are clean errors, nothing corrupted', async () => {
    const stats: Stats = { sequences: 0, ops: 0, outcomes: new Map(), enospc: 0, kernelChecks: 0 };
    const small: MkfsOptions[] = [
      { blockSize: 1024, inodeSize: 256, sizeKiB: 2048, inodes: 32 },
      { blockSize: 1024, inodeSize: 128, sizeKiB: 3072 },
      { blockSize: 4096, inodeSize: 256, sizeKiB: 8192, inodes: 64 },
    ];
    for (const [i, g] of small.entries()) {
      const pristine = join(dir, `small-${i}.img`);
      await mkfsExt3(pristine, g);
      for (let s = 0; s < runs(4); s++) {
        const seed = 9_100_000 + i * 1000 + s;
        await engineSequence(
          pristine,
          { seed, ops: 150, blockSize: g.blockSize, concurrency: true, allowEnospc: true, bigWrites: true, maxOffset: 3 << 20 },
          stats,
          s === 0,
        );
      }
    }
    console.log(`engine small images: ${stats.sequences} sequences, ${stats.ops} ops, ${stats.enospc} ENOSPC, outcomes ${JSON.stringify(Object.fromEntries(stats.outcomes))}`);
    expect(stats.enospc).toBeGreaterThan(0);
  }, timeoutFor(40_000));
});
