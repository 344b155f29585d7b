/**
 * Overlay.statNow (the FUSE fast path for lookup, getattr and the replies
 * of create and setattr): wherever it answers, it answers what getattr
 * does; it has nothing for a node whose getattr needs an await (st_ino not
 * yet known, a merged directory's link count, a hard link that may be in
 * the index).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { InodeId } from '../../src/engine.js';
import type { Overlay } from '../../src/layers/overlay/index.js';
import { at, b, makeExt3Image, makeSquashfs, openStack, removeDir, tempDir, writeFile } from './overlay-helpers.js';

let dir: string;
let ov: Overlay;

beforeAll(async () => {
  dir = tempDir('statnow');
  const lower = makeSquashfs(dir, 'lower', {
    a: 'lower file\n',
    'd/x': 'x\n',
    'only/y': 'y\n',
    h1: 'linked\n',
    h2: { hardlink: 'h1' },
  });
  ov = await openStack([lower], await makeExt3Image(dir, 'upper'));
});

afterAll(async () => {
  await ov.close();
  removeDir(dir);
});

/** After a getattr, statNow is undefined or equal to it; returns whether it answered. */
async function agrees(id: InodeId): Promise<boolean> {
  const st = await ov.getattr(id);
  const now = ov.statNow(id);
  if (now === undefined) return false;
  expect(now).toEqual(st);
  return true;
}

describe('Overlay.statNow', () => {
  it('answers as getattr for upper and lower nodes once their st_ino is known', async () => {
    const n = await ov.mkdir(ov.rootId, b('n'), { mode: 0o40755, uid: 0, gid: 0 });
    const f = await ov.mknod(n, b('f'), { mode: 0o100644, uid: 3, gid: 4 });
    // Made, never stat'ed: st_ino comes with the first getattr.
    expect(ov.statNow(f)).toBeUndefined();
    expect(await agrees(f)).toBe(true);
    await ov.setattr(f, { mode: 0o600, mtime: { sec: 99, nsec: 1 } });
    expect(await agrees(f)).toBe(true);
    expect(ov.statNow(f)).toMatchObject({ mode: 0o100600, mtime: 99, mtimeNsec: 1, uid: 3, gid: 4 });
    await ov.write(f, 0, b('data'));
    expect(ov.statNow(f)!.size).toBe(4);
    expect(await agrees(n)).toBe(true);
    const a = await at(ov, '/a');
    await ov.getattr(a);
    expect(await agrees(a)).toBe(true);
    // A lower-only directory (one layer): its own links.
    const only = await at(ov, '/only');
    await ov.getattr(only);
    expect(await agrees(only)).toBe(true);
  });

  it('has nothing for merged directories and possibly indexed hard links, and never disagrees', async () => {
    await writeFile(ov, '/d/new', 'new\n');
    const d = await at(ov, '/d');
    await ov.getattr(d);
    // Upper and lower both: nlink counted from the merged listing.
    expect(ov.statNow(d)).toBeUndefined();
    expect(ov.statNow(ov.rootId)).toBeUndefined();
    const h1 = await at(ov, '/h1');
    await ov.write(h1, 0, b('LINKED'));
    await ov.getattr(h1);
    expect(ov.statNow(h1)).toBeUndefined();
    for (const p of ['/d/new', '/d/x', '/h2', '/a']) await agrees(await at(ov, p));
    expect(ov.statNow(123456789)).toBeUndefined();
  });
});
