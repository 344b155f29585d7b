import { CorruptError } from '../errors.js';

/** How readBlock's bytes are stored in the image: as they are, a zlib stream, or zstd frames. */
export type BlockCodec = 'stored' | 'zlib' | 'zstd';

/**
 * The positional byte I/O every engine reads and writes through.
 *
 * An engine never sees a file, only a region: a SIF partition is
 * [descriptor.offset, descriptor.offset + descriptor.size) of the SIF file, a
 * raw image is the whole file, a test fixture may be a Buffer. All positions
 * are relative to the region's start, and no implementation reads or writes a
 * byte outside it: that is what keeps a hostile image from making the daemon
 * touch the rest of the SIF.
 */
export interface ByteSource {
  /** Bytes in the region. */
  readonly size: number;
  /** A short name for error messages (usually the file path). */
  readonly name: string;
  /**
   * Exactly `length` bytes at `position`; throws CorruptError when any part of
   * [position, position+length) lies outside the region.
   */
  read(position: number, length: number): Promise<Buffer>;
  /**
   * The same bytes written into `into[0, length)` (into.length >= length), for
   * callers that reuse a buffer (compressed blocks consumed at once by a
   * decompressor). Optional: callers fall back to read().
   */
  readInto?(into: Buffer, position: number, length: number): Promise<void>;
  /**
   * One image block off the main thread: the `length` bytes at `position`,
   * written into `into` as they are (codec 'stored'; into.length >= length)
   * or decompressed into it (a zlib stream or zstd frames; never more than
   * into.length bytes). Resolves to the bytes written. Input that does not
   * decompress rejects with code EZDATA, a block that expands past `into`
   * with ETOOBIG (callers name the block). Optional: where absent, callers
   * read() and decompress themselves.
   */
  readBlock?(into: Buffer, position: number, length: number, codec: BlockCodec): Promise<number>;
  /**
   * Where [position, position+length) of the region is in the host file: its
   * descriptor and absolute offset, bounds-checked as read() is (CorruptError
   * outside the region); null once closed. Optional (a file region has it).
   */
  hostExtent?(position: number, length: number): { fd: number; position: number } | null;
  close(): Promise<void>;
}

export interface ByteStore extends ByteSource {
  readonly writable: boolean;
  /** Writes all of `data` at `position`; throws CorruptError outside the region. */
  write(position: number, data: Uint8Array): Promise<void>;
  /**
   * Writes `parts` back to back from `position`, as write(position, the
   * parts joined) would, without joining them (one pwritev). Optional:
   * callers fall back to one write() per part.
   */
  writev?(position: number, parts: readonly Uint8Array[]): Promise<void>;
  /** fdatasync: everything written so far is on stable storage. */
  sync(): Promise<void>;
}

/**
 * The one bounds check every region implementation applies before touching
 * its bytes: [position, position+length) must lie inside [0, size).
 */
export function checkRange(name: string, size: number, position: number, length: number, what: string): void {
  if (
    !Number.isSafeInteger(position) ||
    !Number.isSafeInteger(length) ||
    position < 0 ||
    length < 0 ||
    position + length > size
  ) {
    throw new CorruptError(`${what} of ${length} bytes at ${position} lies outside the ${size}-byte region`, name);
  }
}
