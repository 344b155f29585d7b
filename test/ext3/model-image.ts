/**
 * Cheap per-sequence images for the property tests: a pristine mkfs image is
 * read once, and each sequence runs on a copy-on-write view of it (only the
 * chunks the engine writes are copied), so no per-sequence file copy or
 * process spawn is needed to start a sequence.
 *
 * e2fsck and the kernel need a file: a WorkFile is a host file kept equal to
 * the pristine image, onto which one image's written chunks are laid for a
 * check and then taken back off, so a check writes only what the sequence
 * changed.
 */
import { closeSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import { CorruptError } from '../../src/errors.js';
import { checkRange, type ByteStore } from '../../src/io/byte-source.js';

/** Copy-on-write granule; a multiple of every ext3 block size used. */
export const CHUNK = 4096;

/** A pristine image held in memory (read once from the file mkfs made). */
export class BaseImage {
  /** [start, end) byte runs of chunks that are not all zero; the rest is a hole in written copies. */
  readonly runs: [number, number][] = [];

  constructor(
    readonly path: string,
    readonly bytes: Buffer,
  ) {
    if (bytes.length % CHUNK !== 0) throw new Error(`${path}: ${bytes.length} bytes is not a multiple of ${CHUNK}`);
    const zero = Buffer.alloc(CHUNK);
    for (let pos = 0; pos < bytes.length; pos += CHUNK) {
      if (bytes.subarray(pos, pos + CHUNK).equals(zero)) continue;
      const last = this.runs[this.runs.length - 1];
      if (last && last[1] === pos) last[1] = pos + CHUNK;
      else this.runs.push([pos, pos + CHUNK]);
    }
  }

  static load(path: string): BaseImage {
    return new BaseImage(path, readFileSync(path));
  }

  /** Writes a sparse copy to `path` (replacing it): only the non-zero runs are written. */
  writeTo(path: string): void {
    const fd = openSync(path, 'w');
    try {
      ftruncateSync(fd, this.bytes.length);
      for (const [start, end] of this.runs) writeSync(fd, this.bytes, start, end - start, start);
    } finally {
      closeSync(fd);
    }
  }
}

/** One sequence's image: the base plus the chunks written since. */
export class CowImage {
  /** Chunk index -> its current bytes (CHUNK long), for every chunk ever written. */
  readonly dirty = new Map<number, Buffer>();

  constructor(
    readonly base: BaseImage,
    readonly name: string,
  ) {}

  get size(): number {
    return this.base.bytes.length;
  }

  private chunk(i: number): Buffer {
    return this.dirty.get(i) ?? this.base.bytes.subarray(i * CHUNK, (i + 1) * CHUNK);
  }

  read(position: number, length: number): Buffer {
    checkRange(this.name, this.size, position, length, 'read');
    const out = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const pos = position + done;
      const i = Math.floor(pos / CHUNK);
      const off = pos - i * CHUNK;
      const n = Math.min(CHUNK - off, length - done);
      this.chunk(i).copy(out, done, off, off + n);
      done += n;
    }
    return out;
  }

  write(position: number, data: Uint8Array): void {
    checkRange(this.name, this.size, position, data.length, 'write');
    let done = 0;
    while (done < data.length) {
      const pos = position + done;
      const i = Math.floor(pos / CHUNK);
      const off = pos - i * CHUNK;
      const n = Math.min(CHUNK - off, data.length - done);
      let c = this.dirty.get(i);
      if (!c) {
        c = Buffer.from(this.base.bytes.subarray(i * CHUNK, (i + 1) * CHUNK));
        this.dirty.set(i, c);
      }
      c.set(data.subarray(done, done + n), off);
      done += n;
    }
  }

  /** The whole image as one buffer (failure reports, kernel checks). */
  toBuffer(): Buffer {
    const out = Buffer.from(this.base.bytes);
    for (const [i, c] of this.dirty) c.copy(out, i * CHUNK);
    return out;
  }

  /** A ByteStore over this image for one engine open; closing the store keeps the bytes. */
  store(writable: boolean): ByteStore {
    const img = this;
    let closed = false;
    const live = (what: string) => {
      if (closed) throw new CorruptError(`${what} after close`, img.name);
    };
    return {
      name: img.name,
      writable,
      get size() {
        return img.size;
      },
      async read(position: number, length: number) {
        live('read');
        return img.read(position, length);
      },
      async write(position: number, data: Uint8Array) {
        live('write');
        if (!writable) throw new CorruptError('region is read-only', img.name);
        img.write(position, data);
      },
      async sync() {
        live('sync');
      },
      async close() {
        closed = true;
      },
    };
  }
}

/**
 * A host file equal to `base` except while an image is shown on it: show()
 * writes the image's dirty chunks, clear() writes the base's bytes back over
 * every chunk shown since the last clear.
 */
export class WorkFile {
  private fd: number;
  private shown = new Set<number>();

  constructor(
    readonly path: string,
    readonly base: BaseImage,
  ) {
    base.writeTo(path);
    this.fd = openSync(path, 'r+');
  }

  /** Shows and clears left to verify by reading the whole file back (the first few of each work file). */
  private verifications = 2;

  show(img: CowImage): void {
    if (img.base !== this.base) throw new Error(`${this.path}: image of another base`);
    for (const [i, c] of img.dirty) {
      writeSync(this.fd, c, 0, CHUNK, i * CHUNK);
      this.shown.add(i);
    }
    if (this.verifications > 0) this.verify(img.toBuffer(), 'show');
  }

  clear(): void {
    for (const i of this.shown) writeSync(this.fd, this.base.bytes, i * CHUNK, CHUNK, i * CHUNK);
    this.shown.clear();
    if (this.verifications > 0) {
      this.verifications--;
      this.verify(this.base.bytes, 'clear');
    }
  }

  private verify(want: Buffer, after: string): void {
    if (!readFileSync(this.path).equals(want)) throw new Error(`${this.path}: work file differs from the image after ${after}`);
  }

  close(): void {
    closeSync(this.fd);
  }
}
