/**
 * DirLayer: a WritableFs over a host directory that never leaves its root.
 *
 * Every object is reached from the root's fd one name at a time, never
 * following a symlink, and operated on through its own O_PATH fd (the table
 * and its threat model: src/layers/dir/node-table.ts). The calls:
 *
 *   lookup         openat2(parent, name, O_PATH|O_NOFOLLOW, BENEATH|NO_SYMLINKS|NO_MAGICLINKS)
 *   getattr        fstatat(fd, "", AT_EMPTY_PATH)
 *   create         mknodat / mkdirat / symlinkat in the parent fd, then owner and
 *                  exact mode through the new object's own fd
 *   setattr        fchownat / fchmodat2 / utimensat on (fd, "", AT_EMPTY_PATH)
 *   link           linkat(fd, "", AT_EMPTY_PATH), unprivileged: linkat of the
 *                  /proc/self/fd magic link with AT_SYMLINK_FOLLOW
 *   rename         renameat2 with NOREPLACE / EXCHANGE / WHITEOUT between parent fds
 *   xattrs         *xattrat on "/proc/self/fd/N" (exactly the fd's inode; see
 *                  src/native/sys.ts for why not f*xattr)
 *   read/write     a real fd re-opened from the O_PATH fd (regular files only:
 *                  opening a fifo or device never happens), pread/pwrite
 *   dataRanges     lseek SEEK_DATA / SEEK_HOLE
 *
 * Atomicity: each method does all its syscalls synchronously, in one turn of
 * the event loop, so no two calls of this layer interleave (no queue is
 * needed); each namespace change is one syscall, atomic in the kernel. A crash
 * can leave a created object with the daemon's owner or mode (the kernel
 * offers no create-with-owner); the overlay builds copy-ups in `work/` and
 * renames them into place, so nothing half made is ever visible.
 *
 * readdir snapshots are cached per directory until this layer changes that
 * directory or the directory's ctime moves (the host changed it).
 */
import { fdatasyncSync, fsyncSync, ftruncateSync } from 'node:fs';
import {
  fileTypeOf,
  S_IFMT,
  S_IFDIR,
  S_IFLNK,
  type DataRange,
  type DirEntry,
  type InodeId,
  type NewNode,
  type RenameFlags,
  type SetAttr,
  type Stat,
  type StatFs,
  type WritableFs,
} from '../engine.js';
import { FsError, InternalError, UnsupportedError } from '../errors.js';
import type { Layer, UpperLayer } from './layer.js';
import { closeFd, isProcfs, isSysError, procFdPath, sys, type SysStat } from '../native/sys.js';
import { encodingFor, probeCapabilities, type DirCapabilities } from './dir/capabilities.js';
import { NodeTable, openChild, type DirNode } from './dir/node-table.js';
import { checkName, toFsError, toStat } from './dir/convert.js';
import { dataRangesOf, openDataFd, readAt, writeAt } from './dir/data.js';

export type { DirCapabilities } from './dir/capabilities.js';

export interface DirLayerOptions {
  writable: boolean;
  /** Unreferenced nodes kept open before the oldest are closed (default 2048). */
  openCap?: number;
  /** Closed, unreferenced nodes remembered before the oldest are forgotten (default 200,000). */
  recordCap?: number;
}

interface Snapshot {
  ctime: number;
  ctimeNsec: number;
  entries: readonly DirEntry[];
}

export class DirLayer implements WritableFs {
  readonly rootId: InodeId;
  private readonly nodes: NodeTable;
  private readonly snapshots = new Map<InodeId, Snapshot>();
  private closed = false;

  /** Capabilities of the host directory, when probed (writable layers: see openDirLayer). */
  capabilities: DirCapabilities | null = null;

  private constructor(readonly name: string, readonly writable: boolean, rootFd: number, openCap: number, recordCap: number) {
    // A forgotten node's id must not be handed out again from a cached listing.
    this.nodes = new NodeTable(openCap, recordCap, (node) => {
      if (node.parent !== null) this.snapshots.delete(node.parent);
      this.snapshots.delete(node.id);
    });
    const st = sys().fstatat(rootFd, '', sys().constants.AT_EMPTY_PATH);
    if ((st.mode & S_IFMT) !== S_IFDIR) {
      closeFd(rootFd);
      throw new FsError('ENOTDIR', name);
    }
    const root = this.nodes.observe(st, rootFd, null, null);
    this.nodes.pin(root);
    this.rootId = root.id;
  }

