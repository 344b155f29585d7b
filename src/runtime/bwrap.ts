/**
 * The bubblewrap command line that enters a mounted container tree as `/`.
 * Pure: it only builds arguments from what the caller found out about the
 * host and the tree (src/runtime/container.ts does the finding out), so
 * the rules below are tested without starting anything.
 *
 * What Apptainer's default (non-contained) session shows inside, and so
 * what sifuse binds: /proc, /dev (bwrap's minimal one: null, zero, full,
 * random, urandom, tty, pts, shm), /sys read-only, /tmp, $HOME and the
 * current directory. `--contain` keeps only /proc, /dev and a private /tmp.
 * `--bind SRC[:DST[:ro]]` adds binds after the defaults, so it can shadow
 * them. The image's environment comes from `/.singularity.d/env/*.sh`,
 * sourced in name order by a POSIX shell inside the container, then the
 * `--env` values, which win.
 */

export interface BindSpec {
  src: string;
  dst: string;
  readonly: boolean;
}

/** A top-level entry of the tree, for the underlay (see BwrapPlan.underlay). */
export interface TopEntry {
  name: string;
  kind: 'dir' | 'file' | 'link';
  /** A symlink's target. */
  target?: string;
}

export interface BwrapPlan {
  /** The merged tree, mounted. */
  root: string;
  /**
   * When the tree lacks a mount point bwrap needs (/dev, /proc, /tmp) and
   * cannot have one made in it (read-only): its top-level entries, to be
   * bound one by one onto an empty root (Apptainer's "underlay"). Writes at
   * the top level then go to that root, not the image.
   */
  underlay?: TopEntry[];
  /** Host directories to bind at the same path (home, cwd, /tmp), already checked to exist. */
  defaultBinds: string[];
  binds: BindSpec[];
  contain: boolean;
  /** uid/gid 0 inside (a root-mapped user namespace). */
  fakeroot: boolean;
  /** Working directory inside. */
  cwd: string;
  /** K=V pairs applied after the image's environment. */
  env: string[];
  /** The container's shell, if it has one (env scripts need it). */
  shell: string | null;
  /** What to run inside. */
  argv: string[];
  /** The image name shown in $SINGULARITY_CONTAINER / $APPTAINER_CONTAINER and the prompt. */
  image: string;
}

/** Parses `--bind SRC[:DST[:ro|rw]]` as Apptainer does (DST defaults to SRC). */
export function parseBind(spec: string): BindSpec {
  const parts = spec.split(':');
  const src = parts[0] ?? '';
  const dst = parts[1] && parts[1] !== '' ? parts[1] : src;
  const opt = parts[2];
  if (src === '' || parts.length > 3 || (opt !== undefined && opt !== 'ro' && opt !== 'rw')) {
    throw new Error(`--bind ${spec}: expected SRC[:DST[:ro|rw]]`);
  }
  if (!dst.startsWith('/')) throw new Error(`--bind ${spec}: the destination must be an absolute path`);
  return { src, dst, readonly: opt === 'ro' };
}

/**
 * Sources the image's environment scripts, then the --env values, then
 * execs the command. "$@" carries the command, so no quoting is needed.
 * bwrap runs with SIGINT and SIGQUIT ignored (src/runtime/container.ts:
 * a Ctrl-C must not kill bwrap, whose death would SIGKILL the command), and
 * an ignored signal stays ignored across exec, so the command gets their
 * default action back through `env --default-signal` (coreutils >= 8.31)
 * where the image has it.
 */
export const ENV_PRELUDE =
  'for f in /.singularity.d/env/*.sh; do [ -f "$f" ] && . "$f"; done; ' +
  'while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do export "$1"; shift; done; shift; ' +
  'if env --default-signal=INT,QUIT true 2>/dev/null; then exec env --default-signal=INT,QUIT "$@"; fi; exec "$@"';

export function bwrapArgs(plan: BwrapPlan): string[] {
  const a: string[] = [];
  if (plan.underlay) {
    a.push('--tmpfs', '/');
    for (const e of plan.underlay) {
      const src = `${plan.root}/${e.name}`;
      if (e.kind === 'link') a.push('--symlink', e.target ?? '', `/${e.name}`);
      else a.push('--bind', src, `/${e.name}`);
    }
  } else {
    a.push('--bind', plan.root, '/');
  }
  a.push('--dev', '/dev', '--proc', '/proc', '--die-with-parent');
  if (plan.contain) {
    a.push('--tmpfs', '/tmp');
  } else {
    a.push('--ro-bind-try', '/sys', '/sys');
    for (const d of plan.defaultBinds) a.push('--bind', d, d);
  }
  for (const b of plan.binds) a.push(b.readonly ? '--ro-bind' : '--bind', b.src, b.dst);
  if (plan.fakeroot) a.push('--unshare-user', '--uid', '0', '--gid', '0');
  a.push('--setenv', 'SINGULARITY_CONTAINER', plan.image, '--setenv', 'APPTAINER_CONTAINER', plan.image);
  a.push('--setenv', 'SINGULARITY_NAME', basename(plan.image), '--setenv', 'APPTAINER_NAME', basename(plan.image));
  if (!plan.shell) {
    for (const kv of plan.env) {
      const at = kv.indexOf('=');
      a.push('--setenv', kv.slice(0, at), kv.slice(at + 1));
    }
  }
  a.push('--chdir', plan.cwd, '--');
  if (plan.shell) a.push(plan.shell, '-c', ENV_PRELUDE, 'sifuse-env', ...plan.env, '--', ...plan.argv);
  else a.push(...plan.argv);
  return a;
}

function basename(p: string): string {
  const parts = p.split('/').filter(Boolean);
  return parts[parts.length - 1] ?? p;
}
