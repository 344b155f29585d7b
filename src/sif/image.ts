/**
 * SifImage: a validated SIF file, its header and descriptor table.
 *
 *   offset 0      +-------------------------------+
 *                 | global header (128 B)         |  header.ts
 *                 | zeros up to DescriptorsOffset |
 *   4096          +-------------------------------+
 *                 | descriptor 1 (585 B) ---------+--- Offset/Size --+
 *                 | descriptor 2                  |                  |
 *                 | ... DescriptorsTotal slots    |  descriptor.ts   |
 *   DataOffset    +-------------------------------+                  |
 *                 | object 1 (unaligned)          |                  |
 *                 | padding to 4096               |                  |
 *                 | object 2 (partition) <--------+------------------+
 *                 | ...                           |
 *                 +-------------------------------+  DataOffset + DataSize
 *
 * Opening checks everything a reader relies on, so later code can trust it:
 * the table and every used object lie inside the file, used objects do not
 * overlap, IDs are unique and non-zero, at most one primary partition.
 * Any failure is one CorruptError naming the file.
 *
 * Edits (add, delete, setPrimary) follow siftool's order so a failure leaves
 * the file as it was: everything is validated first, then object data is
 * written past the current data, then the changed descriptor slots, then the
 * header. If any write fails, the saved header and slots are written back and
 * the file is cut back to its original size.
 *
 * Edits on one SifImage are serialised; two processes editing one file are
 * not coordinated (siftool does not lock either).
 */
import { CorruptError, UsageError, inFile } from '../errors.js';
import {
  Descriptor,
  DESCRIPTOR_SIZE,
  decodeDescriptor,
  encodeDescriptor,
  NAME_SIZE,
  unusedDescriptor,
  type RawDescriptor,
} from './descriptor.js';
import { createHash, randomUUID } from 'node:crypto';
import {
  encodeCryptoMessageExtra,
  encodeOciDigest,
  encodePartitionExtra,
  encodeSbomExtra,
  encodeSignatureExtra,
  EXTRA_SIZE,
} from './extra.js';
import {
  decodeHeader,
  encodeHeader,
  HEADER_SIZE,
  headerArch,
  LAUNCH_SCRIPT_SIZE,
  SIF_VERSION,
  type SifHeader,
} from './header.js';
import {
  HostFileStorage,
  hostFileSize,
  MemoryStorage,
  readFileChunks,
  removeCreatedFile,
  type SifStorage,
} from '../io/growable-file.js';
import { archBytes, archFromBytes, DataType, dataTypeLabel, GROUP_MASK, isKnownDataType, PartType, ZERO_TIME } from './types.js';

export interface OpenOptions {
  writable?: boolean;
}

const FREE_SLOT = unusedDescriptor();

/** Objects beyond this many bytes are not read into memory in one piece. */
const MAX_READ_OBJECT = 1 << 30;

/** How far DataOffset + DataSize may point past the end of the file before an add refuses. */
const MAX_DATA_SIZE_OVERHANG = 1 << 30;

export class SifImage {
  readonly path: string;
  private storage: SifStorage;
  private hdr: SifHeader;
  private raws: RawDescriptor[];
  private fileSize: number;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(storage: SifStorage, hdr: SifHeader, raws: RawDescriptor[], fileSize: number) {
    this.storage = storage;
    this.path = storage.name;
    this.hdr = hdr;
    this.raws = raws;
    this.fileSize = fileSize;
  }

  /** Opens and validates a SIF file; CorruptError naming the file if anything is wrong. */
  static async open(path: string, options: OpenOptions = {}): Promise<SifImage> {
    const storage = await HostFileStorage.open(path, options.writable ?? false);
    return SifImage.load(storage);
  }

  /** Validates a SIF held in memory (tests, fuzzing); edits change `storage.bytes`. */
  static async fromStorage(storage: SifStorage): Promise<SifImage> {
    return SifImage.load(storage);
  }

  static async fromBytes(bytes: Buffer, name = '<memory>'): Promise<SifImage> {
    return SifImage.load(new MemoryStorage(bytes, { name, writable: true }));
  }

  private static async load(storage: SifStorage): Promise<SifImage> {
    try {
      return await inFile(storage.name, async () => {
        const fileSize = await storage.size();
        const hdr = decodeHeader(await storage.read(0, HEADER_SIZE));
        const raws = await readDescriptorTable(storage, hdr, fileSize);
        validate(hdr, raws, fileSize);
        return new SifImage(storage, hdr, raws, fileSize);
      });
    } catch (err) {
      await storage.close();
      throw err;
    }
  }

