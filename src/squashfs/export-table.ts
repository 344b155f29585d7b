import type { ByteSource } from '../io/byte-source.js';
import { CorruptError } from '../errors.js';
import { IndexedTable } from './indexed-table.js';
import type { MetadataReader } from './metablock.js';
import type { Superblock } from './superblock.js';

/**
 * The export (lookup) table of -exports images: for inode number n (1-based),
 * entry n-1 is the u64 inode reference. It lets an inode number be turned back
 * into an InodeId without walking the tree (NFS export; later the overlay's
 * stable inode numbers).
 */
export class ExportTable {
  private constructor(private readonly table: IndexedTable) {}

  static async open(source: ByteSource, reader: MetadataReader, sb: Superblock): Promise<ExportTable | null> {
    if (sb.lookupTableStart === null) return null;
    const table = await IndexedTable.open(source, reader, 'export', sb.lookupTableStart, sb.inodes, 8, sb.directoryTableStart);
    return new ExportTable(table);
  }

  /** The inode reference of inode number `ino`. */
  async refOf(ino: number): Promise<number> {
    const ref = (await this.table.entry(ino - 1)).readBigUInt64LE(0);
    if (ref >> 48n !== 0n) throw new CorruptError(`export table entry for inode ${ino} is not an inode reference`);
    return Number(ref);
  }
}
