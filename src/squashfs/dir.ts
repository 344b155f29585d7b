import { CorruptError } from '../errors.js';
import type { DirEntry, FileType } from '../engine.js';
import { fileTypeOfInodeType, type DirInode } from './inode.js';
import { s16, u16, u32 } from './le.js';
import { MetaCursor, type MetadataReader } from './metablock.js';
import { METADATA_SIZE } from './superblock.js';

/**
 * Directory listings, in the directory table. A directory inode points at its
 * listing (start_block relative to directory_table_start, offset); the listing
 * is file_size - 3 bytes of runs, each a header then up to 256 entries whose
 * inodes share one inode-table metadata block:
 *
 *   header  0x00 u32 count (entries - 1)  0x04 u32 start_block (inode table)
 *           0x08 u32 inode_number (base)
 *   entry   0x00 u16 offset (in that inode block)  0x02 s16 inode_offset
 *           0x04 u16 type (basic 1-7)  0x06 u16 size (name length - 1)
 *           0x08 name[size + 1]
 *
 * Entries are sorted by name bytes (strcmp). Extended directory inodes carry
 * an index: for each metadata block of listing, the byte offset of the first
 * header in it and that header's first name, so a lookup can jump to the right
 * 8 KiB of listing instead of reading all of it.
 */

export interface RawDirEntry {
  name: Buffer;
  /** Inode reference: inode-table block << 16 | offset. */
  ref: number;
  type: FileType;
  inodeNumber: number;
}

export interface DirLimits {
  directoryTableStart: number;
  /** End of the directory table region (start of the next table). */
  directoryTableEnd: number;
  /** Size of the inode table, bounding header start_block. */
  inodeTableSize: number;
}

const HEADER_SIZE = 12;
const ENTRY_SIZE = 8;
const MAX_RUN = 256;

/**
 * Bytes of a listing, fetched from the metadata cursor a block (8 KiB) at a
 * time and parsed synchronously in between: one await per block rather than
 * per field, and memory bounded by one block whatever the listing claims.
 */
class ListingBytes {
  buf: Buffer<ArrayBufferLike> = Buffer.alloc(0);
  at = 0;
  constructor(
    private readonly cur: MetaCursor,
    /** Listing bytes not yet fetched from the cursor. */
    private unread: number,
    /** `buf` is always this reader's own copy (never a view of a cached block), so names may be views of it. */
    private readonly owned = false,
  ) {}

  get available(): number {
    return this.buf.length - this.at + this.unread;
  }

  /** Makes `n` bytes available at `at` (n <= available). */
  async ensure(n: number): Promise<void> {
    const have = this.buf.length - this.at;
    if (have >= n) return;
    const fetch = Math.min(this.unread, Math.max(n - have, METADATA_SIZE));
    const more = await this.cur.take(fetch);
    this.unread -= fetch;
    this.buf = have > 0 ? Buffer.concat([this.buf.subarray(this.at), more]) : this.owned ? Buffer.from(more) : more;
    this.at = 0;
  }
}

/**
 * Called per entry with the name as bytes [at, at + size) of `buf` (valid only
 * during the call, so lookups can compare without copying every name).
 */
type Visitor = (buf: Buffer, at: number, size: number, ref: number, type: FileType, inodeNumber: number) => boolean;

/** strcmp order of `name` against bytes [at, at + size) of `buf`; an inline loop beats a native call for short names. */
function compareName(name: Buffer, buf: Buffer, at: number, size: number): number {
  const n = Math.min(name.length, size);
  for (let i = 0; i < n; i++) {
    const d = name[i]! - buf[at + i]!;
    if (d !== 0) return d;
  }
  return name.length - size;
}

/** A copy of an entry's name, refused if it could not be a file name. */
function entryName(buf: Buffer, at: number, size: number): Buffer {
  const name = Buffer.allocUnsafe(size);
  buf.copy(name, 0, at, at + size);
  return checkName(name);
}

/** `name`, refused if it could not be a file name. */
function checkName(name: Buffer): Buffer {
  const size = name.length;
  // A loop: names are short, and Buffer.includes is a native call each.
  let bad = name[0] === 0x2e && (size === 1 || (size === 2 && name[1] === 0x2e));
  for (let i = 0; i < size && !bad; i++) bad = name[i] === 0x2f || name[i] === 0;
  if (bad) throw new CorruptError(`directory entry has invalid name ${JSON.stringify(name.toString('latin1'))}`);
  return name;
}

/**
 * Entries decoded between two yields to the event loop while a whole listing
 * is read: awaiting cached metadata only queues microtasks, so without this a
 * 20,000-entry directory decodes in one 25-34 ms stretch during which no other
 * request is answered (bench/engine-ab.mjs, "stall").
 */
