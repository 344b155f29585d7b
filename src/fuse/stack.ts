/**
 * What a mount serves, assembled from the command line with Apptainer's
 * rules (DESIGN.md "The user's view"; reference/sif-and-apptainer.md B.4):
 *
 * - the base: a SIF's primary partition or a SquashFS image (read-only); an
 *   ext3 image served directly (read-only, or itself with --writable);
 * - the SIF's embedded ext3 overlay partition: the lowest read-only overlay
 *   (its upper/), or with --writable the upper;
 * - --overlay PATH[:ro], repeatable: an ext3 image (upper/ + work/), a
 *   directory (DIR/upper when present, else DIR; writable: DIR/upper +
 *   DIR/work), or a SquashFS image (always read-only). Only one may be
 *   writable; read-only ones stack with the last listed on top;
 * - --writable-tmpfs[=MiB]: an in-memory upper (MemLayer), capped, discarded.
 *
 * The fuse-overlayfs form (-o lowerdir=L1:L2,upperdir=U,workdir=W) takes host
 * directories, and SIF, SquashFS and ext3 images as layers too.
 *
 * A writable image or SIF partition is locked with an OFD write lock on its
 * byte range (as Apptainer locks ext3 overlays) for as long as the daemon
 * runs; a second writer is refused naming the image. Readers take no lock.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { InodeId, ReadableFs } from '../engine.js';
import { S_IFDIR, S_IFMT } from '../engine.js';
import { UsageError, UnsupportedError } from '../errors.js';
import { openExt3 } from '../ext3/index.js';
import { detectImageKind, openImage } from '../image/index.js';
import { FileRegion } from '../io/file-region.js';
import { DirLayer, openDirLayer } from '../layers/dir.js';
import { encodingFor } from '../layers/dir/capabilities.js';
import { openExt3Layer } from '../layers/ext3-layer.js';
import { isUpperLayer, type Layer, type UpperLayer } from '../layers/layer.js';
import { openMemUpperLayer } from '../layers/mem.js';
import { openOverlay } from '../layers/overlay/index.js';
import { openSquashfsLayer } from '../layers/squashfs-layer.js';
import { ofdLock } from '../native/sys.js';
import { FsType, PartType, SifImage } from '../sif/index.js';

export interface StackRequest {
  /** The SIF or image (the Apptainer form); absent in the fuse-overlayfs form. */
  image?: string;
  overlays?: string[];
  writable?: boolean;
  writableTmpfsMiB?: number | undefined;
  fakeroot?: boolean;
  /** fuse-overlayfs form: top first. */
  lowerdirs?: string[];
  upperdir?: string;
  workdir?: string;
  /** Kernel mount options passed through (checked). */
  mountOptions?: string[];
  /**
   * `-o redirect_dir=off`: a renamed lower directory is copied up whole rather
   * than recorded with trusted.overlay.redirect, for images that Apptainer's
   * unprivileged stack (fuse-overlayfs, which follows no redirects) will read.
   */
  redirectDir?: boolean;
}

export interface Stack {
  fs: ReadableFs;
  fsname: string;
  mountOptions: string[];
  /** Drops the write locks (after fs.close()). */
  release(): void;
}

/*
 * Kernel/libfuse mount options sifuse passes through; every other option
 * fuse-overlayfs knows (xino, squash_to_root, uidmapping, ...) is refused by
 * name rather than ignored.
 */
const PASS_THROUGH = new Set([
  'noatime',
  'relatime',
  'strictatime',
  'nodiratime',
  'nodev',
  'nosuid',
  'noexec',
  'dev',
  'suid',
  'exec',
  'rw',
  'allow_other',
]);
/**
 * Options that are already what sifuse does, or that only mount(8) acts on.
 * `volatile` (podman passes it for `run --rm`) and fuse-overlayfs's `fsync=0`
 * only permit skipping syncs; sifuse syncs anyway, which is the stronger promise.
 */
const ALREADY = new Set([
  'default_permissions',
  'noacl',
  'defaults',
  'auto',
  'noauto',
  'nofail',
  '_netdev',
  'user',
  'users',
  'volatile',
]);

