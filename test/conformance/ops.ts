/**
 * Path-level operations (what a program does through the VFS) and a seeded
 * random generator of operation sequences.
 *
 * An Op is plain JSON so that a failing sequence can be printed, saved and
 * replayed, and so the kernel helper (test/tools/kernel-ops.py) can run it
 * with real syscalls. The generator looks at the model's current tree to
 * aim most operations at names that exist, and also produces the error cases
 * (missing parents, wrong types, names of 255 and 256 bytes, symlink loops,
 * renames into a subdirectory of the source, non-empty targets).
 */
import type { ReadableFs } from '../../src/engine.js';
import { typeOfMode } from './model.js';

/** renameat2 flags as an Op carries them (RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT). */
export type RenameFlag = 'noreplace' | 'exchange' | 'whiteout';

export type Op =
  | { op: 'mknod'; path: string; kind: 'f' | 'c' | 'b' | 'p' | 's'; mode: number; major: number; minor: number }
  | { op: 'mkdir'; path: string; mode: number }
  | { op: 'symlink'; path: string; target: string }
  | { op: 'link'; from: string; path: string }
  | { op: 'unlink'; path: string }
  | { op: 'rmdir'; path: string }
  | { op: 'rename'; from: string; path: string; flags?: RenameFlag }
  | { op: 'write'; path: string; offset: number; length: number; seed: number }
  | { op: 'truncate'; path: string; size: number }
  | { op: 'chmod'; path: string; mode: number }
  | { op: 'chown'; path: string; uid: number; gid: number }
  | { op: 'utimes'; path: string; atime: number; mtime: number; mtimeNsec: number }
  | { op: 'setxattr'; path: string; name: string; value: string; flags: 0 | 'create' | 'replace' }
  | { op: 'removexattr'; path: string; name: string }
  /** open(O_WRONLY), unlink the name, write through the handle, close: unlink of an open file. */
  | { op: 'unlinkopen'; path: string; offset: number; length: number; seed: number }
  /**
   * A lifetime race on a regular file: an open (ref) of it, its unlink and the
   * create of a new file with `length` bytes under the same name, issued at
   * once in an order picked by `order`; the open handle must keep reading the
   * old bytes (never the new file's, whose inode may reuse the number), then
   * close (unref). Net effect: the name holds a new file with the new bytes.
   */
  | { op: 'race'; path: string; order: number; length: number; seed: number };

/** 'ok', an errno name, or 'SKIPPED' for the cases the harness does not issue (writing to a device node). */
export type Outcome = string;

