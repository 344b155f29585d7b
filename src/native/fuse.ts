/**
 * The typed face of the sifuse_fuse addon (src/native/fuse.c): a libfuse3
 * low-level session whose /dev/fuse fd is polled on the Node loop.
 *
 * Every request reaches the handler as a `FuseRequest`, which answers exactly
 * once: a second answer throws, and a handler whose promise settles without
 * answering gets EIO (plus a log line), a rejected one -errno. So no request
 * can be left unanswered by an adapter bug. The addon's handle is a number
 * (a slot of its in-flight table and a generation: no GC object per request),
 * which it also refuses to answer twice.
 */
import { loadAddon } from './load.js';
import { FsError } from '../errors.js';
import type { Stat, StatFs } from '../engine.js';

/** A request in flight, as the addon names it (see the invariants in fuse.c). */
type Handle = number;
type Session = object;
type Dispatch = (
  op: number,
  handle: Handle | null,
  uid: number,
  gid: number,
  pid: number,
  x0: unknown,
  x1: unknown,
  x2: unknown,
  x3: unknown,
  x4: unknown,
  x5: unknown,
) => void;
type Handler = (r: FuseRequest, ...x: unknown[]) => Promise<void>;

interface Addon {
  mount(mountpoint: string, args: string[], opts: Float64Array, dispatch: Dispatch): Session;
  pause(s: Session): void;
  unmount(s: Session): void;
  fd(s: Session): number;
  replyErr(r: Handle, errno: number): number;
  replyNone(r: Handle): void;
  replyEntry(r: Handle, st: Float64Array): number;
  replyCreate(r: Handle, st: Float64Array, fh: number, flags: number): number;
  replyAttr(r: Handle, st: Float64Array): number;
  replyOpen(r: Handle, fh: number, flags: number): number;
  replyBuf(r: Handle, b: Buffer): number;
  /** Settles once a pool thread has written the reply; see fuse.c js_reply_fd_async. */
  replyFdAsync(r: Handle, fd: number, position: number, length: number): Promise<void>;
  replyReadlink(r: Handle, b: Buffer): number;
  replyWrite(r: Handle, n: number): number;
  replyXattr(r: Handle, n: number): number;
  replyLseek(r: Handle, off: number): number;
  replyStatfs(r: Handle, v: Float64Array): number;
  replyDirplus(r: Handle, size: number, first: number, names: Buffer[], stats: Float64Array): number;
  notifyInvalEntry(s: Session, parent: number, name: Buffer): number;
  notifyInvalInode(s: Session, ino: number, off: number, len: number): number;
  [cap: `CAP_${string}`]: number;
}

let addon: Addon | undefined;
function native(): Addon {
  addon ??= loadAddon<Addon>('sifuse_fuse');
  return addon;
}

/** Capability bit of `FUSE_CAP_<name>` (fuse_common.h). */
export function fuseCap(name: string): number {
  const v = native()[`CAP_${name}`];
  if (typeof v !== 'number') throw new Error(`unknown FUSE capability ${name}`);
  return v;
}

/** Op codes, in the order of `enum op` in fuse.c. */
export const OPS = [
  'init',
  'lookup',
  'forget',
  'forget_multi',
  'getattr',
  'setattr',
  'readlink',
  'mknod',
  'mkdir',
  'unlink',
  'rmdir',
  'symlink',
  'rename',
  'link',
  'open',
  'read',
  'write',
  'flush',
  'release',
  'fsync',
  'opendir',
  'readdirplus',
  'releasedir',
  'fsyncdir',
  'statfs',
  'setxattr',
  'getxattr',
  'listxattr',
  'removexattr',
  'create',
  'lseek',
  'exit',
] as const;
export type OpName = (typeof OPS)[number];

/** Doubles per stat in a reply: nodeid, generation, then struct stat. */
export const STAT_LEN = 17;
/** One reply's stat: the addon copies it out before returning, so one array serves every reply. */
const SCRATCH = new Float64Array(STAT_LEN);

/** A reply's attributes: the engine's Stat and the FUSE nodeid (0 in a negative entry). */
export interface EntryStat extends Stat {
  nodeid: number;
}

export function encodeStat(st: EntryStat, out: Float64Array = new Float64Array(STAT_LEN), at = 0): Float64Array {
  return encodeEntry(out, at, st.nodeid, st);
}

