/**
 * The Overlay through the conformance suite (test/conformance/index.ts):
 * random operation sequences against the POSIX model on an Overlay whose
 * lower layer already holds a tree (directories, sparse and hard-linked
 * files, a symlink, xattrs, a device and a fifo), so the sequences copy up,
 * white out, make opaque directories and rename lower directories. The
 * model starts from the same tree (the same ops through the model).
 *
 * Uppers: an ext3 image (in memory; checked by e2fsck -fn after every
 * sequence, reopened writable or read-only every third), a MemLayer (the
 * --writable-tmpfs upper) and, as root, a DirLayer host directory (kernel
 * encoding there).
 *
 * Not generated: device nodes (mknod of char 0/0 is EPERM through an overlay,
 * as in the kernel, and the model would make one).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, afterAll } from 'vitest';
import { openExt3 } from '../../src/ext3/index.js';
import { mkfsExt3 } from '../../src/ext3/mkfs.js';
import { MemoryRegion } from '../../src/io/memory-region.js';
import { openDirLayer } from '../../src/layers/dir.js';
import { openExt3Layer } from '../../src/layers/ext3-layer.js';
import { openMemUpper } from '../../src/layers/mem-upper.js';
import { isUpperLayer, type Layer, type UpperLayer } from '../../src/layers/layer.js';
import { Overlay } from '../../src/layers/overlay/index.js';
import { conformanceSuite, FULL_CAPABILITIES, type ConformanceTarget } from '../conformance/index.js';
import { ModelFs } from '../conformance/model.js';
import { VfsDriver } from '../conformance/vfs.js';
import { describeIf } from '../tools/skip.js';
import { isRoot, tempDir } from './overlay-helpers.js';
import { LOWER_OPS } from './overlay-lower-tree.js';


const BLOCK = 1024;
let lowerImage: Buffer;
let dir = '';

async function buildLower(): Promise<Buffer> {
  const bytes = Buffer.alloc(16 << 20);
  const store = new MemoryRegion(bytes, { name: 'lower.ext3' });
  await mkfsExt3(store);
  const fs = await openExt3(store, { writable: true });
  const driver = new VfsDriver(fs);
  for (const op of LOWER_OPS) {
    const o = await driver.apply(op);
    if (o !== 'ok') throw new Error(`building the lower: ${JSON.stringify(op)} gave ${o}`);
  }
  await fs.close();
  return bytes;
}

async function lowerModel(blockSize = BLOCK): Promise<ModelFs> {
  const m = new ModelFs({ blockSize });
  m.addDir(m.rootId, 'lost+found', 0o700);
  const driver = new VfsDriver(m);
  for (const op of LOWER_OPS) await driver.apply(op);
  return m;
}

/** The bursts and races (seed 0) start from an empty filesystem: their lower holds nothing but lost+found. */
let emptyImage: Buffer;
const emptyInit = (m: ModelFs) => {
  m.addDir(m.rootId, 'lost+found', 0o700);
};

async function lowerLayer(empty = false): Promise<Layer> {
  const bytes = Buffer.from(empty ? emptyImage : lowerImage);
  const fs = await openExt3(new MemoryRegion(bytes, { name: 'lower.ext3', writable: false }), { writable: false });
  return { name: 'lower.ext3', fs, root: fs.rootId };
}

function e2fsck(bytes: Buffer, tag: string): void {
  const file = join(dir, `${tag}.img`);
  writeFileSync(file, bytes);
  const r = spawnSync('e2fsck', ['-fn', file], { encoding: 'utf8' });
  rmSync(file, { force: true });
  if (r.status !== 0) throw new Error(`e2fsck -fn of the upper image failed:\n${r.stdout}${r.stderr}`);
}