const YIELD_EVERY = 256;

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Reads listing entries from a cursor for `length` bytes, calling `visit` for
 * each; `visit` returns false to stop early. Every step consumes at least 9
 * bytes of the bounded length, so this always ends. With `whole` (a whole
 * listing is read), lets the event loop run after every YIELD_EVERY entries
 * (at run boundaries), and reads into buffers of its own, so that names can
 * be views of them.
 */
async function walkListing(cur: MetaCursor, length: number, limits: DirLimits, visit: Visitor, whole = false): Promise<void> {
  const r = new ListingBytes(cur, length, whole);
  let sinceYield = 0;
  while (r.available > 0) {
    if (whole && sinceYield >= YIELD_EVERY) {
      sinceYield = 0;
      await yieldToLoop();
    }
    if (r.available < HEADER_SIZE) throw new CorruptError(`directory listing ends inside a header (${r.available} bytes left)`);
    if (r.buf.length - r.at < HEADER_SIZE) await r.ensure(HEADER_SIZE);
    const count = u32(r.buf, r.at) + 1;
    const startBlock = u32(r.buf, r.at + 4);
    const base = u32(r.buf, r.at + 8);
    r.at += HEADER_SIZE;
    if (count > MAX_RUN) throw new CorruptError(`directory header claims ${count} entries (at most ${MAX_RUN})`);
    if (startBlock >= limits.inodeTableSize)
      throw new CorruptError(`directory header points past the inode table (${startBlock})`);
    sinceYield += count;
    for (let i = 0; i < count; i++) {
      if (r.available < ENTRY_SIZE + 1) throw new CorruptError('directory listing ends inside an entry');
      if (r.buf.length - r.at < ENTRY_SIZE) await r.ensure(ENTRY_SIZE);
      const b = r.buf;
      const at = r.at;
      const offset = u16(b, at);
      const inodeNumber = base + s16(b, at + 2);
      const rawType = u16(b, at + 4);
      const size = u16(b, at + 6) + 1;
      r.at += ENTRY_SIZE;
      const type = fileTypeOfInodeType(rawType);
      if (type === null) throw new CorruptError(`directory entry has invalid type ${rawType}`);
      if (offset >= METADATA_SIZE) throw new CorruptError(`directory entry has inode offset ${offset}`);
      if (size > 256 || size > r.available) throw new CorruptError(`directory entry name of ${size} bytes is invalid`);
      if (r.buf.length - r.at < size) await r.ensure(size);
      const nameAt = r.at;
      r.at += size;
      if (!visit(r.buf, nameAt, size, startBlock * 65536 + offset, type, inodeNumber)) return;
    }
  }
}

/**
 * A directory's whole listing as engine entries (id = inode reference). The
 * names are views of buffers holding only this listing's bytes (no copy per
 * name, and no cached metadata block is pinned by them).
 */
export async function readListing(reader: MetadataReader, dir: DirInode, limits: DirLimits): Promise<DirEntry[]> {
  const out: DirEntry[] = [];
  const cur = new MetaCursor(reader, limits.directoryTableStart + dir.startBlock, dir.offset, limits.directoryTableEnd);
  await walkListing(
    cur,
    dir.fileSize - 3,
    limits,
    (buf, at, size, ref, type) => {
      out.push({ name: checkName(buf.subarray(at, at + size)), id: ref, type });
      return true;
    },
    true,
  );
  return out;
}

/**
 * Finds `name` in a directory. With an index, binary-search it for the last
 * run starting at or before `name`, then scan forward from there, stopping at
 * the first entry sorting after `name` (at most one index span plus one run).
 */
export async function lookupInListing(
  reader: MetadataReader,
  dir: DirInode,
  name: Buffer,
  limits: DirLimits,
): Promise<RawDirEntry | null> {
  let pos = limits.directoryTableStart + dir.startBlock;
  let offset = dir.offset;
  let skipped = 0;
  const index = dir.index;
  let lo = 0;
  let hi = index.length - 1;
  let best = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (Buffer.compare(index[mid]!.name, name) <= 0) {
      best = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  if (best >= 0) {
    const entry = index[best]!;
    pos = limits.directoryTableStart + entry.startBlock;
    offset = (dir.offset + entry.index) % METADATA_SIZE;
    skipped = entry.index;
  }
  let found: RawDirEntry | null = null;
  const cur = new MetaCursor(reader, pos, offset, limits.directoryTableEnd);
  await walkListing(cur, dir.fileSize - 3 - skipped, limits, (buf, at, size, ref, type, inodeNumber) => {
    const c = compareName(name, buf, at, size);
    if (c === 0) found = { name: entryName(buf, at, size), ref, type, inodeNumber };
    return c > 0;
  });
  return found;
}
