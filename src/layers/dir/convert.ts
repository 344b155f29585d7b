/**
 * DirLayer's conversions at the syscall boundary: names checked to be one
 * component, statx results as engine Stats, syscall errors as FsError.
 */
import type { Stat } from '../../engine.js';
import { errnoNumber, FsError, type ErrnoCode } from '../../errors.js';
import { isSysError, type SysStat } from '../../native/sys.js';

const NAME_MAX = 255;

/** Names are one component: no '/', no NUL, not '.' or '..', 1..255 bytes. */
export function checkName(name: Buffer): void {
  if (!Buffer.isBuffer(name) || name.length === 0) throw new FsError('EINVAL', 'empty name');
  if (name.length > NAME_MAX) throw new FsError('ENAMETOOLONG');
  if (name.includes(0x2f) || name.includes(0)) throw new FsError('EINVAL', 'a name with / or NUL');
  if (name[0] === 0x2e && (name.length === 1 || (name.length === 2 && name[1] === 0x2e))) throw new FsError('EINVAL', '. or ..');
}

export function toStat(st: SysStat): Stat {
  return {
    ino: st.ino,
    mode: st.mode,
    nlink: st.nlink,
    uid: st.uid,
    gid: st.gid,
    size: st.size,
    blocks: st.blocks,
    atime: st.atime,
    atimeNsec: st.atimeNsec,
    mtime: st.mtime,
    mtimeNsec: st.mtimeNsec,
    ctime: st.ctime,
    ctimeNsec: st.ctimeNsec,
    rdev: st.rdev,
    generation: 0,
  };
}

export function toFsError(err: unknown, detail: string): unknown {
  if (!isSysError(err) || err instanceof FsError) return err;
  const code = err.code as ErrnoCode;
  if (errnoNumber(code) === undefined) return new FsError('EIO', `${detail}: ${err.message}`);
  return new FsError(code, `${err.syscall}, ${detail}`);
}
