/**
 * The Overlay: one merged, writable view over read-only lowers and at most
 * one writable upper, with the kernel overlayfs's rules
 * (Documentation/filesystems/overlayfs.rst; reference/peers.md 1 and 4):
 * a non-directory higher up hides everything below, directories merge unless
 * opaque, whiteouts hide; writes copy up (copy-up.ts), removals leave
 * whiteouts only where a lower layer has the name, renamed lower directories
 * get redirects (no EXDEV, no subtree copy), hard links of a lower inode stay
 * one inode after copy-up (an index in work/), st_ino is kept across copy-up
 * (ino.ts).
 *
 * Concurrency: every namespace sequence (lookup + node binding, copy-up,
 * removal + whiteout, rename + redirect) runs under one NamespaceLock;
 * data and attribute reads of bound nodes, and data writes to upper objects,
 * run beside it (the upper engine serialises its own calls).
 */
import {
  fileTypeOf,
  S_IFCHR,
  S_IFMT,
  type DataRange,
  type DirEntry,
  type FileType,
  type InodeId,
  type NewNode,
  type ReadableFs,
  type RenameFlags,
  type SetAttr,
  type Stat,
  type StatFs,
  type WritableFs,
} from '../../engine.js';
import { FsError, withErrno } from '../../errors.js';
import type { Layer, UpperLayer } from '../layer.js';
import {
  encodeAbsoluteRedirect,
  escapeXattr,
  isInternalXattr,
  shownXattr,
  isWhiteoutName,
  readDirMarks,
  readInoMark,
  redirectComponents,
  setInternalXattr,
  writeOpaque,
  writeWhiteout,
  XATTR_LOWER_LINKS,
  XATTR_REDIRECT,
  XATTR_USER_LOWER_LINKS,
  XATTR_USER_REDIRECT,
} from './encoding.js';
import { buildCopy } from './copy-up.js';
import { showGid, showUid, storeGid, storeUid, type IdMap } from './idmap.js';
import { xino } from './ino.js';
import { NamespaceLock } from './lock.js';
import { layerKey, NodeTable, WHITED_OUT, type LayerRef, type Node } from './nodes.js';
import { mergeListing } from './readdir.js';
import { emptyResolution, lowerPositive, resolveChild, type Resolution } from './resolve.js';
import type { Stack, StackLayer } from './stack.js';
import { TMP_PREFIX, UpperOps } from './upper-ops.js';

export interface OverlayOptions {
  /** Read-only layers, top first (the kernel's lowerdir order). At least one layer in all. */
  lowers: readonly Layer[];
  /** The writable layer; none (or a read-only engine) makes every write EROFS. */
  upper?: UpperLayer;
  /** --fakeroot: the caller's uid/gid are stored as 0 and stored 0 shows as the caller. */
  map?: IdMap;
  /** Keep hard links of lower inodes together across copy-up (the kernel's index=on). Default true. */
  index?: boolean;
  /**
   * redirect_dir (the kernel's option name). true (default): a renamed lower
   * directory gets a redirect. false: its whole subtree is copied up and the
   * copy made opaque, for images meant for readers that do not follow
   * redirects (fuse-overlayfs, Apptainer's unprivileged stack).
   */
  redirectDir?: boolean;
  /**
   * Nodes kept before unreferenced ones are forgotten (default 100,000): an
   * id from lookup or readdir stays valid while referenced (ref), or until
   * then.
   */
  nodeLimit?: number;
  /**
   * st_nlink of a merged directory: 'count' (default) 2 + its visible
   * subdirectories (POSIX; costs one merged listing per directory stat'ed),
   * or 'one' as the kernel shows (find and ls accept it).
   */
  mergedDirNlink?: 'count' | 'one';
  /** For messages; default: the layer names joined. */
  name?: string;
}

/** The hard-link index directory inside work/ (sifuse's own name: the kernel's is work/index). */
export const INDEX_DIR = Buffer.from('sifuse-index');
const ROOT_OWNER = { uid: 0, gid: 0 };
const NAME_MAX = 255;

/** A directory node whose lower directories are known. */
type Resolved = Node & { lowers: LayerRef[] };

function isDirType(t: FileType | null): boolean {
  return t === 'd';
}

export class Overlay implements WritableFs {
  readonly name: string;
  readonly rootId: InodeId;
  readonly writable: boolean;
  private readonly stack: Stack;
  private readonly hasUpper: boolean;
  private readonly ops: UpperOps | null;
  private readonly nodes: NodeTable;
  private readonly lock = new NamespaceLock();
  private readonly map: IdMap | undefined;
  private readonly useIndex: boolean;
  private readonly redirectDir: boolean;
  private readonly nodeLimit: number;
  private readonly mergedDirNlink: 'count' | 'one';
  private readonly root: Node;
  /** Lower object key -> upper inode of its copy (index entries), and the index dir. */
  private readonly indexed = new Map<string, InodeId>();
  private indexDir: InodeId | null = null;

  private constructor(options: OverlayOptions, stack: Stack, nodes: NodeTable, root: Node) {
    this.stack = stack;
    this.nodes = nodes;
    this.hasUpper = options.upper !== undefined;
    this.ops = options.upper && options.upper.fs.writable ? new UpperOps(options.upper) : null;
    this.writable = this.ops !== null;
    this.map = options.map;
    this.useIndex = options.index ?? true;
    this.redirectDir = options.redirectDir ?? true;
    this.nodeLimit = options.nodeLimit ?? 100_000;
    this.mergedDirNlink = options.mergedDirNlink ?? 'count';
    this.root = root;
    this.name = options.name ?? stack.map((l) => l.name).join(':');
    this.rootId = root.id;
  }

