import { UnsupportedError } from '../../errors.js';
import type { Decompressor } from './decompressor.js';
import { gzip } from './gzip.js';
import { lz4 } from './lz4.js';
import { lzma } from './lzma.js';
import { lzo } from './lzo.js';
import { xz } from './xz.js';
import { zstd } from './zstd.js';

export type { Decompressor } from './decompressor.js';

/** Superblock `compression` ids (squashfs_fs.h: ZLIB_COMPRESSION ... ZSTD_COMPRESSION). */
const BY_ID: Record<number, Decompressor> = { 1: gzip, 2: lzma, 3: lzo, 4: xz, 5: lz4, 6: zstd };

export function compressorName(id: number): string {
  return BY_ID[id]?.name ?? `unknown (${id})`;
}

/** The decompressor for a superblock compression id; UnsupportedError for an unknown one. */
export function decompressorFor(id: number): Decompressor {
  const d = BY_ID[id];
  if (!d) throw new UnsupportedError(`unknown SquashFS compressor id ${id}`);
  return d;
}
