/**
 * The Overlay's node table: its own InodeIds (a counter), one node per merged
 * object. A node's identity key is the layer object that is topmost for it
 * (`tag:layerId`, tag = the stack index); copy-up re-keys the node to its new
 * upper object, and the hard-link index maps further lower names of an
 * indexed inode to the same upper key, so every path to one object finds one
 * node.
 */
import type { FileType, InodeId } from '../../engine.js';

/** A directory or object in one layer: `layer` indexes the Overlay's stack. */
export interface LayerRef {
  layer: number;
  id: InodeId;
}

export interface Node {
  readonly id: InodeId;
  key: string;
  /** The name it was last reached by (directories have exactly one). */
  parent: Node | null;
  name: Buffer;
  type: FileType;
  /** The object in the upper layer, once there. */
  upper: InodeId | null;
  /** Non-directories: the lower object while not copied up. Directories: unused. */
  lower: LayerRef | null;
  /** Directories: the merged lower directories, top first (null until resolved). */
  lowers: LayerRef[] | null;
  /** Upper directory's redirect (as read or written), for absolute redirects of descendants. */
  redirect: Buffer | null;
  /** Non-directories: the upper object is a hard-link index copy (null: not known yet). */
  indexed: boolean | null;
  /** Cached st_ino. */
  ino: number | null;
  /** References held by overlay callers (ref/unref). */
  refs: number;
  /** No name leads here any more; freed when refs reach 0. */
  dead: boolean;
  /** The merged listing, until this directory changes. */
  listing: readonly import('../../engine.js').DirEntry[] | null;
  /**
   * Lookup results (name -> node id; null: nothing visible and no whiteout
   * in the upper directory; WHITED_OUT: nothing visible, a whiteout in the
   * upper), until this directory changes.
   */
  children: Map<string, InodeId | null> | null;
  /** Directories: visible subdirectories (st_nlink - 2), until one is added or removed. */
  subdirs: number | null;
  /** Directories: counts the changes that clear `subdirs` (a count read across one is not kept). */
  dirGen: number;
  /**
   * Directories: the upper directory holds no `.wh.NAME` whiteout (its
   * `.wh..wh..opq` opaque marker aside, which names nothing a lookup can ask
   * for), so a lookup there needs no probe for one. True for a directory this overlay made
   * with no lower directories (it never gets any: a `.wh.` whiteout is only
   * written where a lower layer has the name) and for one it made or copied
   * up in an upper with kernel whiteouts (char 0/0, never `.wh.` names).
   */
  whiteoutFree: boolean;
  /** The upper object was made by this overlay (not a copy-up): it carries no st_ino mark. */
  made: boolean;
}

/** A `children` value: nothing visible at the name, and a whiteout in the upper directory hides what is below. */
export const WHITED_OUT = 0;

export function layerKey(layer: number, id: InodeId): string {
  return `${layer}:${id}`;
}

export class NodeTable {
  private next = 1;
  private readonly byId = new Map<InodeId, Node>();
  private readonly byKey = new Map<string, Node>();

  get size(): number {
    return this.byId.size;
  }

  create(
    fields: Omit<
      Node,
      'id' | 'refs' | 'dead' | 'listing' | 'children' | 'ino' | 'indexed' | 'subdirs' | 'dirGen' | 'whiteoutFree' | 'made'
    > & {
      ino?: number | null;
      indexed?: boolean | null;
      whiteoutFree?: boolean;
      made?: boolean;
    },
  ): Node {
    // Every field written out, in one order: one hidden class for all nodes
    // (a spread of `fields` then ten more keys cost ~10 us a node, cold, on
    // a writable mount's first listing of a directory).
    const node: Node = {
      id: this.next++,
      key: fields.key,
      parent: fields.parent,
      name: fields.name,
      type: fields.type,
      upper: fields.upper,
      lower: fields.lower,
      lowers: fields.lowers,
      redirect: fields.redirect,
      indexed: fields.indexed ?? null,
      ino: fields.ino ?? null,
      refs: 0,
      dead: false,
      listing: null,
      children: null,
      subdirs: null,
      dirGen: 0,
      whiteoutFree: fields.whiteoutFree ?? false,
      made: fields.made ?? false,
    };
    this.byId.set(node.id, node);
    this.byKey.set(node.key, node);
    return node;
  }

  get(id: InodeId): Node | undefined {
    return this.byId.get(id);
  }

  byLayerKey(key: string): Node | undefined {
    return this.byKey.get(key);
  }

  rekey(node: Node, key: string): void {
    if (this.byKey.get(node.key) === node) this.byKey.delete(node.key);
    node.key = key;
    this.byKey.set(key, node);
  }

  /** No name reaches `node` any more: it can no longer be found by key; freed once unreferenced. */
  kill(node: Node): void {
    node.dead = true;
    if (this.byKey.get(node.key) === node) this.byKey.delete(node.key);
  }

  /**
   * Forgets unreferenced nodes once the table holds more than `limit`: every
   * node with references stays, with its ancestors (copy-up walks them) and
   * `keep` (the root, the directory in use); cached listings are dropped (they name node ids).
   * Returns how many nodes went.
   */
  sweep(limit: number, ...keep: Node[]): number {
    if (this.byId.size <= limit) return 0;
    const needed = new Set<Node>();
    for (const k of keep) for (let c: Node | null = k; c !== null && !needed.has(c); c = c.parent) needed.add(c);
    for (const n of this.byId.values()) {
      if (n.refs === 0) continue;
      for (let c: Node | null = n; c !== null && !needed.has(c); c = c.parent) needed.add(c);
    }
    let dropped = 0;
    for (const n of [...this.byId.values()]) {
      n.listing = null;
      n.children = null;
      if (needed.has(n)) continue;
      this.byId.delete(n.id);
      if (this.byKey.get(n.key) === n) this.byKey.delete(n.key);
      dropped++;
    }
    return dropped;
  }

  /** The last reference to a dead node went: its id is no longer valid. */
  release(node: Node): void {
    if (node.dead && node.refs === 0) this.byId.delete(node.id);
  }
}
