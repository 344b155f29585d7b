import type { ByteSource } from '../io/byte-source.js';
import { CorruptError, inFile, NAMES_OWN_ERRORS, withErrno } from '../errors.js';
import {
  makedev,
  S_IFMT,
  S_IFREG,
  type DataRange,
  type DirEntry,
  type HostExtent,
  type InodeId,
  type ReadableFs,
  type Stat,
  type StatFs,
} from '../engine.js';
import { BlockCache } from './cache.js';
import { decompressorFor, type Decompressor } from './compress/index.js';
import { decodeCompressorOptions, type CompressorOptions } from './compress/options.js';
import { lookupInListing, readListing, type DirLimits } from './dir.js';
import { ExportTable } from './export-table.js';
import { BlockMap, FileReader, mapBlocks } from './file.js';
import { FragmentTable } from './fragment-table.js';
import { IdTable } from './id-table.js';
import { inodeCost, readInode, SQUASHFS_INVALID_XATTR, type Inode, type InodeLimits } from './inode.js';
import { MetadataReader, type MetaBlock, type SyncMetaCursor } from './metablock.js';
import { decodeSuperblock, FLAG_COMPRESSOR_OPTIONS, METADATA_SIZE, SUPERBLOCK_SIZE, type Superblock } from './superblock.js';
import { XattrTable, type Xattr } from './xattr.js';

export interface SquashfsOptions {
  /** Decompressed metadata blocks (inode, directory and other tables). Default 8 MiB. */
  metadataCacheBytes?: number;
  /**
   * Decompressed data and fragment blocks. Default 8 MiB: behind a mount the
   * kernel's page cache holds file data, so this covers read-ahead and shared
   * fragments (read-all of the bench rootfs: peak RSS 148 -> 131 MB against
   * 32 MiB, CPU unchanged, bench/engine-ab.mjs; daemon peak over a FUSE
   * read-all 133-150 MB at 16 MiB, 126-132 at 8, for 1,497 block loads
   * instead of 1,495). Complete stored blocks are never cached.
   */
  dataCacheBytes?: number;
  /** Decoded inodes (with block maps). Default 4 MiB; xattr lists have their own 1 MiB. */
  inodeCacheBytes?: number;
  /** Decoded directory listings. Default 16 MiB (a 100,000-entry directory takes about 12). */
  listingCacheBytes?: number;
  /**
   * The metadata area (every table after the data) is read whole at open
   * and kept when it is at most this many bytes. Default 4 MiB; 0 never.
   */
  preloadMetadataBytes?: number;
  /** Blocks decoded ahead of a sequential reader. Default 4. */
  readAheadBlocks?: number;
  /**
   * Decompress read-ahead blocks on libuv's thread pool through the libraries'
   * async calls (xz, lzma, lz4; gzip where the source has no readBlock).
   * Default false. gzip and zstd blocks of a file region always read and
   * decompress there, as one sifuse_block job each (file.ts).
   */
  poolReadAhead?: boolean;
  /**
   * Lookups in one indexed (large) directory served through its index before
   * the whole listing is decoded and cached instead. Default 128.
   */
  listingAfterLookups?: number;
}

/** A decoded inode as cached, with what is derived from it on first use. */
class CachedInode {
  /** The Stat built on first getattr; callers get copies. */
  stat: Stat | null = null;
  private blockMap: BlockMap | null = null;

  constructor(
    readonly inode: Inode,
    readonly length: number,
    /** Where the data area ends (inode_table_start), bounding a file's blocks. */
    private readonly dataEnd: number,
  ) {}

  /**
   * A regular file's block positions, made on first use (a walk never needs
   * them), null for other kinds; CorruptError when its blocks run past the
   * data area.
   */
  get map(): BlockMap | null {
    if (this.blockMap === null && this.inode.kind === 'f') this.blockMap = mapBlocks(this.inode, this.dataEnd);
    return this.blockMap;
  }
}

interface CachedListing {
  entries: DirEntry[];
  /**
   * How lookups search it, settled on the first: 'sorted' (names in strcmp
   * order, as mksquashfs writes them: binary search) or, for a listing out of
   * order, a map by name.
   */
  byName: Map<string, DirEntry> | 'sorted' | null;
  length: number;
}

interface CachedXattrs {
  xattrs: Xattr[];
  length: number;
}

/**
 * A SquashFS 4.0 filesystem as a ReadableFs.
 *
 * InodeId is the 48-bit inode reference (inode-table block << 16 | offset), so
 * any id the engine hands out can be decoded without a table. Stat.ino is the
 * inode number stored in the inode (hard links share it).
 *
 * Caches (all byte-bounded LRU, see cache.ts): decompressed metadata blocks;
 * decoded inodes with their block maps; directory listings; xattr lists; and
 * decompressed data + fragment blocks. A hit costs no I/O and no decompression.
 */
