/**
 * Applies path-level Ops to any WritableFs the way the kernel's VFS (and, for
 * the engine, the FUSE daemon above it) would: path walking with symlinks
 * followed in the middle of a path and never at the end, at most 40 of them
 * (ELOOP), the rename traps (source an ancestor of the target's parent:
 * EINVAL; target an ancestor of the source's parent: ENOTEMPTY), a rename
 * between two names of one inode doing nothing, link of a directory (EPERM),
 * user.* xattrs only on files and directories (EPERM), mkdir dropping
 * set-id bits, set-group-id directories handing their group (and, to
 * subdirectories, the bit) to new entries, chown clearing set-user-id (and
 * set-group-id with group execute) of non-directories, and O_NOFOLLOW opens
 * (writing a symlink: ELOOP, a directory: EISDIR).
 *
 * Everything else (EEXIST, ENOENT of the last name, ENOTDIR/EISDIR/ENOTEMPTY
 * inside rename, rmdir and unlink, ENAMETOOLONG, xattr flags) is the
 * filesystem's answer: the model's or the engine's. The same driver runs the
 * model and the engine; the kernel runs the same Ops with real syscalls in
 * test/tools/kernel-ops.py, which validates the model and this driver.
 *
 * renameat2 flags follow do_renameat2's order of checks: ENOENT for a missing
 * source, EEXIST for noreplace onto a name, ENOENT for exchange with a missing
 * target, then the traps (exchange answers EINVAL where a plain rename says
 * ENOTEMPTY), then nothing at all for two names of one inode.
 *
 * The 'race' op (ops.ts) is the one place the driver itself is concurrent: it
 * issues an open (ref), the unlink and the re-create of one name at once and
 * checks the lifetime rules of src/engine.ts through the handle; a broken rule
 * is the outcome 'STALE', which the model never gives. The contract lets an
 * engine reuse a freed number, and a ref issued after the free and after a
 * create that reused it would attach to the new inode (a caller's race, as
 * engine.ts says), so the driver issues no create (mknod, mkdir, symlink, the
 * race's own) while a race of the same batch has yet to issue its ref: then a
 * ref lands before the unlink (the inode stays) or between the unlink and any
 * reuse (ENOENT), exactly the two outcomes the contract allows.
 */
import { FsError } from '../../src/errors.js';
import { S_IFMT, typeBits, type InodeId, type WritableFs } from '../../src/engine.js';
import { makedev } from '../../src/engine.js';
import { typeOfMode } from './model.js';
import { writeData, xattrValue, type Op, type Outcome } from './ops.js';

/** Linux PATH_MAX, NUL included. */
const PATH_MAX = 4096;
/** Linux MAXSYMLINKS. */
const MAX_SYMLINKS = 40;
const S_ISUID = 0o4000;
const S_ISGID = 0o2000;

class PathError extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}

interface Resolved {
  /** Directory inodes from the root to the parent of the last name. */
  stack: InodeId[];
  dir: InodeId;
  name: Buffer;
  /** The last name's inode, or null when absent. */
  id: InodeId | null;
}

export interface VfsOptions {
  /** The uid/gid new objects get (the caller's). */
  uid?: number;
  gid?: number;
  /** The directory paths start from ('/' of the ops; default fs.rootId), as a chroot: '..' and absolute symlinks stay inside. */
  root?: InodeId;
}

/** A broken lifetime rule seen by the 'race' op. */
class StaleHandle extends Error {}

/** Yields to the event loop's microtask queue `n` times (orders the parties of a race). */
async function yields(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await Promise.resolve();
}

/** [opener delay, remover delay] in microtask yields, indexed by a race op's `order`. */
const RACE_ORDERS: readonly (readonly [number, number])[] = [
  [0, 0],
  [0, 1],
  [1, 0],
  [0, 4],
  [4, 0],
  [12, 0],
];

export class VfsDriver {
  readonly root: InodeId;
  /** Races whose ref is not issued yet: creates wait for them (see the header). */
  private readonly refGates = new Set<Promise<void>>();
  private readonly raceRefIssued = new Map<Op, () => void>();
  constructor(
    readonly fs: WritableFs,
    private readonly options: VfsOptions = {},
  ) {
    this.root = options.root ?? fs.rootId;
  }

