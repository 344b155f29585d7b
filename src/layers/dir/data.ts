/**
 * File data of DirLayer nodes: a real fd re-opened from the node's O_PATH fd
 * (regular files only: opening a fifo would block and a device would act),
 * positional reads and writes, and where the data is (SEEK_DATA/SEEK_HOLE).
 */
import { readSync, writeSync } from 'node:fs';
import { S_IFMT, S_IFREG, type DataRange } from '../../engine.js';
import { FsError } from '../../errors.js';
import { closeFd, isSysError, sys } from '../../native/sys.js';
import type { DirNode } from './node-table.js';

/**
 * The node's data fd, opened on first use: O_RDWR on a writable layer (O_RDONLY
 * when the mode refuses writing and only reading is asked), O_RDONLY otherwise;
 * re-opened O_RDWR when a write comes to a read-only one.
 */
export function openDataFd(node: DirNode, pathFd: () => number, layerWritable: boolean, forWrite: boolean): number {
  if (node.type === 'd') throw new FsError('EISDIR');
  if (node.type !== 'f') throw new FsError('EINVAL', 'not a regular file');
  if (node.io >= 0 && (node.ioWritable || !forWrite)) return node.io;
  const s = sys();
  const c = s.constants;
  const from = pathFd();
  let writable = layerWritable;
  let fd: number;
  try {
    fd = s.reopen(from, writable ? c.O_RDWR : c.O_RDONLY);
  } catch (err) {
    if (!writable || forWrite || !isSysError(err, 'EACCES', 'EROFS', 'ETXTBSY')) throw err;
    fd = s.reopen(from, c.O_RDONLY);
    writable = false;
  }
  if ((s.fstatat(fd, '', c.AT_EMPTY_PATH).mode & S_IFMT) !== S_IFREG) {
    closeFd(fd);
    throw new FsError('EINVAL', 'not a regular file');
  }
  if (node.io >= 0) closeFd(node.io);
  node.io = fd;
  node.ioWritable = writable;
  return fd;
}

/** Up to `length` bytes at `position`, short only at end of file. */
export function readAt(fd: number, position: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, out, done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return out.subarray(0, done);
}

/** All of `data` at `position`; short (not an error) when the filesystem fills up part way. */
export function writeAt(fd: number, position: number, data: Buffer): number {
  let done = 0;
  while (done < data.length) {
    try {
      done += writeSync(fd, data, done, data.length - done, position + done);
    } catch (err) {
      if (done > 0 && isSysError(err, 'ENOSPC', 'EDQUOT')) return done;
      throw err;
    }
  }
  return done;
}

/** The data ranges within `size`; a filesystem without SEEK_DATA reports all of it as data. */
export function dataRangesOf(fd: number, size: number): DataRange[] {
  const s = sys();
  const ranges: DataRange[] = [];
  let pos = 0;
  while (pos < size) {
    let start: number;
    try {
      start = s.lseek(fd, pos, s.constants.SEEK_DATA);
    } catch (err) {
      if (isSysError(err, 'ENXIO')) break; // a hole from pos to the end
      if (isSysError(err, 'EINVAL', 'EOPNOTSUPP')) return size > 0 ? [{ offset: 0, length: size }] : [];
      throw err;
    }
    if (start >= size) break;
    const end = Math.min(s.lseek(fd, start, s.constants.SEEK_HOLE), size);
    ranges.push({ offset: start, length: end - start });
    pos = end;
  }
  return ranges;
}
