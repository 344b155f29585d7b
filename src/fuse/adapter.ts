/**
 * The FUSE adapter: the kernel's low-level requests served from one
 * ReadableFs/WritableFs (normally the Overlay; a SquashFS or ext3 engine
 * directly works too). It knows only src/engine.ts.
 *
 * Every op ends in exactly one reply: FuseSession (src/native/fuse.ts) turns
 * a thrown FsError into -errno and anything else into EIO plus a log line,
 * and answers EIO for a handler that returns without replying.
 *
 * Caching: the daemon is the only writer, so entries, attributes and negative
 * entries are cached long by the kernel (timeouts in MountOptions), and file
 * pages are kept across opens (keep_cache). Permission checks are the
 * kernel's (default_permissions), so ACCESS never arrives.
 *
 * Read-only mounts are served without open handles: the first OPEN and
 * OPENDIR are answered ENOSYS, after which the kernel (fs/fuse/file.c
 * fuse_file_open: fc->no_open / no_opendir) opens locally with fh 0,
 * FOPEN_KEEP_CACHE (and FOPEN_CACHE_DIR for directories), and sends no
 * RELEASE/RELEASEDIR; the first FLUSH is answered ENOSYS too (fc->no_flush).
 * That halves the requests of a walk. READDIRPLUS then carries fh 0, so a
 * listing is found by its directory: sound because nothing changes a
 * read-only mount's tree, so every call sees the same listing and offset
 * k + 1 always names entry k (the listing is kept per directory, so even a
 * read-only host-directory layer changed from outside pages consistently,
 * showing the listing first read, as the kernel's caches do). Writable
 * mounts keep one snapshot per open.
 */
import { release } from 'node:os';
import type { DirEntry, InodeId, ReadableFs, SetAttr, Stat, WritableFs } from '../engine.js';
import { S_IFDIR, S_IFMT, S_IFREG } from '../engine.js';
import { FsError } from '../errors.js';
import { encodeEntry, NEGATIVE_ENTRY, STAT_LEN, type FuseHandlers, type FuseRequest, type OpenFlags } from '../native/fuse.js';
import { NodeTable } from './nodes.js';

// FUSE_SET_ATTR_* (fuse_lowlevel.h)
const SET_MODE = 1 << 0;
const SET_UID = 1 << 1;
const SET_GID = 1 << 2;
const SET_SIZE = 1 << 3;
const SET_ATIME = 1 << 4;
const SET_MTIME = 1 << 5;
const SET_ATIME_NOW = 1 << 7;
const SET_MTIME_NOW = 1 << 8;
/** FATTR_KILL_SUIDGID (= FUSE_SET_ATTR_KILL_SUID): chown, or truncate without CAP_FSETID (KILLPRIV_V2). */
const SET_KILL_SUIDGID = 1 << 11;

const O_ACCMODE = 3;
const O_WRONLY = 1;
const O_TRUNC = 0o1000;
const O_EXCL = 0o200;
const RENAME_NOREPLACE = 1;
const RENAME_EXCHANGE = 2;
const RENAME_WHITEOUT = 4;
const XATTR_CREATE = 1;
const XATTR_REPLACE = 2;
const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const S_ISGID = 0o2000;
const S_ISUID = 0o4000;
const S_IXGRP = 0o010;
/** fuse_write_in.write_flags: the writer lacks CAP_FSETID, the server clears set-id bits (linux/fuse.h). */
const FUSE_WRITE_KILL_SUIDGID = 1 << 2;
/** fuse_open_in.open_flags: O_TRUNC by an opener without CAP_FSETID. */
const FUSE_OPEN_KILL_SUIDGID = 1 << 0;
const SECURITY_CAPABILITY = Buffer.from('security.capability');
/** Bound on the plain-node set (a cleared set only costs a re-check per node). */
const PLAIN_MAX = 1 << 16;

const ERANGE = 34;
const EOPNOTSUPP = 95;
const ENODATA = 61;
const ENXIO = 6;
const EINVAL = 22;

/*
 * An absent ACL or SELinux name is answered EOPNOTSUPP, not ENODATA: the
 * mount does not enable FUSE_CAP_POSIX_ACL (the kernel checks modes only,
 * default_permissions), and EOPNOTSUPP makes coreutils stop asking for the
 * device (fuse-binding.md §2a); one the image stores is still shown. Setting
 * them is refused for the same reason.
 */
const NO_XATTR_PREFIXES = [Buffer.from('system.posix_acl_'), Buffer.from('security.selinux')];

function refusedXattr(name: Buffer): boolean {
  return NO_XATTR_PREFIXES.some((p) => name.length >= p.length && name.subarray(0, p.length).equals(p));
}

