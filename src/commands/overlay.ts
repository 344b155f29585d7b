import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { type Command, InvalidArgumentError } from 'commander';
import { SingleBar } from 'cli-progress';
import { S_IFDIR } from '../engine.js';
import { isFileProblem, UsageError } from '../errors.js';
import { openExt3 } from '../ext3/index.js';
import { mkfsExt3 } from '../ext3/mkfs.js';
import { FileRegion } from '../io/file-region.js';
import { resizeExt3 } from '../ext3/resize.js';
import { decodeSuperblock, EXT2_VALID_FS, INCOMPAT, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE } from '../ext3/superblock.js';
import { ofdLock, ofdUnlock } from '../native/sys.js';
import { DataType, FsType, isSifHeader, PartType, SifImage } from '../sif/index.js';
import { hostGoArch } from '../sif/types.js';

/**
 * `sifuse overlay create`: a new ext3 overlay image file, as
 * `apptainer overlay create` makes one (reference/sif-and-apptainer.md B.1),
 * without mkfs.ext3 or dd: the file is made (sparse, or zero-filled), the
 * filesystem written in-process (src/ext3/mkfs.ts), then `upper/`, `work/`
 * and the --create-dir directories made through the ext3 engine. Everything
 * happens in a temporary file next to the target, renamed into place only
 * when complete, so a failure or an interrupt leaves nothing behind.
 */

/** Apptainer's minimum and default size. */
export const MIN_SIZE_MIB = 64;
const MiB = 1024 * 1024;
/** Above this, a fully allocated image shows a progress bar while zero-filling (on a TTY). */
const PROGRESS_MIN_BYTES = 256 * MiB;
const ZERO_CHUNK = 4 * MiB;

export interface OverlayCreateOptions {
  sizeMiB: number;
  sparse: boolean;
  createDirs: string[];
  fakeroot: boolean;
  /** Owner of upper/, work/ and created directories; default: the caller, or 0:0 with fakeroot. */
  owner?: { uid: number; gid: number };
  /** Zero-filling progress (bytes done, total); the CLI draws a bar. */
  progress?: (done: number, total: number) => void;
}

function parseSize(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('expected a size in MiB (a whole number)');
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n > 16 * 1024 * 1024) throw new InvalidArgumentError('size out of range');
  return n;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/**
 * The components of a --create-dir path below upper/, as Apptainer joins it
 * (an absolute path is taken relative to upper/). A path whose `..` climbs
 * out of upper/ is refused.
 */
export function createDirComponents(dir: string, image: string): string[] {
  const out: string[] = [];
  for (const part of dir.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length === 0) {
        throw new UsageError(
          `--create-dir ${dir}: overlay directory would be created outside of the overlay layout (upper/)`,
          image,
        );
      }
      out.pop();
      continue;
    }
    if (Buffer.byteLength(part) > 255)
      throw new UsageError(`--create-dir ${dir}: name "${part}" is longer than 255 bytes`, image);
    out.push(part);
  }
  return out;
}

