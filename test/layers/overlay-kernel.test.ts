/**
 * The kernel's overlayfs as the Overlay's oracle (root only: loop mounts).
 *
 * Per seed: a SquashFS lower (the shared lower tree, packed by mksquashfs),
 * two fresh ext3 images made by `sifuse overlay create`'s code path.
 *  1. the Overlay (squashfs lower + image O) runs a random sequence, checked
 *     against the POSIX model by the conformance harness;
 *  2. the kernel (squashfs loop mount + image K loop mount, overlay with
 *     redirect_dir=on,index=on) runs the same ops: every outcome, the merged
 *     manifest and the link structure equal the Overlay's (directory link
 *     counts aside: the kernel shows 1 for merged directories);
 *  3. both images pass e2fsck -fn;
 *  4. the kernel mounts image O with default options: its merged manifest
 *     equals the Overlay's (redirects followed, whiteouts and opaque
 *     directories read);
 *  5. the Overlay opens image K: it shows what the kernel showed.
 * In 4 and 5 the reader does not know the writer's hard-link index (sifuse's
 * work/sifuse-index; the kernel's work/index keyed by file handles), so
 * lower-only names of a copied-up hard-linked lower inode are left out there
 * (they show the lower data, as the kernel itself does with index=off).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { FsTarget, KernelTarget, runSequence } from '../conformance/harness.js';
import { FULL_CAPABILITIES } from '../conformance/index.js';
import { diffLines, maskMtime } from '../conformance/manifest.js';
import { ModelFs } from '../conformance/model.js';
import type { Op } from '../conformance/ops.js';
import { VfsDriver } from '../conformance/vfs.js';
import { resolvePath } from '../../src/inspect/path.js';
import { openExt3Layer } from '../../src/layers/ext3-layer.js';
import type { Overlay } from '../../src/layers/overlay/index.js';
import { describeIf } from '../tools/skip.js';
import { e2fsck, isRoot, makeExt3Image, openStack, tempDir } from './overlay-helpers.js';
import { LOWER_OPS } from './overlay-lower-tree.js';

const SEEDS = [31, 32, 33, 34, 35, 36];
let dir = '';
let lower = '';

function mount(args: string[]): void {
  execFileSync('mount', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}
/** Unmounts, retrying while busy (a FUSE daemon or helper still letting go); throws if it stays mounted. */
function umount(path: string): void {
  for (let i = 0; i < 100; i++) {
    if (spawnSync('umount', [path]).status === 0) return;
    if (spawnSync('mountpoint', ['-q', path]).status !== 0) return;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
  }
  throw new Error(`${path}: still mounted after 10 s of umount attempts`);
}

async function lowerModel(): Promise<ModelFs> {
  const m = new ModelFs({ blockSize: 1024 });
  const driver = new VfsDriver(m);
  for (const op of LOWER_OPS) await driver.apply(op);
  return m;
}

/** The merged view through the kernel: overlay of the squashfs and an ext3 image's upper/ + work/. */
async function withKernelOverlay<T>(image: string, tag: string, options: string, fn: (mnt: string) => Promise<T>): Promise<T> {
  const l = join(dir, `${tag}-l`);
  const u = join(dir, `${tag}-u`);
  const m = join(dir, `${tag}-m`);
  for (const d of [l, u, m]) mkdirSync(d, { recursive: true });
  mount(['-t', 'squashfs', '-o', 'loop,ro', lower, l]);
  try {
    mount(['-t', 'ext3', '-o', 'loop', image, u]);
    try {
      mount(['-t', 'overlay', 'overlay', '-o', `lowerdir=${l},upperdir=${u}/upper,workdir=${u}/work${options}`, m]);
      try {
        return await fn(m);
      } finally {
        umount(m);
      }
    } finally {
      umount(u);
    }
  } finally {
    umount(l);
  }
}

