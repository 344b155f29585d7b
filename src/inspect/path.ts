import { fileTypeOf, type InodeId, type ReadableFs } from '../engine.js';
import { withErrno } from '../errors.js';

/** Linux's limit on symlinks followed while resolving one path (MAXSYMLINKS). */
const MAX_SYMLINKS = 40;
const SLASH = 0x2f;

/** Splits a path into its non-empty components, dropping ".". */
export function pathComponents(path: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= path.length; i++) {
    if (i === path.length || path[i] === SLASH) {
      if (i > start) {
        const c = path.subarray(start, i);
        if (!(c.length === 1 && c[0] === 0x2e)) out.push(c);
      }
      start = i + 1;
    }
  }
  return out;
}

/** "/a/b" form of a user-supplied path: one leading slash, no empty or "." components. */
export function normalizePath(path: string | Buffer): Buffer {
  const parts = pathComponents(Buffer.isBuffer(path) ? path : Buffer.from(path));
  if (parts.length === 0) return Buffer.from('/');
  return Buffer.concat(parts.flatMap((p) => [Buffer.from('/'), p]));
}

export interface ResolveOptions {
  /** Follow a symlink in the last component too (cat, stat -L). Default false (lstat). */
  followLast?: boolean;
}

/**
 * The InodeId of `path` inside the image, resolved as if the image were the
 * root directory: absolute symlink targets start again at the image root and
 * ".." never climbs above it, so nothing outside the image is named. FsError
 * ENOENT, ENOTDIR or ELOOP when the path does not resolve.
 */
export async function resolvePath(fs: ReadableFs, path: string | Buffer, options: ResolveOptions = {}): Promise<InodeId> {
  const queue = pathComponents(Buffer.isBuffer(path) ? path : Buffer.from(path));
  const stack: InodeId[] = [fs.rootId];
  let hops = 0;
  while (queue.length > 0) {
    const name = queue.shift()!;
    if (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e) {
      if (stack.length > 1) stack.pop();
      continue;
    }
    const dir = stack[stack.length - 1]!;
    const child = await fs.lookup(dir, name);
    if (child === null) throw withErrno('ENOENT');
    if (queue.length > 0 || options.followLast) {
      const st = await fs.getattr(child);
      if (fileTypeOf(st.mode) === 'l') {
        if (++hops > MAX_SYMLINKS) throw withErrno('ELOOP');
        const target = await fs.readlink(child);
        if (target[0] === SLASH) stack.length = 1;
        queue.unshift(...pathComponents(target));
        continue;
      }
      if (queue.length > 0 && fileTypeOf(st.mode) !== 'd') throw withErrno('ENOTDIR');
    }
    stack.push(child);
  }
  return stack[stack.length - 1]!;
}
