/**
 * A real root filesystem (Debian bookworm, debootstrap --variant=minbase, made
 * and cached by scripts/make-rootfs.sh) packed with mksquashfs into a SIF:
 * `sifuse manifest` of the SIF equals tree_manifest.py of the unpacked tree
 * and, as root, of the kernel's loop mount of the SquashFS image.
 *
 * debootstrap needs root; the first run also needs the Debian mirror. Without
 * either the tests skip and print why (never a CI failure for network reasons).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { join } from 'node:path';
import {
  expectSameManifest,
  isRoot,
  makeSif,
  makeTempDir,
  mksquashfs,
  removeTempDir,
  repoRoot,
  runSifuse,
  skipNote,
  treeManifest,
  withLoopMount,
} from '../tools/helpers.js';
import { itIf, skipBecause } from '../tools/skip.js';

let dir: string | undefined;
let rootfs: string;
let image: string;
let sif: string;
let expected: Buffer;
/** Why the rootfs could not be made (null: it was). */
let unavailable: string | null = null;

beforeAll(async () => {
  if (!isRoot) {
    unavailable = 'debootstrap needs root';
    skipNote('debootstrap minbase rootfs tests', unavailable);
    return;
  }
  dir = makeTempDir('rootfs');
  rootfs = join(dir, 'rootfs');
  image = join(dir, 'root.sqfs');
  sif = join(dir, 'root.sif');
  const made = await execa(join(repoRoot, 'scripts', 'make-rootfs.sh'), [rootfs], { reject: false, all: true });
  if (made.exitCode === 3) {
    unavailable = `the Debian mirror is unreachable (${String(made.all).trim().split('\n').pop()})`;
    skipNote('debootstrap minbase rootfs tests', unavailable);
    return;
  }
  if (made.exitCode !== 0) throw new Error(`scripts/make-rootfs.sh failed:\n${String(made.all)}`);
  expected = await treeManifest(rootfs);
  // gzip (Apptainer's default) at level 1: the compressor matrix is compat.test.ts's job, this is about a real tree.
  await mksquashfs(rootfs, image, ['-comp', 'gzip', '-Xcompression-level', '1']);
  await makeSif(image, sif);
}, 600_000);

afterAll(async () => {
  await removeTempDir(dir);
});

describe('debootstrap minbase bookworm in a SIF', () => {
  it('sifuse manifest of the SIF equals the unpacked rootfs', async (ctx) => {
    if (unavailable) {
      skipBecause(ctx, unavailable);
    }
    // A real rootfs has thousands of entries; a broken walk would show up as missing lines.
    expect(expected.length).toBeGreaterThan(100_000);
    const r = await runSifuse(['manifest', sif]);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expectSameManifest(r.stdout, expected, 'rootfs SIF');
  }, 300_000);

  it('sifuse manifest of a subdirectory equals that part of the rootfs', async (ctx) => {
    if (unavailable) {
      skipBecause(ctx, unavailable);
    }
    const r = await runSifuse(['manifest', sif, '/usr/bin']);
    expect(r.exitCode).toBe(0);
    expectSameManifest(r.stdout, await treeManifest(rootfs, { path: '/usr/bin' }), 'rootfs SIF /usr/bin');
  }, 300_000);

  itIf(isRoot, 'loop mounts need root')(
    'the kernel loop mount of the image shows the same manifest',
    async (ctx) => {
      if (unavailable) {
        skipBecause(ctx, unavailable);
      }
      const mounted = await withLoopMount(image, 'squashfs', dir!, (mnt) => treeManifest(mnt));
      expectSameManifest(mounted, expected, 'rootfs kernel mount');
    },
    300_000,
  );
});
