/**
 * DirLayer's inode table: InodeId -> the host inode, held by an O_PATH fd.
 *
 * Threat model: the host directory may change under us at any moment (another
 * process renaming, swapping a directory for a symlink to /, in a loop). So
 * nothing here ever resolves a path of more than one component or follows a
 * symlink: a node is opened from its parent's fd with
 * openat2(name, O_PATH|O_NOFOLLOW, RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|
 * RESOLVE_NO_MAGICLINKS), and every later operation on it goes through that fd
 * (AT_EMPTY_PATH, or the /proc/self/fd magic link, which names exactly the
 * fd's inode). A name swapped for a symlink is then seen as that symlink,
 * never followed. (A directory the host moves out of the tree keeps its
 * node: the fd follows the inode, as every fd does; whoever can do that can
 * write there already.)
 *
 * Identity: one node per (st_dev, st_ino), so hard links share an id (as in
 * ext3). Ids come from a counter and are never reused.
 *
 * Lifetimes and the fd budget: a node with references (ref/unref) or pinned
 * (the roots) keeps its fd. Unreferenced nodes keep theirs in LRU order up to
 * `openCap`; beyond it the oldest is closed and keeps only where it was last
 * seen (parent id + name, dev, ino, birth time), from which it is re-opened on
 * demand and checked to be the same inode (ENOENT otherwise: it was freed).
 * Closed records are kept up to `recordCap`, then the oldest are forgotten. A
 * node whose last name is gone (unlinked) and that nobody references is
 * forgotten at once; its id then answers ENOENT, as a freed inode does.
 */
import { fstatSync } from 'node:fs';
import { fileTypeOf, type FileType, type InodeId } from '../../engine.js';
import { FsError } from '../../errors.js';
import { closeFd, sys, type SysStat } from '../../native/sys.js';

export interface DirNode {
  readonly id: InodeId;
  /** O_PATH|O_NOFOLLOW fd, or -1 while closed (unreferenced, over the cap). */
  fd: number;
  dev: number;
  ino: number;
  /** Birth time: tells a reused inode number from the inode first seen (0/0 where not kept). */
  btime: number;
  btimeNsec: number;
  type: FileType;
  refs: number;
  /** Never closed or forgotten (the layer's root, upper and work). */
  pinned: boolean;
  /** Where it was last seen; null when that name is gone (unlinked). */
  parent: InodeId | null;
  name: Buffer | null;
  /** A real fd for data (regular files), opened on first use. */
  io: number;
  ioWritable: boolean;
}

const MAX_DEPTH = 4096;

export class NodeTable {
  private readonly nodes = new Map<InodeId, DirNode>();
  private readonly byKey = new Map<string, InodeId>();
  /** Unreferenced, unpinned nodes whose fd is open, oldest first. */
  private readonly idle = new Map<InodeId, DirNode>();
  /** Unreferenced, unpinned nodes whose fd is closed (re-openable by name), oldest first. */
  private readonly dormant = new Map<InodeId, DirNode>();
  private nextId = 1;

  /**
   * openCap: unreferenced nodes kept open; recordCap: closed ones remembered
   * beyond that (older ones are forgotten, and `onForget` told, so listings
   * that hold their ids can be dropped).
   */
  constructor(
    readonly openCap: number,
    readonly recordCap: number,
    private readonly onForget: (node: DirNode) => void = () => undefined,
  ) {}

  get size(): number {
    return this.nodes.size;
  }

  /** The node for an id; ENOENT for an id forgotten (freed) or never issued. */
  get(id: InodeId): DirNode {
    const node = this.nodes.get(id);
    if (node === undefined) throw new FsError('ENOENT', `inode ${id} is gone`);
    return node;
  }

  /** The node of the inode `st` describes, if it is in the table (same number and same life). */
  find(st: SysStat): DirNode | undefined {
    const id = this.byKey.get(key(st.dev, st.ino));
    const node = id === undefined ? undefined : this.nodes.get(id);
    return node !== undefined && sameLife(node, st) ? node : undefined;
  }

  /**
   * Records that `st` (opened as `fd`, or -1 when only stat'ed) was seen as
   * `name` in `parent`. Returns the node; takes ownership of `fd` (closed if
   * the node already has one).
   */
  observe(st: SysStat, fd: number, parent: InodeId | null, name: Buffer | null): DirNode {
    const type = fileTypeOf(st.mode) ?? 'f';
    const known = this.byKey.get(key(st.dev, st.ino));
    let node = known === undefined ? undefined : this.nodes.get(known);
    if (node !== undefined && !sameLife(node, st)) {
      // The number was freed and reused while the node was closed: a new inode.
      this.byKey.delete(key(node.dev, node.ino));
      node.parent = null;
      node.name = null;
      if (node.refs === 0) this.release(node);
      node = undefined;
    }
    if (node === undefined) {
      node = {
        id: this.nextId++,
        fd: -1,
        dev: st.dev,
        ino: st.ino,
        btime: st.btime,
        btimeNsec: st.btimeNsec,
        type,
        refs: 0,
        pinned: false,
        parent,
        name,
        io: -1,
        ioWritable: false,
      };
      this.nodes.set(node.id, node);
      this.byKey.set(key(st.dev, st.ino), node.id);
    } else {
      node.type = type;
      if (parent !== null && name !== null) {
        node.parent = parent;
        node.name = name;
      }
    }
    if (fd >= 0) {
      if (node.fd >= 0) closeFd(fd);
      else node.fd = fd;
    }
    this.touch(node);
    return node;
  }

