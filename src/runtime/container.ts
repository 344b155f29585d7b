/**
 * `sifuse exec|run|shell`: mount the image as `sifuse mount` does, enter the
 * merged tree with bubblewrap (unprivileged user namespaces) as `/`, run the
 * command with stdin/stdout/stderr passed through, then unmount, whatever
 * the command's end. The command's exit status becomes sifuse's (128 + the
 * signal number when it was killed by one, as a shell reports it).
 *
 * The mount is a `sifuse mount` daemon of its own (the same flags), so the
 * FUSE server is never this process: nothing here can deadlock by touching
 * the mount, and the checks below (is there a runscript, does $HOME exist
 * inside) are ordinary file system calls on it.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { spawn } from 'node:child_process';
import { UsageError } from '../errors.js';
import { runtimeDir } from './runtime-dir.js';
import { bwrapArgs, parseBind, type BindSpec, type BwrapPlan, type TopEntry } from './bwrap.js';

export interface ContainerOptions {
  overlays: string[];
  writable: boolean;
  /** MiB, or undefined for none. */
  writableTmpfs?: number;
  fakeroot: boolean;
  binds: string[];
  contain: boolean;
  env: string[];
  pwd?: string;
}

export type Action = { kind: 'exec'; argv: string[] } | { kind: 'run'; args: string[] } | { kind: 'shell'; shell?: string };

export const SIFUSE_BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'sifuse');

/** The flags `sifuse mount` takes for the same layers. */
export function mountFlags(o: ContainerOptions): string[] {
  const f: string[] = [];
  for (const ov of o.overlays) f.push('--overlay', ov);
  if (o.writable) f.push('--writable');
  if (o.writableTmpfs !== undefined) f.push(`--writable-tmpfs=${o.writableTmpfs}`);
  if (o.fakeroot) f.push('--fakeroot');
  return f;
}

export async function requireBwrap(): Promise<void> {
  const v = await execa('bwrap', ['--version'], { reject: false });
  if ((v as { code?: string }).code === 'ENOENT') {
    throw new UsageError('bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)', 'bwrap');
  }
  const probe = await execa('bwrap', ['--unshare-user', '--dev-bind', '/', '/', 'true'], { reject: false });
  if (probe.exitCode !== 0) {
    const why = probe.stderr.split('\n').filter(Boolean).pop() ?? 'failed';
    throw new UsageError(
      `cannot create a user namespace (${why.replace(/^bwrap: /, '')}); unprivileged user namespaces may be disabled on this host`,
      'bwrap',
    );
  }
}

