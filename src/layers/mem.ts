/**
 * MemLayer: the `--writable-tmpfs` upper. A WritableFs whose data and
 * metadata live in this process's memory and vanish with it, bounded by a
 * byte cap (default 64 MiB, Apptainer's `sessiondir max size`).
 *
 * The cap counts what tmpfs would: file data in 4 KiB pages (sparse-data.ts:
 * holes cost nothing), plus a fair estimate of metadata: INODE_BYTES per
 * inode, DIRENT_BYTES + the name per directory entry, XATTR_BYTES + name +
 * value per extended attribute, and symlink targets. An operation that would
 * go over the cap fails with ENOSPC and changes nothing, except a write,
 * which writes the pages that fit and returns that count (ENOSPC only when
 * not one byte fits), as a full disk does.
 *
 * Semantics are those of src/engine.ts, implemented directly:
 * - ids: a counter, never reused, so `ref` of a freed id is always ENOENT;
 *   st_ino = id; `generation` is a per-layer counter stamped at creation.
 * - every call does all its work synchronously once it starts (no await
 *   inside), so each is atomic and calls take effect in the order they are
 *   made: readers never see half a rename, and `ref`/`unref` are ordered with
 *   mutations by construction.
 * - lifetimes: an inode lives while it has a name or a reference; an
 *   unlinked open file stays readable and writable and keeps counting
 *   against the cap until its last `unref`.
 * - names and xattr names are bytes (kept as latin1 strings: one char per
 *   byte). xattr namespaces user., trusted., security. and the two POSIX ACL
 *   names are stored as opaque bytes (trusted.* is allowed: the layer is
 *   in-process, so the overlay's own trusted.overlay.* markers work here).
 * - times in nanoseconds from the wall clock; atime is kept as set (reads do
 *   not update it: noatime).
 * - readdir hands out one frozen snapshot per directory version.
 */
import {
  S_IFDIR,
  fileTypeOf,
  typeBits,
  type DataRange,
  type DirEntry,
  type FileType,
  type InodeId,
  type NewNode,
  type RenameFlags,
  type SetAttr,
  type Stat,
  type StatFs,
  type WritableFs,
} from '../engine.js';
import { FsError, InternalError, type ErrnoCode } from '../errors.js';
import type { UpperLayer } from './layer.js';
import { PAGE, SparseData } from './sparse-data.js';

export const DEFAULT_CAP_BYTES = 64 * 1024 * 1024;
/** Metadata estimate per inode (the kernel's shmem inode is a few hundred bytes). */
export const INODE_BYTES = 256;
/** Metadata estimate per directory entry, plus the name's bytes. */
export const DIRENT_BYTES = 32;
/** Metadata estimate per xattr, plus name and value bytes. */
export const XATTR_BYTES = 32;

const NAME_MAX = 255;
/** Linux XATTR_NAME_MAX and XATTR_SIZE_MAX. */
const XATTR_NAME_MAX = 255;
const XATTR_SIZE_MAX = 65536;
/** Symlink targets: PATH_MAX with its NUL, as tmpfs takes them. */
const SYMLINK_MAX = 4095;
/** Largest file size: offsets stay exact JS numbers. */
const MAX_FILE_SIZE = Number.MAX_SAFE_INTEGER;
const XATTR_PREFIXES = ['user.', 'trusted.', 'security.'];
const XATTR_EXACT = ['system.posix_acl_access', 'system.posix_acl_default'];

interface Time {
  sec: number;
  nsec: number;
}

interface MemNode {
  id: number;
  generation: number;
  type: FileType;
  perm: number;
  uid: number;
  gid: number;
  rdev: number;
  nlink: number;
  refs: number;
  atime: Time;
  mtime: Time;
  ctime: Time;
  xattrs: Map<string, Buffer>;
  /** Regular files. */
  data: SparseData | null;
  /** Symlinks. */
  target: Buffer | null;
  /** Directories: name (latin1 of the bytes) -> id, in creation order. */
  entries: Map<string, number> | null;
  /** Directories: parent id (the root is its own); 0 once removed. */
  parent: number;
  /** Directories: the readdir snapshot of the current entries, or null after a change. */
  listing: readonly DirEntry[] | null;
}

