/**
 * Whiteout, opaque and redirect encodings (reference/sif-and-apptainer.md
 * B.6, peers.md sections 1 and 4) and the overlay-internal xattr names.
 *
 * Read on every layer, whatever wrote it:
 *   whiteout  char device 0/0 (kernel), or an entry `.wh.NAME` (fuse-overlayfs)
 *   opaque    trusted.overlay.opaque=y | user.overlay.opaque=y |
 *             user.fuseoverlayfs.opaque=y... | a `.wh..wh..opq` entry inside
 *   redirect  trusted.overlay.redirect | user.overlay.redirect: an absolute path
 *             ("/a/b", from the layer root) or one name (same parent)
 * Written on an upper, per its WhiteoutEncoding (src/layers/layer.ts).
 */
import type { ReadableFs, InodeId, WritableFs } from '../../engine.js';
import { S_IFCHR, S_IFMT, S_IFREG } from '../../engine.js';
import { FsError } from '../../errors.js';
import type { WhiteoutEncoding } from '../layer.js';

export const WH_PREFIX = Buffer.from('.wh.');
export const WH_OPAQUE_NAME = Buffer.from('.wh..wh..opq');

export const XATTR_OPAQUE = Buffer.from('trusted.overlay.opaque');
export const XATTR_USER_OPAQUE = Buffer.from('user.overlay.opaque');
export const XATTR_FUSE_OPAQUE = Buffer.from('user.fuseoverlayfs.opaque');
export const XATTR_REDIRECT = Buffer.from('trusted.overlay.redirect');
export const XATTR_USER_REDIRECT = Buffer.from('user.overlay.redirect');
/*
 * sifuse's own marks live inside the overlay namespaces, so the kernel (which
 * hides every trusted.overlay.* name, and user.overlay.* with userxattr) and
 * fuse-overlayfs (user.overlay.*) never show them to users either.
 */
/** The st_ino an object had where it came from (decimal), kept across copy-up. */
export const XATTR_INO = Buffer.from('trusted.overlay.sifuse.ino');
export const XATTR_USER_INO = Buffer.from('user.overlay.sifuse.ino');
/** On an index inode: how many names of the lower inode are still lower-only. */
export const XATTR_LOWER_LINKS = Buffer.from('trusted.overlay.sifuse.lowerlinks');
export const XATTR_USER_LOWER_LINKS = Buffer.from('user.overlay.sifuse.lowerlinks');

const INTERNAL_PREFIXES = ['trusted.overlay.', 'user.overlay.', 'user.fuseoverlayfs.', 'trusted.sifuse.', 'user.sifuse.'].map(
  (p) => Buffer.from(p),
);

const TRUSTED_OVERLAY = Buffer.from('trusted.overlay.');
const ESCAPED = Buffer.from('trusted.overlay.overlay.');

function hasPrefix(name: Buffer, p: Buffer): boolean {
  return name.length > p.length && name.subarray(0, p.length).equals(p);
}

/**
 * The kernel's xattr escaping (overlayfs.rst "Nesting overlayfs"): a user's
 * `trusted.overlay.X` is stored as `trusted.overlay.overlay.X`, and shown
 * back without the extra `overlay.`; the overlay's own marks stay hidden.
 */
export function escapeXattr(name: Buffer): Buffer | null {
  return hasPrefix(name, TRUSTED_OVERLAY) ? Buffer.concat([ESCAPED, name.subarray(TRUSTED_OVERLAY.length)]) : null;
}

/** The user-visible name of a stored xattr, or null for an internal one. */
export function shownXattr(stored: Buffer): Buffer | null {
  if (hasPrefix(stored, ESCAPED)) return Buffer.concat([TRUSTED_OVERLAY, stored.subarray(ESCAPED.length)]);
  return isInternalXattr(stored) ? null : stored;
}

/** Overlay-internal xattrs: never listed, read, set or removed through the overlay (escaped ones aside). */
export function isInternalXattr(name: Buffer): boolean {
  if (hasPrefix(name, ESCAPED)) return false;
  return INTERNAL_PREFIXES.some((p) => name.length >= p.length && name.subarray(0, p.length).equals(p));
}

/** Names reserved by the fuse-overlayfs encoding: hidden from listings, refused on create. */
export function isWhiteoutName(name: Buffer): boolean {
  // ".wh." byte by byte: asked on every lookup and listing entry, so no subarray.
  return name.length >= 4 && name[0] === 0x2e && name[1] === 0x77 && name[2] === 0x68 && name[3] === 0x2e;
}

export function whiteoutNameFor(name: Buffer): Buffer {
  return Buffer.concat([WH_PREFIX, name]);
}

export function isKernelWhiteoutMode(mode: number, rdev: number): boolean {
  return (mode & S_IFMT) === S_IFCHR && rdev === 0;
}

/** Per layer directory: what its xattrs and markers say. */
export interface DirMarks {
  opaque: boolean;
  redirect: Buffer | null;
  ino: number | null;
}

function startsWithY(v: Buffer | null): boolean {
  return v !== null && v.length > 0 && v[0] === 0x79;
}