beforeAll(async () => {
  dir = tempDir('conf');
  lowerImage = await buildLower();
  emptyImage = Buffer.alloc(16 << 20);
  await mkfsExt3(new MemoryRegion(emptyImage));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const caps = { ...FULL_CAPABILITIES, blockSize: BLOCK, devices: false };

const ext3Upper: ConformanceTarget = {
  name: 'Overlay (ext3 upper over an ext3 lower)',
  capabilities: caps,
  async open(o) {
    const bytes = Buffer.alloc(24 << 20);
    const store = new MemoryRegion(bytes, { name: `upper-${o.seed}.ext3` });
    await mkfsExt3(store);
    const open = async (writable: boolean): Promise<Overlay> => {
      const lower = await lowerLayer(o.seed === 0);
      const region = new MemoryRegion(bytes, { name: store.name, writable });
      if (writable) {
        const l = await openExt3Layer(region);
        if (!isUpperLayer(l)) throw new Error('upper not writable');
        return Overlay.open({ lowers: [lower], upper: l });
      }
      // The same stack opened read-only: the upper's engine read-only (writes EROFS), its index still read.
      const fs = await openExt3(region, { writable: false });
      const root = (await fs.lookup(fs.rootId, Buffer.from('upper')))!;
      const work = (await fs.lookup(fs.rootId, Buffer.from('work')))!;
      const upper = { name: store.name, fs: fs as unknown as UpperLayer['fs'], root, work, encoding: 'kernel' as const };
      return Overlay.open({ lowers: [lower], upper });
    };
    const fs = await open(true);
    return {
      fs,
      ...(o.seed === 0 ? { init: emptyInit } : { model: await lowerModel() }),
      exclude: ['/lost+found'],
      check: async () => e2fsck(bytes, `upper-${o.seed}`),
      reopen: async (writable) => ({ fs: await open(writable) }),
      close: async () => undefined,
    };
  },
};

conformanceSuite(ext3Upper, { sequences: 45, ops: 40, seedBase: 9_100_000, reopenEvery: 3, maxOffset: 2 << 20 });

const memUpper: ConformanceTarget = {
  name: 'Overlay (MemLayer upper, --writable-tmpfs, over an ext3 lower)',
  capabilities: { ...caps, blockSize: 4096 },
  async open(o) {
    const upper = await openMemUpper({ capBytes: 64 << 20 });
    return {
      fs: await Overlay.open({ lowers: [await lowerLayer(o.seed === 0)], upper }),
      ...(o.seed === 0 ? { init: emptyInit } : { model: await lowerModel(4096) }),
      exclude: ['/lost+found'],
      close: async () => undefined,
    };
  },
};

conformanceSuite(memUpper, { sequences: 30, ops: 40, seedBase: 9_300_000, reopenEvery: 0, maxOffset: 2 << 20 });

describeIf(isRoot, 'a kernel-encoding directory upper needs root (mknod, trusted.*)')('the Overlay over a DirLayer upper', () => {
  let n = 0;
  const dirUpper: ConformanceTarget = {
    name: 'Overlay (DirLayer upper over an ext3 lower, root)',
    // The host directory holds symlink targets up to 4095 bytes.
    capabilities: { ...caps, blockSize: 4096 },
    async open(o) {
      const path = join(dir, `dirup-${n++}`);
      mkdirSync(path);
      const open = async (writable: boolean): Promise<Overlay> => {
        const lower = await lowerLayer(o.seed === 0);
        if (writable) return Overlay.open({ lowers: [lower], upper: await openDirLayer(path, { writable: true }) });
        // The same stack opened read-only: the upper directory read-only, its index still read.
        const ro = await openDirLayer(path, { writable: false });
        const work = (await ro.fs.lookup(ro.fs.rootId, Buffer.from('work')))!;
        return Overlay.open({ lowers: [lower], upper: { ...ro, fs: ro.fs as unknown as UpperLayer['fs'], work, encoding: 'kernel' } });
      };
      return {
        fs: await open(true),
        ...(o.seed === 0 ? { init: emptyInit } : { model: await lowerModel(4096) }),
        exclude: ['/lost+found'],
        reopen: async (writable) => ({ fs: await open(writable) }),
        close: async () => rmSync(path, { recursive: true, force: true }),
      };
    },
  };
  conformanceSuite(dirUpper, { sequences: 20, ops: 40, seedBase: 9_200_000, reopenEvery: 3, maxOffset: 1 << 20 });
});
