import type { ByteSource } from '../io/byte-source.js';
import { CorruptError } from '../errors.js';
import type { MetadataReader } from './metablock.js';
import { METADATA_SIZE } from './superblock.js';

/**
 * The shape shared by the id, fragment, export and xattr-id tables: fixed-size
 * entries packed into metadata blocks, and at the table's start an array of
 * u64 absolute positions, one per metadata block.
 *
 *   [meta block 0][meta block 1]...[u64 ptr0][u64 ptr1]...
 *    ^---------------------------------'        |
 *                 ^-----------------------------'      (table start = &ptr0)
 *
 * Entry sizes (4, 8, 16) divide 8192, so no entry straddles two blocks. The
 * metadata blocks are written just before the pointer array, so each pointer
 * must lie in [low, start).
 */
export class IndexedTable {
  private constructor(
    private readonly reader: MetadataReader,
    readonly what: string,
    readonly count: number,
    readonly entrySize: number,
    private readonly pointers: number[],
    private readonly start: number,
  ) {}

  static async open(
    source: ByteSource,
    reader: MetadataReader,
    what: string,
    start: number,
    count: number,
    entrySize: number,
    low: number,
  ): Promise<IndexedTable> {
    const blocks = Math.ceil((count * entrySize) / METADATA_SIZE);
    // Each block is at least 3 bytes on disk, plus 8 bytes of pointer: the
    // count must fit the image before we allocate for it.
    if (start + blocks * 8 > source.size || blocks * 11 > source.size) {
      throw new CorruptError(`${what} table of ${count} entries does not fit the image`);
    }
    const raw = blocks === 0 ? Buffer.alloc(0) : await source.read(start, blocks * 8);
    const pointers: number[] = [];
    for (let i = 0; i < blocks; i++) {
      const p = raw.readBigUInt64LE(i * 8);
      if (p < BigInt(low) || p + 2n > BigInt(start)) {
        throw new CorruptError(`${what} table block pointer ${i} (${p}) lies outside [${low}, ${start})`);
      }
      pointers.push(Number(p));
    }
    return new IndexedTable(reader, what, count, entrySize, pointers, start);
  }

  /** The raw bytes of entry `i`. */
  async entry(i: number): Promise<Buffer> {
    if (!Number.isInteger(i) || i < 0 || i >= this.count) {
      throw new CorruptError(`${this.what} index ${i} is out of range (table has ${this.count})`);
    }
    const byte = i * this.entrySize;
    const block = Math.floor(byte / METADATA_SIZE);
    const r = await this.reader.read(this.pointers[block]!, byte % METADATA_SIZE, this.entrySize, this.start);
    return r.bytes;
  }
}
