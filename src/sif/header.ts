/**
 * The SIF global header: 128 bytes at offset 0 (sylabs/sif pkg/sif/sif.go
 * `type header`, written with Go's binary.Write: little-endian, no padding).
 *
 *   0x00  LaunchScript[32]   NUL-padded, e.g. "#!/usr/bin/env run-singularity\n"
 *   0x20  Magic[10]          "SIF_MAGIC\0"
 *   0x2A  Version[3]         "01\0"
 *   0x2D  Arch[3]            "02\0" = amd64 (types.ts ARCHES), from the primary partition
 *   0x30  ID[16]             RFC-4122 UUID bytes; all zero in deterministic images
 *   0x40  CreatedAt   i64    Unix seconds; ZERO_TIME = unset
 *   0x48  ModifiedAt  i64
 *   0x50  DescriptorsFree   i64
 *   0x58  DescriptorsTotal  i64
 *   0x60  DescriptorsOffset i64   4096 by default
 *   0x68  DescriptorsSize   i64   585 * DescriptorsTotal
 *   0x70  DataOffset        i64   DescriptorsOffset + DescriptorsSize
 *   0x78  DataSize          i64   grows by each added object's SizeWithPadding
 */
import { CorruptError } from '../errors.js';
import { archFromBytes } from './types.js';

export const HEADER_SIZE = 128;
export const LAUNCH_SCRIPT_SIZE = 32;
export const SIF_MAGIC = Buffer.from('SIF_MAGIC\0', 'latin1');
export const SIF_VERSION = Buffer.from('01\0', 'latin1');
const MAGIC_OFFSET = 0x20;
const VERSION_OFFSET = 0x2a;

export interface SifHeader {
  /** Raw 32 bytes, NUL-padded. */
  launchScript: Buffer;
  /** Raw 3 bytes ("01\0"). */
  version: Buffer;
  /** Raw 3 bytes; see types.ts archFromBytes. */
  arch: Buffer;
  /** 16 raw UUID bytes. */
  id: Buffer;
  createdAt: number;
  modifiedAt: number;
  descriptorsFree: number;
  descriptorsTotal: number;
  descriptorsOffset: number;
  descriptorsSize: number;
  dataOffset: number;
  dataSize: number;
}

/** True when the bytes (at least the first 45 of a file) carry SIF magic and version 01. */
export function isSifHeader(first: Uint8Array): boolean {
  const b = Buffer.from(first.buffer, first.byteOffset, first.byteLength);
  return (
    b.length >= VERSION_OFFSET + 3 &&
    b.subarray(MAGIC_OFFSET, MAGIC_OFFSET + 10).equals(SIF_MAGIC) &&
    b.subarray(VERSION_OFFSET, VERSION_OFFSET + 3).equals(SIF_VERSION)
  );
}

/** A little-endian int64 that must fit a JS safe integer (every real SIF's does). */
export function readInt64(b: Buffer, off: number, field: string): number {
  // Two 32-bit halves: exact below 2^53, and much cheaper than BigInt.
  const v = b.readInt32LE(off + 4) * 0x100000000 + b.readUInt32LE(off);
  if (!Number.isSafeInteger(v)) throw new CorruptError(`${field} ${b.readBigInt64LE(off)} is out of range`);
  return v;
}

export function writeInt64(b: Buffer, off: number, v: number): void {
  b.writeBigInt64LE(BigInt(v), off);
}

/** The version bytes as siftool prints them (trailing NULs trimmed). */
export function versionString(h: SifHeader): string {
  return trimNul(h.version).toString('latin1');
}

/** The launch script with its NUL padding removed. */
export function launchScriptString(h: SifHeader): string {
  return trimNul(h.launchScript).toString('latin1');
}

export function headerArch(h: SifHeader): string {
  return archFromBytes(h.arch);
}

/** Bytes up to the last non-NUL byte (Go's bytes.TrimRight(b, "\x00")). */
export function trimNul(b: Buffer): Buffer {
  let end = b.length;
  while (end > 0 && b[end - 1] === 0) end--;
  return b.subarray(0, end);
}

/**
 * Decodes the 128-byte header. Checks only what the header alone can show
 * (magic, version, field ranges); SifImage checks it against the file.
 */
export function decodeHeader(b: Buffer): SifHeader {
  if (b.length < MAGIC_OFFSET + SIF_MAGIC.length || !b.subarray(MAGIC_OFFSET, MAGIC_OFFSET + 10).equals(SIF_MAGIC)) {
    throw new CorruptError('not a SIF image (no SIF_MAGIC at offset 32)');
  }
  if (b.length < HEADER_SIZE) {
    throw new CorruptError(`truncated SIF header (${b.length} of ${HEADER_SIZE} bytes)`);
  }
  const version = Buffer.from(b.subarray(VERSION_OFFSET, VERSION_OFFSET + 3));
  if (!version.equals(SIF_VERSION)) {
    const shown = JSON.stringify(trimNul(version).toString('latin1'));
    throw new CorruptError(`unsupported SIF version ${shown} (only "01" is defined)`);
  }
  const h: SifHeader = {
    launchScript: Buffer.from(b.subarray(0x00, 0x20)),
    version,
    arch: Buffer.from(b.subarray(0x2d, 0x30)),
    id: Buffer.from(b.subarray(0x30, 0x40)),
    createdAt: readInt64(b, 0x40, 'header CreatedAt'),
    modifiedAt: readInt64(b, 0x48, 'header ModifiedAt'),
    descriptorsFree: readInt64(b, 0x50, 'DescriptorsFree'),
    descriptorsTotal: readInt64(b, 0x58, 'DescriptorsTotal'),
    descriptorsOffset: readInt64(b, 0x60, 'DescriptorsOffset'),
    descriptorsSize: readInt64(b, 0x68, 'DescriptorsSize'),
    dataOffset: readInt64(b, 0x70, 'DataOffset'),
    dataSize: readInt64(b, 0x78, 'DataSize'),
  };
  if (h.descriptorsTotal < 0 || h.descriptorsFree < 0 || h.descriptorsFree > h.descriptorsTotal) {
    throw new CorruptError(`bad descriptor counts in header (free ${h.descriptorsFree}, total ${h.descriptorsTotal})`);
  }
  if (h.descriptorsOffset < HEADER_SIZE) {
    throw new CorruptError(`descriptor table offset ${h.descriptorsOffset} overlaps the header`);
  }
  if (h.dataOffset < 0 || h.dataSize < 0 || !Number.isSafeInteger(h.dataOffset + h.dataSize)) {
    throw new CorruptError(`bad data section in header (offset ${h.dataOffset}, size ${h.dataSize})`);
  }
  return h;
}

export function encodeHeader(h: SifHeader): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  h.launchScript.copy(b, 0x00, 0, LAUNCH_SCRIPT_SIZE);
  SIF_MAGIC.copy(b, MAGIC_OFFSET);
  h.version.copy(b, VERSION_OFFSET, 0, 3);
  h.arch.copy(b, 0x2d, 0, 3);
  h.id.copy(b, 0x30, 0, 16);
  writeInt64(b, 0x40, h.createdAt);
  writeInt64(b, 0x48, h.modifiedAt);
  writeInt64(b, 0x50, h.descriptorsFree);
  writeInt64(b, 0x58, h.descriptorsTotal);
  writeInt64(b, 0x60, h.descriptorsOffset);
  writeInt64(b, 0x68, h.descriptorsSize);
  writeInt64(b, 0x70, h.dataOffset);
  writeInt64(b, 0x78, h.dataSize);
  return b;
}
