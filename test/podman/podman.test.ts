/**
 * podman (Debian's 4.3, as root, runc, cgroupfs) with sifuse as the overlay
 * driver's mount_program, where fuse-overlayfs usually goes (issue 9). podman
 * runs the program as `PROG -o lowerdir=L1:L2,upperdir=U,workdir=W[,,volatile] MNT`
 * and unmounts MNT itself when the container stops. Everything podman keeps
 * lives in a temp dir (CONTAINERS_CONF / CONTAINERS_STORAGE_CONF; /etc/containers
 * is never read or written); containers run with --network none so no CNI
 * bridge or firewall rule is made on the host.
 *
 * The mount_program is a wrapper that logs each invocation and then runs the
 * shipped scripts/sifuse-overlayfs, so the test knows every container root
 * went through sifuse.
 */
import { execa } from 'execa';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { assembleHostRootfs } from '../../src/runtime/host-rootfs.js';
import { fuseAvailable } from '../fuse/helpers.js';
import { hasTool, isRoot, makeTempDir, repoRoot } from '../tools/helpers.js';
import { describeIf } from '../tools/skip.js';

const haveTools = (await hasTool('podman')) && (await hasTool('runc'));
const why = !isRoot
  ? 'podman as a mount_program client is tested as root (rootful podman)'
  : !haveTools
    ? 'podman or runc is not installed (scripts/install-system-deps.sh installs them)'
    : (fuseAvailable() ?? '');

