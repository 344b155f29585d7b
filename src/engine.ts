/**
 * The interface every filesystem engine offers (SquashFS, ext3, and later the
 * memory and directory layers). The overlay (src/layers) and the inspection
 * commands (manifest, ls, cat) are written against this, never against an
 * engine's internals, and the FUSE adapter will sit on the overlay.
 *
 * Conventions:
 * - Objects are addressed by an engine-chosen `InodeId` (a JS number, at most
 *   2^53): the SquashFS engine uses the 48-bit inode reference, ext3 the inode
 *   number. `Stat.ino` is the inode number users see (st_ino).
 * - Names are raw bytes (Buffer): filesystems store bytes, not UTF-8, and
 *   manifests must be byte-exact. Names never contain '/' or NUL and are never
 *   '.' or '..'.
 * - "Not here" is a result: `lookup` returns null, `getxattr` returns null.
 *   Errors are FsError (a POSIX code), CorruptError (bad image bytes) or
 *   UnsupportedError.
 * - Every method is async at the boundary; a cache hit resolves without I/O.
 *   Writable engines serialise their own mutations, so callers may issue
 *   operations concurrently.
 */

export type InodeId = number;

/** One letter per file type, as in manifests and `find -printf %y`. */
export type FileType = 'f' | 'd' | 'l' | 'c' | 'b' | 'p' | 's';

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

const TYPE_BITS: Record<FileType, number> = {
  f: S_IFREG,
  d: S_IFDIR,
  l: S_IFLNK,
  c: S_IFCHR,
  b: S_IFBLK,
  p: S_IFIFO,
  s: S_IFSOCK,
};

export function typeBits(type: FileType): number {
  return TYPE_BITS[type];
}

/** The FileType of an st_mode, or null for an invalid type field. */
export function fileTypeOf(mode: number): FileType | null {
  switch (mode & S_IFMT) {
    case S_IFREG: return 'f';
    case S_IFDIR: return 'd';
    case S_IFLNK: return 'l';
    case S_IFCHR: return 'c';
    case S_IFBLK: return 'b';
    case S_IFIFO: return 'p';
    case S_IFSOCK: return 's';
    default: return null;
  }
}

/**
 * Linux dev_t encoding (glibc gnu_dev_makedev): minor bits 0-7 and major bits
 * 0-11 in the low 20 bits, the rest above. The kernel limits major to 12 bits
 * and minor to 20, so real values stay below 2^32 and fit a JS number.
 */
export function makedev(major: number, minor: number): number {
  const lo = ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & 0xfff00) << 12)) >>> 0;
  const hi = (((minor >>> 20) & 0xfff) | (major & 0xfffff000)) >>> 0;
  return hi * 0x100000000 + lo;
}

export function devMajor(dev: number): number {
  const lo = dev >>> 0;
  const hi = Math.floor(dev / 0x100000000) >>> 0;
  return (((lo >>> 8) & 0xfff) | (hi & 0xfffff000)) >>> 0;
}

export function devMinor(dev: number): number {
  const lo = dev >>> 0;
  const hi = Math.floor(dev / 0x100000000) >>> 0;
  return ((lo & 0xff) | ((lo >>> 12) & 0xfff00) | ((hi & 0xfff) << 20)) >>> 0;
}

export interface Stat {
  /** st_ino as users see it. */
  ino: number;
  /** Full st_mode: type bits | permission bits (incl. suid/sgid/sticky). */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  /** Bytes for files and symlinks; the engine's notion for directories. */
  size: number;
  /** Allocated 512-byte units. */
  blocks: number;
  atime: number;
  atimeNsec: number;
  mtime: number;
  mtimeNsec: number;
  ctime: number;
  ctimeNsec: number;
  /** Device number (makedev) for 'c' and 'b', else 0. */
  rdev: number;
}

export interface DirEntry {
  name: Buffer;
  id: InodeId;
  type: FileType;
}

export interface StatFs {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  namemax: number;
}

