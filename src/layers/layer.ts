/**
 * A layer of the overlay: one engine and the directory inside it that holds
 * the layer's tree. The Overlay (src/layers/overlay/) merges any number of
 * read-only layers under at most one writable upper; it talks to each layer
 * only through the engine contract (src/engine.ts).
 *
 *   SquashfsLayer  a SIF's root filesystem or a SquashFS image: root = image root
 *   Ext3Layer      an ext3 image file or SIF partition: root = `upper/`, work = `work/`
 *   DirLayer       a host directory: root = `DIR/upper` when present, else `DIR`
 *   MemLayer       the `--writable-tmpfs` upper: everything in memory, a byte cap
 *
 * Encodings (reference/sif-and-apptainer.md B.6): every layer's whiteouts and
 * opaque markers are *read* in all encodings; an upper *writes* one of them:
 *   'kernel'          whiteout = char device 0/0, opaque = trusted.overlay.opaque=y,
 *                     redirect = trusted.overlay.redirect (ext3 and memory uppers,
 *                     directory uppers where mknod and trusted.* are allowed)
 *   'fuse-overlayfs'  whiteout = `.wh.NAME`, opaque = user.fuseoverlayfs.opaque=y
 *                     plus `.wh..wh..opq` (unprivileged directory uppers)
 */
import type { InodeId, ReadableFs, WritableFs } from '../engine.js';

export type WhiteoutEncoding = 'kernel' | 'fuse-overlayfs';

export interface Layer {
  /** For messages: the image or directory path (with `:ro` when read-only by request). */
  readonly name: string;
  readonly fs: ReadableFs;
  /** The layer's top directory inside `fs`. */
  readonly root: InodeId;
}

export interface UpperLayer extends Layer {
  readonly fs: WritableFs;
  /** Scratch directory on the same engine for copy-up and atomic replacement (`work/`). */
  readonly work: InodeId;
  readonly encoding: WhiteoutEncoding;
}

export function isUpperLayer(layer: Layer): layer is UpperLayer {
  return 'work' in layer && (layer as UpperLayer).fs.writable;
}