export interface AdapterOptions {
  /** For the log. */
  log(line: string): void;
  /**
   * FUSE_CAP_NO_OPEN_SUPPORT | FUSE_CAP_NO_OPENDIR_SUPPORT: a read-only mount
   * whose kernel offers both is served without open handles. 0 or absent: never.
   */
  noOpenCaps?: number;
  /** Drops the kernel's cached attributes of a node (set-id bits cleared behind its back). */
  invalidateAttr?(nodeid: number): void;
  /** Directories warm() lists, the root included (default WARM_DIRS). */
  warmDirs?: number;
}

interface DirHandle {
  dir: InodeId;
  entries: readonly DirEntry[];
  /** st_ino of the directory, for "." and "..". */
  ino: number;
}

const ENOSYS = 38;
/** Listings of a read-only mount kept by directory (they are immutable; the engine caches the entries themselves). */
const LISTINGS_KEPT = 1024;
/** Directories waiting to be read ahead, at most. */
const PREFETCH_MAX = 512;
/**
 * Read-ahead is paid for by its hits, like page read-ahead: it starts with a
 * few directories, each one read ahead spends one and each that is then
 * listed earns two. A walk (every subdirectory listed) keeps it going; a
 * program listing a few directories (Python's imports) soon stops it (for
 * the life of the mount: a later walk runs without read-ahead).
 */
const PREFETCH_BUDGET_START = 4;
const PREFETCH_BUDGET_MAX = 64;
/**
 * Directories listed from the root when a stateless mount starts (warm):
 * the first 256 of the bench's minbase image (785 in all) cost the daemon
 * ~25 ms of CPU, and its whole tree ~100.
 */
const WARM_DIRS = 256;
const EMPTY = Buffer.alloc(0);
const DOT = Buffer.from('.');
const DOTDOT = Buffer.from('..');
const noStat = (): undefined => undefined;

const NO_ATTRS: readonly (Stat | undefined)[] = [];
/** READDIRPLUS stats, one array for every reply: the addon copies them out before it returns. */
let dirplusScratch = new Float64Array(64 * STAT_LEN);

/** The scratch array, grown to hold `count` entries. */
function dirplusStats(count: number): Float64Array {
  if (dirplusScratch.length < count * STAT_LEN) dirplusScratch = new Float64Array(count * STAT_LEN * 2);
  return dirplusScratch;
}

/** "." and "..": attributes the kernel ignores except st_ino and the type. */
function encodeDot(out: Float64Array, at: number, ino: number): void {
  out.fill(0, at, at + STAT_LEN);
  out[at + 2] = ino;
  out[at + 3] = S_IFDIR;
  out[at + 16] = 4096;
}

export class FuseAdapter implements FuseHandlers {
  readonly nodes: NodeTable;
  private readonly dirs = new Map<number, DirHandle>();
  private nextFh = 1;
  private exitHandler: (() => void) | null = null;
  /** Set at INIT: a read-only mount on a kernel that can open without the daemon (see the header). */
  private stateless = false;
  /** Stateless mode: listings by directory InodeId, least recently used first. */
  private readonly listings = new Map<InodeId, DirHandle>();
  /** Stateless mode: directories to read ahead, the next on top (see prefetchChildren). */
  private readonly prefetchStack: InodeId[] = [];
  private prefetching = false;
  private prefetchStep: Promise<void> | null = null;
  /** Read-ahead listings not asked for yet; each one asked for earns more read-ahead. */
  private readonly prefetched = new Set<InodeId>();
  private prefetchBudget = PREFETCH_BUDGET_START;
  /** Directories the mount-time read-ahead (warm) may still list. */
  private warmLeft = 0;
  /** Resolves warm()'s promise. */
  private warmEnd: (() => void) | null = null;
  /*
   * Nodes known to carry no set-id bit and no security.capability: a write
   * to one needs no privilege kill, nor does a chown or truncate, and the
   * kernel's GETXATTR security.capability before each chown
   * (cap_inode_need_killpriv) is answered without the engine. Direct-I/O
   * writes skip the kernel's own kill (file_remove_privs, the GETXATTR round
   * trip before every buffered write), so the server does it: set-id bits
   * when the request says FUSE_WRITE_KILL_SUIDGID, the capability always (as
   * cap_inode_killpriv does). An entry goes when its xattrs change or its
   * mode gains a set-id bit. Keyed by nodeid, which is never reused (an
   * engine may reuse an InodeId once the file is gone, a new file must not
   * inherit the answer).
   */
  private readonly plain = new Set<number>();
  /**
   * Counts the changes that take nodes out of `plain` (unplain): an isPlain
   * check whose answer was read across one of them does not mark its node,
   * as that answer may predate the change.
   */
  private plainGen = 0;

