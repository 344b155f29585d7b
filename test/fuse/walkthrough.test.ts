/**
 * reference/persistent-overlays.rst, as an unprivileged user made for the
 * test (useradd) writing with --fakeroot (the image is root's, as with
 * Apptainer's `--fakeroot`), through `sifuse mount` on a SIF (the debootstrap minbase
 * SIF of the bench cache when present, else one built from a small tree):
 *   - an ext3 overlay image: mkdir, write and install files, unmount,
 *     remount: all there; mounted without the overlay: gone; e2fsck clean;
 *     (root) the kernel's overlayfs over the same SIF and image shows the
 *     same merged view;
 *   - a directory overlay (kept in DIR/upper; as root, see below);
 *   - --writable on an ext3 overlay partition inside the SIF (sif add), which
 *     is a read-only lower when mounted without --writable;
 *   - --writable-tmpfs: capped, and discarded at unmount.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import {
  expectSameManifest, isRoot, makeSif, makeTempDir, mksquashfs, removeTempDir, sifuseBin, skipNote, treeManifest,
} from '../tools/helpers.js';
import { SifImage } from '../../src/sif/index.js';
import { skipBecause } from '../tools/skip.js';
import { cleanup, fuseAvailable, isMounted, logTail, sh } from './helpers.js';

const USER = 'sifusetest';
const cachedSif = join(process.env.SIFUSE_CACHE || '/var/tmp/sifuse-cache', 'bench-bookworm-minbase.sif');
let why = fuseAvailable() ?? (isRoot ? null : 'needs root to create the test user');
let dir: string;
let home: string;
let uid = 0;
let gid = 0;

/** Runs a script as the test user in its directory; throws with stderr and the daemon log on failure. */
/** `user` null: as root. */
async function as(script: string, user: string | null = USER): Promise<string> {
  const r = await sh(script, { user: user ?? undefined, cwd: home });
  if (r.exitCode !== 0) {
    if (isMounted(join(home, 'mnt'))) await execa('fusermount3', ['-uz', join(home, 'mnt')], { reject: false });
    throw new Error(`${script}\nexit ${r.exitCode}: ${r.stderr}\n${logTail(join(home, 'log'))}`);
  }
  return r.stdout;
}

const S = sifuseBin;

beforeAll(async () => {
  dir = makeTempDir('fuse-walk');
  if (why) return;
  chmodSync(dir, 0o755);
  if ((await execa('id', [USER], { reject: false })).exitCode !== 0) await execa('useradd', ['-M', '-s', '/bin/sh', USER]);
  chmodSync('/dev/fuse', 0o666);
  uid = Number((await execa('id', ['-u', USER])).stdout);
  gid = Number((await execa('id', ['-g', USER])).stdout);
  home = join(dir, 'home');
  mkdirSync(join(home, 'mnt'), { recursive: true });
  const sif = join(home, 'base.sif');
  if (existsSync(cachedSif)) {
    copyFileSync(cachedSif, sif);
  } else {
    skipNote('debootstrap minbase SIF', `${cachedSif} is missing (npm run bench -- manifest builds it); using a small tree`);
    const tree = join(dir, 'tree');
    mkdirSync(join(tree, 'usr', 'local', 'bin'), { recursive: true });
    mkdirSync(join(tree, 'etc'));
    writeFileSync(join(tree, 'etc', 'os-release'), 'ID=test\n');
    await mksquashfs(tree, join(dir, 'tree.sqfs'), ['-all-root']);
    await makeSif(join(dir, 'tree.sqfs'), sif);
  }
  for (const p of [home, join(home, 'mnt'), sif]) chownSync(p, uid, gid);
}, 300_000);

afterAll(async () => {
  await cleanup();
  if (home && isMounted(join(home, 'mnt'))) await execa('fusermount3', ['-uz', join(home, 'mnt')], { reject: false });
  await removeTempDir(dir);
});

const INSTALL = `
  mkdir -p mnt/opt/app/data
  echo persistent > mnt/opt/app/data/file
  printf '#!/bin/sh\\necho hello from the overlay\\n' > hello.sh
  install -m 755 hello.sh mnt/opt/app/hello
  ln -s hello mnt/opt/app/hi`;
const CHECK = `cat mnt/opt/app/data/file && mnt/opt/app/hi && stat -c '%a %u' mnt/opt/app/hello`;

