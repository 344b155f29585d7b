import { createHash } from 'node:crypto';
import type { Writable } from 'node:stream';
import { devMajor, devMinor, fileTypeOf, type InodeId, type ReadableFs, type Stat } from '../engine.js';
import { atPath, CorruptError, FsError } from '../errors.js';
import { LineWriter } from '../io/write-stream.js';
import { normalizePath, resolvePath } from './path.js';

/**
 * Manifests: one line per entry under a path, the format the compatibility
 * tests compare against an independent script and the kernel's view:
 *
 *   PATH \t TYPE \t MODE \t UID \t GID \t SIZE \t MTIME \t DATA \t XATTRS
 *
 * PATH starts with "/" and has "\" "\t" "\n" escaped (as has a symlink target
 * in DATA); TYPE is one of f d l c b p s; MODE 4 octal digits; SIZE bytes for
 * f and l, else "-"; MTIME integer seconds; DATA the sha256 of the content (f),
 * the target (l), MAJOR:MINOR (c, b), else "-"; XATTRS "-" or name=BASE64
 * pairs sorted by the name's bytes and joined by ",", names escaped as PATH.
 * Lines are bytes: names (file and xattr) are written as stored, not
 * re-encoded.
 *
 * Order is by the raw (unescaped) path bytes. A depth-first walk produces it
 * without sorting the whole tree: within a directory, an entry "x" sorts as
 * "x" and everything below it as "x/" (all paths sharing a prefix are
 * contiguous in byte order), so sorting those keys per directory interleaves
 * siblings and subtrees exactly as a global sort would. Memory stays at one
 * directory listing per level.
 */

/**
 * Bytes hashed per read: 128 KiB, the largest SquashFS block, so a read is
 * one cached block (a view, no copy); 1 MiB reads joined eight blocks into a
 * fresh buffer each time.
 */
const HASH_CHUNK = 128 << 10;
/** Entries of one directory whose lines are computed concurrently. */
const LOOKAHEAD = 8;
const SLASH = Buffer.from('/');

/** Escapes "\", TAB and LF; other bytes are kept as they are. */
export function escapeManifestField(bytes: Buffer): Buffer {
  let extra = 0;
  for (const b of bytes) if (b === 0x5c || b === 0x09 || b === 0x0a) extra++;
  if (extra === 0) return bytes;
  const out = Buffer.allocUnsafe(bytes.length + extra);
  let o = 0;
  for (const b of bytes) {
    if (b === 0x5c || b === 0x09 || b === 0x0a) {
      out[o++] = 0x5c;
      out[o++] = b === 0x5c ? 0x5c : b === 0x09 ? 0x74 : 0x6e;
    } else {
      out[o++] = b;
    }
  }
  return out;
}

/** sha256 of a file; the next chunk is being read while the current one is hashed. */
async function contentHash(fs: ReadableFs, id: InodeId, size: number): Promise<string> {
  const h = createHash('sha256');
  let pos = 0;
  let next = size > 0 ? fs.read(id, 0, Math.min(HASH_CHUNK, size)) : null;
  while (next) {
    const chunk = await next;
    if (chunk.length === 0) throw new CorruptError(`file ended at ${pos} of its ${size} bytes`, fs.name);
    pos += chunk.length;
    next = pos < size ? fs.read(id, pos, Math.min(HASH_CHUNK, size - pos)) : null;
    h.update(chunk);
  }
  return h.digest('hex');
}

/** `-`, or `name=BASE64` pairs sorted by the name's bytes, names escaped as paths are. */
async function xattrField(fs: ReadableFs, id: InodeId): Promise<Buffer> {
  const names = (await fs.listxattr(id)).slice().sort(Buffer.compare);
  if (names.length === 0) return DASH;
  const parts: Buffer[] = [];
  for (const name of names) {
    const value = await fs.getxattr(id, name);
    if (parts.length > 0) parts.push(COMMA);
    parts.push(escapeManifestField(name), Buffer.from(`=${(value ?? Buffer.alloc(0)).toString('base64')}`));
  }
  return Buffer.concat(parts);
}

const DASH = Buffer.from('-');
const TAB = Buffer.from('\t');
const COMMA = Buffer.from(',');

/** The manifest line (without newline) of one entry. */
export async function manifestLine(fs: ReadableFs, id: InodeId, path: Buffer, st?: Stat): Promise<Buffer> {
  try {
    return await entryLine(fs, id, path, st);
  } catch (err) {
    throw atPath(err, path.toString());
  }
}

