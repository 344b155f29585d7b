/**
 * Readers never see a namespace change half done (the contract's atomicity
 * rule): lookup and readdir run `shared`, the namespace mutations (create,
 * link, unlink, rmdir, rename) `exclusive`, like the kernel's i_rwsem on the
 * directories involved, here one lock for the whole tree (the mutations are
 * serial on the writer queue anyway).
 *
 * Fairness: a reader arriving while a mutation runs or waits queues behind
 * it, so mutations are never starved; the readers it held back all start
 * together when it ends. Readers issued in one tick therefore observe one
 * state of the tree.
 */
export class NamespaceLock {
  private readers = 0;
  private writer = false;
  private readonly waitingReaders: (() => void)[] = [];
  private readonly waitingWriters: (() => void)[] = [];

  async shared<T>(fn: () => Promise<T>): Promise<T> {
    if (this.writer || this.waitingWriters.length > 0) {
      // The releasing writer counts us in (readers++) before we resume.
      await new Promise<void>((resolve) => this.waitingReaders.push(resolve));
    } else {
      this.readers++;
    }
    try {
      return await fn();
    } finally {
      this.readers--;
      if (this.readers === 0) this.handOff(false);
    }
  }

  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (this.writer || this.readers > 0) {
      // Whoever releases last sets writer for us before we resume.
      await new Promise<void>((resolve) => this.waitingWriters.push(resolve));
    } else {
      this.writer = true;
    }
    try {
      return await fn();
    } finally {
      this.writer = false;
      this.handOff(true);
    }
  }

  /**
   * Nobody holds the lock: after a writer the readers it held back go first,
   * after the last reader the next writer (so neither side starves).
   */
  private handOff(afterWriter: boolean): void {
    if (this.writer || this.readers > 0) return;
    if (!afterWriter && this.wakeWriter()) return;
    if (this.waitingReaders.length > 0) {
      const woken = this.waitingReaders.splice(0);
      this.readers += woken.length;
      for (const wake of woken) wake();
      return;
    }
    this.wakeWriter();
  }

  private wakeWriter(): boolean {
    const next = this.waitingWriters.shift();
    if (!next) return false;
    this.writer = true;
    next();
    return true;
  }
}