export class SquashfsFs implements ReadableFs {
  readonly name: string;
  readonly rootId: InodeId;
  readonly writable = false;
  /** ref and unref do nothing: an image frees no inode. */
  readonly refsFree = true;
  readonly compressorOptions: CompressorOptions | null;
  private readonly inodes: BlockCache<CachedInode>;
  private readonly listings: BlockCache<CachedListing>;
  private readonly xattrCache: BlockCache<CachedXattrs>;
  private readonly dirLimits: DirLimits;
  private readonly inodeLimits: InodeLimits;
  private readonly fileReader: FileReader;
  /** Lookups served through the index, per directory not yet in the listing cache. */
  private readonly indexedLookups = new Map<InodeId, number>();
  private readonly listingAfterLookups: number;

  private constructor(
    readonly source: ByteSource,
    readonly superblock: Superblock,
    readonly decompressor: Decompressor,
    private readonly meta: MetadataReader,
    readonly dataCache: BlockCache<Buffer>,
    readonly metaCache: BlockCache<MetaBlock>,
    private readonly ids: IdTable,
    fragments: FragmentTable | null,
    private readonly xattrs: XattrTable | null,
    readonly exportTable: ExportTable | null,
    compressorOptions: CompressorOptions | null,
    options: SquashfsOptions,
  ) {
    const sb = superblock;
    this.name = source.name;
    this.rootId = sb.rootInode;
    this.compressorOptions = compressorOptions;
    this.inodes = new BlockCache(options.inodeCacheBytes ?? 4 << 20);
    this.listings = new BlockCache(options.listingCacheBytes ?? 16 << 20);
    this.xattrCache = new BlockCache(1 << 20);
    this.listingAfterLookups = options.listingAfterLookups ?? 128;
    const afterDir = [sb.fragmentTableStart, sb.lookupTableStart, sb.idTableStart, sb.xattrIdTableStart].filter(
      (p): p is number => p !== null && p > sb.directoryTableStart,
    );
    this.dirLimits = {
      directoryTableStart: sb.directoryTableStart,
      directoryTableEnd: Math.min(sb.bytesUsed, ...afterDir),
      inodeTableSize: sb.directoryTableStart - sb.inodeTableStart,
    };
    this.inodeLimits = {
      blockSize: sb.blockSize,
      blockLog: sb.blockLog,
      imageSize: sb.bytesUsed,
      directoryTableSize: this.dirLimits.directoryTableEnd - sb.directoryTableStart,
      inodeTableSize: this.dirLimits.inodeTableSize,
      fragments: sb.fragments,
      inodes: sb.inodes,
    };
    this.fileReader = new FileReader(source, decompressor, dataCache, fragments, sb.blockSize, {
      readAheadBlocks: options.readAheadBlocks ?? 4,
      poolReadAhead: options.poolReadAhead ?? false,
    });
  }

  static async open(source: ByteSource, options: SquashfsOptions = {}): Promise<SquashfsFs> {
    return inFile(source.name, async () => {
      if (source.size < SUPERBLOCK_SIZE) {
        throw new CorruptError(`image of ${source.size} bytes is too small for a SquashFS superblock`);
      }
      const sb = decodeSuperblock(await source.read(0, SUPERBLOCK_SIZE), source.size);
      const decompressor = decompressorFor(sb.compression);
      const metaCache = new BlockCache<MetaBlock>(options.metadataCacheBytes ?? 8 << 20);
      const meta = new MetadataReader(source, decompressor, metaCache, sb.bytesUsed);
      await meta.preload(sb.inodeTableStart, options.preloadMetadataBytes ?? 4 << 20);
      let compressorOptions: CompressorOptions | null = null;
      if (sb.flags & FLAG_COMPRESSOR_OPTIONS) {
        const block = await meta.block(SUPERBLOCK_SIZE);
        compressorOptions = decodeCompressorOptions(sb.compression, block.data);
      }
      const ids = await IdTable.open(source, meta, sb);
      const fragments = await FragmentTable.open(source, meta, sb);
      const xattrs = await XattrTable.open(source, meta, sb);
      const exportTable = await ExportTable.open(source, meta, sb);
      const dataCache = new BlockCache<Buffer>(options.dataCacheBytes ?? 8 << 20);
      const fs = new SquashfsFs(
        source,
        sb,
        decompressor,
        meta,
        dataCache,
        metaCache,
        ids,
        fragments,
        xattrs,
        exportTable,
        compressorOptions,
        options,
      );
      const root = await fs.inode(fs.rootId);
      if (root.kind !== 'd') throw new CorruptError('the root inode is not a directory');
      return fs;
    });
  }

