/**
 * An in-memory POSIX filesystem at the inode level, implementing WritableFs
 * exactly as an engine should: the reference every conformance target (the
 * ext3 engine, MemLayer, DirLayer, the Overlay) is compared with.
 *
 * It keeps what a manifest shows (type, permission bits, owner, size, content,
 * symlink target, device number, xattrs) plus link counts and inode identity,
 * with the errors ext3 gives for each operation. What the kernel's VFS decides
 * before a filesystem is even called (path walking, symlink following, rename
 * traps, the user.* xattr rule, chown clearing set-id bits) is not here: it is
 * in vfs.ts, which drives this model, the engine and (through a helper
 * process) the kernel identically.
 *
 * Times: the model records mtime only where an operation set it explicitly
 * (setattr); any later change of content or entries makes it unknown, because
 * the engine and the kernel stamp "now" and a comparison must not depend on
 * the clock. `mtimeKnown` tells the comparer which mtimes are exact.
 */
import { FsError } from '../../src/errors.js';
import {
  S_IFMT,
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
} from '../../src/engine.js';

/** ext2/3 EXT2_NAME_LEN. */
export const NAME_MAX = 255;

interface Node {
  id: number;
  type: FileType;
  perm: number;
  uid: number;
  gid: number;
  rdev: number;
  nlink: number;
  /** Regular files: content (holes are zeros). */
  data: Buffer;
  /** Symlinks: target bytes. */
  target: Buffer;
  xattrs: Map<string, Buffer>;
  /** Directories: name (latin1 key of the raw bytes) -> inode. */
  entries: Map<string, number>;
  /** Directories: the parent directory (the root is its own parent). */
  parent: number;
  mtime: number;
  mtimeNsec: number;
  mtimeKnown: boolean;
  atime: number;
  atimeNsec: number;
  /** Open handles (open/release). */
  opens: number;
}

export interface ModelOptions {
  /** The image's block size: bounds symlink targets (ext3 stores at most blockSize-1 bytes; 4096 for in-memory targets). */
  blockSize: number;
  rootMode?: number;
  rootUid?: number;
  rootGid?: number;
}

const key = (name: Buffer): string => name.toString('latin1');
const err = (
  code: 'ENOENT' | 'EEXIST' | 'ENOTDIR' | 'EISDIR' | 'ENOTEMPTY' | 'EINVAL' | 'ENAMETOOLONG' | 'EPERM' | 'ENODATA',
  what: string,
) => new FsError(code, what);

export class ModelFs implements WritableFs {
  readonly name = 'model';
  readonly rootId: InodeId;
  readonly blockSize: number;
  private nodes = new Map<number, Node>();
  private nextId = 2;
  private clock = 1_000_000_000;

  constructor(options: ModelOptions) {
    this.blockSize = options.blockSize;
    const root = this.newNode('d', options.rootMode ?? 0o755, options.rootUid ?? 0, options.rootGid ?? 0);
    root.parent = root.id;
    root.nlink = 2;
    this.rootId = root.id;
  }

  /** Adds a directory at setup time (lost+found, upper/, work/), as mkfs made it. */
  addDir(parent: InodeId, name: string, mode: number, uid = 0, gid = 0): InodeId {
    const p = this.dirNode(parent, 'addDir');
    const d = this.newNode('d', mode, uid, gid);
    d.parent = p.id;
    d.nlink = 2;
    p.entries.set(key(Buffer.from(name)), d.id);
    p.nlink++;
    return d.id;
  }

  /** True when this inode's mtime was set explicitly and not changed since. */
  mtimeKnown(id: InodeId): boolean {
    return this.node(id).mtimeKnown;
  }

  /** Open handles (references) on an inode: 0 once it is freed. */
  refs(id: InodeId): number {
    return this.nodes.get(id)?.opens ?? 0;
  }

  /** Number of live inodes (named or open), the model's notion of used inodes. */
  get inodeCount(): number {
    return this.nodes.size;
  }

  private newNode(type: FileType, perm: number, uid: number, gid: number): Node {
    const now = this.tick();
    const n: Node = {
      id: this.nextId++,
      type,
      perm: perm & 0o7777,
      uid,
      gid,
      rdev: 0,
      nlink: type === 'd' ? 2 : 1,
      data: Buffer.alloc(0),
      target: Buffer.alloc(0),
      xattrs: new Map(),
      entries: new Map(),
      parent: 0,
      mtime: now,
      mtimeNsec: 0,
      mtimeKnown: false,
      atime: now,
      atimeNsec: 0,
      opens: 0,
    };
    this.nodes.set(n.id, n);
    return n;
  }

  private tick(): number {
    return ++this.clock;
  }

  private touch(n: Node): void {
    n.mtime = this.tick();
    n.mtimeNsec = 0;
    n.mtimeKnown = false;
  }