describeIf(why === '', why)('podman with sifuse as mount_program', () => {
  let dir: string;
  let calls: string;
  let daemonLog: string;
  let env: NodeJS.ProcessEnv;

  const podman = (args: string[]) => execa('podman', ['--runtime', 'runc', ...args], { env, reject: false, timeout: 60_000 });

  /** The mounts under the temp dir, as /proc/self/mounts lines. */
  const mountsUnder = (): string[] =>
    fs
      .readFileSync('/proc/self/mounts', 'utf8')
      .split('\n')
      .filter((l) => l.split(' ')[1]?.startsWith(dir + '/'));

  const describeFailure = (what: string, r: { exitCode?: number | undefined; stdout: unknown; stderr: unknown }): string =>
    `${what}: exit ${r.exitCode}\n${String(r.stdout)}\n${String(r.stderr)}\n--- daemon log ---\n` +
    (fs.existsSync(daemonLog) ? fs.readFileSync(daemonLog, 'utf8').split('\n').slice(-20).join('\n') : '');

  /*
   * Rootful podman keeps a blob-info cache in /var/lib/containers/cache whatever
   * graphroot says (containers/image's default for root); removed again if this made it.
   */
  const systemCache = '/var/lib/containers';
  let systemCacheExisted = true;

  beforeAll(async () => {
    systemCacheExisted = fs.existsSync(systemCache);
    dir = makeTempDir('podman');
    fs.chmodSync(dir, 0o755);
    calls = path.join(dir, 'calls.log');
    daemonLog = path.join(dir, 'daemon.log');
    const program = path.join(dir, 'mount-program');
    fs.writeFileSync(
      program,
      `#!/bin/sh\nprintf '%s\\n' "$*" >> '${calls}'\nexec '${path.join(repoRoot, 'scripts', 'sifuse-overlayfs')}' "$@"\n`,
      { mode: 0o755 },
    );
    fs.writeFileSync(
      path.join(dir, 'containers.conf'),
      [
        '[containers]',
        'default_ulimits = []',
        '[engine]',
        'cgroup_manager = "cgroupfs"',
        'runtime = "runc"',
        'events_logger = "file"',
        `tmp_dir = "${dir}/libpod-tmp"`,
        '[network]',
        'network_backend = "cni"',
        `network_config_dir = "${dir}/cni"`,
        '',
      ].join('\n'),
    );
    fs.writeFileSync(
      path.join(dir, 'storage.conf'),
      [
        '[storage]',
        'driver = "overlay"',
        `graphroot = "${dir}/graph"`,
        `runroot = "${dir}/run"`,
        '[storage.options.overlay]',
        `mount_program = "${program}"`,
        '',
      ].join('\n'),
    );
    env = {
      ...process.env,
      CONTAINERS_CONF: path.join(dir, 'containers.conf'),
      CONTAINERS_STORAGE_CONF: path.join(dir, 'storage.conf'),
      SIFUSE_LOG: daemonLog,
    };
    const root = path.join(dir, 'rootfs');
    fs.mkdirSync(root);
    await assembleHostRootfs(root, { files: { '/etc/lower-only': { content: 'from the image\n' } } });
    await execa('tar', ['-C', root, '-cf', path.join(dir, 'rootfs.tar'), '.']);
  });

  afterAll(async () => {
    if (!dir) return;
    await podman(['rm', '-af', '-t', '0']);
    await podman(['rmi', '-af']);
    for (const line of mountsUnder().reverse()) await execa('umount', ['-l', line.split(' ')[1]!], { reject: false });
    fs.rmSync(dir, { recursive: true, force: true });
    if (!systemCacheExisted) fs.rmSync(systemCache, { recursive: true, force: true });
  });

  it('imports a rootfs tarball, runs it through sifuse, writes and deletes, commits, and the committed image has the changes', async () => {
    const imp = await podman(['import', '-q', path.join(dir, 'rootfs.tar'), 'localhost/sifuse-test:base']);
    expect(imp.exitCode, describeFailure('podman import', imp)).toBe(0);

    const script = [
      'echo written-in-container > /written',
      'mkdir -p /usr/new && echo nested > /usr/new/file',
      'rm /etc/lower-only',
      'chmod 600 /etc/passwd',
      // The container's root: its /proc/mounts line (fsname, type, options).
      'grep " / " /proc/mounts',
    ].join('; ');
    const run = await podman(['run', '--network', 'none', '--name', 'writer', 'localhost/sifuse-test:base', 'sh', '-c', script]);
    expect(run.exitCode, describeFailure('podman run', run)).toBe(0);
    const rootLine = run.stdout.split('\n').find((l) => l.split(' ')[1] === '/') ?? '';
    // The root is a sifuse mount whose source is one of the image's layers in graphroot.
    expect(rootLine.split(' ')[2]).toBe('fuse.sifuse');
    expect(rootLine.split(' ')[0]!.startsWith(`${dir}/graph/overlay/`)).toBe(true);
    // As root, like fuse-overlayfs: set-id programs work (no nosuid) and others may enter (allow_other).
    const opts = rootLine.split(' ')[3]!.split(',');
    expect(opts).not.toContain('nosuid');
    expect(opts).toContain('allow_other');

    const diff = await podman(['diff', 'writer']);
    expect(diff.exitCode, describeFailure('podman diff', diff)).toBe(0);
    const changes = diff.stdout.split('\n').filter((l) => l !== '');
    expect(changes).toEqual(
      expect.arrayContaining(['A /written', 'A /usr/new', 'A /usr/new/file', 'D /etc/lower-only', 'C /etc/passwd']),
    );

    const commit = await podman(['commit', '-q', 'writer', 'localhost/sifuse-test:committed']);
    expect(commit.exitCode, describeFailure('podman commit', commit)).toBe(0);

    const read = await podman([
      'run',
      '--rm',
      '--network',
      'none',
      'localhost/sifuse-test:committed',
      'sh',
      '-c',
      'cat /written /usr/new/file; stat -c %a /etc/passwd; test ! -e /etc/lower-only && echo lower-only-gone',
    ]);
    expect(read.exitCode, describeFailure('podman run (committed image)', read)).toBe(0);
    expect(read.stdout.split('\n')).toEqual(['written-in-container', 'nested', '600', 'lower-only-gone']);

    // The base image is unchanged underneath.
    const base = await podman([
      'run',
      '--rm',
      '--network',
      'none',
      'localhost/sifuse-test:base',
      'sh',
      '-c',
      'cat /etc/lower-only; test ! -e /written && echo clean',
    ]);
    expect(base.exitCode, describeFailure('podman run (base image)', base)).toBe(0);
    expect(base.stdout.split('\n')).toEqual(['from the image', 'clean']);
  });

  it("lets a container's non-root user into its root", async () => {
    const r = await podman([
      'run',
      '--rm',
      '--network',
      'none',
      '--user',
      '1000:1000',
      'localhost/sifuse-test:committed',
      'sh',
      '-c',
      'id -u; cat /written; echo mine > /tmp/by-user && cat /tmp/by-user',
    ]);
    expect(r.exitCode, describeFailure('podman run --user 1000', r)).toBe(0);
    expect(r.stdout.split('\n')).toEqual(['1000', 'written-in-container', 'mine']);
  });

  it('keeps a detached container mounted after podman exits, unmounts it at stop, and its upper persists to the next start', async () => {
    const start = await podman([
      'run',
      '-d',
      '--network',
      'none',
      '--name',
      'detached',
      'localhost/sifuse-test:base',
      'sleep',
      '120',
    ]);
    expect(start.exitCode, describeFailure('podman run -d', start)).toBe(0);
    const mnt = await podman(['inspect', '--format', '{{.GraphDriver.Data.MergedDir}}', 'detached']);
    expect(mnt.exitCode, describeFailure('podman inspect', mnt)).toBe(0);
    const merged = mnt.stdout.trim();
    // Seen from the host while it runs: the container's root is a sifuse mount.
    expect(
      mountsUnder()
        .find((l) => l.split(' ')[1] === merged)
        ?.split(' ')[2],
    ).toBe('fuse.sifuse');
    const write = await podman(['exec', 'detached', 'sh', '-c', 'echo kept > /kept']);
    expect(write.exitCode, describeFailure('podman exec', write)).toBe(0);
    const stop = await podman(['stop', '-t', '0', 'detached']);
    expect(stop.exitCode, describeFailure('podman stop', stop)).toBe(0);
    expect(mountsUnder().filter((l) => l.split(' ')[1] === merged)).toEqual([]);
    const again = await podman(['start', 'detached']);
    expect(again.exitCode, describeFailure('podman start', again)).toBe(0);
    const read = await podman(['exec', 'detached', 'cat', '/kept']);
    expect(read.stdout, describeFailure('podman exec cat', read)).toBe('kept');
    const rm = await podman(['rm', '-f', '-t', '0', 'detached']);
    expect(rm.exitCode, describeFailure('podman rm', rm)).toBe(0);
  });

  it('refuses an ID-mapped container by naming the option (uidmapping=), and podman says so', async () => {
    const r = await podman([
      'run',
      '--rm',
      '--network',
      'none',
      '--uidmap',
      '0:100000:65536',
      '--gidmap',
      '0:100000:65536',
      'localhost/sifuse-test:base',
      'true',
    ]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toContain('mount option "uidmapping" is not supported by sifuse');
    expect(mountsUnder().filter((l) => l.includes('fuse.sifuse'))).toEqual([]);
  });

  it("mounted every container root through sifuse, in fuse-overlayfs's calling form, and left nothing mounted", async () => {
    const lines = fs
      .readFileSync(calls, 'utf8')
      .split('\n')
      .filter((l) => l !== '');
    // One per container start at least (6), plus the read-only mounts `podman commit`/`diff` make.
    expect(lines.length).toBeGreaterThanOrEqual(6);
    for (const line of lines)
      expect(line).toMatch(new RegExp(`^-o lowerdir=${dir}/graph/overlay/\\S+ ${dir}/graph/overlay/\\S+/merged$`));
    // `podman run --rm` asks for a volatile upper (accepted: sifuse syncs anyway).
    expect(lines.some((l) => l.includes(',volatile'))).toBe(true);
    // The committed image's containers saw two lower layers, top first.
    expect(lines.some((l) => /lowerdir=[^,:]+:[^,:]+,upperdir=[^,]+\/diff,workdir=[^,]+\/work/.test(l))).toBe(true);
    // The containers have stopped: podman unmounted each root and the daemons are gone.
    const ps = await podman(['ps', '-q']);
    expect(ps.stdout.trim()).toBe('');
    expect(mountsUnder().filter((l) => l.includes('fuse.sifuse'))).toEqual([]);
    // Each daemon exits once its mount is gone (after closing its layers).
    const daemons = async () =>
      (await execa('ps', ['-eo', 'pid=,args='])).stdout
        .split('\n')
        .filter((l) => l.includes(` mount -f `) && l.includes(`${dir}/graph/`));
    const deadline = Date.now() + 30_000;
    while ((await daemons()).length > 0 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 100));
    expect(await daemons()).toEqual([]);
  });
});