export function parseOverlayfsOptions(options: string[]): { request: StackRequest; mountOptions: string[] } {
  const request: StackRequest = {};
  const mountOptions: string[] = [];
  for (const opt of options) {
    const eq = opt.indexOf('=');
    const key = eq < 0 ? opt : opt.slice(0, eq);
    const value = eq < 0 ? '' : opt.slice(eq + 1);
    if (key === 'lowerdir') request.lowerdirs = value.split(':').filter((x) => x !== '');
    else if (key === 'upperdir') request.upperdir = value;
    else if (key === 'workdir') request.workdir = value;
    else if (key === 'ro' && eq < 0) request.writable = false;
    else if (key === 'redirect_dir' && (value === 'on' || value === 'off')) request.redirectDir = value === 'on';
    else if (PASS_THROUGH.has(key) && eq < 0) mountOptions.push(key);
    else if ((ALREADY.has(key) || key.startsWith('x-')) && eq < 0) continue;
    else if (key === 'fsync' && (value === '0' || value === '1')) continue;
    else throw new UsageError(`mount option "${key}" is not supported by sifuse`);
  }
  if (request.lowerdirs !== undefined && request.lowerdirs.length === 0) throw new UsageError('lowerdir= names no layer');
  if (request.upperdir !== undefined && request.workdir === undefined) throw new UsageError('upperdir= needs workdir=');
  if (request.workdir !== undefined && request.upperdir === undefined) throw new UsageError('workdir= needs upperdir=');
  return { request, mountOptions };
}

