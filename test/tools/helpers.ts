/**
 * Shared helpers for tests that compare sifuse with reference tools.
 *
 * - temp dirs under os.tmpdir(), removed (after unmounting anything left) by
 *   `removeTempDir`;
 * - `isRoot`, `hasTool`, `skipNote` (print why a test is skipped);
 * - `runSifuse`: bin/sifuse in a child process, stdout as raw bytes;
 * - `makeTree` (test/tools/make-tree.py) and `treeManifest`
 *   (test/tools/tree_manifest.py): the fixture tree and its independent manifest;
 * - `mksquashfs`, `makeSif`: images through the reference tools;
 * - `withLoopMount`: a kernel read-only loop mount (root only) that is always
 *   unmounted, even when the callback throws;
 * - `manifestDiff` / `expectSameManifest`: line-by-line comparison of two
 *   manifests with a readable report of missing, extra, changed and misordered lines.
 */
import { loopMountSync, unmountSync } from './loop.js';
import { execa } from 'execa';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const toolsDir = join(repoRoot, 'test', 'tools');
export const sifuseBin = join(repoRoot, 'bin', 'sifuse');
export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/** Prints why something is skipped, so a skip is never silent. */
export function skipNote(what: string, reason: string): void {
  console.warn(`SKIP ${what}: ${reason}`);
}

export async function hasTool(name: string): Promise<boolean> {
  const r = await execa('sh', ['-c', `command -v ${name}`], { reject: false });
  return r.exitCode === 0;
}

export function makeTempDir(label: string): string {
  return mkdtempSync(join(tmpdir(), `sifuse-${label}-`));
}

/** Mount points created by withLoopMount that are still mounted (a crash inside a test). */
const liveMounts = new Set<string>();

export async function removeTempDir(dir: string | undefined): Promise<void> {
  if (!dir) return;
  for (const mnt of [...liveMounts]) {
    if (mnt.startsWith(dir + '/')) await unmount(mnt);
  }
  rmSync(dir, { recursive: true, force: true });
}

export interface SifuseResult {
  exitCode: number;
  stdout: Buffer;
  stderr: string;
}

/** Runs bin/sifuse (the built CLI) as a child process; never throws on a non-zero exit. */
export async function runSifuse(args: string[], options: { timeoutMs?: number } = {}): Promise<SifuseResult> {
  if (!existsSync(join(repoRoot, 'dist', 'cli.js'))) {
    throw new Error('dist/cli.js is missing: run `npx tsc -p tsconfig.json` (npm test does) first');
  }
  const r = await execa(sifuseBin, args, {
    reject: false,
    encoding: 'buffer',
    stripFinalNewline: false,
    maxBuffer: 1 << 30,
    timeout: options.timeoutMs ?? 300_000,
  });
  return {
    exitCode: r.exitCode ?? -1,
    stdout: Buffer.from(r.stdout),
    stderr: Buffer.from(r.stderr).toString('utf8'),
  };
}

export interface TreeInfo {
  root: string;
  isRoot: boolean;
  /** What make-tree.py left out and why (e.g. devices as non-root). */
  omitted: string[];
  entries: number;
  /** Path of the multi-GiB sparse file inside the tree, or null. */
  big: string | null;
}

export interface TreeOptions {
  seed?: number;
  /** Size of /big/sparse; 0 or absent: no /big. */
  bigSize?: number;
  /** Entries in /many (default 20000). */
  many?: number;
  /** Levels under /deep (default 50). */
  depth?: number;
  /** Files of at most ~140 KB (make-tree.py --small): small images for fuzzing. */
  small?: boolean;
}

/** Generates the fixture tree of test/tools/make-tree.py into `dest` and prints what was omitted. */
export async function makeTree(dest: string, options: TreeOptions = {}): Promise<TreeInfo> {
  const args = [join(toolsDir, 'make-tree.py'), dest];
  if (options.seed !== undefined) args.push('--seed', String(options.seed));
  if (options.bigSize) args.push('--big-size', String(options.bigSize));
  if (options.many !== undefined) args.push('--many', String(options.many));
  if (options.depth !== undefined) args.push('--depth', String(options.depth));
  if (options.small) args.push('--small');
  const r = await execa('python3', args);
  const info = JSON.parse(r.stdout) as TreeInfo;
  for (const reason of info.omitted) skipNote('part of the fixture tree', reason);
  return info;
}

