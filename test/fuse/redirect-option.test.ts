/**
 * `-o redirect_dir=off` (the kernel's option name): renaming a lower
 * directory copies it up whole instead of writing trusted.overlay.redirect,
 * for overlay images Apptainer's unprivileged stack (fuse-overlayfs, which
 * follows no redirects) will read. The default writes the redirect.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildSif } from '../../src/commands/build.js';
import { makeTempDir, removeTempDir, runSifuse } from '../tools/helpers.js';
import { cleanup, mount, umount } from './helpers.js';

let dir: string;
let sif: string;

beforeAll(async () => {
  dir = makeTempDir('fuse-redirect');
  const tree = path.join(dir, 'tree');
  fs.mkdirSync(path.join(tree, 'etc', 'deep'), { recursive: true });
  fs.writeFileSync(path.join(tree, 'etc', 'a'), 'alpha\n');
  fs.writeFileSync(path.join(tree, 'etc', 'deep', 'b'), 'beta\n');
  sif = path.join(dir, 'img.sif');
  await buildSif(sif, tree);
});
afterAll(async () => {
  await cleanup();
  await removeTempDir(dir);
});

async function renameEtc(opts: string[]): Promise<string> {
  const img = path.join(dir, `ov-${opts.length}.img`);
  expect((await runSifuse(['overlay', 'create', '--sparse', img])).exitCode).toBe(0);
  const mnt = path.join(dir, `mnt-${opts.length}`);
  fs.mkdirSync(mnt);
  await mount([...opts, '--overlay', img, sif, mnt], path.join(dir, 'log'));
  try {
    fs.renameSync(path.join(mnt, 'etc'), path.join(mnt, 'etc2'));
    expect(fs.readFileSync(path.join(mnt, 'etc2', 'deep', 'b'), 'utf8')).toBe('beta\n');
    expect(fs.existsSync(path.join(mnt, 'etc'))).toBe(false);
  } finally {
    expect((await umount(mnt)).exitCode).toBe(0);
  }
  return (await runSifuse(['manifest', img, '/upper'])).stdout.toString();
}

describe('-o redirect_dir', () => {
  it('default: the renamed lower directory is a redirect, its files stay below', async () => {
    const m = await renameEtc([]);
    expect(m).toMatch(/^\/upper\/etc2\td\t.*trusted\.overlay\.redirect=/m);
    expect(m).not.toContain('/upper/etc2/a');
  });

  it('off: the directory is copied up whole, opaque, with no redirect', async () => {
    const m = await renameEtc(['-o', 'redirect_dir=off']);
    expect(m).not.toContain('trusted.overlay.redirect');
    expect(m).toMatch(/^\/upper\/etc2\td\t.*trusted\.overlay\.opaque=eQ==/m);
    expect(m).toMatch(/^\/upper\/etc2\/a\tf\t/m);
    expect(m).toMatch(/^\/upper\/etc2\/deep\/b\tf\t/m);
  });
});
