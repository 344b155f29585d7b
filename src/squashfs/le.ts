/**
 * Little-endian integers read from bytes the caller has already bounded (a
 * metadata cursor hands out exactly the bytes asked for): plain arithmetic,
 * no Buffer method call, no view. Every caller reads within those bytes.
 */
export function u16(b: Uint8Array, at: number): number {
  return b[at]! | (b[at + 1]! << 8);
}

export function s16(b: Uint8Array, at: number): number {
  return (u16(b, at) << 16) >> 16;
}

export function u32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16)) + b[at + 3]! * 0x1000000;
}