  private node(id: InodeId): Node {
    const n = this.nodes.get(id);
    if (!n) throw err('ENOENT', `inode ${id}`);
    return n;
  }

  private dirNode(id: InodeId, what: string): Node {
    const n = this.node(id);
    if (n.type !== 'd') throw err('ENOTDIR', what);
    return n;
  }

  private checkName(name: Buffer, what: string): void {
    if (name.length > NAME_MAX) throw err('ENAMETOOLONG', what);
    if (
      name.length === 0 ||
      name.includes(0x2f) ||
      name.includes(0) ||
      name.equals(Buffer.from('.')) ||
      name.equals(Buffer.from('..'))
    ) {
      throw err('EINVAL', `${what}: bad name`);
    }
  }

  /** Drops one name of `n`; frees it when no name and no open handle remain. */
  private dropLink(n: Node): void {
    n.nlink--;
    this.maybeFree(n);
  }

  private maybeFree(n: Node): void {
    if (n.nlink <= 0 && n.opens === 0) this.nodes.delete(n.id);
  }

  // ---- ReadableFs -----------------------------------------------------------

  async getattr(id: InodeId): Promise<Stat> {
    const n = this.node(id);
    const size = n.type === 'f' ? n.data.length : n.type === 'l' ? n.target.length : 0;
    return {
      ino: n.id,
      mode: typeBits(n.type) | n.perm,
      nlink: n.nlink,
      uid: n.uid,
      gid: n.gid,
      size,
      blocks: 0,
      atime: n.atime,
      atimeNsec: n.atimeNsec,
      mtime: n.mtime,
      mtimeNsec: n.mtimeNsec,
      ctime: n.mtime,
      ctimeNsec: 0,
      rdev: n.rdev,
      generation: 0,
    };
  }

  async lookup(dir: InodeId, name: Buffer): Promise<InodeId | null> {
    const d = this.dirNode(dir, 'lookup');
    if (name.length > NAME_MAX) throw err('ENAMETOOLONG', 'lookup');
    return d.entries.get(key(name)) ?? null;
  }

  readonly writable = true;

  async readdir(dir: InodeId): Promise<readonly DirEntry[]> {
    const d = this.dirNode(dir, 'readdir');
    return [...d.entries].map(([k, id]) => ({ name: Buffer.from(k, 'latin1'), id, type: this.node(id).type }));
  }

  async read(id: InodeId, position: number, length: number): Promise<Buffer> {
    const n = this.node(id);
    if (n.type === 'd') throw err('EISDIR', 'read');
    if (n.type !== 'f') throw err('EINVAL', 'read');
    return Buffer.from(n.data.subarray(Math.min(position, n.data.length), Math.min(position + length, n.data.length)));
  }

  async readlink(id: InodeId): Promise<Buffer> {
    const n = this.node(id);
    if (n.type !== 'l') throw err('EINVAL', 'readlink');
    return Buffer.from(n.target);
  }

  // xattr names are kept as latin1 strings: one char per byte, so the keys are the exact bytes.
  async listxattr(id: InodeId): Promise<Buffer[]> {
    return [...this.node(id).xattrs.keys()].map((k) => Buffer.from(k, 'latin1'));
  }

  async getxattr(id: InodeId, nameBytes: Buffer): Promise<Buffer | null> {
    const v = this.node(id).xattrs.get(nameBytes.toString('latin1'));
    return v ? Buffer.from(v) : null;
  }

  async statfs(): Promise<StatFs> {
    return {
      bsize: this.blockSize,
      frsize: this.blockSize,
      blocks: 0,
      bfree: 0,
      bavail: 0,
      files: 0,
      ffree: 0,
      namemax: NAME_MAX,
    };
  }

  async close(): Promise<void> {}

  // ---- WritableFs -----------------------------------------------------------

  private create(dir: InodeId, name: Buffer, type: FileType, perm: number, uid: number, gid: number, what: string): Node {
    const d = this.dirNode(dir, what);
    this.checkName(name, what);
    if (d.entries.has(key(name))) throw err('EEXIST', what);
    const n = this.newNode(type, perm, uid, gid);
    d.entries.set(key(name), n.id);
    this.touch(d);
    return n;
  }

  async mknod(dir: InodeId, name: Buffer, node: NewNode): Promise<InodeId> {
    const type = fileTypeOf(node.mode);
    if (type === null || type === 'd' || type === 'l') throw err('EINVAL', 'mknod: bad type');
    const n = this.create(dir, name, type, node.mode & 0o7777, node.uid, node.gid, 'mknod');
    if (type === 'c' || type === 'b') n.rdev = node.rdev ?? 0;
    return n.id;
  }

