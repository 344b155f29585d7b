/**
 * The Overlay engine (issue 8): merged lookup and readdir (resolve.ts,
 * readdir.ts), copy-up (copy-up.ts), whiteout/opaque/redirect encodings
 * (encoding.ts), upper-layer steps (upper-ops.ts), inode numbers (ino.ts),
 * the node table (nodes.ts), uid/gid mapping (idmap.ts), the namespace lock
 * (lock.ts), and the WritableFs itself (overlay.ts).
 */
export { Overlay, openOverlay, INDEX_DIR, type OverlayOptions } from './overlay.js';
export { isInternalXattr } from './encoding.js';
export type { IdMap } from './idmap.js';
