/**
 * What a mount serves, assembled from the command line: one engine opened
 * directly (a SIF's or SquashFS image's root read-only; an ext3 image,
 * read-only or --writable), with its write lock when writable.
 *
 * A writable image is locked with an OFD write lock on its byte range (as
 * Apptainer locks ext3 overlays), held by the daemon until it ends; a second
 * writer is refused naming the image. Readers take no lock.
 */
import * as fs from 'node:fs';
import type { ReadableFs } from '../engine.js';
import { UsageError } from '../errors.js';
import { openExt3 } from '../ext3/index.js';
import { detectImageKind, openImage } from '../image/index.js';
import { FileRegion } from '../io/file-region.js';
import { ofdLock } from '../native/sys.js';

export interface StackRequest {
  /** The SIF or image (the Apptainer form); absent in the fuse-overlayfs form. */
  image?: string;
  overlays?: string[];
  writable?: boolean;
  writableTmpfsMiB?: number | undefined;
  fakeroot?: boolean;
  /** fuse-overlayfs form. */
  lowerdirs?: string[];
  upperdir?: string;
  workdir?: string;
  /** Kernel mount options passed through (checked). */
  mountOptions?: string[];
}

export interface Stack {
  fs: ReadableFs;
  fsname: string;
  mountOptions: string[];
  /** Drops the write locks (after fs.close()). */
  release(): void;
}

/*
 * fuse-overlayfs options sifuse takes, and the kernel/libfuse mount options it
 * passes through; every other option is refused by name.
 */
const PASS_THROUGH = new Set(['noatime', 'relatime', 'strictatime', 'nodiratime', 'nodev', 'nosuid', 'noexec', 'dev',
  'suid', 'exec', 'rw', 'allow_other', 'allow_root']);
/** Options that are already what sifuse does, or that only mount(8) acts on. */
const IGNORED_WITH_REASON = new Set(['default_permissions', 'noacl', 'defaults', 'auto', 'noauto', 'nofail', '_netdev', 'user', 'users']);

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
    else if (key === 'ro') request.writable = false;
    else if (PASS_THROUGH.has(key) && eq < 0) mountOptions.push(key);
    else if ((IGNORED_WITH_REASON.has(key) || key.startsWith('x-')) && eq < 0) continue;
    else throw new UsageError(`mount option "${key}" is not supported by sifuse`);
  }
  if (request.lowerdirs !== undefined && request.lowerdirs.length === 0) throw new UsageError('lowerdir= names no layer');
  if ((request.upperdir === undefined) !== (request.workdir === undefined) && request.upperdir !== undefined) {
    throw new UsageError('upperdir= needs workdir=');
  }
  return { request, mountOptions };
}

/** Takes the OFD write lock on [start, start+length) of `path`; the fd stays open while locked. */
export function lockForWriting(path: string, start: number, length: number): () => void {
  const fd = fs.openSync(path, 'r+');
  let ok: boolean;
  try {
    ok = ofdLock(fd, start, length, true);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
  if (!ok) {
    fs.closeSync(fd);
    throw new UsageError('is in use for writing by another process (sifuse or apptainer holds its lock)', path);
  }
  return () => fs.closeSync(fd);
}

async function openDirect(req: StackRequest): Promise<Stack> {
  const image = req.image!;
  const kind = await detectImageKind(image);
  if (kind === null) throw new UsageError('is not a SIF, SquashFS or ext3 image', image);
  if (!req.writable) {
    return { fs: await openImage(image), fsname: image, mountOptions: req.mountOptions ?? [], release: () => {} };
  }
  if (kind !== 'ext3') throw new UsageError('--writable needs an ext3 image or a SIF with an overlay partition', image);
  const size = fs.statSync(image).size;
  const unlock = lockForWriting(image, 0, size);
  try {
    const region = await FileRegion.open(image, { writable: true });
    const engine = await openExt3(region, { writable: true });
    return { fs: engine, fsname: image, mountOptions: req.mountOptions ?? [], release: unlock };
  } catch (err) {
    unlock();
    throw err;
  }
}

export async function openStack(req: StackRequest): Promise<Stack> {
  if (req.image !== undefined && !req.overlays?.length && req.writableTmpfsMiB === undefined) {
    return openDirect(req);
  }
  throw new UsageError('overlays need the Overlay engine, which this build does not have yet');
}
