/**
 * A SIF object descriptor: 585 bytes (sylabs/sif pkg/sif/descriptor.go
 * `rawDescriptor`), a table of DescriptorsTotal of them at DescriptorsOffset.
 *
 *   0x00  DataType   i32       types.ts DataType
 *   0x04  Used       bool      1 byte, 0 or 1
 *   0x05  ID         u32       slot index + 1 when written by sif/siftool
 *   0x09  GroupID    u32       group | 0xF0000000; 0xF0000000 alone = no group
 *   0x0D  LinkedID   u32       object ID, or group | 0xF0000000 for a group link
 *   0x11  Offset     i64       absolute file offset of the object
 *   0x19  Size       i64
 *   0x21  SizeWithPadding i64  alignment gap before the object + Size
 *   0x29  CreatedAt  i64
 *   0x31  ModifiedAt i64
 *   0x39  UID        i64       deprecated, written 0
 *   0x41  GID        i64       deprecated, written 0
 *   0x49  Name[128]            NUL-padded
 *   0xC9  Extra[384]           extra.ts
 *
 * RawDescriptor is the record as stored; Descriptor is the read-only view
 * the rest of sifuse uses (group bits masked, extras decoded).
 */
import { CorruptError } from '../errors.js';
import {
  decodeCryptoMessageExtra,
  decodeOciDigest,
  decodePartitionExtra,
  decodeSbomExtra,
  decodeSignatureExtra,
  EXTRA_SIZE,
  type CryptoMessageExtra,
  type PartitionExtra,
  type SbomExtra,
  type SignatureExtra,
} from './extra.js';
import { readInt64, trimNul, writeInt64 } from './header.js';
import { DataType, GROUP_MASK, ZERO_TIME } from './types.js';

export const DESCRIPTOR_SIZE = 585;
export const NAME_SIZE = 128;

export interface RawDescriptor {
  dataType: number;
  used: boolean;
  id: number;
  groupId: number;
  linkedId: number;
  offset: number;
  size: number;
  sizeWithPadding: number;
  createdAt: number;
  modifiedAt: number;
  uid: number;
  gid: number;
  /** 128 raw bytes. */
  name: Buffer;
  /** 384 raw bytes. */
  extra: Buffer;
}

/**
 * Decodes one descriptor. An unused slot is returned as is (siftool ignores
 * its contents); a used one must have a 0/1 Used byte and in-range numbers.
 */
export function decodeDescriptor(table: Buffer, slot: number, at = 0): RawDescriptor {
  // `at` lets a whole table be decoded without a Buffer per slot; name and
  // extra are views into `table`, which the caller must not reuse.
  const b = at === 0 && table.length === DESCRIPTOR_SIZE ? table : table.subarray(at, at + DESCRIPTOR_SIZE);
  const usedByte = b[0x04]!;
  if (usedByte > 1) throw new CorruptError(`descriptor slot ${slot}: Used byte is ${usedByte}, not 0 or 1`);
  if (usedByte === 0) return unusedDescriptor(b.readInt32LE(0x00), b.readUInt32LE(0x05));
  const int64 = (off: number, name: string) => readInt64(b, off, `descriptor slot ${slot} ${name}`);
  return {
    dataType: b.readInt32LE(0x00),
    used: true,
    id: b.readUInt32LE(0x05),
    groupId: b.readUInt32LE(0x09),
    linkedId: b.readUInt32LE(0x0d),
    offset: int64(0x11, 'Offset'),
    size: int64(0x19, 'Size'),
    sizeWithPadding: int64(0x21, 'SizeWithPadding'),
    createdAt: int64(0x29, 'CreatedAt'),
    modifiedAt: int64(0x31, 'ModifiedAt'),
    uid: int64(0x39, 'UID'),
    gid: int64(0x41, 'GID'),
    name: b.subarray(0x49, 0x49 + NAME_SIZE),
    extra: b.subarray(0xc9, 0xc9 + EXTRA_SIZE),
  };
}

const EMPTY = Buffer.alloc(0);

/**
 * A free slot. siftool ignores everything in it but the Used byte, and so do
 * we; its bytes on disk are never rewritten except when an object takes it.
 */
