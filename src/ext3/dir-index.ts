/**
 * The in-memory index of one directory, built once from its blocks (linear
 * or htree, read linearly: dx_root parses as "." + ".." and dx_node blocks as
 * one unused record) and kept in step with every change, so lookup, insert
 * and remove cost O(log n) instead of a scan of the directory:
 *
 * - `entries`: name (latin1 key: a bijection of the bytes) -> where its
 *   record lives (logical block, offset) and what it points to;
 * - a max-tree over the logical blocks of the largest record each could take,
 *   so an insert finds the first block with room without scanning.
 *
 * - `listing`: the entries in block order as readdir hands them out, one
 *   immutable array per directory state (no copy per call).
 *
 * The on-disk blocks (in the engine's block cache) stay the source of truth;
 * the index can be dropped any time and rebuilt.
 */
import type { DirEntry } from '../engine.js';

export interface DirSlot {
  ino: number;
  ft: number;
  lblk: number;
  off: number;
}

/** Max segment tree: first index whose value is >= need. */
export class MaxTree {
  private cap = 1;
  private tree = new Int32Array(2);
  length = 0;

  private grow(n: number): void {
    if (n <= this.cap) return;
    let cap = this.cap;
    while (cap < n) cap *= 2;
    const old = this.tree;
    const oldCap = this.cap;
    this.cap = cap;
    this.tree = new Int32Array(2 * cap);
    for (let i = 0; i < oldCap; i++) this.tree[cap + i] = old[oldCap + i]!;
    for (let i = cap - 1; i >= 1; i--) this.tree[i] = Math.max(this.tree[2 * i]!, this.tree[2 * i + 1]!);
  }

  set(i: number, v: number): void {
    if (i >= this.length) {
      this.grow(i + 1);
      this.length = i + 1;
    }
    let p = this.cap + i;
    this.tree[p] = v;
    for (p >>= 1; p >= 1; p >>= 1) this.tree[p] = Math.max(this.tree[2 * p]!, this.tree[2 * p + 1]!);
  }

  get(i: number): number {
    return i < this.length ? this.tree[this.cap + i]! : 0;
  }

  findFirst(need: number): number {
    if (this.length === 0 || this.tree[1]! < need) return -1;
    let p = 1;
    while (p < this.cap) p = this.tree[2 * p]! >= need ? 2 * p : 2 * p + 1;
    const i = p - this.cap;
    return i < this.length ? i : -1;
  }
}

export class DirIndex {
  readonly entries = new Map<string, DirSlot>();
  /** readdir's frozen snapshot, built on demand; every edit drops it (changed()). */
  listing: readonly DirEntry[] | null = null;
  /** Bumped by every edit, so a snapshot built across one is not kept. */
  version = 0;
  readonly free = new MaxTree();
  /** Physical block of each logical block (0 for a hole, which is never used). */
  readonly pblocks: number[] = [];
  constructor(readonly ino: number) {}

  changed(): void {
    this.listing = null;
    this.version++;
  }
}

export function nameKey(name: Buffer): string {
  return name.toString('latin1');
}
