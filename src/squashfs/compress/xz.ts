import { createHash } from 'node:crypto';
import * as zlib from 'node:zlib';
import { CorruptError, UnsupportedError } from '../../errors.js';
import {
  bcjArmDecode,
  bcjArmThumbDecode,
  bcjIa64Decode,
  bcjPowerPcDecode,
  bcjSparcDecode,
  bcjX86Decode,
  deltaDecode,
} from './bcj.js';
import { decodeFailure, tooBig, nativeModule, type Decompressor } from './decompressor.js';

interface Lzma2Binding {
  lzma2: { decompressSync(input: Uint8Array): Buffer; decompress(input: Uint8Array): Promise<Buffer> };
}

const napiLzma = nativeModule<Lzma2Binding>('@napi-rs/lzma');

/*
 * xz (id 4): squashfs-tools' xz_wrapper writes each block as one .xz stream
 * (lzma_stream_buffer_encode, check CRC32) whose single block's filter chain
 * is LZMA2, optionally preceded by one BCJ filter (-Xbcj picks, per block, the
 * smallest of no filter and each listed one).
 *
 * @napi-rs/lzma decodes LZMA2 but knows no BCJ filter, so the container is
 * parsed here, the raw LZMA2 data is handed to the library, and the filters are
 * undone in bcj.ts. Parsing ourselves also gives an exact output bound before
 * decoding: every LZMA2 chunk header states its unpacked size.
 *
 *   stream header  FD 37 7A 58 5A 00 | flags 00 CHECK | CRC32(flags)      12 bytes
 *   block header   size=(b0+1)*4 | flags | [csize] [usize] | filters | pad | CRC32
 *   LZMA2 chunks   ... 00                    (then zero padding to 4 bytes)
 *   check          0/4/8/32 bytes of CRC32 / CRC64 / SHA-256 over the output
 *   ... more blocks, then the index (first byte 00) and the stream footer.
 */

const FILTER_DELTA = 0x03;
const FILTER_X86 = 0x04;
const FILTER_POWERPC = 0x05;
const FILTER_IA64 = 0x06;
const FILTER_ARM = 0x07;
const FILTER_ARMTHUMB = 0x08;
const FILTER_SPARC = 0x09;
const FILTER_LZMA2 = 0x21;

const CHECK_SIZES = [0, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64];

interface Filter {
  id: number;
  props: Buffer;
}

class Cursor {
  pos: number;
  constructor(
    readonly buf: Buffer,
    pos: number,
    readonly end: number,
  ) {
    this.pos = pos;
  }
  byte(): number {
    if (this.pos >= this.end) throw new CorruptError('xz block header is truncated');
    return this.buf[this.pos++]!;
  }
  /** xz multibyte integer: 7 bits per byte, little-endian, at most 9 bytes. */
  varint(): number {
    let value = 0;
    for (let i = 0; i < 9; i++) {
      const b = this.byte();
      value += (b & 0x7f) * 2 ** (7 * i);
      if ((b & 0x80) === 0) {
        if (b === 0 && i > 0) throw new CorruptError('xz integer is not minimally encoded');
        if (!Number.isSafeInteger(value)) throw new CorruptError('xz integer is too large');
        return value;
      }
    }
    throw new CorruptError('xz integer is longer than 9 bytes');
  }
}

function crc64(data: Buffer): Buffer {
  // ECMA-182 reflected polynomial 0xC96C5795D7870F42, as two 32-bit halves.
  const polyHi = 0xc96c5795;
  const polyLo = 0xd7870f42;
  let hi = 0xffffffff;
  let lo = 0xffffffff;
  for (const byte of data) {
    lo = (lo ^ byte) >>> 0;
    for (let k = 0; k < 8; k++) {
      const lsb = lo & 1;
      lo = ((lo >>> 1) | ((hi & 1) << 31)) >>> 0;
      hi = hi >>> 1;
      if (lsb) {
        lo = (lo ^ polyLo) >>> 0;
        hi = (hi ^ polyHi) >>> 0;
      }
    }
  }
  const out = Buffer.alloc(8);
  out.writeUInt32LE((lo ^ 0xffffffff) >>> 0, 0);
  out.writeUInt32LE((hi ^ 0xffffffff) >>> 0, 4);
  return out;
}

function verifyCheck(type: number, stored: Buffer, data: Buffer): void {
  let computed: Buffer;
  switch (type) {
    case 0x00:
      return;
    case 0x01:
      computed = Buffer.alloc(4);
      computed.writeUInt32LE(zlib.crc32(data) >>> 0, 0);
      break;
    case 0x04:
      computed = crc64(data);
      break;
    case 0x0a:
      computed = createHash('sha256').update(data).digest();
      break;
    default:
      throw new UnsupportedError(`xz check type ${type} is not supported`);
  }
  if (!computed.equals(stored)) throw new CorruptError('xz block fails its integrity check');
}

