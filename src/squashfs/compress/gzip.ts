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

export const gzip: Decompressor = {
  name: 'gzip',
  decompress(input: Buffer, maxSize: number): Buffer {
    try {
      return zlib.inflateSync(input, { maxOutputLength: maxSize });
    } catch (err) {
      throw failure(err, maxSize);
    }
  },
  decompressAsync(input: Buffer, maxSize: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      zlib.inflate(input, { maxOutputLength: maxSize }, (err, out) => (err ? reject(failure(err, maxSize)) : resolve(out)));
    });
  },
};
