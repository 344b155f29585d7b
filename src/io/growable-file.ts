/**
 * A whole host file (or Buffer) that can grow and shrink: where a SIF's bytes
 * live while SifImage reads and edits it. Unlike a
 * FileRegion, a SIF file grows when an object is added and is cut back when
 * a failed add must leave the file as it was, so it needs write-anywhere,
 * truncate and size. Two backings: a host file (the CLI, the mount) and a
 * Buffer (fuzzing and tests, no I/O).
 */
import * as fs from 'node:fs';
import { UsageError } from '../errors.js';

export interface SifStorage {
  readonly name: string;
  readonly writable: boolean;
  size(): Promise<number>;
  /** Up to `length` bytes at `position`; shorter only at end of file. */
  read(position: number, length: number): Promise<Buffer>;
  write(position: number, data: Uint8Array): Promise<void>;
  truncate(size: number): Promise<void>;
  sync(): Promise<void>;
  close(): Promise<void>;
}

function promisify<T>(f: (cb: (err: NodeJS.ErrnoException | null, v: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => f((err, v) => (err ? reject(err) : resolve(v))));
}

/** A host file opened read-only or read-write. */
export class HostFileStorage implements SifStorage {
  readonly name: string;
  readonly writable: boolean;
  private fd: number;

  private constructor(name: string, fd: number, writable: boolean) {
    this.name = name;
    this.fd = fd;
    this.writable = writable;
  }

  static async open(path: string, writable: boolean): Promise<HostFileStorage> {
    const fd = await promisify<number>((cb) => fs.open(path, writable ? 'r+' : 'r', cb));
    const st = await promisify<fs.Stats>((cb) => fs.fstat(fd, cb));
    if (!st.isFile()) {
      fs.closeSync(fd);
      throw new UsageError('not a regular file', path);
    }
    return new HostFileStorage(path, fd, writable);
  }

  /** Creates (or truncates) a file with mode 0755, as siftool new does. */
  static async create(path: string): Promise<HostFileStorage> {
    const fd = await promisify<number>((cb) => fs.open(path, 'w+', 0o755, cb));
    return new HostFileStorage(path, fd, true);
  }

  async size(): Promise<number> {
    return (await promisify<fs.Stats>((cb) => fs.fstat(this.fd, cb))).size;
  }

  async read(position: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const n = await promisify<number>((cb) => fs.read(this.fd, buf, done, length - done, position + done, cb));
      if (n === 0) break;
      done += n;
    }
    return done === length ? buf : buf.subarray(0, done);
  }

  async write(position: number, data: Uint8Array): Promise<void> {
    if (!this.writable) throw new UsageError('opened read-only', this.name);
    let done = 0;
    while (done < data.length) {
      done += await promisify<number>((cb) => fs.write(this.fd, data, done, data.length - done, position + done, cb));
    }
  }

  truncate(size: number): Promise<void> {
    return promisify<void>((cb) => fs.ftruncate(this.fd, size, (err) => cb(err, undefined)));
  }

  sync(): Promise<void> {
    return promisify<void>((cb) => fs.fdatasync(this.fd, (err) => cb(err, undefined)));
  }

  close(): Promise<void> {
    const fd = this.fd;
    if (fd < 0) return Promise.resolve();
    this.fd = -1;
    return promisify<void>((cb) => fs.close(fd, (err) => cb(err, undefined)));
  }
}

/** A SIF held in memory; `bytes` is the current content after edits. */
export class MemoryStorage implements SifStorage {
  readonly name: string;
  readonly writable: boolean;
  bytes: Buffer;

  constructor(bytes: Buffer, options: { name?: string; writable?: boolean } = {}) {
    this.bytes = bytes;
    this.name = options.name ?? '<memory>';
    this.writable = options.writable ?? true;
  }

  async size(): Promise<number> {
    return this.bytes.length;
  }

  async read(position: number, length: number): Promise<Buffer> {
    const end = Math.min(this.bytes.length, position + length);
    return Buffer.from(this.bytes.subarray(Math.min(position, end), end));
  }

  async write(position: number, data: Uint8Array): Promise<void> {
    if (!this.writable) throw new UsageError('opened read-only', this.name);
    const end = position + data.length;
    if (end > this.bytes.length) {
      const grown = Buffer.alloc(end);
      this.bytes.copy(grown);
      this.bytes = grown;
    }
    this.bytes.set(data, position);
  }

  async truncate(size: number): Promise<void> {
    const next = Buffer.alloc(size);
    this.bytes.copy(next, 0, 0, Math.min(size, this.bytes.length));
    this.bytes = next;
  }

  async sync(): Promise<void> {}

  async close(): Promise<void> {}
}

const CHUNK = 8 << 20;

/**
 * The first `limit` bytes of a host file in 8 MiB chunks (objects added from
 * files are never held whole). The limit is the size checked before the add,
 * so a file that grows meanwhile (even the SIF itself) cannot run on.
 */
export async function* readFileChunks(path: string, limit: number): AsyncGenerator<Buffer> {
  const fd = await promisify<number>((cb) => fs.open(path, 'r', cb));
  try {
    const st = await promisify<fs.Stats>((cb) => fs.fstat(fd, cb));
    if (st.isDirectory()) throw new UsageError('is a directory', path);
    for (let done = 0; done < limit;) {
      const want = Math.min(CHUNK, limit - done);
      const buf = Buffer.allocUnsafe(want);
      const n = await promisify<number>((cb) => fs.read(fd, buf, 0, want, done, cb));
      if (n === 0) return;
      done += n;
      yield buf.subarray(0, n);
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** Removes a file this process created (a `create` that failed half-way). */
export function removeCreatedFile(path: string): Promise<void> {
  return new Promise((resolve) => fs.unlink(path, () => resolve()));
}

/** Size of a host file, to check an object before any byte is written. */
export async function hostFileSize(path: string): Promise<number> {
  const st = await promisify<fs.Stats>((cb) => fs.stat(path, cb));
  if (st.isDirectory()) throw new UsageError('is a directory', path);
  return st.size;
}