  /** The node's O_PATH fd, re-opened from where it was last seen if closed. */
  fdOf(node: DirNode, depth = 0): number {
    if (node.fd >= 0) {
      this.touch(node);
      return node.fd;
    }
    if (node.parent === null || node.name === null || depth > MAX_DEPTH) {
      throw new FsError('ENOENT', `inode ${node.id} has no name to re-open it by`);
    }
    const parentFd = this.fdOf(this.get(node.parent), depth + 1);
    const fd = openChild(parentFd, node.name);
    if (fd === null) throw new FsError('ENOENT', `inode ${node.id} is gone from its directory`);
    const st = sys().fstatat(fd, '', sys().constants.AT_EMPTY_PATH);
    if (st.dev !== node.dev || st.ino !== node.ino || !sameLife(node, st)) {
      closeFd(fd);
      throw new FsError('ENOENT', `inode ${node.id} was replaced in its directory`);
    }
    node.fd = fd;
    this.touch(node);
    return fd;
  }

  ref(node: DirNode, n: number): void {
    node.refs += n;
    this.idle.delete(node.id);
    this.dormant.delete(node.id);
  }

  unref(node: DirNode, n: number): void {
    node.refs = Math.max(0, node.refs - n);
    if (node.refs === 0) this.release(node);
  }

  pin(node: DirNode): void {
    node.pinned = true;
    this.idle.delete(node.id);
    this.dormant.delete(node.id);
  }

  /** The name node had in its parent is gone (unlink, rmdir, replaced by rename). */
  lostName(node: DirNode, parent: InodeId, name: Buffer): void {
    if (node.parent === parent && node.name !== null && node.name.equals(name)) {
      node.parent = null;
      node.name = null;
    }
    if (node.refs === 0) this.release(node);
  }

  moved(node: DirNode, parent: InodeId, name: Buffer): void {
    node.parent = parent;
    node.name = name;
  }

  /** Closes every fd; the table is unusable afterwards. */
  closeAll(): void {
    for (const node of this.nodes.values()) this.closeNode(node);
    this.nodes.clear();
    this.byKey.clear();
    this.idle.clear();
    this.dormant.clear();
  }

  private touch(node: DirNode): void {
    if (node.refs > 0 || node.pinned) return;
    this.idle.delete(node.id);
    this.dormant.delete(node.id);
    (node.fd >= 0 ? this.idle : this.dormant).set(node.id, node);
    while (this.idle.size > this.openCap) {
      const oldest = this.idle.values().next().value as DirNode;
      this.idle.delete(oldest.id);
      if (oldest.name === null) {
        this.forget(oldest);
      } else {
        this.closeNode(oldest);
        this.dormant.set(oldest.id, oldest);
      }
    }
    while (this.dormant.size > this.recordCap) this.forget(this.dormant.values().next().value as DirNode);
  }

  /** Unreferenced now: forgotten if it has no name, else idle. */
  private release(node: DirNode): void {
    if (node.pinned) return;
    if (node.name === null && !this.hasLinks(node)) this.forget(node);
    else this.touch(node);
  }

  /** Whether an unnamed node still has links elsewhere (a hard link whose other name we never saw). */
  private hasLinks(node: DirNode): boolean {
    if (node.fd < 0) return false;
    try {
      return fstatSync(node.fd).nlink > 0 && node.type !== 'd';
    } catch {
      return false;
    }
  }

  private forget(node: DirNode): void {
    this.closeNode(node);
    this.idle.delete(node.id);
    this.dormant.delete(node.id);
    this.nodes.delete(node.id);
    const k = key(node.dev, node.ino);
    if (this.byKey.get(k) === node.id) this.byKey.delete(k);
    this.onForget(node);
  }

  private closeNode(node: DirNode): void {
    if (node.io >= 0) closeFd(node.io);
    if (node.fd >= 0) closeFd(node.fd);
    node.io = -1;
    node.fd = -1;
  }
}

function sameLife(node: DirNode, st: SysStat): boolean {
  return node.btime === st.btime && node.btimeNsec === st.btimeNsec;
}

function key(dev: number, ino: number): string {
  return `${dev}:${ino}`;
}

/**
 * openat2(parentFd, name, O_PATH|O_NOFOLLOW) beneath the parent with no
 * symlink or magic link followed; null when the name is absent.
 */
export function openChild(parentFd: number, name: Buffer): number | null {
  const s = sys();
  const c = s.constants;
  try {
    return s.openat2(
      parentFd,
      name,
      c.O_PATH | c.O_NOFOLLOW,
      0,
      c.RESOLVE_BENEATH | c.RESOLVE_NO_SYMLINKS | c.RESOLVE_NO_MAGICLINKS,
    );
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return null;
    throw err;
  }
}