  async mkdir(dir: InodeId, name: Buffer, node: NewNode): Promise<InodeId> {
    const n = this.create(dir, name, 'd', node.mode & 0o7777, node.uid, node.gid, 'mkdir');
    n.parent = dir;
    this.node(dir).nlink++;
    return n.id;
  }

  async symlink(dir: InodeId, name: Buffer, target: Buffer, owner: { uid: number; gid: number }): Promise<InodeId> {
    const d = this.dirNode(dir, 'symlink');
    this.checkName(name, 'symlink');
    if (d.entries.has(key(name))) throw err('EEXIST', 'symlink');
    // ext3_symlink: the target plus its NUL must fit one block.
    if (target.length + 1 > this.blockSize) throw err('ENAMETOOLONG', 'symlink target');
    const n = this.create(dir, name, 'l', 0o777, owner.uid, owner.gid, 'symlink');
    n.target = Buffer.from(target);
    return n.id;
  }

  async link(id: InodeId, dir: InodeId, name: Buffer): Promise<void> {
    const n = this.node(id);
    const d = this.dirNode(dir, 'link');
    this.checkName(name, 'link');
    if (d.entries.has(key(name))) throw err('EEXIST', 'link');
    if (n.type === 'd') throw err('EPERM', 'link of a directory');
    d.entries.set(key(name), n.id);
    n.nlink++;
    this.touch(d);
  }

  async unlink(dir: InodeId, name: Buffer): Promise<void> {
    const d = this.dirNode(dir, 'unlink');
    if (name.length > NAME_MAX) throw err('ENAMETOOLONG', 'unlink');
    const id = d.entries.get(key(name));
    if (id === undefined) throw err('ENOENT', 'unlink');
    const n = this.node(id);
    if (n.type === 'd') throw err('EISDIR', 'unlink');
    d.entries.delete(key(name));
    this.touch(d);
    this.dropLink(n);
  }

  async rmdir(dir: InodeId, name: Buffer): Promise<void> {
    const d = this.dirNode(dir, 'rmdir');
    if (name.length > NAME_MAX) throw err('ENAMETOOLONG', 'rmdir');
    const id = d.entries.get(key(name));
    if (id === undefined) throw err('ENOENT', 'rmdir');
    const n = this.node(id);
    if (n.type !== 'd') throw err('ENOTDIR', 'rmdir');
    if (n.entries.size > 0) throw err('ENOTEMPTY', 'rmdir');
    d.entries.delete(key(name));
    d.nlink--;
    this.touch(d);
    n.nlink = 0;
    this.maybeFree(n);
  }

  /** True when `maybeAncestor` is `id` or one of its ancestors. */
  private isAncestor(maybeAncestor: number, id: number): boolean {
    let cur = id;
    for (let depth = 0; depth <= this.nodes.size; depth++) {
      if (cur === maybeAncestor) return true;
      const n = this.node(cur);
      if (n.parent === cur) return false;
      cur = n.parent;
    }
    throw new Error('model: directory parent chain has a cycle');
  }

  async rename(oldDir: InodeId, oldName: Buffer, newDir: InodeId, newName: Buffer, flags: RenameFlags = {}): Promise<void> {
    if (flags.exchange && (flags.noreplace || flags.whiteout)) throw err('EINVAL', 'rename: exchange with other flags');
    const od = this.dirNode(oldDir, 'rename');
    const nd = this.dirNode(newDir, 'rename');
    if (oldName.length > NAME_MAX || newName.length > NAME_MAX) throw err('ENAMETOOLONG', 'rename');
    const srcId = od.entries.get(key(oldName));
    if (srcId === undefined) throw err('ENOENT', 'rename');
    this.checkName(newName, 'rename');
    const src = this.node(srcId);
    const dstId = nd.entries.get(key(newName));
    if (flags.noreplace && dstId !== undefined) throw err('EEXIST', 'rename: target exists');
    if (flags.exchange) {
      if (dstId === undefined) throw err('ENOENT', 'rename: exchange target missing');
      return this.exchange(od, oldName, src, nd, newName, this.node(dstId));
    }
    if (src.type === 'd' && this.isAncestor(srcId, newDir)) throw err('EINVAL', 'rename into itself');
    if (dstId === srcId) return;
    if (dstId !== undefined) {
      const dst = this.node(dstId);
      if (src.type === 'd' && dst.type !== 'd') throw err('ENOTDIR', 'rename');
      if (src.type !== 'd' && dst.type === 'd') throw err('EISDIR', 'rename');
      if (dst.type === 'd' && dst.entries.size > 0) throw err('ENOTEMPTY', 'rename');
      nd.entries.delete(key(newName));
      if (dst.type === 'd') {
        nd.nlink--;
        dst.nlink = 0;
        this.maybeFree(dst);
      } else {
        this.dropLink(dst);
      }
    }
    od.entries.delete(key(oldName));
    nd.entries.set(key(newName), srcId);
    if (src.type === 'd' && oldDir !== newDir) {
      od.nlink--;
      nd.nlink++;
      src.parent = newDir;
      // '..' changed inside the moved directory.
      src.mtimeKnown = false;
    }
    if (flags.whiteout) {
      // RENAME_WHITEOUT: a char 0/0 takes the source name in the same step.
      const w = this.newNode('c', 0, flags.whiteout.uid, flags.whiteout.gid);
      od.entries.set(key(oldName), w.id);
    }
    this.touch(od);
    this.touch(nd);
  }