/** Why an existing file that is not a SIF is refused: Apptainer's messages for the cases it tells apart. */
function describeExisting(image: string): string {
  let head = Buffer.alloc(0);
  try {
    const fd = fs.openSync(image, 'r');
    try {
      head = Buffer.alloc(2048);
      head = head.subarray(0, fs.readSync(fd, head, 0, 2048, 0));
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    // Unreadable or a directory: the plain refusal below says enough.
  }
  if (head.length >= 1082 && head.readUInt16LE(1080) === 0xef53) return 'EXT3 overlay image already exists';
  return 'already exists';
}

function isSifFile(image: string): boolean {
  try {
    const fd = fs.openSync(image, 'r');
    try {
      const head = Buffer.alloc(64);
      return isSifHeader(head.subarray(0, fs.readSync(fd, head, 0, 64, 0)));
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return false;
  }
}

/**
 * Why a SIF cannot take an overlay partition (Apptainer's refusals,
 * reference/sif-and-apptainer.md B.1), or null. `sif` is open read-write.
 */
function refuseSif(sif: SifImage): string | null {
  const primary = sif.primaryPartition();
  if (primary?.partition?.fsType === FsType.EncryptedSquashfs) {
    return 'the root filesystem is encrypted: an overlay partition cannot be added to it';
  }
  if (sif.descriptors((d) => d.dataType === DataType.Signature).length > 0) {
    return 'the SIF image is signed: adding an overlay partition would invalidate its signature';
  }
  const group = primary?.groupId ?? 1;
  const existing = sif.descriptors(
    (d) => d.partition?.fsType === FsType.Ext3 && d.partition.partType === PartType.Overlay && d.groupId === group,
  )[0];
  if (existing) {
    return `a writable overlay partition already exists in the SIF image (object ${existing.id}); delete it first with \`sifuse sif del ${existing.id} IMAGE\``;
  }
  return null;
}

/**
 * Creates the overlay image `image`, or, when `image` is an existing SIF,
 * adds an ext3 overlay partition to it (Partition, Ext3, Overlay, the
 * primary partition's architecture, group 1, 4096 alignment) as `apptainer
 * overlay create` does. Throws (leaving nothing behind: no file, an
 * unchanged SIF) on any failure.
 */
export async function createOverlayImage(image: string, opts: OverlayCreateOptions): Promise<void> {
  if (!Number.isSafeInteger(opts.sizeMiB) || opts.sizeMiB < MIN_SIZE_MIB) {
    throw new UsageError(`image size must be equal or greater than ${MIN_SIZE_MIB} MiB`, image);
  }
  let sif: SifImage | null = null;
  if (fs.existsSync(image) || isDanglingLink(image)) {
    if (!isSifFile(image)) throw new UsageError(describeExisting(image), image);
    try {
      sif = await SifImage.open(image, { writable: true });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
        throw new UsageError(
          `cannot open for writing: ${code === 'EROFS' ? 'read-only file system' : 'permission denied'}`,
          image,
        );
      }
      throw err;
    }
    const why = refuseSif(sif);
    if (why) {
      await sif.close();
      throw new UsageError(why, image);
    }
  }
  try {
    await buildOverlay(image, opts, sif);
  } finally {
    await sif?.close();
  }
}

async function buildOverlay(image: string, opts: OverlayCreateOptions, sif: SifImage | null): Promise<void> {
  const dirs = opts.createDirs.map((d) => createDirComponents(d, image));
  const uid = opts.owner?.uid ?? (opts.fakeroot ? 0 : (process.getuid?.() ?? 0));
  const gid = opts.owner?.gid ?? (opts.fakeroot ? 0 : (process.getgid?.() ?? 0));
  // Apptainer makes the layer directories world-writable when the owner's
  // ids do not fit 16 bits (so they stay usable where ids get squashed).
  const perm = uid > 65535 || gid > 65535 ? 0o777 : 0o755;
  const bytes = opts.sizeMiB * MiB;

  const tmp = path.join(path.dirname(image), `.${path.basename(image)}.${randomBytes(4).toString('hex')}.ext3`);
  let created = false;
  const cleanup = () => {
    if (created) fs.rmSync(tmp, { force: true });
  };
  const onSignal = (sig: NodeJS.Signals) => {
    cleanup();
    process.kill(process.pid, sig);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const fd = fs.openSync(tmp, 'wx', 0o600);
    created = true;
    try {
      fs.fchmodSync(fd, 0o600);
      if (opts.sparse) {
        fs.ftruncateSync(fd, bytes);
      } else {
        const zeros = Buffer.alloc(ZERO_CHUNK);
        for (let done = 0; done < bytes;) {
          const n = Math.min(ZERO_CHUNK, bytes - done);
          await writeAll(fd, zeros.subarray(0, n), done);
          done += n;
          opts.progress?.(done, bytes);
        }
      }
    } finally {
      fs.closeSync(fd);
    }
    const store = await FileRegion.open(tmp, { writable: true });
    try {
      await mkfsExt3(store);
    } catch (err) {
      await store.close();
      throw err;
    }
    await store.close();

    const region = await FileRegion.open(tmp, { writable: true });
    const engine = await openExt3(region, { writable: true }).catch(async (err: unknown) => {
      await region.close();
      throw err;
    });
    try {
      const node = { mode: S_IFDIR | perm, uid, gid };
      const upper = await engine.mkdir(engine.rootId, Buffer.from('upper'), node);
      await engine.mkdir(engine.rootId, Buffer.from('work'), node);
      for (const parts of dirs) {
        let at = upper;
        for (const part of parts) {
          const name = Buffer.from(part);
          at = (await engine.lookup(at, name)) ?? (await engine.mkdir(at, name, node));
        }
      }
    } finally {
      await engine.close();
    }
    if (sif) {
      // The SIF library writes data, then descriptor, then header, and restores the file on failure.
      const arch = sif.primaryPartition()?.partition?.arch ?? sif.primaryArch;
      await sif.add({
        dataType: DataType.Partition,
        data: { path: tmp },
        groupId: 1,
        alignment: 4096,
        partition: { fsType: FsType.Ext3, partType: PartType.Overlay, arch: arch && arch !== 'unknown' ? arch : hostGoArch() },
      });
    } else {
      // link(2) fails if the target appeared meanwhile: never replace someone's file.
      try {
        fs.linkSync(tmp, image);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new UsageError(describeExisting(image), image);
        throw err;
      }
    }
    fs.rmSync(tmp, { force: true });
    created = false;
    syncDir(path.dirname(image));
  } catch (err) {
    cleanup();
    throw nameTheImage(err, image, tmp);
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
}

/**
 * Host I/O errors (no such directory, permission denied, disk full) name the
 * temporary file; the user only knows the image they asked for.
 */
function nameTheImage(err: unknown, image: string, tmp: string): unknown {
  if (isFileProblem(err)) {
    if (err.file === tmp || err.file === undefined) err.file = image;
    return err;
  }
  const e = err as NodeJS.ErrnoException;
  if (e && typeof e.code === 'string') {
    const what = e.message.replace(/, \w+(?: '[^']*')?$/, '').replace(tmp, image);
    return new UsageError(`cannot create the image: ${what}`, image);
  }
  return err;
}

function isDanglingLink(p: string): boolean {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

function writeAll(fd: number, data: Buffer, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (off: number) => {
      if (off >= data.length) return resolve();
      fs.write(fd, data, off, data.length - off, position + off, (err, n) => (err ? reject(err) : step(off + n)));
    };
    step(0);
  });
}

function syncDir(dir: string): void {
  try {
    const fd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    // Some filesystems refuse fsync on directories; the rename itself is done.
  }
}

/**
 * `sifuse overlay resize --size MiB IMG`: grows or shrinks an ext3 overlay
 * image in place, as Apptainer's recipe `e2fsck -f IMG && resize2fs IMG
 * SIZE` does, without either tool (src/ext3/resize.ts). A journal that needs
 * recovery is replayed first (the engine opens and closes the image). The
 * image is locked like a mount locks it, so an overlay in use is refused.
 */
export async function resizeOverlayImage(image: string, sizeMiB: number): Promise<{ oldMiB: number; newMiB: number }> {
  if (!Number.isSafeInteger(sizeMiB) || sizeMiB < MIN_SIZE_MIB) {
    throw new UsageError(`image size must be equal or greater than ${MIN_SIZE_MIB} MiB`, image);
  }
  // A SIF: its ext3 overlay partition, which must be the last object (so it can grow or shrink in place).
  let sif: SifImage | null = null;
  let part: { id: number; offset: number; size: number } | null = null;
  if (isSifFile(image)) {
    sif = await SifImage.open(image, { writable: true });
    const d = sif.descriptors((o) => o.partition?.fsType === FsType.Ext3 && o.partition.partType === PartType.Overlay)[0];
    if (!d) {
      await sif.close();
      throw new UsageError('the SIF has no ext3 overlay partition to resize', image);
    }
    if (sif.descriptors((o) => o.id !== d.id && o.offset + o.size > d.offset).length > 0) {
      await sif.close();
      throw new UsageError(
        `the overlay partition (object ${d.id}) is not the last object in the SIF, so it cannot change size in place`,
        image,
      );
    }
    part = { id: d.id, offset: d.offset, size: d.size };
  }
  try {
    return await resizeRegion(image, sizeMiB, part, sif);
  } finally {
    await sif?.close();
  }
}

/** Resizes the ext3 filesystem at [part.offset, part.offset + part.size) of `image` (the whole file without `part`). */
async function resizeRegion(
  image: string,
  sizeMiB: number,
  part: { id: number; offset: number; size: number } | null,
  sif: SifImage | null,
): Promise<{ oldMiB: number; newMiB: number }> {
  let fd: number;
  try {
    fd = fs.openSync(image, 'r+');
  } catch (err) {
    throw new UsageError(`cannot open: ${(err as Error).message.replace(/^\w+: /, '').replace(/, open .*$/, '')}`, image);
  }
  const fileBytes = fs.fstatSync(fd).size;
  const offset = part?.offset ?? 0;
  const regionBytes = part?.size ?? fileBytes;
  const lockLength = part ? part.size : 0;
  try {
    // The range a mount of this image or partition locks for writing.
    if (!ofdLock(fd, offset, lockLength, true))
      throw new UsageError('the overlay image is in use (locked by another process)', image);
    try {
      const head = Buffer.alloc(SUPERBLOCK_SIZE);
      fs.readSync(fd, head, 0, SUPERBLOCK_SIZE, offset + SUPERBLOCK_OFFSET);
      if (head.readUInt16LE(0x38) !== 0xef53) throw new UsageError('not an ext3 overlay image', image);
      let sb = decodeSuperblock(head, regionBytes);
      if ((sb.s_feature_incompat & INCOMPAT.needs_recovery) !== 0 || (sb.s_state & EXT2_VALID_FS) === 0) {
        // Replay the journal (the engine does it on open) and close cleanly.
        const region = await FileRegion.open(image, { writable: true, offset, length: regionBytes });
        const engine = await openExt3(region, { writable: true }).catch(async (err: unknown) => {
          await region.close();
          throw err;
        });
        await engine.close();
        fs.readSync(fd, head, 0, SUPERBLOCK_SIZE, offset + SUPERBLOCK_OFFSET);
        sb = decodeSuperblock(head, regionBytes);
      }
      const bs = 1024 << sb.s_log_block_size;
      const oldBytes = sb.s_blocks_count * bs;
      const newBytes = sizeMiB * MiB;
      const growing = newBytes > oldBytes;
      if (growing) {
        // What lies past the filesystem's end is no part of it (nor of any other SIF
        // object: the partition is the last one): the new groups must read as zeros.
        fs.ftruncateSync(fd, offset + oldBytes);
        fs.ftruncateSync(fd, offset + newBytes);
      }
      const region = await FileRegion.open(image, { writable: true, offset, length: growing ? newBytes : regionBytes });
      let result;
      try {
        result = await resizeExt3(region, newBytes);
      } catch (err) {
        await region.close();
        if (growing) fs.ftruncateSync(fd, Math.max(fileBytes, offset + oldBytes));
        throw err;
      }
      await region.close();
      const endBytes = result.newBlocks * result.blockSize;
      fs.fsyncSync(fd);
      if (sif && part) {
        // The descriptor follows the filesystem: Size, SizeWithPadding, the header's DataSize, the file's end.
        await sif.resizeLastObject(part.id, endBytes);
      } else if (offset + endBytes < fileBytes || growing) {
        fs.ftruncateSync(fd, endBytes);
        fs.fsyncSync(fd);
      }
      return { oldMiB: oldBytes / MiB, newMiB: endBytes / MiB };
    } finally {
      ofdUnlock(fd, offset, lockLength);
    }
  } finally {
    fs.closeSync(fd);
  }
}

interface CreateFlags {
  size: number;
  sparse?: boolean;
  createDir: string[];
  fakeroot?: boolean;
}

export function registerOverlayCommands(program: Command): void {
  const overlay = program.command('overlay').description('Create writable overlay images (like `apptainer overlay`)');
  overlay
    .command('create')
    .description(
      'create a new ext3 overlay image file with upper/ and work/ (no mkfs.ext3 needed), ' +
        'or add one as an overlay partition to an existing SIF (then use it with --writable). ' +
        'Any other existing file is never modified.',
    )
    .argument('<image>', 'path of the new overlay image file, or an existing SIF')
    .option('-s, --size <MiB>', `size of the image in MiB (at least ${MIN_SIZE_MIB})`, parseSize, MIN_SIZE_MIB)
    .option('-S, --sparse', 'create a sparse file (space is allocated as the overlay fills)')
    .option('--create-dir <dir>', 'also create DIR inside upper/ (repeatable)', collect, [] as string[])
    .option('-f, --fakeroot', 'make upper/, work/ and created directories owned by root (0:0), for --fakeroot use')
    .action(async (image: string, flags: CreateFlags) => {
      const total = flags.size * MiB;
      const bar =
        !flags.sparse && total >= PROGRESS_MIN_BYTES && process.stderr.isTTY
          ? new SingleBar({ format: 'Allocating {bar} {percentage}% | {value}/{total} MiB', stream: process.stderr })
          : null;
      bar?.start(flags.size, 0);
      try {
        await createOverlayImage(image, {
          sizeMiB: flags.size,
          sparse: flags.sparse ?? false,
          createDirs: flags.createDir,
          fakeroot: flags.fakeroot ?? false,
          progress: bar ? (done) => bar.update(Math.floor(done / MiB)) : undefined,
        });
      } finally {
        bar?.stop();
      }
    });
  overlay
    .command('resize')
    .description(
      'grow or shrink an ext3 overlay image, or the overlay partition of a SIF, in place (no e2fsck or resize2fs needed); shrinking needs the data to fit',
    )
    .argument('<image>', 'the overlay image file, or a SIF whose overlay partition is its last object')
    .requiredOption('-s, --size <MiB>', `the new size in MiB (at least ${MIN_SIZE_MIB})`, parseSize)
    .action(async (image: string, flags: { size: number }) => {
      const r = await resizeOverlayImage(image, flags.size);
      if (r.newMiB !== flags.size)
        process.stderr.write(`sifuse: ${image}: resized to ${r.newMiB.toFixed(2)} MiB (whole block groups)\n`);
    });
}