export interface MemLayerOptions {
  /** For messages (default 'tmpfs'). */
  name?: string;
  /** Byte cap (default 64 MiB). */
  capBytes?: number;
  rootMode?: number;
  rootUid?: number;
  rootGid?: number;
  /** Clock (tests). */
  now?: () => Time;
}

function wallClock(): Time {
  const ms = performance.timeOrigin + performance.now();
  const sec = Math.floor(ms / 1000);
  return { sec, nsec: Math.min(999_999_999, Math.round((ms - sec * 1000) * 1e6)) };
}

const DOT = Buffer.from('.');
const DOTDOT = Buffer.from('..');
const key = (name: Buffer): string => name.toString('latin1');
const fail = (code: ErrnoCode, detail: string): FsError => new FsError(code, detail);

export class MemLayer implements WritableFs {
  readonly name: string;
  readonly rootId: InodeId;
  readonly writable = true;
  readonly capBytes: number;
  private readonly nodes = new Map<number, MemNode>();
  private nextId = 1;
  private nextGeneration = 1;
  private used = 0;
  private closed = false;
  private readonly now: () => Time;

  constructor(options: MemLayerOptions = {}) {
    this.name = options.name ?? 'tmpfs';
    this.capBytes = options.capBytes ?? DEFAULT_CAP_BYTES;
    if (!Number.isSafeInteger(this.capBytes) || this.capBytes < INODE_BYTES) {
      throw new InternalError(`byte cap ${this.capBytes} is not a size of at least ${INODE_BYTES} bytes`, this.name);
    }
    this.now = options.now ?? wallClock;
    const root = this.newNode('d', options.rootMode ?? 0o755, options.rootUid ?? 0, options.rootGid ?? 0);
    root.parent = root.id;
    this.rootId = root.id;
  }

  /** Bytes counted against the cap now (data pages and the metadata estimate). */
  get usedBytes(): number {
    return this.used;
  }

  // ---- space ----------------------------------------------------------------

  private fits(bytes: number): boolean {
    return this.used + bytes <= this.capBytes;
  }

  private charge(bytes: number, what: string): void {
    if (!this.fits(bytes)) throw fail('ENOSPC', `${what}: ${this.name} is full (${this.capBytes} bytes)`);
    this.used += bytes;
  }

  private xattrCost(name: string, value: Buffer): number {
    return XATTR_BYTES + name.length + value.length;
  }

  /** Everything a node itself holds (not its names). */
  private nodeCost(n: MemNode): number {
    let bytes = INODE_BYTES;
    for (const [k, v] of n.xattrs) bytes += this.xattrCost(k, v);
    if (n.data) bytes += n.data.pageCount * PAGE;
    if (n.target) bytes += n.target.length;
    return bytes;
  }

  /**
   * Checks the layer's bookkeeping from scratch: the bytes counted equal the
   * bytes recounted, every directory's nlink is 2 + its subdirectories, every
   * inode's nlink is the names it has, and every inode is named or
   * referenced. Throws InternalError naming the first difference.
   */
  verify(): void {
    this.live();
    let bytes = 0;
    const names = new Map<number, number>();
    for (const n of this.nodes.values()) {
      bytes += this.nodeCost(n);
      if (!n.entries) continue;
      let subdirs = 0;
      for (const [k, id] of n.entries) {
        bytes += DIRENT_BYTES + k.length;
        const child = this.nodes.get(id);
        if (!child) throw new InternalError(`entry ${JSON.stringify(k)} of inode ${n.id} names freed inode ${id}`, this.name);
        names.set(id, (names.get(id) ?? 0) + 1);
        if (child.entries) {
          subdirs++;
          if (child.parent !== n.id)
            throw new InternalError(`directory ${id} is in ${n.id} but its parent is ${child.parent}`, this.name);
        }
      }
      if (n.nlink !== 0 && n.nlink !== 2 + subdirs)
        throw new InternalError(`directory ${n.id} has nlink ${n.nlink} with ${subdirs} subdirectories`, this.name);
    }
    if (bytes !== this.used) throw new InternalError(`${this.used} bytes counted against the cap, ${bytes} recounted`, this.name);
    for (const n of this.nodes.values()) {
      const named = names.get(n.id) ?? 0;
      if (n.entries) {
        if (n.id !== this.rootId && named !== (n.nlink === 0 ? 0 : 1))
          throw new InternalError(`directory ${n.id} has ${named} names`, this.name);
      } else if (n.nlink !== named) {
        throw new InternalError(`inode ${n.id} has nlink ${n.nlink} and ${named} names`, this.name);
      }
      if (n.id !== this.rootId && named === 0 && n.refs === 0)
        throw new InternalError(`inode ${n.id} is neither named nor referenced`, this.name);
    }
  }