  static async open(options: OverlayOptions): Promise<Overlay> {
    const layers: StackLayer[] = [];
    const n = options.lowers.length;
    if (options.upper) layers.push({ name: options.upper.name, fs: options.upper.fs, root: options.upper.root, tag: 0 });
    options.lowers.forEach((l, i) => layers.push({ name: l.name, fs: l.fs, root: l.root, tag: n - i }));
    if (layers.length === 0) throw withErrno('EINVAL', 'an overlay needs at least one layer');
    const stack: Stack = layers;
    const hasUpper = options.upper !== undefined;
    // The root: the upper root and every lower root down to the first opaque one.
    let upperRoot: InodeId | null = null;
    let opaque = false;
    if (hasUpper) {
      upperRoot = options.upper!.root;
      opaque = (await readDirMarks(stack[0]!.fs, upperRoot)).opaque;
    }
    const lowers: LayerRef[] = [];
    if (!opaque) {
      for (let li = hasUpper ? 1 : 0; li < stack.length; li++) {
        lowers.push({ layer: li, id: stack[li]!.root });
        if ((await readDirMarks(stack[li]!.fs, stack[li]!.root)).opaque) break;
      }
    }
    const table = new NodeTable();
    const top = upperRoot !== null ? layerKey(0, upperRoot) : layerKey(lowers[0]!.layer, lowers[0]!.id);
    const rootFields = {
      key: top,
      parent: null,
      name: Buffer.alloc(0),
      type: 'd' as const,
      upper: upperRoot,
      lower: lowers[0] ?? null,
      lowers,
      redirect: null,
    };
    const ov = new Overlay(options, stack, table, table.create(rootFields));
    await ov.loadWork(options.upper);
    return ov;
  }

  /** Clears temporaries a crash left in work/ and loads the hard-link index. */
  private async loadWork(upper: UpperLayer | undefined): Promise<void> {
    if (!upper) return;
    const ops = this.ops;
    if (ops) {
      for (const e of [...(await ops.fs.readdir(ops.work))]) {
        if (e.name.length >= TMP_PREFIX.length && e.name.subarray(0, TMP_PREFIX.length).equals(TMP_PREFIX))
          await ops.removeTree(ops.work, e.name);
      }
    }
    if (!this.useIndex) return;
    // A read-only upper (a writable stack opened read-only) still reads its index.
    let dir = await upper.fs.lookup(upper.work, INDEX_DIR);
    if (dir === null && ops) dir = await ops.fs.mkdir(ops.work, INDEX_DIR, { mode: 0o040700, ...ROOT_OWNER });
    if (dir === null) return;
    if (ops) this.indexDir = dir;
    for (const e of await upper.fs.readdir(dir)) {
      const m = /^([0-9]+)-([0-9]+)$/.exec(e.name.toString('latin1'));
      if (!m) continue;
      const layer = this.stack.findIndex((l, i) => i > 0 && l.tag === Number(m[1]));
      if (layer > 0) this.indexed.set(layerKey(layer, Number(m[2])), e.id);
    }
  }

  /**
   * Directory `n`'s names changed: its cached listing and lookups go. Its
   * subdirectory count goes too, unless `subdirDelta` says how it moved (0:
   * a non-directory came or went; +1 mkdir, -1 rmdir of a visible one).
   */
  private changed(n: Node, subdirDelta?: number): void {
    n.listing = null;
    n.children = null;
    if (subdirDelta === 0) return;
    // A count being read across this change is not kept (dirGen).
    n.dirGen++;
    n.subdirs = subdirDelta !== undefined && n.subdirs !== null ? n.subdirs + subdirDelta : null;
  }

  /** Nodes in the table (bounded by nodeLimit between namespace operations). */
  get nodeCount(): number {
    return this.nodes.size;
  }

  // ---- nodes ----

  private node(id: InodeId): Node {
    const n = this.nodes.get(id);
    if (!n) throw withErrno('ENOENT', `overlay inode ${id} is not known (forgotten or never looked up)`);
    return n;
  }

  private upperFs(): WritableFs {
    if (!this.ops) throw withErrno('EROFS');
    return this.ops.fs;
  }

  private dirNode(id: InodeId): Node {
    const n = this.node(id);
    if (n.type !== 'd') throw withErrno('ENOTDIR');
    return n;
  }

  /**
   * Fills a directory node's merged lower directories (nodes made from
   * listings bind lazily). Hot paths test `lowers !== null` first and skip the await.
   */
  private async resolved(n: Node): Promise<Resolved> {
    if (n.lowers !== null) return n as Resolved;
    const parent = await this.resolved(n.parent!);
    const r = await resolveChild(this.stack, this.hasUpper, parent, n.name);
    if (r.type === 'd') {
      n.upper = r.upper;
      n.lowers = r.lowers;
      n.lower = r.lowers[0] ?? null;
      n.redirect = r.redirect;
    } else {
      n.lowers = [];
    }
    return n as Resolved;
  }

  /** The node for a resolved name, creating or re-using one by identity key. */
  private bind(parent: Node, name: Buffer, r: Resolution): Node {
    const type = r.type!;
    let key: string;
    let upper = r.upper;
    let lower: LayerRef | null = null;
    if (r.upper !== null) key = layerKey(0, r.upper);
    else if (type === 'd') {
      lower = r.lowers[0]!;
      key = layerKey(lower.layer, lower.id);
    } else {
      lower = r.lower!;
      const idx = this.indexed.get(layerKey(lower.layer, lower.id));
      if (idx !== undefined) {
        upper = idx;
        key = layerKey(0, idx);
      } else key = layerKey(lower.layer, lower.id);
    }
    const found = this.nodes.byLayerKey(key);
    if (found) {
      if (type !== 'd' || found.parent === parent) {
        found.parent = parent;
        found.name = Buffer.from(name);
      }
      if (type === 'd' && found.lowers === null) {
        found.lowers = r.lowers;
        found.lower = r.lowers[0] ?? null;
        found.redirect = r.redirect;
      }
      return found;
    }
    return this.nodes.create({
      key,
      parent,
      name: Buffer.from(name),
      type,
      upper,
      lower: type === 'd' ? (r.lowers[0] ?? null) : lower,
      lowers: type === 'd' ? r.lowers : null,
      redirect: r.redirect,
    });
  }

  /** A node for a listing entry of `parent` found in `layer`. */
  private bindEntry(parent: Node, layer: number, e: DirEntry): Node {
    let key = layerKey(layer, e.id);
    let upper: InodeId | null = layer === 0 && this.hasUpper ? e.id : null;
    const lower: LayerRef | null = upper === null ? { layer, id: e.id } : null;
    if (upper === null && e.type !== 'd') {
      const idx = this.indexed.get(key);
      if (idx !== undefined) {
        upper = idx;
        key = layerKey(0, idx);
      }
    }
    const found = this.nodes.byLayerKey(key);
    if (found) return found;
    return this.nodes.create({
      key,
      parent,
      name: Buffer.from(e.name),
      type: e.type,
      upper,
      lower,
      lowers: null,
      redirect: null,
    });
  }

