import { CorruptError, UnsupportedError } from '../../errors.js';

/**
 * Compressor options: with FLAG_COMPRESSOR_OPTIONS, a metadata block right
 * after the superblock holds the compressor's parameters (squashfs-tools
 * *_wrapper.h). Decoding needs none of them (every stream is self-describing)
 * except lz4's version, which must be 1 (LZ4_LEGACY, the only one defined);
 * they are decoded to validate them and to show them.
 *
 *   gzip  u32 compression_level, u16 window_size, u16 strategy
 *   lzo   u32 algorithm, u32 compression_level
 *   xz    u32 dictionary_size, u32 flags (BCJ filters tried, bit per filter)
 *   lz4   u32 version, u32 flags (bit 0: high compression)
 *   zstd  u32 compression_level
 *   lzma  none
 */
export type CompressorOptions = Record<string, number>;

const LAYOUT: Record<number, [string, 2 | 4][]> = {
  1: [
    ['compressionLevel', 4],
    ['windowSize', 2],
    ['strategy', 2],
  ],
  3: [
    ['algorithm', 4],
    ['compressionLevel', 4],
  ],
  4: [
    ['dictionarySize', 4],
    ['filters', 4],
  ],
  5: [
    ['version', 4],
    ['flags', 4],
  ],
  6: [['compressionLevel', 4]],
};

export function decodeCompressorOptions(compression: number, bytes: Buffer): CompressorOptions {
  const layout = LAYOUT[compression];
  if (!layout) throw new CorruptError(`compressor ${compression} has no options, but the superblock says it does`);
  const size = layout.reduce((n, [, w]) => n + w, 0);
  if (bytes.length < size) throw new CorruptError(`compressor options are ${bytes.length} bytes, expected ${size}`);
  const out: CompressorOptions = {};
  let at = 0;
  for (const [name, width] of layout) {
    out[name] = width === 4 ? bytes.readUInt32LE(at) : bytes.readUInt16LE(at);
    at += width;
  }
  if (compression === 5 && out.version !== 1)
    throw new UnsupportedError(`lz4 format version ${out.version} is not supported (only 1)`);
  return out;
}
