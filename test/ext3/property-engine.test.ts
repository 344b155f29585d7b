/**
 * Property tests of the ext3 engine against the in-memory model (whose
 * agreement with the kernel oracle-kernel.test.ts proves): random operation
 * sequences, with batches of independent operations issued concurrently (FUSE
 * requests interleave), on fresh `mkfs.ext3` images of every geometry. After
 * EVERY sequence: outcomes, manifests and link structure equal the model's,
 * the engine closes cleanly and `e2fsck -fn` finds the image clean. On every
 * third sequence the image is reopened (writable or read-only) and compared
 * again; as root, every KERNEL_EVERY-th sequence runs on a real image file
 * and the kernel mounts the engine-written image and shows the model's tree.
 *
 * Small images run the same way until they are full: ENOSPC (blocks or
 * inodes) must be a clean error that changes nothing, with e2fsck clean after.
 *
 * Speed (thousands of sequences by default): each mkfs image is made once
 * and each sequence runs on a copy-on-write view of it (model-image.ts);
 * e2fsck reads a work file onto which only the sequence's changed chunks are
 * laid, spawned by a small helper process; LANES sequences are in flight at
 * once so the engine's work overlaps the e2fsck and kernel processes.
 *
 * Counts scale with SIFUSE_PROPERTY_RUNS (a multiplier, default 1).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, writeFileSync } from 'node:fs';
import type { WritableFs } from '../../src/engine.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRoot, makeTempDir, removeTempDir, runSifuse, skipNote } from '../tools/helpers.js';
import { loadEngine, openImageFile } from '../tools/ext3-engine.js';
import { ModelFs } from './model.js';
import { BaseImage, CowImage, WorkFile } from './model-image.js';
import { EDGE_CASES, type Op } from './model-ops.js';
import { VfsDriver } from './model-vfs.js';
import {
  FsTarget,
  KernelTarget,
  compareWithModel,
  formatOps,
  fsck,
  FsckServer,
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
/** Engine sequences run by this file, all tests together (for the closing line). */
let totalSequences = 0;
let startCpu: NodeJS.CpuUsage;
let startWall = 0;
beforeAll(() => {
  dir = makeTempDir('e3-prop');
  startCpu = process.cpuUsage();
  startWall = Date.now();
});
afterAll(() => {
  removeTempDir(dir);
  const cpu = process.cpuUsage(startCpu);
  console.log(
    `property-engine: ${totalSequences} engine sequences in ${((Date.now() - startWall) / 1000).toFixed(1)} s wall, ` +
      `${((cpu.user + cpu.system) / 1e6).toFixed(1)} s CPU in the test process (e2fsck and kernel helpers not counted)`,
  );
});

const mkfsInit = (m: ModelFs) => {
  m.addDir(m.rootId, 'lost+found', 0o700);
};

interface Stats {
  sequences: number;
  ops: number;
  outcomes: Map<string, number>;
  enospc: number;
  kernelChecks: number;
  reopens: number;
}

function record(stats: Stats, log: SequenceLog): void {
  stats.sequences++;
  totalSequences++;
  stats.ops += log.ops.length;
  stats.enospc += log.enospc;
  for (const o of log.outcomes) stats.outcomes.set(o, (stats.outcomes.get(o) ?? 0) + 1);
}

/**
 * Where a sequence runs. Most sequences run on a copy-on-write view of the
 * pristine image in memory (the engine sees a ByteStore as always) and are
 * laid onto the lane's WorkFile only for e2fsck; kernel-checked and
 * kernel-prepared sequences run on a real image file through FileRegion,
 * the way the daemon opens images.
 */
interface Setup {
  init?: (m: ModelFs) => void;
  /** Runs on the fresh image file before the engine opens it; returns the model of what it did. */
  before?: (image: string, lane: Lane) => Promise<ModelFs>;
}

/** One of the sequences in flight at once; each has its own files and mount point. */
interface Lane {
  id: number;
  works: Map<BaseImage, WorkFile>;
  fsck: FsckServer;
}

function newLane(id: number): Lane {
  return { id, works: new Map(), fsck: new FsckServer() };
}

