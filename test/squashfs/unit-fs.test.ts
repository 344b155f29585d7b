/**
 * The SquashFS engine against mksquashfs images of a tree holding every file
 * type, under each option set that changes the on-disk layout. Every entry of
 * the source tree is compared with the engine's view: type, mode, owner,
 * mtime, size, content, link target, device number, xattrs, hard links.
 */
import { execFileSync } from 'node:child_process';
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { devMajor, devMinor, fileTypeOf, type InodeId } from '../../src/engine.js';
import { FsError } from '../../src/errors.js';
import { FileRegion } from '../../src/io/file-region.js';
import { openSquashfs, type SquashfsFs } from '../../src/squashfs/index.js';
import {
  FLAG_ALWAYS_FRAGMENTS,
  FLAG_NO_FRAGMENTS,
  FLAG_UNCOMPRESSED_DATA,
  FLAG_UNCOMPRESSED_INODES,
} from '../../src/squashfs/superblock.js';
import { buildTree, isRoot, mksquashfs, openFile, readAll, removeDir, tempDir } from './unit-fixtures.js';
import { itIf } from '../tools/skip.js';

let work: string;
let src: string;
let devices = false;

beforeAll(() => {
  work = tempDir('fs');
  src = join(work, 'src');
  execFileSync('mkdir', [src]);
  devices = buildTree(src).devices;
  if (!devices) console.warn('unit-fs: not root, so the tree has no device nodes (mknod needs root)');
});
afterAll(() => removeDir(work));

/**
 * Source xattrs of a path as (name bytes as hex) -> value, via getfattr (the
 * reference tool). getfattr prints name bytes raw except '\\', '=' and
 * control characters, which it writes as 3-digit octal escapes.
 */
