/**
 * DirLayer through the conformance suite: a fresh host directory per
 * sequence, opened by openDirLayer (the ops see `DIR/upper` as '/'), reopened
 * writable or read-only after close, and (every 5th sequence) the same
 * directory as the kernel itself sees it (the harness's Python helper
 * chrooted into `DIR/upper`, root only) compared with the model too.
 * As root, small instances are a 512 KiB tmpfs mounted on the directory, which
 * the fill sequences run out of space (ENOSPC a clean error, writes short).
 * Unprivileged, the generator leaves out devices, chown and trusted.*.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDirLayer } from '../../src/layers/dir.js';
import { FULL_CAPABILITIES, conformanceSuite, type ConformanceTarget } from '../conformance/index.js';
import { KernelTarget } from '../conformance/harness.js';

const isRoot = process.getuid?.() === 0;
let base = '';

const target: ConformanceTarget = {
  name: 'DirLayer',
  capabilities: isRoot ? FULL_CAPABILITIES : { ...FULL_CAPABILITIES, devices: false, chown: false, xattrNamespaces: ['user.'] },
  async setup() {
    base = mkdtempSync(join(tmpdir(), 'sifuse-dir-conformance-'));
  },
  async teardown() {
    rmSync(base, { recursive: true, force: true });
  },
  async open({ small }) {
    const dir = mkdtempSync(join(base, 'seq-'));
    if (small) execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=512k,mode=0755', 'tmpfs', dir]);
    const layer = await openDirLayer(dir, { writable: true });
    return {
      fs: layer.fs,
      root: layer.root,
      async reopen(writable: boolean) {
        const again = await openDirLayer(dir, { writable });
        return { fs: again.fs, root: again.root };
      },
      async views() {
        if (!isRoot) return [];
        const kernel = new KernelTarget(join(dir, 'upper'));
        return [Object.assign(kernel, { label: 'the host directory (kernel)' })];
      },
      keep: () => dir,
      async close() {
        if (small) execFileSync('umount', [dir]);
        rmSync(dir, { recursive: true, force: true });
      },
    };
  },
};

if (!isRoot) console.log('DirLayer conformance: no fill sequences (mounting a small tmpfs needs root)');
conformanceSuite(target, {
  sequences: 150,
  ops: 50,
  seedBase: 13_000_000,
  viewEvery: 5,
  fill: isRoot ? 30 : 0,
  timeoutMs: 60_000,
});