  /** RENAME_EXCHANGE: both names stay, their inodes swap; directories moving between parents fix '..' and link counts. */
  private exchange(od: Node, oldName: Buffer, a: Node, nd: Node, newName: Buffer, b: Node): void {
    if (a.id === b.id) return;
    if ((a.type === 'd' && this.isAncestor(a.id, nd.id)) || (b.type === 'd' && this.isAncestor(b.id, od.id))) {
      throw err('EINVAL', 'rename exchange into itself');
    }
    od.entries.set(key(oldName), b.id);
    nd.entries.set(key(newName), a.id);
    if (od.id !== nd.id) {
      for (const [moved, from, to] of [
        [a, od, nd],
        [b, nd, od],
      ] as const) {
        if (moved.type !== 'd') continue;
        from.nlink--;
        to.nlink++;
        moved.parent = to.id;
        moved.mtimeKnown = false;
      }
    }
    this.touch(od);
    this.touch(nd);
  }

  private regular(id: InodeId, what: string): Node {
    const n = this.node(id);
    if (n.type === 'd') throw err('EISDIR', what);
    if (n.type !== 'f') throw err('EINVAL', what);
    return n;
  }

  async write(id: InodeId, position: number, data: Buffer): Promise<number> {
    const n = this.regular(id, 'write');
    const end = position + data.length;
    if (end > n.data.length) {
      const grown = Buffer.alloc(end);
      n.data.copy(grown);
      n.data = grown;
    }
    data.copy(n.data, position);
    this.touch(n);
    return data.length;
  }

  async truncate(id: InodeId, size: number): Promise<void> {
    const n = this.regular(id, 'truncate');
    const next = Buffer.alloc(size);
    n.data.copy(next, 0, 0, Math.min(size, n.data.length));
    n.data = next;
    this.touch(n);
  }

  async setattr(id: InodeId, attr: SetAttr): Promise<void> {
    const n = this.node(id);
    if (attr.mode !== undefined) n.perm = attr.mode & 0o7777;
    if (attr.uid !== undefined) n.uid = attr.uid;
    if (attr.gid !== undefined) n.gid = attr.gid;
    if (attr.atime) {
      n.atime = attr.atime.sec;
      n.atimeNsec = attr.atime.nsec;
    }
    if (attr.mtime) {
      n.mtime = attr.mtime.sec;
      n.mtimeNsec = attr.mtime.nsec;
      n.mtimeKnown = true;
    }
  }

  async setxattr(id: InodeId, nameBytes: Buffer, value: Buffer, flags?: 'create' | 'replace'): Promise<void> {
    const name = nameBytes.toString('latin1');
    const n = this.node(id);
    const has = n.xattrs.has(name);
    if (flags === 'create' && has) throw err('EEXIST', `setxattr ${name}`);
    if (flags === 'replace' && !has) throw err('ENODATA', `setxattr ${name}`);
    n.xattrs.set(name, Buffer.from(value));
  }

  async removexattr(id: InodeId, nameBytes: Buffer): Promise<void> {
    const name = nameBytes.toString('latin1');
    const n = this.node(id);
    if (!n.xattrs.delete(name)) throw err('ENODATA', `removexattr ${name}`);
  }

  async dataRanges(id: InodeId): Promise<DataRange[]> {
    const n = this.node(id);
    if (n.type !== 'f') throw err('EINVAL', 'dataRanges');
    return n.data.length > 0 ? [{ offset: 0, length: n.data.length }] : [];
  }

  async ref(id: InodeId, count = 1): Promise<void> {
    this.node(id).opens += count;
  }

  async unref(id: InodeId, count = 1): Promise<void> {
    const n = this.node(id);
    n.opens = Math.max(0, n.opens - count);
    this.maybeFree(n);
  }

  async fsync(id: InodeId): Promise<void> {
    this.node(id);
  }

  async sync(): Promise<void> {}
}

/** The type letter of a full st_mode (throws on an invalid type: a bug in whoever produced it). */
export function typeOfMode(mode: number): FileType {
  const t = fileTypeOf(mode & S_IFMT);
  if (t === null) throw new Error(`invalid st_mode ${mode.toString(8)}`);
  return t;
}