function crc32Of(buf: Buffer, start: number, end: number): number {
  return zlib.crc32(buf.subarray(start, end)) >>> 0;
}

/**
 * Walks the LZMA2 chunk headers from `pos`; returns the end of the chunk data
 * (after the 0x00 end marker) and the total unpacked size, refusing before any
 * decoding when the total passes `maxSize`.
 */
function scanLzma2(buf: Buffer, pos: number, end: number, maxSize: number): { end: number; size: number } {
  let size = 0;
  for (;;) {
    if (pos >= end) throw new CorruptError('xz LZMA2 data has no end marker');
    const control = buf[pos]!;
    if (control === 0x00) return { end: pos + 1, size };
    let packed: number;
    let header: number;
    if (control === 0x01 || control === 0x02) {
      if (pos + 3 > end) throw new CorruptError('xz LZMA2 chunk header is truncated');
      packed = buf.readUInt16BE(pos + 1) + 1;
      size += packed;
      header = 3;
    } else if (control >= 0x80) {
      header = control >= 0xc0 ? 6 : 5;
      if (pos + header > end) throw new CorruptError('xz LZMA2 chunk header is truncated');
      size += (control & 0x1f) * 65536 + buf.readUInt16BE(pos + 1) + 1;
      packed = buf.readUInt16BE(pos + 3) + 1;
    } else {
      throw new CorruptError(`xz LZMA2 chunk has invalid control byte 0x${control.toString(16)}`);
    }
    if (size > maxSize) throw tooBig('xz', size, maxSize);
    pos += header + packed;
  }
}

function applyFilter(filter: Filter, data: Buffer): void {
  if (filter.id === FILTER_DELTA) {
    if (filter.props.length !== 1) throw new CorruptError('xz delta filter needs one property byte');
    deltaDecode(data, filter.props[0]! + 1);
    return;
  }
  let start = 0;
  if (filter.props.length === 4) start = filter.props.readUInt32LE(0);
  else if (filter.props.length !== 0) throw new CorruptError(`xz filter 0x${filter.id.toString(16)} has bad properties`);
  switch (filter.id) {
    case FILTER_X86:
      return bcjX86Decode(data, start);
    case FILTER_POWERPC:
      return bcjPowerPcDecode(data, start);
    case FILTER_IA64:
      return bcjIa64Decode(data, start);
    case FILTER_ARM:
      return bcjArmDecode(data, start);
    case FILTER_ARMTHUMB:
      return bcjArmThumbDecode(data, start);
    case FILTER_SPARC:
      return bcjSparcDecode(data, start);
    default:
      throw new UnsupportedError(`xz filter 0x${filter.id.toString(16)} is not supported`);
  }
}

/** One block of a stream, located and validated but not yet decoded. */
interface BlockPlan {
  /** The raw LZMA2 chunks. */
  lzma2: Buffer;
  /** Unpacked size the chunk headers add up to. */
  size: number;
  /** Uncompressed size from the block header, if present. */
  declared: number | null;
  /** Filters before LZMA2, in header order (undone in reverse). */
  filters: Filter[];
  checkType: number;
  check: Buffer;
}

/**
 * Walks the stream's container: every header, CRC32 and size is checked and
 * the LZMA2 data of each block located, with no decoding. The sum of the
 * blocks' unpacked sizes is bounded by maxSize here, before any output exists.
 */