  /** A copy of the decoded header. */
  get header(): SifHeader {
    return { ...this.hdr };
  }

  /** The primary architecture (Go name) from the header, "unknown" if unset. */
  get primaryArch(): string {
    return headerArch(this.hdr);
  }

  get size(): number {
    return this.fileSize;
  }

  get writable(): boolean {
    return this.storage.writable;
  }

  /** Used descriptors in slot order. */
  descriptors(filter?: (d: Descriptor) => boolean): Descriptor[] {
    const out: Descriptor[] = [];
    this.raws.forEach((r, slot) => {
      if (!r.used) return;
      const d = new Descriptor(r, slot);
      if (!filter || filter(d)) out.push(d);
    });
    return out;
  }

  /** The used descriptor with this ID, or undefined. */
  descriptor(id: number): Descriptor | undefined {
    const slot = this.raws.findIndex((r) => r.used && r.id === id);
    return slot < 0 ? undefined : new Descriptor(this.raws[slot]!, slot);
  }

  /** The partition whose type is PrimSys, if any (validated to be at most one). */
  primaryPartition(): Descriptor | undefined {
    return this.descriptors(isPrimaryPartition)[0];
  }

  /** The object's bytes (objects over 1 GiB: use readObjectAt or a FileRegion). */
  async readObject(id: number): Promise<Buffer> {
    const d = this.requireDescriptor(id);
    if (d.size > MAX_READ_OBJECT) {
      throw new UsageError(`object ${id} is ${d.size} bytes, too large to read in one piece`, this.path);
    }
    return this.readObjectAt(id, 0, d.size);
  }

  /** `length` bytes at `position` inside object `id` (bounds-checked against the object). */
  async readObjectAt(id: number, position: number, length: number): Promise<Buffer> {
    const d = this.requireDescriptor(id);
    if (
      !Number.isSafeInteger(position) ||
      !Number.isSafeInteger(length) ||
      position < 0 ||
      length < 0 ||
      position + length > d.size
    ) {
      throw new UsageError(`read of ${length} bytes at ${position} lies outside object ${id} (${d.size} bytes)`, this.path);
    }
    const b = await this.storage.read(d.offset + position, length);
    if (b.length !== length) throw new CorruptError(`file shrank while reading object ${id}`, this.path);
    return b;
  }

  // ---- edits -------------------------------------------------------------

