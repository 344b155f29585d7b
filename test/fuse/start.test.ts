/**
 * How `sifuse mount` starts its daemon: bin/sifuse starts it directly (one
 * Node start) for the common command line, the two-Node path takes the rest;
 * both give one line naming the file and a non-zero exit on failure with
 * nothing left mounted, hand --log the daemon's messages, and leave the
 * caller's stdio alone once mount returns. The daemon itself (`mount -f
 * --ready-fd 3`) reports usage errors on the ready fd and unmounts when nobody
 * is left to read its 'ok' (a caller interrupted while waiting).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { makeSif, makeTempDir, makeTree, mksquashfs, removeTempDir, repoRoot, sifuseBin } from '../tools/helpers.js';
import { skipBecause } from '../tools/skip.js';
import { pidFile } from '../../src/commands/mount.js';
import { cleanup, fuseAvailable, isMounted, umount } from './helpers.js';

const why = fuseAvailable();
let dir: string;
let image: string;

beforeAll(async () => {
  dir = makeTempDir('fuse-start');
  if (why) return;
  const tree = await makeTree(join(dir, 'tree'), { many: 10, depth: 2 });
  await mksquashfs(tree.root, join(dir, 'img.sqfs'));
  image = join(dir, 'img.sif');
  await makeSif(join(dir, 'img.sqfs'), image);
}, 300_000);

afterAll(async () => {
  await cleanup();
  await removeTempDir(dir);
});

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command with piped stdio and resolves once every pipe is closed
 * (Node's 'close'), as execa does: a daemon holding the caller's stdout or
 * stderr would make this never resolve and the test time out.
 */