  private source(n: Node): { fs: ReadableFs; id: InodeId; layer: number } {
    if (n.upper !== null) return { fs: this.stack[0]!.fs, id: n.upper, layer: 0 };
    if (n.lower === null) throw withErrno('ENOENT', 'overlay node has no layer object');
    return { fs: this.stack[n.lower.layer]!.fs, id: n.lower.id, layer: n.lower.layer };
  }

  private async inoOf(n: Node, st: Stat, layer: number): Promise<number> {
    if (n.ino !== null) return n.ino;
    let ino: number | null = null;
    if (layer === 0 && this.hasUpper && !n.made) ino = await readInoMark(this.stack[0]!.fs, n.upper!);
    if (ino === null) ino = xino(this.stack[layer]!.tag, st.ino);
    n.ino = ino;
    return ino;
  }

  // ---- ReadableFs ----

  async getattr(id: InodeId): Promise<Stat> {
    let n = this.node(id);
    if (n.type === 'd' && n.lowers === null) n = await this.lock.exclusive(() => this.resolved(n));
    let layer: number;
    let st: Stat;
    if (n.upper !== null) {
      layer = 0;
      st = await this.stack[0]!.fs.getattr(n.upper);
    } else if (n.lower !== null) {
      layer = n.lower.layer;
      st = await this.stack[layer]!.fs.getattr(n.lower.id);
    } else throw withErrno('ENOENT', 'overlay node has no layer object');
    let nlink = st.nlink;
    if (n.type === 'd') {
      const layers = (n.upper !== null ? 1 : 0) + (n.lowers?.length ?? 0);
      // A merged directory's links are counted from its merged listing (the kernel shows 1).
      if (layers > 1) nlink = this.mergedDirNlink === 'one' ? 1 : 2 + (await this.subdirCount(n));
    } else if (layer === 0 && this.hasUpper && this.mayBeIndexed(n, st) && (await this.isIndexed(n, st))) {
      nlink = Math.max(0, st.nlink - 1) + (await this.lowerLinks(n.upper!));
    }
    const ino = n.ino ?? (await this.inoOf(n, st, layer));
    return this.shownStat(n, st, ino, nlink);
  }

  /**
   * ReadableFs.statNow: getattr's answer when nothing needs an await (the
   * node's ino known, its layer's Stat at hand, no merged directory link
   * count, no hard-link index to consult); else undefined.
   */
  statNow(id: InodeId): Stat | undefined {
    const n = this.nodes.get(id);
    if (!n || n.ino === null) return undefined;
    let st: Stat | undefined;
    if (n.type === 'd') {
      // Unresolved, or merged (its links come from the merged listing).
      if (n.lowers === null || (n.upper !== null ? 1 : 0) + n.lowers.length > 1) return undefined;
    }
    if (n.upper !== null) {
      st = this.stack[0]!.fs.statNow?.(n.upper);
      if (st !== undefined && n.type !== 'd' && this.hasUpper && this.mayBeIndexed(n, st)) return undefined;
    } else if (n.lower !== null) st = this.stack[n.lower.layer]!.fs.statNow?.(n.lower.id);
    return st === undefined ? undefined : this.shownStat(n, st, n.ino, st.nlink);
  }

  /** The Stat getattr answers for node `n` from its layer's `st`, its st_ino and link count. */
  private shownStat(n: Node, st: Stat, ino: number, nlink: number): Stat {
    // No name leads here (an open, unlinked file or removed directory); a lower object still has its links.
    if (n.dead) nlink = 0;
    const map = this.map;
    // The layer's own Stat when it says it all (an upper object made here, no id map): no copy.
    if (ino === st.ino && nlink === st.nlink && !map) return st;
    // One literal (not a spread of the layer's Stat): every Stat the overlay builds has one shape.
    return {
      ino,
      mode: st.mode,
      nlink,
      uid: map ? showUid(map, st.uid) : st.uid,
      gid: map ? showGid(map, st.gid) : st.gid,
      size: st.size,
      blocks: st.blocks,
      atime: st.atime,
      atimeNsec: st.atimeNsec,
      mtime: st.mtime,
      mtimeNsec: st.mtimeNsec,
      ctime: st.ctime,
      ctimeNsec: st.ctimeNsec,
      rdev: st.rdev,
      generation: st.generation,
    };
  }

  /**
   * Visible subdirectories of merged directory `n`, from its listing; kept
   * until a directory entry comes or goes (a file removal in a big merged
   * directory then costs no new merged listing at the next stat).
   */
  private async subdirCount(n: Node): Promise<number> {
    if (n.subdirs !== null) return n.subdirs;
    const gen = n.dirGen;
    const count = (await this.readdir(n.id)).filter((e) => e.type === 'd').length;
    if (n.dirGen === gen) n.subdirs = count;
    return count;
  }

  async lookup(dir: InodeId, name: Buffer): Promise<InodeId | null> {
    const d = this.dirNode(dir);
    if (isWhiteoutName(name)) return null;
    if (name.length > NAME_MAX) throw withErrno('ENAMETOOLONG');
    const k = name.toString('latin1');
    const hit = d.children?.get(k);
    // A cached result is as good as a locked lookup: every change to d's names updates the cache under the lock.
    if (hit === null || hit === WHITED_OUT) return null;
    if (hit !== undefined && this.nodes.get(hit)) return hit;
    return this.lock.exclusive(async () => {
      // Between namespace operations (lock held, no node in use by one): the table is bounded.
      if (this.nodes.size > this.nodeLimit) this.nodes.sweep(this.nodeLimit, this.root, d);
      const p = d.lowers !== null ? (d as Resolved) : await this.resolved(d);
      const r = await resolveChild(this.stack, this.hasUpper, p, name);
      const id = r.type === null ? null : this.bind(p, name, r).id;
      (p.children ??= new Map()).set(k, id ?? (r.upperWhiteout !== null ? WHITED_OUT : null));
      return id;
    });
  }