  /**
   * Edits run one at a time, so a caller never sees a half-applied edit, and
   * their errors name the file.
   */
  private edit<T>(fn: () => Promise<T>): Promise<T> {
    const named = (): Promise<T> => inFile(this.path, fn);
    const run = this.queue.then(named, named);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** File offset of descriptor slot `slot`. */
  private slotPos(slot: number): number {
    return this.hdr.descriptorsOffset + slot * DESCRIPTOR_SIZE;
  }

  private requireWritable(): void {
    if (!this.storage.writable) throw new UsageError('image is opened read-only', this.path);
  }

  /**
   * Adds an object in the first free slot (ID = slot + 1), at
   * DataOffset + DataSize rounded up to its alignment, as sylabs/sif 2.8
   * does. Returns the new descriptor.
   */
  add(input: AddInput, options: EditOptions = {}): Promise<Descriptor> {
    return this.edit(() => this.addNow(input, options));
  }

  private async addNow(input: AddInput, options: EditOptions): Promise<Descriptor> {
    this.requireWritable();
    const t = editTime(options);
    const prepared = prepareInput(input);
    const slot = this.raws.findIndex((r) => !r.used);
    if (slot < 0) throw new UsageError(`descriptor table is full (all ${this.raws.length} slots used)`);
    const id = slot + 1;
    if (this.raws.some((r) => r.used && r.id === id)) {
      throw new CorruptError(`ID ${id} of free slot ${slot} is already used by another descriptor`);
    }
    if (prepared.partition?.partType === PartType.PrimSys && this.primaryPartition()) {
      throw new UsageError('image already contains a primary partition');
    }
    const dataSize = Buffer.isBuffer(input.data) ? input.data.length : await hostFileSize(input.data.path);
    const unaligned = this.hdr.dataOffset + this.hdr.dataSize;
    const offset = nextAligned(unaligned, prepared.alignment);
    // DataOffset + DataSize passes the end of the file only by the padding of
    // empty objects at the end; a header claiming far more would make a huge
    // sparse file.
    if (unaligned > this.fileSize + MAX_DATA_SIZE_OVERHANG) {
      throw new CorruptError(
        `header data size ${this.hdr.dataSize} puts the next object ${unaligned - this.fileSize} bytes past the end of the file`,
      );
    }
    if (!Number.isSafeInteger(offset + dataSize)) throw new UsageError(`object would end past 2^53 bytes`);
    for (const r of this.raws) {
      if (r.used && r.size > 0 && dataSize > 0 && offset < r.offset + r.size && r.offset < offset + dataSize) {
        throw new CorruptError(`header data size ${this.hdr.dataSize} puts a new object at ${offset}, inside object ${r.id}`);
      }
    }

    const slotPos = this.slotPos(slot);
    const saved = await this.saveForRollback(slotPos);
    try {
      // Only OCI objects record a digest (computed while writing, as sylabs/sif does).
      const hash = prepared.ociDigest ? createHash('sha256') : undefined;
      let written = 0;
      if (Buffer.isBuffer(input.data)) {
        if (input.data.length > 0) await this.storage.write(offset, input.data);
        hash?.update(input.data);
        written = input.data.length;
      } else {
        for await (const chunk of readFileChunks(input.data.path, dataSize)) {
          await this.storage.write(offset + written, chunk);
          hash?.update(chunk);
          written += chunk.length;
        }
        if (written !== dataSize) throw new UsageError('file shrank while being added', input.data.path);
      }
      const objectTime = input.time ?? t;
      const raw: RawDescriptor = {
        dataType: input.dataType,
        used: true,
        id,
        groupId: (prepared.groupId | GROUP_MASK) >>> 0,
        linkedId: prepared.linkedId,
        offset,
        size: written,
        sizeWithPadding: offset - unaligned + written,
        createdAt: objectTime,
        modifiedAt: objectTime,
        uid: 0,
        gid: 0,
        name: prepared.name,
        extra: hash ? encodeOciDigest(`sha256:${hash.digest('hex')}`) : prepared.extra,
      };
      const hdr: SifHeader = {
        ...this.hdr,
        descriptorsFree: this.hdr.descriptorsFree - 1,
        dataSize: this.hdr.dataSize + raw.sizeWithPadding,
        modifiedAt: t,
      };
      if (prepared.partition?.partType === PartType.PrimSys) hdr.arch = archBytes(prepared.partition.arch);
      await this.storage.sync();
      await this.storage.write(slotPos, encodeDescriptor(raw));
      await this.storage.write(0, encodeHeader(hdr));
      await this.storage.sync();
      this.raws[slot] = raw;
      this.hdr = hdr;
      this.fileSize = Math.max(saved.fileSize, written > 0 ? offset + written : 0);
      return new Descriptor(raw, slot);
    } catch (err) {
      await this.rollback(saved);
      throw err;
    }
  }

  /**
   * Sets the size of object `id`, which must be the last object in the file
   * (nothing lies after it), as resizing a SIF's overlay partition needs: the
   * descriptor's Size and SizeWithPadding and the header's DataSize change by
   * the difference, and the file is cut or extended (with zeros) to the new
   * end. The object's bytes are the caller's to have made valid first.
   */
  resizeLastObject(id: number, size: number, options: EditOptions = {}): Promise<Descriptor> {
    return this.edit(async () => {
      this.requireWritable();
      const d = this.requireDescriptor(id);
      const r = d.raw;
      if (!Number.isSafeInteger(size) || size <= 0) throw new UsageError(`bad object size ${size}`);
      if (this.descriptors().some((o) => o.id !== id && o.offset + o.size > r.offset)) {
        throw new UsageError(`object ${id} is not the last object in the file, so it cannot change size`);
      }
      const delta = size - r.size;
      const raw: RawDescriptor = { ...r, size, sizeWithPadding: r.sizeWithPadding + delta, modifiedAt: editTime(options) };
      const hdr: SifHeader = { ...this.hdr, dataSize: this.hdr.dataSize + delta, modifiedAt: editTime(options) };
      const slotPos = this.slotPos(d.slot);
      const saved = await this.saveForRollback(slotPos);
      try {
        if (delta > 0) await this.storage.truncate(r.offset + size);
        await this.storage.write(slotPos, encodeDescriptor(raw));
        await this.storage.write(0, encodeHeader(hdr));
        await this.storage.sync();
        if (delta < 0) await this.storage.truncate(r.offset + size);
      } catch (err) {
        await this.rollback(saved);
        throw err;
      }
      this.raws[d.slot] = raw;
      this.hdr = hdr;
      this.fileSize = r.offset + size;
      return new Descriptor(raw, d.slot);
    });
  }

  /**
   * Deletes object `id`: its descriptor is zeroed and DescriptorsFree
   * incremented; the data stays unless `zero` (overwrite with zeros) or
   * `compact` (only for the last object: cut the file and DataSize back).
   * Deleting the primary partition resets the header arch to "00".
   */
  delete(id: number, options: DeleteOptions = {}): Promise<void> {
    return this.edit(() => this.deleteNow(id, options));
  }

  private async deleteNow(id: number, options: DeleteOptions): Promise<void> {
    this.requireWritable();
    const d = this.requireDescriptor(id);
    const r = d.raw;
    const t = editTime(options);
    const end = r.offset + r.size;
    const hdr: SifHeader = { ...this.hdr, descriptorsFree: this.hdr.descriptorsFree + 1, modifiedAt: t };
    if (isPrimaryPartition(d)) hdr.arch = archBytes('unknown');
    let cutAt: number | undefined;
    if (options.compact) {
      if (this.descriptors().some((o) => o.offset + o.size > end)) {
        throw new UsageError(`object ${id} is not the last object; only the last one can be compacted`);
      }
      cutAt = end - r.sizeWithPadding;
      hdr.dataSize = this.hdr.dataSize - r.sizeWithPadding;
      if (cutAt < this.hdr.dataOffset || hdr.dataSize < 0) {
        throw new CorruptError(`object ${id} has a padded size (${r.sizeWithPadding}) larger than the data section`);
      }
    }
    const slotPos = this.slotPos(d.slot);
    const saved = await this.saveForRollback(slotPos);
    try {
      await this.storage.write(slotPos, Buffer.alloc(DESCRIPTOR_SIZE));
      await this.storage.write(0, encodeHeader(hdr));
      await this.storage.sync();
    } catch (err) {
      await this.rollback(saved);
      throw err;
    }
    // The object is gone from the table; what follows only touches unreferenced bytes.
    this.raws[d.slot] = FREE_SLOT;
    this.hdr = hdr;
    if (options.zero) {
      const zeros = Buffer.alloc(Math.min(r.size, 1 << 20));
      for (let done = 0; done < r.size; done += zeros.length) {
        await this.storage.write(r.offset + done, zeros.subarray(0, Math.min(zeros.length, r.size - done)));
      }
    }
    if (cutAt !== undefined) {
      await this.storage.truncate(cutAt);
      this.fileSize = cutAt;
    }
    await this.storage.sync();
  }

  /**
   * Makes partition `id` the primary system partition (sylabs/sif SetPrimPart):
   * it must be a System partition (already primary: nothing is written); the
   * old primary becomes System; the header arch follows the new primary.
   * The partition's own arch bytes are kept, unless `siftoolArchQuirk`:
   * sylabs/sif 2.8 (Debian's siftool) stores the first 3 letters of the Go
   * arch name there ("amd" for amd64, read back as "unknown"), fixed
   * upstream in 89d461d; the quirk reproduces that byte for byte.
   */
  setPrimary(id: number, options: SetPrimaryOptions = {}): Promise<void> {
    return this.edit(() => this.setPrimaryNow(id, options));
  }

  private async setPrimaryNow(id: number, options: SetPrimaryOptions): Promise<void> {
    this.requireWritable();
    const d = this.requireDescriptor(id);
    const p = d.partition;
    if (!p) throw new UsageError(`object ${id} is not a partition`);
    if (p.partType === PartType.PrimSys) return;
    if (p.partType !== PartType.System) throw new UsageError(`object ${id} is not a system partition`);
    const t = editTime(options);
    const old = this.primaryPartition();
    const changed: [number, RawDescriptor][] = [
      [
        d.slot,
        {
          ...d.raw,
          extra: encodePartitionExtra(
            p.fsType,
            PartType.PrimSys,
            options.siftoolArchQuirk ? Buffer.from(p.arch.slice(0, 3), 'latin1') : p.archBytes,
          ),
        },
      ],
    ];
    if (old) {
      const op = old.partition!;
      const oldArch = options.siftoolArchQuirk ? op.arch : op.archBytes;
      changed.push([old.slot, { ...old.raw, extra: encodePartitionExtra(op.fsType, PartType.System, oldArch) }]);
    }
    const hdr: SifHeader = { ...this.hdr, arch: archBytes(p.arch), modifiedAt: t };
    const saved = await this.saveForRollback(...changed.map(([slot]) => this.slotPos(slot)));
    try {
      for (const [slot, raw] of changed) {
        await this.storage.write(this.slotPos(slot), encodeDescriptor(raw));
      }
      await this.storage.write(0, encodeHeader(hdr));
      await this.storage.sync();
    } catch (err) {
      await this.rollback(saved);
      throw err;
    }
    for (const [slot, raw] of changed) this.raws[slot] = raw;
    this.hdr = hdr;
  }

  private async saveForRollback(...slotPositions: number[]): Promise<SavedState> {
    return {
      fileSize: await this.storage.size(),
      header: await this.storage.read(0, HEADER_SIZE),
      slots: await Promise.all(slotPositions.map(async (pos) => ({ pos, bytes: await this.storage.read(pos, DESCRIPTOR_SIZE) }))),
    };
  }

  /** Best effort: put back the bytes an edit may have changed, and the file size. */
  private async rollback(saved: SavedState): Promise<void> {
    try {
      for (const s of saved.slots) await this.storage.write(s.pos, s.bytes);
      await this.storage.write(0, saved.header);
      await this.storage.truncate(saved.fileSize);
      await this.storage.sync();
    } catch {
      // The original error is the one worth reporting.
    }
  }

  /** Creates a new SIF file (overwriting `path`, mode 0755, as `siftool new`), open for writing. */
  static async create(path: string, options: CreateOptions = {}): Promise<SifImage> {
    const bytes = encodeEmptyImage(options);
    const storage = await HostFileStorage.create(path);
    try {
      await storage.write(HEADER_SIZE, bytes.subarray(HEADER_SIZE));
      await storage.write(0, bytes.subarray(0, HEADER_SIZE));
      await storage.sync();
      const image = await SifImage.load(storage);
      for (const o of options.objects ?? []) await image.add(o, createEditOptions(options));
      return image;
    } catch (err) {
      await storage.close();
      await removeCreatedFile(path);
      throw err;
    }
  }

  /** The same as create, in memory (tests, fuzzing). */
  static async createInMemory(options: CreateOptions = {}, name = '<memory>'): Promise<SifImage> {
    const image = await SifImage.load(new MemoryStorage(encodeEmptyImage(options), { name }));
    for (const o of options.objects ?? []) await image.add(o, createEditOptions(options));
    return image;
  }

  close(): Promise<void> {
    return this.storage.close();
  }

  private requireDescriptor(id: number): Descriptor {
    const d = this.descriptor(id);
    if (!d) throw new UsageError(`no object with ID ${id}`, this.path);
    return d;
  }
}

export function isPrimaryPartition(d: Descriptor): boolean {
  return d.partition?.partType === PartType.PrimSys;
}

async function readDescriptorTable(storage: SifStorage, h: SifHeader, fileSize: number): Promise<RawDescriptor[]> {
  if (fileSize < HEADER_SIZE) throw new CorruptError(`truncated SIF header (${fileSize} of ${HEADER_SIZE} bytes)`);
  // The count is bounded by the file before anything is allocated.
  const tableBytes = h.descriptorsTotal * DESCRIPTOR_SIZE;
  if (h.descriptorsSize !== tableBytes) {
    throw new CorruptError(
      `descriptor table size ${h.descriptorsSize} does not match ${h.descriptorsTotal} descriptors of ${DESCRIPTOR_SIZE} bytes`,
    );
  }
  if (h.descriptorsOffset > fileSize || tableBytes > fileSize - h.descriptorsOffset) {
    throw new CorruptError(
      `descriptor table (bytes ${h.descriptorsOffset}-${h.descriptorsOffset + tableBytes}) extends past the end of the file (${fileSize} bytes)`,
    );
  }
  const table = await storage.read(h.descriptorsOffset, tableBytes);
  if (table.length !== tableBytes) throw new CorruptError('file shrank while reading the descriptor table');
  const raws: RawDescriptor[] = [];
  for (let i = 0; i < h.descriptorsTotal; i++) {
    // Free slots are skipped without decoding: only their Used byte matters.
    const at = i * DESCRIPTOR_SIZE;
    raws.push(table[at + 4] === 0 ? FREE_SLOT : decodeDescriptor(table, i, at));
  }
  return raws;
}

function validate(h: SifHeader, raws: RawDescriptor[], fileSize: number): void {
  const tableEnd = h.descriptorsOffset + h.descriptorsSize;
  if (h.dataOffset < tableEnd) {
    throw new CorruptError(`data offset ${h.dataOffset} lies inside the descriptor table (ends at ${tableEnd})`);
  }
  if (h.dataOffset > fileSize) {
    throw new CorruptError(`data offset ${h.dataOffset} lies past the end of the file (${fileSize} bytes)`);
  }
  // DescriptorsFree is only displayed (siftool finds free slots by scanning), so a
  // count that disagrees with the table is tolerated, as siftool does.
  const used = raws.filter((r) => r.used);
  const ids = new Set<number>();
  let primaries = 0;
  for (const r of used) {
    const what = `object ${r.id}`;
    if (r.id === 0) throw new CorruptError('a used descriptor has ID 0');
    if (ids.has(r.id)) throw new CorruptError(`two descriptors have ID ${r.id}`);
    ids.add(r.id);
    if (r.size < 0 || r.offset < 0 || r.sizeWithPadding < r.size) {
      throw new CorruptError(
        `${what} has bad offset/size (offset ${r.offset}, size ${r.size}, with padding ${r.sizeWithPadding})`,
      );
    }
    if (r.offset < h.dataOffset) {
      throw new CorruptError(`${what} at offset ${r.offset} lies before the data section (${h.dataOffset})`);
    }
    if (r.offset > fileSize || r.size > fileSize - r.offset) {
      throw new CorruptError(
        `${what} (bytes ${r.offset}-${r.offset + r.size}) extends past the end of the file (${fileSize} bytes)`,
      );
    }
    if (r.dataType === DataType.Partition && r.extra.readInt32LE(4) === PartType.PrimSys) primaries++;
  }
  if (primaries > 1) throw new CorruptError(`${primaries} primary partitions (at most one is allowed)`);
  const spans = used.filter((r) => r.size > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < spans.length; i++) {
    const a = spans[i - 1]!;
    const b = spans[i]!;
    if (a.offset + a.size > b.offset) {
      throw new CorruptError(
        `objects ${a.id} (bytes ${a.offset}-${a.offset + a.size}) and ${b.id} (bytes ${b.offset}-${b.offset + b.size}) overlap`,
      );
    }
  }
}

interface SavedState {
  fileSize: number;
  header: Buffer;
  slots: { pos: number; bytes: Buffer }[];
}

/** Bytes added from a Buffer or streamed from a host file. */
export type ObjectData = Buffer | { path: string };

export interface AddInput {
  /** types.ts DataType (0x4001..0x400B). */
  dataType: number;
  data: ObjectData;
  /** Group 1..0x0FFFFFFF, or null for none. Default 1, as sylabs/sif's library; siftool's CLI passes null. */
  groupId?: number | null;
  /** Link to an object ID (siftool --link). */
  linkedId?: number;
  /** Link to a group (signatures link to the group they sign). */
  linkedGroupId?: number;
  /** Default 4096 for partitions, else 0 (none). */
  alignment?: number;
  /** At most 128 bytes. Default: no name. */
  name?: string | Buffer;
  /** Required for DataType.Partition; `arch` is a Go arch name (amd64, arm64, ...). */
  partition?: { fsType: number; partType: number; arch: string };
  /** Signature extras; `entity` is the signer's 20-byte fingerprint. */
  signature?: { hashType: number; entity: Uint8Array };
  cryptoMessage?: { formatType: number; messageType: number };
  sbom?: { format: number };
  /** Object CreatedAt/ModifiedAt (Unix seconds); default: the edit's time. */
  time?: number;
}

export interface EditOptions {
  /** Unix seconds for the header's ModifiedAt and new objects' times; default now. */
  time?: number;
  /** Store Go's zero time, for byte-identical output (sylabs/sif Opt*Deterministic). */
  deterministic?: boolean;
}

export interface SetPrimaryOptions extends EditOptions {
  /** Write the partition arch as Debian's siftool 2.8.3 does (see setPrimary). */
  siftoolArchQuirk?: boolean;
}

export interface DeleteOptions extends EditOptions {
  zero?: boolean;
  compact?: boolean;
}

export interface CreateOptions {
  /** At most 31 bytes, e.g. "#!/usr/bin/env run-singularity\n". */
  launchScript?: string;
  /** UUID string or 16 bytes; default random (all zero when deterministic, unless given). */
  id?: string | Buffer;
  /** Zero UUID and Go's zero time everywhere. */
  deterministic?: boolean;
  /** Unix seconds; default now. */
  time?: number;
  /** Default 48. */
  descriptorCapacity?: number;
  /** Default 4096. */
  descriptorsOffset?: number;
  /** Objects added right after creation, with the creation time. */
  objects?: AddInput[];
}

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

function checkTime(t: number, what: string): number {
  if (!Number.isSafeInteger(t)) throw new UsageError(`${what} ${t} is not a whole number of seconds`);
  return t;
}

function editTime(o: EditOptions): number {
  return o.deterministic ? ZERO_TIME : checkTime(o.time ?? nowSeconds(), 'time');
}

function createEditOptions(o: CreateOptions): EditOptions {
  return o.deterministic ? { deterministic: true } : { time: o.time ?? nowSeconds() };
}

/** sylabs/sif nextAligned, bit for bit (it assumes a power of two but accepts any alignment). */
export function nextAligned(offset: number, alignment: number): number {
  const a = BigInt(alignment);
  const o = BigInt(offset);
  if (a !== 0n && o % a !== 0n) return Number((o & ~(a - 1n)) + a);
  return offset;
}

interface PreparedInput {
  groupId: number;
  linkedId: number;
  alignment: number;
  name: Buffer;
  extra: Buffer;
  partition?: { fsType: number; partType: number; arch: string };
  ociDigest: boolean;
}

const MAX_GROUP = 0x0fffffff;

function isInt32(v: number): boolean {
  return Number.isInteger(v) && v >= -0x80000000 && v <= 0x7fffffff;
}

/** Checks an AddInput completely before anything is written. */
function prepareInput(input: AddInput): PreparedInput {
  const t = input.dataType;
  if (!isKnownDataType(t)) {
    throw new UsageError(`unknown data type ${Number.isInteger(t) ? '0x' + t.toString(16) : String(t)}`);
  }
  const groupId = input.groupId === undefined ? 1 : (input.groupId ?? 0);
  if (!Number.isInteger(groupId) || groupId < 0 || groupId > MAX_GROUP || (input.groupId !== undefined && input.groupId === 0)) {
    throw new UsageError(`invalid group ID ${String(input.groupId)} (1..${MAX_GROUP}, or none)`);
  }
  let linkedId = 0;
  if (input.linkedId !== undefined && input.linkedGroupId !== undefined) {
    throw new UsageError('an object links to either an object or a group, not both');
  }
  if (input.linkedId !== undefined) {
    if (!Number.isInteger(input.linkedId) || input.linkedId < 1 || input.linkedId > 0xffffffff) {
      throw new UsageError(`invalid linked object ID ${input.linkedId}`);
    }
    linkedId = input.linkedId;
  }
  if (input.linkedGroupId !== undefined) {
    if (!Number.isInteger(input.linkedGroupId) || input.linkedGroupId < 1 || input.linkedGroupId > MAX_GROUP) {
      throw new UsageError(`invalid linked group ID ${input.linkedGroupId}`);
    }
    linkedId = (input.linkedGroupId | GROUP_MASK) >>> 0;
  }
  const alignment = input.alignment ?? (t === DataType.Partition ? 4096 : 0);
  if (!Number.isSafeInteger(alignment) || alignment < 0 || alignment > 2 ** 40) {
    throw new UsageError(`invalid alignment ${alignment}`);
  }
  const nameBytes =
    input.name === undefined ? Buffer.alloc(0) : Buffer.isBuffer(input.name) ? input.name : Buffer.from(input.name, 'utf8');
  if (nameBytes.length > NAME_SIZE) {
    throw new UsageError(`object name is too long (${nameBytes.length} bytes, at most ${NAME_SIZE})`);
  }
  const name = Buffer.alloc(NAME_SIZE);
  nameBytes.copy(name);

  const extras = [
    input.partition && 'partition',
    input.signature && 'signature',
    input.cryptoMessage && 'cryptoMessage',
    input.sbom && 'sbom',
  ].filter(Boolean);
  const expected =
    t === DataType.Partition
      ? 'partition'
      : t === DataType.Signature
        ? 'signature'
        : t === DataType.CryptoMessage
          ? 'cryptoMessage'
          : t === DataType.SBOM
            ? 'sbom'
            : undefined;
  for (const e of extras) {
    if (e !== expected) throw new UsageError(`${e} metadata given for a ${dataTypeLabel(t)} object`);
  }
  let extra: Buffer = Buffer.alloc(EXTRA_SIZE);
  if (t === DataType.Partition) {
    const p = input.partition;
    if (!p) throw new UsageError('a partition needs a filesystem type, partition type and architecture');
    if (!isInt32(p.fsType) || !isInt32(p.partType)) throw new UsageError('partition types must be 32-bit integers');
    if (archFromBytes(archBytes(p.arch)) === 'unknown') throw new UsageError(`unknown architecture: ${p.arch}`);
    extra = encodePartitionExtra(p.fsType, p.partType, p.arch);
  } else if (input.signature) {
    const s = input.signature;
    if (!isInt32(s.hashType)) throw new UsageError('signature hash type must be a 32-bit integer');
    if (s.entity.length > 256) throw new UsageError('signing entity is longer than 256 bytes');
    extra = encodeSignatureExtra(s.hashType, s.entity);
  } else if (input.cryptoMessage) {
    const c = input.cryptoMessage;
    if (!isInt32(c.formatType) || !isInt32(c.messageType)) throw new UsageError('crypto message types must be 32-bit integers');
    extra = encodeCryptoMessageExtra(c.formatType, c.messageType);
  } else if (input.sbom) {
    if (!isInt32(input.sbom.format)) throw new UsageError('SBOM format must be a 32-bit integer');
    extra = encodeSbomExtra(input.sbom.format);
  }
  if (input.time !== undefined) checkTime(input.time, 'object time');
  return {
    groupId,
    linkedId,
    alignment,
    name,
    extra,
    partition: input.partition,
    ociDigest: t === DataType.OCIRootIndex || t === DataType.OCIBlob,
  };
}

function parseUuid(id: string | Buffer): Buffer {
  if (Buffer.isBuffer(id)) {
    if (id.length !== 16) throw new UsageError(`an image ID is 16 bytes, not ${id.length}`);
    return Buffer.from(id);
  }
  const hex = id
    .replace(/^urn:uuid:/i, '')
    .replace(/^\{|\}$/g, '')
    .replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new UsageError(`invalid UUID: ${id}`);
  return Buffer.from(hex, 'hex');
}

/** Header plus an empty descriptor table, as sylabs/sif createContainer lays them out. */
export function encodeEmptyImage(o: CreateOptions): Buffer {
  const launch = Buffer.from(o.launchScript ?? '', 'utf8');
  if (launch.length >= LAUNCH_SCRIPT_SIZE) {
    throw new UsageError(`launch script is too long (${launch.length} bytes, at most ${LAUNCH_SCRIPT_SIZE - 1})`);
  }
  const total = o.descriptorCapacity ?? 48;
  if (!Number.isInteger(total) || total < 1 || total > 65536) throw new UsageError(`invalid descriptor capacity ${total}`);
  const descOffset = o.descriptorsOffset ?? 4096;
  if (!Number.isInteger(descOffset) || descOffset < HEADER_SIZE || descOffset > 1 << 30) {
    throw new UsageError(`invalid descriptor table offset ${descOffset}`);
  }
  const t = editTime(o);
  // An explicit ID wins over `deterministic`, as OptCreateWithID after OptCreateDeterministic does.
  const id = o.id !== undefined ? parseUuid(o.id) : o.deterministic ? Buffer.alloc(16) : parseUuid(randomUUID());
  const launchScript = Buffer.alloc(LAUNCH_SCRIPT_SIZE);
  launch.copy(launchScript);
  const descriptorsSize = total * DESCRIPTOR_SIZE;
  const hdr: SifHeader = {
    launchScript,
    version: Buffer.from(SIF_VERSION),
    arch: archBytes('unknown'),
    id,
    createdAt: t,
    modifiedAt: t,
    descriptorsFree: total,
    descriptorsTotal: total,
    descriptorsOffset: descOffset,
    descriptorsSize,
    dataOffset: descOffset + descriptorsSize,
    dataSize: 0,
  };
  const bytes = Buffer.alloc(descOffset + descriptorsSize);
  encodeHeader(hdr).copy(bytes, 0);
  return bytes;
}