/** Writes nodeid and `st` at `at` of `out` (no EntryStat object needed). */
export function encodeEntry(out: Float64Array, at: number, nodeid: number, st: Stat): Float64Array {
  out[at] = nodeid;
  out[at + 1] = st.generation;
  out[at + 2] = st.ino;
  out[at + 3] = st.mode;
  out[at + 4] = st.nlink;
  out[at + 5] = st.uid;
  out[at + 6] = st.gid;
  out[at + 7] = st.size;
  out[at + 8] = st.blocks;
  out[at + 9] = st.atime;
  out[at + 10] = st.atimeNsec;
  out[at + 11] = st.mtime;
  out[at + 12] = st.mtimeNsec;
  out[at + 13] = st.ctime;
  out[at + 14] = st.ctimeNsec;
  out[at + 15] = st.rdev;
  out[at + 16] = 4096;
  return out;
}

export const NEGATIVE_ENTRY: EntryStat = {
  nodeid: 0,
  generation: 0,
  ino: 0,
  mode: 0,
  nlink: 0,
  uid: 0,
  gid: 0,
  size: 0,
  blocks: 0,
  atime: 0,
  atimeNsec: 0,
  mtime: 0,
  mtimeNsec: 0,
  ctime: 0,
  ctimeNsec: 0,
  rdev: 0,
};

/** fuse_file_info bits of an open/create reply. */
export interface OpenFlags {
  directIo?: boolean;
  keepCache?: boolean;
  nonseekable?: boolean;
  noflush?: boolean;
  cacheReaddir?: boolean;
}

function openBits(f: OpenFlags): number {
  return (f.directIo ? 1 : 0) | (f.keepCache ? 2 : 0) | (f.nonseekable ? 4 : 0) | (f.noflush ? 8 : 0) | (f.cacheReaddir ? 16 : 0);
}

export interface Caller {
  uid: number;
  gid: number;
  pid: number;
}

/** One kernel request: answer it exactly once with one of the methods. */
export class FuseRequest implements Caller {
  private handle: Handle | null;
  /** process.hrtime.bigint() when it arrived, or 0n when nothing reads it (no onDone). */
  readonly started: bigint;
  constructor(
    handle: Handle,
    readonly op: OpName,
    readonly uid: number,
    readonly gid: number,
    readonly pid: number,
    timed = true,
  ) {
    this.handle = handle;
    this.started = timed ? process.hrtime.bigint() : 0n;
  }

  get answered(): boolean {
    return this.handle === null;
  }

  /** Ends the request; the result of the reply is a negative errno when /dev/fuse refused it (e.g. an interrupted caller). */
  private take(): Handle {
    const h = this.handle;
    if (h === null) throw new Error(`FUSE ${this.op} request answered twice`);
    this.handle = null;
    return h;
  }

  err(errno: number): void {
    native().replyErr(this.take(), errno);
  }
  ok(): void {
    native().replyErr(this.take(), 0);
  }
  none(): void {
    native().replyNone(this.take());
  }
  entry(st: EntryStat): void {
    native().replyEntry(this.take(), encodeEntry(SCRATCH, 0, st.nodeid, st));
  }
  /** An entry reply from the engine's Stat and the nodeid, without building an EntryStat. */
  entryWith(nodeid: number, st: Stat): void {
    native().replyEntry(this.take(), encodeEntry(SCRATCH, 0, nodeid, st));
  }
  create(st: EntryStat, fh: number, flags: OpenFlags): void {
    native().replyCreate(this.take(), encodeStat(st), fh, openBits(flags));
  }
  /** A create reply from the engine's Stat and the nodeid, without building an EntryStat. */
  createWith(nodeid: number, st: Stat, fh: number, flags: OpenFlags): void {
    native().replyCreate(this.take(), encodeEntry(SCRATCH, 0, nodeid, st), fh, openBits(flags));
  }
  attr(st: EntryStat): void {
    native().replyAttr(this.take(), encodeEntry(SCRATCH, 0, st.nodeid, st));
  }
  attrWith(nodeid: number, st: Stat): void {
    native().replyAttr(this.take(), encodeEntry(SCRATCH, 0, nodeid, st));
  }
  open(fh: number, flags: OpenFlags): void {
    native().replyOpen(this.take(), fh, openBits(flags));
  }
  /** The bytes go to /dev/fuse straight from `data` (no copy). */
  buf(data: Buffer): void {
    native().replyBuf(this.take(), data);
  }
  /**
   * Answers with `length` bytes at `position` of host file `fd`, read and
   * written by a pool thread (spliced when libfuse can), whether cached or
   * not; settles once the reply is written. `fd` may close meanwhile (the
   * job reads a duplicate).
   */
  fromFd(fd: number, position: number, length: number): Promise<void> {
    return native().replyFdAsync(this.take(), fd, position, length);
  }
  readlink(target: Buffer): void {
    native().replyReadlink(this.take(), target);
  }
  write(count: number): void {
    native().replyWrite(this.take(), count);
  }
  xattrSize(size: number): void {
    native().replyXattr(this.take(), size);
  }
  lseek(offset: number): void {
    native().replyLseek(this.take(), offset);
  }
  statfs(v: StatFs): void {
    native().replyStatfs(
      this.take(),
      Float64Array.of(v.bsize, v.frsize, v.blocks, v.bfree, v.bavail, v.files, v.ffree, v.ffree, v.namemax),
    );
  }
  /**
   * A READDIRPLUS page: entries packed in order while they fit in `size`
   * bytes, entry i at offset `first + i + 1`. Returns how many were packed:
   * the kernel holds one lookup on each packed entry except "." and "..".
   */
  dirplus(size: number, first: number, names: Buffer[], stats: Float64Array): number {
    return native().replyDirplus(this.take(), size, first, names, stats);
  }
}

