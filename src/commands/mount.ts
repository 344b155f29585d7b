/**
 * `sifuse mount` and `sifuse umount`.
 *
 * `sifuse mount [flags] SIF MNT` (Apptainer's flags) or
 * `sifuse mount -o lowerdir=...,upperdir=...,workdir=... MNT` (fuse-overlayfs's form)
 * returns once the mount answers (exit 0) or failed (one line, non-zero). The
 * daemon runs in the background (a detached `sifuse mount -f ... --ready-fd 3`
 * child that reports on fd 3) unless -f. Its pid is recorded under the
 * user's runtime directory so `sifuse umount` can wait for it to finish
 * committing before it returns.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { spawn, execFile } from 'node:child_process';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { isFileProblem, FsError, UsageError } from '../errors.js';
import { clearDeadMount, serve } from '../fuse/serve.js';
import { sys } from '../native/sys.js';
import { runtimeDir } from '../runtime/runtime-dir.js';
import { openStack, parseOverlayfsOptions, type StackRequest } from '../fuse/stack.js';

interface MountFlags {
  overlay: string[];
  writable?: boolean;
  writableTmpfs?: string | boolean;
  fakeroot?: boolean;
  foreground?: boolean;
  debug?: boolean;
  stats?: boolean;
  o: string[];
  log?: string;
  readyFd?: string;
  closeFds?: string;
}

const DEFAULT_TMPFS_MIB = 64;

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // Not open (any more): nothing to release.
  }
}

function oneLine(err: unknown): string {
  if (isFileProblem(err)) return err.describe();
  if (err instanceof FsError) return err.message;
  return err instanceof Error ? err.message.split('\n')[0]! : String(err);
}

/** Where the daemon serving `mountpoint` records its pid while it runs. */
export function pidFile(mountpoint: string): string {
  const key = createHash('sha256').update(path.resolve(mountpoint)).digest('hex').slice(0, 16);
  return path.join(runtimeDir(), `mount-${key}.pid`);
}

function tmpfsMiB(v: string | boolean | undefined): number | undefined {
  if (v === undefined || v === false) return undefined;
  if (v === true) return DEFAULT_TMPFS_MIB;
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new UsageError(`--writable-tmpfs=${v}: expected a size in MiB`);
  return Number(v);
}

/** The layer stack a command line asks for. */
export function stackRequest(positional: string[], flags: MountFlags): { req: StackRequest; mountpoint: string } {
  // `--writable-tmpfs SIF MNT`: the optional size took the SIF; only `--writable-tmpfs=MiB` (digits) is a size.
  if (typeof flags.writableTmpfs === 'string' && !/^\d+$/.test(flags.writableTmpfs)) {
    positional = [flags.writableTmpfs, ...positional];
    flags = { ...flags, writableTmpfs: true };
  }
  const ovfs = flags.o.flatMap((o) => o.split(',')).filter((o) => o !== '');
  const layerOpts = ovfs.filter((o) => /^(lowerdir|upperdir|workdir)=/.test(o));
  if (layerOpts.length > 0 || positional.length === 1) {
    if (positional.length !== 1) throw new UsageError('with -o lowerdir=..., give only the mount point');
    const parsed = parseOverlayfsOptions(ovfs);
    if (flags.overlay.length || flags.writable || flags.writableTmpfs !== undefined) {
      throw new UsageError('-o lowerdir=... does not combine with --overlay, --writable or --writable-tmpfs');
    }
    return { req: { ...parsed.request, fakeroot: !!flags.fakeroot }, mountpoint: positional[0]! };
  }
  if (positional.length !== 2) throw new UsageError('usage: sifuse mount [flags] SIF MNT');
  const { mountOptions: kernelOpts, request: optRequest } = parseOverlayfsOptions(ovfs);
  return {
    req: {
      redirectDir: optRequest.redirectDir,
      image: positional[0]!,
      overlays: flags.overlay,
      writable: !!flags.writable,
      writableTmpfsMiB: tmpfsMiB(flags.writableTmpfs),
      fakeroot: !!flags.fakeroot,
      mountOptions: kernelOpts,
    },
    mountpoint: positional[1]!,
  };
}

async function foreground(positional: string[], flags: MountFlags): Promise<void> {
  const readyFd = flags.readyFd === undefined ? null : Number(flags.readyFd);
  /** False when nobody is waiting for the answer any more (the caller was interrupted). */
  const report = (line: string): boolean => {
    if (readyFd === null) return true;
    try {
      fs.writeSync(readyFd, `${line}\n`);
      return true;
    } catch {
      return false;
    } finally {
      closeQuietly(readyFd);
    }
  };
  // Descriptors bin/sifuse inherited above 9 (it cannot close those itself): not the daemon's to hold.
  for (const fd of flags.closeFds ? flags.closeFds.split(',').map(Number) : []) {
    if (fd > 2 && fd !== readyFd) closeQuietly(fd);
  }
  let pidPath: string | null = null;
  try {
    const { req, mountpoint } = stackRequest(positional, flags);
    clearDeadMount(mountpoint);
    const st = fs.statSync(mountpoint, { throwIfNoEntry: false });
    if (st && !st.isDirectory()) throw new UsageError('mount point is not a directory', mountpoint);
    const stack = await openStack(req);
    pidPath = pidFile(mountpoint);
    fs.writeFileSync(pidPath, `${process.pid}\n`);
    try {
      await serve({
        fs: stack.fs,
        mountpoint,
        fsname: path.resolve(stack.fsname),
        mountOptions: stack.mountOptions,
        debug: !!flags.debug,
        stats: !!flags.stats,
        // A caller that never learns the mount answered (SIGINT while it waited)
        // gets nothing left mounted: unmount as on SIGTERM.
        onReady: () => {
          if (!report('ok')) process.kill(process.pid, 'SIGTERM');
        },
      });
    } finally {
      stack.release();
    }
  } catch (err) {
    report(oneLine(err));
    throw err;
  } finally {
    if (pidPath) fs.rmSync(pidPath, { force: true });
  }
}

