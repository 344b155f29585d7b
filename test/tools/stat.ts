/** A Stat for scripted engines in adapter tests: the given ino and mode, one link, everything else 0. */
import type { Stat } from '../../src/engine.js';

export function plainStat(ino: number, mode: number): Stat {
  return {
    ino,
    mode,
    nlink: 1,
    uid: 0,
    gid: 0,
    size: 0,
    blocks: 0,
    atime: 0,
    atimeNsec: 0,
    mtime: 0,
    mtimeNsec: 0,
    ctime: 0,
    ctimeNsec: 0,
    rdev: 0,
    generation: 0,
  };
}
