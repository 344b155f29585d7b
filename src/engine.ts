/**
 * The interface every filesystem engine and layer offers (SquashFS, ext3, the
 * memory and directory layers, and the Overlay itself). The overlay
 * (src/layers) and the inspection commands (manifest, ls, cat) are written
 * against this, never against an engine's internals; the FUSE adapter
 * (src/fuse) sits on the overlay and knows nothing else.
 *
 * ID spaces (as squashfuse's ll_inode.c writes its own down):
 * - `InodeId`: the engine's handle for an object, a JS number below 2^53. The
 *   SquashFS engine uses the 48-bit inode reference (block << 16 | offset: no
 *   table needed); ext3 the inode number; MemLayer a counter; DirLayer an
 *   index into its table of open O_PATH handles; the Overlay a counter of its
 *   own merged nodes. An id is meaningful only to the engine that issued it.
 *   Ext3 reuses a number once its inode is freed (nlink 0 and no references),
 *   so holders keep it alive with `ref` (below).
 * - `Stat.ino`: st_ino as users see it. Equal for hard links of one engine.
 *   The Overlay derives it from the layer that holds the object's origin
 *   (xino: layer index in the high bits), so it is stable across copy-up and
 *   remount and unique across layers. `Stat.generation` (ext3 i_generation,
 *   SquashFS 0) tells two lives of one number apart.
 * - FUSE nodeids are the adapter's own handles (src/fuse): nodeid 1 is the
 *   root, others map to Overlay InodeIds with a lookup count each; FORGET and
 *   BATCH_FORGET turn into `unref` when a count reaches zero.
 *
 * Lifetimes: `ref(id, n)` / `unref(id, n)` count references held by callers
 * (kernel lookups, open handles, the overlay's bindings to layer inodes).
 * They are queued with the engine's mutations. A referenced inode and its
 * number stay alive: an unlinked one stays on the orphan list (ext3) until its
 * count drops to 0, then it is freed. `ref` of an inode that is already free
 * fails with ENOENT (the caller raced an unlink): it never attaches to a later
 * inode that reuses the number. `lookup` itself takes no reference; a caller
 * that must bind a name to an inode with no unlink in between serialises its
 * own namespace operations around lookup + ref (the Overlay does).
 *
 * Conventions:
 * - Names and xattr names are raw bytes (Buffer), decoded nowhere:
 *   filesystems store bytes, not UTF-8, manifests must be byte-exact and
 *   copy-up between engines must not rename anything. Names never contain '/'
 *   or NUL and are never '.' or '..'. An xattr name is the full name with its
 *   namespace prefix ("user.foo", "security.capability").
 * - "Not here" is a result: `lookup` returns null, `getxattr` returns null.
 *   Errors are FsError (a POSIX code), CorruptError (bad image bytes),
 *   UnsupportedError (valid, not handled) or InternalError (an engine bug or
 *   misuse: never the image's fault). A CorruptError names the image.
 * - Every method is async at the boundary; a cache hit resolves without I/O.
 *
 * Atomicity and concurrency:
 * - Writable engines serialise their own mutations (one queue per engine), so
 *   callers may issue operations concurrently; each mutating call is atomic:
 *   no other call observes or interleaves with its intermediate state, and a
 *   crash leaves either all of it or none of it (journaled engines: one call
 *   never spans two journal commits). Nothing spans calls: a sequence of calls
 *   (copy-up, a whiteout after an unlink) is the caller's to make safe
 *   (build in a work directory, then one rename).
 * - Readers (getattr, lookup, readdir, read, readlink, xattrs) may run beside
 *   the queue, but never see a namespace change half done: a lookup or readdir
 *   that overlaps a rename sees the tree before or after it.
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
    case S_IFREG:
      return 'f';
    case S_IFDIR:
      return 'd';
    case S_IFLNK:
      return 'l';
    case S_IFCHR:
      return 'c';
    case S_IFBLK:
      return 'b';
    case S_IFIFO:
      return 'p';
    case S_IFSOCK:
      return 's';
    default:
      return null;
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
  /** Tells two lives of one inode number apart (ext3 i_generation; 0 where the engine has none). */
  generation: number;
}

