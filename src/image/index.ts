/**
 * Opens any image a user names and returns the filesystem in it as a
 * ReadableFs, choosing by content, not by file name:
 *
 *   SIF        "SIF_MAGIC" at 32: the primary system partition (or the
 *              descriptor picked with `partition`), then detected as below
 *   SquashFS   "hsqs" at 0
 *   ext3       0xEF53 at 1080 (superblock at 1024, s_magic at 0x38)
 *
 * A SIF partition is opened as a FileRegion of the SIF file, so no decoded
 * pointer in it can reach the rest of the SIF.
 */
import type { ReadableFs } from '../engine.js';
import { CorruptError, nameEngineErrors, UnsupportedError, UsageError } from '../errors.js';
import { openExt3 } from '../ext3/index.js';
import { FileRegion } from '../io/file-region.js';
import { FsType, isSifHeader, SifImage } from '../sif/index.js';
import { openSquashfs, SQUASHFS_MAGIC, type SquashfsOptions } from '../squashfs/index.js';

export interface OpenImageOptions extends SquashfsOptions {
  /** SIF descriptor id of the partition to open (default: the primary system partition). */
  partition?: number;
}

export type ImageKind = 'sif' | 'squashfs' | 'ext3';

const EXT_MAGIC_OFFSET = 1024 + 0x38;
const EXT_MAGIC = 0xef53;

/** What the first bytes of a region hold, or null. */
async function detect(region: FileRegion): Promise<'squashfs' | 'ext3' | null> {
  if (region.size >= 4 && (await region.read(0, 4)).readUInt32LE(0) === SQUASHFS_MAGIC) return 'squashfs';
  if (region.size >= EXT_MAGIC_OFFSET + 2 && (await region.read(EXT_MAGIC_OFFSET, 2)).readUInt16LE(0) === EXT_MAGIC) {
    return 'ext3';
  }
  return null;
}

/** The kind of image at `path`, or null when it is none of the three. */
export async function detectImageKind(path: string): Promise<ImageKind | null> {
  const region = await FileRegion.open(path);
  try {
    const head = await region.read(0, Math.min(region.size, 64));
    if (isSifHeader(head)) return 'sif';
    return await detect(region);
  } finally {
    await region.close();
  }
}

async function openRegion(region: FileRegion, options: OpenImageOptions, what: string): Promise<ReadableFs> {
  const kind = await detect(region);
  // Each opener applies the error boundary; applying it here again is a no-op, and keeps
  // any engine added later inside it.
  if (kind === 'squashfs') return nameEngineErrors(await openSquashfs(region, options), region.name);
  if (kind === 'ext3') return nameEngineErrors(await openExt3(region, { writable: false }), region.name);
  throw new CorruptError(`${what} is not a SIF, SquashFS or ext3 image`, region.name);
}

async function openSifPartition(path: string, options: OpenImageOptions): Promise<FileRegion> {
  const sif = await SifImage.open(path);
  try {
    const d = options.partition === undefined ? sif.primaryPartition() : sif.descriptor(options.partition);
    if (!d) {
      if (options.partition === undefined) throw new UsageError('SIF has no primary system partition (use --partition ID)', path);
      throw new UsageError(`SIF has no object with id ${options.partition}`, path);
    }
    if (d.partition?.fsType === FsType.EncryptedSquashfs || d.partition?.fsType === FsType.GocryptfsSquashfs) {
      throw new UnsupportedError(`SIF partition ${d.id} is encrypted`, path);
    }
    return await FileRegion.open(path, { offset: d.offset, length: d.size });
  } finally {
    await sif.close();
  }
}

/** Opens the filesystem in a SIF, SquashFS or ext3 image file. The result owns the file: close() it. */
export async function openImage(path: string, options: OpenImageOptions = {}): Promise<ReadableFs> {
  const whole = await FileRegion.open(path);
  let region = whole;
  try {
    const head = await whole.read(0, Math.min(whole.size, 64));
    if (isSifHeader(head)) {
      await whole.close();
      region = await openSifPartition(path, options);
      const what = options.partition === undefined ? 'the primary partition' : `SIF object ${options.partition}`;
      return await openRegion(region, options, what);
    }
    if (options.partition !== undefined) throw new UsageError('--partition applies only to SIF images', path);
    return await openRegion(whole, options, 'the file');
  } catch (err) {
    await region.close();
    throw err;
  }
}