  constructor(
    private readonly fs: ReadableFs,
    private readonly opts: AdapterOptions,
  ) {
    this.nodes = new NodeTable(fs, (err) => opts.log(`unref: ${describe(err)}`));
  }

  /** Called when the kernel side of the mount goes away. */
  onExit(fn: () => void): void {
    this.exitHandler = fn;
  }

  private get wfs(): WritableFs {
    if (!this.fs.writable) throw new FsError('EROFS');
    return this.fs as WritableFs;
  }

  /**
   * Looks up the node for `id`, takes one kernel lookup on it, and replies
   * with its entry. `made`: the node was just made here (no xattrs), so it
   * is plain unless its mode has a set-id bit.
   */
  private async replyEntry(r: FuseRequest, id: InodeId, made = false): Promise<void> {
    const st = this.fs.statNow?.(id) ?? (await this.fs.getattr(id));
    const nodeid = await this.nodes.acquire(id);
    if (made && !(st.mode & (S_ISUID | S_ISGID))) this.markPlain(nodeid);
    r.entryWith(nodeid, st);
  }

  /** The owner of a new node: the caller, with the group of a set-gid parent (and S_ISGID kept on directories). */
  private async newOwner(r: FuseRequest, dir: InodeId, mode: number): Promise<{ mode: number; uid: number; gid: number }> {
    const parent = this.fs.statNow?.(dir) ?? (await this.fs.getattr(dir));
    if (parent.mode & S_ISGID) {
      return { mode: (mode & S_IFMT) === S_IFDIR ? mode | S_ISGID : mode, uid: r.uid, gid: parent.gid };
    }
    return { mode, uid: r.uid, gid: r.gid };
  }

  init(_major: number, _minor: number, _want: number, capable: number, _maxWrite?: number): void {
    const caps = this.opts.noOpenCaps ?? 0;
    this.stateless = !this.fs.writable && caps !== 0 && (capable & caps) === caps;
  }

  async lookup(r: FuseRequest, parent: number, name: Buffer): Promise<void> {
    const id = await this.fs.lookup(this.nodes.id(parent), name);
    if (id === null) {
      r.entry(NEGATIVE_ENTRY);
      return;
    }
    const st = this.fs.statNow?.(id) ?? (await this.fs.getattr(id));
    r.entryWith(this.nodes.acquireNow(id) || (await this.nodes.acquire(id)), st);
  }

  forget(nodeid: number, nlookup: number): void {
    this.nodes.forget(nodeid, nlookup);
  }

  forget_multi(pairs: Float64Array): void {
    for (let i = 0; i + 1 < pairs.length; i += 2) this.nodes.forget(pairs[i]!, pairs[i + 1]!);
  }

  async getattr(r: FuseRequest, nodeid: number): Promise<void> {
    const id = this.nodes.id(nodeid);
    r.attrWith(nodeid, this.fs.statNow?.(id) ?? (await this.fs.getattr(id)));
  }

  async setattr(r: FuseRequest, nodeid: number, valid: number, v: Float64Array): Promise<void> {
    const id = this.nodes.id(nodeid);
    const fs = this.wfs;
    if (valid & SET_SIZE) await fs.truncate(id, v[3]!);
    // Under KILLPRIV_V2 a truncate or chown leaves the kill to us (the reply carries the new mode).
    if (valid & (SET_SIZE | SET_UID | SET_GID) && !this.plain.has(nodeid) && !(await this.isPlain(nodeid, id)))
      await this.killPriv(nodeid, id, (valid & SET_KILL_SUIDGID) !== 0 && !(valid & SET_MODE), false);
    if (valid & (SET_MODE | SET_UID | SET_GID | SET_ATIME | SET_MTIME)) {
      const attr: SetAttr = {};
      if (valid & SET_MODE) {
        attr.mode = v[0]! & 0o7777;
        // A plain node stays plain unless the new mode has a set-id bit (xattrs do not change here).
        if (attr.mode & (S_ISUID | S_ISGID)) this.unplain(nodeid);
      }
      if (valid & SET_UID) attr.uid = v[1]!;
      if (valid & SET_GID) attr.gid = v[2]!;
      if (valid & (SET_ATIME_NOW | SET_MTIME_NOW)) {
        const now = Date.now();
        const nowTime = { sec: Math.floor(now / 1000), nsec: (now % 1000) * 1e6 };
        if (valid & SET_ATIME) attr.atime = valid & SET_ATIME_NOW ? nowTime : { sec: v[4]!, nsec: v[5]! };
        if (valid & SET_MTIME) attr.mtime = valid & SET_MTIME_NOW ? nowTime : { sec: v[6]!, nsec: v[7]! };
      } else {
        if (valid & SET_ATIME) attr.atime = { sec: v[4]!, nsec: v[5]! };
        if (valid & SET_MTIME) attr.mtime = { sec: v[6]!, nsec: v[7]! };
      }
      await fs.setattr(id, attr);
      if (attr.mode !== undefined && attr.mode & (S_ISUID | S_ISGID)) this.unplain(nodeid);
    }
    r.attrWith(nodeid, this.fs.statNow?.(id) ?? (await this.fs.getattr(id)));
  }