  /**
   * Every method names this image on its CorruptError/UnsupportedError (each
   * path that can fail runs in `inFile(this.name, ...)`), so the
   * nameEngineErrors boundary needs no wrapper here.
   */
  get [NAMES_OWN_ERRORS](): string {
    return this.name;
  }

  /** Directories whose decoded listing is cached (for tests and stats). */
  get listingCacheEntries(): number {
    return this.listings.size;
  }

  /** The decoded inode for an id (cached). */
  inode(id: InodeId): Promise<Inode> {
    return this.cachedInode(id).then((c) => c.inode);
  }

  private cachedInode(id: InodeId): Promise<CachedInode> {
    const hit = this.inodes.peek(id);
    if (hit) return Promise.resolve(hit);
    return this.inodes.get(id, async () => {
      const pos = this.inodeBlock(id);
      const inode = await this.meta.decode(pos, id % 65536, this.superblock.directoryTableStart, 'inode', this.decodeInode);
      return this.cacheEntry(inode);
    });
  }

  private readonly decodeInode = (cur: SyncMetaCursor): Inode => readInode(cur, this.inodeLimits);

  /**
   * The metadata block inode reference `id` points into (its offset there is
   * id % 65536); CorruptError when it cannot be an inode.
   */
  private inodeBlock(id: InodeId): number {
    if (!Number.isSafeInteger(id) || id < 0 || id >= 2 ** 48) throw new CorruptError(`invalid inode reference ${id}`);
    const block = Math.floor(id / 65536);
    const offset = id % 65536;
    if (block >= this.inodeLimits.inodeTableSize || offset >= METADATA_SIZE) {
      throw new CorruptError(`inode reference ${block}:${offset} lies outside the inode table`);
    }
    return this.superblock.inodeTableStart + block;
  }

  private cacheEntry(inode: Inode): CachedInode {
    // The cost counts the block map the first read adds.
    const mapBytes = inode.kind === 'f' ? BlockMap.bytesFor(inode.blockSizes.length) : 0;
    return new CachedInode(inode, inodeCost(inode) + mapBytes, this.superblock.inodeTableStart);
  }

  /**
   * The inode decoded at once when its metadata is cached (a walk asks for
   * the inodes of one directory together; after the first, their blocks are
   * decompressed): no promise and no async frame. Undefined when a block is
   * missing; throws what the decoder throws.
   */
  private inodeNow(id: InodeId): CachedInode | undefined {
    const pos = this.inodeBlock(id);
    const inode = this.meta.decodeCached(pos, id % 65536, this.superblock.directoryTableStart, this.decodeInode);
    if (inode === undefined) return undefined;
    const c = this.cacheEntry(inode);
    this.inodes.set(id, c);
    return c;
  }

  /** ReadableFs.statNow: the cached Stat itself, or one decoded from cached metadata; undefined on a miss or an error. */
  statNow(id: InodeId): Stat | undefined {
    // A cached inode's Stat can fail too (an id index past the id table): getattr reports it.
    try {
      const c = this.inodes.peek(id);
      if (c) return (c.stat ??= this.statOf(c.inode));
      const fresh = this.inodeNow(id);
      return fresh ? (fresh.stat = this.statOf(fresh.inode)) : undefined;
    } catch {
      return undefined;
    }
  }

  getattr(id: InodeId): Promise<Stat> {
    // Hot path (FUSE getattr, readdirplus): a cached Stat is copied, and an
    // inode whose metadata is cached is decoded, without an async frame.
    const hit = this.inodes.peek(id)?.stat;
    if (hit) return Promise.resolve(copyStat(hit));
    let stat: Stat | undefined;
    try {
      const c = this.inodes.peek(id) ?? this.inodeNow(id);
      if (c) stat = c.stat ??= this.statOf(c.inode);
    } catch (err) {
      return inFile(this.name, () => Promise.reject(err));
    }
    if (stat) return Promise.resolve(copyStat(stat));
    return inFile(this.name, async () => {
      const c = await this.cachedInode(id);
      c.stat ??= this.statOf(c.inode);
      return copyStat(c.stat);
    });
  }