  // ---- nodes ----------------------------------------------------------------

  private newNode(type: FileType, perm: number, uid: number, gid: number): MemNode {
    const t = this.now();
    const n: MemNode = {
      id: this.nextId++,
      generation: this.nextGeneration++,
      type,
      perm: perm & 0o7777,
      uid,
      gid,
      rdev: 0,
      nlink: type === 'd' ? 2 : 1,
      refs: 0,
      atime: t,
      mtime: t,
      ctime: t,
      xattrs: new Map(),
      data: type === 'f' ? new SparseData() : null,
      target: null,
      entries: type === 'd' ? new Map() : null,
      parent: 0,
      listing: null,
    };
    this.nodes.set(n.id, n);
    this.used += INODE_BYTES;
    return n;
  }

  private live(): void {
    if (this.closed) throw new InternalError('used after close', this.name);
  }

  private node(id: InodeId, what: string): MemNode {
    this.live();
    const n = this.nodes.get(id);
    if (!n) throw fail('ENOENT', `${what}: no inode ${id}`);
    return n;
  }

  private dir(id: InodeId, what: string): MemNode & { entries: Map<string, number> } {
    const n = this.node(id, what);
    if (!n.entries) throw fail('ENOTDIR', what);
    return n as MemNode & { entries: Map<string, number> };
  }

  /** A directory that can take new entries (not removed). */
  private liveDir(id: InodeId, what: string): MemNode & { entries: Map<string, number> } {
    const d = this.dir(id, what);
    if (d.nlink === 0) throw fail('ENOENT', `${what}: the directory was removed`);
    return d;
  }

  private checkName(name: Buffer, what: string): void {
    if (name.length > NAME_MAX) throw fail('ENAMETOOLONG', what);
    if (name.length === 0 || name.includes(0x2f) || name.includes(0) || name.equals(DOT) || name.equals(DOTDOT)) {
      throw fail('EINVAL', `${what}: bad name`);
    }
  }

  private stampChange(n: MemNode): void {
    n.ctime = this.now();
  }

  private stampModify(n: MemNode): void {
    const t = this.now();
    n.mtime = t;
    n.ctime = t;
    if (n.entries) n.listing = null;
  }

  private maybeFree(n: MemNode): void {
    if (n.nlink > 0 || n.refs > 0 || n.id === this.rootId) return;
    this.used -= this.nodeCost(n);
    this.nodes.delete(n.id);
  }

  private dropName(n: MemNode): void {
    if (n.type === 'd') n.nlink = 0;
    else n.nlink--;
    this.stampChange(n);
    this.maybeFree(n);
  }

  private isAncestor(ancestor: number, id: number): boolean {
    let cur = id;
    for (let depth = 0; depth <= this.nodes.size; depth++) {
      if (cur === ancestor) return true;
      const n = this.nodes.get(cur);
      if (!n || n.parent === cur || n.parent === 0) return false;
      cur = n.parent;
    }
    throw new InternalError(`directory parents of inode ${id} form a cycle`, this.name);
  }

  // ---- ReadableFs -------------------------------------------------------------

