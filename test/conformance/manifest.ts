/**
 * Manifests of any ReadableFs (the model, an engine, a layer) in the project's
 * manifest format (issue 3), computed through the ReadableFs interface only,
 * plus the link structure a manifest does not show (nlink, which paths share
 * an inode), so link counts and hard links are compared too.
 *
 * Lines are latin1 strings: one character per byte, so names that are not
 * UTF-8 survive and compare byte-exactly with tree_manifest.py output read as
 * latin1.
 */
import { createHash } from 'node:crypto';
import { devMajor, devMinor, type InodeId, type ReadableFs } from '../../src/engine.js';
import { typeOfMode } from './model.js';

export interface ManifestEntry {
  /** Raw path bytes, '/'-rooted. */
  path: Buffer;
  line: string;
  ino: number;
  nlink: number;
  id: InodeId;
}

export function escapeBytes(b: Buffer): string {
  return b.toString('latin1').replace(/\\/g, '\\\\').replace(/\t/g, '\\t').replace(/\n/g, '\\n');
}

const READ_CHUNK = 1 << 20;

async function sha256Of(fs: ReadableFs, id: InodeId, size: number): Promise<string> {
  const h = createHash('sha256');
  let pos = 0;
  while (pos < size) {
    const want = Math.min(READ_CHUNK, size - pos);
    const chunk = await fs.read(id, pos, want);
    if (chunk.length !== want)
      throw new Error(`${fs.name}: short read at ${pos} (${chunk.length} of ${want}) in a ${size}-byte file`);
    h.update(chunk);
    pos += chunk.length;
  }
  return h.digest('hex');
}

/** `-` or name=BASE64 pairs sorted by the name's bytes, names escaped as paths are (tree_manifest.py's XATTRS). */
async function xattrField(fs: ReadableFs, id: InodeId, excludePrefixes: Buffer[]): Promise<string> {
  const names = (await fs.listxattr(id)).filter((n) => !excludePrefixes.some((p) => n.subarray(0, p.length).equals(p)));
  if (names.length === 0) return '-';
  const pairs: [Buffer, string][] = [];
  for (const name of names) {
    const v = await fs.getxattr(id, name);
    if (v === null)
      throw new Error(`${fs.name}: listxattr names ${JSON.stringify(name.toString('latin1'))} but getxattr finds nothing`);
    pairs.push([name, `${escapeBytes(name)}=${v.toString('base64')}`]);
  }
  pairs.sort((a, b) => Buffer.compare(a[0], b[0]));
  return pairs.map((p) => p[1]).join(',');
}

export interface WalkOptions {
  /** Paths (and everything below) left out, e.g. '/lost+found'. */
  exclude?: string[];
  excludeXattrPrefixes?: string[];
  /** Upper bound on entries, so a corrupt engine cannot make the walk endless. */
  maxEntries?: number;
  /** The directory shown as '/' (default fs.rootId): a layer's top directory inside its engine. */
  root?: InodeId;
}

/** Every entry of `fs`, sorted by raw path bytes. */
export async function walkManifest(fs: ReadableFs, options: WalkOptions = {}): Promise<ManifestEntry[]> {
  const exclude = new Set((options.exclude ?? []).map((p) => Buffer.from(p).toString('latin1')));
  const maxEntries = options.maxEntries ?? 1_000_000;
  const xprefixes = (options.excludeXattrPrefixes ?? []).map((p) => Buffer.from(p));
  const out: ManifestEntry[] = [];
  const stack: [Buffer, InodeId][] = [[Buffer.from('/'), options.root ?? fs.rootId]];
  const seenDirs = new Set<number>();
  while (stack.length > 0) {
    const [path, id] = stack.pop()!;
    if (exclude.has(path.toString('latin1'))) continue;
    if (out.length >= maxEntries) throw new Error(`${fs.name}: more than ${maxEntries} entries`);
    const st = await fs.getattr(id);
    const type = typeOfMode(st.mode);
    let size = '-';
    let data = '-';
    if (type === 'f') {
      size = String(st.size);
      data = await sha256Of(fs, id, st.size);
    } else if (type === 'l') {
      const target = await fs.readlink(id);
      size = String(target.length);
      data = escapeBytes(target);
    } else if (type === 'c' || type === 'b') {
      data = `${devMajor(st.rdev)}:${devMinor(st.rdev)}`;
    }
    const fields = [
      escapeBytes(path),
      type,
      (st.mode & 0o7777).toString(8).padStart(4, '0'),
      String(st.uid),
      String(st.gid),
      size,
      String(st.mtime),
      data,
      await xattrField(fs, id, xprefixes),
    ];
    out.push({ path, line: fields.join('\t'), ino: st.ino, nlink: st.nlink, id });
    if (type === 'd') {
      if (seenDirs.has(st.ino)) throw new Error(`${fs.name}: directory inode ${st.ino} reached twice (a cycle)`);
      seenDirs.add(st.ino);
      for (const e of await fs.readdir(id)) {
        const child = path.length === 1 ? Buffer.concat([path, e.name]) : Buffer.concat([path, Buffer.from('/'), e.name]);
        stack.push([child, e.id]);
      }
    }
  }
  out.sort((a, b) => Buffer.compare(a.path, b.path));
  return out;
}

/** Column index of MTIME in a manifest line. */
export const MTIME_COLUMN = 6;

/** The line with MTIME replaced by '*' (for entries whose time the filesystem stamped itself). */
export function maskMtime(line: string): string {
  const f = line.split('\t');
  f[MTIME_COLUMN] = '*';
  return f.join('\t');
}

/**
 * Link structure, one line per path: "PATH NLINK FIRST" where FIRST is the
 * smallest path naming the same inode. Directory nlink is included (2 + subdirs).
 */
export function linkLines(entries: { path: Buffer; ino: number; nlink: number }[]): string[] {
  const first = new Map<number, Buffer>();
  for (const e of entries) {
    const f = first.get(e.ino);
    if (!f || Buffer.compare(e.path, f) < 0) first.set(e.ino, e.path);
  }
  return entries.map((e) => `${escapeBytes(e.path)}\t${e.nlink}\t${escapeBytes(first.get(e.ino)!)}`);
}

/** A readable diff of two sorted line lists (at most `limit` lines). */
export function diffLines(expected: string[], actual: string[], limit = 20): string {
  const a = new Set(expected);
  const b = new Set(actual);
  const out: string[] = [];
  for (const l of expected) if (!b.has(l)) out.push(`- ${l}`);
  for (const l of actual) if (!a.has(l)) out.push(`+ ${l}`);
  const shown = out.slice(0, limit).map((l) => Buffer.from(l, 'latin1').toString('utf8'));
  if (out.length > limit) shown.push(`... ${out.length - limit} more`);
  return shown.join('\n');
}
