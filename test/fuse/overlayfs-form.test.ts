/**
 * The fuse-overlayfs form: `sifuse mount -o lowerdir=L1:L2,upperdir=U,workdir=W MNT`
 * over host directories (and a SquashFS image as a lower), the merged view
 * equal to the kernel's overlayfs over the same directories (root), writes
 * landing in U, and the mount(8) helper (bin/mount.fuse.sifuse) taking
 * mount's argument order. Options sifuse does not implement are refused by
 * name (read.test.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import {
  expectSameManifest, isRoot, makeTempDir, mksquashfs, removeTempDir, repoRoot, skipNote, treeManifest,
} from '../tools/helpers.js';
import { skipBecause } from '../tools/skip.js';
import { cleanup, fuseAvailable, isMounted, logTail, mount, umount } from './helpers.js';

const why = fuseAvailable();
let dir: string;

function layout(root: string): void {
  for (const d of ['l1/shared', 'l2/shared', 'l2/only2', 'upper', 'work', 'mnt']) mkdirSync(join(root, d), { recursive: true });
  writeFileSync(join(root, 'l1/shared/top'), 'from l1\n');
  writeFileSync(join(root, 'l2/shared/top'), 'from l2\n');
  writeFileSync(join(root, 'l2/shared/below'), 'only in l2\n');
  writeFileSync(join(root, 'l2/only2/f'), 'f\n');
}

beforeAll(() => {
  dir = makeTempDir('fuse-ovfs');
});

afterAll(async () => {
  await cleanup();
  await removeTempDir(dir);
});

describe('sifuse mount -o lowerdir=...,upperdir=...,workdir=...', () => {
  it('merges host directories top first, writes into upperdir, and matches the kernel overlayfs view', async (ctx) => {
    if (why) skipBecause(ctx, why);
    const r = join(dir, 'a');
    layout(r);
    const mnt = join(r, 'mnt');
    const log = join(r, 'log');
    await mount(['-o', `lowerdir=${r}/l1:${r}/l2,upperdir=${r}/upper,workdir=${r}/work`, mnt], log);
    try {
      expect(readFileSync(join(mnt, 'shared/top'), 'utf8')).toBe('from l1\n');
      expect(readFileSync(join(mnt, 'shared/below'), 'utf8')).toBe('only in l2\n');
      const w = await execa('sh', ['-ec', `cd ${mnt} && echo new > shared/new && rm only2/f && echo changed > shared/top`], {
        reject: false,
      });
      expect(w.exitCode, w.stderr + logTail(log)).toBe(0);
    } finally {
      expect((await umount(mnt)).exitCode).toBe(0);
    }
    expect(readFileSync(join(r, 'upper/shared/new'), 'utf8')).toBe('new\n');
    expect(readFileSync(join(r, 'upper/shared/top'), 'utf8')).toBe('changed\n');
    expect(readFileSync(join(r, 'l1/shared/top'), 'utf8')).toBe('from l1\n');
    if (!isRoot) return skipNote('kernel overlayfs comparison', 'needs root');
    const k = join(r, 'kmnt');
    mkdirSync(k);
    await mount(['-o', `lowerdir=${r}/l1:${r}/l2,upperdir=${r}/upper,workdir=${r}/work`, mnt], log);
    try {
      const ours = await treeManifest(mnt, { excludeXattr: ['trusted.', 'user.fuseoverlayfs.'] });
      await umount(mnt);
      await execa('mount', ['-t', 'overlay', 'overlay', '-o', `ro,lowerdir=${r}/upper:${r}/l1:${r}/l2`, k]);
      try {
        const theirs = await treeManifest(k, { excludeXattr: ['trusted.', 'user.fuseoverlayfs.'] });
        expectSameManifest(ours, theirs, 'sifuse vs kernel overlayfs');
      } finally {
        await execa('umount', [k]);
      }
    } finally {
      if (isMounted(mnt)) await umount(mnt);
    }
  }, 300_000);

  it('takes a SquashFS image as a lower, read-only without upperdir', async (ctx) => {
    if (why) skipBecause(ctx, why);
    const r = join(dir, 'b');
    layout(r);
    await mksquashfs(join(r, 'l2'), join(r, 'l2.sqfs'));
    const mnt = join(r, 'mnt');
    await mount(['-o', `lowerdir=${r}/l1:${r}/l2.sqfs`, mnt], join(r, 'log'));
    try {
      expect(readFileSync(join(mnt, 'shared/top'), 'utf8')).toBe('from l1\n');
      expect(readFileSync(join(mnt, 'only2/f'), 'utf8')).toBe('f\n');
      const w = await execa('sh', ['-c', `echo x > ${mnt}/new`], { reject: false });
      expect(w.stderr).toMatch(/Read-only file system/);
    } finally {
      expect((await umount(mnt)).exitCode).toBe(0);
    }
  }, 120_000);

  it("mount.fuse.sifuse takes mount(8)'s argument order", async (ctx) => {
    if (why) skipBecause(ctx, why);
    const r = join(dir, 'c');
    layout(r);
    const mnt = join(r, 'mnt');
    const helper = join(repoRoot, 'bin', 'mount.fuse.sifuse');
    expect(existsSync(helper)).toBe(true);
    const m = await execa(helper, ['sifuse', mnt, '-o', `rw,nosuid,lowerdir=${r}/l1:${r}/l2,upperdir=${r}/upper,workdir=${r}/work`], {
      reject: false,
    });
    expect(m.exitCode, m.stderr).toBe(0);
    try {
      expect(readFileSync(join(mnt, 'shared/top'), 'utf8')).toBe('from l1\n');
      expect(readFileSync('/proc/self/mounts', 'utf8')).toMatch(new RegExp(`${mnt} fuse\\.sifuse `));
    } finally {
      expect((await umount(mnt)).exitCode).toBe(0);
    }
  }, 120_000);
});
