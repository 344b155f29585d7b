/**
 * Issue 10's "must show" for the container commands, as an unprivileged user
 * made with useradd, on a Debian bookworm debootstrap-minbase SIF built with
 * `sifuse build` (scripts/make-rootfs.sh caches the tree):
 * - exec with each overlay kind (ext3 image, directory, SquashFS :ro, the
 *   SIF's embedded overlay with --writable): changes persist across runs and
 *   are gone without the overlay; --writable-tmpfs discards and is capped at
 *   its size; several :ro overlays in Apptainer's order; exit statuses and
 *   signals passed through (also a signal sent to sifuse itself);
 * - --fakeroot `dpkg -i` of a .deb leaves 0:0 files in the ext3 image, and the
 *   kernel's overlayfs over the same SIF and image (as root) shows the same tree;
 * - the errors of the issue not covered by exec.test.ts / overlay.test.ts:
 *   user namespaces disabled, an overlay locked by a running instance, a full
 *   image, refusals around --writable: one line, non-zero, nothing mounted.
 *
 * Everything needs root (to unpack the rootfs and to make the user); the first
 * run also needs the Debian mirror. Without either the tests skip and say why.
 */
import { execa } from 'execa';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import {
  expectSameManifest,
  isRoot,
  makeTempDir,
  removeTempDir,
  repoRoot,
  sifuseBin,
  toolsDir,
  treeManifest,
  withLoopMount,
} from '../tools/helpers.js';
import { skipBecause } from '../tools/skip.js';

const USER = 'sifusetest';
let dir: string | undefined;
/** The user's working directory (and $HOME), where its images live. */
let work = '';
let sif: string;
let uid: string;
/** Why the tests cannot run here (null: they can). */
let unavailable: string | null = null;

function needSetup(ctx: TestContext): string {
  if (unavailable !== null || dir === undefined) skipBecause(ctx, unavailable ?? 'set-up did not run');
  return dir;
}