  private statOf(inode: Inode): Stat {
    let size = 0;
    let blocks = 0;
    if (inode.kind === 'f') {
      size = inode.fileSize;
      // As the kernel reports it (fs/squashfs/inode.c).
      blocks = Math.ceil((inode.fileSize - inode.sparse) / 512);
    } else if (inode.kind === 'd') {
      size = inode.fileSize;
    } else if (inode.kind === 'l') {
      size = inode.target.length;
    }
    let rdev = 0;
    if (inode.kind === 'b' || inode.kind === 'c') {
      // Stored as Linux new_encode_dev(): minor low byte, 12-bit major, rest of minor above.
      const major = (inode.rdev >>> 8) & 0xfff;
      const minor = (inode.rdev & 0xff) | ((inode.rdev >>> 12) & 0xfff00);
      rdev = makedev(major, minor);
    }
    return {
      ino: inode.inodeNumber,
      mode: inode.mode,
      nlink: inode.nlink,
      uid: this.ids.get(inode.uidIndex),
      gid: this.ids.get(inode.gidIndex),
      size,
      blocks,
      atime: inode.mtime,
      atimeNsec: 0,
      mtime: inode.mtime,
      mtimeNsec: 0,
      ctime: inode.mtime,
      ctimeNsec: 0,
      rdev,
      generation: 0,
    };
  }

  private listing(id: InodeId): Promise<CachedListing> {
    const hit = this.listings.peek(id);
    if (hit) return Promise.resolve(hit);
    return this.listings.get(id, async () => {
      const inode = await this.inode(id);
      if (inode.kind !== 'd') throw withErrno('ENOTDIR');
      const entries = await readListing(this.meta, inode, this.dirLimits);
      // Per entry: the object and its name view (112), and the name bytes with their 8-byte header.
      const length = entries.reduce((n, e) => n + 120 + e.name.length, 0);
      return { entries, byName: null, length };
    });
  }

  /** The cached listing itself: an immutable snapshot (ReadableFs.readdir), no copy per call. */
  readdir(dir: InodeId): Promise<readonly DirEntry[]> {
    const cached = this.listings.peek(dir);
    if (cached) return Promise.resolve(cached.entries);
    return inFile(this.name, async () => (await this.listing(dir)).entries);
  }

  lookup(dir: InodeId, name: Buffer): Promise<InodeId | null> {
    // Hot path (FUSE lookup): a cached listing answers without an async frame.
    const cached = this.listings.peek(dir);
    if (cached) return Promise.resolve(findInListing(cached, name));
    return inFile(this.name, async () => {
      const inode = await this.inode(dir);
      if (inode.kind !== 'd') throw withErrno('ENOTDIR');
      // Indexed (large) directories: jump through the index rather than
      // decoding and holding the whole listing, until the directory has
      // seen enough lookups that decoding it once (then O(1) per name) pays.
      if (inode.index.length > 0) {
        const n = (this.indexedLookups.get(dir) ?? 0) + 1;
        if (n < this.listingAfterLookups) {
          if (this.indexedLookups.size >= 1024) this.indexedLookups.clear();
          this.indexedLookups.set(dir, n);
          const e = await lookupInListing(this.meta, inode, name, this.dirLimits);
          return e ? e.ref : null;
        }
        this.indexedLookups.delete(dir);
      }
      return findInListing(await this.listing(dir), name);
    });
  }

  async read(id: InodeId, position: number, length: number): Promise<Buffer> {
    return inFile(this.name, async () => {
      if (!Number.isSafeInteger(position) || position < 0 || !Number.isSafeInteger(length) || length < 0) {
        throw withErrno('EINVAL', `read of ${length} bytes at ${position}`);
      }
      const c = await this.cachedInode(id);
      if (c.inode.kind === 'd') throw withErrno('EISDIR');
      if (c.inode.kind !== 'f') throw withErrno('EINVAL', 'not a regular file');
      return this.fileReader.read(c.inode, c.map!, position, length);
    });
  }

  async readInto(id: InodeId, position: number, into: Buffer): Promise<number> {
    return inFile(this.name, async () => {
      if (!Number.isSafeInteger(position) || position < 0) throw withErrno('EINVAL', `read at ${position}`);
      const c = await this.cachedInode(id);
      if (c.inode.kind === 'd') throw withErrno('EISDIR');
      if (c.inode.kind !== 'f') throw withErrno('EINVAL', 'not a regular file');
      return this.fileReader.readInto(c.inode, c.map!, position, into);
    });
  }

  async hostExtent(id: InodeId, position: number, length: number): Promise<HostExtent | null> {
    return inFile(this.name, async () => {
      if (!Number.isSafeInteger(position) || position < 0 || !Number.isSafeInteger(length) || length < 0) return null;
      const c = await this.cachedInode(id);
      if (c.inode.kind !== 'f') return null;
      return this.fileReader.hostExtent(c.inode, c.map!, position, length);
    });
  }

