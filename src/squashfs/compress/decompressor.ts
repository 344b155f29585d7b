import { createRequire } from 'node:module';
import { CorruptError, UnsupportedError } from '../../errors.js';

/**
 * One SquashFS compressor. Every block (metadata or data) is compressed on its
 * own, so a decompressor is a pure function of the block's bytes.
 *
 * `maxSize` is the most the block may expand to: 8 KiB for metadata blocks,
 * the filesystem block size for data and fragment blocks. A decompressor never
 * allocates more than that for its output, and throws CorruptError when the
 * input is garbage or would expand past it (a decompression bomb in a hostile
 * image must cost no more memory than a legitimate block).
 */
export interface Decompressor {
  /** The superblock's name for it: gzip, lzma, lzo, xz, lz4, zstd. */
  readonly name: string;
  decompress(input: Buffer, maxSize: number): Buffer;
  /**
   * The same, run on libuv's thread pool where the library offers it, so data
   * blocks of concurrent reads decompress in parallel while the main thread
   * does other work. Same bounds and errors as decompress().
   */
  decompressAsync?(input: Buffer, maxSize: number): Promise<Buffer>;
}

/** Wraps a library failure as CorruptError with the compressor's name. */
export function decodeFailure(name: string, err: unknown): CorruptError | UnsupportedError {
  if (err instanceof CorruptError || err instanceof UnsupportedError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  return new CorruptError(`${name} block does not decompress (${detail})`);
}

/** `size` is the claimed size, or null when the library only said "more". */
export function tooBig(name: string, size: number | bigint | null, maxSize: number): CorruptError {
  const what = size === null ? 'more than' : `${size} bytes, more than`;
  return new CorruptError(`${name} block expands to ${what} the ${maxSize}-byte limit`);
}

const require = createRequire(import.meta.url);

/**
 * A native decompressor package, loaded on first use: each addon costs
 * start-up time, and most images need only one of them. A package that
 * cannot load is an installation problem, reported as such (never as a
 * corrupt image).
 */
export function nativeModule<T>(pkg: string): () => T {
  let loaded: T | undefined;
  return () => {
    if (loaded === undefined) {
      try {
        loaded = require(pkg) as T;
      } catch (err) {
        const detail = err instanceof Error ? err.message.split('\n')[0] : String(err);
        throw new UnsupportedError(`the decompressor package ${pkg} cannot be loaded (${detail}); run npm ci`);
      }
    }
    return loaded;
  };
}