interface Result {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** bin/sifuse as the test user, in its working directory. */
async function as(args: string[], opts: { input?: string; env?: Record<string, string> } = {}): Promise<Result> {
  const r = await execa('runuser', ['-u', USER, '--', sifuseBin, ...args], {
    reject: false,
    cwd: work,
    input: opts.input,
    stdin: opts.input === undefined ? 'ignore' : undefined,
    timeout: 120_000,
    extendEnv: false,
    // A runtime directory of this file's own: instance names and mount pid files do not meet other runs'.
    env: { HOME: work, XDG_RUNTIME_DIR: path.join(work, 'run'), PATH: process.env.PATH ?? '/usr/bin:/bin', ...opts.env },
  });
  return { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** A file made by the user in its working directory. */
function userFile(name: string): string {
  return path.join(work, name);
}

/** sifuse mounts of this file's images still present, and mount points or pid files left in the user's runtime directory. */
function leftMounted(): string[] {
  const mounts = fs
    .readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .filter((l) => l.split(' ')[2] === 'fuse.sifuse' && dir !== undefined && l.split(' ')[0]!.startsWith(dir));
  if (work === '') return mounts;
  const runtime = path.join(work, 'run', `sifuse-${uid}`);
  const files = fs.existsSync(runtime) ? fs.readdirSync(runtime).filter((n) => n !== 'instances') : [];
  return [...mounts, ...files];
}

function asUser(...cmd: string[]): void {
  const r = spawnSync('runuser', ['-u', USER, '--', ...cmd], { cwd: work, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd.join(' ')}: ${r.stderr}`);
}

beforeAll(async () => {
  if (!isRoot) {
    unavailable = 'needs root (to unpack the debootstrap rootfs and to make the test user)';
    return;
  }
  dir = makeTempDir('overlays');
  fs.chmodSync(dir, 0o755);
  const rootfs = path.join(dir, 'rootfs');
  const made = await execa(path.join(repoRoot, 'scripts', 'make-rootfs.sh'), [rootfs], { reject: false, all: true });
  if (made.exitCode === 3) {
    unavailable = `the Debian mirror is unreachable (${String(made.all).trim().split('\n').pop()})`;
    return;
  }
  if (made.exitCode !== 0) throw new Error(`scripts/make-rootfs.sh failed:\n${String(made.all)}`);
  if (spawnSync('id', [USER]).status !== 0) expect(spawnSync('useradd', ['-m', USER]).status).toBe(0);
  uid = spawnSync('id', ['-u', USER], { encoding: 'utf8' }).stdout.trim();
  fs.chmodSync('/dev/fuse', 0o666);
  sif = path.join(dir, 'bookworm.sif');
  // lz4: the fastest compressor to build and read; the compressor matrix is other tests' job.
  const b = await execa(sifuseBin, ['build', '--comp', 'lz4', sif, rootfs], { reject: false });
  if (b.exitCode !== 0) throw new Error(`sifuse build failed: ${b.stderr}`);
  fs.chmodSync(sif, 0o644);
  fs.rmSync(rootfs, { recursive: true, force: true });
  work = path.join(dir, 'work');
  fs.mkdirSync(work);
  fs.chownSync(work, Number(uid), Number(uid));
  fs.mkdirSync(path.join(work, 'run'), { mode: 0o700 });
  fs.chownSync(path.join(work, 'run'), Number(uid), Number(uid));
}, 180_000);

afterAll(async () => {
  for (const l of leftMounted()) await execa('fusermount3', ['-uz', l.split(' ')[1]!], { reject: false });
  await removeTempDir(dir);
});

describe('exec with each overlay kind, as an unprivileged user', () => {
  it('an ext3 image: changes persist across runs and are gone without the overlay', async (ctx) => {
    needSetup(ctx);
    let r = await as(['overlay', 'create', '--size', '64', 'ov.img']);
    expect(r.stderr).toBe('');
    r = await as(['exec', '--overlay', 'ov.img', sif, 'sh', '-c', 'echo kept > /kept.txt && id -u && cat /etc/debian_version']);
    expect(r.stderr).toBe('');
    expect(r.stdout.split('\n')[0]).toBe(uid);
    expect(r.stdout.split('\n')[1]).toMatch(/^12\./);
    expect(r.exitCode).toBe(0);
    r = await as(['exec', '--overlay', 'ov.img', sif, 'cat', '/kept.txt']);
    expect(r.stdout).toBe('kept');
    r = await as(['exec', sif, 'cat', '/kept.txt']);
    expect(r.stderr).toBe('cat: /kept.txt: No such file or directory');
    expect(r.exitCode).toBe(1);
    // The image holds it under upper/, owned by the user.
    r = await as(['ls', '-l', 'ov.img', '/upper']);
    expect(r.stdout).toMatch(new RegExp(`^-rw-r--r-- 1 ${uid} ${uid} 5 .* kept\\.txt$`, 'm'));
    expect(spawnSync('e2fsck', ['-fn', userFile('ov.img')]).status).toBe(0);
    expect(leftMounted()).toEqual([]);
  });

  it('a directory: DIR/upper (made when missing) takes the writes; read-only, DIR/upper when present, else DIR', async (ctx) => {
    needSetup(ctx);
    asUser('mkdir', '-p', 'dirov/upper', 'plain/opt');
    fs.writeFileSync(userFile('plain/opt/from-plain'), 'plain\n');
    let r = await as(['exec', '--overlay', 'dirov', sif, 'sh', '-c', 'echo in-dir > /in-dir.txt']);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expect(fs.readFileSync(userFile('dirov/upper/in-dir.txt'), 'utf8')).toBe('in-dir\n');
    expect(fs.statSync(userFile('dirov/upper/in-dir.txt')).uid).toBe(Number(uid));
    r = await as(['exec', '--overlay', 'dirov', sif, 'cat', '/in-dir.txt']);
    expect(r.stdout).toBe('in-dir');
    // A writable directory without upper/ gets upper/ and work/, as Apptainer makes them.
    asUser('mkdir', 'fresh');
    r = await as(['exec', '--overlay', 'fresh', sif, 'sh', '-c', 'echo x > /x']);
    expect(r.exitCode).toBe(0);
    expect(fs.readdirSync(userFile('fresh')).sort()).toEqual(['upper', 'work']);
    expect(fs.readFileSync(userFile('fresh/upper/x'), 'utf8')).toBe('x\n');
    // Read-only: DIR/upper of a layout, the directory itself otherwise; writes refused.
    r = await as([
      'exec',
      '--overlay',
      'dirov:ro',
      '--overlay',
      'plain:ro',
      sif,
      'sh',
      '-c',
      'cat /in-dir.txt /opt/from-plain; touch /new',
    ]);
    expect(r.stdout).toBe('in-dir\nplain');
    expect(r.stderr).toBe("touch: cannot touch '/new': Read-only file system");
    expect(fs.existsSync(userFile('plain/new'))).toBe(false);
    r = await as(['exec', sif, 'cat', '/in-dir.txt']);
    expect(r.exitCode).toBe(1);
    expect(leftMounted()).toEqual([]);
  });

  it('SquashFS :ro and several read-only overlays in Apptainer order (the last listed on top)', async (ctx) => {
    const d = needSetup(ctx);
    for (const [name, f] of [
      ['one', 'from one'],
      ['two', 'from two'],
    ] as const) {
      const tree = path.join(d, `tree-${name}`);
      fs.mkdirSync(path.join(tree, 'opt'), { recursive: true });
      // World-writable, so the user can write it (a copy-up into the ext3 overlay below).
      fs.writeFileSync(path.join(tree, 'opt', 'which'), `${f}\n`, { mode: 0o666 });
      fs.chmodSync(path.join(tree, 'opt', 'which'), 0o666);
      fs.writeFileSync(path.join(tree, 'opt', `only-${name}`), `${name}\n`);
      await execa('mksquashfs', [tree, path.join(d, `${name}.sqfs`), '-noappend', '-quiet', '-all-root']);
      fs.chmodSync(path.join(d, `${name}.sqfs`), 0o644);
    }
    const one = path.join(d, 'one.sqfs');
    const two = path.join(d, 'two.sqfs');
    const show = ['sh', '-c', 'cat /opt/which; cat /opt/only-one /opt/only-two'];
    let r = await as(['exec', '--overlay', `${one}:ro`, '--overlay', `${two}:ro`, sif, ...show]);
    expect(r.stdout).toBe('from two\none\ntwo');
    r = await as(['exec', '--overlay', `${two}:ro`, '--overlay', `${one}:ro`, sif, ...show]);
    expect(r.stdout).toBe('from one\none\ntwo');
    // With a writable ext3 overlay on top: reads see every layer, writes land in the image.
    r = await as(['overlay', 'create', '--size', '64', 'top.img']);
    expect(r.exitCode).toBe(0);
    r = await as([
      'exec',
      '--overlay',
      `${one}:ro`,
      '--overlay',
      'top.img',
      '--overlay',
      `${two}:ro`,
      sif,
      'sh',
      '-c',
      'cat /opt/which; echo written > /opt/which',
    ]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('from two');
    r = await as(['cat', 'top.img', '/upper/opt/which']);
    expect(r.stdout).toBe('written');
    // SquashFS without :ro is still read-only (Apptainer proceeds read-only).
    r = await as(['exec', '--overlay', one, sif, 'sh', '-c', 'cat /opt/only-one; touch /opt/x']);
    expect(r.stdout).toBe('one');
    expect(r.stderr).toContain("touch: cannot touch '/opt/x': Read-only file system");
    expect(leftMounted()).toEqual([]);
  });

  it("the SIF's own overlay: overlay create SIF, --writable writes into it, later runs see it read-only", async (ctx) => {
    const d = needSetup(ctx);
    const mine = userFile('mine.sif');
    fs.copyFileSync(sif, mine);
    fs.chownSync(mine, Number(uid), Number(uid));
    let r = await as(['exec', '--writable', mine, 'true']);
    expect(r.stderr).toBe(`sifuse: ${mine}: no SIF writable overlay partition found`);
    expect(r.exitCode).toBe(1);
    r = await as(['overlay', 'create', '--size', '64', mine]);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    const list = (await execa('siftool', ['list', mine])).stdout.split('\n');
    expect(list.filter((l) => l.includes('|FS ('))).toEqual([
      expect.stringMatching(/^1 +\|1 +\|NONE +\|\d+-\d+ +\|FS \(Squashfs\/\*System\/amd64\)$/),
      expect.stringMatching(/^2 +\|1 +\|NONE +\|\d+-\d+ +\|FS \(Ext3\/Overlay\/amd64\)$/),
    ]);
    r = await as(['exec', '--writable', mine, 'sh', '-c', 'echo embedded > /embedded.txt']);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    // The SIF's primary partition is untouched; the write is in the overlay partition.
    expect((await as(['cat', '--partition', '2', mine, '/upper/embedded.txt'])).stdout).toBe('embedded');
    r = await as(['exec', mine, 'sh', '-c', 'cat /embedded.txt; echo more > /embedded.txt']);
    expect(r.stdout).toBe('embedded');
    expect(r.stderr).toContain('Read-only file system');
    expect(r.exitCode).not.toBe(0);
    // The embedded overlay is the lowest layer: a --writable-tmpfs run sees it and keeps nothing.
    r = await as([
      'exec',
      '--writable-tmpfs',
      mine,
      'sh',
      '-c',
      'cat /embedded.txt; echo tmp > /embedded.txt; cat /embedded.txt',
    ]);
    expect(r.stdout).toBe('embedded\ntmp');
    expect((await as(['exec', mine, 'cat', '/embedded.txt'])).stdout).toBe('embedded');
    // Refusals around it, each one line, nothing changed.
    const before = fs.readFileSync(mine);
    r = await as(['exec', '--writable', '--overlay', 'ov.img', mine, 'true']);
    expect(r.stderr).toBe('sifuse: --writable and --overlay do not combine');
    r = await as(['exec', '--writable', '--writable-tmpfs', mine, 'true']);
    expect(r.stderr).toBe('sifuse: --writable-tmpfs and --writable do not combine');
    expect(r.exitCode).toBe(1);
    // The SIF of another user (root's, 0644) cannot take an overlay partition.
    r = await as(['overlay', 'create', '--size', '64', sif]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr.split('\n')).toHaveLength(1);
    expect(r.stderr).toBe(`sifuse: ${sif}: cannot open for writing: permission denied`);
    expect(fs.readFileSync(mine).equals(before)).toBe(true);
    expect(fs.readdirSync(d).filter((n) => n.startsWith('.'))).toEqual([]);
    expect(leftMounted()).toEqual([]);
  });

  it('--writable-tmpfs: changes discarded, capped at the size given (ENOSPC reaches the user)', async (ctx) => {
    needSetup(ctx);
    let r = await as(['exec', '--writable-tmpfs', sif, 'sh', '-c', 'echo gone > /gone.txt && cat /gone.txt']);
    expect(r.stdout).toBe('gone');
    expect(r.exitCode).toBe(0);
    r = await as(['exec', sif, 'cat', '/gone.txt']);
    expect(r.exitCode).toBe(1);
    r = await as([
      'exec',
      '--writable-tmpfs=8',
      sif,
      'sh',
      '-c',
      'dd if=/dev/zero of=/big bs=1M count=4 status=none && echo 4-fit',
    ]);
    expect(r.stdout).toBe('4-fit');
    r = await as(['exec', '--writable-tmpfs=8', sif, 'dd', 'if=/dev/zero', 'of=/big', 'bs=1M', 'count=20', 'status=none']);
    expect(r.stderr).toBe("dd: error writing '/big': No space left on device");
    expect(r.exitCode).toBe(1);
    expect(leftMounted()).toEqual([]);
  });

  it('exit statuses and signals pass through; a signal to sifuse reaches the command and the overlay is committed', async (ctx) => {
    needSetup(ctx);
    let r = await as(['exec', sif, 'sh', '-c', 'exit 42']);
    expect(r.exitCode).toBe(42);
    r = await as(['exec', sif, 'sh', '-c', 'kill -KILL $$']);
    expect(r.exitCode).toBe(137);
    r = await as(['exec', '--overlay', 'ov.img', sif, 'false']);
    expect(r.exitCode).toBe(1);
    // SIGTERM to sifuse (not to the command): the command's trap runs, writes into the overlay, exits 5.
    const child = execa(
      'runuser',
      [
        '-u',
        USER,
        '--',
        sifuseBin,
        'exec',
        '--overlay',
        'ov.img',
        sif,
        'bash',
        '-c',
        'trap "echo trapped > /trapped.txt; exit 5" TERM; echo ready; while :; do sleep 0.1; done',
      ],
      {
        reject: false,
        cwd: work,
        extendEnv: false,
        env: { HOME: work, XDG_RUNTIME_DIR: path.join(work, 'run'), PATH: process.env.PATH ?? '' },
        timeout: 60_000,
      },
    );
    await new Promise<void>((resolve) => child.stdout!.on('data', (b: Buffer) => b.toString().includes('ready') && resolve()));
    // The signal goes to sifuse itself (runuser's child), not to runuser, which would die of it.
    const sifusePid = Number(fs.readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(' ')[0]);
    expect(fs.readFileSync(`/proc/${sifusePid}/cmdline`, 'utf8')).toContain('exec');
    process.kill(sifusePid, 'SIGTERM');
    const done = await child;
    expect(done.exitCode).toBe(5);
    expect((await as(['cat', 'ov.img', '/upper/trapped.txt'])).stdout).toBe('trapped');

    // Ctrl-C: SIGINT to the whole process group, as a terminal sends it. bwrap must survive it
    // (its death would SIGKILL the command), the command gets it and its trap runs.
    const group = execa(
      'runuser',
      [
        '-u',
        USER,
        '--',
        sifuseBin,
        'exec',
        '--overlay',
        'ov.img',
        sif,
        'bash',
        '-c',
        'trap "echo interrupted > /interrupted.txt; exit 6" INT; echo ready; while :; do sleep 0.1; done',
      ],
      {
        reject: false,
        cwd: work,
        detached: true,
        stdin: 'ignore',
        extendEnv: false,
        env: { HOME: work, XDG_RUNTIME_DIR: path.join(work, 'run'), PATH: process.env.PATH ?? '' },
        timeout: 60_000,
      },
    );
    await new Promise<void>((resolve) => group.stdout!.on('data', (b: Buffer) => b.toString().includes('ready') && resolve()));
    process.kill(-group.pid!, 'SIGINT');
    expect((await group).exitCode).toBe(6);
    expect((await as(['cat', 'ov.img', '/upper/interrupted.txt'])).stdout).toBe('interrupted');

    // `sifuse shell` on a terminal: Ctrl-C stops the foreground command, the shell and its mount live on.
    const tty = await execa(
      'runuser',
      ['-u', USER, '--', 'python3', path.join(toolsDir, 'ctrl-c.py'), sifuseBin, 'shell', '--overlay', 'ov.img', sif],
      {
        reject: false,
        cwd: work,
        extendEnv: false,
        env: { HOME: work, XDG_RUNTIME_DIR: path.join(work, 'run'), PATH: process.env.PATH ?? '' },
        timeout: 120_000,
      },
    );
    const session = JSON.parse(tty.stdout) as { alive: boolean; status: number; output: string };
    expect(session.alive, session.output).toBe(true);
    expect(session.status).toBe(4);
    expect(leftMounted()).toEqual([]);
  });
});

describe('--fakeroot dpkg -i', () => {
  it('leaves root-owned files in the ext3 image, shown the same by the kernel overlayfs over the SIF and image', async (ctx) => {
    const d = needSetup(ctx);
    const pkg = path.join(d, 'pkg');
    fs.mkdirSync(path.join(pkg, 'DEBIAN'), { recursive: true });
    fs.mkdirSync(path.join(pkg, 'usr', 'bin'), { recursive: true });
    fs.mkdirSync(path.join(pkg, 'usr', 'share', 'hello-sifuse'), { recursive: true });
    fs.writeFileSync(
      path.join(pkg, 'DEBIAN', 'control'),
      'Package: hello-sifuse\nVersion: 1.0\nArchitecture: all\nMaintainer: sifuse tests <tests@example.org>\nDescription: a package for the --fakeroot test\n',
    );
    fs.writeFileSync(path.join(pkg, 'usr', 'bin', 'hello-sifuse'), '#!/bin/sh\necho hello from the deb\n', { mode: 0o755 });
    fs.writeFileSync(path.join(pkg, 'usr', 'share', 'hello-sifuse', 'data'), 'data\n');
    const debs = path.join(d, 'debs');
    fs.mkdirSync(debs);
    await execa('dpkg-deb', ['--root-owner-group', '--build', pkg, path.join(debs, 'hello.deb')]);
    fs.chmodSync(path.join(debs, 'hello.deb'), 0o644);

    let r = await as(['overlay', 'create', '--size', '64', 'fr.img']);
    expect(r.exitCode).toBe(0);
    // upper/ is the user's (made without --fakeroot): root inside owns it, as with Apptainer's kernel overlay.
    r = await as([
      'exec',
      '--fakeroot',
      '--overlay',
      'fr.img',
      sif,
      'sh',
      '-c',
      'stat -c "%u:%g" / && touch /at-root && rm /at-root',
    ]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('0:0');
    // A directory overlay as the unprivileged user: what root makes is the user's on the host, root's inside.
    asUser('mkdir', 'fakedir');
    r = await as([
      'exec',
      '--fakeroot',
      '--overlay',
      'fakedir',
      sif,
      'sh',
      '-c',
      'mkdir /opt/new && touch /opt/new/f && echo x >> /etc/hostname && stat -c "%u:%g %n" /opt/new/f /etc/hostname',
    ]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('0:0 /opt/new/f\n0:0 /etc/hostname');
    expect(fs.statSync(userFile('fakedir/upper/opt/new/f')).uid).toBe(Number(uid));
    r = await as(['exec', '--fakeroot', '--overlay', 'fr.img', '--bind', `${debs}:/mnt:ro`, sif, 'dpkg', '-i', '/mnt/hello.deb']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('Setting up hello-sifuse (1.0) ...');
    expect(r.exitCode).toBe(0);
    r = await as([
      'exec',
      '--fakeroot',
      '--overlay',
      'fr.img',
      sif,
      'sh',
      '-c',
      'hello-sifuse; stat -c "%u:%g %a %n" /usr/bin/hello-sifuse; dpkg -s hello-sifuse | sed -n 2p',
    ]);
    expect(r.stdout).toBe('hello from the deb\n0:0 755 /usr/bin/hello-sifuse\nStatus: install ok installed');
    // In the image: 0:0, as Apptainer's --fakeroot leaves them.
    const inImage = (await as(['manifest', 'fr.img', '/upper/usr'])).stdout.split('\n').map((l) => l.split('\t'));
    const owners = (p: string) => inImage.find((f) => f[0] === p)?.slice(1, 5);
    expect(owners('/upper/usr/bin/hello-sifuse')).toEqual(['f', '0755', '0', '0']);
    expect(owners('/upper/usr/share/hello-sifuse')).toEqual(['d', '0755', '0', '0']);
    expect(owners('/upper/usr/share/hello-sifuse/data')).toEqual(['f', '0644', '0', '0']);
    expect(spawnSync('e2fsck', ['-fn', userFile('fr.img')]).status).toBe(0);

    // As root, the kernel's view: the SIF's SquashFS at its offset and the image's upper/, merged by overlayfs.
    const row = (await execa('siftool', ['list', sif])).stdout.split('\n').find((l) => l.includes('Squashfs'))!;
    const [start, end] = /\|(\d+)-(\d+)/.exec(row)!.slice(1).map(Number) as [number, number];
    const kernel = await withLoopMount(
      sif,
      'squashfs',
      d,
      (sq) =>
        withLoopMount(userFile('fr.img'), 'ext3', d, async (ext) => {
          const merged = fs.mkdtempSync(path.join(d, 'merged-'));
          await execa('mount', ['-t', 'overlay', 'overlay', '-o', `ro,lowerdir=${ext}/upper:${sq}`, merged]);
          try {
            return await treeManifest(merged);
          } finally {
            await execa('umount', [merged]);
          }
        }),
      { offset: start, sizelimit: end - start },
    );
    // sifuse's view of the same pair, as root (owners as stored).
    const mnt = fs.mkdtempSync(path.join(d, 'sifuse-'));
    const m = await execa(sifuseBin, ['mount', '--overlay', `${userFile('fr.img')}:ro`, sif, mnt], { reject: false });
    expect(m.stderr).toBe('');
    let ours: Buffer;
    try {
      ours = await treeManifest(mnt);
    } finally {
      await execa(sifuseBin, ['umount', mnt]);
    }
    expect(kernel.toString()).toMatch(/^\/usr\/bin\/hello-sifuse\tf\t0755\t0\t0\t34\t/m);
    expectSameManifest(ours, kernel, 'sifuse mount vs kernel overlayfs of the SIF and fr.img');
    expect(leftMounted()).toEqual([]);
  }, 120_000);
});

describe('bad input: one line, non-zero, nothing mounted, nothing written', () => {
  it('user namespaces disabled', async (ctx) => {
    needSetup(ctx);
    // A user namespace whose own limit allows no nested one: bwrap cannot make the container's.
    const r = await execa(
      'unshare',
      [
        '--user',
        '--map-root-user',
        'sh',
        '-c',
        'echo 0 > /proc/sys/user/max_user_namespaces && exec "$0" "$@"',
        sifuseBin,
        'exec',
        sif,
        'true',
      ],
      {
        reject: false,
        cwd: work,
        env: { HOME: work },
      },
    );
    expect(r.stderr).toMatch(
      /^sifuse: bwrap: cannot create a user namespace \(.*\); unprivileged user namespaces may be disabled on this host$/,
    );
    expect(r.exitCode).toBe(1);
    expect(leftMounted()).toEqual([]);
  });

  it('an overlay locked by a running instance', async (ctx) => {
    needSetup(ctx);
    let r = await as(['overlay', 'create', '--size', '64', 'locked.img']);
    expect(r.exitCode).toBe(0);
    r = await as(['instance', 'start', '--overlay', 'locked.img', sif, 'holder']);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    try {
      const before = fs.readFileSync(userFile('locked.img'));
      r = await as(['exec', '--overlay', 'locked.img', sif, 'touch', '/never']);
      expect(r.stderr).toBe('sifuse: locked.img: is in use for writing by another process (its write lock is held)');
      expect(r.exitCode).toBe(1);
      r = await as(['instance', 'start', '--overlay', 'locked.img', sif, 'second']);
      expect(r.stderr).toBe('sifuse: locked.img: is in use for writing by another process (its write lock is held)');
      expect(r.exitCode).toBe(1);
      expect(fs.readFileSync(userFile('locked.img')).equals(before)).toBe(true);
      // The instance itself writes; a read-only use beside it is allowed.
      r = await as(['exec', 'instance://holder', 'sh', '-c', 'echo from-instance > /inst.txt']);
      expect(r.exitCode).toBe(0);
    } finally {
      r = await as(['instance', 'stop', 'holder']);
      expect(r.exitCode).toBe(0);
    }
    r = await as(['exec', '--overlay', 'locked.img', sif, 'cat', '/inst.txt', '/never']);
    expect(r.stdout).toBe('from-instance');
    expect(r.stderr).toBe('cat: /never: No such file or directory');
    expect(leftMounted()).toEqual([]);
  });

  it('a full image: the command sees ENOSPC, the image stays clean and usable', async (ctx) => {
    needSetup(ctx);
    let r = await as(['overlay', 'create', '--size', '64', 'full.img']);
    expect(r.exitCode).toBe(0);
    r = await as(['exec', '--overlay', 'full.img', sif, 'dd', 'if=/dev/zero', 'of=/fill', 'bs=1M', 'count=100', 'status=none']);
    expect(r.stderr).toBe("dd: error writing '/fill': No space left on device");
    expect(r.exitCode).toBe(1);
    r = await as(['exec', '--overlay', 'full.img', sif, 'mkdir', '/more']);
    expect(r.stderr).toBe("mkdir: cannot create directory '/more': No space left on device");
    expect(r.exitCode).toBe(1);
    expect(spawnSync('e2fsck', ['-fn', userFile('full.img')]).status).toBe(0);
    // Freeing space makes it usable again.
    r = await as(['exec', '--overlay', 'full.img', sif, 'sh', '-c', 'rm /fill && mkdir /more && echo ok']);
    expect(r.stdout).toBe('ok');
    expect(leftMounted()).toEqual([]);
  });
});
