import * as fs from 'node:fs';
import { CorruptError, UsageError } from '../errors.js';
import { BLOCK_CODEC, blockAddon } from '../native/block.js';
import { checkRange, type BlockCodec, type ByteStore } from './byte-source.js';

/** The most bytes one sifuse_block job reads (block.c MAX_LENGTH). */
const JOB_MAX = 16 << 20;

export interface FileRegionOptions {
  /** Start of the region in the file (a SIF partition's offset). Default 0. */
  offset?: number;
  /** Length of the region; default: from offset to the end of the file. */
  length?: number;
  writable?: boolean;
}

function readAt(fd: number, buf: Buffer, off: number, len: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.read(fd, buf, off, len, pos, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

function writeAt(fd: number, buf: Uint8Array, off: number, len: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.write(fd, buf, off, len, pos, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

function writevAt(fd: number, parts: readonly Uint8Array[], pos: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.writev(fd, parts as Uint8Array[], pos, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

/** Most parts one pwritev takes (Linux's IOV_MAX). */
const IOV_MAX = 1024;

/**
 * A byte range [offset, offset+length) of a host file. Every read and write is
 * bounds-checked against the region before it reaches the file, so no decoded
 * pointer, however hostile, can reach bytes outside it.
 */
export class FileRegion implements ByteStore {
  readonly name: string;
  readonly offset: number;
  readonly size: number;
  readonly writable: boolean;
  private fd: number;
  /** readBlock jobs on the thread pool: close() waits for them, so none preads a reused fd. */
  private jobs = 0;
  private drained: (() => void) | null = null;

  private constructor(name: string, fd: number, offset: number, size: number, writable: boolean) {
    this.name = name;
    this.fd = fd;
    this.offset = offset;
    this.size = size;
    this.writable = writable;
  }

  static async open(path: string, options: FileRegionOptions = {}): Promise<FileRegion> {
    const writable = options.writable ?? false;
    const fd = await new Promise<number>((resolve, reject) =>
      fs.open(path, writable ? 'r+' : 'r', (err, n) => (err ? reject(err) : resolve(n))),
    );
    try {
      const st = fs.fstatSync(fd);
      const offset = options.offset ?? 0;
      if (!Number.isSafeInteger(offset) || offset < 0 || offset > st.size) {
        throw new UsageError(`region offset ${offset} lies outside the file (${st.size} bytes)`, path);
      }
      const length = options.length ?? st.size - offset;
      if (!Number.isSafeInteger(length) || length < 0 || offset + length > st.size) {
        throw new CorruptError(`region ${offset}+${length} extends past the end of the file (${st.size} bytes)`, path);
      }
      return new FileRegion(path, fd, offset, length, writable);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  private check(position: number, length: number, what: string): void {
    checkRange(this.name, this.size, position, length, what);
  }

  async read(position: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    await this.readInto(buf, position, length);
    return buf;
  }

  async readInto(into: Buffer, position: number, length: number): Promise<void> {
    this.check(position, length, 'read');
    if (into.length < length) throw new RangeError(`readInto: a ${into.length}-byte buffer cannot hold ${length} bytes`);
    let done = 0;
    while (done < length) {
      const n = await readAt(this.fd, into, done, length - done, this.offset + position + done);
      if (n === 0) throw new CorruptError(`file shrank: read at ${position + done} hit end of file`, this.name);
      done += n;
    }
  }

  /**
   * Present only where the sifuse_block addon is built (it is with the
   * package); see ByteSource.readBlock.
   */
  readonly readBlock = blockAddon() ? this.readBlockNative : undefined;

  private async readBlockNative(into: Buffer, position: number, length: number, codec: BlockCodec): Promise<number> {
    this.check(position, length, 'read');
    const stored = codec === 'stored';
    if (stored && into.length < length)
      throw new RangeError(`readBlock: a ${into.length}-byte buffer cannot hold ${length} bytes`);
    if (this.fd < 0) throw new UsageError('region is closed', this.name);
    if (stored && length > JOB_MAX) {
      // The addon takes at most JOB_MAX bytes a job (block.c MAX_LENGTH); a longer stored span is several.
      for (let at = 0; at < length; at += JOB_MAX) {
        const n = Math.min(JOB_MAX, length - at);
        await this.readBlockNative(into.subarray(at, at + n), position + at, n, 'stored');
      }
      return length;
    }
    const addon = blockAddon()!;
    let done = 0;
    // Stored bytes already in the page cache are copied at once: no thread-pool round trip.
    if (stored) done = addon.readCached(this.fd, this.offset + position, length, into);
    if (done === length) return length;
    this.jobs++;
    try {
      const rest = done === 0 ? into : into.subarray(done);
      return done + (await addon.readBlock(this.fd, this.offset + position + done, length - done, rest, BLOCK_CODEC[codec]));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EOF') {
        throw new CorruptError(`file shrank: read of ${length} bytes at ${position} hit end of file`, this.name);
      }
      throw err;
    } finally {
      if (--this.jobs === 0 && this.drained) this.drained();
    }
  }

  hostExtent(position: number, length: number): { fd: number; position: number } | null {
    this.check(position, length, 'read');
    return this.fd < 0 ? null : { fd: this.fd, position: this.offset + position };
  }

  async write(position: number, data: Uint8Array): Promise<void> {
    if (!this.writable) throw new UsageError('region is opened read-only', this.name);
    this.check(position, data.length, 'write');
    let done = 0;
    while (done < data.length) {
      done += await writeAt(this.fd, data, done, data.length - done, this.offset + position + done);
    }
  }

  async writev(position: number, parts: readonly Uint8Array[]): Promise<void> {
    if (!this.writable) throw new UsageError('region is opened read-only', this.name);
    let total = 0;
    for (const p of parts) total += p.length;
    this.check(position, total, 'write');
    let at = position;
    let i = 0;
    while (i < parts.length) {
      const batch = parts.slice(i, i + IOV_MAX);
      let want = 0;
      for (const p of batch) want += p.length;
      const n = await writevAt(this.fd, batch, this.offset + at);
      if (n === want) {
        i += batch.length;
        at += n;
        continue;
      }
      // A short pwritev: the whole parts it took, then the rest of the part it stopped in.
      let left = n;
      while (left >= parts[i]!.length) left -= parts[i++]!.length;
      at += n - left;
      const rest = parts[i]!.subarray(left);
      await this.write(at, rest);
      at += rest.length;
      i++;
    }
  }

  sync(): Promise<void> {
    return new Promise((resolve, reject) => fs.fdatasync(this.fd, (err) => (err ? reject(err) : resolve())));
  }

  async close(): Promise<void> {
    const fd = this.fd;
    if (fd < 0) return;
    this.fd = -1;
    if (this.jobs > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    await new Promise<void>((resolve, reject) => fs.close(fd, (err) => (err ? reject(err) : resolve())));
  }
}