function run(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** The fds 0-2 of the daemon serving `mnt`, as /proc shows them. */
function daemonStdio(mnt: string): string[] {
  const pid = readFileSync(pidFile(mnt), 'utf8').trim();
  return [0, 1, 2].map((fd) => readlinkSync(`/proc/${pid}/fd/${fd}`));
}

describe('sifuse mount start-up', () => {
  for (const via of ['one Node start', 'two Node starts'] as const) {
    const env = via === 'two Node starts' ? { SIFUSE_MOUNT_VIA_NODE: '1' } : {};

    it(`${via}: mounts, returns with the caller's pipes closed, the daemon on /dev/null`, async (ctx) => {
      if (why) skipBecause(ctx, why);
      const mnt = join(dir, `mnt-ok-${via.split(' ')[0]}`);
      mkdirSync(mnt);
      const r = await run([sifuseBin, 'mount', image, mnt], env);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout + r.stderr).toBe('');
      try {
        expect(isMounted(mnt)).toBe(true);
        expect(daemonStdio(mnt)).toEqual(['/dev/null', '/dev/null', '/dev/null']);
      } finally {
        expect((await umount(mnt)).exitCode).toBe(0);
      }
    });

    it(`${via}: --log gets the daemon's output`, async (ctx) => {
      if (why) skipBecause(ctx, why);
      const mnt = join(dir, `mnt-log-${via.split(' ')[0]}`);
      const log = join(dir, `log-${via.split(' ')[0]}`);
      mkdirSync(mnt);
      const r = await run([sifuseBin, 'mount', '--stats', '--log', log, image, mnt], env);
      expect(r.code, r.stderr).toBe(0);
      expect(daemonStdio(mnt)).toEqual(['/dev/null', log, log]);
      expect((await umount(mnt)).exitCode).toBe(0);
      // --stats prints its counts at unmount: they went to the log.
      expect(readFileSync(log, 'utf8')).toMatch(/^sifuse stats: \d+ requests/m);
    });

    it(`${via}: a bad SIF is one line naming it, exit 1, nothing mounted`, async (ctx) => {
      if (why) skipBecause(ctx, why);
      const mnt = join(dir, `mnt-bad-${via.split(' ')[0]}`);
      const bad = join(dir, 'bad.sif');
      mkdirSync(mnt);
      writeFileSync(bad, Buffer.alloc(4096, 0x5a));
      for (const sif of [bad, join(dir, 'missing.sif')]) {
        const r = await run([sifuseBin, 'mount', sif, mnt], env);
        expect(r.code).toBe(1);
        expect(r.stderr.trim().split('\n')).toHaveLength(1);
        expect(r.stderr).toMatch(/^sifuse: /);
        expect(r.stderr).toContain(sif);
        expect(isMounted(mnt)).toBe(false);
        expect(existsSync(pidFile(mnt))).toBe(false);
      }
    });
  }

  it('SIGINT to sifuse mount at any moment: mounted exactly when it exited 0', async (ctx) => {
    if (why) skipBecause(ctx, why);
    for (const delayMs of [0, 15, 30, 45, 60, 90]) {
      const mnt = join(dir, `mnt-int-${delayMs}`);
      mkdirSync(mnt);
      const child = spawn(sifuseBin, ['mount', image, mnt], { stdio: 'ignore' });
      const timer = setTimeout(() => child.kill('SIGINT'), delayMs);
      const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((res) =>
        child.once('exit', (c, s) => res([c, s])),
      );
      clearTimeout(timer);
      try {
        expect(code === 0 ? 'exit 0' : signal, `SIGINT after ${delayMs} ms`).toBe(code === 0 ? 'exit 0' : 'SIGINT');
        expect(isMounted(mnt), `SIGINT after ${delayMs} ms, ${code === 0 ? 'exit 0' : signal}`).toBe(code === 0);
      } finally {
        if (isMounted(mnt)) await execa('fusermount3', ['-u', mnt], { reject: false });
      }
    }
  });

  it('usage errors still come back from the command line (unknown option, missing value, bad --log)', async (ctx) => {
    if (why) skipBecause(ctx, why);
    const mnt = join(dir, 'mnt-usage');
    mkdirSync(mnt);
    const unknown = await run([sifuseBin, 'mount', '--bogus', image, mnt]);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toMatch(/unknown option '--bogus'/);
    const missing = await run([sifuseBin, 'mount', image, mnt, '--overlay']);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/--overlay/);
    const badLog = await run([sifuseBin, 'mount', '--log', join(dir, 'no', 'such', 'log'), image, mnt]);
    expect(badLog.code).toBe(1);
    expect(badLog.stderr.trim().split('\n')).toHaveLength(1);
    expect(badLog.stderr).toContain(join(dir, 'no', 'such', 'log'));
    expect(isMounted(mnt)).toBe(false);
  });

  /** The daemon as bin/sifuse starts it, its fd 3 a pipe read by `onReady`'s caller. */
  function daemon(args: string[], readAnswer: boolean): Promise<{ code: number | null; answer: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [join(repoRoot, 'bin', 'launch.cjs'), 'mount', '-f', '--ready-fd', '3', ...args], {
        stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
      });
      const pipe = child.stdio[3] as NodeJS.ReadableStream & { destroy(): void };
      let answer = '';
      if (readAnswer) pipe.on('data', (d: Buffer) => (answer += d.toString()));
      else pipe.destroy();
      child.once('error', reject);
      child.once('exit', (code) => resolve({ code, answer }));
    });
  }

  it('the daemon reports a usage error on the ready fd', async (ctx) => {
    if (why) skipBecause(ctx, why);
    const r = await daemon(['--bogus', image, join(dir, 'mnt-usage')], true);
    expect(r.code).not.toBe(0);
    expect(r.answer).toBe("unknown option '--bogus'\n");
  });

  it('a daemon whose caller is gone before it answered unmounts and exits', async (ctx) => {
    if (why) skipBecause(ctx, why);
    const mnt = join(dir, 'mnt-orphan');
    mkdirSync(mnt);
    try {
      // A daemon that stays mounted never exits: give up after 30 s.
      const r = await Promise.race([
        daemon([image, mnt], false),
        new Promise<null>((res) => setTimeout(() => res(null), 30_000)),
      ]);
      expect(r, 'the daemon is still serving').not.toBeNull();
      expect(r!.code).toBe(0);
      expect(isMounted(mnt)).toBe(false);
      expect(existsSync(pidFile(mnt))).toBe(false);
    } finally {
      if (isMounted(mnt)) await execa('fusermount3', ['-uz', mnt], { reject: false });
    }
  });
});
