/**
 * The ext3 engine as a conformance target (test/conformance/index.ts), with
 * ext3's own checks as the target's hooks:
 *
 * - each sequence runs on a copy-on-write view of one pristine mkfs image in
 *   memory (model-image.ts); only sequences that want kernel views (as root)
 *   or a kernel-written start run on a real image file through FileRegion,
 *   the way the daemon opens images;
 * - check(): `e2fsck -fn` of the image after the engine's close, through one
 *   helper process per lane (the lane's WorkFile gets the sequence's written
 *   chunks laid on it);
 * - reopen(w): the engine opens the same bytes again;
 * - views(): as root, a kernel loop mount of the engine-written image;
 * - kernelFirst: the kernel runs a sequence on the fresh image first and the
 *   engine continues from the model of what it did.
 */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { WritableFs } from '../../src/engine.js';
import { openExt3, openImageFile } from '../tools/ext3-engine.js';
import { isRoot } from '../tools/helpers.js';
import type { ConformanceInstance, ConformanceTarget, Capabilities } from '../conformance/index.js';
import { FULL_CAPABILITIES } from '../conformance/index.js';
import { KernelTarget, runSequence } from '../conformance/harness.js';
import type { ModelFs } from '../conformance/model.js';
import { BaseImage, CowImage, WorkFile } from './model-image.js';
import { FsckServer, loopMount, unmount } from './image-tools.js';

/**
 * What the ext3 engine supports: everything the model knows, renameat2 flags
 * (one transaction each) and open/unlink/create races (ref/unref queued with
 * the mutations) included.
 */
export const EXT3_CAPABILITIES: Omit<Capabilities, 'blockSize'> = { ...FULL_CAPABILITIES };

export interface Ext3TargetOptions {
  name: string;
  blockSize: number;
  /** Makes the pristine image at `path` (mkfs.ext3, `sifuse overlay create`). */
  make(path: string): Promise<void>;
  /** What the pristine image holds, in the model (lost+found, upper/, work/). */
  init(model: ModelFs): void;
  /** Where images, work files and mount points go (exists before setup). */
  dir: () => string;
  /** As root: the kernel runs `ops` operations on the fresh image before the engine (seed + 500). */
  kernelFirst?: { ops: number; maxOffset: number };
  capabilities?: Partial<Capabilities>;
}

interface Lane {
  works: Map<BaseImage, WorkFile>;
  fsck: FsckServer;
}

export function ext3Target(o: Ext3TargetOptions): ConformanceTarget & { sequences: () => number } {
  let base: BaseImage | undefined;
  let workDir = '';
  const lanes = new Map<number, Lane>();
  let opened = 0;
  const lane = (i: number): Lane => {
    let l = lanes.get(i);
    if (!l) lanes.set(i, (l = { works: new Map(), fsck: new FsckServer() }));
    return l;
  };
  const exclude = ['/lost+found'];

  async function open(options: { seed: number; lane: number; views: boolean }): Promise<ConformanceInstance> {
    if (!base) throw new Error(`${o.name}: setup() has not made the pristine image`);
    opened++;
    const onFile = (options.views && isRoot) || (o.kernelFirst !== undefined && isRoot);
    const b = base;
    const l = options.lane >= 0 ? lane(options.lane) : null;
    let file: () => string;
    let openFs: (writable: boolean) => Promise<WritableFs>;
    let done: () => void;
    let keep: (to: string) => void;
    if (onFile) {
      if (!l) throw new Error('a file image needs a lane');
      const path = join(workDir, `file-${options.lane}.img`);
      b.writeTo(path);
      file = () => path;
      openFs = (writable) => openImageFile(path, writable);
      done = () => undefined;
      keep = (to) => copyFileSync(path, to);
    } else {
      const img = new CowImage(b, `${b.path} (copy)`);
      let work: WorkFile | undefined;
      file = () => {
        if (!l) throw new Error('a lane-less image has no file');
        work = l.works.get(b);
        if (!work) l.works.set(b, (work = new WorkFile(join(workDir, `work-${options.lane}-${process.pid}.img`), b)));
        work.show(img);
        return work.path;
      };
      openFs = (writable) => openExt3(img.store(writable), { writable });
      done = () => work?.clear();
      keep = (to) => writeFileSync(to, img.toBuffer());
    }
    let model: ModelFs | undefined;
    if (o.kernelFirst && isRoot && l) {
      const mnt = join(workDir, `first-mnt-${options.lane}`);
      await loopMount(file(), mnt);
      const k = new KernelTarget(mnt);
      try {
        const log = await runSequence(k, {
          seed: options.seed + 500,
          ops: o.kernelFirst.ops,
          blockSize: o.blockSize,
          init: o.init,
          exclude,
          maxOffset: o.kernelFirst.maxOffset,
        });
        model = log.model;
      } finally {
        await k.close();
        await unmount(mnt);
      }
    }
    const fs = await openFs(true);
    return {
      fs,
      exclude,
      init: o.init,
      model,
      async check() {
        if (!l) return;
        const r = await l.fsck.check(file());
        if (!r.clean) throw new Error(`${o.name}, seed ${options.seed}: e2fsck -fn after the engine's close:\n${r.output}`);
      },
      async reopen(writable) {
        return { fs: await openFs(writable) };
      },
      async views() {
        if (!onFile || !isRoot) return [];
        const mnt = join(workDir, `mnt-${options.lane}`);
        await loopMount(file(), mnt);
        const k = new KernelTarget(mnt);
        return [
          {
            label: k.label,
            apply: (ops) => k.apply(ops),
            snapshot: () => k.snapshot(),
            close: async () => {
              await k.close();
              await unmount(mnt);
            },
          },
        ];
      },
      keep() {
        const to = join(tmpdir(), `sifuse-e3-conformance-seed-${options.seed}.img`);
        keep(to);
        return to;
      },
      async close() {
        done();
      },
    };
  }

  return {
    name: o.name,
    capabilities: { ...EXT3_CAPABILITIES, ...o.capabilities, blockSize: o.blockSize },
    async setup() {
      workDir = join(o.dir(), o.name.replace(/[^A-Za-z0-9]+/g, '-'));
      mkdirSync(workDir, { recursive: true });
      const path = join(workDir, 'pristine.img');
      await o.make(path);
      base = BaseImage.load(path);
    },
    async teardown() {
      for (const l of lanes.values()) {
        for (const w of l.works.values()) w.close();
        await l.fsck.close();
      }
      lanes.clear();
    },
    open,
    sequences: () => opened,
  };
}