describe('the persistent-overlays walkthrough, as an unprivileged user', () => {
  it('an ext3 overlay image persists across mounts, is gone without it, and fscks clean', async (ctx) => {
    if (why) skipBecause(ctx, why);
    await as(`${S} overlay create --size 256 ov.img`);
    await as(`${S} mount --log log --fakeroot --overlay ov.img base.sif mnt && ${INSTALL} && ${S} umount mnt`);
    expect(await as(`${S} mount --log log --fakeroot --overlay ov.img base.sif mnt && ${CHECK}; ${S} umount mnt`)).toBe(
      `persistent\nhello from the overlay\n755 ${uid}`,
    );
    expect(await as(`${S} mount --log log base.sif mnt && (test -e mnt/opt/app && echo there || echo gone); ${S} umount mnt`))
      .toBe('gone');
    const fsck = await execa('e2fsck', ['-fn', join(home, 'ov.img')], { reject: false });
    expect(fsck.exitCode, fsck.stdout).toBe(0);

    // (root) The kernel's overlayfs over the same SIF partition and image shows the same tree.
    const k = join(dir, 'kernel');
    for (const d of ['lower', 'ovimg', 'merged']) mkdirSync(join(k, d), { recursive: true });
    const sif = await SifImage.open(join(home, 'base.sif'));
    const part = sif.primaryPartition()!;
    await sif.close();
    await execa('mount', ['-t', 'squashfs', '-o', `loop,ro,offset=${part.offset},sizelimit=${part.size}`,
      join(home, 'base.sif'), join(k, 'lower')]);
    try {
      await execa('mount', ['-t', 'ext3', '-o', 'loop,ro', join(home, 'ov.img'), join(k, 'ovimg')]);
      try {
        await execa('mount', ['-t', 'overlay', 'overlay', '-o',
          `ro,lowerdir=${k}/ovimg/upper:${k}/lower`, join(k, 'merged')]);
        try {
          // Mounted by root this time: root cannot enter the user's mount (no allow_other).
          const rootMnt = join(k, 'sifuse');
          mkdirSync(rootMnt);
          await as(`${S} mount --log log --overlay ov.img:ro base.sif ${rootMnt}`, null);
          try {
            // trusted.sifuse.* is the Overlay's own bookkeeping in the upper: the kernel shows it, sifuse does not.
            const opts = { excludeXattr: ['trusted.overlay.', 'trusted.sifuse.', 'security.selinux'] };
            expectSameManifest(await treeManifest(rootMnt, opts), await treeManifest(join(k, 'merged'), opts),
              'sifuse vs kernel overlayfs');
          } finally {
            await as(`${S} umount ${rootMnt}`, null);
          }
        } finally {
          await execa('umount', [join(k, 'merged')]);
        }
      } finally {
        await execa('umount', [join(k, 'ovimg')]);
      }
    } finally {
      await execa('umount', [join(k, 'lower')]);
    }
  }, 600_000);

  // As root: a host directory cannot hold the root-owned copies of the image's
  // directories for an unprivileged user (the DirLayer stores real owners).
  it('a directory overlay persists in DIR/upper (as root)', async (ctx) => {
    if (why) skipBecause(ctx, why);
    await as('mkdir -p my_overlay', null);
    await as(`${S} mount --log log --overlay my_overlay/ base.sif mnt && ${INSTALL} && ${S} umount mnt`, null);
    expect(await as('cat my_overlay/upper/opt/app/data/file', null)).toBe('persistent');
    expect(await as(`${S} mount --log log --overlay my_overlay base.sif mnt && ${CHECK}; ${S} umount mnt`, null)).toBe(
      'persistent\nhello from the overlay\n755 0',
    );
    expect(await as(`${S} mount --log log base.sif mnt && (test -e mnt/opt/app && echo there || echo gone); ${S} umount mnt`, null))
      .toBe('gone');
  }, 300_000);

  it('--writable writes into the overlay partition added to the SIF; without it the partition is a read-only lower', async (ctx) => {
    if (why) skipBecause(ctx, why);
    await as(`cp base.sif part.sif && ${S} overlay create --size 128 part.img && ` +
      `${S} sif add --datatype 4 --partfs 2 --parttype 4 --partarch 2 --groupid 1 part.sif part.img`);
    await as(`${S} mount --log log --fakeroot --writable part.sif mnt && ${INSTALL} && ${S} umount mnt`);
    expect(await as(`${S} mount --log log --fakeroot --writable part.sif mnt && ${CHECK}; ${S} umount mnt`)).toBe(
      `persistent\nhello from the overlay\n755 ${uid}`,
    );
    const ro = await sh(`${S} mount --log log part.sif mnt && cat mnt/opt/app/data/file && ` +
      `(echo x > mnt/opt/app/new 2>/dev/null && echo wrote || echo refused); ${S} umount mnt`, { user: USER, cwd: home });
    expect(ro.stdout).toBe('persistent\nrefused');
    const noPart = await sh(`${S} mount --writable base.sif mnt`, { user: USER, cwd: home });
    expect(noPart.exitCode).not.toBe(0);
    expect(noPart.stderr).toMatch(/no SIF writable overlay partition found/);
  }, 300_000);

  it('--writable-tmpfs is capped and discarded at unmount', async (ctx) => {
    if (why) skipBecause(ctx, why);
    const out = await as(`${S} mount --log log --fakeroot --writable-tmpfs=8 base.sif mnt && mkdir mnt/tmpdir && echo t > mnt/tmpdir/f && ` +
      `cat mnt/tmpdir/f && (head -c 16M /dev/zero > mnt/tmpdir/big 2>err && echo fit || grep -c 'No space left' err); ` +
      `${S} umount mnt`);
    expect(out).toBe('t\n1');
    expect(await as(`${S} mount --log log --writable-tmpfs base.sif mnt && (test -e mnt/tmpdir && echo there || echo gone); ` +
      `${S} umount mnt`)).toBe('gone');
  }, 300_000);
});
