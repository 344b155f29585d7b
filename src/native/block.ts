/**
 * The typed face of the sifuse_block addon (src/native/block.c): one SquashFS
 * block pread() from an image file, and zlib-inflated or zstd-decompressed
 * when asked, as one job on libuv's thread pool. The main thread only queues
 * the job and takes the result, so cold blocks of concurrent reads decompress
 * in parallel with the FUSE loop, each pool thread with its own reused
 * libdeflate decompressor and zstd context.
 *
 * Rejections carry `.code`: EZDATA (not a zlib stream or zstd frame, or truncated),
 * ETOOBIG (expands past `out.length`), EOF (the file ends inside the range),
 * ENOMEM, or the errno name of a failed pread.
 *
 * Loading it sets glibc's mmap and trim thresholds (block.c tune_malloc):
 * block-sized buffers are reused from the heap instead of page-faulted in.
 */
import { loadAddon } from './load.js';

/** readBlock's codec argument (block.c CODEC_*). */
export const BLOCK_CODEC = { stored: 0, zlib: 1, zstd: 2 } as const;

interface BlockAddon {
  readBlock(fd: number, position: number, length: number, out: Buffer, codec: number): Promise<number>;
  /** The leading bytes of the range that are in the page cache, read at once (preadv2 RWF_NOWAIT); never blocks. */
  readCached(fd: number, position: number, length: number, out: Buffer): number;
}

let addon: BlockAddon | null | undefined;

/** The addon, or null when it is not built (callers keep their JS path). */
export function blockAddon(): BlockAddon | null {
  if (addon === undefined) {
    try {
      addon = loadAddon<BlockAddon>('sifuse_block');
    } catch {
      addon = null;
    }
  }
  return addon;
}