  private async type(id: InodeId): Promise<string> {
    return typeOfMode((await this.fs.getattr(id)).mode);
  }

  /** Walks `path`, following symlinks except in the last component. */
  async resolve(path: string): Promise<Resolved> {
    const root = this.root;
    let stack: InodeId[] = [root];
    let rest = path
      .split('/')
      .filter((c) => c.length > 0)
      .map((c) => Buffer.from(c));
    if (rest.length === 0) throw new PathError('EBUSY');
    let links = 0;
    for (;;) {
      const comp = rest[0]!;
      rest = rest.slice(1);
      const dir = stack[stack.length - 1]!;
      if (comp.equals(Buffer.from('.'))) {
        if (rest.length === 0) throw new PathError('EINVAL');
        continue;
      }
      if (comp.equals(Buffer.from('..'))) {
        if (rest.length === 0) throw new PathError('EINVAL');
        if (stack.length > 1) stack = stack.slice(0, -1);
        continue;
      }
      const id = await this.fs.lookup(dir, comp);
      if (rest.length === 0) return { stack, dir, name: comp, id };
      if (id === null) throw new PathError('ENOENT');
      const t = await this.type(id);
      if (t === 'l') {
        if (++links > MAX_SYMLINKS) throw new PathError('ELOOP');
        const target = (await this.fs.readlink(id)).toString('latin1');
        if (target.startsWith('/')) stack = [root];
        const parts = target
          .split('/')
          .filter((c) => c.length > 0)
          .map((c) => Buffer.from(c, 'latin1'));
        rest = [...parts, ...rest];
        continue;
      }
      if (t !== 'd') throw new PathError('ENOTDIR');
      stack = [...stack, id];
    }
  }

  private async existing(path: string): Promise<Resolved & { id: InodeId }> {
    const r = await this.resolve(path);
    if (r.id === null) throw new PathError('ENOENT');
    return r as Resolved & { id: InodeId };
  }

  /** Owner and mode for a new entry in `dir` (inode_init_owner, as root). */
  private async owner(dir: InodeId, mode: number, isDir: boolean): Promise<{ uid: number; gid: number; mode: number }> {
    const parent = await this.fs.getattr(dir);
    const uid = this.options.uid ?? 0;
    let gid = this.options.gid ?? 0;
    if (parent.mode & S_ISGID) {
      gid = parent.gid;
      if (isDir) mode |= S_ISGID;
    }
    return { uid, gid, mode };
  }

  async apply(op: Op): Promise<Outcome> {
    return (await this.applyDetailed(op)).outcome;
  }

  /** The outcome, and for a write the engine answered with fewer bytes than asked, that count. */
  async applyDetailed(op: Op): Promise<{ outcome: Outcome; short: number | null }> {
    // Registered before the first await, so every op of a batch sees every race of it.
    let release: (() => void) | undefined;
    if (op.op === 'race') {
      let gate!: Promise<void>;
      gate = new Promise<void>((resolve) => {
        release = () => {
          this.refGates.delete(gate);
          this.raceRefIssued.delete(op);
          resolve();
        };
      });
      this.refGates.add(gate);
      this.raceRefIssued.set(op, release!);
    }
    try {
      const short = await this.run(op);
      return { outcome: 'ok', short };
    } catch (e) {
      if (e instanceof PathError) return { outcome: e.code, short: null };
      if (e instanceof StaleHandle) return { outcome: `STALE (${e.message})`, short: null };
      if (e instanceof FsError) return { outcome: e.code, short: null };
      throw e;
    } finally {
      release?.();
    }
  }

  /** Waits until every race in flight has issued its ref (creates may reuse a freed number only after that). */
  private async createsMayStart(): Promise<void> {
    while (this.refGates.size > 0) await Promise.all([...this.refGates]);
  }