/** Merged paths of files with more than one link that are not in the image's upper/. */
async function lowerOnlyAliases(image: string, snap: { lines: string[]; links: string[] }): Promise<Set<string>> {
  const multi = new Set(snap.links.filter((l) => Number(l.split('\t')[1]) > 1).map((l) => l.split('\t')[0]!));
  const up = await openExt3Layer(image, { readOnly: true });
  const out = new Set<string>();
  try {
    for (const l of snap.lines) {
      const [path, type] = l.split('\t');
      if (type !== 'f' || !multi.has(path!)) continue;
      try {
        await resolvePath(up.fs, Buffer.from(`/upper${path}`, 'latin1'));
      } catch {
        out.add(path!);
      }
    }
  } finally {
    await up.fs.close();
  }
  return out;
}

const noDirLinks = (links: string[], dirs: Set<string>) => links.filter((l) => !dirs.has(l.split('\t')[0]!));

if (isRoot) {
  beforeAll(async () => {
    dir = tempDir('kern');
    const src = join(dir, 'lower-src');
    mkdirSync(src);
    chmodSync(src, 0o755);
    const k = new KernelTarget(src);
    try {
      const r = await k.apply(LOWER_OPS);
      expect(r.outcomes.every((o) => o === 'ok'), JSON.stringify(r.outcomes)).toBe(true);
    } finally {
      await k.close();
    }
    lower = join(dir, 'lower.sqfs');
    execFileSync('mksquashfs', [src, lower, '-noappend', '-quiet', '-no-progress']);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
}

describeIf(isRoot, 'loop mounts need root')('the kernel overlay as oracle (root)', () => {

  for (const seed of SEEDS) {
    it(`seed ${seed}: the same ops on the kernel overlay and the Overlay; each reads what the other wrote`, async () => {
      const imgO = await makeExt3Image(dir, `o${seed}`);
      const imgK = await makeExt3Image(dir, `k${seed}`);
      const features = { ...FULL_CAPABILITIES, devices: false, races: false };
      // 1. The Overlay, against the model.
      let ov: Overlay = await openStack([lower], imgO);
      const target = new FsTarget(ov);
      const log = await runSequence(target, { seed, ops: 40, blockSize: 1024, init: () => undefined, model: await lowerModel(), maxOffset: 1 << 20, concurrency: false, features });
      const mine = await target.snapshot();
      const dirs = new Set(mine.lines.filter((l) => l.split('\t')[1] === 'd').map((l) => l.split('\t')[0]!));
      await ov.close();
      // 2. The kernel, the same ops.
      const theirs = await withKernelOverlay(imgK, `k${seed}`, ',redirect_dir=on,index=on,xino=on', async (m) => {
        const k = new KernelTarget(m);
        try {
          const r = await k.apply(log.ops);
          const diffs = log.ops.map((op, i) => ({ op, mine: log.outcomes[i], kernel: r.outcomes[i] })).filter((d) => d.mine !== d.kernel);
          expect(diffs, JSON.stringify(diffs, null, 1)).toEqual([]);
          return await k.snapshot();
        } finally {
          await k.close();
        }
      });
      expect(diffLines(theirs.lines.map(maskMtime), mine.lines.map(maskMtime))).toBe('');
      expect(diffLines(noDirLinks(theirs.links, dirs), noDirLinks(mine.links, dirs))).toBe('');
      // 3. Both images are clean.
      for (const img of [imgO, imgK]) {
        const r = e2fsck(img);
        expect(r.ok, r.output).toBe(true);
      }
      // 4. The kernel with default options reads what the Overlay wrote.
      const kernelOfMine = await withKernelOverlay(imgO, `ko${seed}`, '', async (m) => {
        const k = new KernelTarget(m);
        try {
          return await k.snapshot();
        } finally {
          await k.close();
        }
      });
      // Without index=on the kernel cannot know the hard-link index: lower-only names of a
      // hard-linked lower inode whose copy is indexed show the lower data there (as over the
      // kernel's own index=on upper). Those names are left out here; step 2 proved them.
      const aliases = await lowerOnlyAliases(imgO, mine);
      const drop = (lines: string[]) => lines.filter((l) => !aliases.has(l.split('\t')[0]!)).map(maskMtime);
      expect(diffLines(drop(mine.lines), drop(kernelOfMine.lines))).toBe('');
      // 5. The Overlay reads what the kernel wrote.
      ov = await openStack([lower], imgK);
      try {
        const seen = await new FsTarget(ov).snapshot();
        // The kernel's own index (work/index, keyed by lower file handles) is not read: the same
        // lower-only hard-link names as in step 4 are left out.
        const theirAliases = await lowerOnlyAliases(imgK, theirs);
        const dropK = (lines: string[]) => lines.filter((l) => !theirAliases.has(l.split('\t')[0]!)).map(maskMtime);
        expect(diffLines(dropK(theirs.lines), dropK(seen.lines))).toBe('');
      } finally {
        await ov.close();
      }
    }, 120_000);
  }
});

const RENAMES: Op[] = [
  { op: 'rename', from: '/a/b', path: '/d/bb' },
  { op: 'rename', from: '/d', path: '/dd' },
  { op: 'unlink', path: '/dd/bb/f2' },
  { op: 'mkdir', path: '/a/b', mode: 0o755 },
  { op: 'rename', from: '/e', path: '/a/b/e' },
];

/** A manifest line without trusted.overlay.* xattrs (fuse-overlayfs hides the escaped ones the kernel shows). */
function withoutOverlayXattrs(line: string): string {
  const f = line.split('\t');
  const x = f[f.length - 1]!;
  if (x !== '-') {
    const kept = x.split(',').filter((p) => !p.startsWith('trusted.overlay.'));
    f[f.length - 1] = kept.length > 0 ? kept.join(',') : '-';
  }
  return f.join('\t');
}

describeIf(isRoot, 'loop mounts need root')('fuse-overlayfs reads what the Overlay wrote with redirect_dir=off (root)', () => {
  for (const seed of [41, 42, 43]) {
    it(`seed ${seed}`, async () => {
      const img = await makeExt3Image(dir, `f${seed}`);
      const features = { ...FULL_CAPABILITIES, devices: false, races: false };
      const ov = await openStack([lower], img, { redirectDir: false });
      const target = new FsTarget(ov);
      // Lower directories renamed first (what redirects would encode), then random ops.
      const first = await runSequence(target, { seed, ops: 0, replay: RENAMES, blockSize: 1024, init: () => undefined, model: await lowerModel(), features });
      expect(first.outcomes.every((o) => o === 'ok'), JSON.stringify(first.outcomes)).toBe(true);
      await runSequence(target, { seed, ops: 30, blockSize: 1024, init: () => undefined, model: first.model, maxOffset: 1 << 20, concurrency: false, features });
      const mine = await target.snapshot();
      await ov.close();
      const aliases = await lowerOnlyAliases(img, mine);
      const l = join(dir, `f${seed}-l`);
      const u = join(dir, `f${seed}-u`);
      const m = join(dir, `f${seed}-m`);
      for (const d of [l, u, m]) mkdirSync(d, { recursive: true });
      mount(['-t', 'squashfs', '-o', 'loop,ro', lower, l]);
      let theirs;
      try {
        mount(['-t', 'ext3', '-o', 'loop', img, u]);
        try {
          execFileSync('fuse-overlayfs', ['-o', `lowerdir=${l},upperdir=${u}/upper,workdir=${u}/work`, m]);
          try {
            const k = new KernelTarget(m);
            try {
              theirs = await k.snapshot();
            } finally {
              await k.close();
            }
          } finally {
            spawnSync('fusermount3', ['-u', m]);
            umount(m);
          }
        } finally {
          umount(u);
        }
      } finally {
        umount(l);
      }
      const norm = (lines: string[]) => lines.filter((x) => !aliases.has(x.split('\t')[0]!)).map((x) => withoutOverlayXattrs(maskMtime(x)));
      expect(diffLines(norm(mine.lines), norm(theirs.lines))).toBe('');
      const r = e2fsck(img);
      expect(r.ok, r.output).toBe(true);
    }, 120_000);
  }
});