export interface ManifestOptions {
  /** Subdirectory to describe (absolute inside the tree), like `sifuse manifest IMAGE PATH`. */
  path?: string;
  /** Paths (absolute inside the tree) dropped with everything below them. */
  exclude?: string[];
  /** Xattr name prefixes to drop. */
  excludeXattr?: string[];
}

/** The independent manifest (test/tools/tree_manifest.py) of a host directory or mount point. */
export async function treeManifest(root: string, options: ManifestOptions = {}): Promise<Buffer> {
  const args = [join(toolsDir, 'tree_manifest.py'), root];
  if (options.path) args.push('--path', options.path);
  for (const p of options.exclude ?? []) args.push('--exclude', p);
  for (const p of options.excludeXattr ?? []) args.push('--exclude-xattr', p);
  const r = await execa('python3', args, { encoding: 'buffer', stripFinalNewline: false, maxBuffer: 1 << 30 });
  return Buffer.from(r.stdout);
}

/** Splits manifest bytes into lines (without the trailing newline of the last). */
export function manifestLines(manifest: Buffer): Buffer[] {
  const lines: Buffer[] = [];
  let start = 0;
  for (;;) {
    const nl = manifest.indexOf(0x0a, start);
    if (nl < 0) break;
    lines.push(manifest.subarray(start, nl));
    start = nl + 1;
  }
  if (start < manifest.length) lines.push(manifest.subarray(start));
  return lines;
}

/** Lines whose path is `prefix` or lies below it are removed (the manifest's own escaping applies). */
export function withoutSubtree(manifest: Buffer, prefix: string): Buffer {
  const p = Buffer.from(prefix);
  const kept = manifestLines(manifest).filter((line) => {
    const path = line.subarray(0, line.indexOf(0x09));
    return !(path.equals(p) || (path.length > p.length && path.subarray(0, p.length).equals(p) && path[p.length] === 0x2f));
  });
  return Buffer.concat(kept.flatMap((l) => [l, Buffer.from('\n')]));
}

/** Readable form of a manifest line: printable ASCII as is, other bytes as \xNN, tabs as " | ". */
function show(line: Buffer): string {
  let out = '';
  for (const b of line) {
    if (b === 0x09) out += ' | ';
    else if (b >= 0x20 && b < 0x7f) out += String.fromCharCode(b);
    else out += `\\x${b.toString(16).padStart(2, '0')}`;
  }
  return out.length > 400 ? out.slice(0, 400) + '...' : out;
}

const FIELDS = ['path', 'type', 'mode', 'uid', 'gid', 'size', 'mtime', 'data', 'xattrs'];

/**
 * null when the manifests are byte-identical; otherwise a report of at most
 * `limit` differences: lines missing from `actual`, extra lines, lines whose
 * fields differ (naming the fields), and, when the same lines come in another
 * order, the first misordered position.
 */
export function manifestDiff(actual: Buffer, expected: Buffer, limit = 30): string | null {
  if (actual.equals(expected)) return null;
  const a = manifestLines(actual);
  const e = manifestLines(expected);
  const keyOf = (line: Buffer) => {
    const tab = line.indexOf(0x09);
    return line.subarray(0, tab < 0 ? line.length : tab).toString('latin1');
  };
  const byPathA = new Map(a.map((l) => [keyOf(l), l] as const));
  const byPathE = new Map(e.map((l) => [keyOf(l), l] as const));
  const report: string[] = [];
  let differences = 0;
  const add = (text: string) => {
    differences++;
    if (report.length < limit) report.push(text);
  };
  for (const [path, line] of byPathE) {
    const other = byPathA.get(path);
    if (!other) {
      add(`missing: ${show(line)}`);
    } else if (!other.equals(line)) {
      const fa = other.toString('latin1').split('\t');
      const fe = line.toString('latin1').split('\t');
      const names = FIELDS.filter((_, i) => fa[i] !== fe[i]);
      add(`changed (${names.join(', ') || 'field count'}):\n    expected: ${show(line)}\n    actual:   ${show(other)}`);
    }
  }
  for (const [path, line] of byPathA) if (!byPathE.has(path)) add(`extra:   ${show(line)}`);
  if (differences === 0) {
    if (a.length !== e.length) {
      add(`line counts differ (${a.length} actual, ${e.length} expected): duplicate paths`);
    } else {
      const i = a.findIndex((l, k) => !l.equals(e[k]!));
      if (i >= 0) add(`order differs at line ${i + 1}: expected ${show(e[i]!)}\n    actual:   ${show(a[i]!)}`);
      else add('trailing newline differs');
    }
  }
  const more = differences > report.length ? `\n... and ${differences - report.length} more` : '';
  return `${differences} difference(s) (${a.length} actual lines, ${e.length} expected):\n  ${report.join('\n  ')}${more}`;
}

