/**
 * Loop mounts for tests, without `mount -o loop`.
 *
 * `mount -o loop FILE` reuses a loop device already bound to a file with the
 * same device and inode number. A loop device is detached asynchronously
 * after umount (autoclear), so while one test deletes its image and another
 * creates a new one that gets the freed inode number, the new mount can be
 * given the old, deleted file: the kernel then shows another image's tree
 * (seen here as rare failures of the kernel views when suites ran in
 * parallel). So every mount here binds a fresh device with `losetup --find`
 * and detaches it (`losetup -d`) after the umount, once the filesystem is
 * really shut down (see unmountSync).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { basename, resolve } from 'node:path';

const devices = new Map<string, string>();

export interface LoopOptions {
  /** Filesystem type for mount -t. */
  type: string;
  /** Mount options (without loop). */
  options?: string[];
  readonly?: boolean;
  offset?: number;
  sizelimit?: number;
}

/** Binds `image` to a new loop device and mounts it on `mountpoint`. */
export function loopMountSync(image: string, mountpoint: string, o: LoopOptions): void {
  mkdirSync(mountpoint, { recursive: true });
  const args = ['--find', '--show'];
  if (o.readonly) args.push('--read-only');
  if (o.offset !== undefined) args.push('--offset', String(o.offset));
  if (o.sizelimit !== undefined) args.push('--sizelimit', String(o.sizelimit));
  const dev = execFileSync('losetup', [...args, image], { encoding: 'utf8' }).trim();
  try {
    const opts = [...(o.options ?? []), ...(o.readonly ? ['ro'] : [])];
    execFileSync('mount', ['-t', o.type, ...(opts.length ? ['-o', opts.join(',')] : []), dev, mountpoint], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
  } catch (err) {
    spawnSync('losetup', ['-d', dev]);
    throw err;
  }
  devices.set(resolve(mountpoint), dev);
}

/**
 * Unmounts `mountpoint` (any kind), retrying while busy for up to 10 s, then
 * detaches its loop device if loopMountSync made one. Throws if it stays mounted.
 */
export function unmountSync(mountpoint: string): void {
  const key = resolve(mountpoint);
  let done = false;
  for (let i = 0; i < 100 && !done; i++) {
    if (spawnSync('umount', [mountpoint]).status === 0 || spawnSync('mountpoint', ['-q', mountpoint]).status !== 0) done = true;
    else Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
  }
  if (!done) throw new Error(`${mountpoint}: still mounted after 10 s of umount attempts`);
  const dev = devices.get(key);
  if (dev) {
    devices.delete(key);
    // umount only detaches this namespace's mount: a mount namespace another
    // process made meanwhile (bwrap, podman, unshare) holds a copy, and the
    // filesystem is shut down (journal checkpointed, superblock written) only
    // when the last copy goes. Until then the image file lacks the kernel's
    // last writes, so wait for ext4's per-device entry to go away first.
    const live = `/proc/fs/ext4/${basename(dev)}`;
    for (let i = 0; i < 300 && existsSync(live); i++) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
    if (existsSync(live))
      throw new Error(`${mountpoint}: the filesystem on ${dev} is still in use after 30 s (a mount namespace holds it)`);
    spawnSync('losetup', ['-d', dev]);
  }
}