function planXzStream(input: Buffer, maxSize: number): BlockPlan[] {
  if (input.length < 12 + 12) throw new CorruptError(`xz block of ${input.length} bytes is too short`);
  if (input.readUInt32BE(0) !== 0xfd377a58 || input.readUInt16BE(4) !== 0x5a00) {
    throw new CorruptError('xz block has no xz stream magic');
  }
  if (input[6] !== 0 || input[7]! > 0x0f) throw new CorruptError('xz stream flags are invalid');
  if (crc32Of(input, 6, 8) !== input.readUInt32LE(8)) throw new CorruptError('xz stream header fails its CRC32');
  const checkType = input[7]!;
  const checkSize = CHECK_SIZES[checkType]!;

  const plans: BlockPlan[] = [];
  let total = 0;
  let pos = 12;
  // Each iteration consumes at least one block header (8+ bytes), so this ends.
  for (;;) {
    if (pos >= input.length) throw new CorruptError('xz stream has no index');
    const sizeByte = input[pos]!;
    if (sizeByte === 0x00) return plans; // index indicator: no more blocks
    const headerSize = (sizeByte + 1) * 4;
    const headerEnd = pos + headerSize;
    if (headerEnd > input.length) throw new CorruptError('xz block header is truncated');
    if (crc32Of(input, pos, headerEnd - 4) !== input.readUInt32LE(headerEnd - 4)) {
      throw new CorruptError('xz block header fails its CRC32');
    }
    const cur = new Cursor(input, pos + 1, headerEnd - 4);
    const flags = cur.byte();
    if (flags & 0x3c) throw new CorruptError('xz block header has reserved flags set');
    const compressedSize = flags & 0x40 ? cur.varint() : null;
    const uncompressedSize = flags & 0x80 ? cur.varint() : null;
    if (uncompressedSize !== null && total + uncompressedSize > maxSize) throw tooBig('xz', total + uncompressedSize, maxSize);
    const filters: Filter[] = [];
    const count = (flags & 0x03) + 1;
    for (let i = 0; i < count; i++) {
      const id = cur.varint();
      const propsSize = cur.varint();
      if (cur.pos + propsSize > cur.end) throw new CorruptError('xz filter properties are truncated');
      filters.push({ id, props: input.subarray(cur.pos, cur.pos + propsSize) });
      cur.pos += propsSize;
    }
    for (let p = cur.pos; p < cur.end; p++) {
      if (input[p] !== 0) throw new CorruptError('xz block header padding is not zero');
    }
    const last = filters[filters.length - 1]!;
    if (last.id !== FILTER_LZMA2) throw new UnsupportedError(`xz block ends in filter 0x${last.id.toString(16)}, not LZMA2`);
    if (last.props.length !== 1 || last.props[0]! > 40) throw new CorruptError('xz LZMA2 filter has bad properties');
    for (const f of filters.slice(0, -1)) {
      if (f.id === FILTER_LZMA2) throw new CorruptError('xz LZMA2 filter is not last in its chain');
      if (f.id !== FILTER_DELTA && (f.id < FILTER_X86 || f.id > FILTER_SPARC)) {
        throw new UnsupportedError(`xz filter 0x${f.id.toString(16)} is not supported`);
      }
    }

    const chunks = scanLzma2(input, headerEnd, input.length, maxSize - total);
    if (compressedSize !== null && chunks.end - headerEnd !== compressedSize) {
      throw new CorruptError('xz block compressed size does not match its data');
    }
    const padded = headerEnd + Math.ceil((chunks.end - headerEnd) / 4) * 4;
    const checkEnd = padded + checkSize;
    if (checkEnd > input.length) throw new CorruptError('xz block check is truncated');
    for (let p = chunks.end; p < padded; p++) {
      if (input[p] !== 0) throw new CorruptError('xz block padding is not zero');
    }
    plans.push({
      lzma2: input.subarray(headerEnd, chunks.end),
      size: chunks.size,
      declared: uncompressedSize,
      filters: filters.slice(0, -1),
      checkType,
      check: input.subarray(padded, checkEnd),
    });
    total += chunks.size;
    pos = checkEnd;
  }
}

/** Undoes the filters on a block's LZMA2 output and verifies its check. */
function finishBlock(plan: BlockPlan, data: Buffer): Buffer {
  if (data.length !== plan.size || (plan.declared !== null && data.length !== plan.declared)) {
    throw new CorruptError(`xz block declares ${plan.size} bytes but holds ${data.length}`);
  }
  for (let i = plan.filters.length - 1; i >= 0; i--) applyFilter(plan.filters[i]!, data);
  verifyCheck(plan.checkType, plan.check, data);
  return data;
}

function joined(parts: Buffer[]): Buffer {
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}

/** Decodes one .xz stream whose total output is at most maxSize bytes. */
export function decodeXzStream(input: Buffer, maxSize: number): Buffer {
  const parts = planXzStream(input, maxSize).map((plan) => {
    let data: Buffer;
    try {
      data = napiLzma().lzma2.decompressSync(plan.lzma2);
    } catch (err) {
      throw decodeFailure('xz', err);
    }
    return finishBlock(plan, data);
  });
  return joined(parts);
}

/** decodeXzStream with the LZMA2 decoding on the thread pool. */
export async function decodeXzStreamAsync(input: Buffer, maxSize: number): Promise<Buffer> {
  const plans = planXzStream(input, maxSize);
  const parts = await Promise.all(
    plans.map((plan) =>
      napiLzma()
        .lzma2.decompress(plan.lzma2)
        .then(
          (data) => finishBlock(plan, data),
          (err: unknown) => {
            throw decodeFailure('xz', err);
          },
        ),
    ),
  );
  return joined(parts);
}

export const xz: Decompressor = {
  name: 'xz',
  decompress: decodeXzStream,
  decompressAsync: decodeXzStreamAsync,
};