  async readdir(dir: InodeId): Promise<readonly DirEntry[]> {
    const d = this.dirNode(dir);
    if (d.listing) return d.listing;
    return this.lock.exclusive(async () => {
      if (d.listing) return d.listing;
      const p = await this.resolved(d);
      const dirs: LayerRef[] = [];
      if (p.upper !== null) dirs.push({ layer: 0, id: p.upper });
      dirs.push(...p.lowers);
      const merged = await mergeListing(this.stack, dirs);
      const out: DirEntry[] = merged.map((m) => ({
        name: m.entry.name,
        type: m.entry.type,
        id: this.bindEntry(p, m.layer, m.entry).id,
      }));
      d.listing = out;
      return out;
    });
  }

  async read(id: InodeId, position: number, length: number): Promise<Buffer> {
    const n = this.node(id);
    if (n.type === 'd') throw withErrno('EISDIR');
    const src = this.source(n);
    return src.fs.read(src.id, position, length);
  }

  async dataRanges(id: InodeId): Promise<DataRange[]> {
    const n = this.node(id);
    const src = this.source(n);
    return src.fs.dataRanges(src.id);
  }

  async readlink(id: InodeId): Promise<Buffer> {
    const n = this.node(id);
    if (n.type !== 'l') throw withErrno('EINVAL');
    const src = this.source(n);
    return src.fs.readlink(src.id);
  }

  async listxattr(id: InodeId): Promise<Buffer[]> {
    let n = this.node(id);
    if (n.type === 'd' && n.lowers === null) n = await this.lock.exclusive(() => this.resolved(n));
    const src = this.source(n);
    const out: Buffer[] = [];
    for (const x of await src.fs.listxattr(src.id)) {
      const shown = shownXattr(x);
      if (shown !== null) out.push(shown);
    }
    return out;
  }

  /** The stored name of a user's xattr name; EPERM for the overlay's own (`forWrite`), null to read. */
  private storedXattr(name: Buffer, forWrite: boolean): Buffer | null {
    const escaped = escapeXattr(name);
    if (escaped !== null) return escaped;
    if (!isInternalXattr(name)) return name;
    if (forWrite) throw withErrno('EPERM', `${name.toString('latin1')} is overlay-internal`);
    return null;
  }

  async getxattr(id: InodeId, user: Buffer): Promise<Buffer | null> {
    const name = this.storedXattr(user, false);
    if (name === null) return null;
    let n = this.node(id);
    if (n.type === 'd' && n.lowers === null) n = await this.lock.exclusive(() => this.resolved(n));
    const src = this.source(n);
    return src.fs.getxattr(src.id, name);
  }

  async ref(id: InodeId, count = 1): Promise<void> {
    const n = this.node(id);
    if (n.dead && n.refs === 0) throw withErrno('ENOENT');
    if (n.refs === 0 && n.upper !== null && this.ops) await this.ops.fs.ref(n.upper);
    n.refs += count;
  }

  async unref(id: InodeId, count = 1): Promise<void> {
    const n = this.nodes.get(id);
    if (!n || n.refs === 0) return;
    n.refs = Math.max(0, n.refs - count);
    if (n.refs === 0) {
      if (n.upper !== null && this.ops) await this.ops.fs.unref(n.upper);
      this.nodes.release(n);
    }
  }

  async statfs(): Promise<StatFs> {
    const top = this.stack[0]!;
    const s = await top.fs.statfs();
    if (this.ops && this.ops.encoding === 'fuse-overlayfs') return { ...s, namemax: Math.max(0, s.namemax - 4) };
    return s;
  }

  async close(): Promise<void> {
    for (const l of this.stack) await l.fs.close();
  }

  // ---- copy-up ----

  private requireWritable(): UpperOps {
    if (!this.ops) throw withErrno('EROFS');
    return this.ops;
  }

  /** After a node gains an upper object: the references it holds move to it. */
  private async adoptUpper(n: Node, upper: InodeId): Promise<void> {
    n.upper = upper;
    this.nodes.rekey(n, layerKey(0, upper));
    if (n.refs > 0) await this.requireWritable().fs.ref(upper);
  }

  /**
   * Renames a finished copy from work/ into its parent, then gives the parent
   * back the times it had (as the kernel does: a copy-up is no change of the
   * directory users see).
   */
  private async installCopy(tmp: Buffer, parentUpper: InodeId, name: Buffer): Promise<void> {
    const ops = this.requireWritable();
    const pst = await ops.fs.getattr(parentUpper);
    await ops.fs.rename(ops.work, tmp, parentUpper, name);
    await ops.fs.setattr(parentUpper, {
      atime: { sec: pst.atime, nsec: pst.atimeNsec },
      mtime: { sec: pst.mtime, nsec: pst.mtimeNsec },
    });
  }

  /**
   * A node forgotten by the table (sweep) may still be in use by a call that
   * fetched it before; another node for the same object may have copied it up
   * since. So copy-up first looks: the object already in the upper at this
   * name is adopted, never copied twice. Lock held, parent in the upper.
   */
  private async alreadyUp(n: Node): Promise<InodeId | null> {
    if (this.nodes.get(n.id) === n) return null;
    const parent = await this.resolved(n.parent!);
    const r = await resolveChild(this.stack, this.hasUpper, parent, n.name);
    if (r.upper === null || r.type !== n.type) return null;
    // Swept nodes hold no references, and the live node owns the key.
    n.upper = r.upper;
    if (n.type === 'd') n.redirect = r.redirect;
    return r.upper;
  }

  /** Copies a directory (not its entries) and its parents up; returns its upper directory. Lock held. */
  private async copyUpDir(n: Node): Promise<InodeId> {
    if (n.upper !== null) return n.upper;
    const ops = this.requireWritable();
    const d = await this.resolved(n);
    if (d.upper !== null) return d.upper;
    const parentUpper = await this.copyUpDir(n.parent!);
    const already = await this.alreadyUp(n);
    if (already !== null) return already;
    const src = d.lower!;
    const st = await this.stack[src.layer]!.fs.getattr(src.id);
    const ino = await this.inoOf(n, st, src.layer);
    const built = await buildCopy(this.stack, ops, src, ino);
    await this.installCopy(built.tmp, parentUpper, n.name);
    await this.adoptUpper(n, built.id);
    // Made empty here; kernel whiteouts are char devices, so no `.wh.` entry ever comes.
    if (ops.encoding === 'kernel') n.whiteoutFree = true;
    this.changed(n.parent!);
    return built.id;
  }