export function unusedDescriptor(dataType = 0, id = 0): RawDescriptor {
  return {
    dataType,
    used: false,
    id,
    groupId: 0,
    linkedId: 0,
    offset: 0,
    size: 0,
    sizeWithPadding: 0,
    createdAt: 0,
    modifiedAt: 0,
    uid: 0,
    gid: 0,
    name: EMPTY,
    extra: EMPTY,
  };
}

export function encodeDescriptor(d: RawDescriptor): Buffer {
  const b = Buffer.alloc(DESCRIPTOR_SIZE);
  b.writeInt32LE(d.dataType, 0x00);
  b[0x04] = d.used ? 1 : 0;
  b.writeUInt32LE(d.id >>> 0, 0x05);
  b.writeUInt32LE(d.groupId >>> 0, 0x09);
  b.writeUInt32LE(d.linkedId >>> 0, 0x0d);
  writeInt64(b, 0x11, d.offset);
  writeInt64(b, 0x19, d.size);
  writeInt64(b, 0x21, d.sizeWithPadding);
  writeInt64(b, 0x29, d.createdAt);
  writeInt64(b, 0x31, d.modifiedAt);
  writeInt64(b, 0x39, d.uid);
  writeInt64(b, 0x41, d.gid);
  d.name.copy(b, 0x49, 0, NAME_SIZE);
  d.extra.copy(b, 0xc9, 0, EXTRA_SIZE);
  return b;
}

/** A used descriptor as the rest of sifuse sees it. Immutable; re-read after an edit. */
export class Descriptor {
  /** Index in the descriptor table (0-based). */
  readonly slot: number;
  readonly raw: RawDescriptor;

  constructor(raw: RawDescriptor, slot: number) {
    this.raw = raw;
    this.slot = slot;
  }

  get id(): number {
    return this.raw.id;
  }
  get dataType(): number {
    return this.raw.dataType;
  }
  /** Absolute offset of the object in the SIF file. */
  get offset(): number {
    return this.raw.offset;
  }
  get size(): number {
    return this.raw.size;
  }
  get sizeWithPadding(): number {
    return this.raw.sizeWithPadding;
  }
  /** The group (bits 0..27), or null for "no group". */
  get groupId(): number | null {
    const g = (this.raw.groupId & ~GROUP_MASK) >>> 0;
    return g === 0 ? null : g;
  }
  /** The linked object or group ID, or null when not linked. */
  get linkedId(): number | null {
    const l = (this.raw.linkedId & ~GROUP_MASK) >>> 0;
    return l === 0 ? null : l;
  }
  /** True when linkedId names a group rather than an object. */
  get linkedIsGroup(): boolean {
    return (this.raw.linkedId & GROUP_MASK) >>> 0 === GROUP_MASK;
  }
  /** Name bytes without NUL padding. */
  get nameBytes(): Buffer {
    return trimNul(this.raw.name);
  }
  get name(): string {
    return this.nameBytes.toString('utf8');
  }
  /** Unix seconds; null when unset (Go's zero time). */
  get createdAt(): number | null {
    return this.raw.createdAt === ZERO_TIME ? null : this.raw.createdAt;
  }
  get modifiedAt(): number | null {
    return this.raw.modifiedAt === ZERO_TIME ? null : this.raw.modifiedAt;
  }
  get partition(): PartitionExtra | undefined {
    return this.raw.dataType === DataType.Partition ? decodePartitionExtra(this.raw.extra) : undefined;
  }
  get signature(): SignatureExtra | undefined {
    return this.raw.dataType === DataType.Signature ? decodeSignatureExtra(this.raw.extra) : undefined;
  }
  get cryptoMessage(): CryptoMessageExtra | undefined {
    return this.raw.dataType === DataType.CryptoMessage ? decodeCryptoMessageExtra(this.raw.extra) : undefined;
  }
  get sbom(): SbomExtra | undefined {
    return this.raw.dataType === DataType.SBOM ? decodeSbomExtra(this.raw.extra) : undefined;
  }
  /** "sha256:..." for OCI root index and blob objects. */
  get ociDigest(): string | undefined {
    const t = this.raw.dataType;
    return t === DataType.OCIRootIndex || t === DataType.OCIBlob ? decodeOciDigest(this.raw.extra) : undefined;
  }
}
