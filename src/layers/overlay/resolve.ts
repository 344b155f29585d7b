/**
 * Lookup across layers (overlayfs.rst "Directories", "Redirect dir"): the
 * upper first, then each lower directory the parent merges, top down.
 *
 * - a whiteout ends the search: nothing below is visible;
 * - a non-directory found first is the object; found under a directory it
 *   ends the merge;
 * - directories merge until one is opaque;
 * - a directory's redirect changes where the layers below are searched: a
 *   relative one (a name) in the same parent directories, an absolute one
 *   ("/a/b") from each lower layer's root.
 */
import { fileTypeOf, type FileType, type InodeId, type Stat } from '../../engine.js';
import { CorruptError } from '../../errors.js';
import { isKernelWhiteoutMode, readDirMarks, redirectComponents, whiteoutNameFor } from './encoding.js';
import type { LayerRef } from './nodes.js';
import type { Stack } from './stack.js';

export type Probe =
  { kind: 'none' } | { kind: 'whiteout'; encoding: 'kernel' | 'fuse' } | { kind: 'obj'; id: InodeId; type: FileType; st: Stat };

export interface Resolution {
  /** The visible type, or null when nothing is visible. */
  type: FileType | null;
  /** The upper object at the name (not a whiteout). */
  upper: InodeId | null;
  /** A whiteout at the name in the upper directory, and its encoding. */
  upperWhiteout: 'kernel' | 'fuse' | null;
  /** Non-directory from a lower layer. */
  lower: LayerRef | null;
  /** Directory: the merged lower directories, top first. */
  lowers: LayerRef[];
  /** The upper directory's redirect. */
  redirect: Buffer | null;
  /** The upper directory is opaque. */
  opaque: boolean;
}

type Spec = { kind: 'name'; name: Buffer } | { kind: 'path'; comps: Buffer[] };

function specFromRedirect(redirect: Buffer): Spec {
  if (redirect[0] === 0x2f) return { kind: 'path', comps: redirectComponents(redirect) };
  return { kind: 'name', name: redirect };
}

const NAME_MAX = 255;

const NONE: Probe = { kind: 'none' };

/** `name` in `dir` of `layer`; `fuseWhiteouts` false: `dir` is known to hold no `.wh.NAME` entry. */
export async function probe(stack: Stack, layer: number, dir: InodeId, name: Buffer, fuseWhiteouts = true): Promise<Probe> {
  const fs = stack[layer]!.fs;
  const id = await fs.lookup(dir, name);
  if (id === null) {
    if (!fuseWhiteouts) return NONE;
    if (name.length + 4 <= NAME_MAX && (await fs.lookup(dir, whiteoutNameFor(name))) !== null)
      return { kind: 'whiteout', encoding: 'fuse' };
    return NONE;
  }
  const st = await fs.getattr(id);
  if (isKernelWhiteoutMode(st.mode, st.rdev)) return { kind: 'whiteout', encoding: 'kernel' };
  const type = fileTypeOf(st.mode);
  if (type === null) throw new CorruptError(`invalid file type in mode 0${st.mode.toString(8)}`, fs.name);
  return { kind: 'obj', id, type, st };
}

/** Walks directories `comps` from a layer's root; null where the path is missing or not a directory. */
async function walkDirs(stack: Stack, layer: number, comps: Buffer[]): Promise<InodeId | null> {
  let dir = stack[layer]!.root;
  for (const c of comps) {
    const p = await probe(stack, layer, dir, c);
    if (p.kind !== 'obj' || p.type !== 'd') return null;
    dir = p.id;
  }
  return dir;
}

export function emptyResolution(): Resolution {
  return { type: null, upper: null, upperWhiteout: null, lower: null, lowers: [], redirect: null, opaque: false };
}

/**
 * The lower part of a lookup: layers `first..` searched per `spec`, results
 * added to `res` (which may already hold an upper directory).
 */
async function resolveBelow(
  stack: Stack,
  first: number,
  parentLowers: readonly LayerRef[],
  initial: Spec,
  res: Resolution,
): Promise<void> {
  // A name in a directory with no lower directories: nothing below to search.
  if (initial.kind === 'name' && parentLowers.length === 0) return;
  let spec = initial;
  for (let li = first; li < stack.length; li++) {
    let dir: InodeId | null;
    let name: Buffer;
    if (spec.kind === 'name') {
      const pd = parentLowers.find((d) => d.layer === li);
      if (!pd) continue;
      dir = pd.id;
      name = spec.name;
    } else {
      dir = await walkDirs(stack, li, spec.comps.slice(0, -1));
      name = spec.comps[spec.comps.length - 1]!;
    }
    if (dir === null) continue;
    const p = await probe(stack, li, dir, name);
    if (p.kind === 'whiteout') break;
    if (p.kind === 'none') continue;
    if (p.type !== 'd') {
      if (res.type === null) {
        res.type = p.type;
        res.lower = { layer: li, id: p.id };
      }
      break;
    }
    res.type = 'd';
    res.lowers.push({ layer: li, id: p.id });
    const marks = await readDirMarks(stack[li]!.fs, p.id);
    if (marks.opaque) break;
    if (marks.redirect) spec = specFromRedirect(marks.redirect);
  }
}

export interface ParentDirs {
  upper: InodeId | null;
  lowers: readonly LayerRef[];
  /** The upper directory holds no `.wh.NAME` entry (Node.whiteoutFree). */
  whiteoutFree?: boolean;
}

/** `name` in merged directory `parent`; `hasUpper` says stack[0] is the upper layer. */
export async function resolveChild(stack: Stack, hasUpper: boolean, parent: ParentDirs, name: Buffer): Promise<Resolution> {
  const res = emptyResolution();
  let spec: Spec = { kind: 'name', name };
  if (hasUpper && parent.upper !== null) {
    const p = await probe(stack, 0, parent.upper, name, parent.whiteoutFree !== true);
    if (p.kind === 'whiteout') {
      res.upperWhiteout = p.encoding;
      return res;
    }
    if (p.kind === 'obj') {
      res.upper = p.id;
      res.type = p.type;
      if (p.type !== 'd') return res;
      const marks = await readDirMarks(stack[0]!.fs, p.id);
      res.redirect = marks.redirect;
      res.opaque = marks.opaque;
      if (marks.opaque) return res;
      if (marks.redirect) spec = specFromRedirect(marks.redirect);
    }
  }
  // A name in a directory with no lower directories: nothing below (no await).
  if (spec.kind === 'name' && parent.lowers.length === 0) return res;
  await resolveBelow(stack, hasUpper ? 1 : 0, parent.lowers, spec, res);
  return res;
}

/** Whether any lower layer shows something at `name` under `parent` (a whiteout is then needed to hide it). */
export async function lowerPositive(stack: Stack, hasUpper: boolean, parent: ParentDirs, name: Buffer): Promise<boolean> {
  const res = emptyResolution();
  await resolveBelow(stack, hasUpper ? 1 : 0, parent.lowers, { kind: 'name', name }, res);
  return res.type !== null;
}
