/**
 * Manifest format and order over a SquashFS image: escaping, raw-byte order
 * (which a naive depth-first walk gets wrong: "a" < "a-b" < "a/x"), sub-path
 * manifests, symlink targets, devices, xattrs; path resolution with symlinks.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { escapeManifestField, manifestLines } from '../../src/inspect/manifest.js';
import { normalizePath, resolvePath } from '../../src/inspect/path.js';
import { modeString } from '../../src/inspect/ls.js';
import type { SquashfsFs } from '../../src/squashfs/index.js';
import { mksquashfs, openFile, removeDir, setXattr, tempDir } from '../squashfs/unit-fixtures.js';

let work: string;
let fs: SquashfsFs;

beforeAll(async () => {
  work = tempDir('manifest');
  const src = join(work, 'src');
  mkdirSync(join(src, 'a/x'), { recursive: true });
  mkdirSync(join(src, 'a.b'));
  writeFileSync(join(src, 'a-b'), 'dash');
  writeFileSync(join(src, 'a/x/f'), 'f');
  writeFileSync(join(src, 'a.b/y'), 'y');
  writeFileSync(join(src, 'tab\there'), 'tab');
  writeFileSync(join(src, 'back\\slash'), '');
  writeFileSync(join(src, 'new\nline'), '');
  symlinkSync('target\twith\ttabs', join(src, 'odd-link'));
  symlinkSync('/a/x', join(src, 'abs-dir-link'));
  symlinkSync('../a.b/y', join(src, 'a/rel-link'));
  symlinkSync('loop2', join(src, 'loop1'));
  symlinkSync('loop1', join(src, 'loop2'));
  setXattr(join(src, 'a-b'), 'user.zz', Buffer.from('last'));
  setXattr(join(src, 'a-b'), 'user.aa', Buffer.from([0, 1, 2, 255]));
  setXattr(join(src, 'a-b'), 'user.empty', Buffer.alloc(0));
  // Names are bytes: written raw (UTF-8 or not), escaped like paths, sorted by bytes.
  setXattr(join(src, 'a.b/y'), Buffer.from('user.café'), Buffer.from('1'));
  setXattr(join(src, 'a.b/y'), Buffer.from('user.\xff\xfe', 'latin1'), Buffer.from('2'));
  setXattr(join(src, 'a.b/y'), Buffer.from('user.t\tn\nb\\', 'latin1'), Buffer.from('3'));
  setXattr(join(src, 'a.b/y'), Buffer.from('user.Z', 'latin1'), Buffer.from('4'));
  const image = mksquashfs(src, join(work, 'm.sqfs'), ['-all-time', '1700000000', '-all-root']);
  fs = await openFile(image);
});
afterAll(async () => {
  await fs.close();
  removeDir(work);
});

async function lines(path = '/'): Promise<string[]> {
  const out: string[] = [];
  for await (const l of manifestLines(fs, path)) out.push(l.toString('latin1'));
  return out;
}

describe('manifest', () => {
  it('orders by raw path bytes, escapes names and targets, and formats every field', async () => {
    const got = await lines();
    expect(got.map((l) => l.split('\t')[0])).toEqual([
      '/',
      '/a',
      '/a-b',
      '/a.b',
      '/a.b/y',
      '/a/rel-link',
      '/a/x',
      '/a/x/f',
      '/abs-dir-link',
      '/back\\\\slash',
      '/loop1',
      '/loop2',
      '/new\\nline',
      '/odd-link',
      '/tab\\there',
    ]);
    const byPath = new Map(got.map((l) => [l.split('\t')[0], l]));
    expect(byPath.get('/')).toBe('/\td\t0755\t0\t0\t-\t1700000000\t-\t-');
    expect(byPath.get('/a-b')).toBe(
      `/a-b\tf\t0644\t0\t0\t4\t1700000000\t${sha256Of('dash')}\tuser.aa=AAEC/w==,user.empty=,user.zz=bGFzdA==`,
    );
    // 'Z' (5a) < 'c' (63) < 't' (74) < ff: byte order, not the order of any decoding.
    expect(byPath.get('/a.b/y')).toBe(
      `/a.b/y\tf\t0644\t0\t0\t1\t1700000000\t${sha256Of('y')}\tuser.Z=NA==,user.caf\xc3\xa9=MQ==,user.t\\tn\\nb\\\\=Mw==,user.\xff\xfe=Mg==`,
    );
    expect(byPath.get('/odd-link')).toBe('/odd-link\tl\t0777\t0\t0\t16\t1700000000\ttarget\\twith\\ttabs\t-');
  });

  it('starts a sub-path manifest at that path and includes it', async () => {
    expect((await lines('/a/')).map((l) => l.split('\t')[0])).toEqual(['/a', '/a/rel-link', '/a/x', '/a/x/f']);
    expect((await lines('a/x/f')).map((l) => l.split('\t')[0])).toEqual(['/a/x/f']);
    await expect(lines('/nope')).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('escapes only backslash, tab and newline', () => {
    expect(escapeManifestField(Buffer.from('a\\b\tc\nd\re')).toString()).toBe('a\\\\b\\tc\\nd\re');
    expect(escapeManifestField(Buffer.from([0xff, 0x5c])).equals(Buffer.from([0xff, 0x5c, 0x5c]))).toBe(true);
  });
});

function sha256Of(s: string): string {
  return execFileSync('sha256sum', { input: s }).toString().slice(0, 64);
}

describe('path resolution inside the image', () => {
  it('follows symlinks in the middle, keeps absolute ones inside the image, and stops loops', async () => {
    const f = await resolvePath(fs, '/a/x/f');
    expect(await resolvePath(fs, '/abs-dir-link/f')).toBe(f);
    expect(await resolvePath(fs, '/a/../a/./x//f')).toBe(f);
    expect(await resolvePath(fs, '/../../a/x/f')).toBe(f);
    expect(await resolvePath(fs, '/a/rel-link', { followLast: true })).toBe(await resolvePath(fs, '/a.b/y'));
    expect(await resolvePath(fs, '/a/rel-link')).not.toBe(await resolvePath(fs, '/a.b/y'));
    await expect(resolvePath(fs, '/loop1', { followLast: true })).rejects.toMatchObject({ code: 'ELOOP' });
    await expect(resolvePath(fs, '/a-b/x')).rejects.toMatchObject({ code: 'ENOTDIR' });
    await expect(resolvePath(fs, '/a/none')).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('normalizes paths and renders modes like ls', () => {
    expect(normalizePath('a//b/./c/').toString()).toBe('/a/b/c');
    expect(normalizePath('').toString()).toBe('/');
    expect(modeString(0o104755)).toBe('-rwsr-xr-x');
    expect(modeString(0o041777)).toBe('drwxrwxrwt');
    expect(modeString(0o022644)).toBe('crw-r-Sr--');
    expect(modeString(0o120777)).toBe('lrwxrwxrwx');
  });
});
