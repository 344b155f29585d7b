import { decodeFailure, tooBig, nativeModule, type Decompressor } from './decompressor.js';

interface LzoBinding {
  decompress(input: Buffer, length: number): Buffer;
}

const lzoLib = nativeModule<LzoBinding>('lzo');

/**
 * lzo (id 3): an LZO1X block (whichever -Xalgorithm compressed it, all
 * lzo1x_* variants decode with lzo1x_decompress_safe, which the `lzo` package
 * calls with an output buffer of the size we give: maxSize). Overruns fail with
 * LZO_E_OUTPUT_OVERRUN instead of writing past it.
 */
export const lzo: Decompressor = {
  name: 'lzo',
  decompress(input: Buffer, maxSize: number): Buffer {
    try {
      return lzoLib().decompress(input, maxSize);
    } catch (err) {
      const msg = err instanceof Error ? err.message : '';
      if (/OUTPUT_OVERRUN/.test(msg)) throw tooBig('lzo', null, maxSize);
      throw decodeFailure('lzo', err);
    }
  },
};