/**
 * Starts the daemon detached and waits for its first line on fd 3. The
 * daemon gets only its stdio and that pipe: descriptors this command
 * inherited (a shell's `exec 7>file`, make's jobserver pipe) are marked
 * close-on-exec first, so the long-lived daemon never holds them open (a
 * caller reading such a pipe to its end would wait for the unmount).
 */
function background(argv: string[], flags: MountFlags): Promise<void> {
  sys().cloexecFrom(3);
  const log = flags.log ? fs.openSync(flags.log, 'a') : 'ignore';
  const script = process.argv[1]!;
  const child = spawn(process.execPath, [...process.execArgv, script, 'mount', '-f', '--ready-fd', '3', ...argv], {
    detached: true,
    stdio: ['ignore', log, log, 'pipe'],
  });
  if (typeof log === 'number') fs.closeSync(log);
  return new Promise((resolve, reject) => {
    let answer = '';
    const pipe = child.stdio[3] as NodeJS.ReadableStream;
    const onExit = (code: number | null, sig: string | null): void =>
      reject(new UsageError(answer.trim() || `the mount daemon exited (${sig ?? `status ${code}`}) before the mount answered`));
    child.once('exit', onExit);
    pipe.on('data', (d: Buffer) => (answer += d.toString()));
    pipe.on('end', () => {
      const line = answer.split('\n')[0]!;
      if (line === 'ok') {
        child.off('exit', onExit);
        child.unref();
        resolve();
      } else if (line) {
        child.off('exit', onExit);
        child.unref();
        reject(new UsageError(line));
      }
    });
  });
}

function run(file: string, args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, (err, _stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 127) : 0;
      resolve({ code, stderr: String(stderr) });
    });
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** `sifuse umount MNT`: the kernel unmount, then wait until the daemon has committed and exited. */
export async function umount(mountpoint: string): Promise<void> {
  const pidPath = pidFile(mountpoint);
  let pid: number | null = null;
  try {
    pid = Number(fs.readFileSync(pidPath, 'utf8').trim()) || null;
  } catch {
    pid = null;
  }
  const r = await run('fusermount3', ['-u', mountpoint]);
  if (r.code !== 0) {
    const why = r.stderr.split('\n').find((l) => l.trim()) ?? 'fusermount3 -u failed';
    throw new UsageError(why.replace(/^fusermount3: /, ''), mountpoint);
  }
  if (pid === null) return;
  const deadline = Date.now() + 120_000;
  while (alive(pid) && fs.existsSync(pidPath)) {
    if (Date.now() > deadline)
      throw new UsageError(`the daemon (pid ${pid}) is still finishing; it will exit by itself`, mountpoint);
    await new Promise((res) => setTimeout(res, 20));
  }
}

export function registerMountCommands(program: Command): void {
  program
    .command('mount')
    .description('Mount a SIF (with overlays) or a fuse-overlayfs-style layer stack on MNT')
    .argument('<paths...>', 'SIF MNT, or MNT with -o lowerdir=...')
    .option('--overlay <path[:ro]>', 'an overlay (ext3 image, directory or SquashFS); repeatable', collect, [])
    .option('--writable', "write into the SIF's embedded overlay partition")
    .option('--writable-tmpfs [MiB]', `a discarded in-memory upper (default ${DEFAULT_TMPFS_MIB} MiB)`)
    .option('--fakeroot', 'files the caller creates belong to root (for a user namespace)')
    .option('-f, --foreground', 'serve in the foreground')
    .option('--debug', 'print each request with its time')
    .option('--stats', 'count requests by type and print them at unmount')
    .option('-o <options>', 'mount options (fuse-overlayfs: lowerdir=,upperdir=,workdir=)', collect, [])
    .option('--log <file>', 'where the background daemon writes its messages')
    .addOption(new Option('--ready-fd <fd>').hideHelp())
    .addOption(new Option('--close-fds <fd,...>').hideHelp())
    .action(async (paths: string[], flags: MountFlags) => {
      if (flags.readyFd !== undefined && !/^\d+$/.test(flags.readyFd)) throw new InvalidArgumentError('--ready-fd');
      if (flags.closeFds !== undefined && !/^\d+(,\d+)*$/.test(flags.closeFds)) throw new InvalidArgumentError('--close-fds');
      if (flags.foreground) {
        await foreground(paths, flags);
        return;
      }
      // Check the command line here, so usage errors come straight back.
      stackRequest(paths, flags);
      const argv = process.argv.slice(process.argv.indexOf('mount') + 1);
      await background(argv, flags);
    });

  program
    .command('umount')
    .description('Unmount a sifuse mount; returns when its daemon has committed and exited')
    .argument('<mnt>')
    .action(async (mnt: string) => {
      await umount(mnt);
    });
}