  async getattr(id: InodeId): Promise<Stat> {
    const n = this.node(id, 'getattr');
    let size = 0;
    let blocks = 0;
    if (n.data) {
      size = n.data.size;
      blocks = n.data.pageCount * (PAGE / 512);
    } else if (n.target) {
      size = n.target.length;
    } else if (n.entries) {
      // tmpfs: BOGO_DIRENT_SIZE (20) per entry, '.' and '..' included.
      size = (n.entries.size + 2) * 20;
    }
    return {
      ino: n.id,
      mode: typeBits(n.type) | n.perm,
      nlink: n.nlink,
      uid: n.uid,
      gid: n.gid,
      size,
      blocks,
      atime: n.atime.sec,
      atimeNsec: n.atime.nsec,
      mtime: n.mtime.sec,
      mtimeNsec: n.mtime.nsec,
      ctime: n.ctime.sec,
      ctimeNsec: n.ctime.nsec,
      rdev: n.rdev,
      generation: n.generation,
    };
  }

  async lookup(dir: InodeId, name: Buffer): Promise<InodeId | null> {
    const d = this.dir(dir, 'lookup');
    if (name.length > NAME_MAX) throw fail('ENAMETOOLONG', 'lookup');
    return d.entries.get(key(name)) ?? null;
  }

  async readdir(dir: InodeId): Promise<readonly DirEntry[]> {
    const d = this.dir(dir, 'readdir');
    if (!d.listing) {
      const out: DirEntry[] = [];
      for (const [k, id] of d.entries) {
        out.push(Object.freeze({ name: Buffer.from(k, 'latin1'), id, type: this.nodes.get(id)!.type }));
      }
      d.listing = Object.freeze(out);
    }
    return d.listing;
  }

  private regular(id: InodeId, what: string): MemNode & { data: SparseData } {
    const n = this.node(id, what);
    if (n.type === 'd') throw fail('EISDIR', what);
    if (!n.data) throw fail('EINVAL', `${what}: not a regular file`);
    return n as MemNode & { data: SparseData };
  }

  async read(id: InodeId, position: number, length: number): Promise<Buffer> {
    const n = this.regular(id, 'read');
    if (!Number.isSafeInteger(position) || position < 0 || !Number.isSafeInteger(length) || length < 0)
      throw fail('EINVAL', 'read range');
    return n.data.read(position, length);
  }

  async dataRanges(id: InodeId): Promise<DataRange[]> {
    return this.regular(id, 'dataRanges').data.ranges();
  }

  async readlink(id: InodeId): Promise<Buffer> {
    const n = this.node(id, 'readlink');
    if (!n.target) throw fail('EINVAL', 'readlink: not a symlink');
    return Buffer.from(n.target);
  }

  async listxattr(id: InodeId): Promise<Buffer[]> {
    return [...this.node(id, 'listxattr').xattrs.keys()].map((k) => Buffer.from(k, 'latin1'));
  }

  async getxattr(id: InodeId, name: Buffer): Promise<Buffer | null> {
    const v = this.node(id, 'getxattr').xattrs.get(key(name));
    return v ? Buffer.from(v) : null;
  }

  async ref(id: InodeId, n = 1): Promise<void> {
    this.node(id, 'ref').refs += n;
  }

  async unref(id: InodeId, n = 1): Promise<void> {
    this.live();
    const node = this.nodes.get(id);
    if (!node || node.refs < n)
      throw new InternalError(`unref of inode ${id} by ${n} with ${node?.refs ?? 0} references held`, this.name);
    node.refs -= n;
    this.maybeFree(node);
  }

  async statfs(): Promise<StatFs> {
    this.live();
    const blocks = Math.floor(this.capBytes / PAGE);
    const bfree = Math.max(0, Math.floor((this.capBytes - this.used) / PAGE));
    const files = Math.floor(this.capBytes / INODE_BYTES);
    const ffree = Math.max(0, Math.floor((this.capBytes - this.used) / INODE_BYTES));
    return { bsize: PAGE, frsize: PAGE, blocks, bfree, bavail: bfree, files, ffree, namemax: NAME_MAX };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.nodes.clear();
    this.used = 0;
  }

  // ---- WritableFs -------------------------------------------------------------

