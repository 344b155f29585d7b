/**
 * The filesystems the mount workloads run on: sifuse and its peers of
 * shared/BENCHMARKS.md. A peer is a name, what it needs (tools, root), and
 * `mount(ctx)` resolving to { mnt, dirs, umount } where `mnt` is the merged
 * view, `dirs` every mountpoint it made (to find its daemons' /proc entries)
 * and `umount()` undoes everything (innermost first), even after a failure.
 *
 * Read peers mount the SIF read-only; write peers give a writable view over
 * it with a fresh, empty upper layer each time.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const sifuseBin = join(repo, 'bin', 'sifuse');
export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const workRoot = process.env.SIFUSE_BENCH_WORK || '/var/tmp/sifuse-bench-run';

export function have(tool) {
  return spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;
}

/** Runs `cmd` (60 s at most) and returns its stdout; throws naming `what` and stderr's last line when it fails. */
export function sh(cmd, args, what) {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
  if (r.status !== 0) {
    throw new Error(
      `${what ?? cmd}: ${cmd} ${args.join(' ')} failed (exit ${r.status}): ${String(r.stderr).trim().split('\n').pop()}`,
    );
  }
  return String(r.stdout);
}

/** True when `dir` is a mountpoint now (reads /proc/self/mountinfo, never touches the mount). */
export function isMounted(dir) {
  const info = readFileSync('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((l) => l.split(' ')[4] === dir);
}

/** Unmounts a FUSE or kernel mount, lazily if it is busy or dead; never throws. */
export function unmount(dir) {
  if (!isMounted(dir)) return;
  for (const [cmd, args] of [
    ['fusermount3', ['-u', dir]],
    ['fusermount', ['-u', dir]],
    ['umount', [dir]],
    ['fusermount3', ['-uz', dir]],
    ['umount', ['-l', dir]],
  ]) {
    if (spawnSync(cmd, args, { stdio: 'ignore', timeout: 30_000 }).status === 0 && !isMounted(dir)) return;
  }
}

/** Waits (bounded) until `dir` is a mountpoint: some daemons return before the mount is there. */
export async function waitMounted(dir, what) {
  for (let i = 0; i < 200; i++) {
    if (isMounted(dir)) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`${what}: ${dir} is not mounted 2 s after the command returned`);
}

/** Pids of the daemons whose command line names one of `dirs` (not the workload's own tools). */
export function daemonPids(dirs) {
  const pids = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    let cmdline;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (!cmdline.some((a) => dirs.includes(a) || dirs.some((d) => a.includes(`=${d}`) || a.endsWith(d)))) continue;
    if (/^(sh|bash|find|tar|wc|ls|dd|python3|bwrap|timeout|rm)$/.test(cmdline[0].split('/').pop())) continue;
    pids.push(pid);
  }
  return pids;
}

/** Peak RSS (VmHWM, bytes) summed over the processes whose command line names one of `dirs`. */
export function daemonPeakRss(dirs) {
  let total = 0;
  let found = 0;
  for (const pid of daemonPids(dirs)) {
    try {
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) {
        total += Number(m[1]) * 1024;
        found++;
      }
    } catch {
      continue;
    }
  }
  return found > 0 ? total : null;
}

/** A fresh scratch directory for one mount: mountpoints and upper layers live here. */
function scratch(label) {
  mkdirSync(workRoot, { recursive: true });
  return mkdtempSync(join(workRoot, `${label}-`));
}

/**
 * Runs `build(dir, undo)` in a fresh scratch dir; on failure everything it
 * had set up is undone before the error goes on.
 */
async function guarded(label, build) {
  const dir = scratch(label);
  const undo = [];
  try {
    return await build(dir, undo);
  } catch (err) {
    await undoAll(undo, dir)();
    throw err;
  }
}

/** Runs the steps' undo functions in reverse order, then removes the scratch dir. */
function undoAll(undo, dir) {
  return async () => {
    for (const u of undo.reverse()) {
      try {
        await u();
      } catch {
        // best effort: the rest still runs
      }
    }
    for (const d of readdirSync(dir)) if (isMounted(join(dir, d))) unmount(join(dir, d));
    rmSync(dir, { recursive: true, force: true });
  };
}

