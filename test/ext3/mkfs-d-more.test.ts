/**
 * More images the engine must read exactly, beyond mkfs.ext3 -d of the
 * generic fixture:
 * - a sparse file over 4 GiB on 1 KiB blocks (mkfs.ext3 -d): data reached
 *   through triple-indirect blocks, holes everywhere else;
 * - (root) an image the kernel populated on a loop mount, 128-byte inodes so
 *   every xattr lives in a block: an htree directory of 3000 entries, files
 *   with identical xattrs sharing one refcounted xattr block, POSIX ACLs
 *   (setfacl: access and default), fast and slow symlinks, hard links, a
 *   whiteout (char 0/0), a fifo, a sparse file, an opaque directory; then the
 *   engine changes one file of the shared xattr block (copy on write) and the
 *   kernel still sees the others unchanged, e2fsck clean;
 * - (root) the same content written through fuse2fs.
 * In each case the engine's manifest equals tree_manifest.py of a kernel or
 * fuse2fs mount of the image (or of the mkfs source), mtimes included except
 * where noted.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import {
  closeSync,
  mkdirSync,
  openSync,
  symlinkSync,
  linkSync,
  writeFileSync,
  writeSync,
  ftruncateSync,
  utimesSync,
} from 'node:fs';
import { join } from 'node:path';
import { hasTool, isRoot, makeTempDir, removeTempDir, skipNote, treeManifest } from '../tools/helpers.js';
import { engineManifestLines as engineLines, openImageFile } from '../tools/ext3-engine.js';
import { diffLines, walkManifest } from '../conformance/manifest.js';
import { fsck, loopMount, mkfsExt3, unmount } from './image-tools.js';
import { itIf } from '../tools/skip.js';

if (!isRoot) skipNote('kernel- and fuse2fs-populated images', 'loop and FUSE mounts need root');
const haveFuse2fs = await hasTool('fuse2fs');
if (!haveFuse2fs) skipNote('fuse2fs-populated image', 'fuse2fs is not installed (scripts/install-system-deps.sh installs it)');

let dir: string;
beforeAll(() => {
  dir = makeTempDir('e3-more');
});
afterAll(() => removeTempDir(dir));

const split = (b: Buffer) =>
  b
    .toString('latin1')
    .split('\n')
    .filter((l) => l.length > 0);
const GiB = 1024 ** 3;
const BIG = 4 * GiB + 4096 * 3;

async function kernelLines(image: string): Promise<string[]> {
  const mnt = join(dir, 'view');
  await loopMount(image, mnt);
  try {
    return split(await treeManifest(mnt, { exclude: ['/lost+found'] }));
  } finally {
    await unmount(mnt);
  }
}

async function debugfs(image: string, request: string): Promise<string> {
  return (await execa('debugfs', ['-R', request, image], { reject: false })).stdout;
}

/** What a kernel or fuse2fs mount gets written into it (names are the checks' anchors). */
async function populate(mnt: string, entries: number): Promise<void> {
  mkdirSync(join(mnt, 'htree'));
  for (let i = 0; i < entries; i++)
    writeFileSync(join(mnt, 'htree', `entry-${String(i).padStart(5, '0')}-with-a-longer-name`), `${i}\n`);
  for (let i = 1; i <= 4; i++) {
    const p = join(mnt, `shared-${i}`);
    writeFileSync(p, `shared ${i}\n`);
    await execa('setfattr', ['-n', 'user.shared', '-v', 'one value for every file', p]);
    await execa('setfattr', ['-n', 'user.other', '-v', '0x00ff00ff', p]);
  }
  writeFileSync(join(mnt, 'acl-file'), 'acl\n');
  await execa('setfacl', ['-m', 'u:1000:rwx,g:100:r-x', join(mnt, 'acl-file')]);
  mkdirSync(join(mnt, 'acl-dir'));
  await execa('setfacl', ['-m', 'u:1000:rwx', '-d', '-m', 'u:1001:r-x,g::rwx', join(mnt, 'acl-dir')]);
  symlinkSync('short-target', join(mnt, 'fast'));
  symlinkSync('s'.repeat(200), join(mnt, 'slow'));
  writeFileSync(join(mnt, 'hard-1'), 'linked\n');
  linkSync(join(mnt, 'hard-1'), join(mnt, 'hard-2'));
  await execa('mknod', [join(mnt, 'whiteout'), 'c', '0', '0']);
  await execa('mkfifo', [join(mnt, 'fifo')]);
  const fd = openSync(join(mnt, 'sparse'), 'w');
  writeSync(fd, Buffer.from('start'), 0, 5, 0);
  writeSync(fd, Buffer.from('middle'), 0, 6, 3 << 20);
  ftruncateSync(fd, 5 << 20);
  closeSync(fd);
  mkdirSync(join(mnt, 'opaque'));
  await execa('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', join(mnt, 'opaque')]);
  utimesSync(join(mnt, 'hard-1'), 1_000_000, 2_000_000);
}