  /**
   * Open (ref) the file `r` names, unlink the name and create a new file with
   * `data` there, all at once; then, if the open won, the handle must still
   * read the old bytes with one link fewer (0 unless hard-linked elsewhere)
   * and the new file must be another inode.
   */
  private async race(r: Resolved & { id: InodeId }, order: number, data: Buffer, refIssued: () => void): Promise<void> {
    const fs = this.fs;
    const old = r.id;
    const st = await fs.getattr(old);
    const before = await fs.read(old, 0, st.size);
    const [openDelay, removeDelay] = RACE_ORDERS[order % RACE_ORDERS.length]!;
    const o = await this.owner(r.dir, 0o644, false);
    const opener = (async () => {
      await yields(openDelay);
      const ref = fs.ref(old);
      refIssued();
      try {
        await ref;
        return true;
      } catch (e) {
        if (e instanceof FsError && e.code === 'ENOENT') return false;
        throw e;
      }
    })();
    const replacer = (async () => {
      await yields(removeDelay);
      const unlinked = fs.unlink(r.dir, r.name);
      await this.createsMayStart();
      await unlinked;
      const id = await fs.mknod(r.dir, r.name, { mode: typeBits('f') | o.mode, uid: o.uid, gid: o.gid });
      if (data.length > 0) await fs.write(id, 0, data);
      return id;
    })();
    const [opened, fresh] = await Promise.all([opener, replacer]);
    if (opened) {
      try {
        if (fresh === old) throw new StaleHandle(`the new file reuses inode ${old} while it is open`);
        const through = await fs.read(old, 0, Math.max(st.size, data.length) + 1);
        if (!through.equals(before))
          throw new StaleHandle(`an open handle of an unlinked file reads ${through.length} other bytes`);
        const now = await fs.getattr(old);
        if (now.nlink !== st.nlink - 1)
          throw new StaleHandle(`an open file with ${st.nlink} links has nlink ${now.nlink} after an unlink`);
      } finally {
        await fs.unref(old);
      }
    }
    const got = await fs.read(fresh, 0, data.length + 1);
    if (!got.equals(data)) throw new StaleHandle(`the re-created file reads ${got.length} other bytes`);
  }