/** Throws an Error carrying the readable diff when the manifests differ. */
export function expectSameManifest(actual: Buffer, expected: Buffer, label: string): void {
  const diff = manifestDiff(actual, expected);
  if (diff !== null) throw new Error(`${label}: manifests differ, ${diff}`);
}

/** mksquashfs SRC IMG -noappend [args] (quiet); `exclude` paths are relative to SRC. */
export async function mksquashfs(src: string, image: string, args: string[] = [], exclude: string[] = []): Promise<void> {
  const all = [src, image, '-noappend', '-quiet', '-no-progress', ...args];
  // -e must come last: everything after it is an exclusion.
  if (exclude.length > 0) all.push('-e', ...exclude);
  await execa('mksquashfs', all);
}

/**
 * A SIF holding `squashfs` as its primary root filesystem partition (siftool, as Apptainer lays
 * it out). `partfs` is siftool's partition filesystem code: 1 SquashFS (default), 5 encrypted SquashFS.
 */
export async function makeSif(squashfs: string, sif: string, partfs = '1'): Promise<void> {
  rmSync(sif, { force: true });
  await execa('siftool', ['new', sif]);
  await execa('siftool', [
    'add',
    sif,
    squashfs,
    '--datatype',
    '4',
    '--parttype',
    '2',
    '--partfs',
    partfs,
    '--partarch',
    '2',
    '--groupid',
    '1',
  ]);
}

async function unmount(mnt: string): Promise<void> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const r = await execa('umount', [mnt], { reject: false });
    if (r.exitCode === 0 || !isMounted(mnt)) {
      liveMounts.delete(mnt);
      try {
        rmdirSync(mnt);
      } catch {
        // already gone or not empty: removeTempDir deals with it
      }
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  // Last resort: detach now, the kernel finishes when the last user goes away.
  await execa('umount', ['-l', mnt], { reject: false });
  liveMounts.delete(mnt);
}

function isMounted(mnt: string): boolean {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .some((line) => line.split(' ')[1] === mnt);
}

/**
 * Mounts `image` read-only through a loop device (root only) at a fresh mount
 * point inside `parentDir`, runs `fn(mountPoint)` and always unmounts.
 * `fstype` is e.g. 'squashfs' or 'ext3'; `offset` mounts a partition of a file.
 */
export async function withLoopMount<T>(
  image: string,
  fstype: string,
  parentDir: string,
  fn: (mountPoint: string) => Promise<T>,
  options: { offset?: number; sizelimit?: number } = {},
): Promise<T> {
  if (!isRoot) throw new Error('withLoopMount needs root');
  const mnt = mkdtempSync(join(parentDir, 'mnt-'));
  mkdirSync(mnt, { recursive: true });
  // A fresh loop device each time: see test/tools/loop.ts for why not `mount -o loop`.
  loopMountSync(image, mnt, { type: fstype, readonly: true, offset: options.offset, sizelimit: options.sizelimit });
  liveMounts.add(mnt);
  try {
    return await fn(mnt);
  } finally {
    unmountSync(mnt);
    liveMounts.delete(mnt);
    try {
      rmdirSync(mnt);
    } catch {
      // Not empty or gone: removeTempDir deals with it.
    }
  }
}
