/**
 * Overlay inode numbers (st_ino), xino style: the layer that holds an
 * object's origin in the high bits, that layer's own st_ino in the low 32.
 *
 *   tag 0        the upper layer (objects created in it)
 *   tag 1..n     lower layers counted from the bottom, so putting a new
 *                layer on top of a stack renumbers nothing below
 *
 * A copied-up object keeps the number it had below (XATTR_INO on the upper
 * copy), so st_ino is stable across copy-up and remount; numbers of
 * different layers never collide; hard links share their layer's number.
 * Layer numbers at or above 2^32 (host directories) are folded into 32 bits.
 */
export const LOW_BITS = 2 ** 32;

export function xino(tag: number, layerIno: number): number {
  const low = layerIno < LOW_BITS ? layerIno : (layerIno % LOW_BITS) ^ (Math.floor(layerIno / LOW_BITS) % LOW_BITS);
  return tag * LOW_BITS + (low >>> 0);
}