  /** The common part of every create: checks, the charge for inode and entry, the entry. */
  private create(
    dir: InodeId,
    name: Buffer,
    type: FileType,
    perm: number,
    owner: { uid: number; gid: number },
    what: string,
    extra = 0,
  ): MemNode {
    const d = this.liveDir(dir, what);
    this.checkName(name, what);
    if (d.entries.has(key(name))) throw fail('EEXIST', what);
    const cost = INODE_BYTES + DIRENT_BYTES + name.length + extra;
    if (!this.fits(cost)) throw fail('ENOSPC', `${what}: ${this.name} is full (${this.capBytes} bytes)`);
    const n = this.newNode(type, perm, owner.uid, owner.gid);
    this.used += cost - INODE_BYTES;
    d.entries.set(key(name), n.id);
    this.stampModify(d);
    return n;
  }

  async mknod(dir: InodeId, name: Buffer, node: NewNode): Promise<InodeId> {
    const type = fileTypeOf(node.mode);
    if (type === null || type === 'd' || type === 'l') throw fail('EINVAL', 'mknod: not a file, device, fifo or socket');
    const n = this.create(dir, name, type, node.mode, node, 'mknod');
    if (type === 'c' || type === 'b') n.rdev = node.rdev ?? 0;
    return n.id;
  }

  async mkdir(dir: InodeId, name: Buffer, node: NewNode): Promise<InodeId> {
    const n = this.create(dir, name, 'd', node.mode, node, 'mkdir');
    n.parent = dir;
    this.nodes.get(dir)!.nlink++;
    return n.id;
  }

  async symlink(dir: InodeId, name: Buffer, target: Buffer, owner: { uid: number; gid: number }): Promise<InodeId> {
    if (target.length === 0) throw fail('ENOENT', 'symlink: empty target');
    if (target.length > SYMLINK_MAX) throw fail('ENAMETOOLONG', 'symlink target');
    const n = this.create(dir, name, 'l', 0o777, owner, 'symlink', target.length);
    n.target = Buffer.from(target);
    return n.id;
  }

  async link(id: InodeId, dir: InodeId, name: Buffer): Promise<void> {
    const n = this.node(id, 'link');
    const d = this.liveDir(dir, 'link');
    this.checkName(name, 'link');
    if (d.entries.has(key(name))) throw fail('EEXIST', 'link');
    if (n.type === 'd') throw fail('EPERM', 'link of a directory');
    if (n.nlink === 0) throw fail('ENOENT', 'link of an unlinked file');
    this.charge(DIRENT_BYTES + name.length, 'link');
    d.entries.set(key(name), n.id);
    n.nlink++;
    this.stampChange(n);
    this.stampModify(d);
  }

  /** The entry `name` of `dir` and its node (ENOENT when absent). */
  private entry(dir: InodeId, name: Buffer, what: string): { d: MemNode & { entries: Map<string, number> }; n: MemNode } {
    const d = this.dir(dir, what);
    if (name.length > NAME_MAX) throw fail('ENAMETOOLONG', what);
    const id = d.entries.get(key(name));
    if (id === undefined) throw fail('ENOENT', what);
    return { d, n: this.nodes.get(id)! };
  }

  private removeEntry(d: MemNode & { entries: Map<string, number> }, name: Buffer): void {
    d.entries.delete(key(name));
    this.used -= DIRENT_BYTES + name.length;
  }

  async unlink(dir: InodeId, name: Buffer): Promise<void> {
    const { d, n } = this.entry(dir, name, 'unlink');
    if (n.type === 'd') throw fail('EISDIR', 'unlink');
    this.removeEntry(d, name);
    this.stampModify(d);
    this.dropName(n);
  }

  async rmdir(dir: InodeId, name: Buffer): Promise<void> {
    const { d, n } = this.entry(dir, name, 'rmdir');
    if (n.type !== 'd') throw fail('ENOTDIR', 'rmdir');
    if (n.entries!.size > 0) throw fail('ENOTEMPTY', 'rmdir');
    this.removeEntry(d, name);
    d.nlink--;
    this.stampModify(d);
    n.parent = 0;
    this.dropName(n);
  }

