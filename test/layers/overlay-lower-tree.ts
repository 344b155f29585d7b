/**
 * The tree the Overlay's conformance and kernel-oracle tests start from in
 * their lower layer, as conformance ops (so the model, an ext3 image, or a
 * host directory packed by mksquashfs can all be built from it): directories
 * (set-group-id, sticky), sparse and hard-linked files, a symlink, xattrs, a
 * character device and a fifo.
 */
import type { Op } from '../conformance/ops.js';

export const LOWER_OPS: Op[] = [
  { op: 'mkdir', path: '/a', mode: 0o755 },
  { op: 'mkdir', path: '/a/b', mode: 0o755 },
  { op: 'mkdir', path: '/a/b/c', mode: 0o700 },
  { op: 'mkdir', path: '/d', mode: 0o755 },
  { op: 'mkdir', path: '/d/sub', mode: 0o2775 },
  { op: 'mkdir', path: '/e', mode: 0o1777 },
  { op: 'mknod', path: '/a/f1', kind: 'f', mode: 0o644, major: 0, minor: 0 },
  { op: 'write', path: '/a/f1', offset: 0, length: 5000, seed: 1 },
  { op: 'mknod', path: '/a/b/f2', kind: 'f', mode: 0o600, major: 0, minor: 0 },
  { op: 'write', path: '/a/b/f2', offset: 100_000, length: 70_000, seed: 2 },
  { op: 'mknod', path: '/a/b/c/f3', kind: 'f', mode: 0o644, major: 0, minor: 0 },
  { op: 'mknod', path: '/d/g', kind: 'f', mode: 0o755, major: 0, minor: 0 },
  { op: 'write', path: '/d/g', offset: 0, length: 300, seed: 3 },
  { op: 'link', from: '/d/g', path: '/d/g2' },
  { op: 'link', from: '/d/g', path: '/a/g3' },
  { op: 'mknod', path: '/d/sub/x', kind: 'f', mode: 0o644, major: 0, minor: 0 },
  { op: 'symlink', path: '/e/s', target: '../a/f1' },
  { op: 'setxattr', path: '/a', name: 'user.x', value: '76', flags: 0 },
  { op: 'setxattr', path: '/a/f1', name: 'user.y', value: '77', flags: 0 },
  { op: 'mknod', path: '/e/dev', kind: 'c', mode: 0o644, major: 1, minor: 3 },
  { op: 'mknod', path: '/e/fifo', kind: 'p', mode: 0o644, major: 0, minor: 0 },
];