  /** Copies a non-directory up at its current name (parents first). Lock held. */
  private async copyUpFile(n: Node, dataLimit?: number): Promise<InodeId> {
    if (n.upper !== null) return n.upper;
    const ops = this.requireWritable();
    const parentUpper = await this.copyUpDir(n.parent!);
    const already = await this.alreadyUp(n);
    if (already !== null) return already;
    const src = n.lower!;
    const st = await this.stack[src.layer]!.fs.getattr(src.id);
    const ino = await this.inoOf(n, st, src.layer);
    const built = await buildCopy(this.stack, ops, src, ino, dataLimit);
    if (n.dead) {
      // Written after its last name went (an open, unlinked file): the copy lives on, nameless,
      // as long as references hold it.
      await this.adoptUpper(n, built.id);
      if (n.refs === 0) await ops.fs.ref(built.id);
      await ops.fs.unlink(ops.work, built.tmp);
      if (n.refs === 0) await ops.fs.unref(built.id);
      return built.id;
    }
    if (this.useIndex && this.indexDir !== null && st.nlink > 1) {
      // The kernel's index idea: the copy is one inode for every name of the lower inode.
      const idxName = Buffer.from(`${this.stack[src.layer]!.tag}-${src.id}`);
      await ops.fs.link(built.id, this.indexDir, idxName);
      await setInternalXattr(ops.fs, built.id, XATTR_LOWER_LINKS, XATTR_USER_LOWER_LINKS, Buffer.from(String(st.nlink - 1)));
      this.indexed.set(layerKey(src.layer, src.id), built.id);
    }
    await this.installCopy(built.tmp, parentUpper, n.name);
    await this.adoptUpper(n, built.id);
    this.changed(n.parent!);
    return built.id;
  }

  private async lowerLinks(upper: InodeId): Promise<number> {
    const fs = this.stack[0]!.fs;
    for (const x of [XATTR_LOWER_LINKS, XATTR_USER_LOWER_LINKS]) {
      const v = await fs.getxattr(upper, x);
      if (v !== null && /^[0-9]{1,9}$/.test(v.toString('latin1'))) return Number(v.toString('latin1'));
    }
    return 0;
  }

  private async addLowerLinks(upper: InodeId, delta: number): Promise<void> {
    const v = Math.max(0, (await this.lowerLinks(upper)) + delta);
    await setInternalXattr(this.requireWritable().fs, upper, XATTR_LOWER_LINKS, XATTR_USER_LOWER_LINKS, Buffer.from(String(v)));
  }

  /** False where isIndexed(n, upperStat) is false without looking (no await needed). */
  private mayBeIndexed(n: Node, upperStat: Stat): boolean {
    if (n.indexed !== null) return n.indexed;
    return n.lower !== null || upperStat.nlink > 1;
  }

  /**
   * Whether `n`'s upper object is a copy in the hard-link index: known from
   * the copy-up or the index map, else (a name found in the upper after a
   * remount) from the lower-links mark an index copy carries.
   */
  private async isIndexed(n: Node, upperStat?: Stat): Promise<boolean> {
    if (n.indexed !== null) return n.indexed;
    if (n.upper === null || !this.hasUpper) return false;
    if (n.lower !== null && this.indexed.get(layerKey(n.lower.layer, n.lower.id)) === n.upper) n.indexed = true;
    else {
      const st = upperStat ?? (await this.stack[0]!.fs.getattr(n.upper));
      if (st.nlink < 2) return false;
      const names = await this.stack[0]!.fs.listxattr(n.upper);
      n.indexed = names.some((x) => x.equals(XATTR_LOWER_LINKS) || x.equals(XATTR_USER_LOWER_LINKS));
    }
    return n.indexed;
  }

  /**
   * Makes name `name` of `parent` (resolved as `r`, a non-directory) exist in
   * the upper: a copy-up, or for another name of an indexed inode a link to
   * the copy. Lock held.
   */
  private async nameUp(parent: Node, name: Buffer, r: Resolution, n: Node, dataLimit?: number): Promise<void> {
    if (r.upper !== null) return;
    if (n.upper === null) {
      n.parent = parent;
      n.name = Buffer.from(name);
      await this.copyUpFile(n, dataLimit);
      return;
    }
    // An alias of an indexed inode: link the copy in its place and count one lower name less.
    const ops = this.requireWritable();
    const pu = await this.copyUpDir(parent);
    await ops.fs.link(n.upper, pu, name);
    await this.addLowerLinks(n.upper, -1);
    this.changed(parent);
  }

  /**
   * Before a name of a hard-linked lower inode goes (unlink, rename over it):
   * as the kernel with index=on, the inode is copied up to the index and the
   * name linked in the upper, so the names left keep one inode and a right
   * link count. Updates `r.upper`. Lock held.
   */
  private async upBeforeRemoval(p: Node, name: Buffer, r: Resolution, n: Node): Promise<void> {
    if (r.upper !== null || !this.useIndex || r.type === 'd') return;
    if (n.upper === null) {
      const st = await this.stack[n.lower!.layer]!.fs.getattr(n.lower!.id);
      if (st.nlink < 2) return;
    }
    await this.nameUp(p, name, r, n);
    r.upper = (await this.requireWritable().fs.lookup(await this.copyUpDir(p), name)) ?? null;
  }

  // ---- writes ----

  private async writableNode(id: InodeId, dataLimit?: number): Promise<InodeId> {
    const n = this.node(id);
    this.requireWritable();
    if (n.upper !== null) return n.upper;
    return this.lock.exclusive(() => (n.type === 'd' ? this.copyUpDir(n) : this.copyUpFile(n, dataLimit)));
  }

  // The writes below go straight to a node's upper object when it has one (no copy-up to wait for).

  async write(id: InodeId, position: number, data: Buffer): Promise<number> {
    const n = this.node(id);
    if (n.type === 'd') throw withErrno('EISDIR');
    const u = this.ops !== null && n.upper !== null ? n.upper : await this.writableNode(id);
    return this.upperFs().write(u, position, data);
  }

  async truncate(id: InodeId, size: number): Promise<void> {
    const n = this.node(id);
    if (n.type === 'd') throw withErrno('EISDIR');
    const u = this.ops !== null && n.upper !== null ? n.upper : await this.writableNode(id, size);
    await this.upperFs().truncate(u, size);
  }

