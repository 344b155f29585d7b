/**
 * What a host directory lets this process write, probed once in a scratch
 * directory (the layer's `work/`), so the overlay can pick its whiteout
 * encoding (src/layers/layer.ts, reference/sif-and-apptainer.md B.6):
 *
 *   whiteoutDevice  mknod of a character device 0/0 (root, or unprivileged
 *                   on Linux >= 5.8, commit a3c751a5, "vfs: allow
 *                   unprivileged whiteout creation")
 *   renameWhiteout  renameat2(RENAME_WHITEOUT)
 *   trustedXattrs   trusted.* xattrs (CAP_SYS_ADMIN in the fs's user namespace)
 *   userXattrs      user.* xattrs (not on every filesystem)
 *
 * 'kernel' needs char 0/0 whiteouts and trusted.overlay.opaque/redirect;
 * otherwise 'fuse-overlayfs' (`.wh.NAME`, user.fuseoverlayfs.opaque plus
 * `.wh..wh..opq`), which is what fuse-overlayfs itself falls back to.
 */
import { randomBytes } from 'node:crypto';
import type { WhiteoutEncoding } from '../layer.js';
import { S_IFCHR, S_IFMT, S_IFREG } from '../../engine.js';
import { isSysError, procFdPath, sys } from '../../native/sys.js';
import { openChild } from './node-table.js';
import { closeFd } from '../../native/sys.js';

export interface DirCapabilities {
  whiteoutDevice: boolean;
  renameWhiteout: boolean;
  trustedXattrs: boolean;
  userXattrs: boolean;
}

export function encodingFor(caps: DirCapabilities): WhiteoutEncoding {
  return caps.whiteoutDevice && caps.trustedXattrs ? 'kernel' : 'fuse-overlayfs';
}

/** Denials that mean "not allowed here", as opposed to a broken directory. */
const REFUSED = ['EPERM', 'EACCES', 'EOPNOTSUPP', 'ENOTSUP', 'EINVAL', 'ENOSYS'];

function allowed(fn: () => void): boolean {
  try {
    fn();
    return true;
  } catch (err) {
    if (isSysError(err, ...REFUSED)) return false;
    throw err;
  }
}

/** Probes in `scratchFd` (a directory fd) with names no one else uses; leaves nothing behind. */
export function probeCapabilities(scratchFd: number): DirCapabilities {
  const s = sys();
  const c = s.constants;
  const tag = `.sifuse-probe-${process.pid}-${randomBytes(6).toString('hex')}`;
  const made: string[] = [];
  const remove = (name: string): void => {
    try {
      s.unlinkat(scratchFd, name, 0);
    } catch (err) {
      if (!isSysError(err, 'ENOENT')) throw err;
    }
  };
  try {
    const dev = `${tag}-dev`;
    made.push(dev);
    const whiteoutDevice = allowed(() => s.mknodat(scratchFd, dev, S_IFCHR | 0o600, 0));

    const file = `${tag}-file`;
    const moved = `${tag}-moved`;
    made.push(file, moved);
    s.mknodat(scratchFd, file, S_IFREG | 0o600, 0);
    const fd = openChild(scratchFd, Buffer.from(file));
    let trustedXattrs = false;
    let userXattrs = false;
    if (fd !== null) {
      try {
        const at = procFdPath(fd);
        trustedXattrs = allowed(() => s.setxattrat(c.AT_FDCWD, at, 0, 'trusted.overlay.sifuse-probe', Buffer.from('y'), 0));
        userXattrs = allowed(() => s.setxattrat(c.AT_FDCWD, at, 0, 'user.sifuse-probe', Buffer.from('y'), 0));
      } finally {
        closeFd(fd);
      }
    }
    let renameWhiteout = allowed(() => s.renameat2(scratchFd, file, scratchFd, moved, c.RENAME_WHITEOUT));
    if (renameWhiteout) {
      const st = s.fstatat(scratchFd, file, c.AT_SYMLINK_NOFOLLOW);
      renameWhiteout = (st.mode & S_IFMT) === S_IFCHR && st.rdev === 0;
    }
    return { whiteoutDevice, renameWhiteout, trustedXattrs, userXattrs };
  } finally {
    for (const name of made) remove(name);
  }
}
