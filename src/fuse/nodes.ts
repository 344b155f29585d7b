/**
 * The FUSE node table: kernel nodeids mapped to engine InodeIds, with the
 * kernel's lookup count on each (FUSE protocol: every entry reply adds one,
 * FORGET/BATCH_FORGET subtract). Nodeid 1 is the root and is never dropped.
 *
 * Each other node holds one engine reference (`ref`) from the first lookup
 * until its count reaches zero, so an unlinked file stays readable while the
 * kernel still knows it. One InodeId has one nodeid, so hard links share a
 * kernel inode (and its attributes).
 */
import type { InodeId, ReadableFs } from '../engine.js';
import { FsError } from '../errors.js';

export const ROOT_NODEID = 1;

interface Node {
  id: InodeId;
  lookups: number;
}

export class NodeTable {
  private readonly byNodeid = new Map<number, Node>();
  private readonly byId = new Map<InodeId, number>();
  private next = ROOT_NODEID + 1;

  constructor(
    private readonly fs: ReadableFs,
    private readonly onUnrefError: (err: unknown) => void,
  ) {
    this.byNodeid.set(ROOT_NODEID, { id: fs.rootId, lookups: 1 });
    this.byId.set(fs.rootId, ROOT_NODEID);
  }

  /** The InodeId of a nodeid the kernel holds; ESTALE if it holds none by that number. */
  id(nodeid: number): InodeId {
    const n = this.byNodeid.get(nodeid);
    if (!n) throw new FsError('ESTALE', `nodeid ${nodeid}`);
    return n.id;
  }

  get size(): number {
    return this.byNodeid.size;
  }

  /** Adds one lookup to `id`'s node if it has one and returns its nodeid; 0 (nothing taken) if not. */
  acquireKnown(id: InodeId): number {
    const known = this.byId.get(id);
    if (known === undefined) return 0;
    this.byNodeid.get(known)!.lookups++;
    return known;
  }

  /**
   * acquireKnown, and for an engine whose references are free
   * (ReadableFs.refsFree) also a new node, made without awaiting: the
   * nodeid, or 0 when only acquire can take it.
   */
  acquireNow(id: InodeId): number {
    const known = this.acquireKnown(id);
    if (known !== 0 || !this.fs.refsFree) return known;
    return this.add(id);
  }

  /**
   * Adds one lookup to `id`'s node, creating it (and taking its engine
   * reference) on the first. Call it right before replying with the entry.
   */
  async acquire(id: InodeId): Promise<number> {
    const known = this.byId.get(id);
    if (known !== undefined) {
      this.byNodeid.get(known)!.lookups++;
      return known;
    }
    await this.fs.ref(id);
    const raced = this.byId.get(id);
    if (raced !== undefined) {
      // Another lookup made the node while we waited: it holds the reference.
      this.byNodeid.get(raced)!.lookups++;
      this.drop(id, 1);
      return raced;
    }
    return this.add(id);
  }

  /** A new node for `id` (its engine reference taken) with one lookup. */
  private add(id: InodeId): number {
    const nodeid = this.next++;
    this.byNodeid.set(nodeid, { id, lookups: 1 });
    this.byId.set(id, nodeid);
    return nodeid;
  }

  /** Removes `n` lookups (FORGET, or an acquired entry the reply did not carry). */
  forget(nodeid: number, n: number): void {
    if (nodeid === ROOT_NODEID) return;
    const node = this.byNodeid.get(nodeid);
    if (!node) return;
    node.lookups -= n;
    if (node.lookups > 0) return;
    this.byNodeid.delete(nodeid);
    this.byId.delete(node.id);
    this.drop(node.id, 1);
  }

  private drop(id: InodeId, n: number): void {
    this.fs.unref(id, n).catch(this.onUnrefError);
  }
}
