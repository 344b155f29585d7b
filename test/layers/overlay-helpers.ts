/**
 * Fixtures for the Overlay tests: SquashFS lowers packed by mksquashfs from
 * small trees (char 0/0 whiteouts through pseudo definitions, so no root is
 * needed), ext3 uppers made by `sifuse overlay create`'s code path, and path
 * helpers over any ReadableFs.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createOverlayImage } from '../../src/commands/overlay.js';
import type { InodeId, ReadableFs, WritableFs } from '../../src/engine.js';
import { manifestLines } from '../../src/inspect/manifest.js';
import { resolvePath } from '../../src/inspect/path.js';
import { openExt3Layer } from '../../src/layers/ext3-layer.js';
import { isUpperLayer, type Layer, type UpperLayer } from '../../src/layers/layer.js';
import { Overlay, type OverlayOptions } from '../../src/layers/overlay/index.js';
import { openSquashfsLayer } from '../../src/layers/squashfs-layer.js';

export const isRoot = process.getuid?.() === 0;

export function tempDir(tag: string): string {
  return mkdtempSync(join(tmpdir(), `sifuse-ov-${tag}-`));
}

/** A tree spec: path -> file content (string/Buffer), `{dir}`, `{link}`, `{xattrs}` on files/dirs. */
export type TreeSpec = Record<
  string,
  | string
  | Buffer
  | { dir: true; xattrs?: Record<string, string> }
  | { link: string }
  | { hardlink: string }
  | { sparse: number; data: Buffer }
>;

export function writeTree(root: string, spec: TreeSpec): void {
  for (const [path, v] of Object.entries(spec)) {
    const p = join(root, path);
    mkdirSync(dirname(p), { recursive: true });
    if (typeof v === 'string' || Buffer.isBuffer(v)) writeFileSync(p, v);
    else if ('dir' in v) {
      mkdirSync(p, { recursive: true });
      for (const [k, x] of Object.entries(v.xattrs ?? {})) execFileSync('setfattr', ['-n', k, '-v', x, p]);
    } else if ('link' in v) execFileSync('ln', ['-s', v.link, p]);
    else if ('hardlink' in v) execFileSync('ln', [join(root, v.hardlink), p]);
    else {
      // A hole, data at 16 KiB, a hole to the end.
      const fd = openSync(p, 'w');
      writeSync(fd, v.data, 0, v.data.length, 16384);
      ftruncateSync(fd, v.sparse);
      closeSync(fd);
    }
  }
}

/**
 * A SquashFS image of `spec`; `pseudo` are mksquashfs -p definitions, e.g.
 * `'d/gone c 0 0 0 0 0'` (char 0/0: a kernel whiteout).
 */
export function makeSquashfs(dir: string, tag: string, spec: TreeSpec, pseudo: string[] = []): string {
  const src = join(dir, `${tag}-src`);
  mkdirSync(src, { recursive: true });
  writeTree(src, spec);
  const out = join(dir, `${tag}.sqfs`);
  const args = [src, out, '-noappend', '-quiet', '-no-progress', '-all-root'];
  for (const p of pseudo) args.push('-p', p);
  const r = spawnSync('mksquashfs', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`mksquashfs failed: ${r.stderr}`);
  return out;
}

/** A fresh ext3 overlay image (64 MiB, sparse) as `sifuse overlay create` makes it. */
export async function makeExt3Image(dir: string, tag: string): Promise<string> {
  const path = join(dir, `${tag}.img`);
  await createOverlayImage(path, { sizeMiB: 64, sparse: true, createDirs: [], fakeroot: false, owner: { uid: 0, gid: 0 } });
  return path;
}

export async function openUpper(path: string): Promise<UpperLayer> {
  const l = await openExt3Layer(path, { commitIntervalMs: 5000 });
  if (!isUpperLayer(l)) throw new Error(`${path}: not opened writable`);
  return l;
}

export interface Stack {
  ov: Overlay;
  lowers: Layer[];
  upper?: UpperLayer;
}

/** Opens the Overlay over squashfs images (top first) and an optional ext3 image. */
export async function openStack(lowers: string[], upperImage?: string, extra: Partial<OverlayOptions> = {}): Promise<Overlay> {
  const ls: Layer[] = [];
  for (const l of lowers) ls.push(await openSquashfsLayer(l));
  const upper = upperImage ? await openUpper(upperImage) : undefined;
  return Overlay.open({ lowers: ls, upper, ...extra });
}

export function b(s: string): Buffer {
  return Buffer.from(s);
}

export async function at(fs: ReadableFs, path: string): Promise<InodeId> {
  return resolvePath(fs, path);
}

export async function exists(fs: ReadableFs, path: string): Promise<boolean> {
  try {
    await resolvePath(fs, path);
    return true;
  } catch {
    return false;
  }
}

export async function readAll(fs: ReadableFs, path: string): Promise<Buffer> {
  const id = await at(fs, path);
  const st = await fs.getattr(id);
  return fs.read(id, 0, st.size);
}

export async function names(fs: ReadableFs, path: string): Promise<string[]> {
  return (await fs.readdir(await at(fs, path))).map((e) => e.name.toString('latin1'));
}

/** Parent id and last name of a path. */
export async function parentOf(fs: ReadableFs, path: string): Promise<[InodeId, Buffer]> {
  const i = path.lastIndexOf('/');
  const dir = i <= 0 ? '/' : path.slice(0, i);
  return [await at(fs, dir), b(path.slice(i + 1))];
}

export async function writeFile(fs: WritableFs, path: string, data: Buffer | string, mode = 0o644): Promise<InodeId> {
  const [dir, name] = await parentOf(fs, path);
  let id = await fs.lookup(dir, name);
  if (id === null) id = await fs.mknod(dir, name, { mode: 0o100000 | mode, uid: 0, gid: 0 });
  else await fs.truncate(id, 0);
  const d = typeof data === 'string' ? b(data) : data;
  if (d.length > 0) await fs.write(id, 0, d);
  return id;
}

export async function manifest(fs: ReadableFs, options: { mtimes?: boolean } = {}): Promise<string[]> {
  const out: string[] = [];
  for await (const line of manifestLines(fs)) {
    let s = line.toString('latin1');
    if (!options.mtimes) {
      const f = s.split('\t');
      f[6] = '-';
      s = f.join('\t');
    }
    out.push(s);
  }
  return out;
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

export function e2fsck(image: string): { ok: boolean; output: string } {
  const r = spawnSync('e2fsck', ['-fn', image], { encoding: 'utf8' });
  return { ok: r.status === 0, output: `${r.stdout}${r.stderr}` };
}