describe('special images read by the engine', () => {
  it('a sparse file over 4 GiB on 1 KiB blocks (triple indirect), mkfs.ext3 -d', async () => {
    const src = join(dir, 'big-src');
    mkdirSync(src);
    writeFileSync(join(src, 'small'), 'beside the big one\n');
    const fd = openSync(join(src, 'big'), 'w');
    // 12 direct + 256 single + 65536 double-indirect 1 KiB blocks end at 64.26 MiB: 65 MiB is triple indirect.
    const pieces = [
      [0, 'at zero'],
      [65 << 20, 'triple indirect'],
      [GiB, 'after 1 GiB'],
      [4 * GiB - 3, 'across 4 GiB'],
      [BIG - 4, 'end!'],
    ] as const;
    for (const [pos, text] of pieces) writeSync(fd, Buffer.from(text), 0, text.length, pos);
    ftruncateSync(fd, BIG);
    closeSync(fd);
    for (const p of ['big', 'small', '']) utimesSync(join(src, p), 1_500_000_000, 1_500_000_000);
    const image = join(dir, 'big.img');
    await mkfsExt3(image, { blockSize: 1024, inodeSize: 256, sizeKiB: 64 * 1024, source: src });
    expect(await debugfs(image, 'stat /big')).toMatch(/\(TIND\)/);
    // mkfs -d stamps the root with the time of the run, and makes it 0:0 whoever runs it.
    const noRootTime = (ls: string[]) =>
      ls.map((l) =>
        l.startsWith('/\t')
          ? l
              .split('\t')
              .map((f, i) => ([3, 4, 6].includes(i) ? '*' : f))
              .join('\t')
          : l,
      );
    // Hashing 4 GiB costs ~10 s per side on these machines: the full sha256 comparison of /big runs in
    // long runs (SIFUSE_PROPERTY_RUNS >= 2); by default its data and holes are checked by reads below.
    const full = Number(process.env.SIFUSE_PROPERTY_RUNS ?? '1') >= 2;
    const exclude = full ? [] : ['/big'];
    const want = split(await treeManifest(src, { exclude }));
    const fs = await openImageFile(image, false);
    try {
      const got = (await walkManifest(fs, { exclude: ['/lost+found', ...exclude] })).map((e) => e.line);
      expect(diffLines(noRootTime(want), noRootTime(got))).toBe('');
      const id = await fs.lookup(fs.rootId, Buffer.from('big'));
      expect(id).not.toBeNull();
      const st = await fs.getattr(id!);
      expect([st.size, st.mode, st.mtime]).toEqual([BIG, 0o100644, 1_500_000_000]);
      for (const [pos, text] of pieces) {
        // Each piece with a little hole on both sides.
        const from = Math.max(0, pos - 16);
        const got = await fs.read(id!, from, text.length + 32);
        const expected = Buffer.alloc(Math.min(text.length + 32, BIG - from));
        expected.write(text, pos - from);
        expect(got.equals(expected), `bytes around ${pos}`).toBe(true);
      }
      let seed = 12345;
      for (let i = 0; i < 200; i++) {
        seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
        const pos = Math.floor((seed / 2 ** 32) * (BIG - 4096));
        if (pieces.some(([p, t]) => pos < p + t.length && p < pos + 4096)) continue;
        const hole = await fs.read(id!, pos, 4096);
        expect(hole.length).toBe(4096);
        expect(
          hole.every((b) => b === 0),
          `hole at ${pos}`,
        ).toBe(true);
      }
      expect((await fs.read(id!, BIG - 2, 100)).toString()).toBe('d!');
    } finally {
      await fs.close();
    }
  });

  itIf(isRoot, 'loop mounts need root')(
    'kernel-populated image (root): htree, shared xattr blocks, ACLs, symlinks; engine copy-on-write of a shared block',
    async () => {
      const image = join(dir, 'kernel.img');
      await mkfsExt3(image, { blockSize: 1024, inodeSize: 128, sizeKiB: 32 * 1024 });
      const mnt = join(dir, 'kmnt');
      await loopMount(image, mnt);
      try {
        await populate(mnt, 3000);
      } finally {
        await unmount(mnt);
      }
      expect(await debugfs(image, 'stat /htree')).toMatch(/Flags: 0x0*1000\b/);
      const acl1 = /File ACL: (\d+)/.exec(await debugfs(image, 'stat /shared-1'))?.[1];
      const acl2 = /File ACL: (\d+)/.exec(await debugfs(image, 'stat /shared-2'))?.[1];
      expect(acl1 && acl1 !== '0').toBeTruthy();
      expect(acl2).toBe(acl1);
      const before = await kernelLines(image);
      expect(before.some((l) => l.startsWith('/acl-file\t') && l.includes('system.posix_acl_access='))).toBe(true);
      expect(diffLines(before, await engineLines(image))).toBe('');

      // Copy on write: changing one sharer leaves the others' block alone.
      const fs = await openImageFile(image, true);
      try {
        const id = await fs.lookup(fs.rootId, Buffer.from('shared-1'));
        expect(id).not.toBeNull();
        await fs.setxattr(id!, Buffer.from('user.shared'), Buffer.from('changed'));
      } finally {
        await fs.close();
      }
      const check = await fsck(image);
      expect(check.clean, check.output).toBe(true);
      const after = await kernelLines(image);
      expect(diffLines(after, await engineLines(image))).toBe('');
      const line = (ls: string[], p: string) => ls.find((l) => l.startsWith(`${p}\t`));
      expect(line(after, '/shared-1')).toContain(`user.shared=${Buffer.from('changed').toString('base64')}`);
      for (const p of ['/shared-2', '/shared-3', '/shared-4']) expect(line(after, p)).toBe(line(before, p));
    },
  );

  itIf(
    isRoot && haveFuse2fs,
    isRoot ? 'fuse2fs is not installed (scripts/install-system-deps.sh installs it)' : 'FUSE mounts need root',
  )('fuse2fs-populated image (root)', async () => {
    const image = join(dir, 'fuse2fs.img');
    await mkfsExt3(image, { blockSize: 4096, inodeSize: 256, sizeKiB: 32 * 1024 });
    const mnt = join(dir, 'fmnt');
    mkdirSync(mnt, { recursive: true });
    await execa('fuse2fs', [image, mnt, '-o', 'rw']);
    let seen: string[];
    try {
      // Fewer entries than on the kernel: every one is a FUSE round trip through fuse2fs.
      await populate(mnt, 600);
      seen = split(await treeManifest(mnt, { exclude: ['/lost+found'] }));
    } finally {
      await execa('fusermount', ['-u', mnt]);
    }
    const check = await fsck(image);
    expect(check.clean, check.output).toBe(true);
    expect(diffLines(seen, await engineLines(image))).toBe('');
    expect(diffLines(await kernelLines(image), await engineLines(image))).toBe('');
  });
});