  async readlink(id: InodeId): Promise<Buffer> {
    return inFile(this.name, async () => {
      const inode = await this.inode(id);
      if (inode.kind !== 'l') throw withErrno('EINVAL', 'not a symbolic link');
      return Buffer.from(inode.target);
    });
  }

  private async xattrList(id: InodeId): Promise<Xattr[]> {
    const inode = await this.inode(id);
    if (inode.xattr === SQUASHFS_INVALID_XATTR) return [];
    if (!this.xattrs) throw new CorruptError(`inode ${inode.inodeNumber} has xattrs, but the image has no xattr table`);
    const table = this.xattrs;
    const c = await this.xattrCache.get(inode.xattr, async () => {
      const xattrs = await table.list(inode.xattr);
      return { xattrs, length: xattrs.reduce((n, x) => n + 64 + x.name.length + x.value.length, 0) };
    });
    return c.xattrs;
  }

  /** Copies of the cached names: a caller may keep or modify them. */
  async listxattr(id: InodeId): Promise<Buffer[]> {
    return inFile(this.name, async () => (await this.xattrList(id)).map((x) => Buffer.from(x.name)));
  }

  async getxattr(id: InodeId, name: Buffer): Promise<Buffer | null> {
    return inFile(this.name, async () => {
      const x = (await this.xattrList(id)).find((a) => a.name.equals(name));
      return x ? Buffer.from(x.value) : null;
    });
  }

  async statfs(): Promise<StatFs> {
    const sb = this.superblock;
    return {
      bsize: sb.blockSize,
      frsize: sb.blockSize,
      blocks: Math.ceil(sb.bytesUsed / sb.blockSize),
      bfree: 0,
      bavail: 0,
      files: sb.inodes,
      ffree: 0,
      namemax: 256,
    };
  }

  /** Whole-file range: a conservative answer the contract allows (holes reported as data). */
  async dataRanges(id: InodeId): Promise<DataRange[]> {
    const st = await this.getattr(id);
    if ((st.mode & S_IFMT) !== S_IFREG) throw withErrno('EINVAL', 'not a regular file');
    return st.size > 0 ? [{ offset: 0, length: st.size }] : [];
  }

  /** A read-only image frees nothing: references need no bookkeeping. */
  ref(_id: InodeId, _n?: number): Promise<void> {
    return Promise.resolve();
  }

  unref(_id: InodeId, _n?: number): Promise<void> {
    return Promise.resolve();
  }

  /** The InodeId of inode number `ino`, through the export table (null when the image has none). */
  async idOfInodeNumber(ino: number): Promise<InodeId | null> {
    if (!this.exportTable) return null;
    return inFile(this.name, () => this.exportTable!.refOf(ino));
  }

  /** Closes the underlying source. */
  async close(): Promise<void> {
    this.dataCache.clear();
    this.metaCache.clear();
    this.meta.clear();
    await this.source.close();
  }
}

/** A copy built as a literal: V8's object spread costs microseconds here. */
function copyStat(s: Stat): Stat {
  return {
    ino: s.ino,
    mode: s.mode,
    nlink: s.nlink,
    uid: s.uid,
    gid: s.gid,
    size: s.size,
    blocks: s.blocks,
    atime: s.atime,
    atimeNsec: s.atimeNsec,
    mtime: s.mtime,
    mtimeNsec: s.mtimeNsec,
    ctime: s.ctime,
    ctimeNsec: s.ctimeNsec,
    rdev: s.rdev,
    generation: s.generation,
  };
}

/** The id of `name` in a cached listing (see CachedListing.byName). */
function findInListing(listing: CachedListing, name: Buffer): InodeId | null {
  const entries = listing.entries;
  if (listing.byName === null) {
    let sorted = true;
    for (let i = 1; i < entries.length && sorted; i++) sorted = Buffer.compare(entries[i - 1]!.name, entries[i]!.name) < 0;
    if (sorted) listing.byName = 'sorted';
    else {
      const map = new Map<string, DirEntry>();
      for (const e of entries) map.set(e.name.toString('latin1'), e);
      listing.byName = map;
    }
  }
  if (listing.byName !== 'sorted') return listing.byName.get(name.toString('latin1'))?.id ?? null;
  let lo = 0;
  let hi = entries.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const e = entries[mid]!;
    const c = Buffer.compare(e.name, name);
    if (c === 0) return e.id;
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return null;
}