export interface ReadableFs {
  /** The image this engine reads, for messages. */
  readonly name: string;
  readonly rootId: InodeId;
  getattr(id: InodeId): Promise<Stat>;
  /** The child `name` of directory `dir`, or null. ENOTDIR if `dir` is not a directory. */
  lookup(dir: InodeId, name: Buffer): Promise<InodeId | null>;
  /** All entries of a directory except '.' and '..', in the engine's stable order. */
  readdir(dir: InodeId): Promise<DirEntry[]>;
  /**
   * Up to `length` bytes at `position` (short only at end of file). EISDIR for
   * directories. The Buffer may be a view of the engine's cache: callers must
   * not modify it.
   */
  read(id: InodeId, position: number, length: number): Promise<Buffer>;
  /** A symlink's target bytes. EINVAL if not a symlink. */
  readlink(id: InodeId): Promise<Buffer>;
  /** Full xattr names (e.g. "user.foo", "security.capability"). */
  listxattr(id: InodeId): Promise<string[]>;
  getxattr(id: InodeId, name: string): Promise<Buffer | null>;
  statfs(): Promise<StatFs>;
  close(): Promise<void>;
}

export interface SetAttr {
  /** Permission bits only (07777); the type never changes. */
  mode?: number;
  uid?: number;
  gid?: number;
  atime?: { sec: number; nsec: number };
  mtime?: { sec: number; nsec: number };
}

export interface NewNode {
  /** Full mode: type bits (S_IFREG, S_IFCHR, ...) | permission bits. */
  mode: number;
  uid: number;
  gid: number;
  /** makedev(major, minor) for character and block devices. */
  rdev?: number;
}

export interface WritableFs extends ReadableFs {
  /** Regular file, device node, fifo or socket (mknod). EEXIST if the name exists. */
  mknod(dir: InodeId, name: Buffer, node: NewNode): Promise<InodeId>;
  mkdir(dir: InodeId, name: Buffer, node: NewNode): Promise<InodeId>;
  symlink(dir: InodeId, name: Buffer, target: Buffer, owner: { uid: number; gid: number }): Promise<InodeId>;
  /** A new name for an existing non-directory. */
  link(id: InodeId, dir: InodeId, name: Buffer): Promise<void>;
  /** Removes a non-directory name. The inode lives on while open (see open/release). */
  unlink(dir: InodeId, name: Buffer): Promise<void>;
  /** Removes an empty directory (ENOTEMPTY otherwise). */
  rmdir(dir: InodeId, name: Buffer): Promise<void>;
  /**
   * POSIX rename(2): replaces an existing target (a file by a file, an empty
   * directory by a directory), fixes '..' and link counts when a directory
   * changes parent; EINVAL when moving a directory under itself.
   */
  rename(oldDir: InodeId, oldName: Buffer, newDir: InodeId, newName: Buffer): Promise<void>;
  /** Writes all of `data` at `position`, extending the file (holes stay holes). Returns bytes written. */
  write(id: InodeId, position: number, data: Buffer): Promise<number>;
  truncate(id: InodeId, size: number): Promise<void>;
  setattr(id: InodeId, attr: SetAttr): Promise<void>;
  /** flags: 'create' fails with EEXIST, 'replace' fails with ENODATA. */
  setxattr(id: InodeId, name: string, value: Buffer, flags?: 'create' | 'replace'): Promise<void>;
  /** ENODATA when absent. */
  removexattr(id: InodeId, name: string): Promise<void>;
  /** Keeps an inode alive while a handle is open, so unlink of an open file works. */
  open(id: InodeId): Promise<void>;
  /** Drops a handle; frees the inode if it was the last and nlink is 0. */
  release(id: InodeId): Promise<void>;
  /** Durability of one file (and, journaled engines: everything committed with it). */
  fsync(id: InodeId, dataOnly: boolean): Promise<void>;
  /** Everything written so far is durable. */
  sync(): Promise<void>;
}
