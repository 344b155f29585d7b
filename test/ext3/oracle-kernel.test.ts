/**
 * Proves the conformance model (test/conformance) before trusting it with any
 * backend: random operation sequences (renameat2 flags and open/unlink/create
 * races included) on the in-memory model and, as root, on the kernel's own
 * ext3 (a loop mount of a fresh mkfs.ext3 image) must give the same outcome for every operation and the same manifest and links afterwards;
 * the kernel's image must then pass `e2fsck -fn` (which also checks the
 * checker). Runs for 1, 2 and 4 KiB blocks and 128/256-byte inodes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelFs } from '../conformance/model.js';
import { EDGE_CASES } from '../conformance/ops.js';
import { KernelTarget, formatOps, isRoot, runSequence, runs, timeoutFor, type SequenceLog } from '../conformance/harness.js';
import { fsck, loopMount, mkfsExt3, unmount } from './image-tools.js';
import { describeIf } from '../tools/skip.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sifuse-e3-oracle-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const mkfsInit = (m: ModelFs) => {
  m.addDir(m.rootId, 'lost+found', 0o700);
};

const GEOMETRIES = [
  { blockSize: 1024, inodeSize: 128 },
  { blockSize: 1024, inodeSize: 256 },
  { blockSize: 2048, inodeSize: 256 },
  { blockSize: 4096, inodeSize: 256 },
] as const;

describeIf(isRoot, 'loop mounts need root')('model against the kernel (root, loop mounts)', () => {
  it("the fixed edge-case sequence gives the kernel's outcomes (1 KiB blocks)", async () => {
    const image = join(dir, 'edge.img');
    await mkfsExt3(image, { blockSize: 1024, inodeSize: 256, sizeKiB: 16 * 1024 });
    const mnt = join(dir, 'edge-mnt');
    await loopMount(image, mnt);
    const kernel = new KernelTarget(mnt);
    let log: SequenceLog;
    try {
      log = await runSequence(kernel, {
        seed: 0,
        ops: 0,
        blockSize: 1024,
        init: mkfsInit,
        exclude: ['/lost+found'],
        replay: EDGE_CASES,
      });
    } finally {
      await kernel.close();
      await unmount(mnt);
    }
    console.log(`edge cases on the kernel: ${log.outcomes.join(' ')}`);
    expect(new Set(log.outcomes)).toEqual(
      new Set([
        'ok',
        'EINVAL',
        'ENOTEMPTY',
        'EISDIR',
        'ENOTDIR',
        'EPERM',
        'ELOOP',
        'EEXIST',
        'ENODATA',
        'ENAMETOOLONG',
        'ENOENT',
      ]),
    );
    const check = await fsck(image);
    expect(check.clean, check.output).toBe(true);
  });

  for (const g of GEOMETRIES) {
    it(
      `${g.blockSize}-byte blocks, ${g.inodeSize}-byte inodes: same outcomes, manifest, links; e2fsck clean`,
      async () => {
        const pristine = join(dir, `pristine-${g.blockSize}-${g.inodeSize}.img`);
        await mkfsExt3(pristine, { ...g, sizeKiB: 16 * 1024 });
        const counts = new Map<string, number>();
        const sequences = runs(4);
        for (let s = 0; s < sequences; s++) {
          const seed = g.blockSize * 1000 + g.inodeSize * 10 + s;
          const image = join(dir, 'k.img');
          const mnt = join(dir, 'mnt');
          copyFileSync(pristine, image);
          await loopMount(image, mnt);
          const kernel = new KernelTarget(mnt);
          let log: SequenceLog | undefined;
          try {
            log = await runSequence(kernel, {
              seed,
              ops: 80,
              blockSize: g.blockSize,
              init: mkfsInit,
              exclude: ['/lost+found'],
              maxOffset: 6 << 20,
            });
          } catch (e) {
            writeFileSync(join(tmpdir(), `sifuse-e3-oracle-seed-${seed}.txt`), String(e));
            throw e;
          } finally {
            await kernel.close();
            await unmount(mnt);
          }
          for (const o of log.outcomes) counts.set(o, (counts.get(o) ?? 0) + 1);
          const check = await fsck(image);
          expect(check.clean, `${check.output}\n${formatOps(log.ops, log.outcomes)}`).toBe(true);
        }
        console.log(
          `kernel ${g.blockSize}/${g.inodeSize}: ${sequences} sequences, outcomes ${JSON.stringify(Object.fromEntries(counts))}`,
        );
        // Successes and the common errors all occurred.
        for (const code of ['ok', 'ENOENT', 'EEXIST']) expect(counts.get(code) ?? 0).toBeGreaterThan(0);
      },
      timeoutFor(20_000),
    );
  }
});

if (!isRoot) console.warn('oracle-kernel: kernel comparisons skipped: they need root for loop mounts');