  async rename(oldDir: InodeId, oldName: Buffer, newDir: InodeId, newName: Buffer, flags: RenameFlags = {}): Promise<void> {
    if (flags.exchange && (flags.noreplace || flags.whiteout)) throw fail('EINVAL', 'rename: exchange with other flags');
    const { d: od, n: src } = this.entry(oldDir, oldName, 'rename');
    const nd = this.liveDir(newDir, 'rename');
    this.checkName(newName, 'rename');
    const dstId = nd.entries.get(key(newName));
    const dst = dstId === undefined ? null : this.nodes.get(dstId)!;
    if (flags.noreplace && dst) throw fail('EEXIST', 'rename: target exists');
    if (flags.exchange) {
      if (!dst) throw fail('ENOENT', 'rename: exchange target missing');
      this.exchange(od, oldName, src, nd, newName, dst);
      return;
    }
    if (src.type === 'd' && this.isAncestor(src.id, nd.id)) throw fail('EINVAL', 'rename of a directory into itself');
    if (dst === src) return;
    if (dst) {
      if (src.type === 'd' && dst.type !== 'd') throw fail('ENOTDIR', 'rename');
      if (src.type !== 'd' && dst.type === 'd') throw fail('EISDIR', 'rename');
      if (dst.entries && dst.entries.size > 0) throw fail('ENOTEMPTY', 'rename');
    }
    // Space first, so a failure changes nothing: the new entry (unless it replaces one of
    // the same name), less the old one, plus the whiteout's inode and entry.
    let cost = (dst ? 0 : DIRENT_BYTES + newName.length) - (DIRENT_BYTES + oldName.length);
    if (flags.whiteout) cost += INODE_BYTES + DIRENT_BYTES + oldName.length;
    if (cost > 0 && !this.fits(cost)) throw fail('ENOSPC', `rename: ${this.name} is full (${this.capBytes} bytes)`);
    if (dst) {
      this.removeEntry(nd, newName);
      if (dst.type === 'd') {
        nd.nlink--;
        dst.parent = 0;
      }
      this.dropName(dst);
    }
    this.removeEntry(od, oldName);
    nd.entries.set(key(newName), src.id);
    this.used += DIRENT_BYTES + newName.length;
    if (src.type === 'd' && od !== nd) {
      od.nlink--;
      nd.nlink++;
      src.parent = nd.id;
    }
    if (flags.whiteout) {
      // RENAME_WHITEOUT: a char 0/0 takes the source name in the same step.
      const w = this.newNode('c', 0, flags.whiteout.uid, flags.whiteout.gid);
      od.entries.set(key(oldName), w.id);
      this.used += DIRENT_BYTES + oldName.length;
    }
    this.stampChange(src);
    this.stampModify(od);
    this.stampModify(nd);
  }

  /** RENAME_EXCHANGE: both names stay and their inodes swap; directories changing parent fix '..' and link counts. */
  private exchange(
    od: MemNode & { entries: Map<string, number> },
    oldName: Buffer,
    a: MemNode,
    nd: MemNode & { entries: Map<string, number> },
    newName: Buffer,
    b: MemNode,
  ): void {
    if (a === b) return;
    if ((a.type === 'd' && this.isAncestor(a.id, nd.id)) || (b.type === 'd' && this.isAncestor(b.id, od.id))) {
      throw fail('EINVAL', 'rename exchange of a directory into itself');
    }
    od.entries.set(key(oldName), b.id);
    nd.entries.set(key(newName), a.id);
    if (od !== nd) {
      for (const [moved, from, to] of [
        [a, od, nd],
        [b, nd, od],
      ] as const) {
        if (moved.type !== 'd') continue;
        from.nlink--;
        to.nlink++;
        moved.parent = to.id;
      }
    }
    this.stampChange(a);
    this.stampChange(b);
    this.stampModify(od);
    this.stampModify(nd);
  }

  async write(id: InodeId, position: number, data: Buffer): Promise<number> {
    const n = this.regular(id, 'write');
    if (!Number.isSafeInteger(position) || position < 0) throw fail('EINVAL', 'write position');
    if (position + data.length > MAX_FILE_SIZE) throw fail('EFBIG', 'write past the largest file size');
    if (data.length === 0) return 0;
    const written = n.data.write(position, data, (pages) => {
      if (!this.fits(pages * PAGE)) return false;
      this.used += pages * PAGE;
      return true;
    });
    if (written === 0) throw fail('ENOSPC', `write: ${this.name} is full (${this.capBytes} bytes)`);
    this.stampModify(n);
    return written;
  }