  async readlink(r: FuseRequest, nodeid: number): Promise<void> {
    r.readlink(await this.fs.readlink(this.nodes.id(nodeid)));
  }

  async mknod(r: FuseRequest, parent: number, name: Buffer, mode: number, rdev: number): Promise<void> {
    const dir = this.nodes.id(parent);
    const owner = await this.newOwner(r, dir, mode);
    await this.replyEntry(r, await this.wfs.mknod(dir, name, { ...owner, rdev }), true);
  }

  async mkdir(r: FuseRequest, parent: number, name: Buffer, mode: number): Promise<void> {
    const dir = this.nodes.id(parent);
    const owner = await this.newOwner(r, dir, (mode & 0o7777) | S_IFDIR);
    await this.replyEntry(r, await this.wfs.mkdir(dir, name, owner), true);
  }

  async unlink(r: FuseRequest, parent: number, name: Buffer): Promise<void> {
    await this.wfs.unlink(this.nodes.id(parent), name);
    r.ok();
  }

  async rmdir(r: FuseRequest, parent: number, name: Buffer): Promise<void> {
    await this.wfs.rmdir(this.nodes.id(parent), name);
    r.ok();
  }

  async symlink(r: FuseRequest, parent: number, name: Buffer, target: Buffer): Promise<void> {
    const dir = this.nodes.id(parent);
    const owner = await this.newOwner(r, dir, 0);
    await this.replyEntry(r, await this.wfs.symlink(dir, name, target, { uid: owner.uid, gid: owner.gid }), true);
  }

