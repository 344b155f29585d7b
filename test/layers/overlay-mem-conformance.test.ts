/**
 * The Overlay with the `--writable-tmpfs` upper (openMemUpperLayer) through
 * the conformance suite: random sequences against the model over an ext3
 * lower that already holds a tree (so sequences copy up, white out, make
 * opaque directories and rename lower directories), MemLayer's bookkeeping
 * verified after every sequence, and small caps filled to ENOSPC through the
 * Overlay.
 */
import { beforeAll } from 'vitest';
import { openExt3 } from '../../src/ext3/index.js';
import { mkfsExt3 } from '../../src/ext3/mkfs.js';
import { MemoryRegion } from '../../src/io/memory-region.js';
import type { Layer } from '../../src/layers/layer.js';
import { openMemUpperLayer } from '../../src/layers/mem.js';
import { Overlay } from '../../src/layers/overlay/index.js';
import { FULL_CAPABILITIES, conformanceSuite, type ConformanceTarget } from '../conformance/index.js';
import { ModelFs } from '../conformance/model.js';
import type { Op } from '../conformance/ops.js';
import { VfsDriver } from '../conformance/vfs.js';

const f = (path: string, mode = 0o644): Op => ({ op: 'mknod', path, kind: 'f', mode, major: 0, minor: 0 });
const LOWER_OPS: Op[] = [
  { op: 'mkdir', path: '/a', mode: 0o755 },
  { op: 'mkdir', path: '/a/b', mode: 0o755 },
  { op: 'mkdir', path: '/c', mode: 0o2775 },
  f('/a/x'),
  { op: 'write', path: '/a/x', offset: 0, length: 6000, seed: 11 },
  f('/a/b/y', 0o600),
  { op: 'write', path: '/a/b/y', offset: 200_000, length: 5000, seed: 12 },
  f('/c/z', 0o755),
  { op: 'link', from: '/c/z', path: '/a/z2' },
  { op: 'symlink', path: '/c/s', target: '../a/x' },
  { op: 'setxattr', path: '/a', name: 'user.k', value: '7a', flags: 0 },
  { op: 'mknod', path: '/c/fifo', kind: 'p', mode: 0o644, major: 0, minor: 0 },
];

let lowerImage: Buffer;
let emptyImage: Buffer;

beforeAll(async () => {
  lowerImage = Buffer.alloc(8 << 20);
  const store = new MemoryRegion(lowerImage, { name: 'lower.ext3' });
  await mkfsExt3(store);
  const fs = await openExt3(store, { writable: true });
  const driver = new VfsDriver(fs);
  for (const op of LOWER_OPS) {
    const o = await driver.apply(op);
    if (o !== 'ok') throw new Error(`building the lower: ${JSON.stringify(op)} gave ${o}`);
  }
  await fs.close();
  emptyImage = Buffer.alloc(8 << 20);
  await mkfsExt3(new MemoryRegion(emptyImage));
});

async function lowerLayer(empty: boolean): Promise<Layer> {
  const bytes = Buffer.from(empty ? emptyImage : lowerImage);
  const fs = await openExt3(new MemoryRegion(bytes, { name: 'lower.ext3', writable: false }), { writable: false });
  return { name: 'lower.ext3', fs, root: fs.rootId };
}

async function lowerModel(): Promise<ModelFs> {
  const m = new ModelFs({ blockSize: 4096 });
  m.addDir(m.rootId, 'lost+found', 0o700);
  const driver = new VfsDriver(m);
  for (const op of LOWER_OPS) await driver.apply(op);
  return m;
}

const target: ConformanceTarget = {
  name: 'Overlay (MemLayer upper over an ext3 lower)',
  // Device nodes: mknod of char 0/0 is EPERM through an overlay (the kernel's rule), which the model does not know.
  capabilities: { ...FULL_CAPABILITIES, devices: false },
  async open(o) {
    const upper = await openMemUpperLayer({ capBytes: o.small ? 1 << 20 : 64 << 20 });
    // The bursts and races (seed 0) and the fill sequences start from an empty lower.
    const empty = o.seed === 0 || o.small;
    const lower = await lowerLayer(empty);
    // The Overlay closes its layers: MemLayer's bookkeeping is verified just before.
    const closeUpper = upper.fs.close.bind(upper.fs);
    upper.fs.close = async () => {
      upper.fs.verify();
      await closeUpper();
    };
    const fs = await Overlay.open({ lowers: [lower], upper });
    return {
      fs,
      ...(empty ? { init: (m: ModelFs) => void m.addDir(m.rootId, 'lost+found', 0o700) } : { model: await lowerModel() }),
      exclude: ['/lost+found'],
      close: async () => undefined,
    };
  },
};

conformanceSuite(target, { sequences: 60, ops: 40, seedBase: 12_200_000, fill: 8, maxOffset: 2 << 20 });
