/**
 * `mkfs.ext3 -d SRC` images read by the engine: the engine's manifest of the
 * image equals tree_manifest.py of SRC (an independent script), at 1, 2 and
 * 4 KiB blocks with 128- and 256-byte inodes, also after `e2fsck -fD` turned
 * the large directory into an htree; and, as root, equals the kernel's view
 * of the same image exactly (mtimes included).
 *
 * What mkfs.ext3 -d cannot represent, and so is left out of the comparison:
 * - the root's UID, GID (mke2fs makes the root directory 0:0 whoever runs it;
 *   -d does not copy the source root's owner) and MTIME (the time of the run),
 *   and the MTIME of entries whose
 *   source mtime is past 2^31-1 (mke2fs 1.47 writes the low 32 bits without
 *   the epoch bits; the kernel then shows a negative time, and so must we:
 *   the engine-versus-kernel comparison keeps them);
 * - on blocks smaller than 4 KiB, /symlinks/max-ish (a 4000-byte target: ext3
 *   keeps a symlink in one block) and the 3000-byte user.large of
 *   /xattrs/large (ext3 keeps all of an inode's out-of-inode xattrs in one
 *   block); on 1 KiB blocks also 20 of the 30 xattrs of /xattrs/many, for the
 *   same reason. mkfs refuses them, so they are removed from SRC before the
 *   smaller-block images are made (times restored).
 * As root, the kernel's view of each image is first compared with SRC under
 * the same rules, which proves the fixture and the rules themselves.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { lstatSync, unlinkSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import {
  isRoot,
  makeTempDir,
  makeTree,
  removeTempDir,
  runSifuse,
  skipNote,
  treeManifest,
  withLoopMount,
} from '../tools/helpers.js';
import { engineManifestLines as engineLines } from '../tools/ext3-engine.js';
import { diffLines } from '../conformance/manifest.js';
import { fsck, mkfsExt3 } from './image-tools.js';
import { itIf } from '../tools/skip.js';

if (!isRoot) skipNote('mkfs-d kernel comparisons', 'loop mounts need root');

const MAX_SIGNED_32 = 2 ** 31 - 1;

/** MTIME masked where mkfs -d cannot carry it (see the file comment). */
function normalise(lines: string[]): string[] {
  return lines.map((line) => {
    const f = line.split('\t');
    const t = Number(f[6]);
    if (f[0] === '/') f[3] = f[4] = '*';
    if (f[0] === '/' || !(t >= 0 && t <= MAX_SIGNED_32)) f[6] = '*';
    return f.join('\t');
  });
}

const split = (b: Buffer) =>
  b
    .toString('latin1')
    .split('\n')
    .filter((l) => l.length > 0);

interface Img {
  label: string;
  path: string;
  source: string[];
}

const GEOMETRIES = [
  { blockSize: 4096, inodeSize: 256 },
  { blockSize: 4096, inodeSize: 128 },
  { blockSize: 2048, inodeSize: 256 },
  { blockSize: 1024, inodeSize: 256 },
  { blockSize: 1024, inodeSize: 128 },
] as const;

let dir: string;
const images: Img[] = [];

beforeAll(async () => {
  dir = makeTempDir('e3-mkfsd');
  const src = join(dir, 'src');
  await makeTree(src, { many: 3000, depth: 50 });
  let source = split(await treeManifest(src));
  for (const g of GEOMETRIES) {
    if (g.blockSize < 4096 && source.some((l) => l.startsWith('/symlinks/max-ish\t'))) {
      const parent = join(src, 'symlinks');
      const st = lstatSync(parent);
      unlinkSync(join(parent, 'max-ish'));
      utimesSync(parent, st.atime, st.mtime);
      await execa('setfattr', ['-x', 'user.large', join(src, 'xattrs', 'large')]);
      source = split(await treeManifest(src));
    }
    if (g.blockSize < 2048 && source.some((l) => l.startsWith('/xattrs/many\t') && l.includes('user.k29='))) {
      for (let k = 10; k < 30; k++) await execa('setfattr', ['-x', `user.k${k}`, join(src, 'xattrs', 'many')]);
      source = split(await treeManifest(src));
    }
    const path = join(dir, `mkfs-${g.blockSize}-${g.inodeSize}.img`);
    await mkfsExt3(path, { ...g, sizeKiB: 160 * 1024, source: src });
    images.push({ label: `${g.blockSize}-byte blocks, ${g.inodeSize}-byte inodes`, path, source });
    if (g.inodeSize === 256) {
      // The same image with its directories indexed (htree) by e2fsck -fD.
      const indexed = join(dir, `mkfs-${g.blockSize}-${g.inodeSize}-htree.img`);
      await execa('cp', ['--sparse=always', path, indexed]);
      const r = await execa('e2fsck', ['-fyD', indexed], { reject: false });
      if (r.exitCode !== 0 && r.exitCode !== 1) throw new Error(`e2fsck -fyD ${indexed}: exit ${r.exitCode}\n${r.stdout}`);
      images.push({ label: `${g.blockSize}-byte blocks, ${g.inodeSize}-byte inodes, htree (e2fsck -fD)`, path: indexed, source });
    }
  }
}, 300_000);

afterAll(() => removeTempDir(dir));

const kernelSeen = new Map<string, string[]>();

/** The kernel's view of an image, computed once per image (the images are never written). */
async function kernelLines(image: string): Promise<string[]> {
  let lines = kernelSeen.get(image);
  if (!lines) {
    lines = await withLoopMount(image, 'ext3', dir, async (mnt) => split(await treeManifest(mnt, { exclude: ['/lost+found'] })));
    kernelSeen.set(image, lines);
  }
  return lines;
}

describe('mkfs.ext3 -d images', () => {
  it('are clean for e2fsck and their large directory is indexed after e2fsck -fD', async () => {
    expect(images.length).toBe(8);
    for (const img of images) {
      const c = await fsck(img.path);
      expect(c.clean, `${img.label}\n${c.output}`).toBe(true);
    }
    const indexed = images.find((i) => i.label.includes('htree'))!;
    const d = await execa('debugfs', ['-R', 'stat /many', indexed.path], { reject: false });
    expect(d.stdout).toMatch(/Flags: 0x0*1000\b/);
  });

  itIf(isRoot, 'loop mounts need root')(
    'kernel view equals the source tree under the stated rules (proves fixture and rules)',
    async () => {
      for (const img of images) {
        const d = diffLines(normalise(img.source), normalise(await kernelLines(img.path)));
        expect(d, img.label).toBe('');
      }
    },
  );

  it('engine manifest equals the source tree manifest', async () => {
    for (const img of images) {
      const d = diffLines(normalise(img.source), normalise(await engineLines(img.path)));
      expect(d, img.label).toBe('');
    }
  });

  it('`bin/sifuse manifest IMG` prints the source tree manifest (two geometries)', async () => {
    for (const img of images.filter((i) => /^(4096-byte blocks, 256|1024-byte blocks, 128)-byte inodes$/.test(i.label))) {
      const r = await runSifuse(['manifest', img.path]);
      expect(r.exitCode, r.stderr).toBe(0);
      const lines = split(r.stdout).filter((l) => !l.startsWith('/lost+found\t') && !l.startsWith('/lost+found/'));
      const d = diffLines(normalise(img.source), normalise(lines));
      expect(d, img.label).toBe('');
    }
  });

  itIf(isRoot, 'loop mounts need root')('engine manifest equals the kernel view exactly, mtimes included', async () => {
    for (const img of images) {
      const d = diffLines(await kernelLines(img.path), await engineLines(img.path));
      expect(d, img.label).toBe('');
    }
  });
});