  /**
   * Opens the host directory `path` (symlinks in `path` itself are the
   * user's choice and followed; nothing below it ever is).
   */
  static open(path: string, options: DirLayerOptions): DirLayer {
    if (!isProcfs()) throw new FsError('ENOTSUP', `${path}: /proc is not procfs, which DirLayer needs for /proc/self/fd`);
    const s = sys();
    const c = s.constants;
    let fd: number;
    try {
      fd = s.openat2(c.AT_FDCWD, path, c.O_PATH | c.O_DIRECTORY, 0, 0);
    } catch (err) {
      throw toFsError(err, path);
    }
    return new DirLayer(path, options.writable, fd, options.openCap ?? 2048, options.recordCap ?? 200_000);
  }

  // ---- reading ----

  async getattr(id: InodeId): Promise<Stat> {
    return this.run('getattr', () => toStat(this.statOf(this.node(id))));
  }

  async lookup(dir: InodeId, name: Buffer): Promise<InodeId | null> {
    return this.run('lookup', () => {
      checkName(name);
      const parent = this.node(dir);
      const fd = openChild(this.fdOf(parent), name);
      if (fd === null) return null;
      return this.adopt(fd, parent.id, name).id;
    });
  }

  async readdir(dir: InodeId): Promise<readonly DirEntry[]> {
    return this.run('readdir', () => {
      const node = this.node(dir);
      const s = sys();
      const fd = this.fdOf(node);
      const st = s.fstatat(fd, '', s.constants.AT_EMPTY_PATH);
      if ((st.mode & S_IFMT) !== S_IFDIR) throw new FsError('ENOTDIR');
      const cached = this.snapshots.get(node.id);
      if (cached !== undefined && cached.ctime === st.ctime && cached.ctimeNsec === st.ctimeNsec) return cached.entries;
      const entries: DirEntry[] = [];
      for (const e of s.readdir(fd)) {
        let est: SysStat;
        try {
          est = s.fstatat(fd, e.name, s.constants.AT_SYMLINK_NOFOLLOW);
        } catch (err) {
          if (isSysError(err, 'ENOENT')) continue; // removed since the listing: not an entry now
          throw err;
        }
        const child = this.nodes.observe(est, -1, node.id, e.name);
        entries.push({ name: e.name, id: child.id, type: child.type });
      }
      const frozen = Object.freeze(entries);
      this.snapshots.set(node.id, { ctime: st.ctime, ctimeNsec: st.ctimeNsec, entries: frozen });
      return frozen;
    });
  }

  async read(id: InodeId, position: number, length: number): Promise<Buffer> {
    return this.run('read', () => readAt(this.dataFd(this.node(id), false), position, length));
  }

  async dataRanges(id: InodeId): Promise<DataRange[]> {
    return this.run('dataRanges', () => {
      const node = this.node(id);
      return dataRangesOf(this.dataFd(node, false), this.statOf(node).size);
    });
  }

  async readlink(id: InodeId): Promise<Buffer> {
    return this.run('readlink', () => {
      const node = this.node(id);
      if (node.type !== 'l') throw new FsError('EINVAL', 'not a symlink');
      return sys().readlinkat(this.fdOf(node), '');
    });
  }

  async listxattr(id: InodeId): Promise<Buffer[]> {
    return this.run('listxattr', () => {
      try {
        return sys().listxattrat(sys().constants.AT_FDCWD, this.procPath(this.node(id)), 0);
      } catch (err) {
        if (isSysError(err, 'EOPNOTSUPP', 'ENOTSUP')) return [];
        throw err;
      }
    });
  }

  async getxattr(id: InodeId, name: Buffer): Promise<Buffer | null> {
    return this.run('getxattr', () => {
      try {
        return sys().getxattrat(sys().constants.AT_FDCWD, this.procPath(this.node(id)), 0, name);
      } catch (err) {
        if (isSysError(err, 'ENODATA', 'EOPNOTSUPP', 'ENOTSUP')) return null;
        throw err;
      }
    });
  }

  async ref(id: InodeId, n = 1): Promise<void> {
    return this.run('ref', () => {
      const node = this.node(id);
      this.fdOf(node); // alive and openable, or ENOENT now
      this.nodes.ref(node, n);
    });
  }

