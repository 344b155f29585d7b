import { LRUCache } from 'lru-cache';

/**
 * A byte-bounded cache of decoded blocks keyed by their position in the image.
 *
 * Policy: least-recently-used eviction once the decoded bytes held pass
 * `maxBytes` (each entry counts its length plus a fixed overhead for its key
 * and the LRU's bookkeeping, about 100 bytes in lru-cache 11, so many tiny
 * entries cannot exceed the budget either). A block being loaded is held in
 * `inflight` until it settles, so concurrent requests for the same block share
 * one read and one decompression; a failed load is not cached, and the next
 * request retries (the error is the image's, and will recur, but a transient
 * I/O error should not stick).
 *
 * A hit returns the stored value without I/O or decompression; `peek` offers it
 * synchronously so hot paths can skip a promise.
 */
export class BlockCache<V extends { length: number }> {
  private readonly lru: LRUCache<number, V>;
  private readonly inflight = new Map<number, Promise<V>>();
  hits = 0;
  misses = 0;

  constructor(maxBytes: number, overhead = 128) {
    this.lru = new LRUCache<number, V>({
      maxSize: Math.max(1, maxBytes),
      sizeCalculation: (v) => v.length + overhead,
    });
  }

  peek(key: number): V | undefined {
    const v = this.lru.get(key);
    if (v !== undefined) this.hits++;
    return v;
  }

  has(key: number): boolean {
    return this.lru.has(key) || this.inflight.has(key);
  }

  get(key: number, load: () => Promise<V>): Promise<V> {
    const v = this.lru.get(key);
    if (v !== undefined) {
      this.hits++;
      return Promise.resolve(v);
    }
    const pending = this.inflight.get(key);
    if (pending) {
      this.hits++;
      return pending;
    }
    this.misses++;
    const p = load().then(
      (value) => {
        this.inflight.delete(key);
        this.lru.set(key, value);
        return value;
      },
      (err: unknown) => {
        this.inflight.delete(key);
        throw err;
      },
    );
    this.inflight.set(key, p);
    return p;
  }

  /** Drops a settled entry (a load in flight is unaffected). */
  delete(key: number): void {
    this.lru.delete(key);
  }

  /** Stores a value decoded without a load (a synchronous fast path). */
  set(key: number, value: V): void {
    this.lru.set(key, value);
  }

  clear(): void {
    this.lru.clear();
  }

  get size(): number {
    return this.lru.size;
  }

  get bytes(): number {
    return this.lru.calculatedSize;
  }
}
