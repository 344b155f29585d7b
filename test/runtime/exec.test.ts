/**
 * `sifuse exec|run|shell` and `instance` end to end through the CLI, on a
 * SIF built from the host's programs: runscript, exit statuses and signals
 * passed through, binds, --env, --contain, the errors of the issue (no
 * runscript, missing bind source, no bwrap), instances (start, exec into,
 * stop, a crashed one cleaned up), and the unprivileged path as a user made
 * with useradd. After every command nothing is left mounted.
 */
import { execa } from 'execa';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildSif } from '../../src/commands/build.js';
import { assembleHostRootfs } from '../../src/runtime/host-rootfs.js';
import { isRoot, sifuseBin } from '../tools/helpers.js';
import { itIf } from '../tools/skip.js';

const USER = 'sifusetest';
let dir: string;
let sif: string;
let bare: string;

function sifuseMounts(): string[] {
  return fs
    .readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .filter((l) => l.split(' ')[2] === 'fuse.sifuse' && l.includes(dir));
}

// A runtime directory of this file's own: instance names and mount pid files do not meet other runs'.
const run = (args: string[], opts: { env?: Record<string, string>; cwd?: string; input?: string } = {}) =>
  execa(sifuseBin, args, {
    reject: false,
    cwd: opts.cwd ?? dir,
    env: { XDG_RUNTIME_DIR: path.join(dir, 'run'), ...opts.env },
    input: opts.input,
    timeout: 120_000,
  });

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sifuse-exec-'));
  fs.chmodSync(dir, 0o755);
  fs.mkdirSync(path.join(dir, 'run'), { mode: 0o700 });
  const root = path.join(dir, 'rootfs');
  fs.mkdirSync(root);
  await assembleHostRootfs(root, {
    files: {
      '/.singularity.d/runscript': { content: '#!/bin/sh\necho "runscript: $*"\n', mode: 0o755 },
      '/.singularity.d/startscript': {
        content: '#!/bin/sh\necho started > /tmp/instance-started-$$\nexec sleep 600\n',
        mode: 0o755,
      },
      '/.singularity.d/env/90-environment.sh': { content: 'export IMAGE_VAR=from-image\n' },
    },
  });
  sif = path.join(dir, 'box.sif');
  await buildSif(sif, root);
  fs.chmodSync(sif, 0o644);
  fs.rmSync(path.join(root, '.singularity.d'), { recursive: true });
  bare = path.join(dir, 'bare.sif');
  await buildSif(bare, root);
  fs.chmodSync(bare, 0o644);
}, 120_000);