async function entryLine(fs: ReadableFs, id: InodeId, path: Buffer, st?: Stat): Promise<Buffer> {
  const s = st ?? (await fs.getattr(id));
  const type = fileTypeOf(s.mode);
  if (type === null) throw new CorruptError(`invalid file type in mode 0${s.mode.toString(8)}`, fs.name);
  let size = '-';
  let data: string | Buffer = '-';
  if (type === 'f') {
    size = String(s.size);
    data = await contentHash(fs, id, s.size);
  } else if (type === 'l') {
    const target = await fs.readlink(id);
    size = String(target.length);
    data = escapeManifestField(target);
  } else if (type === 'c' || type === 'b') {
    data = `${devMajor(s.rdev)}:${devMinor(s.rdev)}`;
  }
  const mode = (s.mode & 0o7777).toString(8).padStart(4, '0');
  const xattrs = await xattrField(fs, id);
  return Buffer.concat([
    escapeManifestField(path),
    Buffer.from(`\t${type}\t${mode}\t${s.uid}\t${s.gid}\t${size}\t${s.mtime}\t`),
    typeof data === 'string' ? Buffer.from(data) : data,
    TAB,
    xattrs,
  ]);
}

type Item = { key: Buffer; kind: 'entry' | 'subtree'; id: InodeId; path: Buffer };

/**
 * Manifest lines for `path` (default "/") and everything under it, in raw
 * path byte order. Directory loops in a hostile image raise CorruptError.
 */
export async function* manifestLines(fs: ReadableFs, path: string | Buffer = '/'): AsyncGenerator<Buffer> {
  const top = normalizePath(path);
  const topId = await resolvePath(fs, top);
  const topStat = await fs.getattr(topId).catch((err: unknown) => {
    throw atPath(err, top.toString());
  });
  yield await manifestLine(fs, topId, top, topStat);
  if (fileTypeOf(topStat.mode) !== 'd') return;
  yield* walk(fs, topId, top.length === 1 ? Buffer.alloc(0) : top, new Set<InodeId>([topId]), 0);
}

async function* walk(fs: ReadableFs, dir: InodeId, prefix: Buffer, seen: Set<InodeId>, depth: number): AsyncGenerator<Buffer> {
  const items: Item[] = [];
  let entries;
  try {
    entries = await fs.readdir(dir);
  } catch (err) {
    if (err instanceof FsError && err.code === 'ENOTDIR') {
      throw new CorruptError(`${prefix.toString()}: listed as a directory, but its inode is not one`, fs.name);
    }
    throw atPath(err, prefix.length === 0 ? '/' : prefix.toString());
  }
  for (const e of entries) {
    const path = Buffer.concat([prefix, SLASH, e.name]);
    items.push({ key: e.name, kind: 'entry', id: e.id, path });
    if (e.type === 'd') items.push({ key: Buffer.concat([e.name, SLASH]), kind: 'subtree', id: e.id, path });
  }
  items.sort((a, b) => Buffer.compare(a.key, b.key));
  // Lines of the next few entries are computed ahead (reads and decompression
  // overlap with hashing); they are still yielded strictly in order.
  const ahead = new Map<number, Promise<Buffer>>();
  const start = (k: number): void => {
    const it = items[k];
    if (it && it.kind === 'entry' && !ahead.has(k)) {
      const p = manifestLine(fs, it.id, it.path);
      p.catch(() => undefined); // observed when its turn comes
      ahead.set(k, p);
    }
  };
  for (let k = 0; k < items.length; k++) {
    const item = items[k]!;
    if (item.kind === 'entry') {
      for (let j = k; j < k + LOOKAHEAD; j++) start(j);
      const line = await ahead.get(k)!;
      ahead.delete(k);
      yield line;
      continue;
    }
    // Directories cannot be hard-linked, so each is walked once: a second
    // sighting is a loop or a shared subtree in a hostile image, either of
    // which would make the walk endless or exponential.
    if (seen.has(item.id)) throw new CorruptError(`${item.path.toString()}: directory appears twice in the tree (loop)`, fs.name);
    if (depth >= 4096) throw new CorruptError(`${item.path.toString()}: directories nested deeper than 4096 levels`, fs.name);
    seen.add(item.id);
    yield* walk(fs, item.id, item.path, seen, depth + 1);
  }
}

/** Writes the manifest to a stream in batches of lines, honouring backpressure (lines before a failure are written). */
export async function writeManifest(fs: ReadableFs, path: string | Buffer, out: Writable): Promise<void> {
  const lines = new LineWriter(out);
  try {
    for await (const line of manifestLines(fs, path)) await lines.line(line);
  } finally {
    await lines.flush();
  }
}