async function closeLane(lane: Lane): Promise<void> {
  for (const w of lane.works.values()) w.close();
  lane.works.clear();
  await lane.fsck.close();
}

interface SeqImage {
  open(writable: boolean): Promise<WritableFs>;
  /** A file holding the image's current bytes, for e2fsck and the kernel. */
  file(): string;
  /** Ends the sequence's use of its files. */
  done(): void;
  keep(to: string): void;
}

function memoryImage(base: BaseImage, lane: Lane | null): SeqImage {
  const img = new CowImage(base, `${base.path} (copy)`);
  let work: WorkFile | undefined;
  return {
    async open(writable) {
      return (await loadEngine())!(img.store(writable), { writable });
    },
    file() {
      if (!lane) throw new Error('a lane-less image has no file');
      work = lane.works.get(base);
      if (!work) lane.works.set(base, (work = new WorkFile(join(dir, `work-${lane.id}-${lane.works.size}-${process.pid}.img`), base)));
      work.show(img);
      return work.path;
    },
    done() {
      work?.clear();
    },
    keep(to) {
      writeFileSync(to, img.toBuffer());
    },
  };
}

function fileImage(base: BaseImage, lane: Lane): SeqImage {
  const path = join(dir, `file-${lane.id}.img`);
  base.writeTo(path);
  return {
    open: (writable) => openImageFile(path, writable),
    file: () => path,
    done: () => undefined,
    keep: (to) => copyFileSync(path, to),
  };
}

const fresh = (base: BaseImage) => async () => {
  const f = await memoryImage(base, null).open(true);
  return { target: new FsTarget(f, ['/lost+found']), done: () => f.close().catch(() => undefined) };
};

interface Checks {
  /** As root: run on a real file and have the kernel mount the result and compare. */
  kernel: boolean;
  /** Reopen after close and compare again (writable on even seeds, then e2fsck again). */
  reopen: boolean;
}

/**
 * One sequence on a copy of `base`: run, compare, close, e2fsck; then as
 * `checks` ask, reopen and compare (e2fsck again after a writable reopen),
 * and mount with the kernel and compare.
 */