/** Arguments of each op after the request (see the ll_* functions in fuse.c). */
export interface FuseHandlers {
  init?(protoMajor: number, protoMinor: number, want: number, capable: number, maxWrite: number, maxReadahead: number): void;
  lookup(r: FuseRequest, parent: number, name: Buffer): Promise<void>;
  forget(nodeid: number, nlookup: number): void;
  /** Pairs (nodeid, nlookup) flattened. */
  forget_multi(pairs: Float64Array): void;
  getattr(r: FuseRequest, nodeid: number, fh: number): Promise<void>;
  /** v: mode uid gid size atime atimeNsec mtime mtimeNsec; valid: FUSE_SET_ATTR_* bits. */
  setattr(r: FuseRequest, nodeid: number, valid: number, v: Float64Array, fh: number): Promise<void>;
  readlink(r: FuseRequest, nodeid: number): Promise<void>;
  mknod(r: FuseRequest, parent: number, name: Buffer, mode: number, rdev: number): Promise<void>;
  mkdir(r: FuseRequest, parent: number, name: Buffer, mode: number): Promise<void>;
  unlink(r: FuseRequest, parent: number, name: Buffer): Promise<void>;
  rmdir(r: FuseRequest, parent: number, name: Buffer): Promise<void>;
  symlink(r: FuseRequest, parent: number, name: Buffer, target: Buffer): Promise<void>;
  rename(r: FuseRequest, parent: number, name: Buffer, newParent: number, newName: Buffer, flags: number): Promise<void>;
  link(r: FuseRequest, nodeid: number, newParent: number, newName: Buffer): Promise<void>;
  /** openFlags: fuse_open_in.open_flags (FUSE_OPEN_KILL_SUIDGID = 1). */
  open(r: FuseRequest, nodeid: number, flags: number, openFlags: number): Promise<void>;
  read(r: FuseRequest, nodeid: number, size: number, offset: number, fh: number): Promise<void>;
  /** writeFlags: fuse_write_in.write_flags (FUSE_WRITE_KILL_SUIDGID = 4). */
  write(r: FuseRequest, nodeid: number, data: Buffer, offset: number, fh: number, writeFlags: number): Promise<void>;
  flush(r: FuseRequest, nodeid: number, fh: number): Promise<void>;
  release(r: FuseRequest, nodeid: number, fh: number, flags: number): Promise<void>;
  fsync(r: FuseRequest, nodeid: number, datasync: number, fh: number): Promise<void>;
  opendir(r: FuseRequest, nodeid: number, flags: number): Promise<void>;
  readdirplus(r: FuseRequest, nodeid: number, size: number, offset: number, fh: number): Promise<void>;
  releasedir(r: FuseRequest, nodeid: number, fh: number): Promise<void>;
  fsyncdir(r: FuseRequest, nodeid: number, datasync: number, fh: number): Promise<void>;
  statfs(r: FuseRequest, nodeid: number): Promise<void>;
  setxattr(r: FuseRequest, nodeid: number, name: Buffer, value: Buffer, flags: number): Promise<void>;
  getxattr(r: FuseRequest, nodeid: number, name: Buffer, size: number): Promise<void>;
  listxattr(r: FuseRequest, nodeid: number, size: number): Promise<void>;
  removexattr(r: FuseRequest, nodeid: number, name: Buffer): Promise<void>;
  create(r: FuseRequest, parent: number, name: Buffer, mode: number, flags: number): Promise<void>;
  lseek(r: FuseRequest, nodeid: number, offset: number, whence: number, fh: number): Promise<void>;
  /** The kernel side is gone (unmounted or aborted). */
  exit(): void;
}

export interface SessionOptions {
  /** libfuse arguments after argv[0], e.g. ['-o', 'fsname=x,subtype=sifuse,default_permissions']. */
  args: string[];
  entryTimeout: number;
  attrTimeout: number;
  negativeTimeout: number;
  maxWrite: number;
  wantSet: number;
  wantClear: number;
  /** Called once per request when it is answered or fails: for --debug and --stats. */
  onDone?(r: FuseRequest, errno: number): void;
  /** A handler threw or left a request unanswered: one line for the log. */
  onBug(message: string): void;
}

