import { CorruptError } from '../../errors.js';
import { decodeFailure, tooBig, nativeModule, type Decompressor } from './decompressor.js';

interface ZstdBinding {
  DCtx: new () => { decompress(dst: Uint8Array, src: Uint8Array): number };
  getFrameContentSize(src: Uint8Array): number | null;
}

const binding = nativeModule<ZstdBinding>('zstd-napi/binding.js');

/**
 * zstd (id 6): one zstd frame per block (squashfs-tools' zstd_wrapper uses
 * ZSTD_compressCCtx). zstd-napi's ZSTD_decompressDCtx writes into a buffer
 * we size to maxSize and fails with "Destination buffer is too small" rather
 * than growing it. One context is reused: decompression is synchronous, so no
 * two calls share it at once.
 */
let context: InstanceType<ZstdBinding['DCtx']> | undefined;
function dctx(): InstanceType<ZstdBinding['DCtx']> {
  return (context ??= new (binding().DCtx)());
}

export const zstd: Decompressor = {
  name: 'zstd',
  decompress(input: Buffer, maxSize: number): Buffer {
    let declared: number | null;
    try {
      declared = binding().getFrameContentSize(input);
    } catch (err) {
      throw decodeFailure('zstd', err);
    }
    if (declared !== null && declared > maxSize) throw tooBig('zstd', declared, maxSize);
    const out = Buffer.allocUnsafe(declared ?? maxSize);
    let n: number;
    try {
      n = dctx().decompress(out, input);
    } catch (err) {
      const msg = err instanceof Error ? err.message : '';
      if (/too small/i.test(msg)) throw tooBig('zstd', null, maxSize);
      throw decodeFailure('zstd', err);
    }
    if (declared !== null && n !== declared) {
      throw new CorruptError(`zstd block declares ${declared} bytes but holds ${n}`);
    }
    return n === out.length ? out : out.subarray(0, n);
  },
};
