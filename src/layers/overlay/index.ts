/**
 * The Overlay engine (issue 8): merged lookup and readdir (resolve.ts,
 * readdir.ts), copy-up (copy-up.ts), whiteout/opaque/redirect encodings
 * (encoding.ts), upper-layer steps (upper-ops.ts), inode numbers (ino.ts),
 * the node table (nodes.ts), uid/gid mapping (idmap.ts), the namespace lock
 * (lock.ts), and the WritableFs itself (overlay.ts).
 *
 * Assembling a stack (lowers top first, as the kernel's lowerdir):
 *
 *     const rootfs = await openSquashfsLayer(sifPath, { offset, length });   // SIF partition
 *     const ro = await openExt3Layer('extra.img', { readOnly: true });      // --overlay extra.img:ro
 *     const upper = await openExt3Layer('overlay.img');                     // --overlay overlay.img
 *     if (!isUpperLayer(upper)) throw ...;                                  // (or openMemUpper() for --writable-tmpfs,
 *                                                                           //  openDirLayer(dir, { writable: true }))
 *     const ov = await Overlay.open({ lowers: [ro, rootfs], upper, map: fakeroot ? { uid, gid } : undefined });
 *
 * `ov` is a WritableFs (src/engine.ts): its InodeIds are its own; hold them
 * with ref/unref (the FUSE adapter's lookup counts). close() closes every
 * layer. With no upper, or an upper engine opened read-only, every write is
 * EROFS.
 */
export { Overlay, openOverlay, INDEX_DIR, type OverlayOptions } from './overlay.js';
export { isInternalXattr } from './encoding.js';
export type { IdMap } from './idmap.js';
