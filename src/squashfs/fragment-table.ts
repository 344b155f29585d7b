import type { ByteSource } from '../io/byte-source.js';
import { CorruptError } from '../errors.js';
import { IndexedTable } from './indexed-table.js';
import { BLOCK_SIZE_MASK, BLOCK_UNCOMPRESSED } from './inode.js';
import type { MetadataReader } from './metablock.js';
import type { Superblock } from './superblock.js';

/** struct squashfs_fragment_entry (16 bytes). */
export interface FragmentEntry {
  /** 0x00 u64 start_block: absolute position of the fragment block */
  start: number;
  /** 0x08 u32 size: on-disk size; bit 24 set = stored uncompressed */
  size: number;
  compressed: boolean;
}

export function decodeFragmentEntry(bytes: Buffer, blockSize: number, dataEnd: number): FragmentEntry {
  const startBig = bytes.readBigUInt64LE(0x00);
  const raw = bytes.readUInt32LE(0x08);
  const size = raw & BLOCK_SIZE_MASK;
  // Bits above 24 are unused; set, they would make a size the mask hides.
  if (size === 0 || size > blockSize || raw >>> 25 !== 0) {
    throw new CorruptError(`fragment block size entry 0x${raw.toString(16)} is invalid`);
  }
  if (startBig + BigInt(size) > BigInt(dataEnd))
    throw new CorruptError(`fragment block at ${startBig} lies outside the data area`);
  return { start: Number(startBig), size, compressed: (raw & BLOCK_UNCOMPRESSED) === 0 };
}

/** Fragment index -> fragment block location. Entries are decoded on demand (the metadata cache keeps them). */
export class FragmentTable {
  private constructor(
    private readonly table: IndexedTable,
    private readonly blockSize: number,
    private readonly dataEnd: number,
  ) {}

  static async open(source: ByteSource, reader: MetadataReader, sb: Superblock): Promise<FragmentTable | null> {
    if (sb.fragments === 0 || sb.fragmentTableStart === null) return null;
    const table = await IndexedTable.open(
      source,
      reader,
      'fragment',
      sb.fragmentTableStart,
      sb.fragments,
      16,
      sb.directoryTableStart,
    );
    return new FragmentTable(table, sb.blockSize, sb.inodeTableStart);
  }

  async get(index: number): Promise<FragmentEntry> {
    return decodeFragmentEntry(await this.table.entry(index), this.blockSize, this.dataEnd);
  }
}
