/**
 * The multi-step upper-layer operations the Overlay builds on, each made as
 * atomic as the upper engine allows: with rename flags (RENAME_WHITEOUT,
 * RENAME_EXCHANGE) one call; on an upper that refuses them (EINVAL: the flag
 * is not supported there) the same effect in two or three calls, which the
 * Overlay's namespace lock keeps invisible to other overlay callers (a crash
 * between them can show the intermediate state).
 */
import type { InodeId, WritableFs } from '../../engine.js';
import { FsError } from '../../errors.js';
import type { UpperLayer, WhiteoutEncoding } from '../layer.js';
import { isKernelWhiteoutMode, isWhiteoutName, WH_OPAQUE_NAME, whiteoutNameFor, writeWhiteout } from './encoding.js';

/** Temporary names in work/: removed at open if a crash left them. */
export const TMP_PREFIX = Buffer.from('#sifuse-');
const ROOT = { uid: 0, gid: 0 };

export class UpperOps {
  readonly fs: WritableFs;
  readonly work: InodeId;
  readonly encoding: WhiteoutEncoding;
  /** Whether the upper takes rename flags; learnt from the first EINVAL. */
  private flagsOk = true;
  private counter = 0;

  constructor(layer: UpperLayer) {
    this.fs = layer.fs;
    this.work = layer.work;
    this.encoding = layer.encoding;
  }

  get renameFlagsSupported(): boolean {
    return this.flagsOk;
  }

  tmpName(): Buffer {
    this.counter++;
    return Buffer.concat([TMP_PREFIX, Buffer.from(`${process.pid}-${Date.now().toString(36)}-${this.counter}`)]);
  }

  private async tryFlags(fn: () => Promise<void>): Promise<boolean> {
    if (!this.flagsOk) return false;
    try {
      await fn();
      return true;
    } catch (err) {
      if (err instanceof FsError && err.code === 'EINVAL') {
        this.flagsOk = false;
        return false;
      }
      throw err;
    }
  }

  /** Moves dir/name to work/<tmp> leaving a whiteout at dir/name; returns the tmp name. */
  async moveOutWithWhiteout(dir: InodeId, name: Buffer): Promise<Buffer> {
    const tmp = this.tmpName();
    if (this.encoding === 'kernel') {
      if (await this.tryFlags(() => this.fs.rename(dir, name, this.work, tmp, { whiteout: ROOT }))) return tmp;
      await this.fs.rename(dir, name, this.work, tmp);
      await writeWhiteout(this.fs, dir, name, 'kernel', ROOT);
      return tmp;
    }
    await this.fs.rename(dir, name, this.work, tmp);
    await writeWhiteout(this.fs, dir, name, 'fuse-overlayfs', ROOT);
    return tmp;
  }

  /** Moves dir/name to work/<tmp> (no whiteout); returns the tmp name. */
  async moveOut(dir: InodeId, name: Buffer): Promise<Buffer> {
    const tmp = this.tmpName();
    await this.fs.rename(dir, name, this.work, tmp);
    return tmp;
  }

  /** rename with a whiteout left at the source. */
  async renameWithWhiteout(oldDir: InodeId, oldName: Buffer, newDir: InodeId, newName: Buffer): Promise<void> {
    if (this.encoding === 'kernel') {
      if (await this.tryFlags(() => this.fs.rename(oldDir, oldName, newDir, newName, { whiteout: ROOT }))) return;
    }
    await this.fs.rename(oldDir, oldName, newDir, newName);
    await writeWhiteout(this.fs, oldDir, oldName, this.encoding, ROOT);
  }

  /** Swaps two existing entries. */
  async exchange(aDir: InodeId, aName: Buffer, bDir: InodeId, bName: Buffer): Promise<void> {
    if (await this.tryFlags(() => this.fs.rename(aDir, aName, bDir, bName, { exchange: true }))) return;
    const tmp = this.tmpName();
    await this.fs.rename(aDir, aName, this.work, tmp);
    await this.fs.rename(bDir, bName, aDir, aName);
    await this.fs.rename(this.work, tmp, bDir, bName);
  }

  /**
   * Puts work/<tmp> at dir/name where dir/name is a kernel whiteout (a char
   * device): a non-directory replaces it by rename; a directory swaps places
   * with it, then the whiteout is removed from work/.
   */
  async replaceWhiteout(tmp: Buffer, isDir: boolean, dir: InodeId, name: Buffer): Promise<void> {
    if (!isDir) {
      await this.fs.rename(this.work, tmp, dir, name);
      return;
    }
    await this.exchange(this.work, tmp, dir, name);
    await this.fs.unlink(this.work, tmp);
  }

  /** Removes a `.wh.NAME` marker if present. */
  async dropFuseWhiteout(dir: InodeId, name: Buffer): Promise<void> {
    const wh = whiteoutNameFor(name);
    if ((await this.fs.lookup(dir, wh)) !== null) await this.fs.unlink(dir, wh);
  }

  /**
   * Removes the whiteouts (char 0/0 and `.wh.NAME`) of a directory that was
   * just made opaque: the kernel wants none there (overlayfs.rst; fuse-overlayfs #306).
   */
  async dropWhiteouts(dir: InodeId): Promise<void> {
    for (const e of [...(await this.fs.readdir(dir))]) {
      if (e.name.equals(WH_OPAQUE_NAME)) continue;
      if (isWhiteoutName(e.name)) {
        await this.fs.unlink(dir, e.name);
        continue;
      }
      if (e.type !== 'c') continue;
      const st = await this.fs.getattr(e.id);
      if (isKernelWhiteoutMode(st.mode, st.rdev)) await this.fs.unlink(dir, e.name);
    }
  }

  /** Removes dir/name and, for a directory, everything below it. */
  async removeTree(dir: InodeId, name: Buffer): Promise<void> {
    const id = await this.fs.lookup(dir, name);
    if (id === null) return;
    const st = await this.fs.getattr(id);
    if ((st.mode & 0o170000) !== 0o040000) {
      await this.fs.unlink(dir, name);
      return;
    }
    for (;;) {
      const entries = await this.fs.readdir(id);
      if (entries.length === 0) break;
      for (const e of [...entries]) await this.removeTree(id, e.name);
    }
    await this.fs.rmdir(dir, name);
  }

}
