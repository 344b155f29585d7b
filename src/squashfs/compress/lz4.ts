import { decodeFailure, tooBig, nativeModule, type Decompressor } from './decompressor.js';

interface Lz4Binding {
  uncompressSync(data: Uint8Array): Buffer;
  uncompress(data: Uint8Array): Promise<Buffer>;
}

const lz4napi = nativeModule<Lz4Binding>('lz4-napi');

/**
 * lz4 (id 5): a raw LZ4 block (LZ4_compress_default / LZ4_compress_HC, so -Xhc
 * needs nothing different to read). lz4-napi decodes the "size-prepended"
 * variant: a u32 LE output size, then the block. We prepend maxSize ourselves,
 * which lz4_flex treats as the capacity of the output buffer: more output
 * fails with "provided output is too small", less is returned as is.
 */
function framed(input: Buffer, maxSize: number): Buffer {
  const out = Buffer.allocUnsafe(4 + input.length);
  out.writeUInt32LE(maxSize, 0);
  input.copy(out, 4);
  return out;
}

function failure(err: unknown, maxSize: number): Error {
  const msg = err instanceof Error ? err.message : '';
  if (/too small/i.test(msg)) return tooBig('lz4', null, maxSize);
  return decodeFailure('lz4', err);
}

export const lz4: Decompressor = {
  name: 'lz4',
  decompress(input: Buffer, maxSize: number): Buffer {
    try {
      return lz4napi().uncompressSync(framed(input, maxSize));
    } catch (err) {
      throw failure(err, maxSize);
    }
  },
  decompressAsync(input: Buffer, maxSize: number): Promise<Buffer> {
    return lz4napi()
      .uncompress(framed(input, maxSize))
      .catch((err: unknown) => {
        throw failure(err, maxSize);
      });
  },
};
