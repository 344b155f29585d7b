/**
 * Offline resize of a clean ext3 filesystem (what `e2fsck -f && resize2fs`
 * does for Apptainer overlay images), in-process. The journal is untouched.
 *
 * Grow: the last group is extended, then whole groups are added with
 * mke2fs's layout (src/ext3/mkfs.ts): in groups with a superblock backup
 * the superblock, the GDT and the reserved GDT blocks, then the block
 * bitmap, the inode bitmap and the inode table. When the GDT needs more
 * blocks they come from the reserved GDT blocks the resize inode (7) holds:
 *
 *   resize inode i_block[DIND] -> dind block: slot (descBlocks + i) % apb
 *   names the i-th primary reserved GDT block R_i; R_i's content lists the
 *   backup copies of R_i, one per backup group (R_i + group * blocksPerGroup).
 *
 * A reserved block that becomes a GDT block leaves the dind block; the slot
 * arithmetic keeps every other reserved block where it was. New backup
 * groups append their copy to each R_i's list.
 *
 * Shrink: only when nothing in use lies beyond the new end (no block beyond
 * it but the removed groups' own metadata, no inode in a removed group): the
 * inverse of grow, GDT blocks no longer needed going back to the resize
 * inode. Data beyond the new end is not moved; that is refused with a
 * message, and nothing is written.
 *
 * Write order: the new groups' bitmaps, the resize inode's blocks, the
 * backups, and last the primary GDT and superblock, so an interrupted grow
 * leaves the old filesystem (the new blocks unused) for e2fsck to find.
 * The caller sizes the store: a grow needs the new bytes to read as zeros
 * (a truncate-extended file), a shrink truncates afterwards.
 */
import { CorruptError, UnsupportedError, UsageError } from '../errors.js';
import type { ByteStore } from '../io/byte-source.js';
import { COMPAT, INCOMPAT, RO_COMPAT } from './features.js';
import { decodeGroupDesc, encodeGroupDesc, GROUP_DESC_SIZE, newGroupDesc, type GroupDesc } from './group-desc.js';
import { decodeInode, encodeInode } from './inode.js';
import { backupGroups } from './mkfs.js';
import {
  blockSize as blockSizeOf,
  decodeSuperblock,
  encodeSuperblock,
  EXT2_VALID_FS,
  groupCount as groupCountOf,
  groupHasSuper,
  inodeSize,
  SUPERBLOCK_OFFSET,
  SUPERBLOCK_SIZE,
  type Superblock,
} from './superblock.js';

const RESIZE_INO = 7;
/** s_overhead_clusters, outside the superblock codec's model. */
const S_OVERHEAD_CLUSTERS = 0x248;
/** Features an offline resize of an ext3 overlay understands. */
const KNOWN_COMPAT = COMPAT.has_journal | COMPAT.ext_attr | COMPAT.resize_inode | COMPAT.dir_index;
const KNOWN_INCOMPAT = INCOMPAT.filetype;
const KNOWN_RO_COMPAT = RO_COMPAT.sparse_super | RO_COMPAT.large_file;

export interface ResizeResult {
  oldBlocks: number;
  newBlocks: number;
  oldGroups: number;
  newGroups: number;
  blockSize: number;
}

/** A bitmap block as a mutable bit array. */
function testBit(b: Buffer, bit: number): boolean {
  return (b[bit >>> 3]! & (1 << (bit & 7))) !== 0;
}
function setBit(b: Buffer, bit: number, on: boolean): void {
  if (on) b[bit >>> 3] = b[bit >>> 3]! | (1 << (bit & 7));
  else b[bit >>> 3] = b[bit >>> 3]! & ~(1 << (bit & 7));
}

function wordsOf(block: Buffer): number[] {
  const out: number[] = [];
  for (let o = 0; o + 4 <= block.length; o += 4) out.push(block.readUInt32LE(o));
  return out;
}

/**
 * Resizes the filesystem in `store` to `newBytes` (rounded down to whole
 * blocks, and down to drop a last group too small for its own metadata, as
 * mke2fs and resize2fs do). The filesystem must be clean.
 */
