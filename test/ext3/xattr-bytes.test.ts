/**
 * Xattr names are bytes in the ext3 engine, decoded nowhere (issue 7).
 *
 * Before, names were strings decoded latin1 by ext3 (and UTF-8 by SquashFS):
 * on an image made by `mkfs.ext3 -d` of a tree with `setfattr -n user.café`,
 * `sifuse manifest` printed the name double-encoded, `getxattr('user.café')`
 * found nothing and `setxattr('user.naïve')` stored 0xEF where the kernel
 * stores c3 af. Each is checked here on bytes that are UTF-8 beyond ASCII,
 * not UTF-8 at all (ff fe, 80), and the characters the manifest escapes, at
 * two geometries (xattrs in the inode body, and in a block).
 *
 * Oracles: debugfs `ea_list` (prints the stored name bytes), tree_manifest.py
 * of the mkfs source, e2fsck -fn, and as root the kernel's loop mount read by
 * test/tools/xattr_dump.py (os.listxattr) and `getfattr -d -m- -e hex`.
 *
 * Then the copy the overlay makes on copy-up: every xattr of a mksquashfs
 * image of the fixture tree (make-tree.py, /xattrs/odd-names and all) goes
 * through the engines (squashfs listxattr/getxattr -> ext3 setxattr) into a
 * fresh ext3 image, which must show exactly the source's xattrs; and the
 * Overlay's own copy-up from that image into an ext3 upper does the same.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { S_IFDIR, S_IFMT, type InodeId, type ReadableFs, type WritableFs } from '../../src/engine.js';
import { createOverlayImage } from '../../src/commands/overlay.js';
import { resolvePath } from '../../src/inspect/path.js';
import { FileRegion } from '../../src/io/file-region.js';
import { openExt3Layer } from '../../src/layers/ext3-layer.js';
import { isUpperLayer } from '../../src/layers/layer.js';
import { Overlay } from '../../src/layers/overlay/index.js';
import { openSquashfsLayer } from '../../src/layers/squashfs-layer.js';
import { openSquashfs } from '../../src/squashfs/index.js';
import { openImageFile } from '../tools/ext3-engine.js';
import {
  isRoot,
  makeTempDir,
  makeTree,
  manifestLines,
  mksquashfs,
  removeTempDir,
  runSifuse,
  skipNote,
  toolsDir,
  treeManifest,
  withLoopMount,
} from '../tools/helpers.js';
import { fsck, mkfsExt3 } from './image-tools.js';
import { itIf } from '../tools/skip.js';

if (!isRoot) skipNote('xattr-bytes kernel checks (loop mounts of the ext3 images)', 'loop mounts need root');

const L = (s: string) => Buffer.from(s, 'latin1');
const CAFE = Buffer.from('user.café'); // 75 73 65 72 2e 63 61 66 c3 a9
const NOT_UTF8 = L('user.\xff\xfe');
const ESCAPED = L('user.tab\there back\\slash new\nline');
const TRUSTED = L('trusted.\xe9t\xe9');
/** The source file's xattrs as setfattr set them: name hex -> value. */
const SOURCE: [Buffer, string][] = [
  [CAFE, 'utf-8 name'],
  [NOT_UTF8, 'not utf-8'],
  [ESCAPED, 'escaped'],
  ...(isRoot ? ([[TRUSTED, 'latin-1, trusted']] as [Buffer, string][]) : []),
];
const GEOMETRIES = [
  { blockSize: 4096, inodeSize: 256, where: 'in the inode' },
  { blockSize: 1024, inodeSize: 128, where: 'in an xattr block' },
] as const;

const hexSorted = (names: Buffer[]) => names.map((n) => n.toString('hex')).sort();

/** setfattr with any name bytes (it decodes 3-digit octal escapes). */
async function setfattr(path: string, name: Buffer, value: string): Promise<void> {
  const octal = [...name].map((b) => `\\${b.toString(8).padStart(3, '0')}`).join('');
  await execa('setfattr', ['-h', '-n', octal, '-v', `0x${Buffer.from(value).toString('hex')}`, path]);
}