function sourceXattrs(path: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let text: string;
  try {
    text = execFileSync('getfattr', ['-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', path.toString('latin1')], {
      encoding: 'latin1',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    const m = /^([^#=][^=]*)=0x([0-9a-f]*)$/.exec(line);
    if (!m) continue;
    const name = Buffer.from(
      m[1]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))),
      'latin1',
    );
    out.set(name.toString('hex'), Buffer.from(m[2]!, 'hex'));
  }
  return out;
}

/** Compares the subtree at `srcPath` with the image's `id`, recursively; returns entries checked. */
async function compareTree(fs: SquashfsFs, srcPath: Buffer, id: InodeId, withXattrs: boolean): Promise<number> {
  const st = lstatSync(srcPath, { bigint: false });
  const got = await fs.getattr(id);
  const where = srcPath.toString('latin1');
  expect(fileTypeOf(got.mode), where).toBe(fileTypeOf(st.mode));
  expect(got.mode & 0o7777, where).toBe(st.mode & 0o7777);
  expect([got.uid, got.gid], where).toEqual([st.uid, st.gid]);
  expect(got.mtime, where).toBe(Math.floor(st.mtimeMs / 1000));
  const type = fileTypeOf(st.mode);
  if (type !== 'd') expect(got.nlink, where).toBe(st.nlink);
  if (type === 'f') {
    expect(got.size, where).toBe(st.size);
    const parts: Buffer[] = [];
    for (let pos = 0; pos < got.size; pos += 100_000) parts.push(Buffer.from(await fs.read(id, pos, 100_000)));
    expect(Buffer.concat(parts).equals(readFileSync(srcPath)), where).toBe(true);
  }
  if (type === 'l') expect((await fs.readlink(id)).equals(readlinkSync(srcPath, { encoding: 'buffer' })), where).toBe(true);
  if (type === 'c' || type === 'b') {
    const [major, minor] = execFileSync('stat', ['-c', '%t %T', where])
      .toString()
      .trim()
      .split(' ')
      .map((h) => parseInt(h, 16));
    expect([devMajor(got.rdev), devMinor(got.rdev)], where).toEqual([major, minor]);
  }
  if (withXattrs && type !== 'l') {
    const want = sourceXattrs(srcPath);
    const names = (await fs.listxattr(id)).map((n) => n.toString('hex')).sort();
    expect(names, where).toEqual([...want.keys()].sort());
    for (const [name, value] of want)
      expect((await fs.getxattr(id, Buffer.from(name, 'hex')))?.equals(value), `${where} ${name}`).toBe(true);
    expect(await fs.getxattr(id, Buffer.from('user.absent'))).toBeNull();
  }
  let count = 1;
  if (type === 'd') {
    const names = readdirSync(srcPath, { encoding: 'buffer' }).sort(Buffer.compare);
    const entries = await fs.readdir(id);
    expect(
      entries.map((e) => e.name.toString('hex')),
      where,
    ).toEqual(names.map((n) => n.toString('hex')));
    for (const e of entries) {
      expect(await fs.lookup(id, e.name)).toBe(e.id);
      const sub = Buffer.concat([srcPath, Buffer.from('/'), e.name]);
      expect(e.type, sub.toString('latin1')).toBe(fileTypeOf(lstatSync(sub).mode));
      count += await compareTree(fs, sub, e.id, withXattrs);
    }
  }
  return count;
}

/** statNow (the synchronous path FUSE readdirplus takes) agrees with getattr on every inode below `id`; returns inodes checked. */
async function compareStatNow(fs: SquashfsFs, id: InodeId): Promise<number> {
  const st = await fs.getattr(id);
  // getattr has just decoded and cached the inode, so it is at hand.
  expect(fs.statNow(id)).toEqual(st);
  let count = 1;
  if (fileTypeOf(st.mode) === 'd') for (const e of await fs.readdir(id)) count += await compareStatNow(fs, e.id);
  return count;
}

const OPTION_SETS: { name: string; args: string[]; flags?: number; noFlags?: number; xattrs?: boolean }[] = [
  { name: 'defaults (gzip, 128 KiB blocks)', args: [] },
  {
    name: '-noI -noD -noF -noX',
    args: ['-noI', '-noD', '-noF', '-noX'],
    flags: FLAG_UNCOMPRESSED_INODES | FLAG_UNCOMPRESSED_DATA,
  },
  { name: '-no-fragments', args: ['-no-fragments'], flags: FLAG_NO_FRAGMENTS },
  { name: '-always-use-fragments', args: ['-always-use-fragments'], flags: FLAG_ALWAYS_FRAGMENTS },
  { name: '-b 4K -tailends', args: ['-b', '4K', '-tailends'] },
  { name: '-b 1M -no-duplicates -no-exports', args: ['-b', '1M', '-no-duplicates', '-no-exports'] },
  { name: '-no-xattrs -no-sparse', args: ['-no-xattrs', '-no-sparse'], xattrs: false },
];

describe('SquashFS engine over mksquashfs option sets', () => {
  for (const set of OPTION_SETS) {
    it(`matches the source tree: ${set.name}`, async () => {
      const image = mksquashfs(src, join(work, `img-${OPTION_SETS.indexOf(set)}.sqfs`), set.args);
      const fs = await openFile(image);
      try {
        if (set.flags) expect(fs.superblock.flags & set.flags).toBe(set.flags);
        const checked = await compareTree(fs, Buffer.from(src), fs.rootId, set.xattrs ?? true);
        expect(checked).toBe(devices ? 19 : 17);
        expect(await compareStatNow(fs, fs.rootId)).toBe(checked);
      } finally {
        await fs.close();
      }
    });
  }
});

describe('SquashFS engine with caches too small to hold anything', () => {
  it('still reads everything correctly (every block is decoded again on each use)', async () => {
    const image = mksquashfs(src, join(work, 'tiny-cache.sqfs'), ['-b', '4K']);
    const fs = await openSquashfs(await FileRegion.open(image), {
      metadataCacheBytes: 1,
      dataCacheBytes: 1,
      inodeCacheBytes: 1,
      listingCacheBytes: 1,
      listingAfterLookups: 1,
    });
    try {
      expect(await compareTree(fs, Buffer.from(src), fs.rootId, true)).toBe(devices ? 19 : 17);
      expect(fs.metaCache.bytes).toBeLessThanOrEqual(1);
    } finally {
      await fs.close();
    }
  });
});

describe('SquashFS engine details', () => {
  let fs: SquashfsFs;
  beforeAll(async () => {
    fs = await openFile(mksquashfs(src, join(work, 'details.sqfs'), ['-b', '64K']));
  });
  afterAll(() => fs.close());

  it('gives hard links one inode number and nlink 2', async () => {
    const a = await fs.getattr((await fs.lookup(fs.rootId, Buffer.from('small.txt')))!);
    const dir = (await fs.lookup(fs.rootId, Buffer.from('dir')))!;
    const b = await fs.getattr((await fs.lookup(dir, Buffer.from('hardlink')))!);
    expect(a.ino).toBe(b.ino);
    expect([a.nlink, b.nlink]).toEqual([2, 2]);
  });

  it('keeps xattr names as stored bytes: UTF-8, not UTF-8, escapable characters', async () => {
    const file = (await fs.lookup(fs.rootId, Buffer.from('small.txt')))!;
    const hex = (await fs.listxattr(file)).map((n) => n.toString('hex')).sort();
    const want = [
      Buffer.from('user.greeting'),
      Buffer.from('user.caf\xc3\xa9', 'latin1'),
      Buffer.from('user.\xff\xfe', 'latin1'),
    ];
    expect(hex).toEqual(want.map((n) => n.toString('hex')).sort());
    expect((await fs.getxattr(file, Buffer.from('user.café')))?.toString()).toBe('utf-8 name');
    expect((await fs.getxattr(file, Buffer.from('user.\xff\xfe', 'latin1')))?.toString()).toBe('not utf-8');
    // The same characters in another encoding (latin1 é, U+FFFD for the bad bytes) name nothing.
    expect(await fs.getxattr(file, Buffer.from('user.caf\xe9', 'latin1'))).toBeNull();
    expect(await fs.getxattr(file, Buffer.from('user.\ufffd\ufffd'))).toBeNull();
    const dir = (await fs.lookup(fs.rootId, Buffer.from('dir')))!;
    const odd = Buffer.from('user.tab\there back\\slash new\nline=,', 'latin1');
    expect((await fs.listxattr(dir)).some((n) => n.equals(odd))).toBe(true);
    expect((await fs.getxattr(dir, odd))?.toString()).toBe('escaped');
    // listxattr hands out copies: modifying one leaves the engine's names intact.
    const [first] = await fs.listxattr(file);
    first!.fill(0);
    expect((await fs.listxattr(file)).map((n) => n.toString('hex')).sort()).toEqual(hex);
  });

  it('reads at any offset and length, short only at end of file', async () => {
    const id = (await fs.lookup(fs.rootId, Buffer.from('random')))!;
    const whole = await readAll(fs, '/random');
    for (const [pos, len] of [
      [0, 1],
      [65535, 2],
      [65536, 65536],
      [100, 150_000],
      [199_990, 100],
      [200_000, 5],
      [300_000, 5],
    ] as const) {
      const got = await fs.read(id, pos, len);
      expect(got.equals(whole.subarray(pos, pos + len)), `${pos}+${len}`).toBe(true);
    }
  });

  it('reads sparse regions as zeros and reports allocated blocks without the holes', async () => {
    const id = (await fs.lookup(fs.rootId, Buffer.from('sparse')))!;
    const st = await fs.getattr(id);
    expect(st.size).toBe(3 * 1024 * 1024);
    expect(st.blocks).toBeLessThan(st.size / 512);
    const misses = fs.dataCache.misses;
    const hole = await fs.read(id, 0, 1_000_000);
    expect(hole.length).toBe(1_000_000);
    expect(hole.every((b) => b === 0)).toBe(true);
    expect(fs.dataCache.misses).toBe(misses); // holes are never read or decompressed
    const all = await readAll(fs, '/sparse');
    expect(all.subarray(1_100_000, 1_100_005).toString()).toBe('data!');
    expect(all.subarray(0, 1_100_000).every((b) => b === 0)).toBe(true);
    expect(all.subarray(1_100_005).every((b) => b === 0)).toBe(true);
  });

  it('serves concurrent reads of one block from one decompression', async () => {
    const id = (await fs.lookup(fs.rootId, Buffer.from('text')))!;
    const misses = fs.dataCache.misses;
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => fs.read(id, 200_000 + i, 10)));
    expect(new Set(results.map((r) => r.toString())).size).toBeGreaterThan(1);
    expect(fs.dataCache.misses - misses).toBe(1);
  });

  it('reads ahead on sequential reads', async () => {
    const id = (await fs.lookup(fs.rootId, Buffer.from('text')))!;
    await fs.read(id, 0, 65536);
    await fs.read(id, 65536, 65536); // sequential: the next block is requested in the background
    const cached = fs.dataCache.size;
    // Wait for that block to land in the cache (polled: a loaded machine may take longer than any fixed delay).
    for (let i = 0; i < 500 && fs.dataCache.size === cached; i++) await new Promise((r) => setTimeout(r, 10));
    const misses = fs.dataCache.misses;
    await fs.read(id, 131072, 65536);
    expect(fs.dataCache.misses).toBe(misses);
  });

  it('answers errors the POSIX way', async () => {
    const dir = (await fs.lookup(fs.rootId, Buffer.from('dir')))!;
    const file = (await fs.lookup(fs.rootId, Buffer.from('small.txt')))!;
    const link = (await fs.lookup(fs.rootId, Buffer.from('link')))!;
    await expect(fs.read(dir, 0, 10)).rejects.toMatchObject({ code: 'EISDIR' });
    await expect(fs.readlink(file)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(fs.lookup(file, Buffer.from('x'))).rejects.toBeInstanceOf(FsError);
    await expect(fs.readdir(file)).rejects.toMatchObject({ code: 'ENOTDIR' });
    expect(await fs.lookup(dir, Buffer.from('absent'))).toBeNull();
    expect((await fs.readlink(link)).toString()).toBe('dir/nested.txt');
    expect((await fs.read(file, 1000, 10)).length).toBe(0);
  });

  it('resolves inode numbers through the export table', async () => {
    const id = (await fs.lookup(fs.rootId, Buffer.from('text')))!;
    const st = await fs.getattr(id);
    expect(await fs.idOfInodeNumber(st.ino)).toBe(id);
  });

  it('reports statfs from the superblock', async () => {
    const s = await fs.statfs();
    expect(s.bsize).toBe(65536);
    expect(s.files).toBe(fs.superblock.inodes);
    expect(s.bfree).toBe(0);
  });

  it('has uid/gid from the id table', async () => {
    const img = mksquashfs(src, join(work, 'owners.sqfs'), ['-force-uid', '1234', '-force-gid', '5678']);
    const f2 = await openFile(img);
    try {
      const st = await f2.getattr((await f2.lookup(f2.rootId, Buffer.from('text')))!);
      expect([st.uid, st.gid]).toEqual([1234, 5678]);
    } finally {
      await f2.close();
    }
  });

  itIf(isRoot, 'mknod needs root')('decodes device numbers (needs root for mknod)', async () => {
    const st = await fs.getattr((await fs.lookup(fs.rootId, Buffer.from('blockdev')))!);
    expect([devMajor(st.rdev), devMinor(st.rdev)]).toEqual([259, 300000]);
  });
  if (!isRoot) console.warn('unit-fs: device-number test skipped: mknod needs root');
});
