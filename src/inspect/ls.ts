import { devMajor, devMinor, fileTypeOf, type DirEntry, type InodeId, type ReadableFs, type Stat } from '../engine.js';
import { atPath, CorruptError } from '../errors.js';

/**
 * `ls` and `ls -l` output over any ReadableFs. Long format follows GNU
 * `ls -l --time-style=long-iso` in UTC with numeric owners:
 *   MODE NLINK UID GID SIZE|MAJOR, MINOR YYYY-MM-DD HH:MM NAME[ -> TARGET]
 * with columns right-aligned per listing. Entries sort by name bytes.
 */

export interface LsEntry {
  name: Buffer;
  id: InodeId;
  stat: Stat;
  target: Buffer | null;
}

const TYPE_CHAR: Record<string, string> = { f: '-', d: 'd', l: 'l', c: 'c', b: 'b', p: 'p', s: 's' };

/** "drwxr-xr-x" style, with s/S, t/T for setuid, setgid and sticky. */
export function modeString(mode: number): string {
  const t = TYPE_CHAR[fileTypeOf(mode) ?? ''] ?? '?';
  const bit = (m: number, c: string): string => (mode & m ? c : '-');
  const special = (x: number, s: number, on: string, off: string): string =>
    mode & s ? (mode & x ? on : off) : mode & x ? 'x' : '-';
  return (
    t +
    bit(0o400, 'r') +
    bit(0o200, 'w') +
    special(0o100, 0o4000, 's', 'S') +
    bit(0o040, 'r') +
    bit(0o020, 'w') +
    special(0o010, 0o2000, 's', 'S') +
    bit(0o004, 'r') +
    bit(0o002, 'w') +
    special(0o001, 0o1000, 't', 'T')
  );
}

function timeString(sec: number): string {
  return new Date(sec * 1000).toISOString().slice(0, 16).replace('T', ' ');
}

export async function lsEntry(fs: ReadableFs, name: Buffer, id: InodeId): Promise<LsEntry> {
  const stat = await fs.getattr(id);
  const target = fileTypeOf(stat.mode) === 'l' ? await fs.readlink(id) : null;
  return { name, id, stat, target };
}

export async function lsEntries(fs: ReadableFs, dir: InodeId): Promise<LsEntry[]> {
  const entries: DirEntry[] = [...(await fs.readdir(dir))].sort((a, b) => Buffer.compare(a.name, b.name));
  const out: LsEntry[] = [];
  for (const e of entries) out.push(await lsEntry(fs, e.name, e.id));
  return out;
}

/** Lines (without newline) for a set of entries, short or long format. */
export function formatLs(entries: LsEntry[], long: boolean): Buffer[] {
  if (!long) return entries.map((e) => e.name);
  const cols = entries.map((e) => {
    const t = fileTypeOf(e.stat.mode);
    const size = t === 'c' || t === 'b' ? `${devMajor(e.stat.rdev)}, ${devMinor(e.stat.rdev)}` : String(e.stat.size);
    return [
      modeString(e.stat.mode),
      String(e.stat.nlink),
      String(e.stat.uid),
      String(e.stat.gid),
      size,
      timeString(e.stat.mtime),
    ];
  });
  const widths = [0, 1, 2, 3, 4].map((i) => Math.max(0, ...cols.map((c) => c[i]!.length)));
  return entries.map((e, k) => {
    const c = cols[k]!;
    const head =
      `${c[0]} ${c[1]!.padStart(widths[1]!)} ${c[2]!.padEnd(widths[2]!)} ${c[3]!.padEnd(widths[3]!)} ` +
      `${c[4]!.padStart(widths[4]!)} ${c[5]} `;
    const parts = [Buffer.from(head), e.name];
    if (e.target) parts.push(Buffer.from(' -> '), e.target);
    return Buffer.concat(parts);
  });
}

/**
 * `ls [-l] [-R] PATH` output as lines. A directory lists its entries; -R adds
 * "PATH:" sections for every subdirectory, depth-first in name order, as GNU
 * ls does. Each directory is listed at most once (loops in a hostile image
 * raise CorruptError).
 */
export async function* lsLines(
  fs: ReadableFs,
  id: InodeId,
  path: Buffer,
  options: { long: boolean; recursive: boolean },
): AsyncGenerator<Buffer> {
  const top = await lsEntry(fs, path, id).catch((err: unknown) => {
    throw atPath(err, path.toString());
  });
  if (fileTypeOf(top.stat.mode) !== 'd') {
    yield* formatLs([top], options.long);
    return;
  }
  const seen = new Set<InodeId>([id]);
  const pending: { id: InodeId; path: Buffer }[] = [{ id, path }];
  let first = true;
  while (pending.length > 0) {
    const d = pending.shift()!;
    const entries = await lsEntries(fs, d.id).catch((err: unknown) => {
      throw atPath(err, d.path.toString());
    });
    if (options.recursive) {
      if (!first) yield Buffer.alloc(0);
      yield Buffer.concat([d.path, Buffer.from(':')]);
    }
    first = false;
    if (options.long) yield Buffer.from(`total ${entries.reduce((n, e) => n + Math.ceil(e.stat.blocks / 2), 0)}`);
    yield* formatLs(entries, options.long);
    if (!options.recursive) continue;
    const subdirs: { id: InodeId; path: Buffer }[] = [];
    for (const e of entries) {
      if (fileTypeOf(e.stat.mode) !== 'd') continue;
      if (seen.has(e.id)) throw new CorruptError(`${d.path.toString()}: directory appears twice in the tree (loop)`, fs.name);
      seen.add(e.id);
      const sep = d.path.length > 0 && d.path[d.path.length - 1] === 0x2f ? Buffer.alloc(0) : Buffer.from('/');
      subdirs.push({ id: e.id, path: Buffer.concat([d.path, sep, e.name]) });
    }
    // Depth-first: a directory's subdirectories come right after it.
    pending.unshift(...subdirs);
  }
}
