/**
 * The read path: a SquashFS image and a SIF mounted read-only through
 * `sifuse mount` show exactly what `sifuse manifest` says is in them, as
 * seen by an independent walker (tree_manifest.py) on the mount point.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import {
  expectSameManifest,
  makeSif,
  makeTempDir,
  makeTree,
  mksquashfs,
  removeTempDir,
  runSifuse,
  treeManifest,
} from '../tools/helpers.js';
import { skipBecause } from '../tools/skip.js';
import { pidFile } from '../../src/commands/mount.js';
import { cleanup, fuseAvailable, isMounted, logTail, mount, umount, waitGone } from './helpers.js';

const why = fuseAvailable();
let dir: string;

beforeAll(async () => {
  dir = makeTempDir('fuse-read');
  if (why) return;
  const tree = await makeTree(join(dir, 'tree'), { many: 3000, depth: 20 });
  await mksquashfs(tree.root, join(dir, 'img.sqfs'));
  await makeSif(join(dir, 'img.sqfs'), join(dir, 'img.sif'));
}, 300_000);

afterAll(async () => {
  await cleanup();
  await removeTempDir(dir);
});

describe('sifuse mount, read-only', () => {
  for (const image of ['img.sqfs', 'img.sif']) {
    it(`${image}: the mount shows what sifuse manifest lists`, async (ctx) => {
      if (why) skipBecause(ctx, why);
      const mnt = join(dir, `mnt-${image}`);
      const log = join(dir, `${image}.log`);
      mkdirSync(mnt);
      await mount(['--stats', join(dir, image), mnt], log);
      try {
        expect(isMounted(mnt)).toBe(true);
        const expected = (await runSifuse(['manifest', join(dir, image)])).stdout;
        const actual = await treeManifest(mnt);
        expectSameManifest(actual, expected, `${image} mounted`);
        const w = await execa('sh', ['-c', `echo x > ${mnt}/newfile`], { reject: false });
        expect(w.exitCode).not.toBe(0);
        expect(w.stderr).toMatch(/Read-only file system/);
      } finally {
        const u = await umount(mnt);
        expect(u.stderr).toBe('');
        expect(u.exitCode).toBe(0);
      }
      expect(isMounted(mnt)).toBe(false);
      const stats = readFileSync(log, 'utf8');
      expect(stats, logTail(log)).toMatch(/sifuse stats: \d+ requests/);
      expect(stats).toMatch(/readdirplus/);
      // Served without open handles: the first OPEN and OPENDIR were answered
      // ENOSYS and the kernel sent none after them (the walk above opened
      // every directory and read every file), nor any RELEASE/RELEASEDIR.
      const count = (op: string): number => Number(new RegExp(`^\\s+${op}\\s+(\\d+)`, 'm').exec(stats)?.[1] ?? 0);
      expect(count('opendir'), stats).toBe(1);
      expect(count('open'), stats).toBe(1);
      expect(count('releasedir'), stats).toBe(0);
      expect(count('release'), stats).toBe(0);
      expect(count('read'), stats).toBeGreaterThan(0);
    }, 300_000);
  }

  it('stored blocks read right whether spliced from the cached image or read cold, at any offset', async (ctx) => {
    if (why) skipBecause(ctx, why);
    // Random bytes: every data block is stored; the tail off the 4 KiB grid is a fragment.
    const src = join(dir, 'stored');
    mkdirSync(src);
    const data = randomBytes(3 * 1024 * 1024 + 4321);
    writeFileSync(join(src, 'big'), data);
    await mksquashfs(src, join(dir, 'stored.sqfs'));
    await makeSif(join(dir, 'stored.sqfs'), join(dir, 'stored.sif'));
    const mnt = join(dir, 'mnt-stored');
    mkdirSync(mnt);
    await mount([join(dir, 'stored.sif'), mnt], join(dir, 'stored.log'));
    try {
      const file = join(mnt, 'big');
      const ranges: [number, number][] = [
        [0, 1 << 20],
        [131_072 - 100, 300],
        [5_000, 4096],
        [data.length - 70_000, 70_000],
        [1_234_567, 1_000_000],
      ];
      for (const pass of ['image cached', 'image dropped from the page cache']) {
        if (pass !== 'image cached')
          await execa('dd', [`if=${join(dir, 'stored.sif')}`, 'iflag=nocache', 'count=0', 'status=none']);
        // Fresh reads (no page cache of the mount's file): every READ reaches the daemon.
        await execa('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
        const whole = await execa('sh', ['-c', `cat ${file} | sha256sum`]);
        expect(whole.stdout.split(' ')[0], pass).toBe(createHash('sha256').update(data).digest('hex'));
        for (const [pos, len] of ranges) {
          await execa('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
          const fd = openSync(file, 'r');
          try {
            const got = Buffer.alloc(len);
            expect(readSync(fd, got, 0, len, pos), `${pass}: ${pos}+${len}`).toBe(len);
            expect(got.equals(data.subarray(pos, pos + len)), `${pass}: ${pos}+${len}`).toBe(true);
          } finally {
            closeSync(fd);
          }
        }
      }
    } finally {
      const u = await umount(mnt);
      expect(u.exitCode).toBe(0);
    }
  }, 120_000);

  it('a connection aborted while pool threads answer stored-block READs ends the daemon cleanly', async (ctx) => {
    if (why) skipBecause(ctx, why);
    const conns = '/sys/fs/fuse/connections';
    if (process.getuid?.() !== 0) skipBecause(ctx, 'aborting a FUSE connection (fusectl) needs root');
    if (!existsSync(conns)) await execa('mount', ['-t', 'fusectl', 'none', conns], { reject: false });
    if (!readFileSync('/proc/self/mounts', 'utf8').includes(` ${conns} fusectl`))
      skipBecause(ctx, 'fusectl is not mounted at /sys/fs/fuse/connections');
    const src = join(dir, 'abort');
    mkdirSync(src);
    writeFileSync(join(src, 'big'), randomBytes(16 << 20));
    await mksquashfs(src, join(dir, 'abort.sqfs'));
    const mnt = join(dir, 'mnt-abort');
    const log = join(dir, 'abort.log');
    mkdirSync(mnt);
    await mount([join(dir, 'abort.sqfs'), mnt], log);
    const pid = Number(readFileSync(pidFile(mnt), 'utf8'));
    // O_DIRECT: every 4 KiB read is its own READ, answered from the image by
    // a pool thread. Each reader reads the file over and over until a read
    // fails (the abort), so the abort comes while READs are in flight.
    const file = join(mnt, 'big');
    const readers = [0, 1, 2, 3].map(() =>
      execa('sh', ['-c', `while dd if='${file}' of=/dev/null bs=4k iflag=direct status=none; do :; done`], {
        reject: false,
        timeout: 60_000,
      }),
    );
    await new Promise((r) => setTimeout(r, 500));
    const dev = statSync(mnt).dev;
    writeFileSync(join(conns, String((dev & 0xff) | ((dev >> 12) & 0xfff00)), 'abort'), '1');
    for (const r of await Promise.all(readers)) expect(r.timedOut, 'a reader still ran after the abort').toBe(false);
    await execa('fusermount3', ['-uz', mnt], { reject: false });
    await waitGone(pid);
    expect(readFileSync(log, 'utf8'), 'the daemon logged').toBe('');
  }, 120_000);

  it('refuses a non-image and an unknown fuse-overlayfs option with one line', async (ctx) => {
    if (why) skipBecause(ctx, why);
    const mnt = join(dir, 'mnt-bad');
    mkdirSync(mnt);
    const a = await runSifuse(['mount', join(dir, 'tree', 'many', 'f0'), mnt]);
    expect(a.exitCode).not.toBe(0);
    expect(a.stderr.trim().split('\n')).toHaveLength(1);
    const b = await runSifuse(['mount', '-o', `lowerdir=${dir}/tree,xino=on`, mnt]);
    expect(b.exitCode).not.toBe(0);
    expect(b.stderr).toMatch(/"xino" is not supported/);
    expect(isMounted(mnt)).toBe(false);
  });
});