/** The daemon's --stats report from its log (it writes it at unmount; waits up to 2 s), or null. */
function readStats(log) {
  for (let i = 0; i < 40; i++) {
    try {
      const text = readFileSync(log, 'utf8');
      const at = text.indexOf('sifuse stats:');
      if (at >= 0) return text.slice(at).trim();
    } catch {
      // not written yet
    }
    spawnSync('sleep', ['0.05']);
  }
  return null;
}

/** `sifuse mount` exists in this build (the FUSE mount lands separately). */
export function sifuseMountState() {
  if (!existsSync(join(repo, 'dist'))) return { ok: false, why: 'dist/ is not built (npm run build)' };
  const r = spawnSync(sifuseBin, ['mount', '--help'], { encoding: 'utf8' });
  if (r.status !== 0 || !/^Usage: sifuse mount/m.test(r.stdout)) {
    return { ok: false, why: '`sifuse mount` does not exist in this build yet (no mount command): sifuse is left out' };
  }
  return { ok: true, help: r.stdout, overlay: /--overlay/.test(r.stdout) };
}

/**
 * null when `sifuse mount --overlay IMG SIF MNT` works in this build (tried
 * once on a tiny image), else its one-line error: the write path may land
 * after the read path.
 */
let overlayProbe;
function probeOverlayMount() {
  if (overlayProbe !== undefined) return overlayProbe;
  const dir = scratch('probe');
  try {
    const img = join(dir, 'o.img');
    const src = join(dir, 'src');
    mkdirSync(src);
    sh('mksquashfs', [src, join(dir, 'r.sqfs'), '-quiet', '-no-progress'], 'mksquashfs');
    sh(sifuseBin, ['overlay', 'create', '--size', '64', img], 'sifuse overlay create');
    const mnt = join(dir, 'mnt');
    mkdirSync(mnt);
    const r = spawnSync(sifuseBin, ['mount', '--overlay', img, join(dir, 'r.sqfs'), mnt], { encoding: 'utf8', timeout: 60_000 });
    if (r.status === 0) {
      spawnSync(sifuseBin, ['umount', mnt], { stdio: 'ignore', timeout: 60_000 });
      unmount(mnt);
      overlayProbe = null;
    } else {
      overlayProbe = `\`sifuse mount --overlay\` fails in this build: ${String(r.stderr).trim().split('\n').pop()}`;
    }
  } catch (err) {
    overlayProbe = `the --overlay probe failed: ${err.message}`;
  } finally {
    if (isMounted(join(dir, 'mnt'))) unmount(join(dir, 'mnt'));
    rmSync(dir, { recursive: true, force: true });
  }
  return overlayProbe;
}

async function squashfuseLl(sif, offset, dir, undo, name = 'lower') {
  const m = join(dir, name);
  mkdirSync(m);
  sh('squashfuse_ll', ['-o', `offset=${offset}`, sif, m], 'squashfuse_ll');
  undo.push(() => unmount(m));
  await waitMounted(m, 'squashfuse_ll');
  return m;
}

function kernelSquashfs(sif, offset, dir, undo, name = 'lower') {
  const m = join(dir, name);
  mkdirSync(m);
  sh('mount', ['-t', 'squashfs', '-o', `loop,ro,offset=${offset}`, sif, m], 'kernel squashfs');
  undo.push(() => unmount(m));
  return m;
}

/** An empty ext3 image holding upper/ and work/ as Apptainer's `overlay create` makes it. */
function ext3Image(dir, mib = 4096) {
  const img = join(dir, 'overlay.img');
  sh('truncate', ['-s', `${mib}M`, img]);
  sh('mkfs.ext3', ['-q', '-F', img], 'mkfs.ext3');
  return img;
}

