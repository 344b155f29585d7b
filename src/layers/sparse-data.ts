/**
 * A regular file's bytes in memory, as tmpfs keeps them: fixed-size pages
 * allocated only where something was written, so holes cost nothing and
 * SEEK_DATA/SEEK_HOLE ranges fall out of the page map.
 *
 * Invariants: no page lies wholly at or beyond `size`; the bytes of the last
 * page past `size` are zero (so growing the file again reads zeros there).
 * Space is the caller's: `write` asks `reserve(pages)` before adding pages
 * and stops where the answer runs out (a short write, as on a full disk).
 */
import type { DataRange } from '../engine.js';

/** Page size: the unit of allocation and of the byte cap's accounting. */
export const PAGE = 4096;

export class SparseData {
  size = 0;
  private readonly pages = new Map<number, Buffer>();

  /** Pages allocated (each PAGE bytes of the cap). */
  get pageCount(): number {
    return this.pages.size;
  }

  /** Up to `length` bytes at `position`, short only at end of file; a fresh Buffer. */
  read(position: number, length: number): Buffer {
    const end = Math.min(this.size, position + length);
    if (end <= position) return Buffer.alloc(0);
    const out = Buffer.alloc(end - position);
    for (let p = Math.floor(position / PAGE); p * PAGE < end; p++) {
      const page = this.pages.get(p);
      if (!page) continue;
      const from = Math.max(position, p * PAGE);
      const to = Math.min(end, (p + 1) * PAGE);
      page.copy(out, from - position, from - p * PAGE, to - p * PAGE);
    }
    return out;
  }

  /**
   * Writes `data` at `position`, page by page in order; a page not yet
   * allocated is taken only if `reserve(1)` says yes. Returns the bytes
   * written: all of them, or fewer when space ran out (then the file holds
   * exactly that prefix of the write).
   */
  write(position: number, data: Buffer, reserve: (pages: number) => boolean): number {
    const end = position + data.length;
    let written = 0;
    for (let p = Math.floor(position / PAGE); p * PAGE < end; p++) {
      let page = this.pages.get(p);
      if (!page) {
        if (!reserve(1)) break;
        page = Buffer.alloc(PAGE);
        this.pages.set(p, page);
      }
      const from = Math.max(position, p * PAGE);
      const to = Math.min(end, (p + 1) * PAGE);
      data.copy(page, from - p * PAGE, from - position, to - position);
      written = to - position;
    }
    if (written > 0 && position + written > this.size) this.size = position + written;
    return written;
  }

  /** Sets the size; returns the number of pages freed (shrinking), zeroing the tail of the new last page. */
  truncate(size: number): number {
    let freed = 0;
    if (size < this.size) {
      const keep = Math.ceil(size / PAGE);
      for (const p of [...this.pages.keys()]) {
        if (p >= keep) {
          this.pages.delete(p);
          freed++;
        }
      }
      const tail = size % PAGE;
      if (tail !== 0) this.pages.get(Math.floor(size / PAGE))?.fill(0, tail);
    }
    this.size = size;
    return freed;
  }

  /** Where the file holds pages, merged, sorted, clipped to its size. */
  ranges(): DataRange[] {
    const indices = [...this.pages.keys()].sort((a, b) => a - b);
    const out: DataRange[] = [];
    for (const p of indices) {
      const offset = p * PAGE;
      const length = Math.min(PAGE, this.size - offset);
      if (length <= 0) continue;
      const last = out[out.length - 1];
      if (last && last.offset + last.length === offset) last.length += length;
      else out.push({ offset, length });
    }
    return out;
  }
}