  private async run(op: Op): Promise<number | null> {
    const fs = this.fs;
    switch (op.op) {
      case 'mknod': {
        const r = await this.resolve(op.path);
        if (r.id !== null) throw new PathError('EEXIST');
        const o = await this.owner(r.dir, op.mode & 0o7777, false);
        const rdev = op.kind === 'c' || op.kind === 'b' ? makedev(op.major, op.minor) : 0;
        await this.createsMayStart();
        await fs.mknod(r.dir, r.name, { mode: typeBits(op.kind) | o.mode, uid: o.uid, gid: o.gid, rdev });
        return null;
      }
      case 'mkdir': {
        const r = await this.resolve(op.path);
        if (r.id !== null) throw new PathError('EEXIST');
        // vfs_mkdir keeps only the permission and sticky bits.
        const o = await this.owner(r.dir, op.mode & 0o1777, true);
        await this.createsMayStart();
        await fs.mkdir(r.dir, r.name, { mode: typeBits('d') | o.mode, uid: o.uid, gid: o.gid });
        return null;
      }
      case 'symlink': {
        // getname(): the target is a C string of at most PATH_MAX bytes with its NUL.
        if (Buffer.byteLength(op.target) >= PATH_MAX) throw new PathError('ENAMETOOLONG');
        const r = await this.resolve(op.path);
        if (r.id !== null) throw new PathError('EEXIST');
        const o = await this.owner(r.dir, 0o777, false);
        await this.createsMayStart();
        await fs.symlink(r.dir, r.name, Buffer.from(op.target), { uid: o.uid, gid: o.gid });
        return null;
      }
      case 'link': {
        const src = await this.existing(op.from);
        const dst = await this.resolve(op.path);
        if (dst.id !== null) throw new PathError('EEXIST');
        if ((await this.type(src.id)) === 'd') throw new PathError('EPERM');
        await fs.link(src.id, dst.dir, dst.name);
        return null;
      }
      case 'unlink': {
        const r = await this.existing(op.path);
        await fs.unlink(r.dir, r.name);
        return null;
      }
      case 'rmdir': {
        const r = await this.existing(op.path);
        await fs.rmdir(r.dir, r.name);
        return null;
      }
      case 'rename': {
        const from = await this.resolve(op.from);
        const to = await this.resolve(op.path);
        if (from.id === null) throw new PathError('ENOENT');
        // lock_rename's trap: the child of the higher parent on the way to the lower one.
        let trap: InodeId | null = null;
        if (from.dir !== to.dir) {
          const i = to.stack.indexOf(from.dir);
          const j = from.stack.indexOf(to.dir);
          if (i >= 0) trap = i + 1 < to.stack.length ? to.stack[i + 1]! : null;
          else if (j >= 0) trap = j + 1 < from.stack.length ? from.stack[j + 1]! : null;
        }
        if (op.flags === 'noreplace' && to.id !== null) throw new PathError('EEXIST');
        if (op.flags === 'exchange' && to.id === null) throw new PathError('ENOENT');
        if (trap !== null && from.id === trap) throw new PathError('EINVAL');
        if (trap !== null && to.id === trap) throw new PathError(op.flags === 'exchange' ? 'EINVAL' : 'ENOTEMPTY');
        if (to.id === from.id) return null;
        if (op.flags === 'whiteout') {
          const o = await this.owner(from.dir, 0, false);
          await this.createsMayStart();
          await fs.rename(from.dir, from.name, to.dir, to.name, { whiteout: { uid: o.uid, gid: o.gid } });
        } else if (op.flags) {
          await fs.rename(from.dir, from.name, to.dir, to.name, { [op.flags]: true });
        } else {
          await fs.rename(from.dir, from.name, to.dir, to.name);
        }
        return null;
      }
      case 'race': {
        const r = await this.existing(op.path);
        const t = await this.type(r.id);
        if (t === 'd') throw new PathError('EISDIR');
        if (t === 'l') throw new PathError('ELOOP');
        if (t !== 'f') throw new PathError('SKIPPED');
        await this.race(r, op.order, writeData(op.seed, op.length), this.raceRefIssued.get(op)!);
        return null;
      }
      case 'write':
      case 'truncate':
      case 'unlinkopen': {
        const r = await this.existing(op.path);
        const t = await this.type(r.id);
        if (t === 'd') throw new PathError('EISDIR');
        if (t === 'l') throw new PathError('ELOOP');
        if (t !== 'f') throw new PathError('SKIPPED');
        if (op.op === 'write') {
          const n = await fs.write(r.id, op.offset, writeData(op.seed, op.length));
          if (!Number.isInteger(n) || n < 0 || n > op.length)
            throw new Error(`${fs.name}: write returned ${n} for ${op.length} bytes`);
          if (n < op.length) return n;
        } else if (op.op === 'truncate') {
          await fs.truncate(r.id, op.size);
        } else {
          await fs.ref(r.id);
          try {
            await fs.unlink(r.dir, r.name);
            await fs.write(r.id, op.offset, writeData(op.seed, op.length));
          } finally {
            await fs.unref(r.id);
          }
        }
        return null;
      }
      case 'chmod': {
        const r = await this.existing(op.path);
        if ((await this.type(r.id)) === 'l') throw new PathError('SKIPPED');
        await fs.setattr(r.id, { mode: op.mode & 0o7777 });
        return null;
      }
      case 'chown': {
        const r = await this.existing(op.path);
        const st = await fs.getattr(r.id);
        let mode = st.mode & 0o7777;
        if ((st.mode & S_IFMT) !== typeBits('d')) {
          mode &= ~S_ISUID;
          if (mode & 0o010) mode &= ~S_ISGID;
        }
        await fs.setattr(r.id, { uid: op.uid, gid: op.gid, ...(mode !== (st.mode & 0o7777) ? { mode } : {}) });
        return null;
      }
      case 'utimes': {
        const r = await this.existing(op.path);
        await fs.setattr(r.id, { atime: { sec: op.atime, nsec: 0 }, mtime: { sec: op.mtime, nsec: op.mtimeNsec } });
        return null;
      }
      case 'setxattr':
      case 'removexattr': {
        const r = await this.existing(op.path);
        const t = await this.type(r.id);
        if (op.name.startsWith('user.') && t !== 'f' && t !== 'd') throw new PathError('EPERM');
        if (op.op === 'setxattr')
          await fs.setxattr(r.id, Buffer.from(op.name, 'latin1'), xattrValue(op), op.flags === 0 ? undefined : op.flags);
        else await fs.removexattr(r.id, Buffer.from(op.name, 'latin1'));
        return null;
      }
    }
  }
}