function checkBinds(specs: string[]): BindSpec[] {
  return specs.map((s) => {
    let b: BindSpec;
    try {
      b = parseBind(s);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    if (!fs.existsSync(b.src)) throw new UsageError('bind source does not exist', b.src);
    return { ...b, src: path.resolve(b.src) };
  });
}

/** A private, empty mount point under the user's runtime directory. */
function makeMountPoint(): string {
  return fs.mkdtempSync(path.join(runtimeDir(), 'root-'));
}

function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/**
 * The underlay for a tree that lacks a mount point bwrap must make and
 * cannot (a read-only tree): its top-level entries, or undefined when the
 * tree can be bound as `/` as it is.
 */
function underlayFor(root: string, contain: boolean): TopEntry[] | undefined {
  const needed = contain ? ['dev', 'proc', 'tmp'] : ['dev', 'proc', 'tmp', 'sys'];
  if (needed.every((d) => isDir(path.join(root, d)))) return undefined;
  const out: TopEntry[] = [];
  for (const name of fs.readdirSync(root)) {
    if (['dev', 'proc'].includes(name)) continue;
    const st = fs.lstatSync(path.join(root, name));
    if (st.isSymbolicLink()) out.push({ name, kind: 'link', target: fs.readlinkSync(path.join(root, name)) });
    else if (st.isDirectory()) out.push({ name, kind: 'dir' });
    else if (st.isFile()) out.push({ name, kind: 'file' });
  }
  return out;
}

/** What runs inside for each action, decided by looking at the mounted tree. */
function commandFor(action: Action, root: string, image: string): { argv: string[]; shell: string | null } {
  const shell = ['/bin/sh', '/bin/bash'].find((s) => isFile(path.join(root, s))) ?? null;
  switch (action.kind) {
    case 'exec':
      return { argv: action.argv, shell };
    case 'run': {
      const script = ['/.singularity.d/runscript', '/singularity'].find((s) => isFile(path.join(root, s)));
      if (!script) throw new UsageError('no runscript in the image (/.singularity.d/runscript or /singularity)', image);
      return { argv: [script, ...action.args], shell };
    }
    case 'shell': {
      const interactive = action.shell ?? ['/bin/bash', '/bin/sh'].find((s) => isFile(path.join(root, s)));
      if (!interactive) throw new UsageError('no shell in the image (/bin/bash or /bin/sh)', image);
      return { argv: [interactive], shell };
    }
  }
}

/**
 * Host directories never bound over the container's own: `/` and its system
 * trees (a user whose home or working directory is /, /root, /usr/...
 * would otherwise replace the image with the host).
 */
const SYSTEM_DIRS = [
  'bin',
  'sbin',
  'lib',
  'lib32',
  'lib64',
  'libx32',
  'usr',
  'etc',
  'var',
  'opt',
  'boot',
  'dev',
  'proc',
  'sys',
  'run',
  'srv',
  'root',
  '.singularity.d',
];

function bindable(hostDir: string): boolean {
  const parts = path.resolve(hostDir).split('/').filter(Boolean);
  return parts.length > 0 && !SYSTEM_DIRS.includes(parts[0]!);
}

/** The bwrap plan for an action in the tree mounted at `mnt`. */
export function planFor(mnt: string, action: Action, o: ContainerOptions, image: string): BwrapPlan {
  const binds = checkBinds(o.binds);
  const { argv, shell } = commandFor(action, mnt, image);
  const home = os.homedir();
  const cwd = o.pwd ?? process.cwd();
  // The mount points bwrap makes must exist in the tree: a caller cannot create
  // them in an image's root directory (root's, 0755), so without them the
  // tree's top level is bound entry by entry onto an empty root instead.
  const underlay = underlayFor(mnt, o.contain);
  const defaultBinds: string[] = [];
  if (!o.contain) {
    for (const d of ['/tmp', home, process.cwd()]) {
      // A bind target bwrap would have to create inside the image is skipped
      // rather than written into the overlay (Apptainer puts such mount
      // points in its session directory, never in the image).
      const inside = underlay && d.split('/').filter(Boolean).length === 1 ? true : isDir(path.join(mnt, d));
      // A directory inside one already bound needs no bind of its own.
      const covered = defaultBinds.some((b) => d === b || d.startsWith(`${b}/`));
      if (bindable(d) && isDir(d) && inside && !covered) defaultBinds.push(d);
    }
  }
  return {
    root: mnt,
    underlay,
    defaultBinds,
    binds,
    contain: o.contain,
    fakeroot: o.fakeroot,
    cwd: isDir(path.join(mnt, cwd)) ? cwd : '/',
    env: o.env,
    shell,
    argv,
    image: path.resolve(image),
  };
}

/**
 * The command bwrap runs: the children of bwrap's monitor process (bwrap
 * forks once to enter the namespaces; the child execs the command).
 */
function commandPids(bwrapPid: number): number[] {
  try {
    return fs
      .readFileSync(`/proc/${bwrapPid}/task/${bwrapPid}/children`, 'utf8')
      .split(' ')
      .filter((p) => p.trim() !== '')
      .map(Number);
  } catch {
    return [];
  }
}

/** Runs bwrap in the foreground; resolves to the status sifuse exits with. */
function runBwrap(args: string[], restoresSignals: boolean): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    // The terminal's Ctrl-C (and Ctrl-\) reaches the command directly (same
    // process group); bwrap ignores them, or it would die and take the command
    // with it. Only when the command gets them back (ENV_PRELUDE's shell).
    const child = restoresSignals
      ? spawn('/bin/sh', ['-c', 'trap "" INT QUIT; exec bwrap "$@"', 'sifuse-bwrap', ...args], { stdio: 'inherit' })
      : spawn('bwrap', args, { stdio: 'inherit' });
    // The terminal sends Ctrl-C to the whole process group; a kill aimed at
    // sifuse alone is passed on to the command, so it can clean up itself
    // and its exit status is sifuse's. Not to bwrap: bwrap (0.8) neither
    // handles nor forwards signals, so it would die of it and take the
    // command down with SIGKILL (--die-with-parent) before any trap ran.
    const forward = (sig: NodeJS.Signals) => {
      // From a terminal, Ctrl-C already reached the command with the process group: not twice.
      if (restoresSignals && (sig === 'SIGINT' || sig === 'SIGQUIT') && process.stdin.isTTY) return;
      const targets = child.pid === undefined ? [] : commandPids(child.pid);
      if (targets.length === 0) child.kill(sig);
      for (const pid of targets) {
        try {
          process.kill(pid, sig);
        } catch {
          // Ended meanwhile.
        }
      }
    };
    const sigs: NodeJS.Signals[] = ['SIGTERM', 'SIGHUP', 'SIGINT', 'SIGQUIT'];
    for (const s of sigs) process.on(s, forward);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      for (const s of sigs) process.removeListener(s, forward);
      resolve(code ?? 128 + (signal ? (os.constants.signals[signal] ?? 0) : 0));
    });
  });
}

const INSTANCE = 'instance://';

/**
 * Runs the action in the image (or in the running instance named by
 * `instance://NAME`); resolves to the exit status for sifuse to exit with.
 */
export async function runContainer(image: string, action: Action, o: ContainerOptions): Promise<number> {
  await requireBwrap();
  checkBinds(o.binds);
  if (image.startsWith(INSTANCE)) {
    if (mountFlags(o).length > 0)
      throw new UsageError('overlay flags belong to `instance start`, not to a command run in the instance', image);
    const { instanceMountpoint } = await import('./instance.js');
    const mnt = instanceMountpoint(image.slice(INSTANCE.length));
    const plan = planFor(mnt, action, o, image);
    return runBwrap(bwrapArgs(plan), plan.shell !== null);
  }
  const mnt = makeMountPoint();
  let mounted = false;
  try {
    const m = await execa(SIFUSE_BIN, ['mount', ...mountFlags(o), image, mnt], { reject: false, stdin: 'ignore' });
    if (m.exitCode !== 0) {
      // `sifuse mount` already said what is wrong in one line; pass it on as it is.
      process.stderr.write(m.stderr.endsWith('\n') ? m.stderr : `${m.stderr}\n`);
      return m.exitCode ?? 1;
    }
    mounted = true;
    const plan = planFor(mnt, action, o, image);
    return await runBwrap(bwrapArgs(plan), plan.shell !== null);
  } finally {
    if (mounted) {
      const u = await execa(SIFUSE_BIN, ['umount', mnt], { reject: false });
      if (u.exitCode !== 0) process.stderr.write(`sifuse: ${mnt}: ${u.stderr.trim() || 'unmount failed'}\n`);
    }
    try {
      fs.rmdirSync(mnt);
    } catch {
      // Already gone, or still mounted (the message above said so).
    }
  }
}