  async setattr(id: InodeId, attr: SetAttr): Promise<void> {
    const n = this.node(id);
    const u = this.ops !== null && n.upper !== null ? n.upper : await this.writableNode(id);
    const map = this.map;
    let stored = attr;
    if (map && (attr.uid !== undefined || attr.gid !== undefined)) {
      stored = { ...attr };
      if (attr.uid !== undefined) stored.uid = storeUid(map, attr.uid);
      if (attr.gid !== undefined) stored.gid = storeGid(map, attr.gid);
    }
    await this.upperFs().setattr(u, stored);
  }

  async setxattr(id: InodeId, user: Buffer, value: Buffer, flags?: 'create' | 'replace'): Promise<void> {
    const name = this.storedXattr(user, true)!;
    const u = await this.writableNode(id);
    await this.upperFs().setxattr(u, name, value, flags);
  }

  async removexattr(id: InodeId, user: Buffer): Promise<void> {
    const name = this.storedXattr(user, true)!;
    this.requireWritable();
    if ((await this.getxattr(id, user)) === null) throw withErrno('ENODATA');
    const u = await this.writableNode(id);
    await this.upperFs().removexattr(u, name);
  }

  async fsync(id: InodeId, dataOnly: boolean): Promise<void> {
    const n = this.node(id);
    if (n.upper !== null && this.ops) await this.ops.fs.fsync(n.upper, dataOnly);
  }

  async sync(): Promise<void> {
    if (this.ops) await this.ops.fs.sync();
  }

  // ---- namespace ----

  private checkNewName(name: Buffer): void {
    if (name.length > NAME_MAX || (this.ops?.encoding === 'fuse-overlayfs' && name.length > NAME_MAX - 4))
      throw withErrno('ENAMETOOLONG');
    if (isWhiteoutName(name)) throw withErrno('EINVAL', `names starting with ".wh." are reserved by the overlay`);
  }

  /**
   * Creates `name` in `dir` with `make` (called with the directory and name
   * to create in): directly when the name is free in the upper; over a
   * whiteout, built in work/ and put in its place (a directory made opaque
   * first, since a lower layer has the name).
   */
  private async create(
    dir: InodeId,
    name: Buffer,
    type: FileType,
    make: (dir: InodeId, name: Buffer) => Promise<InodeId>,
  ): Promise<InodeId> {
    const ops = this.requireWritable();
    const d = this.dirNode(dir);
    this.checkNewName(name);
    const isDir = type === 'd';
    return this.lock.exclusive(async () => {
      const p = d.lowers !== null ? (d as Resolved) : await this.resolved(d);
      const k = name.toString('latin1');
      // A cached lookup that found nothing and no whiteout is as good as a fresh one (lock held).
      const r = p.children?.get(k) === null ? emptyResolution() : await resolveChild(this.stack, this.hasUpper, p, name);
      if (r.type !== null) throw withErrno('EEXIST');
      const pu = p.upper ?? (await this.copyUpDir(p));
      let id: InodeId;
      if (r.upperWhiteout === 'kernel') {
        const tmp = ops.tmpName();
        id = await make(ops.work, tmp);
        if (isDir) await writeOpaque(ops.fs, id, ops.encoding, ROOT_OWNER);
        await ops.replaceWhiteout(tmp, isDir, pu, name);
      } else if (r.upperWhiteout === 'fuse') {
        if (isDir) {
          const tmp = ops.tmpName();
          id = await make(ops.work, tmp);
          await writeOpaque(ops.fs, id, ops.encoding, ROOT_OWNER);
          await ops.fs.rename(ops.work, tmp, pu, name);
        } else id = await make(pu, name);
        await ops.dropFuseWhiteout(pu, name);
      } else {
        id = await make(pu, name);
      }
      const key = layerKey(0, id);
      const found = this.nodes.byLayerKey(key);
      const node =
        found ??
        this.nodes.create({
          key,
          parent: p,
          name: Buffer.from(name),
          type,
          upper: id,
          lower: null,
          lowers: isDir ? [] : null,
          redirect: null,
          // Made here: no marks, no index copy, and (no lower directories) never a `.wh.` entry.
          indexed: isDir ? null : false,
          made: true,
          whiteoutFree: isDir,
        });
      this.nameChanged(p, k, node.id, isDir ? 1 : 0);
      return node.id;
    });
  }

  /**
   * One name of directory `n` changed and now resolves to `to` (a node id,
   * null or WHITED_OUT): as changed(n, subdirDelta), but the lookups cached
   * for its other names stay (nothing else in `n` moved).
   */
  private nameChanged(n: Node, k: string, to: InodeId | null, subdirDelta: number): void {
    const children = n.children;
    this.changed(n, subdirDelta);
    if (children !== null) {
      children.set(k, to);
      n.children = children;
    }
  }

  private storedOwner(o: { uid: number; gid: number }): { uid: number; gid: number } {
    return { uid: storeUid(this.map, o.uid), gid: storeGid(this.map, o.gid) };
  }

  async mknod(dir: InodeId, name: Buffer, node: NewNode): Promise<InodeId> {
    if ((node.mode & S_IFMT) === 0o040000) throw withErrno('EINVAL', 'mknod of a directory');
    // As the kernel: a char 0/0 would read as a whiteout, so nobody may make one through the overlay.
    if ((node.mode & S_IFMT) === S_IFCHR && (node.rdev ?? 0) === 0) throw withErrno('EPERM', 'char 0/0 is the overlay whiteout');
    const stored = this.map ? { ...node, ...this.storedOwner(node) } : node;
    const type = fileTypeOf(node.mode);
    if (type === null) throw withErrno('EINVAL', `mknod: invalid file type in mode 0${node.mode.toString(8)}`);
    return this.create(dir, name, type, (d, n) => this.upperFs().mknod(d, n, stored));
  }

  async mkdir(dir: InodeId, name: Buffer, node: NewNode): Promise<InodeId> {
    const stored = this.map ? { ...node, ...this.storedOwner(node) } : node;
    return this.create(dir, name, 'd', (d, n) => this.upperFs().mkdir(d, n, stored));
  }

  async symlink(dir: InodeId, name: Buffer, target: Buffer, owner: { uid: number; gid: number }): Promise<InodeId> {
    const stored = this.map ? this.storedOwner(owner) : owner;
    return this.create(dir, name, 'l', (d, n) => this.upperFs().symlink(d, n, target, stored));
  }

