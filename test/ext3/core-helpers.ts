/**
 * Helpers for the ext3 engine's own tests (test/ext3/core*.test.ts): images
 * made by mkfs.ext3 in a temp dir, the engine opened on them, e2fsck -fn and
 * debugfs as the judges.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { expect } from 'vitest';
import { FileRegion } from '../../src/io/file-region.js';
import { openExt3 } from '../../src/ext3/index.js';
import type { Ext3Fs } from '../../src/ext3/fs.js';
import type { InodeId } from '../../src/engine.js';

export interface MkfsOptions {
  sizeK: number;
  blockSize?: number;
  inodeSize?: number;
  /** mkfs.ext3 -d: populate from this directory. */
  src?: string;
  inodes?: number;
  extra?: string[];
}

export function mkfs(path: string, o: MkfsOptions): void {
  const args = ['-q', '-F', '-b', String(o.blockSize ?? 1024), '-I', String(o.inodeSize ?? 256)];
  if (o.src) args.push('-d', o.src);
  if (o.inodes) args.push('-N', String(o.inodes));
  args.push(...(o.extra ?? []), path, `${o.sizeK}k`);
  execFileSync('mkfs.ext3', args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, E2FSPROGS_FAKE_TIME: '' } });
}

export async function openImage(
  path: string,
  writable: boolean,
  options: { now?: () => { sec: number; nsec: number }; commitIntervalMs?: number } = {},
): Promise<Ext3Fs> {
  const store = await FileRegion.open(path, { writable });
  try {
    return await openExt3(store, { writable, ...options });
  } catch (e) {
    await store.close();
    throw e;
  }
}

/** e2fsck -fn must report nothing to fix (exit 0); returns its output for messages. */
export function expectFsckClean(path: string): string {
  const r = spawnSync('e2fsck', ['-fn', path], { encoding: 'utf8' });
  const out = `${r.stdout}${r.stderr}`;
  expect(r.status, `e2fsck -fn ${path}:\n${out}`).toBe(0);
  return out;
}

export function debugfs(path: string, request: string): string {
  const r = spawnSync('debugfs', ['-R', request, path], { encoding: 'latin1' });
  return r.stdout;
}

export function debugfsCat(path: string, file: string): Buffer {
  const r = spawnSync('debugfs', ['-R', `cat ${file}`, path], { maxBuffer: 1 << 30 });
  return r.stdout;
}

export function b(s: string): Buffer {
  return Buffer.from(s);
}

/** Resolves a slash path from the root (no symlink following). */
export async function resolve(fs: Ext3Fs, path: string): Promise<InodeId | null> {
  let id: InodeId = fs.rootId;
  for (const part of path.split('/').filter((p) => p.length > 0)) {
    const next = await fs.lookup(id, Buffer.from(part));
    if (next === null) return null;
    id = next;
  }
  return id;
}

/** One line per object, sorted: path type mode uid:gid size data xattrs (like the project manifest, no times). */
export async function manifest(fs: Ext3Fs): Promise<string[]> {
  const lines: string[] = [];
  const walk = async (id: InodeId, path: string): Promise<void> => {
    for (const e of await fs.readdir(id)) {
      const p = `${path}/${e.name.toString('latin1')}`;
      const st = await fs.getattr(e.id);
      let data = '-';
      if (e.type === 'f') {
        const { createHash } = await import('node:crypto');
        data = createHash('sha256')
          .update(await fs.read(e.id, 0, st.size))
          .digest('hex')
          .slice(0, 16);
      } else if (e.type === 'l') data = (await fs.readlink(e.id)).toString('latin1');
      else if (e.type === 'c' || e.type === 'b') data = String(st.rdev);
      // Names as bytes (one latin1 character per byte, like the paths here), in byte order.
      const xs = (await fs.listxattr(e.id)).sort(Buffer.compare);
      const xv: string[] = [];
      for (const x of xs) xv.push(`${x.toString('latin1')}=${(await fs.getxattr(e.id, x))!.toString('hex')}`);
      lines.push(
        `${p} ${e.type} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${e.type === 'd' ? '-' : st.size} ${data} ${xv.join(',')}`,
      );
      if (e.type === 'd') await walk(e.id, p);
    }
  };
  await walk(fs.rootId, '');
  return lines.sort();
}
