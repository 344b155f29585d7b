/**
 * ext2/3/4 feature flags (superblock s_feature_compat 0x5C, s_feature_incompat
 * 0x60, s_feature_ro_compat 0x64; names as in e2fsprogs lib/ext2fs/ext2_fs.h).
 *
 * The rule the kernel applies, and so do we: an unknown compat feature is
 * harmless; an unknown incompat feature means we cannot even read the image;
 * an unknown ro_compat feature means we may read but must not write.
 * checkFeatures() runs before anything is written, so a refused image is left
 * byte-for-byte untouched.
 */
import { UnsupportedError } from '../errors.js';

export const COMPAT = {
  dir_prealloc: 0x0001,
  imagic_inodes: 0x0002,
  has_journal: 0x0004,
  ext_attr: 0x0008,
  resize_inode: 0x0010,
  dir_index: 0x0020,
  lazy_bg: 0x0040,
  exclude_bitmap: 0x0100,
  sparse_super2: 0x0200,
  fast_commit: 0x0400,
  stable_inodes: 0x0800,
  orphan_file: 0x1000,
} as const;

export const INCOMPAT = {
  compression: 0x0001,
  filetype: 0x0002,
  needs_recovery: 0x0004,
  journal_dev: 0x0008,
  meta_bg: 0x0010,
  extent: 0x0040,
  '64bit': 0x0080,
  mmp: 0x0100,
  flex_bg: 0x0200,
  ea_inode: 0x0400,
  dirdata: 0x1000,
  metadata_csum_seed: 0x2000,
  large_dir: 0x4000,
  inline_data: 0x8000,
  encrypt: 0x10000,
  casefold: 0x20000,
} as const;

export const RO_COMPAT = {
  sparse_super: 0x0001,
  large_file: 0x0002,
  btree_dir: 0x0004,
  huge_file: 0x0008,
  uninit_bg: 0x0010,
  dir_nlink: 0x0020,
  extra_isize: 0x0040,
  has_snapshot: 0x0080,
  quota: 0x0100,
  bigalloc: 0x0200,
  metadata_csum: 0x0400,
  replica: 0x0800,
  read_only: 0x1000,
  project: 0x2000,
  shared_blocks: 0x4000,
  verity: 0x8000,
  orphan_present: 0x10000,
} as const;

/**
 * Incompat features this engine reads. `extent` files are readable (ext4
 * images), but an image using them is refused for writing below.
 */
const INCOMPAT_READ = INCOMPAT.filetype | INCOMPAT.needs_recovery | INCOMPAT.extent;
/** Incompat features this engine writes correctly. */
const INCOMPAT_WRITE = INCOMPAT.filetype | INCOMPAT.needs_recovery;
/**
 * ro_compat features this engine keeps valid while writing. dir_nlink: a
 * directory with more than 65000 subdirectories gets i_links_count 1, as the
 * kernel does. extra_isize: new inodes get s_want_extra_isize.
 */
const RO_COMPAT_WRITE = RO_COMPAT.sparse_super | RO_COMPAT.large_file | RO_COMPAT.dir_nlink | RO_COMPAT.extra_isize;
/**
 * Compat features whose on-disk structures we would corrupt by writing
 * without maintaining them (the rest are harmless to ignore).
 */
const COMPAT_WRITE_BLOCKERS = COMPAT.exclude_bitmap | COMPAT.orphan_file | COMPAT.fast_commit;

function names(table: Record<string, number>, mask: number): string[] {
  const out: string[] = [];
  let rest = mask >>> 0;
  for (const [name, bit] of Object.entries(table)) {
    if (rest & bit) {
      out.push(name);
      rest = (rest & ~bit) >>> 0;
    }
  }
  for (let bit = 0; bit < 32; bit++) {
    if (rest & (1 << bit)) out.push(`unknown(0x${((1 << bit) >>> 0).toString(16)})`);
  }
  return out;
}

export interface FeatureSet {
  compat: number;
  incompat: number;
  roCompat: number;
}

/** The names dumpe2fs prints, in flag order: compat, incompat, ro_compat. */
export function featureNames(f: FeatureSet): string[] {
  return [...names(COMPAT, f.compat), ...names(INCOMPAT, f.incompat), ...names(RO_COMPAT, f.roCompat)];
}

/**
 * Throws UnsupportedError (naming the image and the features) when the image
 * uses something we cannot read, or, with `writable`, cannot write safely.
 */
export function checkFeatures(f: FeatureSet, writable: boolean, file?: string): void {
  const badIncompat = (f.incompat & ~INCOMPAT_READ) >>> 0;
  if (badIncompat) {
    throw new UnsupportedError(
      `ext filesystem uses incompatible feature(s) this engine cannot read: ${names(INCOMPAT, badIncompat).join(', ')}`,
      file,
    );
  }
  if (!writable) return;
  const badW = (f.incompat & ~INCOMPAT_WRITE) >>> 0;
  const badRo = (f.roCompat & ~RO_COMPAT_WRITE) >>> 0;
  const badCompat = (f.compat & COMPAT_WRITE_BLOCKERS) >>> 0;
  if (badW || badRo || badCompat) {
    const list = [...names(COMPAT, badCompat), ...names(INCOMPAT, badW), ...names(RO_COMPAT, badRo)];
    throw new UnsupportedError(
      `ext filesystem uses feature(s) this engine cannot write (open it read-only): ${list.join(', ')}`,
      file,
    );
  }
}
