import { CorruptError } from '../../errors.js';
import { decodeFailure, tooBig, nativeModule, type Decompressor } from './decompressor.js';

interface LzmaBinding {
  lzma: { decompressSync(input: Uint8Array): Buffer; decompress(input: Uint8Array): Promise<Buffer> };
}

const napiLzma = nativeModule<LzmaBinding>('@napi-rs/lzma');

/**
 * lzma (id 2, legacy; only squashfs-tools reads it, the kernel does not): the
 * "lzma alone" format, a 13-byte header then the LZMA stream.
 *
 *   0x00 u8   properties (lc + lp*9 + pb*45, < 225)
 *   0x01 u32  dictionary size
 *   0x05 u64  uncompressed size (squashfs-tools' lzma_wrapper always fills it in)
 *
 * The declared size is checked against maxSize before anything is decoded,
 * and the output against the declared size afterwards.
 */
/** Checks the header; returns the declared output size. */
function checkHeader(input: Buffer, maxSize: number): number {
  if (input.length < 13) throw new CorruptError(`lzma block of ${input.length} bytes is shorter than its 13-byte header`);
  if (input[0]! >= 225) throw new CorruptError(`lzma block has invalid properties byte 0x${input[0]!.toString(16)}`);
  const declared = input.readBigUInt64LE(5);
  if (declared === 0xffffffffffffffffn) throw new CorruptError('lzma block does not declare its uncompressed size');
  if (declared > BigInt(maxSize)) throw tooBig('lzma', declared, maxSize);
  return Number(declared);
}

function checkOutput(out: Buffer, declared: number): Buffer {
  if (out.length !== declared) throw new CorruptError(`lzma block declares ${declared} bytes but holds ${out.length}`);
  return out;
}

export const lzma: Decompressor = {
  name: 'lzma',
  decompress(input: Buffer, maxSize: number): Buffer {
    const declared = checkHeader(input, maxSize);
    let out: Buffer;
    try {
      out = napiLzma().lzma.decompressSync(input);
    } catch (err) {
      throw decodeFailure('lzma', err);
    }
    return checkOutput(out, declared);
  },
  async decompressAsync(input: Buffer, maxSize: number): Promise<Buffer> {
    const declared = checkHeader(input, maxSize);
    let out: Buffer;
    try {
      out = await napiLzma().lzma.decompress(input);
    } catch (err) {
      throw decodeFailure('lzma', err);
    }
    return checkOutput(out, declared);
  },
};
