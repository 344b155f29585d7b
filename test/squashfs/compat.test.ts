/**
 * `sifuse manifest` against mksquashfs images of the generated tree
 * (test/tools/make-tree.py), for every compressor and the option sets of
 * issue 3. The expected manifest comes from test/tools/tree_manifest.py on the
 * source tree (independent of the reader); as root, the kernel's loop mount of
 * each image must show the same manifest too, which also proves the fixture is
 * something mksquashfs represents exactly (it does: sockets, fifos, devices,
 * hard links, xattrs incl. security.capability and trusted.*, times 0 and
 * 2^32-1 all survive, checked with the kernel mount).
 *
 * The tree is built once. The multi-GiB sparse file (/big) costs seconds per
 * pass (4 GiB of sha256), so the matrix excludes it (mksquashfs -e big) and one
 * extra gzip image holds just the root and /big.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  expectSameManifest,
  isRoot,
  makeSif,
  makeTempDir,
  makeTree,
  manifestLines,
  mksquashfs,
  removeTempDir,
  runSifuse,
  skipNote,
  treeManifest,
  withLoopMount,
  withoutSubtree,
} from '../tools/helpers.js';
import { itIf } from '../tools/skip.js';

/** 4 GiB + 64 KiB + 17: above 2^32, so sizes and block lists need 64-bit handling. */
const BIG_SIZE = 2 ** 32 + 65536 + 17;

interface Config {
  name: string;
  args: string[];
  /** Why the kernel cannot mount this image (it is then compared with sifuse and the source only). */
  noKernel?: string;
}

const CONFIGS: Config[] = [
  { name: 'gzip defaults', args: [] },
  { name: 'lzo', args: ['-comp', 'lzo'] },
  { name: 'lz4', args: ['-comp', 'lz4'] },
  { name: 'lz4 -Xhc', args: ['-comp', 'lz4', '-Xhc'] },
  { name: 'xz', args: ['-comp', 'xz'] },
  { name: 'xz -Xbcj x86', args: ['-comp', 'xz', '-Xbcj', 'x86'] },
  { name: 'zstd', args: ['-comp', 'zstd'] },
  { name: 'lzma', args: ['-comp', 'lzma'], noKernel: 'Linux squashfs has no legacy lzma decompressor (mount fails)' },
  { name: '-noI -noD -noF -noX', args: ['-noI', '-noD', '-noF', '-noX'] },
  { name: '-no-fragments', args: ['-no-fragments'] },
  { name: '-always-use-fragments', args: ['-always-use-fragments'] },
  { name: '-b 4K', args: ['-b', '4K'] },
  { name: '-b 1M', args: ['-b', '1M'] },
];

let dir: string;
let treeRoot: string;
/** Manifest of the whole source tree, and without /big. */
let expectedFull: Buffer;
let expectedSmall: Buffer;
/** Top-level names of the tree other than big (what the /big-only image excludes). */
let notBig: string[];

beforeAll(async () => {
  dir = makeTempDir('compat');
  treeRoot = join(dir, 'tree');
  const info = await makeTree(treeRoot, { bigSize: BIG_SIZE });
  expect(info.big).toBe('/big/sparse');
  expectedFull = await treeManifest(treeRoot);
  expectedSmall = withoutSubtree(expectedFull, '/big');
  notBig = readdirSync(treeRoot).filter((n) => n !== 'big');
  if (!isRoot) skipNote('kernel loop-mount comparisons', 'they need root');
}, 300_000);

afterAll(async () => {
  await removeTempDir(dir);
});

describe.each(CONFIGS)('mksquashfs $name', (config) => {
  const slug = config.name.replace(/[^a-z0-9]+/gi, '_');
  let image: string;
  let sif: string;
  let expected: Buffer;

  beforeAll(async () => {
    image = join(dir, `${slug}.sqfs`);
    sif = join(dir, `${slug}.sif`);
    expected = expectedSmall;
    await mksquashfs(treeRoot, image, config.args, ['big']);
    await makeSif(image, sif);
  }, 300_000);

  afterAll(() => {
    rmSync(image, { force: true });
    rmSync(sif, { force: true });
  });

  it('sifuse manifest of the .sqfs equals the source tree', async () => {
    const r = await runSifuse(['manifest', image]);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expectSameManifest(r.stdout, expected, `${config.name} .sqfs`);
  }, 300_000);

  it('sifuse manifest of a SIF holding it equals the source tree', async () => {
    const r = await runSifuse(['manifest', sif]);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expectSameManifest(r.stdout, expected, `${config.name} .sif`);
  }, 300_000);

  if (isRoot && config.noKernel) skipNote(`kernel loop mount of the ${config.name} image`, config.noKernel);
  itIf(isRoot && !config.noKernel, isRoot ? (config.noKernel ?? '') : 'loop mounts need root')(
    'the kernel loop mount shows the same manifest',
    async () => {
      const mounted = await withLoopMount(image, 'squashfs', dir, (mnt) => treeManifest(mnt));
      expectSameManifest(mounted, expected, `${config.name} kernel mount`);
    },
    300_000,
  );

  if (config.name === 'gzip defaults') {
    it('sifuse manifest IMAGE PATH describes just that subtree', async () => {
      for (const sub of ['/names', '/deep/level-01/level-02', '/hardlinks/sub']) {
        const r = await runSifuse(['manifest', image, sub]);
        expect(r.exitCode).toBe(0);
        expectSameManifest(r.stdout, await treeManifest(treeRoot, { path: sub }), `${config.name} ${sub}`);
      }
    }, 300_000);
  }
});

describe('a 4 GiB + 64 KiB sparse file (gzip)', () => {
  let image: string;
  let expected: Buffer;

  beforeAll(async () => {
    image = join(dir, 'big.sqfs');
    await mksquashfs(treeRoot, image, [], notBig);
    const big = Buffer.from('/big');
    const keep = manifestLines(expectedFull).filter((line) => {
      const path = line.subarray(0, line.indexOf(0x09));
      return path.equals(Buffer.from('/')) || path.equals(big) || path.subarray(0, 5).equals(Buffer.from('/big/'));
    });
    expect(keep.length).toBe(3);
    expected = Buffer.concat(keep.flatMap((l) => [l, Buffer.from('\n')]));
  }, 300_000);

  afterAll(() => rmSync(image, { force: true }));

  it('sifuse manifest equals the source tree (size above 2^32, holes, data across the 4 GiB mark)', async () => {
    const r = await runSifuse(['manifest', image]);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expectSameManifest(r.stdout, expected, 'big sparse file');
  }, 300_000);

  itIf(isRoot, 'loop mounts need root')(
    'the kernel loop mount shows the same manifest',
    async () => {
      const mounted = await withLoopMount(image, 'squashfs', dir, (mnt) => treeManifest(mnt));
      expectSameManifest(mounted, expected, 'big sparse file, kernel mount');
    },
    300_000,
  );
});