  async truncate(id: InodeId, size: number): Promise<void> {
    const n = this.regular(id, 'truncate');
    if (!Number.isSafeInteger(size) || size < 0) throw fail('EINVAL', 'truncate size');
    this.used -= n.data.truncate(size) * PAGE;
    this.stampModify(n);
  }

  async setattr(id: InodeId, attr: SetAttr): Promise<void> {
    const n = this.node(id, 'setattr');
    if (attr.mode !== undefined) n.perm = attr.mode & 0o7777;
    if (attr.uid !== undefined) n.uid = attr.uid;
    if (attr.gid !== undefined) n.gid = attr.gid;
    if (attr.atime) n.atime = { sec: attr.atime.sec, nsec: attr.atime.nsec };
    if (attr.mtime) n.mtime = { sec: attr.mtime.sec, nsec: attr.mtime.nsec };
    this.stampChange(n);
  }

  private checkXattrName(name: Buffer, what: string): string {
    const k = key(name);
    if (name.length > XATTR_NAME_MAX) throw fail('ERANGE', `${what}: name longer than ${XATTR_NAME_MAX} bytes`);
    const prefix = XATTR_PREFIXES.find((p) => k.startsWith(p));
    if (prefix === undefined && !XATTR_EXACT.includes(k)) throw fail('EOPNOTSUPP', `${what}: namespace not supported`);
    if (prefix !== undefined && k.length === prefix.length) throw fail('EINVAL', `${what}: empty name`);
    return k;
  }

  async setxattr(id: InodeId, name: Buffer, value: Buffer, flags?: 'create' | 'replace'): Promise<void> {
    const n = this.node(id, 'setxattr');
    const k = this.checkXattrName(name, 'setxattr');
    if (value.length > XATTR_SIZE_MAX) throw fail('E2BIG', `setxattr: value over ${XATTR_SIZE_MAX} bytes`);
    const old = n.xattrs.get(k);
    if (flags === 'create' && old) throw fail('EEXIST', 'setxattr');
    if (flags === 'replace' && !old) throw fail('ENODATA', 'setxattr');
    const delta = this.xattrCost(k, value) - (old ? this.xattrCost(k, old) : 0);
    if (delta > 0) this.charge(delta, 'setxattr');
    else this.used += delta;
    n.xattrs.set(k, Buffer.from(value));
    this.stampChange(n);
  }

  async removexattr(id: InodeId, name: Buffer): Promise<void> {
    const n = this.node(id, 'removexattr');
    const k = key(name);
    const old = n.xattrs.get(k);
    if (!old) throw fail('ENODATA', 'removexattr');
    n.xattrs.delete(k);
    this.used -= this.xattrCost(k, old);
    this.stampChange(n);
  }

  async fsync(id: InodeId, dataOnly: boolean): Promise<void> {
    void dataOnly;
    this.node(id, 'fsync');
  }

  async sync(): Promise<void> {
    this.live();
  }
}

export interface MemUpperOptions extends MemLayerOptions {
  /** Owner of upper/ and work/ (the caller, as Apptainer makes them). */
  uid?: number;
  gid?: number;
}

/**
 * The `--writable-tmpfs` upper as the Overlay takes it: a fresh MemLayer
 * holding `upper/` (the layer) and `work/` (scratch for copy-up), 0755 and
 * owned by the caller, writing the kernel's whiteout encoding (char 0/0,
 * trusted.overlay.*), as a kernel overlay over a tmpfs upper would.
 */
export async function openMemUpperLayer(options: MemUpperOptions = {}): Promise<UpperLayer & { fs: MemLayer }> {
  const fs = new MemLayer(options);
  const owner = { uid: options.uid ?? 0, gid: options.gid ?? 0 };
  const root = await fs.mkdir(fs.rootId, Buffer.from('upper'), { mode: S_IFDIR | 0o755, ...owner });
  const work = await fs.mkdir(fs.rootId, Buffer.from('work'), { mode: S_IFDIR | 0o755, ...owner });
  return { name: fs.name, fs, root, work, encoding: 'kernel' };
}