  async rename(r: FuseRequest, parent: number, name: Buffer, newParent: number, newName: Buffer, flags: number): Promise<void> {
    if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT)) throw new FsError('EINVAL');
    await this.wfs.rename(this.nodes.id(parent), name, this.nodes.id(newParent), newName, {
      noreplace: (flags & RENAME_NOREPLACE) !== 0,
      exchange: (flags & RENAME_EXCHANGE) !== 0,
      ...(flags & RENAME_WHITEOUT ? { whiteout: { uid: r.uid, gid: r.gid } } : {}),
    });
    r.ok();
  }

  async link(r: FuseRequest, nodeid: number, newParent: number, newName: Buffer): Promise<void> {
    const id = this.nodes.id(nodeid);
    await this.wfs.link(id, this.nodes.id(newParent), newName);
    await this.replyEntry(r, id);
  }

  async open(r: FuseRequest, nodeid: number, flags: number, killFlags = 0): Promise<void> {
    const id = this.nodes.id(nodeid);
    if ((flags & O_ACCMODE) !== 0 && !this.fs.writable) throw new FsError('EROFS');
    if (this.stateless) {
      r.err(ENOSYS);
      return;
    }
    if (flags & O_TRUNC) {
      await this.wfs.truncate(id, 0);
      if (!this.plain.has(nodeid) && !(await this.isPlain(nodeid, id)))
        await this.killPriv(nodeid, id, (killFlags & FUSE_OPEN_KILL_SUIDGID) !== 0, true);
    }
    const direct =
      DIRECT_WRITES && (flags & O_ACCMODE) === O_WRONLY && (this.plain.has(nodeid) || (await this.isPlain(nodeid, id)));
    r.open(0, openFlags(direct));
  }

  async read(r: FuseRequest, nodeid: number, size: number, offset: number): Promise<void> {
    const id = this.nodes.id(nodeid);
    // Bytes stored plainly in the image go from its page cache to the
    // reader's without passing through here, and by a pool thread: this one
    // neither waits for the disk nor makes the kernel's copy (a cold 1 GiB
    // dd: 11 interleaved runs, median 0.50 s against 0.60 with a splice here
    // when the pages were cached).
    if (this.fs.hostExtent) {
      const x = await this.fs.hostExtent(id, offset, size);
      if (x !== null) {
        await r.fromFd(x.fd, x.position, x.length);
        return;
      }
    }
    r.buf(await this.fs.read(id, offset, size));
  }

  async write(r: FuseRequest, nodeid: number, data: Buffer, offset: number, _fh: number, writeFlags = 0): Promise<void> {
    const id = this.nodes.id(nodeid);
    const fs = this.wfs;
    if (!this.plain.has(nodeid) && !(await this.isPlain(nodeid, id)))
      await this.killPriv(nodeid, id, (writeFlags & FUSE_WRITE_KILL_SUIDGID) !== 0, true);
    r.write(await fs.write(id, offset, data));
  }

  /**
   * True when `id` has no set-id bit and no security.capability
   * (remembered). Only regular files are ever opened (OPEN; directories get
   * OPENDIR, the kernel serves device nodes and fifos itself), so a plain
   * node opened for writing is a plain file.
   */
  private async isPlain(nodeid: number, id: InodeId): Promise<boolean> {
    if (this.plain.has(nodeid)) return true;
    const gen = this.plainGen;
    const st = await this.fs.getattr(id);
    if (st.mode & (S_ISUID | S_ISGID)) return false;
    if ((await this.fs.getxattr(id, SECURITY_CAPABILITY)) !== null) return false;
    if (gen === this.plainGen) this.markPlain(nodeid);
    return true;
  }

  /** `nodeid` may have gained a set-id bit or a capability: out of `plain`, and checks under way do not mark it. */
  private unplain(nodeid: number): void {
    this.plain.delete(nodeid);
    this.plainGen++;
  }

  private markPlain(nodeid: number): void {
    if (this.plain.size >= PLAIN_MAX) this.plain.clear();
    this.plain.add(nodeid);
  }

  /**
   * What the kernel's file_remove_privs does before a buffered write or a
   * truncate, and chown_common for a chown: the set-id bits go when the
   * request says so (a writer without CAP_FSETID, any chown; S_ISGID only
   * with group execute, setattr_should_drop_sgid), security.capability
   * always. `invalidate`: the reply carries no attributes, so the kernel's
   * cached mode is dropped.
   */
  private async killPriv(nodeid: number, id: InodeId, killSetId: boolean, invalidate: boolean): Promise<void> {
    const fs = this.wfs;
    const st = await fs.getattr(id);
    let changed = false;
    if (killSetId) {
      let mode = st.mode & 0o7777;
      if (mode & S_ISUID) mode &= ~S_ISUID;
      if ((mode & (S_ISGID | S_IXGRP)) === (S_ISGID | S_IXGRP)) mode &= ~S_ISGID;
      if (mode !== (st.mode & 0o7777)) {
        await fs.setattr(id, { mode });
        changed = true;
      }
    }
    if ((await fs.getxattr(id, SECURITY_CAPABILITY)) !== null) {
      await fs.removexattr(id, SECURITY_CAPABILITY);
      changed = true;
    }
    if (changed && invalidate) this.opts.invalidateAttr?.(nodeid);
  }

  async flush(r: FuseRequest): Promise<void> {
    // Sent only once opens are the kernel's (FOPEN_NOFLUSH is set otherwise): never again after ENOSYS.
    if (this.stateless) r.err(ENOSYS);
    else r.ok();
  }

  async release(r: FuseRequest): Promise<void> {
    r.ok();
  }

  async fsync(r: FuseRequest, nodeid: number, datasync: number): Promise<void> {
    const id = this.nodes.id(nodeid);
    if (this.fs.writable) await (this.fs as WritableFs).fsync(id, datasync !== 0);
    r.ok();
  }

  async opendir(r: FuseRequest, nodeid: number): Promise<void> {
    const dir = this.nodes.id(nodeid);
    if (this.stateless) {
      r.err(ENOSYS);
      return;
    }
    const fh = this.nextFh++;
    this.dirs.set(fh, await this.listDir(dir));
    r.open(fh, {});
  }

  private async listDir(dir: InodeId): Promise<DirHandle> {
    // Both settle before either's failure is thrown: no engine call outlives its request or read-ahead.
    const [listed, attr] = await Promise.allSettled([this.fs.readdir(dir), this.fs.getattr(dir)]);
    if (listed.status === 'rejected') throw listed.reason;
    if (attr.status === 'rejected') throw attr.reason;
    const entries = listed.value;
    const st = attr.value;
    if ((st.mode & S_IFMT) !== S_IFDIR) throw new FsError('ENOTDIR');
    return { dir, entries, ino: st.ino };
  }

  /** Stateless mode: the listing of `nodeid`'s directory, kept for the calls that page through it. */
  private async keptListing(nodeid: number): Promise<DirHandle> {
    const dir = this.nodes.id(nodeid);
    const kept = this.listings.get(dir);
    if (kept) {
      this.listings.delete(dir);
      this.listings.set(dir, kept);
      if (this.prefetched.delete(dir)) this.prefetchBudget = Math.min(PREFETCH_BUDGET_MAX, this.prefetchBudget + 2);
      return kept;
    }
    const h = await this.listDir(dir);
    this.keep(h);
    return h;
  }

  private keep(h: DirHandle): void {
    this.listings.delete(h.dir);
    this.listings.set(h.dir, h);
    if (this.listings.size > LISTINGS_KEPT) this.listings.delete(this.listings.keys().next().value!);
  }

  /*
   * Offsets: 0 is the start, entry k of the listing (k = 0 ".", 1 "..", then
   * the snapshot) carries offset k + 1. Every candidate is acquired before
   * the reply (the kernel may FORGET it as soon as it has the page), and the
   * ones that did not fit are released after.
   */
  async readdirplus(r: FuseRequest, nodeid: number, size: number, offset: number, fh: number): Promise<void> {
    const h = fh === 0 && this.stateless ? await this.keptListing(nodeid) : this.dirs.get(fh);
    if (!h) throw new FsError('EBADF');
    const entries = h.entries;
    const total = entries.length + 2;
    if (offset >= total) {
      r.buf(EMPTY);
      return;
    }
    // A direntplus is 152 bytes of header and attributes plus the padded name.
    let end = offset;
    let bytes = 0;
    for (; end < total; end++) {
      const len = end < 2 ? end + 1 : entries[end - 2]!.name.length;
      bytes += 152 + ((len + 7) & ~7);
      if (bytes > size) break;
    }
    if (this.stateless && offset === 0) this.prefetchChildren(entries);
    const first = offset < 2 ? 2 : offset;
    const acquired: number[] = [];
    let attrs: readonly (Stat | undefined)[] = NO_ATTRS;
    if (first < end) {
      attrs = await this.attrsOf(entries, first - 2, end - 2);
      try {
        for (let k = first; k < end; k++) {
          // An entry removed since the snapshot ends the page; the next call resumes after it.
          if (!attrs[k - first]) break;
          const id = entries[k - 2]!.id;
          acquired.push(this.nodes.acquireNow(id) || (await this.nodes.acquire(id)));
        }
      } catch (err) {
        for (const n of acquired) this.nodes.forget(n, 1);
        throw err;
      }
    }
    // Nothing is awaited from here to the reply, so the stats go in one array shared by every reply.
    const names: Buffer[] = [];
    const dots = Math.max(0, Math.min(end, 2) - offset);
    const stats = dirplusStats(Math.max(1, dots + acquired.length));
    for (let k = offset; k < 2 && k < end; k++) {
      names.push(k === 0 ? DOT : DOTDOT);
      encodeDot(stats, (k - offset) * STAT_LEN, h.ino);
    }
    for (let i = 0; i < acquired.length; i++) {
      encodeEntry(stats, names.length * STAT_LEN, acquired[i]!, attrs[i]!);
      names.push(entries[first - 2 + i]!.name);
    }
    if (names.length === 0) {
      // The first candidate vanished: skip it rather than end the listing.
      encodeDot(stats, 0, h.ino);
      r.dirplus(size, offset, [DOT], stats);
      return;
    }
    const packed = r.dirplus(size, offset, names, stats);
    const dotsPacked = Math.max(0, Math.min(packed, 2 - offset));
    for (let i = packed - dotsPacked; i < acquired.length; i++) this.nodes.forget(acquired[i]!, 1);
  }

  /**
   * The attributes of entries [from, to), undefined for one that failed. Those
   * the engine has at hand (statNow) cost no promise; the rest are asked for
   * together, so cold inodes load in parallel.
   */
  private async attrsOf(entries: readonly DirEntry[], from: number, to: number): Promise<(Stat | undefined)[]> {
    const attrs: (Stat | undefined)[] = new Array(to - from);
    let pending: Promise<void>[] | null = null;
    for (let i = from; i < to; i++) {
      const id = entries[i]!.id;
      const st = this.fs.statNow?.(id);
      if (st !== undefined) {
        attrs[i - from] = st;
        continue;
      }
      const at = i - from;
      (pending ??= []).push(
        this.fs.getattr(id).then((s) => {
          attrs[at] = s;
        }, noStat),
      );
    }
    if (pending !== null) await Promise.all(pending);
    return attrs;
  }

  /*
   * Read-ahead of a walk (stateless mode): a program that lists a directory
   * usually lists its subdirectories next (find, tar, ls -R go depth first).
   * Their listings and the attributes of their entries are decoded while the
   * kernel and the program digest the page just sent, so the next READDIRPLUS
   * finds them cached. A stack (last listed on top, first child first)
   * follows a depth-first walk; it is bounded, rationed by its hits
   * (PREFETCH_BUDGET_START), and the work is done one directory per turn of
   * the event loop so requests are read in between.
   */
  private prefetchChildren(entries: readonly DirEntry[]): void {
    const stack = this.prefetchStack;
    for (let i = entries.length - 1; i >= 0; i--) {
      const e = entries[i]!;
      if (e.type === 'd' && !this.listings.has(e.id)) stack.push(e.id);
    }
    if (stack.length > PREFETCH_MAX) stack.splice(0, stack.length - PREFETCH_MAX);
    if (!this.prefetching && stack.length > 0) {
      this.prefetching = true;
      setImmediate(() => void this.prefetchNext());
    }
  }

  private prefetchNext(): void {
    const dir = this.prefetchBudget > 0 || this.warmLeft > 0 ? this.prefetchStack.pop() : undefined;
    if (dir === undefined) {
      this.prefetchStack.length = 0;
      this.endWarm();
      this.prefetching = false;
      this.prefetchStep = null;
      return;
    }
    this.prefetchStep = this.prefetchDir(dir).then(() => {
      setImmediate(() => this.prefetchNext());
    });
  }

  private async prefetchDir(dir: InodeId): Promise<void> {
    try {
      if (this.listings.has(dir)) return;
      const warming = this.warmLeft > 0;
      if (warming) this.warmLeft--;
      else this.prefetchBudget--;
      const h = await this.listDir(dir);
      this.keep(h);
      if (this.prefetched.size >= LISTINGS_KEPT) this.prefetched.clear();
      this.prefetched.add(dir);
      // Settled, failures included: quiesce() must not return while any of these still runs (the engine closes next).
      await this.attrsOf(h.entries, 0, h.entries.length);
      // The last directory warm lists also ends what it queued: the walk's read-ahead starts afresh.
      if (warming) {
        if (this.warmLeft > 0) this.prefetchChildren(h.entries);
        else {
          this.prefetchStack.length = 0;
          this.endWarm();
        }
      }
    } catch {
      // Prefetching is a guess: a directory that fails is reported when it is listed.
    }
  }

  /**
   * Read-ahead at mount (stateless mode; serve calls it once the mount
   * answers): between the mount and its first walk the daemon is idle, so
   * the top of the tree is listed then, WARM_DIRS directories depth first
   * from the root, one per turn of the event loop like any read-ahead. The
   * listings wait in the cache, and the listing and attribute paths are
   * compiled and their memory mapped before the first READDIRPLUS needs
   * them: a fresh daemon's first walk otherwise runs them cold, in V8's
   * interpreter, faulting in fresh heap and code pages. The read-ahead's
   * own budget is untouched; hits on these listings earn it as usual.
   */
  warm(): Promise<void> | null {
    const dirs = this.opts.warmDirs ?? WARM_DIRS;
    if (!this.stateless || dirs <= 0 || this.warmEnd) return null;
    const done = new Promise<void>((resolve) => (this.warmEnd = resolve));
    this.warmLeft = dirs;
    this.prefetchStack.push(this.fs.rootId);
    if (!this.prefetching) {
      this.prefetching = true;
      setImmediate(() => void this.prefetchNext());
    }
    return done;
  }

  private endWarm(): void {
    this.warmLeft = 0;
    const end = this.warmEnd;
    this.warmEnd = null;
    end?.();
  }

  /** Stops reading ahead; resolves once no engine call of it is running (before the engine closes). */
  async quiesce(): Promise<void> {
    this.prefetchStack.length = 0;
    this.endWarm();
    await this.prefetchStep;
  }

  async releasedir(r: FuseRequest, _nodeid: number, fh: number): Promise<void> {
    this.dirs.delete(fh);
    r.ok();
  }

  async fsyncdir(r: FuseRequest): Promise<void> {
    if (this.fs.writable) await (this.fs as WritableFs).sync();
    r.ok();
  }

  async statfs(r: FuseRequest): Promise<void> {
    r.statfs(await this.fs.statfs());
  }

  async setxattr(r: FuseRequest, nodeid: number, name: Buffer, value: Buffer, flags: number): Promise<void> {
    if (refusedXattr(name)) throw new FsError('EOPNOTSUPP');
    const how = flags & XATTR_CREATE ? 'create' : flags & XATTR_REPLACE ? 'replace' : undefined;
    const id = this.nodes.id(nodeid);
    // Before and after: a check that read the xattrs while the set was under way marks nothing.
    this.unplain(nodeid);
    try {
      await this.wfs.setxattr(id, name, value, how);
    } finally {
      this.unplain(nodeid);
    }
    r.ok();
  }

  async getxattr(r: FuseRequest, nodeid: number, name: Buffer, size: number): Promise<void> {
    // The kernel asks before every chown (cap_inode_need_killpriv): a plain node is known to have none.
    if (this.plain.has(nodeid) && name.equals(SECURITY_CAPABILITY)) {
      r.err(ENODATA);
      return;
    }
    const v = await this.fs.getxattr(this.nodes.id(nodeid), name);
    if (v === null) {
      r.err(refusedXattr(name) ? EOPNOTSUPP : ENODATA);
      return;
    }
    if (size === 0) r.xattrSize(v.length);
    else if (v.length > size) r.err(ERANGE);
    else r.buf(v);
  }

  async listxattr(r: FuseRequest, nodeid: number, size: number): Promise<void> {
    const names = await this.fs.listxattr(this.nodes.id(nodeid));
    const list = Buffer.concat(names.flatMap((n) => [n, Buffer.alloc(1)]));
    if (size === 0) r.xattrSize(list.length);
    else if (list.length > size) r.err(ERANGE);
    else r.buf(list);
  }

  async removexattr(r: FuseRequest, nodeid: number, name: Buffer): Promise<void> {
    if (refusedXattr(name)) throw new FsError('EOPNOTSUPP');
    await this.wfs.removexattr(this.nodes.id(nodeid), name);
    r.ok();
  }

  async create(r: FuseRequest, parent: number, name: Buffer, mode: number, flags: number): Promise<void> {
    const dir = this.nodes.id(parent);
    const fs = this.wfs;
    let id: InodeId;
    let created = true;
    try {
      id = await fs.mknod(dir, name, await this.newOwner(r, dir, (mode & 0o7777) | S_IFREG));
    } catch (err) {
      // The name appeared since the kernel's lookup: O_CREAT without O_EXCL opens it.
      if (!(err instanceof FsError) || err.code !== 'EEXIST' || flags & O_EXCL) throw err;
      const found = await fs.lookup(dir, name);
      if (found === null) throw err;
      id = found;
      created = false;
      if (flags & O_TRUNC) await fs.truncate(id, 0);
    }
    const st = this.fs.statNow?.(id) ?? (await this.fs.getattr(id));
    const nodeid = await this.nodes.acquire(id);
    // A file made here has no xattrs: plain unless its mode has a set-id bit.
    if (created && !(st.mode & (S_ISUID | S_ISGID))) this.markPlain(nodeid);
    const direct =
      DIRECT_WRITES && (flags & O_ACCMODE) === O_WRONLY && (this.plain.has(nodeid) || (await this.isPlain(nodeid, id)));
    r.createWith(nodeid, st, 0, openFlags(direct));
  }

  async lseek(r: FuseRequest, nodeid: number, offset: number, whence: number): Promise<void> {
    if (whence !== SEEK_DATA && whence !== SEEK_HOLE) {
      r.err(EINVAL);
      return;
    }
    const id = this.nodes.id(nodeid);
    const [st, ranges] = await Promise.all([this.fs.getattr(id), this.fs.dataRanges(id)]);
    if (offset < 0 || offset >= st.size) {
      r.err(ENXIO);
      return;
    }
    if (whence === SEEK_DATA) {
      const range = ranges.find((x) => x.offset + x.length > offset);
      if (!range) r.err(ENXIO);
      else r.lseek(Math.max(offset, range.offset));
      return;
    }
    let pos = offset;
    for (const x of ranges) {
      if (x.offset > pos) break;
      if (x.offset + x.length > pos) pos = x.offset + x.length;
    }
    r.lseek(Math.min(pos, st.size));
  }

  exit(): void {
    this.exitHandler?.();
  }
}

