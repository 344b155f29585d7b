import type { ByteSource } from '../io/byte-source.js';
import { CorruptError } from '../errors.js';
import { IndexedTable } from './indexed-table.js';
import type { MetadataReader } from './metablock.js';
import type { Superblock } from './superblock.js';

/**
 * The uid/gid table: no_ids u32 values; an inode's uid and guid fields are
 * indexes into it. At most 65536 entries (256 KiB), so it is read whole at open
 * and lookups are synchronous.
 */
export class IdTable {
  private constructor(private readonly ids: Uint32Array) {}

  static async open(source: ByteSource, reader: MetadataReader, sb: Superblock): Promise<IdTable> {
    const table = await IndexedTable.open(source, reader, 'id', sb.idTableStart, sb.noIds, 4, sb.directoryTableStart);
    const ids = new Uint32Array(sb.noIds);
    for (let i = 0; i < sb.noIds; i++) ids[i] = (await table.entry(i)).readUInt32LE(0);
    return new IdTable(ids);
  }

  get(index: number): number {
    if (index >= this.ids.length) throw new CorruptError(`inode uses id index ${index}, but the id table has ${this.ids.length}`);
    return this.ids[index]!;
  }
}
