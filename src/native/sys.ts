/**
 * The typed face of the sifuse_sys addon (src/native/sys.c): thin synchronous
 * wrappers of the *at and f* syscalls Node lacks. Each returns its result or
 * throws a SysError (`.code` the errno name, 'ENOENT'; `.errno` the number;
 * `.syscall`). A bad argument type throws a TypeError (a caller bug).
 *
 * Paths and names are a string (UTF-8) or a Buffer (raw bytes); results that
 * are names (readdir, readlinkat, xattr lists) are Buffers. Directory fds may
 * be O_PATH; `AT_FDCWD` is accepted wherever a directory fd is.
 *
 * O_PATH and extended attributes: neither f*xattr nor *xattrat accept an
 * O_PATH fd, so a caller holding one names its inode as `procFdPath(fd)`
 * ("/proc/self/fd/N") with AT_FDCWD and no AT_SYMLINK_NOFOLLOW: the kernel
 * follows that magic link to exactly the fd's inode (a symlink itself, not its
 * target), so no name is resolved and nothing can be swapped in between.
 * DirLayer checks once that /proc is procfs (`isProcfs`). Mode changes never
 * go through /proc: `fchmodat(fd, '', mode, AT_EMPTY_PATH)` (fchmodat2) or
 * `fchmod` on a real fd.
 */
import { closeSync } from 'node:fs';
import { loadAddon } from './load.js';
import type { StatFs } from '../engine.js';

export type Path = string | Buffer;

export interface SysError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

export function isSysError(err: unknown, ...codes: string[]): err is SysError {
  if (!(err instanceof Error)) return false;
  const code = (err as Partial<SysError>).code;
  return (
    typeof code === 'string' &&
    typeof (err as Partial<SysError>).errno === 'number' &&
    (codes.length === 0 || codes.includes(code))
  );
}

export interface SysStat {
  dev: number;
  ino: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  size: number;
  blksize: number;
  blocks: number;
  atime: number;
  atimeNsec: number;
  mtime: number;
  mtimeNsec: number;
  ctime: number;
  ctimeNsec: number;
  /** Birth time (statx STATX_BTIME), 0/0 where the filesystem keeps none. */
  btime: number;
  btimeNsec: number;
}

/** fstatfs(2): the engine's StatFs fields, and the filesystem's type and flags. */
export interface SysStatFs extends StatFs {
  /** f_type (e.g. 0xEF53 ext2/3/4, 0x9FA0 procfs). */
  type: number;
  /** f_flags (ST_RDONLY = 1, ...). */
  flags: number;
}

export interface SysDirent {
  name: Buffer;
  /** d_type (DT_REG, DT_DIR, ...; DT_UNKNOWN on filesystems that do not say). */
  type: number;
  ino: number;
}

export interface OfdLockHolder {
  exclusive: boolean;
  start: number;
  length: number;
  /** -1 for an OFD lock; the owner's pid for a classic POSIX lock. */
  pid: number;
}

export interface SysConstants {
  O_RDONLY: number;
  O_WRONLY: number;
  O_RDWR: number;
  O_CREAT: number;
  O_EXCL: number;
  O_TRUNC: number;
  O_APPEND: number;
  O_NONBLOCK: number;
  O_DIRECTORY: number;
  O_NOFOLLOW: number;
  O_PATH: number;
  O_NOATIME: number;
  O_TMPFILE: number;
  O_NOCTTY: number;
  RESOLVE_NO_XDEV: number;
  RESOLVE_NO_MAGICLINKS: number;
  RESOLVE_NO_SYMLINKS: number;
  RESOLVE_BENEATH: number;
  RESOLVE_IN_ROOT: number;
  AT_FDCWD: number;
  AT_SYMLINK_NOFOLLOW: number;
  AT_REMOVEDIR: number;
  AT_SYMLINK_FOLLOW: number;
  AT_EMPTY_PATH: number;
  RENAME_NOREPLACE: number;
  RENAME_EXCHANGE: number;
  RENAME_WHITEOUT: number;
  UTIME_NOW: number;
  UTIME_OMIT: number;
  SEEK_SET: number;
  SEEK_CUR: number;
  SEEK_END: number;
  SEEK_DATA: number;
  SEEK_HOLE: number;
  XATTR_CREATE: number;
  XATTR_REPLACE: number;
  FALLOC_FL_KEEP_SIZE: number;
  FALLOC_FL_PUNCH_HOLE: number;
  DT_UNKNOWN: number;
  DT_FIFO: number;
  DT_CHR: number;
  DT_DIR: number;
  DT_BLK: number;
  DT_REG: number;
  DT_LNK: number;
  DT_SOCK: number;
}