async function engineSequence(base: BaseImage, seq: Omit<SequenceOptions, 'init'>, stats: Stats, lane: Lane, checks: Checks, setup: Setup = {}): Promise<void> {
  const onFile = (checks.kernel && isRoot) || setup.before !== undefined;
  const image = onFile ? fileImage(base, lane) : memoryImage(base, lane);
  try {
    const model = setup.before ? await setup.before(image.file(), lane) : undefined;
    const opts: SequenceOptions = { ...seq, init: setup.init ?? mkfsInit, model, exclude: ['/lost+found'] };
    let fs = await image.open(true);
    const target = new FsTarget(fs, ['/lost+found']);
    let log: SequenceLog;
    try {
      log = await runSequence(target, opts);
    } catch (e) {
      await fs.close().catch(() => undefined);
      const keep = join(tmpdir(), `sifuse-e3-prop-seed-${seq.seed}.img`);
      image.keep(keep);
      let report = String(e);
      if (e instanceof SequenceMismatch && e.ops.length > 0 && !setup.before) {
        // Replayed one op at a time on fresh copies, cut down to what still fails.
        const shrunk = await shrinkFailure(fresh(base), opts, e.ops);
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
    const after = await lane.fsck.check(image.file());
    if (!after.clean) {
      throw new Error(`seed ${seq.seed}: e2fsck -fn after the engine's close:\n${after.output}\n${formatOps(log.ops, log.outcomes)}`);
    }
    if (checks.reopen || onFile) {
      // Reopen: writable on even seeds (then e2fsck again after its close), read-only on odd ones.
      const writable = seq.seed % 2 === 0;
      fs = await image.open(writable);
      target.replace(fs);
      try {
        await compareWithModel(target, log, opts, `after close and ${writable ? 'writable' : 'read-only'} reopen`);
      } finally {
        await fs.close();
      }
      stats.reopens++;
      if (writable) {
        const again = await lane.fsck.check(image.file());
        if (!again.clean) throw new Error(`seed ${seq.seed}: e2fsck -fn after reopen and close:\n${again.output}`);
      }
    }
    if (checks.kernel && isRoot) {
      const mnt = join(dir, `mnt-${lane.id}`);
      await loopMount(image.file(), mnt);
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
  } finally {
    image.done();
  }
}

/**
 * Runs `count` sequences, `LANES` at a time (the engine's work interleaves
 * with the e2fsck and kernel processes of the others); the first failure
 * stops new ones from starting and is thrown once all have settled.
 */
async function inLanes(count: number, run: (s: number, lane: Lane) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | null = null;
  const lanes = Array.from({ length: LANES }, (_, i) => newLane(i));
  await Promise.all(
    lanes.map(async (lane) => {
      try {
        while (failure === null && next < count) {
          const s = next++;
          try {
            await run(s, lane);
          } catch (error) {
            failure ??= { error };
          }
        }
      } finally {
        await closeLane(lane);
      }
    }),
  );
  if (failure !== null) throw (failure as { error: unknown }).error;
}

function newStats(): Stats {
  return { sequences: 0, ops: 0, outcomes: new Map(), enospc: 0, kernelChecks: 0, reopens: 0 };
}

function summary(stats: Stats): string {
  return `${stats.sequences} sequences, ${stats.ops} ops, ${stats.reopens} reopens, ${stats.kernelChecks} kernel checks, ${stats.enospc} ENOSPC, outcomes ${JSON.stringify(Object.fromEntries(stats.outcomes))}`;
}

const GEOMETRIES: MkfsOptions[] = [
  { blockSize: 1024, inodeSize: 128, sizeKiB: 16 * 1024 },
  { blockSize: 1024, inodeSize: 256, sizeKiB: 16 * 1024 },
  { blockSize: 2048, inodeSize: 256, sizeKiB: 16 * 1024 },
  { blockSize: 4096, inodeSize: 256, sizeKiB: 32 * 1024 },
];

/** Sequences in flight at once. */
const LANES = 3;
/** Default sequences per geometry; a kernel view every KERNEL_EVERY-th, a reopen every third (writable and read-only in turn). */
const PER_GEOMETRY = 440;
const KERNEL_EVERY = 60;
const reopenAt = (s: number) => s % 3 === 0;

async function pristineImage(path: string, g: MkfsOptions): Promise<BaseImage> {
  await mkfsExt3(path, g);
  return BaseImage.load(path);
}

describe.runIf(engine !== null)('ext3 engine against the model (mkfs.ext3 images)', () => {
  it('the fixed edge-case sequence (proven on the kernel in oracle-kernel.test.ts)', async () => {
    const stats = newStats();
    const lane = newLane(0);
    try {
      for (const g of [GEOMETRIES[0]!, GEOMETRIES[3]!]) {
        const base = await pristineImage(join(dir, `edge-${g.blockSize}-${g.inodeSize}.img`), g);
        for (const kernel of [false, true]) {
          await engineSequence(base, { seed: g.blockSize, ops: 0, blockSize: g.blockSize, replay: EDGE_CASES }, stats, lane, { kernel, reopen: true });
        }
      }
    } finally {
      await closeLane(lane);
    }
    expect(stats.sequences).toBe(4);
  });

  for (const g of GEOMETRIES) {
    it(`${g.blockSize}-byte blocks, ${g.inodeSize}-byte inodes: outcomes, manifests, e2fsck, reopen`, async () => {
      const base = await pristineImage(join(dir, `p-${g.blockSize}-${g.inodeSize}.img`), g);
      const stats = newStats();
      const n = runs(PER_GEOMETRY);
      await inLanes(n, async (s, lane) => {
        const seed = 7_000_000 + g.blockSize * 1000 + g.inodeSize * 10 + s;
        await engineSequence(base, { seed, ops: 40, blockSize: g.blockSize, concurrency: true, maxOffset: 6 << 20 }, stats, lane, {
          kernel: s % KERNEL_EVERY === 0,
          reopen: reopenAt(s),
        });
      });
      console.log(`engine ${g.blockSize}/${g.inodeSize}: ${summary(stats)}`);
      expect(stats.sequences).toBe(n);
      expect(stats.reopens).toBeGreaterThanOrEqual(n / 3);
      expect(stats.outcomes.get('ok') ?? 0).toBeGreaterThan(n * 10);
    }, timeoutFor(60_000));
  }

  it('images made by `sifuse overlay create --sparse` (the engine\'s own mkfs), operations under /upper', async () => {
    const pristine = join(dir, 'overlay.img');
    const made = await runSifuse(['overlay', 'create', '--size', '64', '--sparse', pristine]);
    expect(made.exitCode, made.stderr).toBe(0);
    const base = BaseImage.load(pristine);
    // upper/ and work/ belong to whoever ran `overlay create` (Apptainer's rule).
    const uid = process.getuid?.() ?? 0;
    const gid = process.getgid?.() ?? 0;
    const init = (m: ModelFs) => {
      m.addDir(m.rootId, 'lost+found', 0o700);
      m.addDir(m.rootId, 'upper', 0o755, uid, gid);
      m.addDir(m.rootId, 'work', 0o755, uid, gid);
    };
    const stats = newStats();
    const n = runs(240);
    await inLanes(n, async (s, lane) => {
      await engineSequence(
        base,
        { seed: 8_800_000 + s, ops: 40, blockSize: 1024, concurrency: true, base: s % 2 ? '/upper' : '/', maxOffset: s % 4 === 0 ? 70 << 20 : 4 << 20 },
        stats,
        lane,
        { kernel: s % KERNEL_EVERY === 0, reopen: reopenAt(s) },
        { init },
      );
    });
    console.log(`engine on overlay-create images: ${summary(stats)}`);
    expect(stats.sequences).toBe(n);
  }, timeoutFor(40_000));

  it.runIf(isRoot)('the kernel writes first, the engine continues on the same image (root)', async () => {
    const stats = newStats();
    const geometries: MkfsOptions[] = [
      { blockSize: 1024, inodeSize: 128, sizeKiB: 16 * 1024 },
      { blockSize: 4096, inodeSize: 256, sizeKiB: 32 * 1024 },
    ];
    for (const [i, g] of geometries.entries()) {
      const base = await pristineImage(join(dir, `hybrid-${i}.img`), g);
      await inLanes(runs(4), async (s, lane) => {
        const seed = 6_600_000 + i * 1000 + s;
        const before = async (image: string, l: Lane): Promise<ModelFs> => {
          const mnt = join(dir, `hybrid-mnt-${l.id}`);
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
        await engineSequence(base, { seed, ops: 40, blockSize: g.blockSize, concurrency: true, maxOffset: 6 << 20 }, stats, lane, { kernel: s === 0, reopen: true }, { before });
      });
    }
    console.log(`kernel then engine: ${summary(stats)}`);
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
    const stats = newStats();
    const small: MkfsOptions[] = [
      { blockSize: 1024, inodeSize: 256, sizeKiB: 2048, inodes: 32 },
      { blockSize: 1024, inodeSize: 128, sizeKiB: 3072 },
      { blockSize: 4096, inodeSize: 256, sizeKiB: 8192, inodes: 64 },
    ];
    for (const [i, g] of small.entries()) {
      const base = await pristineImage(join(dir, `small-${i}.img`), g);
      await inLanes(runs(20), async (s, lane) => {
        const seed = 9_100_000 + i * 1000 + s;
        await engineSequence(
          base,
          { seed, ops: 150, blockSize: g.blockSize, concurrency: true, allowEnospc: true, bigWrites: true, maxOffset: 3 << 20 },
          stats,
          lane,
          { kernel: s % 10 === 0, reopen: reopenAt(s) },
        );
      });
    }
    console.log(`engine small images: ${summary(stats)}`);
    expect(stats.sequences).toBe(runs(20) * 3);
    expect(stats.enospc).toBeGreaterThan(0);
  }, timeoutFor(40_000));
});