/** Reads a layer directory's opaque/redirect/ino marks with one listxattr. */
export async function readDirMarks(fs: ReadableFs, dir: InodeId): Promise<DirMarks> {
  const names = await fs.listxattr(dir);
  const has = (n: Buffer) => names.some((x) => x.equals(n));
  let opaque = false;
  for (const n of [XATTR_OPAQUE, XATTR_USER_OPAQUE, XATTR_FUSE_OPAQUE]) {
    if (has(n) && startsWithY(await fs.getxattr(dir, n))) opaque = true;
  }
  if (!opaque && (await fs.lookup(dir, WH_OPAQUE_NAME)) !== null) opaque = true;
  let redirect: Buffer | null = null;
  for (const n of [XATTR_REDIRECT, XATTR_USER_REDIRECT]) {
    if (redirect === null && has(n)) redirect = await fs.getxattr(dir, n);
  }
  if (redirect !== null && !validRedirect(redirect)) redirect = null;
  const ino = has(XATTR_INO) || has(XATTR_USER_INO) ? await readInoMark(fs, dir, names) : null;
  return { opaque, redirect, ino };
}

/** A relative redirect is one name; an absolute one a '/'-rooted path of names (no '.', '..', NUL). */
export function validRedirect(v: Buffer): boolean {
  if (v.length === 0 || v.includes(0)) return false;
  const comps = v[0] === 0x2f ? redirectComponents(v) : [v];
  if (comps.length === 0 || comps.length > 4096) return false;
  if (v[0] !== 0x2f && v.includes(0x2f)) return false;
  return comps.every((c) => c.length > 0 && c.length <= 255 && !c.equals(Buffer.from('.')) && !c.equals(Buffer.from('..')));
}

export function redirectComponents(v: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let start = 1;
  for (let i = 1; i <= v.length; i++) {
    if (i === v.length || v[i] === 0x2f) {
      if (i > start) out.push(v.subarray(start, i));
      start = i + 1;
    }
  }
  return out;
}

export function encodeAbsoluteRedirect(comps: Buffer[]): Buffer {
  const parts: Buffer[] = [];
  for (const c of comps) parts.push(Buffer.from('/'), c);
  return parts.length === 0 ? Buffer.from('/') : Buffer.concat(parts);
}

/** The kept origin st_ino of an object, or null. */
export async function readInoMark(fs: ReadableFs, id: InodeId, names?: Buffer[]): Promise<number | null> {
  const list = names ?? (await fs.listxattr(id));
  for (const n of [XATTR_INO, XATTR_USER_INO]) {
    if (!list.some((x) => x.equals(n))) continue;
    const v = await fs.getxattr(id, n);
    if (v === null) continue;
    const s = v.toString('latin1');
    if (/^[0-9]{1,16}$/.test(s)) {
      const ino = Number(s);
      if (Number.isSafeInteger(ino) && ino > 0) return ino;
    }
  }
  return null;
}

/**
 * Writes an overlay-internal xattr in the trusted namespace, falling back to
 * the user namespace where the upper refuses trusted.* (unprivileged
 * directory uppers).
 */
export async function setInternalXattr(fs: WritableFs, id: InodeId, trusted: Buffer, user: Buffer, value: Buffer): Promise<void> {
  try {
    await fs.setxattr(id, trusted, value);
  } catch (err) {
    if (
      err instanceof FsError &&
      (err.code === 'EPERM' || err.code === 'ENOTSUP' || err.code === 'EOPNOTSUPP' || err.code === 'EACCES')
    ) {
      await fs.setxattr(id, user, value);
      return;
    }
    throw err;
  }
}

/** Marks an upper directory opaque in the upper's encoding. */
export async function writeOpaque(
  fs: WritableFs,
  dir: InodeId,
  encoding: WhiteoutEncoding,
  owner: { uid: number; gid: number },
): Promise<void> {
  if (encoding === 'kernel') {
    await fs.setxattr(dir, XATTR_OPAQUE, Buffer.from('y'));
    return;
  }
  await setInternalXattr(fs, dir, XATTR_OPAQUE, XATTR_FUSE_OPAQUE, Buffer.from('y'));
  if ((await fs.lookup(dir, WH_OPAQUE_NAME)) === null) {
    await fs.mknod(dir, WH_OPAQUE_NAME, { mode: S_IFREG | 0o700, uid: owner.uid, gid: owner.gid });
  }
}

/** Creates a whiteout for `name` in upper directory `dir` (the name itself must be free there). */
export async function writeWhiteout(
  fs: WritableFs,
  dir: InodeId,
  name: Buffer,
  encoding: WhiteoutEncoding,
  owner: { uid: number; gid: number },
): Promise<void> {
  if (encoding === 'kernel') {
    await fs.mknod(dir, name, { mode: S_IFCHR, uid: owner.uid, gid: owner.gid, rdev: 0 });
    return;
  }
  await fs.mknod(dir, whiteoutNameFor(name), { mode: S_IFREG | 0o700, uid: owner.uid, gid: owner.gid });
}