export async function resizeExt3(store: ByteStore, newBytes: number): Promise<ResizeResult> {
  const name = store.name;
  const sb = decodeSuperblock(await store.read(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE), store.size);
  const rawSb = await store.read(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE);
  if (
    (sb.s_feature_compat & ~KNOWN_COMPAT) !== 0 ||
    (sb.s_feature_incompat & ~KNOWN_INCOMPAT) !== 0 ||
    (sb.s_feature_ro_compat & ~KNOWN_RO_COMPAT) !== 0
  ) {
    throw new UnsupportedError('only ext3 overlay images (mkfs.ext3 features, no needs_recovery) can be resized here', name);
  }
  if ((sb.s_feature_compat & COMPAT.resize_inode) === 0 || sb.s_reserved_gdt_blocks === 0) {
    // Growing without reserved GDT blocks would mean moving data: resize2fs's job.
    throw new UnsupportedError('the filesystem has no reserved GDT blocks (resize_inode) to grow into', name);
  }
  if ((sb.s_state & EXT2_VALID_FS) === 0 || sb.s_last_orphan !== 0) {
    throw new UsageError('the filesystem is not clean: run e2fsck -f first', name);
  }
  const bs = blockSizeOf(sb);
  const B = sb.s_blocks_per_group;
  const F = sb.s_first_data_block;
  const ipg = sb.s_inodes_per_group;
  const dpb = bs / GROUP_DESC_SIZE;
  const apb = bs / 4;
  const itb = Math.ceil((ipg * inodeSize(sb)) / bs);
  const oldBlocks = sb.s_blocks_count;
  const oldGroups = groupCountOf(sb);
  const oldDesc = Math.ceil(oldGroups / dpb);
  const oldRsv = sb.s_reserved_gdt_blocks;
  const total = oldDesc + oldRsv; // GDT + reserved GDT blocks per backup group: constant
  const sbBlk = F === 0 && bs === 1024 ? 1 : F;
  const start = (g: number) => F + g * B;
  const hasSuper = (g: number) => groupHasSuper(sb, g);

  // The new size, with mke2fs's rule for a short last group.
  let newBlocks = Math.floor(newBytes / bs);
  if (newBlocks > 0xffffffff) throw new UnsupportedError('more than 2^32 blocks needs the 64bit feature', name);
  for (;;) {
    const groups = Math.ceil((newBlocks - F) / B);
    const rem = (newBlocks - F) % B;
    const overhead = 2 + itb + (hasSuper(groups - 1) ? 1 + total : 0);
    if (groups < 1 || (groups === 1 && rem !== 0 && rem < overhead)) {
      throw new UsageError(`${Math.floor(newBytes / 1048576)} MiB is too small for this filesystem`, name);
    }
    if (rem !== 0 && rem < overhead + 50) {
      newBlocks -= rem;
      continue;
    }
    break;
  }
  const newGroups = Math.ceil((newBlocks - F) / B);
  const newDesc = Math.ceil(newGroups / dpb);
  if (newDesc > total) {
    const maxGroups = total * dpb;
    throw new UsageError(
      `cannot grow beyond ${Math.floor(((F + maxGroups * B) * bs) / 1048576)} MiB: the GDT has no more reserved blocks (resize2fs can, by moving data)`,
      name,
    );
  }
  const newRsv = total - newDesc;
  if (newRsv > apb) throw new UnsupportedError('more reserved GDT blocks than the resize inode can list', name);
  const result: ResizeResult = { oldBlocks, newBlocks, oldGroups, newGroups, blockSize: bs };
  if (newBlocks === oldBlocks) return result;

  // Descriptors of every group the result keeps or adds.
  const gdtBytes = await store.read((sbBlk + 1) * bs, oldDesc * bs);
  const descs: GroupDesc[] = [];
  for (let g = 0; g < oldGroups; g++) descs.push(decodeGroupDesc(gdtBytes, g * GROUP_DESC_SIZE));
  const groupEnd = (g: number, blocks: number) => Math.min(start(g) + B, blocks);

  // The resize inode and its dind block.
  const isz = inodeSize(sb);
  const riPos = descs[0]!.bg_inode_table * bs + (RESIZE_INO - 1) * isz;
  const ri = decodeInode(await store.read(riPos, isz), isz);
  const dindBlk = ri.i_block[13] ?? 0;
  if (dindBlk === 0 || dindBlk >= oldBlocks) throw new CorruptError('the resize inode has no double-indirect block', name);
  const dind = await store.read(dindBlk * bs, bs);
  const writes: { pos: number; data: Buffer }[] = [];
  let freeBlocks = sb.s_free_blocks_count;
  let freeInodes = sb.s_free_inodes_count;

  if (newBlocks > oldBlocks) {
    // 1. The old last group grows to its full size (or to the new end).
    const last = oldGroups - 1;
    const lastBitmap = await store.read(descs[last]!.bg_block_bitmap * bs, bs);
    for (let b = oldBlocks; b < groupEnd(last, newBlocks); b++) setBit(lastBitmap, b - start(last), false);
    const gained = groupEnd(last, newBlocks) - oldBlocks;
    descs[last]!.bg_free_blocks_count += gained;
    freeBlocks += gained;
    writes.push({ pos: descs[last]!.bg_block_bitmap * bs, data: lastBitmap });

    // 2. Reserved GDT blocks the larger GDT takes leave the resize inode.
    const taken = newDesc - oldDesc;
    const oldBackups = backupGroups(oldGroups);
    const newBackups = backupGroups(newGroups);
    const added = newBackups.filter((g) => !oldBackups.includes(g));
    for (let i = 0; i < taken; i++) dind.writeUInt32LE(0, ((oldDesc + i) % apb) * 4);
    // 3. The others gain a copy in each new backup group.
    for (let i = taken; i < oldRsv; i++) {
      const r = sbBlk + 1 + oldDesc + i;
      if (dind.readUInt32LE(((oldDesc + i) % apb) * 4) !== r)
        throw new CorruptError(`the resize inode does not list reserved GDT block ${r}`, name);
      const list = wordsOf(await store.read(r * bs, bs)).filter((w) => w !== 0);
      const block = Buffer.alloc(bs);
      [...list, ...added.map((g) => r + g * B)].forEach((w, k) => block.writeUInt32LE(w, k * 4));
      writes.push({ pos: r * bs, data: block });
    }

    // 4. New groups, laid out as mke2fs lays them out.
    for (let g = oldGroups; g < newGroups; g++) {
      const b = start(g);
      const end = groupEnd(g, newBlocks);
      const bitmap = Buffer.alloc(bs, 0xff);
      bitmap.fill(0, 0, B / 8);
      let meta = 0;
      if (hasSuper(g)) meta += 1 + total;
      const bb = b + meta;
      meta += 2 + itb;
      for (let k = 0; k < meta; k++) setBit(bitmap, k, true);
      for (let k = end - b; k < B; k++) setBit(bitmap, k, true);
      const ibm = Buffer.alloc(bs, 0xff);
      ibm.fill(0, 0, ipg / 8);
      const free = end - b - meta;
      descs.push(newGroupDesc(bb, bb + 1, bb + 2, free, ipg));
      freeBlocks += free;
      freeInodes += ipg;
      writes.push({ pos: bb * bs, data: Buffer.concat([bitmap, ibm]) });
    }
  } else {
    // Shrink: refuse unless everything in use lies inside the new size.
    const newLast = newGroups - 1;
    const lastBitmap = await store.read(descs[newLast]!.bg_block_bitmap * bs, bs);
    for (let b = newBlocks; b < groupEnd(newLast, oldBlocks); b++) {
      if (testBit(lastBitmap, b - start(newLast))) {
        throw new UsageError(
          `the data does not fit in ${Math.floor((newBlocks * bs) / 1048576)} MiB (block ${b} is in use); resize2fs can move it`,
          name,
        );
      }
    }
    for (let g = newGroups; g < oldGroups; g++) {
      const d = descs[g]!;
      const meta = (hasSuper(g) ? 1 + total : 0) + 2 + itb;
      if (d.bg_free_inodes_count !== ipg || d.bg_used_dirs_count !== 0) {
        throw new UsageError(
          `the data does not fit in ${Math.floor((newBlocks * bs) / 1048576)} MiB (inodes in use in group ${g}); resize2fs can move them`,
          name,
        );
      }
      if (d.bg_free_blocks_count !== groupEnd(g, oldBlocks) - start(g) - meta) {
        throw new UsageError(
          `the data does not fit in ${Math.floor((newBlocks * bs) / 1048576)} MiB (blocks in use in group ${g}); resize2fs can move them`,
          name,
        );
      }
      freeBlocks -= d.bg_free_blocks_count;
      freeInodes -= d.bg_free_inodes_count;
    }
    for (let b = newBlocks; b < groupEnd(newLast, oldBlocks); b++) setBit(lastBitmap, b - start(newLast), true);
    const lost = groupEnd(newLast, oldBlocks) - newBlocks;
    descs[newLast]!.bg_free_blocks_count -= lost;
    freeBlocks -= lost;
    writes.push({ pos: descs[newLast]!.bg_block_bitmap * bs, data: lastBitmap });
    descs.length = newGroups;

    // GDT blocks no longer needed go back to the resize inode; reserved lists drop removed groups.
    const newBackups = backupGroups(newGroups);
    for (let i = 0; i < newRsv; i++) {
      const r = sbBlk + 1 + newDesc + i;
      dind.writeUInt32LE(r, ((newDesc + i) % apb) * 4);
      const block = Buffer.alloc(bs);
      newBackups.forEach((g, k) => block.writeUInt32LE(r + g * B, k * 4));
      writes.push({ pos: r * bs, data: block });
    }
  }
  // The dind block, and each reserved GDT block with its backups (ext2fs_create_resize_inode).
  ri.i_blocks = (1 + newRsv * (1 + backupGroups(newGroups).length)) * (bs / 512);

  writes.push({ pos: dindBlk * bs, data: dind });
  const riRaw = encodeInode(ri, isz);
  writes.push({ pos: riPos, data: riRaw });

  // Superblock and GDT, backups first, the primary last.
  const newSb: Superblock = {
    ...sb,
    s_blocks_count: newBlocks,
    s_inodes_count: newGroups * ipg,
    s_free_blocks_count: freeBlocks,
    s_free_inodes_count: freeInodes,
    // resize2fs keeps the reserved percentage.
    s_r_blocks_count: Math.floor((sb.s_r_blocks_count * newBlocks) / oldBlocks),
    s_reserved_gdt_blocks: newRsv,
  };
  const gdt = Buffer.alloc(newDesc * bs);
  descs.forEach((d, i) => encodeGroupDesc(d, gdt, i * GROUP_DESC_SIZE));
  const superFor = (g: number): Buffer => {
    // Backups are written with EXT2_VALID_FS clear, as ext2fs_flush writes them.
    const state = g === 0 ? newSb.s_state : newSb.s_state & ~EXT2_VALID_FS;
    const raw = encodeSuperblock({ ...newSb, s_block_group_nr: g, s_state: state, raw: rawSb });
    // The kernel and e2fsprogs recompute the metadata overhead when this is 0.
    raw.writeUInt32LE(0, S_OVERHEAD_CLUSTERS);
    return raw;
  };
  for (const g of backupGroups(newGroups)) {
    writes.push({ pos: start(g) * bs, data: superFor(g) });
    writes.push({ pos: (start(g) + 1) * bs, data: gdt });
  }
  for (const w of writes) await store.write(w.pos, w.data);
  await store.sync();
  await store.write((sbBlk + 1) * bs, gdt);
  await store.sync();
  await store.write(SUPERBLOCK_OFFSET, superFor(0));
  await store.sync();
  return result;
}
