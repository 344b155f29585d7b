import type { ByteSource } from '../io/byte-source.js';
import { CorruptError } from '../errors.js';
import { IndexedTable } from './indexed-table.js';
import type { MetadataReader } from './metablock.js';
import type { Superblock } from './superblock.js';

/**
 * Extended attributes.
 *
 *   xattr_id_table_start -> struct squashfs_xattr_id_table (16 bytes)
 *       0x00 u64 xattr_table_start   first metadata block of key/value data
 *       0x08 u32 xattr_ids           entries in the id table
 *       0x0C u32 unused
 *     then u64 pointers to the metadata blocks of struct squashfs_xattr_id:
 *       0x00 u64 xattr   reference (block << 16 | offset) into the kv data
 *       0x08 u32 count   number of key/value pairs
 *       0x0C u32 size    total bytes of the pairs
 *
 *   key/value data, from xattr_table_start:
 *     key:   u16 type (0 user, 1 trusted, 2 security; | 0x100 = value out of line)
 *            u16 name_size, name bytes (without the "user." prefix)
 *     value: u32 vsize, value bytes; out of line: vsize 8 and a u64 reference
 *            to another value record (shared between inodes by mksquashfs).
 */

/** Type id -> namespace prefix; the stored name is the raw suffix bytes after it. */
const PREFIXES = ['user.', 'trusted.', 'security.'].map((p) => Buffer.from(p));
const XATTR_VALUE_OOL = 0x100;
/** Linux's XATTR_SIZE_MAX: no value can be longer. */
const XATTR_SIZE_MAX = 65536;

export interface Xattr {
  /** The full name as bytes (prefix + stored suffix), never decoded. */
  name: Buffer;
  value: Buffer;
}

export class XattrTable {
  private constructor(
    private readonly reader: MetadataReader,
    private readonly ids: IndexedTable,
    private readonly kvStart: number,
    private readonly kvEnd: number,
  ) {}

  static async open(source: ByteSource, reader: MetadataReader, sb: Superblock): Promise<XattrTable | null> {
    if (sb.xattrIdTableStart === null) return null;
    const start = sb.xattrIdTableStart;
    if (start + 16 > sb.bytesUsed) throw new CorruptError('xattr id table header lies past the end of the filesystem');
    const hdr = await source.read(start, 16);
    const kvStart = hdr.readBigUInt64LE(0x00);
    const count = hdr.readUInt32LE(0x08);
    if (kvStart < BigInt(sb.directoryTableStart) || kvStart > BigInt(start)) {
      throw new CorruptError(`xattr_table_start (${kvStart}) lies outside the metadata area`);
    }
    const ids = await IndexedTable.open(source, reader, 'xattr id', start + 16, count, 16, Number(kvStart));
    return new XattrTable(reader, ids, Number(kvStart), start);
  }

  /** All attributes of xattr index `index` (an inode's xattr field), in stored order. */
  async list(index: number): Promise<Xattr[]> {
    const entry = await this.ids.entry(index);
    const ref = entry.readBigUInt64LE(0x00);
    const count = entry.readUInt32LE(0x08);
    const size = entry.readUInt32LE(0x0c);
    // Each pair takes at least 8 bytes (4 key header + 4 value size).
    if (count * 8 > size || size > this.kvEnd - this.kvStart + count * XATTR_SIZE_MAX) {
      throw new CorruptError(`xattr entry ${index} claims ${count} attributes in ${size} bytes`);
    }
    let pos = this.kvStart + Number(ref >> 16n);
    let offset = Number(ref & 0xffffn);
    const out: Xattr[] = [];
    for (let i = 0; i < count; i++) {
      let r = await this.reader.read(pos, offset, 4, this.kvEnd);
      const type = r.bytes.readUInt16LE(0);
      const nameSize = r.bytes.readUInt16LE(2);
      const prefix = PREFIXES[type & 0xff];
      if (prefix === undefined || (type & ~(0xff | XATTR_VALUE_OOL)) !== 0) {
        throw new CorruptError(`xattr entry ${index} has unknown type 0x${type.toString(16)}`);
      }
      if (nameSize === 0 || nameSize > 255) throw new CorruptError(`xattr entry ${index} has a name of ${nameSize} bytes`);
      r = await this.reader.read(r.pos, r.offset, nameSize, this.kvEnd);
      const name = Buffer.concat([prefix, r.bytes]);
      r = await this.reader.read(r.pos, r.offset, 4, this.kvEnd);
      const vsize = r.bytes.readUInt32LE(0);
      let value: Buffer;
      if (type & XATTR_VALUE_OOL) {
        if (vsize !== 8) throw new CorruptError(`xattr ${shown(name)} has an out-of-line reference of ${vsize} bytes`);
        r = await this.reader.read(r.pos, r.offset, 8, this.kvEnd);
        const vref = r.bytes.readBigUInt64LE(0);
        // The referenced record is a plain value (u32 size + bytes); following
        // it once, never recursively, rules out reference loops.
        const at = await this.reader.read(this.kvStart + Number(vref >> 16n), Number(vref & 0xffffn), 4, this.kvEnd);
        const olen = at.bytes.readUInt32LE(0);
        if (olen > XATTR_SIZE_MAX) throw new CorruptError(`xattr ${shown(name)} value of ${olen} bytes is too long`);
        value = Buffer.from((await this.reader.read(at.pos, at.offset, olen, this.kvEnd)).bytes);
      } else {
        if (vsize > XATTR_SIZE_MAX) throw new CorruptError(`xattr ${shown(name)} value of ${vsize} bytes is too long`);
        r = await this.reader.read(r.pos, r.offset, vsize, this.kvEnd);
        value = Buffer.from(r.bytes);
      }
      pos = r.pos;
      offset = r.offset;
      out.push({ name, value });
    }
    return out;
  }
}

/** A name for messages: one character per byte, quoted (names need not be UTF-8). */
function shown(name: Buffer): string {
  return JSON.stringify(name.toString('latin1'));
}