/** A stretch of a file that holds data (SEEK_DATA..SEEK_HOLE); the gaps between ranges are holes. */
export interface DataRange {
  offset: number;
  length: number;
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

/** Bytes of a host file: `length` bytes at `position` of descriptor `fd`. */
export interface HostExtent {
  fd: number;
  position: number;
  length: number;
}

export interface ReadableFs {
  /** The image (or directory) this engine reads, for messages. */
  readonly name: string;
  readonly rootId: InodeId;
  /** False for read-only engines and for writable ones opened read-only; writes then fail with EROFS. */
  readonly writable: boolean;
  getattr(id: InodeId): Promise<Stat>;
  /**
   * Optional fast path for hot callers (FUSE readdirplus): the attributes of
   * `id` when the engine has them at hand, with no I/O and nothing awaited;
   * undefined otherwise, including wherever getattr would fail (getattr then
   * reports the error). The Stat is the engine's own: callers must not modify
   * it.
   */
  statNow?(id: InodeId): Stat | undefined;
  /**
   * Optional: true when ref and unref do nothing (an immutable image), so a
   * caller may count a reference as taken without awaiting ref.
   */
  readonly refsFree?: boolean;
  /** The child `name` of directory `dir`, or null. ENOTDIR if `dir` is not a directory. Takes no reference. */
  lookup(dir: InodeId, name: Buffer): Promise<InodeId | null>;
  /**
   * All entries of a directory except '.' and '..', in the engine's stable
   * order, as an immutable snapshot: callers must not modify it, and an engine
   * may hand out the same array again while the directory is unchanged (so a
   * caller paging through a 20,000-entry listing takes one snapshot per open
   * and indexes into it: no copy per page).
   */
  readdir(dir: InodeId): Promise<readonly DirEntry[]>;
  /**
   * Up to `length` bytes at `position` (short only at end of file). EISDIR for
   * directories. The Buffer may be a view of the engine's cache: callers must
   * not modify it.
   */
  read(id: InodeId, position: number, length: number): Promise<Buffer>;
  /**
   * Optional: read()'s bytes at `position` placed in the caller's `into` (up
   * to into.length), for a caller that reuses one buffer (copy-up). Resolves
   * to the count, short only at end of file; `into` is the caller's again
   * once the promise settles.
   */
  readInto?(id: InodeId, position: number, into: Buffer): Promise<number>;
  /**
   * Optional: where read()'s bytes at `position` (up to `length`, cut at end
   * of file) lie unchanged in a host file, or null when they do not (stored
   * compressed, in pieces, or past the end). The descriptor stays open while
   * the engine is. The FUSE adapter splices such a READ's reply straight from
   * the image (no copy through the daemon).
   */
  hostExtent?(id: InodeId, position: number, length: number): Promise<HostExtent | null>;
  /**
   * Where a regular file holds data, sorted and non-overlapping, within its
   * size; every byte outside the ranges reads as zero. Engines may report a
   * hole as data (never data as a hole). Copy-up and manifests skip the gaps.
   */
  dataRanges(id: InodeId): Promise<DataRange[]>;
  /** A symlink's target bytes. EINVAL if not a symlink. */
  readlink(id: InodeId): Promise<Buffer>;
  /** Full xattr names as bytes (e.g. "user.foo", "security.capability"). */
  listxattr(id: InodeId): Promise<Buffer[]>;
  getxattr(id: InodeId, name: Buffer): Promise<Buffer | null>;
  /** Takes `n` references (default 1) on a live inode; ENOENT if it was freed. See "Lifetimes". */
  ref(id: InodeId, n?: number): Promise<void>;
  /** Drops `n` references (default 1); the last one frees an unlinked inode. */
  unref(id: InodeId, n?: number): Promise<void>;
  statfs(): Promise<StatFs>;
  close(): Promise<void>;
}

/**
 * rename(2)/renameat2(2) flags. `noreplace` fails with EEXIST when the target
 * exists; `exchange` swaps two existing entries atomically (ENOENT if either
 * is missing); `whiteout` leaves a whiteout (char 0/0, owned by uid/gid) at
 * the source in the same atomic step (the kernel's RENAME_WHITEOUT: no commit
 * may fall between the rename and the whiteout). `exchange` combines with
 * neither of the others (EINVAL).
 */
export interface RenameFlags {
  noreplace?: boolean;
  exchange?: boolean;
  whiteout?: { uid: number; gid: number };
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
  /** Removes a non-directory name. The inode lives on while referenced (see ref/unref). */
  unlink(dir: InodeId, name: Buffer): Promise<void>;
  /** Removes an empty directory (ENOTEMPTY otherwise). */
  rmdir(dir: InodeId, name: Buffer): Promise<void>;
  /**
   * POSIX rename(2): replaces an existing target (a file by a file, an empty
   * directory by a directory), fixes '..' and link counts when a directory
   * changes parent; EINVAL when moving a directory under itself. `flags` as
   * renameat2(2) (see RenameFlags).
   */
  rename(oldDir: InodeId, oldName: Buffer, newDir: InodeId, newName: Buffer, flags?: RenameFlags): Promise<void>;
  /**
   * Writes all of `data` at `position`, extending the file (holes stay holes).
   * Returns bytes written. `data` is the caller's again once the promise
   * settles (an engine keeping bytes copies them).
   */
  write(id: InodeId, position: number, data: Buffer): Promise<number>;
  truncate(id: InodeId, size: number): Promise<void>;
  setattr(id: InodeId, attr: SetAttr): Promise<void>;
  /** flags: 'create' fails with EEXIST, 'replace' fails with ENODATA. */
  setxattr(id: InodeId, name: Buffer, value: Buffer, flags?: 'create' | 'replace'): Promise<void>;
  /** ENODATA when absent. */
  removexattr(id: InodeId, name: Buffer): Promise<void>;
  /** Durability of one file (and, journaled engines: everything committed with it). */
  fsync(id: InodeId, dataOnly: boolean): Promise<void>;
  /** Everything written so far is durable. */
  sync(): Promise<void>;
}
