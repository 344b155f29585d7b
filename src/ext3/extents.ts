/**
 * Read-only ext4 extent trees (fs/ext4/ext4_extents.h), so files of ext4
 * images (incompat `extent`) can be read; writing them is refused.
 *
 * i_block (60 bytes) holds the root node; every node is
 *   header: 0x0 eh_magic u16 = 0xF30A  0x2 eh_entries u16  0x4 eh_max u16
 *           0x6 eh_depth u16           0x8 eh_generation u32
 *   then 12-byte entries:
 *   index (depth > 0): 0x0 ei_block u32  0x4 ei_leaf_lo u32  0x8 ei_leaf_hi u16
 *   leaf  (depth = 0): 0x0 ee_block u32  0x4 ee_len u16 (> 32768: unwritten,
 *                      reads as zeros)  0x6 ee_start_hi u16  0x8 ee_start_lo u32
 * Depth is at most 5 and must decrease by one per level, so walks end.
 */
import { CorruptError } from '../errors.js';
import type { BlockMapIO } from './block-map.js';
import type { Inode } from './inode.js';

const EXT4_EXT_MAGIC = 0xf30a;
const MAX_DEPTH = 5;

function checkHeader(node: Buffer, where: string, expectDepth?: number): { entries: number; depth: number } {
  if (node.length < 12 || node.readUInt16LE(0) !== EXT4_EXT_MAGIC) throw new CorruptError(`${where}: bad extent header`);
  const entries = node.readUInt16LE(2);
  const max = node.readUInt16LE(4);
  const depth = node.readUInt16LE(6);
  if (entries > max || 12 + 12 * max > node.length) throw new CorruptError(`${where}: extent node overflows`);
  if (depth > MAX_DEPTH || (expectDepth !== undefined && depth !== expectDepth)) {
    throw new CorruptError(`${where}: extent depth ${depth}`);
  }
  return { entries, depth };
}

async function lookupOne(io: BlockMapIO, root: Buffer, lbn: number): Promise<number> {
  let node = root;
  let { entries, depth } = checkHeader(node, 'inode extent root');
  while (true) {
    // Last entry whose first logical block is <= lbn.
    let pick = -1;
    for (let i = 0; i < entries; i++) {
      if (node.readUInt32LE(12 + 12 * i) <= lbn) pick = i;
      else break;
    }
    if (pick < 0) return 0;
    const e = 12 + 12 * pick;
    if (depth === 0) {
      const first = node.readUInt32LE(e);
      let len = node.readUInt16LE(e + 4);
      const unwritten = len > 32768;
      if (unwritten) len -= 32768;
      if (lbn >= first + len || unwritten) return 0;
      const start = node.readUInt16LE(e + 6) * 0x100000000 + node.readUInt32LE(e + 8);
      const pbn = start + (lbn - first);
      if (start < io.firstDataBlock || start + len > io.blocksCount)
        throw new CorruptError(`extent points outside the filesystem`);
      return pbn;
    }
    const child = node.readUInt16LE(e + 8) * 0x100000000 + node.readUInt32LE(e + 4);
    if (child < io.firstDataBlock || child >= io.blocksCount)
      throw new CorruptError(`extent index points outside the filesystem`);
    node = await io.readMeta(child);
    ({ entries, depth } = checkHeader(node, `extent block ${child}`, depth - 1));
  }
}

/** Physical blocks for `count` logical blocks from `lbn` (0 = hole or unwritten). */
export async function mapExtents(io: BlockMapIO, inode: Inode, lbn: number, count: number): Promise<number[]> {
  const root = Buffer.alloc(60);
  for (let i = 0; i < 15; i++) root.writeUInt32LE(inode.i_block[i]! >>> 0, 4 * i);
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push(await lookupOne(io, root, lbn + i));
  return out;
}