/**
 * Stored xattr names (hex) of `path` in an image, read by debugfs ea_list: it
 * prints a name as hex bytes when some byte is not printable, else as text
 * with C escapes for tab, newline, backslash and double quote.
 */
async function debugfsNames(image: string, path: string): Promise<string[]> {
  const r = await execa('debugfs', ['-R', `ea_list ${path}`, image], { encoding: 'buffer', reject: false });
  const out: string[] = [];
  for (const line of Buffer.from(r.stdout).toString('latin1').split('\n')) {
    const m = /^ {2}(.+?) +\(\d+\)( = |$)/.exec(line);
    if (!m) continue;
    const shown = m[1]!;
    if (/^[0-9a-f]{2}( [0-9a-f]{2})*$/.test(shown)) out.push(shown.replace(/ /g, ''));
    else out.push(L(shown.replace(/\\([tn\\"])/g, (_, c: string) => ({ t: '\t', n: '\n' })[c] ?? c)).toString('hex'));
  }
  return out.sort();
}

/** xattr_dump.py of a directory: {path hex: {name hex: value hex}}. */
async function xattrDump(root: string, exclude: string[] = []): Promise<Record<string, Record<string, string>>> {
  const args = [join(toolsDir, 'xattr_dump.py'), root, ...exclude.flatMap((p) => ['--exclude', p])];
  return JSON.parse((await execa('python3', args)).stdout) as Record<string, Record<string, string>>;
}

/** `getfattr -R -P -d -m- -e hex` of a tree as {file: its lines}, so traversal order does not matter. */
async function getfattrDump(root: string): Promise<Map<string, string>> {
  const r = await execa('getfattr', ['-R', '-P', '-d', '-m', '-', '-e', 'hex', '.'], {
    cwd: root,
    encoding: 'buffer',
    reject: false,
  });
  const blocks = new Map<string, string>();
  for (const block of Buffer.from(r.stdout).toString('latin1').split('\n\n')) {
    const lines = block.split('\n').filter((l) => l.length > 0);
    const head = lines.shift();
    if (!head?.startsWith('# file: ')) continue;
    if (head === '# file: ./lost+found') continue;
    blocks.set(head.slice(8), lines.join('\n'));
  }
  return blocks;
}

async function withExt3<T>(image: string, writable: boolean, fn: (fs: WritableFs) => Promise<T>): Promise<T> {
  const fs = await openImageFile(image, writable);
  try {
    return await fn(fs);
  } finally {
    await fs.close();
  }
}

async function child(fs: ReadableFs, dir: InodeId, name: string): Promise<InodeId> {
  const id = await fs.lookup(dir, Buffer.from(name));
  if (id === null) throw new Error(`${fs.name}: no ${name}`);
  return id;
}

let dir: string;
let src: string;

beforeAll(async () => {
  dir = makeTempDir('e3-xattr-bytes');
  src = join(dir, 'src');
  mkdirSync(join(src, 'd'), { recursive: true });
  writeFileSync(join(src, 'f'), 'xattrs with odd names\n');
  for (const [name, value] of SOURCE) await setfattr(join(src, 'f'), name, value);
  await setfattr(join(src, 'd'), L('user.\x80'), 'on a directory');
}, 60_000);

afterAll(() => removeTempDir(dir));

describe.each(GEOMETRIES)('mkfs.ext3 -d, $blockSize-byte blocks, $inodeSize-byte inodes (xattrs $where)', (g) => {
  let image: string;
  beforeAll(async () => {
    image = join(dir, `mkfs-${g.blockSize}-${g.inodeSize}.img`);
    await mkfsExt3(image, { blockSize: g.blockSize, inodeSize: g.inodeSize, sizeKiB: 8192, source: src });
    // The oracle sees the bytes setfattr wrote.
    expect(await debugfsNames(image, '/f')).toEqual(hexSorted(SOURCE.map((s) => s[0])));
  }, 60_000);

  it('listxattr gives the stored bytes; getxattr finds each name by its bytes, and only by them', async () => {
    await withExt3(image, false, async (fs) => {
      const f = await child(fs, fs.rootId, 'f');
      expect(hexSorted(await fs.listxattr(f))).toEqual(hexSorted(SOURCE.map((s) => s[0])));
      for (const [name, value] of SOURCE) expect((await fs.getxattr(f, name))?.toString(), name.toString('hex')).toBe(value);
      // The same characters in another encoding are another name.
      expect(await fs.getxattr(f, L('user.caf\xe9'))).toBeNull();
      expect(await fs.getxattr(f, Buffer.from('user.\ufffd\ufffd'))).toBeNull();
      expect(await fs.getxattr(f, Buffer.from('user.caf\u00c3\u00a9'))).toBeNull(); // c3 83 c2 a9: double-encoded
      const d = await child(fs, fs.rootId, 'd');
      expect(hexSorted(await fs.listxattr(d))).toEqual([L('user.\x80').toString('hex')]);
    });
  });

  it('sifuse manifest prints the names as their bytes, escaped like paths, as tree_manifest.py does', async () => {
    const r = await runSifuse(['manifest', image, '/f']);
    expect(r.exitCode, r.stderr.toString()).toBe(0);
    const got = manifestLines(r.stdout)[0]!.toString('latin1').split('\t')[8];
    const want = manifestLines(await treeManifest(src, { path: '/f' }))[0]!
      .toString('latin1')
      .split('\t')[8];
    expect(got).toBe(want);
    expect(got).toContain('user.caf\xc3\xa9=');
    expect(got).toContain('user.\xff\xfe=');
    expect(got).toContain('user.tab\\there back\\\\slash new\\nline=');
  });

  it('setxattr and removexattr store the name bytes as given (debugfs, e2fsck and the kernel agree)', async () => {
    const copy = join(dir, `write-${g.blockSize}-${g.inodeSize}.img`);
    await execa('cp', ['--sparse=always', image, copy]);
    const NAIVE = Buffer.from('user.naïve'); // ... 61 c3 af 76 65
    const HIGH = L('user.\x80\xfe');
    await withExt3(copy, true, async (fs) => {
      const f = await child(fs, fs.rootId, 'f');
      await fs.setxattr(f, NAIVE, Buffer.from('naive'));
      await fs.setxattr(f, HIGH, Buffer.from('high'), 'create');
      await expect(fs.setxattr(f, NOT_UTF8, Buffer.from('again'), 'create')).rejects.toMatchObject({ code: 'EEXIST' });
      await expect(fs.setxattr(f, L('user.caf\xe9'), Buffer.from('x'), 'replace')).rejects.toMatchObject({ code: 'ENODATA' });
      await fs.setxattr(f, CAFE, Buffer.from('replaced'), 'replace');
      await expect(fs.removexattr(f, L('user.\xff'))).rejects.toMatchObject({ code: 'ENODATA' });
      await fs.removexattr(f, NOT_UTF8);
      expect(await fs.getxattr(f, NOT_UTF8)).toBeNull();
    });
    const c = await fsck(copy);
    expect(c.clean, c.output).toBe(true);
    const want = [...SOURCE.map((s) => s[0]).filter((n) => !n.equals(NOT_UTF8)), NAIVE, HIGH];
    expect(await debugfsNames(copy, '/f')).toEqual(hexSorted(want));
    expect(await debugfsNames(copy, '/f')).toContain('757365722e6e61c3af7665');
    await withExt3(copy, false, async (fs) => {
      const f = await child(fs, fs.rootId, 'f');
      expect(hexSorted(await fs.listxattr(f))).toEqual(hexSorted(want));
      expect((await fs.getxattr(f, CAFE))?.toString()).toBe('replaced');
      expect((await fs.getxattr(f, HIGH))?.toString()).toBe('high');
    });
    if (isRoot) {
      const seen = await withLoopMount(copy, 'ext3', dir, (mnt) => xattrDump(mnt, ['/lost+found']));
      const f = seen[Buffer.from('/f').toString('hex')] ?? {};
      expect(Object.keys(f).sort()).toEqual(hexSorted(want));
      expect(f[NAIVE.toString('hex')]).toBe(Buffer.from('naive').toString('hex'));
    }
  });
});

/** Copies the tree under a squashfs directory into an ext3 directory: every entry and every xattr, through the engines. */
async function copyTree(
  from: ReadableFs,
  fromDir: InodeId,
  to: WritableFs,
  toDir: InodeId,
  links: Map<number, InodeId>,
): Promise<number> {
  let xattrs = 0;
  for (const e of await from.readdir(fromDir)) {
    const st = await from.getattr(e.id);
    const owner = { uid: st.uid, gid: st.gid };
    let id: InodeId;
    const linked = e.type !== 'd' && st.nlink > 1 ? links.get(st.ino) : undefined;
    if (linked !== undefined) {
      await to.link(linked, toDir, e.name);
      continue;
    }
    if (e.type === 'd') id = await to.mkdir(toDir, e.name, { mode: S_IFDIR | (st.mode & 0o7777), ...owner });
    else if (e.type === 'l') id = await to.symlink(toDir, e.name, await from.readlink(e.id), owner);
    else id = await to.mknod(toDir, e.name, { mode: st.mode, ...owner, rdev: st.rdev });
    if (e.type !== 'd' && st.nlink > 1) links.set(st.ino, id);
    for (const name of await from.listxattr(e.id)) {
      const value = await from.getxattr(e.id, name);
      if (value === null) throw new Error(`${from.name}: listxattr names ${name.toString('hex')} but getxattr finds nothing`);
      await to.setxattr(id, name, value, 'create');
      xattrs++;
    }
    if (e.type === 'd') xattrs += await copyTree(from, e.id, to, id, links);
  }
  return xattrs;
}

describe('every xattr of a mksquashfs image copied into ext3 through the engines', () => {
  let tree: string;
  let sqfs: string;
  let image: string;
  let copied = 0;

  beforeAll(async () => {
    tree = join(dir, 'tree');
    await makeTree(tree, { many: 50, depth: 5, small: true });
    sqfs = join(dir, 'tree.sqfs');
    await mksquashfs(tree, sqfs);
    image = join(dir, 'copy.img');
    await mkfsExt3(image, { blockSize: 4096, inodeSize: 256, sizeKiB: 32 * 1024 });
    const sq = await openSquashfs(await FileRegion.open(sqfs));
    try {
      await withExt3(image, true, async (fs) => {
        // The root's own xattrs, then everything below it.
        for (const name of await sq.listxattr(sq.rootId))
          await fs.setxattr(fs.rootId, name, (await sq.getxattr(sq.rootId, name))!);
        copied = (await sq.listxattr(sq.rootId)).length + (await copyTree(sq, sq.rootId, fs, fs.rootId, new Map()));
      });
    } finally {
      await sq.close();
    }
  }, 120_000);

  it('leaves an image e2fsck finds clean, whose xattrs the engine reads back as the source has them', async () => {
    const c = await fsck(image);
    expect(c.clean, c.output).toBe(true);
    const want = await xattrDump(tree);
    // The fixture really holds the odd names, and all of them were copied.
    const odd = want[Buffer.from('/xattrs/odd-names').toString('hex')] ?? {};
    expect(Object.keys(odd)).toContain(NOT_UTF8.toString('hex'));
    expect(Object.keys(odd)).toContain(Buffer.from('user.café').toString('hex'));
    expect(copied).toBeGreaterThan(60);
    const got: Record<string, Record<string, string>> = {};
    await withExt3(image, false, async (fs) => {
      const walk = async (id: InodeId, path: Buffer): Promise<void> => {
        const names = await fs.listxattr(id);
        if (names.length > 0) {
          const x: Record<string, string> = {};
          for (const n of names) x[n.toString('hex')] = (await fs.getxattr(id, n))!.toString('hex');
          got[path.toString('hex')] = x;
        }
        if (((await fs.getattr(id)).mode & S_IFMT) !== S_IFDIR) return;
        for (const e of await fs.readdir(id)) {
          if (path.length === 1 && e.name.equals(Buffer.from('lost+found'))) continue;
          await walk(e.id, Buffer.concat([path.length === 1 ? Buffer.alloc(0) : path, Buffer.from('/'), e.name]));
        }
      };
      await walk(fs.rootId, Buffer.from('/'));
    });
    expect(got).toEqual(want);
  });

  itIf(isRoot, 'loop mounts need root')(
    'the kernel mount of the ext3 image shows the source xattrs: os.listxattr and getfattr -d -m- -e hex',
    async () => {
      const [dump, getfattr] = await withLoopMount(
        image,
        'ext3',
        dir,
        async (mnt) => [await xattrDump(mnt, ['/lost+found']), await getfattrDump(mnt)] as const,
      );
      expect(dump).toEqual(await xattrDump(tree));
      const source = await getfattrDump(tree);
      expect(source.size).toBeGreaterThan(20);
      expect(Object.fromEntries(getfattr)).toEqual(Object.fromEntries(source));
    },
  );
  it('copy-up through the Overlay (this squashfs lower, an ext3 upper) keeps every name byte for byte', async () => {
    const upperImage = join(dir, 'overlay.img');
    await createOverlayImage(upperImage, {
      sizeMiB: 64,
      sparse: true,
      createDirs: [],
      fakeroot: false,
      owner: { uid: 0, gid: 0 },
    });
    const upper = await openExt3Layer(upperImage);
    if (!isUpperLayer(upper)) throw new Error(`${upperImage}: not opened writable`);
    const ov = await Overlay.open({ lowers: [await openSquashfsLayer(sqfs)], upper });
    const paths = ['/xattrs/odd-names', '/xattrs/odd-names-dir'];
    const marker = Buffer.from('user.copied-up');
    try {
      // A new xattr is a metadata change: the object is copied up with all of its xattrs first.
      for (const p of paths) await ov.setxattr(await resolvePath(ov, p), marker, Buffer.from('y'));
    } finally {
      await ov.close();
    }
    const want = await xattrDump(tree);
    const hex = (p: string) => Buffer.from(p).toString('hex');
    const expected = (p: string) => ({ ...want[hex(p)], [marker.toString('hex')]: Buffer.from('y').toString('hex') });
    // The overlay's own bookkeeping (trusted.overlay.*, trusted.sifuse.*) is not the source's.
    const internal = [Buffer.from('trusted.overlay.'), Buffer.from('trusted.sifuse.')];
    const own = (x: Record<string, string>) =>
      Object.fromEntries(
        Object.entries(x).filter(([n]) => !internal.some((p) => Buffer.from(n, 'hex').subarray(0, p.length).equals(p))),
      );
    await withExt3(upperImage, false, async (fs) => {
      for (const p of paths) {
        const id = await resolvePath(fs, `/upper${p}`);
        const x: Record<string, string> = {};
        for (const n of await fs.listxattr(id)) x[n.toString('hex')] = (await fs.getxattr(id, n))!.toString('hex');
        expect(own(x), p).toEqual(expected(p));
      }
    });
    const c = await fsck(upperImage);
    expect(c.clean, c.output).toBe(true);
    if (isRoot) {
      const seen = await withLoopMount(upperImage, 'ext3', dir, (mnt) => xattrDump(join(mnt, 'upper')));
      for (const p of paths) expect(own(seen[hex(p)] ?? {}), `kernel: ${p}`).toEqual(expected(p));
    }
  });
});