/** Read peers: { name, needs, why() -> null | reason, mount({sif, offset}) }. */
export function readPeers() {
  return [
    {
      name: 'sifuse',
      why: () => {
        const s = sifuseMountState();
        return s.ok ? null : s.why;
      },
      /** With `stats`, the daemon counts requests (--stats) and `result.stats` holds its report after umount. */
      mount({ sif, stats = false }) {
        return guarded('sifuse', async (dir, undo) => {
          const mnt = join(dir, 'mnt');
          mkdirSync(mnt);
          const log = join(dir, 'daemon.log');
          sh(sifuseBin, ['mount', ...(stats ? ['--stats', '--log', log] : []), sif, mnt], 'sifuse mount');
          const result = { mnt, dirs: [mnt], stats: null, umount: undefined };
          undo.push(() => {
            spawnSync(sifuseBin, ['umount', mnt], { stdio: 'ignore', timeout: 60_000 });
            unmount(mnt);
            if (stats) result.stats = readStats(log);
          });
          await waitMounted(mnt, 'sifuse mount');
          result.umount = undoAll(undo, dir);
          return result;
        });
      },
    },
    {
      name: 'squashfuse_ll',
      why: () => (have('squashfuse_ll') ? null : 'squashfuse_ll is not installed'),
      mount({ sif, offset }) {
        return guarded('sqll', async (dir, undo) => {
          const mnt = await squashfuseLl(sif, offset, dir, undo, 'mnt');
          return { mnt, dirs: [mnt], umount: undoAll(undo, dir) };
        });
      },
    },
    {
      name: 'squashfuse',
      why: () => (have('squashfuse') ? null : 'squashfuse is not installed'),
      mount({ sif, offset }) {
        return guarded('sqfuse', async (dir, undo) => {
          const mnt = join(dir, 'mnt');
          mkdirSync(mnt);
          sh('squashfuse', ['-o', `offset=${offset}`, sif, mnt], 'squashfuse');
          undo.push(() => unmount(mnt));
          await waitMounted(mnt, 'squashfuse');
          return { mnt, dirs: [mnt], umount: undoAll(undo, dir) };
        });
      },
    },
    {
      name: 'kernel',
      why: () => (isRoot ? null : 'the kernel squashfs loop mount needs root'),
      mount({ sif, offset }) {
        return guarded('kernel', async (dir, undo) => {
          const mnt = kernelSquashfs(sif, offset, dir, undo, 'mnt');
          return { mnt, dirs: [], umount: undoAll(undo, dir) };
        });
      },
    },
    {
      name: 'fuse-overlayfs/squashfuse_ll',
      why: () => (have('fuse-overlayfs') && have('squashfuse_ll') ? null : 'fuse-overlayfs or squashfuse_ll is not installed'),
      mount({ sif, offset }) {
        return guarded('fovl', async (dir, undo) => {
          const lower = await squashfuseLl(sif, offset, dir, undo);
          for (const d of ['upper', 'work', 'mnt']) mkdirSync(join(dir, d));
          const mnt = join(dir, 'mnt');
          sh(
            'fuse-overlayfs',
            ['-o', `lowerdir=${lower},upperdir=${join(dir, 'upper')},workdir=${join(dir, 'work')}`, mnt],
            'fuse-overlayfs',
          );
          undo.push(() => unmount(mnt));
          await waitMounted(mnt, 'fuse-overlayfs');
          return { mnt, dirs: [mnt, lower], umount: undoAll(undo, dir) };
        });
      },
    },
  ];
}

