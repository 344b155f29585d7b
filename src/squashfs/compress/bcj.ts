/**
 * The xz branch/call/jump decoders (filter ids 0x04-0x09) and the delta
 * decoder (0x03). Each turns the absolute branch targets the encoder wrote
 * back into the relative ones the machine code holds. They work in place on
 * one whole decompressed block, whose first byte is at stream position
 * `start` (the filter's optional start-offset property, 0 for squashfs-tools).
 *
 * The algorithms are the public-domain ones of XZ Utils (liblzma/simple/*.c),
 * written here from their description: positions are u32 and wrap, and each
 * filter only looks at instructions that fit wholly inside the buffer.
 */

/** x86: E8 (CALL) / E9 (JMP) rel32 operands whose top byte is 0x00 or 0xFF. */
export function bcjX86Decode(buf: Buffer, start: number): void {
  const maskAllowed = [true, true, true, false, true, false, false, false];
  const maskBitNum = [0, 1, 2, 2, 3, 3, 3, 3];
  const msbyteOk = (b: number): boolean => b === 0x00 || b === 0xff;
  if (buf.length <= 4) return;
  const limit = buf.length - 4;
  let prevPos = -1;
  let prevMask = 0;
  for (let i = 0; i < limit; i++) {
    if ((buf[i]! & 0xfe) !== 0xe8) continue;
    const gap = i - prevPos;
    if (gap > 3) {
      prevMask = 0;
    } else {
      prevMask = (prevMask << (gap - 1)) & 7;
      if (prevMask !== 0) {
        const b = buf[i + 4 - maskBitNum[prevMask]!]!;
        if (!maskAllowed[prevMask] || msbyteOk(b)) {
          prevPos = i;
          prevMask = (prevMask << 1) | 1;
          continue;
        }
      }
    }
    prevPos = i;
    if (msbyteOk(buf[i + 4]!)) {
      let src = buf.readUInt32LE(i + 1);
      let dest: number;
      for (;;) {
        dest = (src - ((start + i + 5) >>> 0)) >>> 0;
        if (prevMask === 0) break;
        const j = maskBitNum[prevMask]! * 8;
        const b = (dest >>> (24 - j)) & 0xff;
        if (!msbyteOk(b)) break;
        src = (dest ^ (2 ** (32 - j) - 1)) >>> 0;
      }
      dest &= 0x01ffffff;
      dest = (dest | (dest & 0x01000000 ? 0xfe000000 : 0)) >>> 0;
      buf.writeUInt32LE(dest, i + 1);
      i += 4;
    } else {
      prevMask = (prevMask << 1) | 1;
    }
  }
}

/** PowerPC: big-endian `bl` (opcode 18 with AA=0, LK=1). */
export function bcjPowerPcDecode(buf: Buffer, start: number): void {
  for (let i = 0; i + 4 <= buf.length; i += 4) {
    let instr = buf.readUInt32BE(i);
    if ((instr & 0xfc000003) >>> 0 !== 0x48000001) continue;
    instr &= 0x03fffffc;
    instr = (instr - ((start + i) >>> 0)) & 0x03fffffc;
    buf.writeUInt32BE((instr | 0x48000001) >>> 0, i);
  }
}

/** IA-64: 128-bit bundles whose template marks branch slots (41-bit instructions). */
export function bcjIa64Decode(buf: Buffer, start: number): void {
  const branchTable = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 6, 6, 0, 0, 7, 7, 4, 4, 0, 0, 4, 4, 0, 0];
  for (let i = 0; i + 16 <= buf.length; i += 16) {
    const mask = branchTable[buf[i]! & 0x1f]!;
    for (let slot = 0, bitPos = 5; slot < 3; slot++, bitPos += 41) {
      if (((mask >>> slot) & 1) === 0) continue;
      const bytePos = i + (bitPos >>> 3);
      const bitRes = BigInt(bitPos & 7);
      let instr = 0n;
      for (let j = 0; j < 6; j++) instr |= BigInt(buf[bytePos + j]!) << BigInt(8 * j);
      let norm = instr >> bitRes;
      if (((norm >> 37n) & 0xfn) !== 0x5n || ((norm >> 9n) & 0x7n) !== 0n) continue;
      let addr = Number((norm >> 13n) & 0xfffffn);
      addr |= Number((norm >> 36n) & 1n) << 20;
      addr = ((addr << 4) >>> 0) - ((start + i) >>> 0);
      addr = (addr >>> 0) >>> 4;
      norm &= ~(0x8fffffn << 13n);
      norm |= BigInt(addr & 0xfffff) << 13n;
      norm |= BigInt(addr & 0x100000) << 16n;
      instr &= (1n << bitRes) - 1n;
      instr |= norm << bitRes;
      for (let j = 0; j < 6; j++) buf[bytePos + j] = Number((instr >> BigInt(8 * j)) & 0xffn);
    }
  }
}

/** ARM: little-endian `BL` (condition AL, top byte 0xEB), 24-bit word offset. */
export function bcjArmDecode(buf: Buffer, start: number): void {
  for (let i = 0; i + 4 <= buf.length; i += 4) {
    if (buf[i + 3] !== 0xeb) continue;
    let addr = buf[i]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16);
    addr = ((addr << 2) - ((start + i + 8) >>> 0)) >>> 0;
    addr >>>= 2;
    buf[i] = addr & 0xff;
    buf[i + 1] = (addr >>> 8) & 0xff;
    buf[i + 2] = (addr >>> 16) & 0xff;
  }
}

/** ARM-Thumb: the two-halfword `BL` pair (F000 / F800 prefixes). */
export function bcjArmThumbDecode(buf: Buffer, start: number): void {
  for (let i = 0; i + 4 <= buf.length; i += 2) {
    if ((buf[i + 1]! & 0xf8) !== 0xf0 || (buf[i + 3]! & 0xf8) !== 0xf8) continue;
    let addr = ((buf[i + 1]! & 7) << 19) | (buf[i]! << 11) | ((buf[i + 3]! & 7) << 8) | buf[i + 2]!;
    addr = ((addr << 1) - ((start + i + 4) >>> 0)) >>> 0;
    addr >>>= 1;
    buf[i + 1] = 0xf0 | ((addr >>> 19) & 7);
    buf[i] = (addr >>> 11) & 0xff;
    buf[i + 3] = 0xf8 | ((addr >>> 8) & 7);
    buf[i + 2] = addr & 0xff;
    i += 2;
  }
}

/** SPARC: big-endian `call` whose displacement is a sign-extended 22-bit value. */
export function bcjSparcDecode(buf: Buffer, start: number): void {
  for (let i = 0; i + 4 <= buf.length; i += 4) {
    let instr = buf.readUInt32BE(i);
    const top = instr >>> 22;
    if (top !== 0x100 && top !== 0x1ff) continue;
    instr = (instr << 2) >>> 0;
    instr = ((instr - ((start + i) >>> 0)) >>> 0) >>> 2;
    instr = ((0x40000000 - (instr & 0x400000)) | 0x40000000 | (instr & 0x3fffff)) >>> 0;
    buf.writeUInt32BE(instr, i);
  }
}

/** Delta: each byte is stored as its difference from the byte `distance` before it. */
export function deltaDecode(buf: Buffer, distance: number): void {
  for (let i = distance; i < buf.length; i++) buf[i] = (buf[i]! + buf[i - distance]!) & 0xff;
}