  async unref(id: InodeId, n = 1): Promise<void> {
    return this.run('unref', () => this.nodes.unref(this.node(id), n));
  }

  async statfs(): Promise<StatFs> {
    return this.run('statfs', () => {
      const f = sys().fstatfs(this.fdOf(this.node(this.rootId)));
      return { bsize: f.bsize, frsize: f.frsize, blocks: f.blocks, bfree: f.bfree, bavail: f.bavail, files: f.files, ffree: f.ffree, namemax: f.namemax };
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.snapshots.clear();
    this.nodes.closeAll();
  }

  // ---- writing ----

  async mknod(dir: InodeId, name: Buffer, node: NewNode): Promise<InodeId> {
    return this.mutate('mknod', () => {
      const type = fileTypeOf(node.mode);
      if (type === null || type === 'd' || type === 'l') throw new FsError('EINVAL', 'mknod of a directory or symlink');
      return this.create(dir, name, node, (pfd) => sys().mknodat(pfd, name, node.mode & (S_IFMT | 0o7777), node.rdev ?? 0));
    });
  }

  async mkdir(dir: InodeId, name: Buffer, node: NewNode): Promise<InodeId> {
    return this.mutate('mkdir', () => this.create(dir, name, node, (pfd) => sys().mkdirat(pfd, name, node.mode & 0o7777)));
  }

  async symlink(dir: InodeId, name: Buffer, target: Buffer, owner: { uid: number; gid: number }): Promise<InodeId> {
    return this.mutate('symlink', () =>
      this.create(dir, name, { mode: S_IFLNK | 0o777, uid: owner.uid, gid: owner.gid }, (pfd) => sys().symlinkat(target, pfd, name)),
    );
  }

  async link(id: InodeId, dir: InodeId, name: Buffer): Promise<void> {
    return this.mutate('link', () => {
      checkName(name);
      const node = this.node(id);
      if (node.type === 'd') throw new FsError('EPERM', 'hard link to a directory');
      const parent = this.node(dir);
      const s = sys();
      const c = s.constants;
      const fd = this.fdOf(node);
      const pfd = this.fdOf(parent);
      try {
        s.linkat(fd, '', pfd, name, c.AT_EMPTY_PATH);
      } catch (err) {
        // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH (ENOENT without it).
        if (!isSysError(err, 'ENOENT', 'EPERM')) throw err;
        s.linkat(c.AT_FDCWD, procFdPath(fd), pfd, name, c.AT_SYMLINK_FOLLOW);
      }
      this.changed(parent.id);
    });
  }

  async unlink(dir: InodeId, name: Buffer): Promise<void> {
    return this.mutate('unlink', () => this.remove(dir, name, false));
  }

  async rmdir(dir: InodeId, name: Buffer): Promise<void> {
    return this.mutate('rmdir', () => this.remove(dir, name, true));
  }

  async rename(oldDir: InodeId, oldName: Buffer, newDir: InodeId, newName: Buffer, flags: RenameFlags = {}): Promise<void> {
    return this.mutate('rename', () => {
      checkName(oldName);
      checkName(newName);
      if (flags.exchange && (flags.noreplace || flags.whiteout)) throw new FsError('EINVAL', 'RENAME_EXCHANGE with other flags');
      const s = sys();
      const c = s.constants;
      const from = this.node(oldDir);
      const to = this.node(newDir);
      const ffd = this.fdOf(from);
      const tfd = this.fdOf(to);
      const source = this.statAt(ffd, oldName);
      const target = this.statAt(tfd, newName);
      const bits = (flags.noreplace ? c.RENAME_NOREPLACE : 0) | (flags.exchange ? c.RENAME_EXCHANGE : 0) | (flags.whiteout ? c.RENAME_WHITEOUT : 0);
      s.renameat2(ffd, oldName, tfd, newName, bits);
      this.changed(from.id);
      this.changed(to.id);
      const moved = source && this.nodes.find(source);
      const other = target && this.nodes.find(target);
      if (other && !(source && source.dev === target.dev && source.ino === target.ino)) {
        if (flags.exchange) this.nodes.moved(other, from.id, oldName);
        else this.nodes.lostName(other, to.id, newName);
      }
      if (moved) this.nodes.moved(moved, to.id, newName);
      if (flags.whiteout) this.ownWhiteout(ffd, from.id, oldName, flags.whiteout);
    });
  }

  async write(id: InodeId, position: number, data: Buffer): Promise<number> {
    return this.mutate('write', () => {
      const node = this.node(id);
      const fd = this.dataFd(node, true);
      const before = this.statOf(node);
      try {
        return writeAt(fd, position, data);
      } catch (err) {
        // The kernel stamps mtime before it finds no space (tmpfs, ext4): a
        // write that wrote nothing must leave the file as it was.
        if (isSysError(err, 'ENOSPC', 'EDQUOT')) {
          const s = sys();
          s.utimensat(this.fdOf(node), '', 0, s.constants.UTIME_OMIT, before.mtime, before.mtimeNsec, s.constants.AT_EMPTY_PATH);
        }
        throw err;
      }
    });
  }

  async truncate(id: InodeId, size: number): Promise<void> {
    return this.mutate('truncate', () => ftruncateSync(this.dataFd(this.node(id), true), size));
  }

  async setattr(id: InodeId, attr: SetAttr): Promise<void> {
    return this.mutate('setattr', () => {
      const node = this.node(id);
      const s = sys();
      const c = s.constants;
      const fd = this.fdOf(node);
      // Owner before mode: chown clears set-id bits the mode may set again.
      if (attr.uid !== undefined || attr.gid !== undefined) s.fchownat(fd, '', attr.uid ?? -1, attr.gid ?? -1, c.AT_EMPTY_PATH);
      if (attr.mode !== undefined) this.chmod(node, attr.mode & 0o7777);
      if (attr.atime !== undefined || attr.mtime !== undefined) {
        const a = attr.atime ?? { sec: 0, nsec: c.UTIME_OMIT };
        const m = attr.mtime ?? { sec: 0, nsec: c.UTIME_OMIT };
        s.utimensat(fd, '', a.sec, a.nsec, m.sec, m.nsec, c.AT_EMPTY_PATH);
      }
    });
  }

  async setxattr(id: InodeId, name: Buffer, value: Buffer, flags?: 'create' | 'replace'): Promise<void> {
    return this.mutate('setxattr', () => {
      const s = sys();
      const c = s.constants;
      const bits = flags === 'create' ? c.XATTR_CREATE : flags === 'replace' ? c.XATTR_REPLACE : 0;
      s.setxattrat(c.AT_FDCWD, this.procPath(this.node(id)), 0, name, value, bits);
    });
  }

  async removexattr(id: InodeId, name: Buffer): Promise<void> {
    return this.mutate('removexattr', () => sys().removexattrat(sys().constants.AT_FDCWD, this.procPath(this.node(id)), 0, name));
  }

  async fsync(id: InodeId, dataOnly: boolean): Promise<void> {
    return this.run('fsync', () => {
      const node = this.node(id);
      if (node.type === 'f') {
        const fd = this.dataFd(node, false);
        if (dataOnly) fdatasyncSync(fd);
        else fsyncSync(fd);
      } else if (node.type === 'd') {
        this.withDirFd(node, (fd) => fsyncSync(fd));
      }
    });
  }

  async sync(): Promise<void> {
    return this.run('sync', () => this.withDirFd(this.node(this.rootId), (fd) => sys().syncfs(fd)));
  }

  /** Probes what the host lets this process write, in the scratch directory `scratch` (see dir/capabilities.ts). */
  probe(scratch: InodeId): DirCapabilities {
    this.capabilities = probeCapabilities(this.fdOf(this.node(scratch)));
    return this.capabilities;
  }

  /** Keeps `id` open for the layer's life (its root, upper and work). */
  pin(id: InodeId): void {
    const node = this.node(id);
    this.fdOf(node);
    this.nodes.pin(node);
  }

  // ---- internals ----

  /** Runs a synchronous body, turning syscall errors into FsError. */
  private run<T>(op: string, body: () => T): Promise<T> {
    if (this.closed) return Promise.reject(new InternalError(`${op} after close`, this.name));
    try {
      return Promise.resolve(body());
    } catch (err) {
      return Promise.reject(toFsError(err, `${op} in ${this.name}`));
    }
  }

  private mutate<T>(op: string, body: () => T): Promise<T> {
    if (!this.writable) return Promise.reject(new FsError('EROFS', `${op} in ${this.name}`));
    return this.run(op, body);
  }

  private node(id: InodeId): DirNode {
    return this.nodes.get(id);
  }

  private fdOf(node: DirNode): number {
    return this.nodes.fdOf(node);
  }

  private procPath(node: DirNode): string {
    return procFdPath(this.fdOf(node));
  }

  private statOf(node: DirNode): SysStat {
    return sys().fstatat(this.fdOf(node), '', sys().constants.AT_EMPTY_PATH);
  }

  private statAt(dirFd: number, name: Buffer): SysStat | null {
    try {
      return sys().fstatat(dirFd, name, sys().constants.AT_SYMLINK_NOFOLLOW);
    } catch (err) {
      if (isSysError(err, 'ENOENT')) return null;
      throw err;
    }
  }

  /** Takes an O_PATH fd just opened as `name` in `parent` into the table. */
  private adopt(fd: number, parent: InodeId, name: Buffer): DirNode {
    let st: SysStat;
    try {
      st = sys().fstatat(fd, '', sys().constants.AT_EMPTY_PATH);
    } catch (err) {
      closeFd(fd);
      throw err;
    }
    return this.nodes.observe(st, fd, parent, Buffer.from(name));
  }

  private dataFd(node: DirNode, forWrite: boolean): number {
    return openDataFd(node, () => this.fdOf(node), this.writable, forWrite);
  }

  /**
   * chmod of exactly this inode: fchmodat2(fd, "", AT_EMPTY_PATH) (Linux 6.6);
   * before it, fchmod on a real fd for files and directories, and no way for
   * the others that does not resolve a name again (EOPNOTSUPP). Never chmod
   * through /proc: a mode change must not follow anything.
   */
  private chmod(node: DirNode, perm: number): void {
    const s = sys();
    try {
      s.fchmodat(this.fdOf(node), '', perm, s.constants.AT_EMPTY_PATH);
    } catch (err) {
      if (!isSysError(err, 'ENOSYS')) throw err;
      if (node.type === 'f') s.fchmod(this.dataFd(node, false), perm);
      else if (node.type === 'd') this.withDirFd(node, (fd) => s.fchmod(fd, perm));
      else throw new FsError('EOPNOTSUPP', 'chmod of a special file needs fchmodat2 (Linux 6.6)');
    }
  }

  /** A short-lived O_RDONLY fd of a directory (fsync, syncfs). */
  private withDirFd<T>(node: DirNode, fn: (fd: number) => T): T {
    const s = sys();
    const c = s.constants;
    const fd = s.openat2(this.fdOf(node), '.', c.O_RDONLY | c.O_DIRECTORY, 0, c.RESOLVE_BENEATH | c.RESOLVE_NO_SYMLINKS);
    try {
      return fn(fd);
    } finally {
      closeFd(fd);
    }
  }

  private create(dir: InodeId, name: Buffer, want: NewNode, make: (parentFd: number) => void): InodeId {
    checkName(name);
    const parent = this.node(dir);
    const pfd = this.fdOf(parent);
    make(pfd);
    this.changed(parent.id);
    const fd = openChild(pfd, name);
    if (fd === null) throw new FsError('ENOENT', 'the new entry vanished (the host directory changed)');
    const node = this.adopt(fd, parent.id, name);
    this.applyOwnerAndMode(node, want);
    return node.id;
  }

  /** The created object gets exactly the requested owner and permission bits (no umask). */
  private applyOwnerAndMode(node: DirNode, want: NewNode): void {
    const s = sys();
    const c = s.constants;
    const fd = this.fdOf(node);
    let st = s.fstatat(fd, '', c.AT_EMPTY_PATH);
    if ((st.uid !== want.uid || st.gid !== want.gid) && giveOwner(fd, want)) st = s.fstatat(fd, '', c.AT_EMPTY_PATH);
    const perm = want.mode & 0o7777;
    if (node.type !== 'l' && (st.mode & 0o7777) !== perm) this.chmod(node, perm);
  }

  private remove(dir: InodeId, name: Buffer, directory: boolean): void {
    checkName(name);
    const s = sys();
    const parent = this.node(dir);
    const pfd = this.fdOf(parent);
    const st = this.statAt(pfd, name);
    if (st === null) throw new FsError('ENOENT');
    if (directory && (st.mode & S_IFMT) !== S_IFDIR) throw new FsError('ENOTDIR');
    s.unlinkat(pfd, name, directory ? s.constants.AT_REMOVEDIR : 0);
    this.changed(parent.id);
    const node = this.nodes.find(st);
    if (node !== undefined) {
      if (directory) this.snapshots.delete(node.id);
      this.nodes.lostName(node, parent.id, name);
    }
  }

  /** RENAME_WHITEOUT leaves char 0/0 owned by this process; give it the requested owner. */
  private ownWhiteout(dirFd: number, dir: InodeId, name: Buffer, owner: { uid: number; gid: number }): void {
    const fd = openChild(dirFd, name);
    if (fd === null) return;
    const node = this.adopt(fd, dir, name);
    const st = this.statOf(node);
    if ((st.mode & S_IFMT) === 0o020000 && st.rdev === 0 && (st.uid !== owner.uid || st.gid !== owner.gid)) {
      giveOwner(this.fdOf(node), owner);
    }
  }

  private changed(dir: InodeId): void {
    this.snapshots.delete(dir);
  }
}

// ---- the opener ----

export interface DirLowerLayer extends Layer {
  readonly fs: DirLayer;
}

export interface DirUpperLayer extends UpperLayer {
  readonly fs: DirLayer;
  readonly capabilities: DirCapabilities;
}

/**
 * Gives a new object the owner asked for. An unprivileged host process may
 * only give its own ids (EPERM otherwise): the object then stays the
 * caller's, as anything an unprivileged user stores in a host directory
 * (a copy-up of the image's root-owned files, the overlay's whiteouts and
 * index). False when the owner was left as it is.
 */
function giveOwner(fd: number, owner: { uid: number; gid: number }): boolean {
  const s = sys();
  try {
    s.fchownat(fd, '', owner.uid, owner.gid, s.constants.AT_EMPTY_PATH);
    return true;
  } catch (err) {
    if (isSysError(err, 'EPERM') && process.getuid?.() !== 0) return false;
    throw err;
  }
}

/**
 * A host directory as a layer (reference/sif-and-apptainer.md B.3):
 * writable: the layer is `DIR/upper` and the scratch `DIR/work`, each made
 * (0755) if missing, as Apptainer does; the whiteout encoding follows what
 * the directory allows (probed in `work/`). Read-only: `DIR/upper` when
 * present, else `DIR`.
 */
export async function openDirLayer(path: string, options: { writable: true; openCap?: number }): Promise<DirUpperLayer>;
export async function openDirLayer(path: string, options: { writable: false; openCap?: number }): Promise<DirLowerLayer>;
export async function openDirLayer(path: string, options: DirLayerOptions): Promise<DirUpperLayer | DirLowerLayer>;
export async function openDirLayer(path: string, options: DirLayerOptions): Promise<DirUpperLayer | DirLowerLayer> {
  const fs = DirLayer.open(path, options);
  try {
    const upperName = Buffer.from('upper');
    if (!options.writable) {
      const upper = await subdir(fs, upperName, path, false);
      return { name: path, fs, root: upper ?? fs.rootId };
    }
    const root = await subdir(fs, upperName, path, true);
    const work = await subdir(fs, Buffer.from('work'), path, true);
    if (root === null || work === null) throw new InternalError('upper/ or work/ missing after mkdir', path);
    const capabilities = fs.probe(work);
    return { name: path, fs, root, work, encoding: encodingFor(capabilities), capabilities };
  } catch (err) {
    await fs.close();
    throw err;
  }
}

/** DIR/name as a directory (made when `make`), pinned; null when absent and not made. */
async function subdir(fs: DirLayer, name: Buffer, path: string, make: boolean): Promise<InodeId | null> {
  let id = await fs.lookup(fs.rootId, name);
  if (id === null) {
    if (!make) return null;
    const owner = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
    try {
      id = await fs.mkdir(fs.rootId, name, { mode: S_IFDIR | 0o755, ...owner });
    } catch (err) {
      if (!(err instanceof FsError) || err.code !== 'EEXIST') throw err;
      id = await fs.lookup(fs.rootId, name);
      if (id === null) throw err;
    }
  }
  const st = await fs.getattr(id);
  if ((st.mode & S_IFMT) !== S_IFDIR) throw new UnsupportedError(`${name.toString()} is not a directory`, path);
  fs.pin(id);
  return id;
}
