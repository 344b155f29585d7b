/**
 * Copy-up of one object (overlayfs.rst "Non-directories", peers.md 1): the
 * copy is built complete in work/ under a temporary name (type, owner and
 * mode at creation, then data with holes kept, xattrs, the origin's st_ino,
 * times last) and only then renamed into place by the caller, so a crash
 * never shows a half-copied file.
 *
 * `dataLimit` bounds what is copied: a copy-up for truncate(size) copies only
 * [0, size), so O_TRUNC copies nothing.
 */
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, type InodeId, type ReadableFs, type Stat } from '../../engine.js';
import { FsError } from '../../errors.js';
import { ScratchPool } from '../../io/scratch-pool.js';
import { isInternalXattr, setInternalXattr, XATTR_INO, XATTR_USER_INO } from './encoding.js';
import type { LayerRef } from './nodes.js';
import type { Stack } from './stack.js';
import type { UpperOps } from './upper-ops.js';

const COPY_CHUNK = 1 << 20;
/** Two chunk buffers per copy-up in flight; copy-ups run one at a time (the overlay's lock), so two are kept. */
const copyBuffers = new ScratchPool(COPY_CHUNK, 2);

export interface BuiltCopy {
  tmp: Buffer;
  id: InodeId;
  st: Stat;
}

/*
 * Data is copied in 1 MiB chunks with the next chunk's read under way while
 * the current one is written: the lower read (pread + decompression, off
 * the main thread where the engine can) overlaps the upper write. A lower
 * with readInto reads into two buffers taken from a pool shared by all
 * copy-ups: no chunk allocates (and page-faults in) fresh memory that lives
 * until the next GC, a sixth of the workload's daemon CPU (bench copy-up).
 */
async function copyData(src: ReadableFs, srcId: InodeId, ops: UpperOps, dst: InodeId, size: number): Promise<void> {
  const ranges = await src.dataRanges(srcId);
  const chunks: { pos: number; len: number }[] = [];
  for (const r of ranges) {
    const end = Math.min(r.offset + r.length, size);
    for (let pos = r.offset; pos < end; pos += COPY_CHUNK) chunks.push({ pos, len: Math.min(COPY_CHUNK, end - pos) });
  }
  const readInto = src.readInto?.bind(src);
  // Buffers taken from the pool; one goes back only once no read writes into it.
  const taken: Buffer[] = [];
  const readChunk = (i: number): Promise<Buffer> | null => {
    if (i >= chunks.length) return null;
    const { pos, len } = chunks[i]!;
    if (!readInto) return src.read(srcId, pos, len);
    if (taken.length < 2) taken.push(copyBuffers.take());
    const buf = taken[i & 1]!.subarray(0, len);
    return readInto(srcId, pos, buf).then((n) => buf.subarray(0, n));
  };
  let next = readChunk(0);
  let settled = false;
  try {
    for (let i = 0; i < chunks.length; i++) {
      const chunk = await next!;
      next = readChunk(i + 1);
      // A short read (a read-only lower does not shrink) just copies what came.
      if (chunk.length > 0) await writeNonZero(ops, dst, chunks[i]!.pos, chunk);
    }
    settled = true;
  } finally {
    if (settled) for (const b of taken) copyBuffers.give(b);
    // A failed write leaves the next chunk's read running: let it settle
    // unobserved (its buffer, and so both, are not given back).
    else void next?.catch(() => undefined);
  }
  await ops.fs.truncate(dst, size);
}

const BLOCK = 4096;
const ZERO_BLOCK = Buffer.alloc(BLOCK);

/**
 * Writes the 4 KiB blocks of `chunk` that hold data, in runs: all-zero blocks
 * stay holes (engines may report holes as data, and the truncate after the
 * copy gives the file its size).
 */
async function writeNonZero(ops: UpperOps, dst: InodeId, pos: number, chunk: Buffer): Promise<void> {
  let runStart = -1;
  for (let off = 0; off < chunk.length; off += BLOCK) {
    const zero = isZero(chunk, off, Math.min(off + BLOCK, chunk.length));
    if (!zero && runStart < 0) runStart = off;
    if (zero && runStart >= 0) {
      await ops.fs.write(dst, pos + runStart, chunk.subarray(runStart, off));
      runStart = -1;
    }
  }
  if (runStart >= 0) await ops.fs.write(dst, pos + runStart, chunk.subarray(runStart));
}

/** Whether bytes [start, end) of `b` (at most one block) are all zero: one native compare, no copy. */
function isZero(b: Buffer, start: number, end: number): boolean {
  return b.compare(ZERO_BLOCK, 0, end - start, start, end) === 0;
}

async function copyXattrs(src: ReadableFs, srcId: InodeId, ops: UpperOps, dst: InodeId): Promise<void> {
  for (const name of await src.listxattr(srcId)) {
    if (isInternalXattr(name)) continue;
    const value = await src.getxattr(srcId, name);
    if (value === null) continue;
    try {
      await ops.fs.setxattr(dst, name, value);
    } catch (err) {
      // As the kernel and fuse-overlayfs: an upper that cannot hold a namespace (ENOTSUP) loses it.
      if (err instanceof FsError && (err.code === 'ENOTSUP' || err.code === 'EOPNOTSUPP')) continue;
      throw err;
    }
  }
}

/**
 * Builds in work/ a copy of lower object `src` (a directory gets no entries).
 * `ino` is the st_ino the copy keeps.
 */
export async function buildCopy(stack: Stack, ops: UpperOps, src: LayerRef, ino: number, dataLimit?: number): Promise<BuiltCopy> {
  const fs = stack[src.layer]!.fs;
  const st = await fs.getattr(src.id);
  const tmp = ops.tmpName();
  const owner = { uid: st.uid, gid: st.gid };
  const fmt = st.mode & S_IFMT;
  let id: InodeId;
  if (fmt === S_IFDIR) id = await ops.fs.mkdir(ops.work, tmp, { mode: st.mode, ...owner });
  else if (fmt === S_IFLNK) id = await ops.fs.symlink(ops.work, tmp, await fs.readlink(src.id), owner);
  else id = await ops.fs.mknod(ops.work, tmp, { mode: st.mode, ...owner, rdev: st.rdev });
  try {
    if (fmt === S_IFREG) await copyData(fs, src.id, ops, id, dataLimit === undefined ? st.size : Math.min(dataLimit, st.size));
    await copyXattrs(fs, src.id, ops, id);
    await setInternalXattr(ops.fs, id, XATTR_INO, XATTR_USER_INO, Buffer.from(String(ino)));
    if (fmt !== S_IFLNK) await ops.fs.setattr(id, { mode: st.mode & 0o7777 });
    await ops.fs.setattr(id, { atime: { sec: st.atime, nsec: st.atimeNsec }, mtime: { sec: st.mtime, nsec: st.mtimeNsec } });
  } catch (err) {
    await ops.removeTree(ops.work, tmp).catch(() => undefined);
    throw err;
  }
  return { tmp, id, st };
}