export interface SysAddon {
  readonly constants: SysConstants;
  /** openat2(2) with `resolve` (RESOLVE_*); O_CLOEXEC always added; `mode` only used with O_CREAT/O_TMPFILE. */
  openat2(dirfd: number, path: Path, flags: number, mode: number, resolve: number): number;
  /**
   * A new fd with `flags` on the inode `fd` (often O_PATH) refers to, through
   * /proc/self/fd/N; ESTALE unless the result has the same st_dev/st_ino.
   * O_CREAT and O_NOFOLLOW are dropped. A symlink gives ELOOP. Never for a
   * fifo or device (the open itself would block or act): check the type first.
   */
  reopen(fd: number, flags: number): number;
  /** `dev` as engine.ts makedev(). */
  mknodat(dirfd: number, path: Path, mode: number, dev: number): void;
  mkdirat(dirfd: number, path: Path, mode: number): void;
  symlinkat(target: Path, dirfd: number, path: Path): void;
  /** Path '' reads the symlink an O_PATH|O_NOFOLLOW fd refers to. */
  readlinkat(dirfd: number, path: Path): Buffer;
  /** -1 leaves an id unchanged; flags AT_SYMLINK_NOFOLLOW, AT_EMPTY_PATH (works on O_PATH fds). */
  fchownat(dirfd: number, path: Path, uid: number, gid: number, flags: number): void;
  fchmod(fd: number, mode: number): void;
  /** Non-zero flags use fchmodat2 (Linux 6.6); ('', AT_EMPTY_PATH) on an O_PATH fd; symlinks: EOPNOTSUPP. */
  fchmodat(dirfd: number, path: Path, mode: number, flags: number): void;
  /** nsec may be UTIME_NOW or UTIME_OMIT; flags AT_SYMLINK_NOFOLLOW, AT_EMPTY_PATH. */
  utimensat(
    dirfd: number,
    path: Path,
    atimeSec: number,
    atimeNsec: number,
    mtimeSec: number,
    mtimeNsec: number,
    flags: number,
  ): void;
  renameat2(olddirfd: number, oldpath: Path, newdirfd: number, newpath: Path, flags: number): void;
  /** AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; unprivileged callers link `procFdPath(fd)` with AT_SYMLINK_FOLLOW. */
  linkat(olddirfd: number, oldpath: Path, newdirfd: number, newpath: Path, flags: number): void;
  unlinkat(dirfd: number, path: Path, flags: number): void;
  /** Through statx(2), so with the birth time; flags AT_SYMLINK_NOFOLLOW, AT_EMPTY_PATH. */
  fstatat(dirfd: number, path: Path, flags: number): SysStat;
  fstatfs(fd: number): SysStatFs;
  /** Every entry but '.' and '..', read through a fresh open of the directory (dirfd may be O_PATH). */
  readdir(dirfd: number): SysDirent[];
  /** ENODATA when absent. */
  fgetxattr(fd: number, name: Path): Buffer;
  fsetxattr(fd: number, name: Path, value: Buffer, flags: number): void;
  flistxattr(fd: number): Buffer[];
  fremovexattr(fd: number, name: Path): void;
  /** getxattrat(2) (Linux 6.13; before, the path calls for AT_FDCWD or absolute paths). ENODATA when absent. */
  getxattrat(dirfd: number, path: Path, atFlags: number, name: Path): Buffer;
  setxattrat(dirfd: number, path: Path, atFlags: number, name: Path, value: Buffer, flags: number): void;
  listxattrat(dirfd: number, path: Path, atFlags: number): Buffer[];
  removexattrat(dirfd: number, path: Path, atFlags: number, name: Path): void;
  /** SEEK_DATA / SEEK_HOLE at or past the last data: ENXIO. */
  lseek(fd: number, offset: number, whence: number): number;
  fallocate(fd: number, mode: number, offset: number, length: number): void;
  /** syncfs(2): everything on the filesystem holding `fd` is durable (a real fd: O_PATH gives EBADF). */
  syncfs(fd: number): void;
  /** Marks every descriptor from `lowfd` up close-on-exec: a child spawned next inherits only its stdio. */
  cloexecFrom(lowfd: number): void;
  /**
   * An OFD byte-range lock (fcntl F_OFD_SETLK; F_OFD_SETLKW when `wait`):
   * shared or exclusive over [start, start+length), length 0 = to the end.
   * True when taken; false when someone else holds a conflicting lock. OFD
   * locks belong to the open file description: they survive other fds of the
   * same process closing the file, and go away when this description closes.
   * Filesystems without locks (some NFS setups) throw ENOLCK; Apptainer
   * ignores that case, so callers decide.
   */
  ofdLock(fd: number, start: number, length: number, exclusive: boolean, wait?: boolean): boolean;
  ofdUnlock(fd: number, start: number, length: number): void;
  /** null when a lock of that kind could be taken now, else one conflicting lock (F_OFD_GETLK). */
  ofdGetLock(fd: number, start: number, length: number, exclusive: boolean): OfdLockHolder | null;
}

let addon: SysAddon | undefined;

/** The addon, loaded on first use (UnsupportedError with the build hint when it is not built). */
export function sys(): SysAddon {
  addon ??= loadAddon<SysAddon>('sifuse_sys');
  return addon;
}

/** OFD lock on [start, start+length) of `fd`; false when held by someone else. */
export function ofdLock(fd: number, start: number, length: number, exclusive: boolean): boolean {
  return sys().ofdLock(fd, start, length, exclusive, false);
}

export function ofdUnlock(fd: number, start: number, length: number): void {
  sys().ofdUnlock(fd, start, length);
}

/** The magic link naming exactly the inode `fd` refers to (see the header). */
export function procFdPath(fd: number): string {
  return `/proc/self/fd/${fd}`;
}

const PROC_SUPER_MAGIC = 0x9fa0;

/** True when /proc/self/fd is a real procfs, so procFdPath names what it should. */
export function isProcfs(): boolean {
  const s = sys();
  let fd = -1;
  try {
    fd = s.openat2(s.constants.AT_FDCWD, '/proc/self/fd', s.constants.O_PATH | s.constants.O_DIRECTORY, 0, 0);
    return s.fstatfs(fd).type === PROC_SUPER_MAGIC;
  } catch (err) {
    if (isSysError(err)) return false;
    throw err;
  } finally {
    if (fd >= 0) closeFd(fd);
  }
}

/** close(2) through Node (the addon has no close of its own). */
export function closeFd(fd: number): void {
  closeSync(fd);
}
