/**
 * SquashFS 4.0 reader (read-only), as mksquashfs writes it and the kernel reads
 * it. Knows nothing of FUSE: the engine is a ReadableFs over a ByteSource (a
 * raw .sqfs file, or a SIF partition region).
 *
 *  offset 0
 *  +------------------+
 *  | superblock (96)  |  magic "hsqs", counts, block size, compressor, flags,
 *  +------------------+  and the u64 start of every table below ---------------.
 *  | compressor opts  |  optional metadata block (FLAG_COMPRESSOR_OPTIONS)      |
 *  +------------------+                                                         |
 *  | data blocks      |  file blocks, each compressed alone (<= block_size),    |
 *  | fragment blocks  |  and fragment blocks packing small files and tails      |
 *  +------------------+ <- inode_table_start                                    |
 *  | inode table      |  metadata blocks (8 KiB each, compressed alone) of      |
 *  |                  |  inodes; an inode is addressed by (block, offset)       |
 *  +------------------+ <- directory_table_start                                |
 *  | directory table  |  listings: runs of (header, entries), sorted by name    |
 *  +------------------+                                                         |
 *  | fragment table   |  metadata blocks of {start, size}, then u64 pointers <--+
 *  | export table     |  inode number -> inode reference (optional)          <--+
 *  | id table         |  uid/gid values indexed by inodes                    <--+
 *  | xattr tables     |  key/value metadata, id entries, then pointers       <--'
 *  +------------------+ <- bytes_used (padded to 4 KiB by mksquashfs)
 *
 * Modules: superblock.ts, metablock.ts, indexed-table.ts with id-table.ts,
 * fragment-table.ts, export-table.ts and xattr.ts, inode.ts (14 types),
 * dir.ts (listings and the index), file.ts (blocks, fragments, sparse,
 * read-ahead), compress/ (one module per compressor), cache.ts, fs.ts.
 */
import { nameEngineErrors } from '../errors.js';
import type { ByteSource } from '../io/byte-source.js';
import { SquashfsFs, type SquashfsOptions } from './fs.js';

export { SquashfsFs, type SquashfsOptions } from './fs.js';
export { decodeSuperblock, SQUASHFS_MAGIC, type Superblock } from './superblock.js';
export { decompressorFor, compressorName, type Decompressor } from './compress/index.js';
export type { Inode } from './inode.js';

/** Opens the SquashFS filesystem held in `source`. The filesystem owns the source: close() closes it. */
export async function openSquashfs(source: ByteSource, options?: SquashfsOptions): Promise<SquashfsFs> {
  return nameEngineErrors(await SquashfsFs.open(source, options), source.name);
}
