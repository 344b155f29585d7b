/**
 * DirLayer as an unprivileged user (a real one, made with useradd, reached
 * with runuser): the capabilities probe must see no trusted.* xattrs and so
 * choose the fuse-overlayfs encoding; links, fifos, renames and xattrs in
 * user.* must still work; device nodes and chown to others must be EPERM.
 * Runs the built layer (dist/, which `npm test` builds first) in the child.
 */
import { afterAll, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { chownSync, existsSync, lstatSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { skipBecause } from '../tools/skip.js';

const USER = 'sifuset';
const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const distDir = join(repo, 'dist', 'layers', 'dir.js');
let base: string | undefined;

afterAll(() => {
  if (base) rmSync(base, { recursive: true, force: true });
});

/** The unprivileged user's uid/gid, made once with useradd if missing; or why there is none. */
function unprivilegedUser(): { uid: number; gid: number } | { reason: string } {
  if (process.getuid?.() !== 0) return { reason: 'needs root to run a child as another user (runuser)' };
  const id = (flag: string): number => Number(execFileSync('id', [flag, USER], { encoding: 'utf8' }).trim());
  if (spawnSync('id', [USER]).status !== 0) {
    const made = spawnSync('useradd', ['-m', USER], { encoding: 'utf8' });
    if (made.status !== 0) return { reason: `useradd ${USER} failed: ${made.stderr.trim()}` };
  }
  return { uid: id('-u'), gid: id('-g') };
}

const CHILD = String.raw`
import { openDirLayer } from ${JSON.stringify(distDir)};
const dir = process.argv[1];
const b = (s) => Buffer.from(s);
const me = { uid: process.getuid(), gid: process.getgid() };
const out = {};
const code = async (p) => { try { await p; return 'ok'; } catch (e) { return e.code ?? String(e); } };
const layer = await openDirLayer(dir, { writable: true });
const fs = layer.fs;
out.capabilities = layer.capabilities;
out.encoding = layer.encoding;
const f = await fs.mknod(layer.root, b('f'), { mode: 0o100644, ...me });
await fs.write(f, 0, b('data'));
out.link = await code(fs.link(f, layer.root, b('g')));
out.nlink = (await fs.getattr(f)).nlink;
const l = await fs.symlink(layer.root, b('l'), b('f'), me);
out.linkSymlink = await code(fs.link(l, layer.root, b('l2')));
out.l2 = (await fs.readlink(await fs.lookup(layer.root, b('l2')))).toString();
out.fifo = await code(fs.mknod(layer.root, b('p'), { mode: 0o010644, ...me }));
out.device = await code(fs.mknod(layer.root, b('tty'), { mode: 0o020644, uid: me.uid, gid: me.gid, rdev: 0x0401 }));
out.whiteoutDevice = await code(fs.mknod(layer.root, b('wh'), { mode: 0o020000, ...me, rdev: 0 }));
out.chownOther = await code(fs.setattr(f, { uid: 0 }));
out.chownSelf = await code(fs.setattr(f, { uid: me.uid, gid: me.gid }));
out.userXattr = await code(fs.setxattr(f, b('user.fuseoverlayfs.opaque'), b('y')));
out.trustedXattr = await code(fs.setxattr(f, b('trusted.overlay.opaque'), b('y')));
out.renameWhiteout = await code(fs.rename(layer.root, b('g'), layer.root, b('h'), { whiteout: me }));
out.exchange = await code(fs.rename(layer.root, b('f'), layer.root, b('h'), { exchange: true }));
out.mode = await code(fs.setattr(f, { mode: 0o4711 }));
out.modeAfter = ((await fs.getattr(f)).mode & 0o7777).toString(8);
await fs.close();
process.stdout.write(JSON.stringify(out));
`;

it('an unprivileged user gets the fuse-overlayfs encoding and a working layer', (ctx) => {
  const user = unprivilegedUser();
  if ('reason' in user) skipBecause(ctx, user.reason);
  if (!existsSync(distDir)) throw new Error('dist/layers/dir.js is missing: run `npx tsc -p tsconfig.json` (npm test does) first');
  base = mkdtempSync(join(tmpdir(), 'sifuse-unpriv-'));
  chownSync(base, user.uid, user.gid);
  const r = spawnSync('runuser', ['-u', USER, '--', process.execPath, '--input-type=module', '-e', CHILD, base], { encoding: 'utf8', cwd: '/' });
  if (r.status !== 0) throw new Error(`child failed (${r.status}): ${r.stderr}`);
  const out = JSON.parse(r.stdout) as Record<string, unknown>;
  console.log('unprivileged DirLayer:', out);
  expect(out.capabilities).toMatchObject({ trustedXattrs: false, userXattrs: true });
  expect(out.encoding).toBe('fuse-overlayfs');
  expect(out).toMatchObject({
    link: 'ok', nlink: 2, linkSymlink: 'ok', l2: 'f', fifo: 'ok', device: 'EPERM', chownOther: 'EPERM', chownSelf: 'ok',
    userXattr: 'ok', trustedXattr: 'EPERM', exchange: 'ok', mode: 'ok', modeAfter: '4711',
  });
  // Linux >= 5.8 lets anyone make the 0/0 whiteout device; the probe must agree with what mknod did.
  expect(out.whiteoutDevice === 'ok').toBe((out.capabilities as { whiteoutDevice: boolean }).whiteoutDevice);
  expect(out.renameWhiteout === 'ok').toBe((out.capabilities as { renameWhiteout: boolean }).renameWhiteout);
  expect(lstatSync(join(base, 'upper', 'f')).uid).toBe(user.uid);
  expect(lstatSync(join(base, 'work')).isDirectory()).toBe(true);
  expect(lstatSync(join(base, 'upper', 'l2')).isSymbolicLink()).toBe(true); // the link is of the symlink, not its target
});