/** The bytes a write op writes: a function of (seed, length) only, identical in every driver. */
export function writeData(seed: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  let x = (seed ^ 0x9e3779b9) >>> 0;
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

/** xattr values travel as hex in ops. */
export function xattrValue(op: { value: string }): Buffer {
  return Buffer.from(op.value, 'hex');
}

/** mulberry32: small, fast, seeded; good enough to pick operations. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)]!;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  weighted<T>(table: readonly (readonly [T, number])[]): T {
    const total = table.reduce((s, [, w]) => s + w, 0);
    let r = this.next() * total;
    for (const [v, w] of table) {
      r -= w;
      if (r < 0) return v;
    }
    return table[table.length - 1]![0];
  }
}

export interface TreeEntry {
  path: string;
  type: string;
}

/** Paths of `fs` (utf-8 strings; the generator only makes utf-8 names), excluding some subtrees. */
export async function listTree(fs: ReadableFs, exclude: Set<string>): Promise<TreeEntry[]> {
  const out: TreeEntry[] = [];
  const stack: [string, number][] = [['/', fs.rootId]];
  while (stack.length > 0) {
    const [path, id] = stack.pop()!;
    if (exclude.has(path)) continue;
    const type = typeOfMode((await fs.getattr(id)).mode);
    out.push({ path, type });
    if (type === 'd') {
      for (const e of await fs.readdir(id))
        stack.push([path === '/' ? `/${e.name.toString()}` : `${path}/${e.name.toString()}`, e.id]);
    }
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/**
 * What a target can do; the generator never makes an op a target cannot
 * support (the conformance capabilities of test/conformance/index.ts map here).
 */
export interface OpFeatures {
  /** link(2) of non-directories. */
  hardLinks: boolean;
  /** Character and block device nodes (char 0/0 whiteouts included). */
  devices: boolean;
  /** FIFOs and sockets. */
  fifos: boolean;
  /** chown to ids other than the caller's. */
  chown: boolean;
  /** xattr namespaces that may be set ('user.', 'trusted.'). */
  xattrNamespaces: readonly string[];
  /** renameat2 flags. */
  renameFlags: boolean;
  /** The 'race' op (open/unlink/create at once through ref/unref). */
  races: boolean;
}

export const ALL_FEATURES: OpFeatures = {
  hardLinks: true,
  devices: true,
  fifos: true,
  chown: true,
  xattrNamespaces: ['user.', 'trusted.'],
  renameFlags: true,
  races: true,
};

/** True when `op` uses only what `f` allows (filters the fixed edge-case sequence). */
export function opAllowed(op: Op, f: OpFeatures): boolean {
  switch (op.op) {
    case 'mknod':
      if (op.kind === 'c' || op.kind === 'b') return f.devices;
      if (op.kind === 'p' || op.kind === 's') return f.fifos;
      return true;
    case 'link':
      return f.hardLinks;
    case 'chown':
      return f.chown;
    case 'rename':
      return op.flags === undefined || (f.renameFlags && (op.flags !== 'whiteout' || f.devices));
    case 'setxattr':
    case 'removexattr':
      return f.xattrNamespaces.some((ns) => op.name.startsWith(ns));
    case 'race':
      return f.races;
    default:
      return true;
  }
}

export interface GeneratorOptions {
  blockSize: number;
  /** What the target supports (default: everything). */
  features?: OpFeatures;
  /** Paths the generator never aims at (lost+found). */
  exclude?: string[];
  /** Largest file offset written or truncated to (sparse files). */
  maxOffset?: number;
  /** Directory the operations live under ('/' or '/upper'). */
  base?: string;
  /** Also write 64 KiB and 200 KB at once, and favour creating over removing (to fill small images). */
  bigWrites?: boolean;
}

type OpKind =
  | 'create'
  | 'mkdir'
  | 'special'
  | 'symlink'
  | 'link'
  | 'unlink'
  | 'rmdir'
  | 'rename'
  | 'write'
  | 'truncate'
  | 'chmod'
  | 'chown'
  | 'utimes'
  | 'setxattr'
  | 'removexattr'
  | 'unlinkopen'
  | 'race';

const WEIGHTS: readonly (readonly [OpKind, number])[] = [
  ['create', 14],
  ['mkdir', 9],
  ['special', 4],
  ['symlink', 5],
  ['link', 5],
  ['unlink', 6],
  ['rmdir', 4],
  ['rename', 11],
  ['write', 15],
  ['truncate', 5],
  ['chmod', 4],
  ['chown', 3],
  ['utimes', 3],
  ['setxattr', 8],
  ['removexattr', 3],
  ['unlinkopen', 2],
  ['race', 3],
];

/** Filling small images: mostly creating and writing, some removing so space is freed and reused. */
const FILL_WEIGHTS: readonly (readonly [OpKind, number])[] = [
  ['create', 22],
  ['mkdir', 10],
  ['special', 3],
  ['symlink', 8],
  ['link', 3],
  ['unlink', 3],
  ['rmdir', 1],
  ['rename', 4],
  ['write', 35],
  ['truncate', 2],
  ['chmod', 1],
  ['chown', 1],
  ['utimes', 1],
  ['setxattr', 8],
  ['removexattr', 1],
  ['unlinkopen', 1],
  ['race', 1],
];

const COMMON_NAMES = ['a', 'b', 'c', 'd', 'e'];
const RARE_NAMES = ['sp ace', 'ünï', 'x'.repeat(255), 'y'.repeat(256), 'tab\tnl\nbs\\'];
const XATTR_NAMES = ['user.a', 'user.bb', 'trusted.t', 'trusted.overlay.opaque', 'user.' + 'n'.repeat(40)];
const XATTR_VALUES = ['', '79', '76616c75652d31', 'ab'.repeat(32), '00ff00ff'];
const MODES = [0o644, 0o755, 0o600, 0o000, 0o777, 0o4755, 0o2755, 0o6711, 0o1777, 0o2710, 0o444, 0o2644, 0o6644];
const IDS = [0, 1000, 65534, 123456, 70000];

/**
 * Generates one operation at a time from the current tree (call `next` with a
 * fresh listTree of the model before each op so that most ops hit real names).
 */
export class OpGenerator {
  readonly rng: Rng;
  private readonly o: Required<GeneratorOptions>;
  private readonly weights: readonly (readonly [OpKind, number])[];
  private readonly xattrNames: string[];
  constructor(seed: number, options: GeneratorOptions) {
    this.rng = new Rng(seed);
    const f = options.features ?? ALL_FEATURES;
    this.o = {
      blockSize: options.blockSize,
      features: f,
      exclude: options.exclude ?? [],
      maxOffset: options.maxOffset ?? 1 << 20,
      base: options.base ?? '/',
      bigWrites: options.bigWrites ?? false,
    };
    this.xattrNames = XATTR_NAMES.filter((n) => f.xattrNamespaces.some((ns) => n.startsWith(ns)));
    const off = new Set<OpKind>();
    if (!f.hardLinks) off.add('link');
    if (!f.devices && !f.fifos) off.add('special');
    if (!f.chown) off.add('chown');
    if (!f.races) off.add('race');
    if (this.xattrNames.length === 0) {
      off.add('setxattr');
      off.add('removexattr');
    }
    this.weights = (options.bigWrites ? FILL_WEIGHTS : WEIGHTS).filter(([k]) => !off.has(k));
  }

  private name(): string {
    return this.rng.chance(0.04) ? this.rng.pick(RARE_NAMES) : this.rng.pick(COMMON_NAMES);
  }

  private join(dir: string, name: string): string {
    return dir === '/' ? `/${name}` : `${dir}/${name}`;
  }

  private randomPath(): string {
    let p = this.o.base;
    const depth = this.rng.int(1, 3);
    for (let i = 0; i < depth; i++) p = this.join(p, this.name());
    return p;
  }

  private existing(tree: TreeEntry[], want?: (t: string) => boolean): string {
    const base = this.o.base;
    const pool = tree.filter(
      (e) => e.path !== base && (base === '/' || e.path.startsWith(base + '/')) && (!want || want(e.type)),
    );
    if (pool.length === 0 || this.rng.chance(0.12)) return this.randomPath();
    return this.rng.pick(pool).path;
  }

  private newPath(tree: TreeEntry[]): string {
    const dirs = tree.filter(
      (e) => e.type === 'd' && (e.path === this.o.base || e.path.startsWith(this.o.base === '/' ? '/' : this.o.base + '/')),
    );
    if (dirs.length === 0 || this.rng.chance(0.1)) return this.randomPath();
    return this.join(this.rng.pick(dirs).path, this.name());
  }

  private offset(): number {
    const r = this.rng.next();
    if (r < 0.5) return this.rng.int(0, 16 * 1024);
    if (r < 0.85) return this.rng.int(0, 300 * 1024);
    return this.rng.int(0, this.o.maxOffset);
  }

  private symlinkTarget(): string {
    const r = this.rng.next();
    if (r < 0.5) return this.rng.pick(['a', 'b', 'a/b', '../a', '/a', '/b/c', '.', '..', 'missing', '/']);
    if (r < 0.8) return 'L'.repeat(this.rng.int(40, 200));
    return 'T'.repeat(this.rng.pick([this.o.blockSize - 1, this.o.blockSize, 59, 60, 61]));
  }

  next(tree: TreeEntry[]): Op {
    const kind = this.rng.weighted(this.weights);
    const r = this.rng;
    const f = this.o.features;
    switch (kind) {
      case 'create':
        return {
          op: 'mknod',
          path: r.chance(0.85) ? this.newPath(tree) : this.existing(tree),
          kind: 'f',
          mode: r.pick(MODES),
          major: 0,
          minor: 0,
        };
      case 'special': {
        const k = r.pick(
          f.devices && f.fifos ? (['c', 'b', 'p', 's'] as const) : f.devices ? (['c', 'b'] as const) : (['p', 's'] as const),
        );
        const whiteout = k === 'c' && r.chance(0.5);
        return {
          op: 'mknod',
          path: this.newPath(tree),
          kind: k,
          mode: r.pick([0o644, 0o600, 0o000]),
          major: whiteout ? 0 : r.pick([1, 8, 254, 4095]),
          minor: whiteout ? 0 : r.pick([0, 3, 255, 256, 1048575]),
        };
      }
      case 'mkdir':
        return {
          op: 'mkdir',
          path: r.chance(0.85) ? this.newPath(tree) : this.existing(tree),
          mode: r.pick([0o755, 0o700, 0o1777, 0o2775, 0o555]),
        };
      case 'symlink':
        return { op: 'symlink', path: this.newPath(tree), target: this.symlinkTarget() };
      case 'link':
        return { op: 'link', from: this.existing(tree), path: r.chance(0.8) ? this.newPath(tree) : this.existing(tree) };
      case 'unlink':
        return { op: 'unlink', path: this.existing(tree, (t) => (r.chance(0.85) ? t !== 'd' : true)) };
      case 'rmdir':
        return { op: 'rmdir', path: this.existing(tree, (t) => (r.chance(0.85) ? t === 'd' : true)) };
      case 'rename': {
        const from = this.existing(tree);
        let to: string;
        const how = r.next();
        if (how < 0.45) to = this.newPath(tree);
        else if (how < 0.85) to = this.existing(tree);
        else to = this.join(from, this.name()); // into itself: EINVAL or ENOTDIR
        if (f.renameFlags && r.chance(0.3)) {
          const flag = r.pick(
            f.devices ? (['noreplace', 'exchange', 'whiteout'] as const) : (['noreplace', 'exchange'] as const),
          );
          // Exchange mostly between existing names, so it does something.
          if (flag === 'exchange' && how < 0.45 && r.chance(0.7)) to = this.existing(tree);
          return { op: 'rename', from, path: to, flags: flag };
        }
        return { op: 'rename', from, path: to };
      }
      case 'write':
        return {
          op: 'write',
          path: this.existing(tree, (t) => (r.chance(0.9) ? t === 'f' : true)),
          offset: this.offset(),
          length: r.pick(this.o.bigWrites ? [1, 4096, 5000, 65536, 200_000] : [1, 100, 1000, 1024, 4096, 5000, 12288]),
          seed: r.int(0, 1 << 30),
        };
      case 'truncate':
        return {
          op: 'truncate',
          path: this.existing(tree, (t) => (r.chance(0.9) ? t === 'f' : true)),
          size: r.chance(0.3) ? 0 : this.offset(),
        };
      case 'chmod':
        return { op: 'chmod', path: this.existing(tree), mode: r.pick(MODES) };
      case 'chown':
        return { op: 'chown', path: this.existing(tree), uid: r.pick(IDS), gid: r.pick(IDS) };
      case 'utimes':
        return {
          op: 'utimes',
          path: this.existing(tree),
          atime: r.int(0, 2 ** 31 - 1),
          mtime: r.int(0, 2 ** 31 - 1),
          mtimeNsec: r.int(0, 999_999_999),
        };
      case 'setxattr':
        return {
          op: 'setxattr',
          path: this.existing(tree),
          name: r.pick(this.xattrNames),
          value: r.pick(XATTR_VALUES),
          flags: r.weighted<0 | 'create' | 'replace'>([
            [0, 6],
            ['create', 2],
            ['replace', 2],
          ]),
        };
      case 'removexattr':
        return { op: 'removexattr', path: this.existing(tree), name: r.pick(this.xattrNames) };
      case 'unlinkopen':
        return {
          op: 'unlinkopen',
          path: this.existing(tree, (t) => t === 'f'),
          offset: this.offset(),
          length: r.pick([1, 4096, 5000]),
          seed: r.int(0, 1 << 30),
        };
      case 'race':
        return {
          op: 'race',
          path: this.existing(tree, (t) => t === 'f'),
          order: r.int(0, 5),
          length: r.pick([0, 1, 1000, 5000]),
          seed: r.int(0, 1 << 30),
        };
    }
  }
}

const f = (path: string, mode: number): Op => ({ op: 'mknod', path, kind: 'f', mode, major: 0, minor: 0 });

/**
 * A fixed sequence through the corners of POSIX the random generator reaches
 * only by luck: set-id bits across chown, the rename traps and type errors,
 * rename between two names of one inode, link of a directory, symlink loops,
 * user.* xattrs on a symlink and a whiteout, set-group-id directories,
 * 255/256-byte names, unlink of an open file with another name, and a
 * symlink target of the largest size ext3 can hold in 1 KiB blocks.
 */
export const EDGE_CASES: Op[] = [
  { op: 'mkdir', path: '/d', mode: 0o755 },
  f('/d/f', 0o2644),
  { op: 'chown', path: '/d/f', uid: 1000, gid: 1000 },
  { op: 'chmod', path: '/d/f', mode: 0o6755 },
  { op: 'chown', path: '/d/f', uid: 0, gid: 0 },
  { op: 'mkdir', path: '/d/sub', mode: 0o700 },
  { op: 'rename', from: '/d', path: '/d/sub/x' },
  { op: 'rename', from: '/d/sub', path: '/d' },
  { op: 'rename', from: '/d/f', path: '/d/sub' },
  { op: 'rename', from: '/d/sub', path: '/d/f' },
  { op: 'link', from: '/d', path: '/l' },
  { op: 'symlink', path: '/s', target: 's' },
  { op: 'write', path: '/s/x', offset: 0, length: 10, seed: 1 },
  { op: 'mknod', path: '/s/y', kind: 'f', mode: 0o644, major: 0, minor: 0 },
  f('/d/sub/y', 0o644),
  { op: 'rmdir', path: '/d/sub' },
  { op: 'unlink', path: '/d/sub' },
  { op: 'rmdir', path: '/d/f' },
  { op: 'link', from: '/d/f', path: '/d/f2' },
  { op: 'rename', from: '/d/f', path: '/d/f2' },
  { op: 'setxattr', path: '/s', name: 'user.a', value: '01', flags: 0 },
  { op: 'setxattr', path: '/s', name: 'trusted.t', value: '01', flags: 0 },
  { op: 'mknod', path: '/wh', kind: 'c', mode: 0o000, major: 0, minor: 0 },
  { op: 'setxattr', path: '/wh', name: 'user.a', value: '01', flags: 0 },
  { op: 'setxattr', path: '/wh', name: 'trusted.overlay.opaque', value: '79', flags: 'create' },
  { op: 'setxattr', path: '/wh', name: 'trusted.overlay.opaque', value: '79', flags: 'create' },
  { op: 'removexattr', path: '/wh', name: 'trusted.nothing' },
  { op: 'mkdir', path: '/g', mode: 0o775 },
  { op: 'chown', path: '/g', uid: 0, gid: 4242 },
  { op: 'chmod', path: '/g', mode: 0o2775 },
  f('/g/child', 0o644),
  { op: 'mkdir', path: '/g/sub', mode: 0o755 },
  { op: 'mkdir', path: '/g/sub/deeper', mode: 0o755 },
  f('/' + 'n'.repeat(255), 0o644),
  f('/' + 'n'.repeat(256), 0o644),
  { op: 'mkdir', path: '/' + 'm'.repeat(256) + '/x', mode: 0o755 },
  { op: 'write', path: '/d/f2', offset: 70000, length: 5000, seed: 2 },
  { op: 'unlinkopen', path: '/d/f2', offset: 100, length: 4096, seed: 3 },
  { op: 'symlink', path: '/long', target: 'T'.repeat(1023) },
  { op: 'symlink', path: '/long2', target: 'T'.repeat(1024) },
  { op: 'symlink', path: '/d/up', target: '../g' },
  f('/d/up/via-link', 0o600),
  { op: 'rename', from: '/d/up', path: '/g/sub/moved-link' },
  { op: 'rename', from: '/g/sub', path: '/d/sub2' },
  { op: 'rename', from: '/d/sub2', path: '/d' },
  { op: 'truncate', path: '/d/f', size: 1 << 22 },
  { op: 'truncate', path: '/d/f', size: 3 },
  { op: 'rmdir', path: '/d/sub' },
  { op: 'rename', from: '/d/sub2', path: '/wh' },
  { op: 'rename', from: '/wh', path: '/d/f' },
  { op: 'utimes', path: '/d/f', atime: 1, mtime: 2_000_000_000, mtimeNsec: 5 },
  // renameat2 flags: noreplace onto a name, exchange of a file and a directory
  // between parents, exchange with a missing name, exchange into itself, a whiteout.
  f('/r1', 0o644),
  { op: 'mkdir', path: '/rd', mode: 0o755 },
  { op: 'mkdir', path: '/rd/in', mode: 0o700 },
  { op: 'rename', from: '/r1', path: '/g/child', flags: 'noreplace' },
  { op: 'rename', from: '/r1', path: '/r2', flags: 'noreplace' },
  { op: 'rename', from: '/r2', path: '/rd/in', flags: 'exchange' },
  { op: 'rename', from: '/r2', path: '/rd/missing', flags: 'exchange' },
  { op: 'rename', from: '/rd', path: '/rd/in', flags: 'exchange' },
  { op: 'rename', from: '/rd/in', path: '/rd', flags: 'exchange' },
  { op: 'rename', from: '/rd', path: '/rd', flags: 'exchange' },
  { op: 'rename', from: '/rd/in', path: '/g/sub-moved', flags: 'whiteout' },
  { op: 'rename', from: '/g/child', path: '/rd/in', flags: 'whiteout' },
  // Lifetime races: open, unlink and re-create of one name at once, in two orders.
  { op: 'write', path: '/g/sub-moved', offset: 0, length: 3000, seed: 4 },
  { op: 'race', path: '/g/sub-moved', order: 0, length: 2000, seed: 5 },
  { op: 'race', path: '/g/sub-moved', order: 3, length: 0, seed: 6 },
];