/** The errno a failed handler answers with: FsError's own, anything else EIO. */
export function errnoOf(err: unknown): number {
  return err instanceof FsError ? err.errno : 5;
}

export class FuseSession {
  private readonly session: Session;
  private inflight = 0;
  private idle: (() => void)[] = [];
  private closed = false;
  /** Requests carry their start time only for onDone (--stats, --debug). */
  private readonly timed: boolean;

  private constructor(
    mountpoint: string,
    handlers: FuseHandlers,
    private readonly opts: SessionOptions,
  ) {
    const o = Float64Array.of(
      opts.entryTimeout,
      opts.attrTimeout,
      opts.negativeTimeout,
      opts.maxWrite,
      opts.wantSet,
      opts.wantClear,
    );
    this.timed = opts.onDone !== undefined;
    const dispatch = this.dispatch.bind(this, handlers);
    this.session = native().mount(mountpoint, ['sifuse', ...opts.args], o, dispatch);
  }

  /** Mounts `mountpoint` (via fusermount3 when unprivileged) and starts serving on the Node loop. */
  static mount(mountpoint: string, handlers: FuseHandlers, opts: SessionOptions): FuseSession {
    return new FuseSession(mountpoint, handlers, opts);
  }

  /*
   * Called by the addon as dispatch(op, handle|null, uid, gid, pid, x0..x5)
   * (call_js in fuse.c; no op has more than six arguments, INIT the most):
   * fixed parameters, so no argument array is built per request; handlers
   * ignore the trailing undefined ones.
   */
  private dispatch(
    h: FuseHandlers,
    opcode: number,
    handle: Handle | null,
    uid: number,
    gid: number,
    pid: number,
    x0: unknown,
    x1: unknown,
    x2: unknown,
    x3: unknown,
    x4: unknown,
    x5: unknown,
  ): void {
    const op = OPS[opcode];
    if (op === undefined) return;
    if (handle === null) {
      try {
        if (op === 'init') h.init?.(x0 as number, x1 as number, x2 as number, x3 as number, x4 as number, x5 as number);
        else if (op === 'forget') h.forget(x0 as number, x1 as number);
        else if (op === 'forget_multi') h.forget_multi(x0 as Float64Array);
        else if (op === 'exit') h.exit();
      } catch (err) {
        this.opts.onBug(`${op}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      }
      return;
    }
    const r = new FuseRequest(handle, op, uid, gid, pid, this.timed);
    this.inflight++;
    void this.serve(h[op] as Handler, h, r, x0, x1, x2, x3, x4, x5);
  }

  /** Runs one handler to its end: exactly one answer, then `finish`. */
  private async serve(
    fn: Handler,
    h: FuseHandlers,
    r: FuseRequest,
    x0: unknown,
    x1: unknown,
    x2: unknown,
    x3: unknown,
    x4: unknown,
    x5: unknown,
  ): Promise<void> {
    try {
      await fn.call(h, r, x0, x1, x2, x3, x4, x5);
    } catch (err) {
      const errno = errnoOf(err);
      if (!(err instanceof FsError)) {
        this.opts.onBug(`${r.op}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      }
      if (!r.answered) r.err(errno);
      this.finish(r, errno);
      return;
    }
    if (!r.answered) {
      this.opts.onBug(`${r.op}: the handler returned without answering; replied EIO`);
      r.err(5);
      this.finish(r, 5);
    } else {
      this.finish(r, 0);
    }
  }

  private finish(r: FuseRequest, errno: number): void {
    this.opts.onDone?.(r, errno);
    if (--this.inflight === 0) for (const f of this.idle.splice(0)) f();
  }

  /** Resolves when no request is being served. */
  drained(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  get pending(): number {
    return this.inflight;
  }

  /** Stops reading requests; in-flight ones still get their answers. */
  pause(): void {
    if (!this.closed) native().pause(this.session);
  }

  /** Unmounts (lazily; a no-op when already gone) and closes /dev/fuse. */
  unmount(): void {
    if (this.closed) return;
    this.closed = true;
    native().unmount(this.session);
  }

  /** Drops the kernel's cached name `name` in `parent`. Never call it while serving a request on `parent`. */
  invalEntry(parent: number, name: Buffer): number {
    return this.closed ? 0 : native().notifyInvalEntry(this.session, parent, name);
  }

  invalInode(nodeid: number, offset = 0, length = 0): number {
    return this.closed ? 0 : native().notifyInvalInode(this.session, nodeid, offset, length);
  }
}
