/**
 * Type-specific metadata in a descriptor's 384-byte Extra field (sylabs/sif
 * pkg/sif/descriptor.go), little-endian from the start of Extra, NUL-padded:
 *
 *   partition      0x00 Fstype i32 | 0x04 Parttype i32 | 0x08 Arch[3]
 *   signature      0x00 Hashtype i32 | 0x04 Entity[256] (20-byte PGP fingerprint first;
 *                  all-zero fingerprint = absent)
 *   crypto message 0x00 Formattype i32 | 0x04 Messagetype i32
 *   sbom           0x00 Format i32
 *   OCI index/blob ASCII "sha256:<hex>" NUL-terminated
 */
import { archBytes, archFromBytes } from './types.js';

export const EXTRA_SIZE = 384;
const ENTITY_SIZE = 256;
const FINGERPRINT_SIZE = 20;

export interface PartitionExtra {
  fsType: number;
  partType: number;
  /** Go arch name ("amd64"), "unknown" when the bytes are not a known code. */
  arch: string;
  /** The 3 raw arch bytes. */
  archBytes: Buffer;
}

export interface SignatureExtra {
  hashType: number;
  /** 20-byte fingerprint, or undefined when absent (all zero). */
  entity: Buffer | undefined;
}

export interface CryptoMessageExtra {
  formatType: number;
  messageType: number;
}

export interface SbomExtra {
  format: number;
}

export function decodePartitionExtra(e: Buffer): PartitionExtra {
  const raw = Buffer.from(e.subarray(0x08, 0x0b));
  return { fsType: e.readInt32LE(0x00), partType: e.readInt32LE(0x04), arch: archFromBytes(raw), archBytes: raw };
}

/** `arch` is a Go arch name or the 3 raw bytes to keep (setprim preserves them). */
export function encodePartitionExtra(fsType: number, partType: number, arch: string | Buffer): Buffer {
  const e = Buffer.alloc(EXTRA_SIZE);
  e.writeInt32LE(fsType, 0x00);
  e.writeInt32LE(partType, 0x04);
  (typeof arch === 'string' ? archBytes(arch) : arch).copy(e, 0x08, 0, 3);
  return e;
}

export function decodeSignatureExtra(e: Buffer): SignatureExtra {
  const fp = e.subarray(0x04, 0x04 + FINGERPRINT_SIZE);
  return { hashType: e.readInt32LE(0x00), entity: fp.every((x) => x === 0) ? undefined : Buffer.from(fp) };
}

export function encodeSignatureExtra(hashType: number, entity: Uint8Array): Buffer {
  const e = Buffer.alloc(EXTRA_SIZE);
  e.writeInt32LE(hashType, 0x00);
  Buffer.from(entity.buffer, entity.byteOffset, Math.min(entity.byteLength, ENTITY_SIZE)).copy(e, 0x04);
  return e;
}

export function decodeCryptoMessageExtra(e: Buffer): CryptoMessageExtra {
  return { formatType: e.readInt32LE(0x00), messageType: e.readInt32LE(0x04) };
}

export function encodeCryptoMessageExtra(formatType: number, messageType: number): Buffer {
  const e = Buffer.alloc(EXTRA_SIZE);
  e.writeInt32LE(formatType, 0x00);
  e.writeInt32LE(messageType, 0x04);
  return e;
}

export function decodeSbomExtra(e: Buffer): SbomExtra {
  return { format: e.readInt32LE(0x00) };
}

export function encodeSbomExtra(format: number): Buffer {
  const e = Buffer.alloc(EXTRA_SIZE);
  e.writeInt32LE(format, 0x00);
  return e;
}

/** The digest string of an OCI root index / blob object ("sha256:..."), up to the first NUL. */
export function decodeOciDigest(e: Buffer): string {
  const end = e.indexOf(0);
  return e.subarray(0, end < 0 ? e.length : end).toString('latin1');
}

export function encodeOciDigest(digest: string): Buffer {
  const e = Buffer.alloc(EXTRA_SIZE);
  e.write(digest, 0, EXTRA_SIZE - 1, 'latin1');
  return e;
}