/** Write peers: a writable view over the image with a fresh upper layer. */
export function writePeers() {
  return [
    {
      name: 'sifuse',
      why: () => {
        const s = sifuseMountState();
        if (!s.ok) return s.why;
        if (!s.overlay) return '`sifuse mount` has no --overlay option yet';
        return probeOverlayMount();
      },
      /**
       * With `stats`, the daemon counts requests (--stats) and `takeStats()`
       * returns its report since the last call (SIGUSR2 makes it print and
       * start again), so each write workload gets its own.
       */
      mount({ sif, stats = false }) {
        return guarded('sifuse-w', async (dir, undo) => {
          const img = join(dir, 'overlay.img');
          sh(sifuseBin, ['overlay', 'create', '--size', '4096', '--sparse', img], 'sifuse overlay create');
          const mnt = join(dir, 'mnt');
          mkdirSync(mnt);
          const log = join(dir, 'daemon.log');
          sh(
            sifuseBin,
            ['mount', ...(stats ? ['--stats', '--log', log] : []), '--overlay', img, sif, mnt],
            'sifuse mount --overlay',
          );
          undo.push(() => {
            spawnSync(sifuseBin, ['umount', mnt], { stdio: 'ignore', timeout: 120_000 });
            unmount(mnt);
          });
          await waitMounted(mnt, 'sifuse mount');
          const result = { mnt, dirs: [mnt], umount: undoAll(undo, dir) };
          if (stats) {
            let seen = 0;
            result.takeStats = () => {
              const pids = daemonPids([mnt]);
              if (pids.length === 0) return null;
              for (const pid of pids) spawnSync('kill', ['-USR2', pid], { stdio: 'ignore' });
              for (let i = 0; i < 40; i++) {
                const text = readFileSync(log, 'utf8');
                const at = text.indexOf('sifuse stats:', seen);
                // The daemon writes a report with one write ending in a newline.
                if (at >= 0 && text.endsWith('\n')) {
                  seen = text.length;
                  return text.slice(at).trim();
                }
                spawnSync('sleep', ['0.05']);
              }
              return null;
            };
          }
          return result;
        });
      },
    },
    {
      name: 'apptainer-stack',
      why: () =>
        ['squashfuse_ll', 'fuse2fs', 'fuse-overlayfs', 'mkfs.ext3'].every(have)
          ? null
          : 'needs squashfuse_ll, fuse2fs, fuse-overlayfs and mkfs.ext3',
      mount({ sif, offset }) {
        return guarded('appt', async (dir, undo) => {
          const lower = await squashfuseLl(sif, offset, dir, undo);
          const img = ext3Image(dir);
          const e = join(dir, 'ext3');
          mkdirSync(e);
          sh('fuse2fs', [img, e, '-o', 'fakeroot'], 'fuse2fs');
          undo.push(() => unmount(e));
          await waitMounted(e, 'fuse2fs');
          execFileSync('mkdir', ['-p', join(e, 'upper'), join(e, 'work')]);
          const mnt = join(dir, 'mnt');
          mkdirSync(mnt);
          sh(
            'fuse-overlayfs',
            ['-o', `lowerdir=${lower},upperdir=${join(e, 'upper')},workdir=${join(e, 'work')}`, mnt],
            'fuse-overlayfs',
          );
          undo.push(() => unmount(mnt));
          await waitMounted(mnt, 'fuse-overlayfs');
          return { mnt, dirs: [mnt, lower, e], umount: undoAll(undo, dir) };
        });
      },
    },
    {
      name: 'fuse-overlayfs/host',
      why: () => (have('fuse-overlayfs') ? null : 'fuse-overlayfs is not installed'),
      mount({ rootfs }) {
        return guarded('fovl-host', async (dir, undo) => {
          for (const d of ['upper', 'work', 'mnt']) mkdirSync(join(dir, d));
          const mnt = join(dir, 'mnt');
          sh(
            'fuse-overlayfs',
            ['-o', `lowerdir=${rootfs},upperdir=${join(dir, 'upper')},workdir=${join(dir, 'work')}`, mnt],
            'fuse-overlayfs',
          );
          undo.push(() => unmount(mnt));
          await waitMounted(mnt, 'fuse-overlayfs');
          return { mnt, dirs: [mnt], umount: undoAll(undo, dir) };
        });
      },
    },
    {
      name: 'kernel-overlay/ext3',
      why: () =>
        isRoot ? (have('mkfs.ext3') ? null : 'mkfs.ext3 is not installed') : 'kernel overlayfs on a loop ext3 needs root',
      mount({ sif, offset }) {
        return guarded('kovl', async (dir, undo) => {
          const lower = kernelSquashfs(sif, offset, dir, undo);
          const img = ext3Image(dir);
          const e = join(dir, 'ext3');
          mkdirSync(e);
          sh('mount', ['-t', 'ext3', '-o', 'loop', img, e], 'mount ext3');
          undo.push(() => unmount(e));
          execFileSync('mkdir', ['-p', join(e, 'upper'), join(e, 'work')]);
          const mnt = join(dir, 'mnt');
          mkdirSync(mnt);
          sh(
            'mount',
            ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${join(e, 'upper')},workdir=${join(e, 'work')}`, mnt],
            'kernel overlay',
          );
          undo.push(() => unmount(mnt));
          return { mnt, dirs: [], umount: undoAll(undo, dir) };
        });
      },
    },
  ];
}
