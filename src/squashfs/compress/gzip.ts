import * as zlib from 'node:zlib';
import { decodeFailure, tooBig, type Decompressor } from './decompressor.js';

/**
 * gzip (id 1): a zlib stream (RFC 1950, not the gzip file format), as
 * squashfs-tools' gzip_wrapper writes it with deflate(). node:zlib bounds the
 * output with maxOutputLength, so a bomb stops at maxSize + 1 bytes.
 */
function failure(err: unknown, maxSize: number): Error {
  if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') return tooBig('gzip', null, maxSize);
  return decodeFailure('gzip', err);
}

/**
 * Output shorter than half the chunk is copied out: node returns a view of its
 * maxSize-byte chunk, and a cache counting lengths must not pin the rest.
 */
function trimmed(out: Buffer, maxSize: number): Buffer {
  return out.length * 2 < maxSize && out.buffer.byteLength >= maxSize ? Buffer.from(out) : out;
}

/**
 * One output chunk of maxSize (a whole block): node's default 16 KiB chunks
 * cost a list of partial buffers and a join per block (128 KiB blocks of the
 * bench rootfs: 490 us -> 376 us per block inflating alone).
 */
export const gzip: Decompressor = {
  name: 'gzip',
  decompress(input: Buffer, maxSize: number): Buffer {
    try {
      return trimmed(zlib.inflateSync(input, { maxOutputLength: maxSize, chunkSize: Math.max(maxSize, 64) }), maxSize);
    } catch (err) {
      throw failure(err, maxSize);
    }
  },
  decompressAsync(input: Buffer, maxSize: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      zlib.inflate(input, { maxOutputLength: maxSize, chunkSize: Math.max(maxSize, 64) }, (err, out) =>
        err ? reject(failure(err, maxSize)) : resolve(trimmed(out, maxSize)),
      );
    });
  },
};