/** Takes the OFD write lock on [start, start+length) of `file`; the returned function drops it. */
export function lockForWriting(file: string, start: number, length: number): () => void {
  const fd = fs.openSync(file, 'r+');
  let ok: boolean;
  try {
    ok = ofdLock(fd, start, length, true);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
  if (!ok) {
    fs.closeSync(fd);
    throw new UsageError('is in use for writing by another process (its write lock is held)', file);
  }
  return () => fs.closeSync(fd);
}

/** Everything opened so far, closed again if assembly fails. */
class Opened {
  readonly layers: Layer[] = [];
  readonly unlocks: (() => void)[] = [];
  async abort(): Promise<void> {
    for (const l of this.layers) await l.fs.close().catch(() => undefined);
    this.release();
  }
  release(): void {
    for (const u of this.unlocks.splice(0)) u();
  }
  add<T extends Layer>(l: T): T {
    this.layers.push(l);
    return l;
  }
}

interface OverlaySpec {
  path: string;
  readOnly: boolean;
}

/** Apptainer's parsing: split at the first ':', only the suffix "ro" means read-only. */
export function parseOverlaySpec(spec: string): OverlaySpec {
  const i = spec.indexOf(':');
  if (i < 0) return { path: spec, readOnly: false };
  return { path: spec.slice(0, i), readOnly: spec.slice(i + 1) === 'ro' };
}

/** A layer from a path: a directory, an ext3 image (upper/), a SquashFS image, or a SIF (its root filesystem). */
async function openLayer(o: Opened, file: string, writable: boolean): Promise<Layer> {
  const st = fs.statSync(file, { throwIfNoEntry: false });
  if (!st) throw new UsageError('no such file or directory', file);
  if (st.isDirectory()) {
    if (writable) return o.add(await openDirLayer(file, { writable: true }));
    return o.add(await openDirLayer(file, { writable: false }));
  }
  const kind = await detectImageKind(file);
  if (kind === 'squashfs') return o.add(await openSquashfsLayer(file));
  if (kind === 'ext3') {
    if (writable) o.unlocks.push(lockForWriting(file, 0, st.size));
    return o.add(await openExt3Layer(file, { readOnly: !writable }));
  }
  if (kind === 'sif') {
    if (writable) throw new UsageError('a SIF is not writable as an overlay', file);
    const image = await openImage(file);
    return o.add({ name: file, fs: image, root: image.rootId });
  }
  throw new UsageError('is not a directory, SIF, SquashFS or ext3 image', file);
}

interface SifParts {
  overlay?: { offset: number; length: number; id: number };
}

async function sifParts(file: string): Promise<SifParts> {
  const sif = await SifImage.open(file);
  try {
    const d = sif.descriptors((x) => x.partition?.partType === PartType.Overlay && x.partition.fsType === FsType.Ext3)[0];
    return d ? { overlay: { offset: d.offset, length: d.size, id: d.id } } : {};
  } finally {
    await sif.close();
  }
}

function fakerootMap(fakeroot: boolean | undefined): { uid: number; gid: number } | undefined {
  return fakeroot ? { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 } : undefined;
}

async function openApptainer(req: StackRequest): Promise<Stack> {
  const image = req.image!;
  const specs = (req.overlays ?? []).map(parseOverlaySpec);
  const kind = await detectImageKind(image);
  if (kind === null) throw new UsageError('is not a SIF, SquashFS or ext3 image', image);
  if (req.writable && specs.length > 0) throw new UsageError('--writable and --overlay do not combine');
  if (req.writableTmpfsMiB !== undefined && req.writable) throw new UsageError('--writable-tmpfs and --writable do not combine');

  // An ext3 image with no overlays is served directly (read-only, or --writable itself).
  if (kind === 'ext3' && specs.length === 0 && req.writableTmpfsMiB === undefined) {
    if (!req.writable)
      return { fs: await openImage(image), fsname: image, mountOptions: req.mountOptions ?? [], release: () => {} };
    const unlock = lockForWriting(image, 0, fs.statSync(image).size);
    try {
      const region = await FileRegion.open(image, { writable: true });
      const engine = await openExt3(region, { writable: true });
      return { fs: engine, fsname: image, mountOptions: req.mountOptions ?? [], release: unlock };
    } catch (err) {
      unlock();
      throw err;
    }
  }
  if (req.writable && kind !== 'sif')
    throw new UsageError('--writable needs a SIF with an overlay partition, or an ext3 image', image);

  const o = new Opened();
  try {
    const base = await openImage(image);
    const baseLayer = o.add({ name: image, fs: base, root: base.rootId });
    const lowers: Layer[] = [baseLayer];
    let upper: UpperLayer | undefined;
    if (kind === 'sif') {
      const parts = await sifParts(image);
      if (parts.overlay) {
        const { offset, length } = parts.overlay;
        if (req.writable) o.unlocks.push(lockForWriting(image, offset, length));
        const l = o.add(await openExt3Layer(image, { offset, length, readOnly: !req.writable }));
        if (req.writable) {
          if (!isUpperLayer(l)) throw new UsageError('the SIF overlay partition is not writable', image);
          upper = l;
        } else {
          lowers.unshift(l);
        }
      } else if (req.writable) {
        throw new UsageError('no SIF writable overlay partition found', image);
      }
    }
    // Each read-only overlay goes on top of the ones before it (the last listed is on top).
    let writableSeen = 0;
    for (const spec of specs) {
      let wantWritable = !spec.readOnly;
      const kindOf = fs.statSync(spec.path, { throwIfNoEntry: false })?.isDirectory()
        ? 'dir'
        : await detectImageKind(spec.path).catch(() => null);
      if (wantWritable && kindOf === 'squashfs') wantWritable = false; // SquashFS is always read-only
      if (wantWritable && ++writableSeen > 1) {
        throw new UsageError("you can't specify more than one writable overlay; use --overlay PATH:ro for the others");
      }
      if (wantWritable && req.writableTmpfsMiB !== undefined)
        throw new UsageError('--writable-tmpfs does not combine with a writable overlay');
      const l = await openLayer(o, spec.path, wantWritable);
      if (wantWritable) {
        if (!isUpperLayer(l)) throw new UsageError('cannot be opened for writing', spec.path);
        upper = l;
      } else {
        lowers.unshift(l);
      }
    }
    if (req.writableTmpfsMiB !== undefined) {
      // upper/ and work/ belong to the caller, as in Apptainer's session tmpfs (so the
      // merged root is theirs to write in); with --fakeroot that is 0, shown as the caller.
      const owner = req.fakeroot ? { uid: 0, gid: 0 } : { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
      const mem = await openMemUpperLayer({
        name: 'tmpfs',
        capBytes: req.writableTmpfsMiB * 1024 * 1024,
        rootMode: S_IFDIR | 0o755,
        ...owner,
      });
      upper = o.add({ name: 'tmpfs', fs: mem.fs, root: mem.root, work: mem.work, encoding: 'kernel' as const });
    }
    if (!upper && lowers.length === 1 && !req.fakeroot) {
      // Nothing to merge: the image is served as it is (read-only).
      return { fs: base, fsname: image, mountOptions: req.mountOptions ?? [], release: () => o.release() };
    }
    const overlay = await openOverlay({
      lowers,
      upper,
      map: fakerootMap(req.fakeroot),
      name: image,
      redirectDir: req.redirectDir,
    });
    return { fs: overlay, fsname: image, mountOptions: req.mountOptions ?? [], release: () => o.release() };
  } catch (err) {
    await o.abort();
    throw err;
  }
}

/** Walks `rel` (relative components) down from the root of `dir`. */
async function walk(dir: DirLayer, rel: string, what: string): Promise<InodeId> {
  let id = dir.rootId;
  for (const part of rel.split('/').filter((x) => x !== '')) {
    const next = await dir.lookup(id, Buffer.from(part));
    if (next === null) throw new UsageError('no such directory', what);
    id = next;
  }
  const st = await dir.getattr(id);
  if ((st.mode & S_IFMT) !== S_IFDIR) throw new UsageError('is not a directory', what);
  return id;
}

/** upperdir=U,workdir=W: a directory layer rooted where both live, U as the layer and W as its work directory. */
async function openUpperDirs(o: Opened, upperdir: string, workdir: string): Promise<UpperLayer> {
  const kind = fs.statSync(upperdir, { throwIfNoEntry: false })?.isDirectory()
    ? 'dir'
    : await detectImageKind(upperdir).catch(() => null);
  if (kind === 'ext3') {
    const l = await openLayer(o, upperdir, true);
    if (!isUpperLayer(l)) throw new UsageError('cannot be opened for writing', upperdir);
    return l;
  }
  if (kind !== 'dir') throw new UsageError('upperdir= must be a directory or an ext3 image', upperdir);
  const u = fs.realpathSync(upperdir);
  const w = fs.realpathSync(workdir);
  if (fs.statSync(u).dev !== fs.statSync(w).dev)
    throw new UsageError('upperdir= and workdir= must be on the same filesystem', workdir);
  let common = path.dirname(u);
  while (!(w + '/').startsWith(common === '/' ? '/' : common + '/')) common = path.dirname(common);
  const dl = DirLayer.open(common, { writable: true });
  o.add({ name: upperdir, fs: dl, root: dl.rootId });
  const root = await walk(dl, path.relative(common, u), upperdir);
  const work = await walk(dl, path.relative(common, w), workdir);
  return { name: upperdir, fs: dl, root, work, encoding: encodingFor(dl.probe(work)) };
}

async function openOverlayfsForm(req: StackRequest): Promise<Stack> {
  const o = new Opened();
  try {
    const lowers: Layer[] = [];
    for (const l of req.lowerdirs ?? []) lowers.push(await openLayer(o, l, false));
    const upper =
      req.upperdir !== undefined && req.writable !== false ? await openUpperDirs(o, req.upperdir, req.workdir!) : undefined;
    if (lowers.length === 0 && !upper) throw new UsageError('no lowerdir= given');
    const name = (req.lowerdirs ?? [])[0] ?? req.upperdir!;
    const overlay = await openOverlay({ lowers, upper, map: fakerootMap(req.fakeroot), name, redirectDir: req.redirectDir });
    // As fuse-overlayfs does as root: a container's other users may enter its root
    // (default_permissions still checks modes) and its set-id programs work. Options
    // given later (nosuid) win.
    const rootDefaults = process.getuid?.() === 0 ? ['allow_other', 'suid'] : [];
    return {
      fs: overlay,
      fsname: name,
      mountOptions: [...rootDefaults, ...(req.mountOptions ?? [])],
      release: () => o.release(),
    };
  } catch (err) {
    await o.abort();
    throw err;
  }
}

export async function openStack(req: StackRequest): Promise<Stack> {
  if (req.image !== undefined) return openApptainer(req);
  if (req.lowerdirs === undefined && req.upperdir === undefined) throw new UnsupportedError('nothing to mount');
  return openOverlayfsForm(req);
}