afterAll(async () => {
  for (const l of sifuseMounts()) await execa('fusermount3', ['-uz', l.split(' ')[1]!], { reject: false });
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('sifuse exec, run, shell', () => {
  it('runs the runscript and commands with the image environment, passing exit statuses and signals through', async () => {
    let r = await run(['run', sif, 'a b', 'c']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('runscript: a b c');
    expect(r.exitCode).toBe(0);
    r = await run(['exec', '--env', 'FROM_FLAG=yes', sif, 'sh', '-c', 'echo "$IMAGE_VAR $FROM_FLAG"; exit 7']);
    expect(r.stdout).toBe('from-image yes');
    expect(r.exitCode).toBe(7);
    r = await run(['exec', sif, 'sh', '-c', 'kill -TERM $$']);
    expect(r.exitCode).toBe(143);
    r = await run(['shell', sif], { input: 'echo "in the shell: $IMAGE_VAR"\nexit 3\n' });
    expect(r.stdout).toBe('in the shell: from-image');
    expect(r.exitCode).toBe(3);
    expect(sifuseMounts()).toEqual([]);
  });

  it('binds the current directory and --bind paths; --contain binds neither', async () => {
    const work = path.join(dir, 'work');
    fs.mkdirSync(work, { recursive: true });
    fs.writeFileSync(path.join(work, 'here.txt'), 'host file');
    let r = await run(['exec', sif, 'cat', 'here.txt'], { cwd: work });
    // The tree has no such directory, so the current directory is not bound inside (nothing is made in the image).
    expect(r.exitCode).not.toBe(0);
    r = await run([
      'exec',
      '--bind',
      `${work}:/home:ro`,
      sif,
      'sh',
      '-c',
      'cat /home/here.txt; touch /home/x 2>/dev/null || echo " read-only"',
    ]);
    expect(r.stdout).toBe('host file read-only');
    r = await run(['exec', '--contain', sif, 'sh', '-c', 'ls /tmp | wc -l']);
    expect(r.stdout.trim()).toBe('0');
    expect(sifuseMounts()).toEqual([]);
  });

  it('says what is wrong in one line, leaving nothing mounted', async () => {
    let r = await run(['run', bare]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toBe(`sifuse: ${bare}: no runscript in the image (/.singularity.d/runscript or /singularity)`);
    r = await run(['exec', '--bind', '/no/such/dir:/mnt', sif, 'true']);
    expect(r.stderr).toBe('sifuse: /no/such/dir: bind source does not exist');
    expect(r.exitCode).toBe(1);
    const noBwrap = path.join(dir, 'path-without-bwrap');
    fs.mkdirSync(noBwrap, { recursive: true });
    for (const tool of ['node', 'sh', 'readlink', 'dirname', 'fusermount3']) {
      const at =
        tool === 'node' ? process.execPath : spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim();
      if (!fs.existsSync(path.join(noBwrap, tool))) fs.symlinkSync(at, path.join(noBwrap, tool));
    }
    r = await run(['exec', sif, 'true'], { env: { PATH: noBwrap } });
    expect(r.stderr).toBe('sifuse: bwrap: bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)');
    expect(r.exitCode).toBe(1);
    expect(sifuseMounts()).toEqual([]);
  });
});

describe('sifuse instance', () => {
  it('starts a named instance, runs commands in it, stops it; a crashed one is cleaned up by list', async () => {
    let r = await run(['instance', 'start', sif, 'one']);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    r = await run(['instance', 'start', sif, 'one']);
    expect(r.stderr).toBe(`sifuse: ${sif}: instance one already exists`);
    r = await run(['instance', 'list', '--json']);
    const listed = JSON.parse(r.stdout).instances as { instance: string; pid: number; img: string }[];
    expect(listed.map((i) => [i.instance, i.img])).toEqual([['one', sif]]);
    r = await run(['exec', 'instance://one', 'sh', '-c', 'echo "$IMAGE_VAR"; ls /.singularity.d']);
    expect(r.stdout.split('\n')[0]).toBe('from-image');
    r = await run(['instance', 'stop', 'one']);
    expect(r.exitCode).toBe(0);
    expect((await run(['instance', 'list'])).stdout.split('\n')).toEqual(['INSTANCE NAME    PID      IMAGE']);
    r = await run(['exec', 'instance://one', 'true']);
    expect(r.stderr).toBe('sifuse: instance://one: no running instance named one');

    // A daemon killed outright: list notices, detaches the dead mount, forgets the instance.
    expect((await run(['instance', 'start', sif, 'two'])).exitCode).toBe(0);
    const two = (
      JSON.parse((await run(['instance', 'list', '--json'])).stdout).instances as { instance: string; pid: number }[]
    ).find((i) => i.instance === 'two')!;
    process.kill(two.pid, 'SIGKILL');
    for (let i = 0; i < 100; i++) {
      try {
        process.kill(two.pid, 0);
        await new Promise((res) => setTimeout(res, 50));
      } catch {
        break;
      }
    }
    r = await run(['instance', 'list']);
    expect(r.stderr).toBe('sifuse: instance two: its daemon is gone; cleaned up');
    expect(r.stdout.split('\n')).toEqual(['INSTANCE NAME    PID      IMAGE']);
    expect(sifuseMounts()).toEqual([]);
  });
});

describe('as an unprivileged user', () => {
  itIf(isRoot, 'needs root to make a test user and run as it')(
    'runs commands as that user, and as uid 0 with --fakeroot',
    async () => {
      if (spawnSync('id', [USER]).status !== 0) expect(spawnSync('useradd', ['-m', USER]).status).toBe(0);
      fs.chmodSync('/dev/fuse', 0o666);
      const as = (args: string[]) =>
        execa('runuser', ['-u', USER, '--', sifuseBin, ...args], {
          reject: false,
          cwd: '/',
          timeout: 120_000,
          env: { HOME: `/home/${USER}`, PATH: process.env.PATH ?? '' },
        });
      const uid = spawnSync('id', ['-u', USER], { encoding: 'utf8' }).stdout.trim();
      let r = await as(['exec', sif, 'id', '-u']);
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe(uid);
      r = await as(['exec', '--fakeroot', sif, 'id', '-u']);
      expect(r.stdout).toBe('0');
      r = await as(['run', sif, 'unprivileged']);
      expect(r.stdout).toBe('runscript: unprivileged');
      expect(sifuseMounts()).toEqual([]);
    },
  );
});
