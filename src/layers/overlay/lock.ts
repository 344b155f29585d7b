/**
 * The Overlay's one namespace lock. Every sequence that spans several layer
 * calls and must look atomic to other overlay callers (copy-up, whiteout
 * after a removal, rename with its redirect, lookup + node binding) runs
 * inside `exclusive`; reads of data and attributes of already-bound nodes run
 * beside it (each layer engine keeps its own single calls atomic).
 *
 * A FIFO of waiters: no starvation, no re-entrancy (callers already inside
 * pass `locked` down instead of locking again).
 */
export class NamespaceLock {
  private tail: Promise<void> = Promise.resolve();
  private held = false;
  /** Calls of `exclusive` not finished yet (running or waiting). */
  private pending = 0;

  get isHeld(): boolean {
    return this.held;
  }

  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      this.held = true;
      try {
        return await fn();
      } finally {
        this.held = false;
        this.pending--;
      }
    };
    // Free (nobody running or waiting): start now rather than a turn later; later callers queue behind it.
    const result = this.pending++ === 0 ? run() : this.tail.then(run, run);
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}