  async link(id: InodeId, dir: InodeId, name: Buffer): Promise<void> {
    const ops = this.requireWritable();
    const n = this.node(id);
    if (n.type === 'd') throw withErrno('EPERM', 'hard link to a directory');
    const d = this.dirNode(dir);
    this.checkNewName(name);
    await this.lock.exclusive(async () => {
      const p = await this.resolved(d);
      const r = await resolveChild(this.stack, this.hasUpper, p, name);
      if (r.type !== null) throw withErrno('EEXIST');
      const u = await this.copyUpFile(n);
      const pu = p.upper ?? (await this.copyUpDir(p));
      if (r.upperWhiteout === 'kernel') {
        const tmp = ops.tmpName();
        await ops.fs.link(u, ops.work, tmp);
        await ops.replaceWhiteout(tmp, false, pu, name);
      } else {
        await ops.fs.link(u, pu, name);
        if (r.upperWhiteout === 'fuse') await ops.dropFuseWhiteout(pu, name);
      }
      this.changed(p, 0);
    });
  }

  /** After a name of non-directory `n` went away: forget the node when no name is left. */
  private async afterNameGone(n: Node): Promise<void> {
    if (n.type === 'd') {
      this.nodes.kill(n);
      return;
    }
    try {
      if (n.upper === null) {
        // A lower-only name whited out: the node lives on only for other lower names of its inode.
        const st = await this.stack[n.lower!.layer]!.fs.getattr(n.lower!.id);
        if (st.nlink > 1) return;
      } else {
        const st = await this.getattr(n.id);
        if (st.nlink > 0) return;
      }
    } catch (err) {
      if (!(err instanceof FsError)) throw err;
    }
    this.nodes.kill(n);
  }

  async unlink(dir: InodeId, name: Buffer): Promise<void> {
    const ops = this.requireWritable();
    const d = this.dirNode(dir);
    await this.lock.exclusive(async () => {
      const p = d.lowers !== null ? (d as Resolved) : await this.resolved(d);
      const r = await resolveChild(this.stack, this.hasUpper, p, name);
      if (r.type === null) throw withErrno('ENOENT');
      if (r.type === 'd') throw withErrno('EISDIR');
      const n = this.bind(p, name, r);
      const pu = p.upper ?? (await this.copyUpDir(p));
      await this.upBeforeRemoval(p, name, r, n);
      let whiteout = true;
      if (r.upper !== null) {
        if (await lowerPositive(this.stack, this.hasUpper, p, name)) {
          const tmp = await ops.moveOutWithWhiteout(pu, name);
          await ops.fs.unlink(ops.work, tmp);
        } else {
          await ops.fs.unlink(pu, name);
          whiteout = false;
        }
      } else {
        await writeWhiteout(ops.fs, pu, name, ops.encoding, ROOT_OWNER);
        if (await this.isIndexed(n)) await this.addLowerLinks(n.upper!, -1);
      }
      this.nameChanged(p, name.toString('latin1'), whiteout ? WHITED_OUT : null, 0);
      await this.afterNameGone(n);
    });
  }

  /** Whether merged directory `n` shows no entries (a fresh merge, not the cached listing). */
  private async visiblyEmpty(n: Node): Promise<boolean> {
    const d = await this.resolved(n);
    const dirs: LayerRef[] = [];
    if (d.upper !== null) dirs.push({ layer: 0, id: d.upper });
    dirs.push(...d.lowers);
    return (await mergeListing(this.stack, dirs)).length === 0;
  }

  async rmdir(dir: InodeId, name: Buffer): Promise<void> {
    const ops = this.requireWritable();
    const d = this.dirNode(dir);
    await this.lock.exclusive(async () => {
      const p = d.lowers !== null ? (d as Resolved) : await this.resolved(d);
      const r = await resolveChild(this.stack, this.hasUpper, p, name);
      if (r.type === null) throw withErrno('ENOENT');
      if (r.type !== 'd') throw withErrno('ENOTDIR');
      const n = this.bind(p, name, r);
      if (!(await this.visiblyEmpty(n))) throw withErrno('ENOTEMPTY');
      const pu = p.upper ?? (await this.copyUpDir(p));
      const lowerHas = r.lowers.length > 0 || (await lowerPositive(this.stack, this.hasUpper, p, name));
      if (r.upper !== null) {
        // Out of the namespace in one step (with its whiteout), then emptied of markers in work/.
        const tmp = lowerHas ? await ops.moveOutWithWhiteout(pu, name) : await ops.moveOut(pu, name);
        await ops.removeTree(ops.work, tmp);
      } else {
        await writeWhiteout(ops.fs, pu, name, ops.encoding, ROOT_OWNER);
      }
      this.nameChanged(p, name.toString('latin1'), lowerHas ? WHITED_OUT : null, -1);
      this.nodes.kill(n);
    });
  }

  /** The path (from the layer roots) where directory `n`'s lower directories are found, for an absolute redirect. */
  private lowerPathOf(n: Node): Buffer[] {
    const comps: Buffer[] = [];
    let cur: Node | null = n;
    while (cur !== null && cur.parent !== null) {
      if (cur.redirect !== null) {
        if (cur.redirect[0] === 0x2f) {
          comps.unshift(...redirectComponents(cur.redirect));
          return comps;
        }
        comps.unshift(cur.redirect);
      } else comps.unshift(cur.name);
      cur = cur.parent;
    }
    return comps;
  }

  /**
   * Before directory `n` (already in the upper) moves to `newParent`/`newName`:
   * a directory with lower directories gets a redirect (relative within one
   * parent, absolute otherwise; one it already has stays valid when relative
   * and in the same parent, or absolute); a pure upper directory landing where
   * a lower layer has the name becomes opaque.
   */
  private async markMovedDir(n: Node, newParent: Node, targetLowerPositive: boolean): Promise<void> {
    const ops = this.requireWritable();
    let d = await this.resolved(n);
    if (d.lowers.length > 0 && !this.redirectDir) {
      await this.copyUpTree(d);
      d = await this.resolved(n);
    }
    if (d.lowers.length > 0) {
      const samedir = n.parent === newParent;
      let redirect: Buffer;
      if (d.redirect !== null && (d.redirect[0] === 0x2f || samedir)) redirect = d.redirect;
      else if (samedir) redirect = Buffer.from(n.name);
      else redirect = encodeAbsoluteRedirect(this.lowerPathOf(n));
      if (d.redirect === null || !d.redirect.equals(redirect)) {
        if (ops.encoding === 'kernel') await ops.fs.setxattr(n.upper!, XATTR_REDIRECT, redirect);
        else await setInternalXattr(ops.fs, n.upper!, XATTR_REDIRECT, XATTR_USER_REDIRECT, redirect);
        n.redirect = redirect;
      }
    } else if (targetLowerPositive) {
      const marks = await readDirMarks(ops.fs, n.upper!);
      if (!marks.opaque) await writeOpaque(ops.fs, n.upper!, ops.encoding, ROOT_OWNER);
    }
  }

