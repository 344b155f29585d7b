/**
 * kill -9 of the daemon while a tar extracts and a writer fsyncs file after
 * file; then `fusermount3 -uz` of the dead mount and a remount: the journal
 * replays, every file whose fsync returned is intact, and after a clean
 * unmount `e2fsck -fn` finds nothing. A few trials with different delays.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { hasTool, makeTempDir, removeTempDir } from '../tools/helpers.js';
import { pidFile } from '../../src/commands/mount.js';
import { skipBecause } from '../tools/skip.js';
import { cleanup, fuseAvailable, isMounted, logTail, mount, umount } from './helpers.js';
import { skipBecause } from '../tools/skip.js';

const scripts = join(import.meta.dirname, 'scripts');
let why = fuseAvailable();
let dir: string;

beforeAll(async () => {
  dir = makeTempDir('fuse-crash');
  if (!why && !(await hasTool('mkfs.ext3'))) why = 'mkfs.ext3 is not installed';
});

afterAll(async () => {
  await cleanup();
  await removeTempDir(dir);
});

function expected(n: number): Buffer {
  return Buffer.from(`${String(n).padStart(8, '0')}`.repeat(128 * (1 + (n % 200))));
}

describe('kill -9 of a writable mount', () => {
  for (const [trial, delayMs] of [[1, 1500], [2, 2500], [3, 4000]] as const) {
    it(`trial ${trial}: killed after ${delayMs} ms, fsynced files survive and e2fsck is clean`, async (ctx) => {
      if (why) skipBecause(ctx, why);
      const image = join(dir, `crash${trial}.img`);
      const mnt = join(dir, `mnt${trial}`);
      const log = join(dir, `crash${trial}.log`);
      mkdirSync(mnt);
      await execa('truncate', ['-s', '256M', image]);
      await execa('mkfs.ext3', ['-q', '-F', '-b', '4096', image]);
      await mount(['--writable', image, mnt], log);
      const pid = Number(readFileSync(pidFile(mnt), 'utf8'));
      expect(pid).toBeGreaterThan(0);
      mkdirSync(join(mnt, 'w'));
      const writer = execa('python3', [join(scripts, 'fsync_writer.py'), join(mnt, 'w')], { reject: false });
      const untar = execa('sh', ['-c', `mkdir ${mnt}/u && tar -C /usr/share -cf - doc | tar -C ${mnt}/u -xf -`], {
        reject: false,
      });
      await new Promise((r) => setTimeout(r, delayMs));
      process.kill(pid, 'SIGKILL');
      const w = await writer;
      await untar;
      const done = w.stdout.split('\n').filter((x) => x !== '').map(Number);
      // Dead mount: every access fails until it is detached.
      await execa('fusermount3', ['-uz', mnt]);
      expect(isMounted(mnt)).toBe(false);
      await mount(['--writable', image, mnt], log);
      const bad: string[] = [];
      for (const n of done) {
        const r = await execa('cat', [join(mnt, 'w', `w${n}`)], { encoding: 'buffer', reject: false });
        if (r.exitCode !== 0 || !Buffer.from(r.stdout).equals(expected(n))) bad.push(`w${n}`);
      }
      const u = await umount(mnt);
      expect(u.exitCode, u.stderr).toBe(0);
      expect(bad, logTail(log)).toEqual([]);
      const fsck = await execa('e2fsck', ['-fn', image], { reject: false });
      expect(fsck.exitCode, fsck.stdout).toBe(0);
      console.log(`trial ${trial}: ${done.length} fsynced files checked after kill -9 at ${delayMs} ms`);
    }, 300_000);
  }
});