/*
 * A write-only open of a plain file (no set-id bit, no file capability: the
 * server kills those itself when they appear, see killPriv) is served
 * direct_io: each write(2) is one WRITE request
 * of up to max_write bytes. Through the page cache a write that does not
 * start on a page boundary is split at the first page end (the kernel locks
 * the partial page and sends it alone), so GNU tar's 10 KiB records, 512
 * bytes off the page grid after each header, cost two round trips each. A
 * write-only descriptor can neither read nor mmap, so nothing is lost; the
 * kernel drops cached pages of the written range for the other openers
 * (Linux >= 6.6; older kernels keep buffered writes, which update the cache).
 */
/** Whether a uname release string (`6.18.44-fc`) is at least major.minor. */
export function kernelAtLeast(version: string, major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(version);
  if (!m) return false;
  const [a, b] = [Number(m[1]), Number(m[2])];
  return a > major || (a === major && b >= minor);
}

/** Direct writes drop other openers' cached pages of the range from Linux 6.6 on (fuse: invalidate page cache pages before direct write). */
const DIRECT_WRITES = kernelAtLeast(release(), 6, 6);

const OPEN_CACHED = { keepCache: true, noflush: true, directIo: false } as const;
const OPEN_DIRECT = { keepCache: true, noflush: true, directIo: true } as const;

function openFlags(directIo: boolean): OpenFlags {
  return directIo ? OPEN_DIRECT : OPEN_CACHED;
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