  /**
   * redirect_dir=off: copies everything under directory `n` up, then makes
   * each copied directory opaque, so nothing below is merged any more.
   * Lock held.
   */
  private async copyUpTree(n: Node): Promise<void> {
    const ops = this.requireWritable();
    const d = await this.resolved(n);
    const upper = await this.copyUpDir(d);
    const dirs: LayerRef[] = [{ layer: 0, id: upper }, ...d.lowers];
    for (const m of await mergeListing(this.stack, dirs)) {
      const child = this.bindEntry(d, m.layer, m.entry);
      if (child.type === 'd') await this.copyUpTree(child);
      else if (m.layer !== 0 || !this.hasUpper) {
        // A name still only below: copied up, or linked to its inode's index copy.
        const r = emptyResolution();
        r.type = child.type;
        await this.nameUp(d, m.entry.name, r, child);
      }
    }
    if (d.lowers.length > 0) {
      await writeOpaque(ops.fs, upper, ops.encoding, ROOT_OWNER);
      await ops.dropWhiteouts(upper);
      d.lowers = [];
      d.lower = null;
      this.changed(d);
    }
  }

  async rename(oldDir: InodeId, oldName: Buffer, newDir: InodeId, newName: Buffer, flags: RenameFlags = {}): Promise<void> {
    if (flags.whiteout) throw withErrno('EINVAL', 'RENAME_WHITEOUT through the overlay');
    if (flags.exchange && flags.noreplace) throw withErrno('EINVAL');
    const ops = this.requireWritable();
    const od = this.dirNode(oldDir);
    const nd = this.dirNode(newDir);
    this.checkNewName(newName);
    await this.lock.exclusive(async () => {
      const op = await this.resolved(od);
      const np = await this.resolved(nd);
      const rs = await resolveChild(this.stack, this.hasUpper, op, oldName);
      if (rs.type === null) throw withErrno('ENOENT');
      const rt = await resolveChild(this.stack, this.hasUpper, np, newName);
      if (flags.noreplace && rt.type !== null) throw withErrno('EEXIST');
      if (flags.exchange && rt.type === null) throw withErrno('ENOENT');
      const src = this.bind(op, oldName, rs);
      const dst = rt.type !== null ? this.bind(np, newName, rt) : null;
      if (op === np && oldName.equals(newName)) return;
      if (dst === src && !flags.exchange) return; // two names of one inode: POSIX says do nothing
      const isAncestor = (a: Node, of: Node): boolean => {
        for (let c: Node | null = of; c !== null; c = c.parent) if (c === a) return true;
        return false;
      };
      if (rs.type === 'd' && isAncestor(src, np)) throw withErrno('EINVAL', 'a directory cannot move under itself');
      if (flags.exchange && rt.type === 'd' && isAncestor(dst!, op))
        throw withErrno('EINVAL', 'a directory cannot move under itself');
      if (!flags.exchange && rt.type !== null) {
        if (rs.type === 'd' && rt.type !== 'd') throw withErrno('ENOTDIR');
        if (rs.type !== 'd' && rt.type === 'd') throw withErrno('EISDIR');
        if (rt.type === 'd' && !(await this.visiblyEmpty(dst!))) throw withErrno('ENOTEMPTY');
      }
      const opu = await this.copyUpDir(op);
      const npu = await this.copyUpDir(np);
      // Both ends in the upper (a directory without its entries).
      if (isDirType(rs.type)) await this.copyUpDir(src);
      else await this.nameUp(op, oldName, rs, src);
      if (flags.exchange) {
        if (isDirType(rt.type)) await this.copyUpDir(dst!);
        else await this.nameUp(np, newName, rt, dst!);
        if (isDirType(rs.type)) await this.markMovedDir(src, np, await lowerPositive(this.stack, this.hasUpper, np, newName));
        if (isDirType(rt.type)) await this.markMovedDir(dst!, op, await lowerPositive(this.stack, this.hasUpper, op, oldName));
        await ops.exchange(opu, oldName, npu, newName);
        src.parent = np;
        src.name = Buffer.from(newName);
        dst!.parent = op;
        dst!.name = Buffer.from(oldName);
        this.changed(op);
        this.changed(np);
        return;
      }
      if (dst && rt.type !== 'd') await this.upBeforeRemoval(np, newName, rt, dst);
      const srcLower = await lowerPositive(this.stack, this.hasUpper, op, oldName);
      const dstLower = await lowerPositive(this.stack, this.hasUpper, np, newName);
      if (isDirType(rs.type)) await this.markMovedDir(src, np, dstLower);
      // Clear the target in the upper where a plain rename cannot replace it.
      if (rt.type === 'd' && rt.upper !== null) {
        const tmp = await ops.moveOut(npu, newName);
        await ops.removeTree(ops.work, tmp);
      } else if (rt.upperWhiteout === 'kernel' && isDirType(rs.type)) {
        await ops.fs.unlink(npu, newName);
      }
      if (srcLower) await ops.renameWithWhiteout(opu, oldName, npu, newName);
      else await ops.fs.rename(opu, oldName, npu, newName);
      if (rt.upperWhiteout === 'fuse') await ops.dropFuseWhiteout(npu, newName);
      src.parent = np;
      src.name = Buffer.from(newName);
      this.changed(op);
      this.changed(np);
      if (dst) await this.afterNameGone(dst);
    });
  }
}

/** Opens an Overlay over `lowers` (top first) and an optional upper. */
export function openOverlay(options: OverlayOptions): Promise<Overlay> {
  return Overlay.open(options);
}
