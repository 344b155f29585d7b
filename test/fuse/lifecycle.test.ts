/**
 * How a mount ends and who may make one: `fusermount3 -u`, SIGTERM and
 * SIGINT all end the daemon after it committed (e2fsck clean, data there on
 * the next mount); a second writer of the same image is refused naming it;
 * a mount point left dead by kill -9 is taken over by the next mount; the
 * daemon keeps none of the descriptors its caller passed down; and an
 * unprivileged user (made with useradd) mounts, writes and unmounts through
 * fusermount3.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
} from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { hasTool, isRoot, makeTempDir, removeTempDir, runSifuse } from '../tools/helpers.js';
import { pidFile } from '../../src/commands/mount.js';
import { skipBecause } from '../tools/skip.js';
import { cleanup, fuseAvailable, isMounted, logTail, mount, sh, umount, waitGone } from './helpers.js';

let why = fuseAvailable();
let dir: string;

async function newImage(name: string, owner = '0:0'): Promise<string> {
  const image = join(dir, name);
  await execa('truncate', ['-s', '64M', image]);
  await execa('mkfs.ext3', ['-q', '-F', '-b', '4096', '-E', `root_owner=${owner}`, image]);
  return image;
}

async function fsckClean(image: string): Promise<void> {
  const r = await execa('e2fsck', ['-fn', image], { reject: false });
  expect(r.exitCode, r.stdout).toBe(0);
}

beforeAll(async () => {
  dir = makeTempDir('fuse-life');
  chmodSync(dir, 0o755);
  if (!why && !(await hasTool('mkfs.ext3'))) why = 'mkfs.ext3 is not installed';
});

afterAll(async () => {
  await cleanup();
  await removeTempDir(dir);
});

describe('the end of a mount', () => {
  for (const how of ['fusermount3 -u', 'SIGTERM', 'SIGINT'] as const) {
    it(`${how}: the daemon commits, unmounts and exits`, async (ctx) => {
      if (why) skipBecause(ctx, why);
      const image = await newImage(`end-${how.replace(/\W/g, '')}.img`);
      const mnt = join(dir, `mnt-${how.replace(/\W/g, '')}`);
      const log = join(dir, `${how.replace(/\W/g, '')}.log`);
      mkdirSync(mnt);
      await mount(['--writable', image, mnt], log);
      const pid = Number(readFileSync(pidFile(mnt), 'utf8'));
      await sh(`echo kept > ${mnt}/file && mkdir ${mnt}/d`);
      if (how === 'fusermount3 -u') await execa('fusermount3', ['-u', mnt]);
      else process.kill(pid, how);
      await waitGone(pid);
      expect(isMounted(mnt), logTail(log)).toBe(false);
      expect(existsSync(pidFile(mnt))).toBe(false);
      await fsckClean(image);
      await mount(['--writable', image, mnt], log);
      expect(readFileSync(join(mnt, 'file'), 'utf8')).toBe('kept\n');
      expect((await umount(mnt)).exitCode).toBe(0);
    }, 120_000);
  }

  it('a second writer of the same image is refused, naming it; a reader is not', async (ctx) => {
    if (why) skipBecause(ctx, why);
    const image = await newImage('locked.img');
    const a = join(dir, 'lock-a');
    const b = join(dir, 'lock-b');
    mkdirSync(a);
    mkdirSync(b);
    await mount(['--writable', image, a], join(dir, 'lock.log'));
    try {
      const second = await runSifuse(['mount', '--writable', image, b]);
      expect(second.exitCode).not.toBe(0);
      expect(second.stderr.trim().split('\n')).toHaveLength(1);
      expect(second.stderr).toContain(image);
      expect(second.stderr).toMatch(/in use for writing/);
      expect(isMounted(b)).toBe(false);
    } finally {
      expect((await umount(a)).exitCode).toBe(0);
    }
    // Unlocked again once the first daemon ended.
    await mount(['--writable', image, b], join(dir, 'lock.log'));
    expect((await umount(b)).exitCode).toBe(0);
  }, 120_000);

  it('a mount point left dead by kill -9 is taken over by the next mount', async (ctx) => {
    if (why) skipBecause(ctx, why);
    const image = await newImage('dead.img');
    const mnt = join(dir, 'dead');
    const log = join(dir, 'dead.log');
    mkdirSync(mnt);
    await mount(['--writable', image, mnt], log);
    // fsync (FUSE has no syncfs here: `sync -f` never reaches the daemon).
    await sh(`echo x > ${mnt}/f && sync ${mnt}/f`);
    const pid = Number(readFileSync(pidFile(mnt), 'utf8'));
    process.kill(pid, 'SIGKILL');
    await waitGone(pid);
    const dead = await execa('stat', [mnt], { reject: false });
    expect(dead.stderr).toMatch(/Transport endpoint is not connected/);
    await mount(['--writable', image, mnt], log);
    expect(readFileSync(join(mnt, 'f'), 'utf8')).toBe('x\n');
    expect((await umount(mnt)).exitCode).toBe(0);
    await fsckClean(image);
  }, 120_000);

  for (const path of ['bin/sifuse', 'the Node path'] as const) {
    it(`${path}: the daemon holds none of the descriptors the caller passed down`, async (ctx) => {
      if (why) skipBecause(ctx, why);
      const tag = path === 'bin/sifuse' ? 'sh' : 'node';
      const image = await newImage(`fds-${tag}.img`);
      const mnt = join(dir, `fds-${tag}`);
      mkdirSync(mnt);
      // One dash can name (7) and one it cannot, which Node leaves open too (40): neither close-on-exec.
      const held = [join(dir, `held7-${tag}`), join(dir, `held40-${tag}`)];
      const fds = held.map((p) => openSync(p, 'w'));
      const stdio: (number | 'ignore' | 'pipe')[] = ['ignore', 'pipe', 'pipe'];
      for (let fd = 3; fd <= 40; fd++) stdio.push(fd === 7 ? fds[0]! : fd === 40 ? fds[1]! : 'ignore');
      const env = { ...process.env, SIFUSE_MOUNT_VIA_NODE: path === 'bin/sifuse' ? '' : '1' };
      const r = spawnSync(runSifuseBin(), ['mount', '--log', join(dir, `fds-${tag}.log`), image, mnt], {
        stdio,
        env,
        timeout: 60_000,
      });
      for (const fd of fds) closeSync(fd);
      expect(r.status, String(r.stderr)).toBe(0);
      try {
        const pid = Number(readFileSync(pidFile(mnt), 'utf8'));
        const open = readdirSync(`/proc/${pid}/fd`).map((fd) => {
          try {
            return readlinkSync(`/proc/${pid}/fd/${fd}`);
          } catch {
            return '';
          }
        });
        expect(open).toContain('/dev/fuse');
        for (const p of held) expect(open).not.toContain(p);
      } finally {
        expect((await umount(mnt)).exitCode).toBe(0);
      }
    }, 120_000);
  }

  it('an unprivileged user mounts an image writable through fusermount3, writes, unmounts', async (ctx) => {
    if (why) skipBecause(ctx, why);
    if (!isRoot) skipBecause(ctx, 'needs root to create the test user');
    const user = 'sifusetest';
    if ((await execa('id', [user], { reject: false })).exitCode !== 0) await execa('useradd', ['-M', '-s', '/bin/sh', user]);
    chmodSync('/dev/fuse', 0o666);
    const uid = Number((await execa('id', ['-u', user])).stdout);
    const gid = Number((await execa('id', ['-g', user])).stdout);
    const home = join(dir, 'user');
    mkdirSync(join(home, 'mnt'), { recursive: true });
    const image = await newImage('user/own.img', `${uid}:${gid}`);
    for (const p of [home, join(home, 'mnt'), image]) chownSync(p, uid, gid);
    const as = (script: string) => sh(script, { user, cwd: home });
    const m = await as(`${runSifuseBin()} mount --writable --log ${home}/log own.img mnt`);
    expect(m.exitCode, m.stderr + logTail(join(home, 'log'))).toBe(0);
    const line = readFileSync('/proc/self/mounts', 'utf8')
      .split('\n')
      .find((l) => l.split(' ')[1] === join(home, 'mnt'));
    expect(line).toContain(`user_id=${uid}`);
    const w = await as('mkdir mnt/dir && echo mine > mnt/dir/f && stat -c %u mnt/dir/f');
    expect(w.stdout.trim(), w.stderr).toBe(String(uid));
    const u = await as(`${runSifuseBin()} umount mnt`);
    expect(u.exitCode, u.stderr).toBe(0);
    expect(isMounted(join(home, 'mnt'))).toBe(false);
    await fsckClean(image);
    const again = await as(
      `${runSifuseBin()} mount --log ${home}/log own.img mnt && cat mnt/dir/f && ${runSifuseBin()} umount mnt`,
    );
    expect(again.stdout.trim()).toBe('mine');
  }, 120_000);
});

function runSifuseBin(): string {
  return join(import.meta.dirname, '..', '..', 'bin', 'sifuse');
}
