/**
 * The Overlay's rules, one by one, over SquashFS lowers (mksquashfs at test
 * time) and an ext3 upper (`sifuse overlay create`'s code path); every image
 * the Overlay wrote must pass e2fsck -fn.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S_IFCHR, S_IFDIR, S_IFMT, S_IFREG } from '../../src/engine.js';
import { FsError } from '../../src/errors.js';
import { openExt3Layer } from '../../src/layers/ext3-layer.js';
import { Overlay } from '../../src/layers/overlay/index.js';
import { openSquashfsLayer } from '../../src/layers/squashfs-layer.js';
import {
  at,
  b,
  e2fsck,
  exists,
  makeExt3Image,
  makeSquashfs,
  manifest,
  names,
  openStack,
  openUpper,
  parentOf,
  readAll,
  removeDir,
  tempDir,
  writeFile,
} from './overlay-helpers.js';

let dir: string;
let bottom: string;
let top: string;

// Three copy-up chunks (1 MiB each) with a tail off the 4 KiB grid, and zero blocks across the first chunk boundary.
const big = Buffer.alloc(2.5 * 1024 * 1024 + 123);
for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >> 10)) & 0xff;
big.fill(0, (1 << 20) - 8192, (1 << 20) + 8192);
// Copied up after `big` through the same chunk buffers: shorter, so stale bytes of `big` would show.
const big2 = Buffer.alloc(1.5 * 1024 * 1024 + 77);
for (let i = 0; i < big2.length; i++) big2[i] = (i * 13 + 5 + (i >> 12)) & 0xff;

beforeAll(() => {
  dir = tempDir('core');
  bottom = makeSquashfs(dir, 'bottom', {
    'etc/passwd': 'root:x:0:0\n',
    'etc/hosts': 'bottom hosts\n',
    'etc/only-bottom': 'b\n',
    'shadowed/inner': 'hidden by a file above\n',
    'opq/old': 'hidden by opaque\n',
    'wh/gone': 'whited out above\n',
    'wh/gone2': 'whited out above by .wh.\n',
    'wh/kept': 'kept\n',
    'data/big': big,
    'data/big2': big2,
    'data/sparse': { sparse: 1 << 20, data: Buffer.from('middle') },
    'links/a': 'shared inode\n',
    'links/b': { hardlink: 'links/a' },
    'tree/sub/deep/file': 'deep\n',
    'tree/sub/other': 'other\n',
    'tree/top': 'top\n',
    'bin/sh': { link: '/bin/busybox' },
    empty: { dir: true },
  });
  top = makeSquashfs(
    dir,
    'top',
    {
      'etc/hosts': 'top hosts\n',
      'etc/only-top': 't\n',
      shadowed: 'a file hides the directory below\n',
      'opq/.wh..wh..opq': '',
      'opq/new': 'in opaque\n',
      'wh/.wh.gone2': '',
    },
    ['wh/gone c 0 0 0 0 0'],
  );
});

afterAll(() => removeDir(dir));

async function fresh(tag: string, extra = {}): Promise<{ ov: Overlay; image: string }> {
  const image = await makeExt3Image(dir, tag);
  return { ov: await openStack([top, bottom], image, extra), image };
}

async function errCode(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof FsError) return err.code;
    throw err;
  }
  return 'OK';
}

async function closeAndCheck(ov: Overlay, image: string): Promise<void> {
  await ov.close();
  const r = e2fsck(image);
  expect(r.output, r.output).toMatch(/clean|files/);
  expect(r.ok, r.output).toBe(true);
}

describe('merged view (read only)', () => {
  it('a higher non-directory hides everything below; directories merge; whiteouts and opaque dirs hide', async () => {
    const ov = await openStack([top, bottom]);
    expect(ov.writable).toBe(false);
    expect((await readAll(ov, '/etc/hosts')).toString()).toBe('top hosts\n');
    expect(await names(ov, '/etc')).toEqual(expect.arrayContaining(['passwd', 'hosts', 'only-bottom', 'only-top']));
    expect((await names(ov, '/etc')).length).toBe(4);
    const sh = await at(ov, '/shadowed');
    expect((await ov.getattr(sh)).mode & S_IFMT).toBe(S_IFREG);
    expect(await names(ov, '/opq')).toEqual(['new']);
    expect(await exists(ov, '/opq/old')).toBe(false);
    expect(await names(ov, '/wh')).toEqual(['kept']);
    expect(await exists(ov, '/wh/gone')).toBe(false);
    expect(await exists(ov, '/wh/gone2')).toBe(false);
    expect(await ov.lookup(await at(ov, '/wh'), b('.wh.gone2'))).toBeNull();
    expect((await ov.readlink(await at(ov, '/bin/sh'))).toString()).toBe('/bin/busybox');
    await ov.close();
  });

  it("a merged directory's st_nlink counts its visible subdirectories, or is 1 as the kernel's", async () => {
    const ov = await openStack([top, bottom]);
    expect((await ov.getattr(await at(ov, '/tree'))).nlink).toBe(3);
    expect((await ov.getattr(ov.rootId)).nlink).toBe(2 + (await ov.readdir(ov.rootId)).filter((e) => e.type === 'd').length);
    await ov.close();
    const k = await openStack([top, bottom], undefined, { mergedDirNlink: 'one' });
    expect((await k.getattr(await at(k, '/etc'))).nlink).toBe(1);
    await k.close();
  });

  it("a merged directory's st_nlink follows mkdir, rmdir and renames of directories, not files coming and going", async () => {
    const { ov, image } = await fresh('nlink');
    const tree = await at(ov, '/tree');
    // Copying a file up gives /tree an upper directory: it is merged from then on.
    await ov.write(await at(ov, '/tree/top'), 0, b('T'));
    const nlink = async () => (await ov.getattr(tree)).nlink;
    expect(await nlink()).toBe(3);
    await ov.unlink(tree, b('top'));
    expect(await nlink()).toBe(3);
    await ov.mknod(tree, b('f'), { mode: 0o100644, uid: 0, gid: 0 });
    await ov.link(await at(ov, '/tree/f'), tree, b('f2'));
    expect(await nlink()).toBe(3);
    await ov.mkdir(tree, b('n1'), { mode: 0o040755, uid: 0, gid: 0 });
    expect(await nlink()).toBe(4);
    await ov.rename(tree, b('n1'), ov.rootId, b('n1moved'), {});
    expect(await nlink()).toBe(3);
    await ov.rename(ov.rootId, b('n1moved'), tree, b('back'), {});
    expect(await nlink()).toBe(4);
    await ov.rmdir(tree, b('back'));
    await ov.unlink(tree, b('f'));
    expect(await nlink()).toBe(3);
    await closeAndCheck(ov, image);
  });

  it('readdir is one stable snapshot per directory state', async () => {
    const ov = await openStack([top, bottom]);
    const etc = await at(ov, '/etc');
    const a = await ov.readdir(etc);
    const c = await ov.readdir(etc);
    expect(c).toBe(a);
    expect(a.map((e) => e.name.toString())).toEqual(a.map((e) => e.name.toString()));
    await ov.close();
  });

  it('no upper: every write is EROFS', async () => {
    const ov = await openStack([top, bottom]);
    const [d, n] = await parentOf(ov, '/etc/hosts');
    expect(await errCode(ov.unlink(d, n))).toBe('EROFS');
    expect(await errCode(ov.write(await at(ov, '/etc/hosts'), 0, b('x')))).toBe('EROFS');
    expect(await errCode(ov.mkdir(ov.rootId, b('x'), { mode: S_IFDIR | 0o755, uid: 0, gid: 0 }))).toBe('EROFS');
    await ov.close();
  });

  it('inode numbers: unique across layers, equal for hard links', async () => {
    const ov = await openStack([top, bottom]);
    const seen = new Map<number, string>();
    for (const p of ['/etc/hosts', '/etc/passwd', '/etc/only-top', '/etc/only-bottom', '/links/a', '/tree/top', '/opq/new']) {
      const ino = (await ov.getattr(await at(ov, p))).ino;
      if (p !== '/links/a') expect(seen.has(ino), `${p} shares ${ino} with ${seen.get(ino)}`).toBe(false);
      seen.set(ino, p);
    }
    const la = await ov.getattr(await at(ov, '/links/a'));
    const lb = await ov.getattr(await at(ov, '/links/b'));
    expect(la.ino).toBe(lb.ino);
    expect(la.nlink).toBe(2);
    await ov.close();
  });
});

describe('copy-up', () => {
  it('first write copies data, mode, owner, times and xattr-free metadata; the lower is untouched; st_ino stays', async () => {
    const { ov, image } = await fresh('cw');
    const id = await at(ov, '/etc/passwd');
    const before = await ov.getattr(id);
    await ov.write(id, 0, b('ROOT'));
    const after = await ov.getattr(id);
    expect(after.ino).toBe(before.ino);
    expect(after.mode).toBe(before.mode);
    expect(after.mtime).toBeGreaterThanOrEqual(before.mtime);
    expect((await readAll(ov, '/etc/passwd')).toString()).toBe('ROOT:x:0:0\n');
    await ov.close();
    const again = await openStack([top, bottom], image);
    expect((await readAll(again, '/etc/passwd')).toString()).toBe('ROOT:x:0:0\n');
    expect((await again.getattr(await at(again, '/etc/passwd'))).ino).toBe(before.ino);
    const lowerOnly = await openStack([top, bottom]);
    expect((await readAll(lowerOnly, '/etc/passwd')).toString()).toBe('root:x:0:0\n');
    await lowerOnly.close();
    await closeAndCheck(again, image);
  });

  it('copies a big file whole, keeps holes, and copies nothing for truncate(0)', async () => {
    const { ov, image } = await fresh('big');
    const bigId = await at(ov, '/data/big');
    await ov.write(bigId, 5, b('X'));
    const want = Buffer.from(big);
    want[5] = 0x58;
    expect((await readAll(ov, '/data/big')).equals(want)).toBe(true);
    const sp = await at(ov, '/data/sparse');
    await ov.setattr(sp, { mode: 0o600 });
    const st = await ov.getattr(sp);
    expect(st.size).toBe(1 << 20);
    expect(st.blocks * 512).toBeLessThan(64 * 1024);
    const content = await readAll(ov, '/data/sparse');
    expect(content.subarray(16384, 16390).toString()).toBe('middle');
    await ov.truncate(await at(ov, '/etc/only-bottom'), 0);
    const t = await ov.getattr(await at(ov, '/etc/only-bottom'));
    expect(t.size).toBe(0);
    expect(t.blocks).toBe(0);
    await closeAndCheck(ov, image);
  });

  it('consecutive copy-ups of big files each copy their own bytes, across remount', async () => {
    const { ov, image } = await fresh('big2');
    await ov.write(await at(ov, '/data/big'), big.length, b('1'));
    await ov.write(await at(ov, '/data/big2'), big2.length, b('2'));
    await ov.write(await at(ov, '/etc/hosts'), 0, b('H'));
    const want1 = Buffer.concat([big, b('1')]);
    const want2 = Buffer.concat([big2, b('2')]);
    expect((await readAll(ov, '/data/big')).equals(want1)).toBe(true);
    expect((await readAll(ov, '/data/big2')).equals(want2)).toBe(true);
    expect((await readAll(ov, '/etc/hosts')).toString()).toBe('Hop hosts\n');
    await ov.close();
    const again = await openStack([top, bottom], image);
    expect((await readAll(again, '/data/big')).equals(want1)).toBe(true);
    expect((await readAll(again, '/data/big2')).equals(want2)).toBe(true);
    await closeAndCheck(again, image);
  });

  it('copies parents first, with their metadata, and only what is written', async () => {
    const { ov, image } = await fresh('parents');
    await ov.write(await at(ov, '/tree/sub/deep/file'), 0, b('D'));
    await ov.close();
    const up = await openExt3Layer(image);
    const fs = up.fs;
    const sub = await at(fs, '/upper/tree/sub');
    expect((await fs.readdir(sub)).map((e) => e.name.toString())).toEqual(['deep']);
    expect((await fs.readdir(await at(fs, '/upper/tree'))).map((e) => e.name.toString())).toEqual(['sub']);
    await fs.close();
  });

  it('concurrent writers of one lower file copy it once and lose nothing', async () => {
    const { ov, image } = await fresh('conc');
    const id = await at(ov, '/data/big');
    await Promise.all(Array.from({ length: 8 }, (_, i) => ov.write(id, i * 1000, b(`w${i}`))));
    const got = await readAll(ov, '/data/big');
    for (let i = 0; i < 8; i++) expect(got.subarray(i * 1000, i * 1000 + 2).toString()).toBe(`w${i}`);
    expect(got.length).toBe(big.length);
    await closeAndCheck(ov, image);
  });
});

describe('removal, whiteouts, opaque directories', () => {
  it('unlink leaves a char 0/0 whiteout only where a lower layer has the name', async () => {
    const { ov, image } = await fresh('unlink');
    const etc = await at(ov, '/etc');
    await ov.unlink(etc, b('hosts'));
    expect(await exists(ov, '/etc/hosts')).toBe(false);
    await writeFile(ov, '/etc/new', 'n');
    await ov.unlink(etc, b('new'));
    expect(await names(ov, '/etc')).toEqual(expect.not.arrayContaining(['hosts', 'new']));
    await ov.close();
    const up = await openExt3Layer(image);
    const uetc = await at(up.fs, '/upper/etc');
    const list = await up.fs.readdir(uetc);
    expect(list.map((e) => e.name.toString())).toEqual(['hosts']);
    const wh = await up.fs.getattr(list[0]!.id);
    expect(wh.mode & S_IFMT).toBe(S_IFCHR);
    expect(wh.rdev).toBe(0);
    await up.fs.close();
    expect(e2fsck(image).ok).toBe(true);
  });

  it('mkdir over a whiteout makes an opaque directory; rmdir of a merged directory is ENOTEMPTY while anything shows', async () => {
    const { ov, image } = await fresh('rmdir');
    const root = ov.rootId;
    expect(await errCode(ov.rmdir(root, b('etc')))).toBe('ENOTEMPTY');
    const etc = await at(ov, '/etc');
    for (const n of await names(ov, '/etc')) await ov.unlink(etc, b(n));
    expect(await names(ov, '/etc')).toEqual([]);
    await ov.rmdir(root, b('etc'));
    expect(await exists(ov, '/etc')).toBe(false);
    await ov.mkdir(root, b('etc'), { mode: S_IFDIR | 0o700, uid: 0, gid: 0 });
    expect(await names(ov, '/etc')).toEqual([]);
    await writeFile(ov, '/etc/fresh', 'f');
    expect(await names(ov, '/etc')).toEqual(['fresh']);
    await ov.close();
    const again = await openStack([top, bottom], image);
    expect(await names(again, '/etc')).toEqual(['fresh']);
    const up = await openExt3Layer(image);
    const uetc = await at(up.fs, '/upper/etc');
    expect((await up.fs.getxattr(uetc, b('trusted.overlay.opaque')))?.toString()).toBe('y');
    await up.fs.close();
    await closeAndCheck(again, image);
  });

  it('a file created where a whiteout was replaces it', async () => {
    const { ov, image } = await fresh('recreate');
    const etc = await at(ov, '/etc');
    await ov.unlink(etc, b('passwd'));
    await writeFile(ov, '/etc/passwd', 'again\n');
    expect((await readAll(ov, '/etc/passwd')).toString()).toBe('again\n');
    await closeAndCheck(ov, image);
  });
});

describe('rename', () => {
  it('of a lower directory works without EXDEV or copying its subtree (redirects), and survives remount', async () => {
    const { ov, image } = await fresh('redir');
    const root = ov.rootId;
    await ov.rename(root, b('tree'), root, b('moved'));
    expect(await exists(ov, '/tree')).toBe(false);
    expect((await readAll(ov, '/moved/sub/deep/file')).toString()).toBe('deep\n');
    const etc = await at(ov, '/etc');
    await ov.rename(await at(ov, '/moved'), b('sub'), etc, b('sub2'));
    expect((await readAll(ov, '/etc/sub2/deep/file')).toString()).toBe('deep\n');
    expect(await names(ov, '/moved')).toEqual(['top']);
    await ov.write(await at(ov, '/etc/sub2/other'), 0, b('O'));
    await ov.close();
    const up = await openExt3Layer(image);
    const moved = await at(up.fs, '/upper/moved');
    expect((await up.fs.getxattr(moved, b('trusted.overlay.redirect')))?.toString()).toBe('tree');
    const sub2 = await at(up.fs, '/upper/etc/sub2');
    expect((await up.fs.getxattr(sub2, b('trusted.overlay.redirect')))?.toString()).toBe('/tree/sub');
    expect((await up.fs.readdir(sub2)).map((e) => e.name.toString())).toEqual(['other']);
    await up.fs.close();
    const again = await openStack([top, bottom], image);
    expect((await readAll(again, '/etc/sub2/deep/file')).toString()).toBe('deep\n');
    expect((await readAll(again, '/etc/sub2/other')).toString()).toBe('Other\n');
    expect(await exists(again, '/tree')).toBe(false);
    expect(await names(again, '/moved')).toEqual(['top']);
    await closeAndCheck(again, image);
  });

  it('over existing entries, with RENAME_NOREPLACE and RENAME_EXCHANGE', async () => {
    const { ov, image } = await fresh('flags');
    const etc = await at(ov, '/etc');
    expect(await errCode(ov.rename(etc, b('hosts'), etc, b('passwd'), { noreplace: true }))).toBe('EEXIST');
    await ov.rename(etc, b('hosts'), etc, b('passwd'), { exchange: true });
    expect((await readAll(ov, '/etc/passwd')).toString()).toBe('top hosts\n');
    expect((await readAll(ov, '/etc/hosts')).toString()).toBe('root:x:0:0\n');
    await ov.rename(etc, b('hosts'), etc, b('only-top'));
    expect(await exists(ov, '/etc/hosts')).toBe(false);
    expect((await readAll(ov, '/etc/only-top')).toString()).toBe('root:x:0:0\n');
    const root = ov.rootId;
    expect(await errCode(ov.rename(root, b('tree'), await at(ov, '/tree/sub'), b('x')))).toBe('EINVAL');
    expect(await errCode(ov.rename(root, b('etc'), root, b('tree')))).toBe('ENOTEMPTY');
    await ov.rename(root, b('tree'), root, b('empty'));
    expect(await names(ov, '/empty')).toEqual(expect.arrayContaining(['sub', 'top']));
    await ov.rename(root, b('opq'), root, b('wh'), { exchange: true });
    expect(await names(ov, '/wh')).toEqual(['new']);
    expect(await names(ov, '/opq')).toEqual(['kept']);
    await closeAndCheck(ov, image);
  });
});

describe('hard links, xattrs, fakeroot', () => {
  it('copy-up of one name of a lower hard link keeps both names one inode (index), across remount', async () => {
    const { ov, image } = await fresh('hl');
    const a = await at(ov, '/links/a');
    const ino = (await ov.getattr(a)).ino;
    await ov.write(a, 0, b('SHARED'));
    expect((await readAll(ov, '/links/b')).toString()).toBe('SHARED inode\n');
    const sb = await ov.getattr(await at(ov, '/links/b'));
    expect(sb.ino).toBe(ino);
    expect(sb.nlink).toBe(2);
    const links = await at(ov, '/links');
    await ov.link(await at(ov, '/links/b'), links, b('c'));
    expect((await ov.getattr(await at(ov, '/links/c'))).nlink).toBe(3);
    await ov.unlink(links, b('a'));
    expect((await ov.getattr(await at(ov, '/links/b'))).nlink).toBe(2);
    await ov.close();
    const again = await openStack([top, bottom], image);
    const b2 = await again.getattr(await at(again, '/links/b'));
    expect(b2.ino).toBe(ino);
    expect(b2.nlink).toBe(2);
    expect((await readAll(again, '/links/c')).toString()).toBe('SHARED inode\n');
    await again.write(await at(again, '/links/b'), 0, b('s'));
    expect((await readAll(again, '/links/c')).toString()).toBe('sHARED inode\n');
    await closeAndCheck(again, image);
  });

  it("overlay-internal xattrs are never visible or settable; a user's trusted.overlay.* is escaped as the kernel does", async () => {
    const { ov, image } = await fresh('xattr');
    const root = ov.rootId;
    await ov.rename(root, b('tree'), root, b('moved'));
    const moved = await at(ov, '/moved');
    expect(await ov.listxattr(moved)).toEqual([]);
    expect(await ov.getxattr(moved, b('trusted.overlay.redirect'))).toBeNull();
    expect(await ov.getxattr(moved, b('trusted.overlay.sifuse.ino'))).toBeNull();
    expect(await errCode(ov.setxattr(moved, b('user.fuseoverlayfs.opaque'), b('y')))).toBe('EPERM');
    expect(await errCode(ov.setxattr(moved, b('user.overlay.sifuse.ino'), b('1')))).toBe('EPERM');
    expect(await errCode(ov.setxattr(moved, b('trusted.sifuse.x'), b('1')))).toBe('EPERM');
    await ov.setxattr(moved, b('trusted.overlay.opaque'), b('y'));
    await ov.setxattr(moved, b('user.mine'), b('v'));
    expect((await ov.listxattr(moved)).map((x) => x.toString()).sort()).toEqual(['trusted.overlay.opaque', 'user.mine']);
    expect((await ov.getxattr(moved, b('trusted.overlay.opaque')))?.toString()).toBe('y');
    // Still not opaque: the user's xattr is escaped in the upper.
    expect(await names(ov, '/moved')).toEqual(expect.arrayContaining(['sub', 'top']));
    const mk = await errCode(ov.mknod(root, b('wh'), { mode: S_IFCHR | 0o644, uid: 0, gid: 0, rdev: 0 }));
    expect(mk).toBe('EPERM');
    await ov.close();
    const again = await openStack([top, bottom], image);
    expect(await names(again, '/moved')).toEqual(expect.arrayContaining(['sub', 'top']));
    const up = await openExt3Layer(image);
    const um = await at(up.fs, '/upper/moved');
    expect((await up.fs.getxattr(um, b('trusted.overlay.overlay.opaque')))?.toString()).toBe('y');
    expect(await up.fs.getxattr(um, b('trusted.overlay.opaque'))).toBeNull();
    await up.fs.close();
    await closeAndCheck(again, image);
  });

  it('fakeroot: stored 0 shows as the caller, the caller is stored as 0', async () => {
    const { ov, image } = await fresh('fake', { map: { uid: 1234, gid: 5678 } });
    const st = await ov.getattr(await at(ov, '/etc/passwd'));
    expect([st.uid, st.gid]).toEqual([1234, 5678]);
    const id = await ov.mknod(ov.rootId, b('mine'), { mode: S_IFREG | 0o644, uid: 1234, gid: 5678 });
    const m = await ov.getattr(id);
    expect([m.uid, m.gid]).toEqual([1234, 5678]);
    await ov.setattr(await at(ov, '/etc/hosts'), { uid: 1000, gid: 1000 });
    expect((await ov.getattr(await at(ov, '/etc/hosts'))).uid).toBe(1000);
    await ov.close();
    const up = await openExt3Layer(image);
    const raw = await up.fs.getattr(await at(up.fs, '/upper/mine'));
    expect([raw.uid, raw.gid]).toEqual([0, 0]);
    await up.fs.close();
  });
});

describe('locking', () => {
  it('copy-ups, a lower-directory rename, removals, creates and readers at once leave one consistent tree', async () => {
    const { ov, image } = await fresh('lock');
    const ids = await Promise.all(
      ['/tree/sub/deep/file', '/tree/sub/other', '/tree/top', '/data/big', '/etc/passwd'].map((p) => at(ov, p)),
    );
    const etc = await at(ov, '/etc');
    const root = ov.rootId;
    const readers = Array.from({ length: 20 }, async (_, i) => {
      // Readers see the tree before or after each change, never an error other than "gone".
      const p = i % 2 ? '/tree/sub' : '/t2/sub';
      try {
        await names(ov, p);
      } catch (err) {
        if (!(err instanceof FsError) || err.code !== 'ENOENT') throw err;
      }
      await ov.readdir(root);
    });
    await Promise.all([
      ...ids.map((id, i) => ov.write(id, 0, b(`W${i}`))),
      ov.rename(root, b('tree'), root, b('t2')),
      ov.unlink(etc, b('hosts')),
      ov.mknod(etc, b('created'), { mode: S_IFREG | 0o644, uid: 0, gid: 0 }),
      ov.rename(etc, b('only-top'), etc, b('renamed')),
      ...readers,
    ]);
    expect((await readAll(ov, '/t2/sub/deep/file')).toString()).toBe('W0ep\n');
    expect((await readAll(ov, '/t2/sub/other')).toString()).toBe('W1her\n');
    expect((await readAll(ov, '/t2/top')).toString()).toBe('W2p\n');
    expect(await exists(ov, '/tree')).toBe(false);
    expect((await names(ov, '/etc')).sort()).toEqual(['created', 'only-bottom', 'passwd', 'renamed']);
    const before = await manifest(ov);
    await ov.close();
    expect(e2fsck(image).ok).toBe(true);
    const again = await openStack([top, bottom], image);
    expect(await manifest(again)).toEqual(before);
    await again.close();
  });
});

describe('fuse-overlayfs encoding (directory uppers without mknod)', () => {
  it('writes .wh.NAME whiteouts and .wh..wh..opq opaque markers, and every encoding reads them', async () => {
    const image = await makeExt3Image(dir, 'fuseenc');
    const open = async (encoding: 'kernel' | 'fuse-overlayfs') => {
      const upper = { ...(await openUpper(image)), encoding };
      return Overlay.open({ lowers: [await openSquashfsLayer(top), await openSquashfsLayer(bottom)], upper });
    };
    const ov = await open('fuse-overlayfs');
    const etc = await at(ov, '/etc');
    await ov.unlink(etc, b('hosts'));
    expect(await exists(ov, '/etc/hosts')).toBe(false);
    expect(await errCode(ov.mknod(etc, b('.wh.x'), { mode: S_IFREG | 0o644, uid: 0, gid: 0 }))).toBe('EINVAL');
    for (const n of await names(ov, '/etc')) await ov.unlink(etc, b(n));
    await ov.rmdir(ov.rootId, b('etc'));
    await ov.mkdir(ov.rootId, b('etc'), { mode: S_IFDIR | 0o755, uid: 0, gid: 0 });
    await writeFile(ov, '/etc/hosts', 'again\n');
    expect(await names(ov, '/etc')).toEqual(['hosts']);
    await ov.rename(ov.rootId, b('tree'), ov.rootId, b('moved'));
    expect((await readAll(ov, '/moved/sub/deep/file')).toString()).toBe('deep\n');
    const before = await manifest(ov);
    await ov.close();
    const up = await openExt3Layer(image);
    const root = await at(up.fs, '/upper');
    const rootNames = (await up.fs.readdir(root)).map((e) => e.name.toString());
    expect(rootNames).toEqual(expect.arrayContaining(['etc', '.wh.tree', 'moved']));
    const uetc = await at(up.fs, '/upper/etc');
    expect((await up.fs.readdir(uetc)).map((e) => e.name.toString()).sort()).toEqual(['.wh..wh..opq', 'hosts']);
    await up.fs.close();
    for (const enc of ['fuse-overlayfs', 'kernel'] as const) {
      const again = await open(enc);
      expect(await manifest(again)).toEqual(before);
      await again.close();
    }
    expect(e2fsck(image).ok).toBe(true);
  });
});

describe('cached lookups across creates and removals (both encodings)', () => {
  for (const encoding of ['kernel', 'fuse-overlayfs'] as const) {
    it(`${encoding}: a name looked up, removed, made again and removed again resolves as a fresh overlay sees it`, async () => {
      const image = await makeExt3Image(dir, `cache-${encoding}`);
      // A directory already in the upper with a stale `.wh.x` marker (not made by this overlay).
      const pre = await openExt3Layer(image);
      if (!('work' in pre)) throw new Error('the image opened read-only');
      const d = await pre.fs.mkdir(pre.root, b('pre'), { mode: S_IFDIR | 0o755, uid: 0, gid: 0 });
      await pre.fs.mknod(d, b('.wh.x'), { mode: S_IFREG | 0o700, uid: 0, gid: 0 });
      await pre.fs.close();
      const open = async (enc: 'kernel' | 'fuse-overlayfs') => {
        const upper = { ...(await openUpper(image)), encoding: enc };
        return Overlay.open({ lowers: [await openSquashfsLayer(top), await openSquashfsLayer(bottom)], upper });
      };
      const ov = await open(encoding);
      const reg = { mode: S_IFREG | 0o644, uid: 0, gid: 0 };
      const etc = await at(ov, '/etc');
      // A lower name: cached positive, then whited out, then made again over the whiteout.
      expect(await ov.lookup(etc, b('hosts'))).not.toBeNull();
      await ov.unlink(etc, b('hosts'));
      expect(await ov.lookup(etc, b('hosts'))).toBeNull();
      const hosts = await ov.mknod(etc, b('hosts'), reg);
      expect(await ov.lookup(etc, b('hosts'))).toBe(hosts);
      await ov.unlink(etc, b('hosts'));
      expect(await ov.lookup(etc, b('hosts'))).toBeNull();
      await ov.mknod(etc, b('hosts'), reg);
      // A directory made here: names come and go with no whiteout.
      const nd = await ov.mkdir(ov.rootId, b('nd'), { mode: S_IFDIR | 0o755, uid: 0, gid: 0 });
      expect(await ov.lookup(nd, b('a'))).toBeNull();
      const a = await ov.mknod(nd, b('a'), reg);
      expect(await ov.lookup(nd, b('a'))).toBe(a);
      expect(await errCode(ov.mknod(nd, b('a'), reg))).toBe('EEXIST');
      await ov.unlink(nd, b('a'));
      expect(await ov.lookup(nd, b('a'))).toBeNull();
      await ov.mknod(nd, b('a'), reg);
      await ov.mkdir(nd, b('sub'), { mode: S_IFDIR | 0o755, uid: 0, gid: 0 });
      await ov.rmdir(nd, b('sub'));
      expect(await ov.lookup(nd, b('sub'))).toBeNull();
      // The stale marker's name: hidden, then made (the marker goes with the fuse-overlayfs encoding's create).
      const pd = await at(ov, '/pre');
      expect(await ov.lookup(pd, b('x'))).toBeNull();
      await ov.mknod(pd, b('x'), reg);
      expect(await names(ov, '/pre')).toEqual(['x']);
      const before = await manifest(ov);
      expect(before.filter((l) => /^\/(etc\/hosts|nd|pre)/.test(l)).map((l) => l.split('\t')[0])).toEqual([
        '/etc/hosts',
        '/nd',
        '/nd/a',
        '/pre',
        '/pre/x',
      ]);
      await ov.close();
      const up = await openExt3Layer(image);
      const upre = await at(up.fs, '/upper/pre');
      expect((await up.fs.readdir(upre)).map((e) => e.name.toString())).toEqual(['x']);
      expect((await up.fs.readdir(await at(up.fs, '/upper/nd'))).map((e) => e.name.toString())).toEqual(['a']);
      await up.fs.close();
      for (const enc of ['fuse-overlayfs', 'kernel'] as const) {
        const again = await open(enc);
        expect(await manifest(again)).toEqual(before);
        await again.close();
      }
      expect(e2fsck(image).ok).toBe(true);
    });
  }
});

describe('redirect_dir=off', () => {
  it('a renamed lower directory is copied up whole and made opaque, no redirect written', async () => {
    const { ov, image } = await fresh('noredir', { redirectDir: false });
    const root = ov.rootId;
    await ov.unlink(await at(ov, '/tree/sub'), b('other'));
    const before = (await manifest(ov)).map((l) => l.replace(/^\/tree/, '/moved'));
    await ov.rename(root, b('tree'), root, b('moved'));
    expect(await exists(ov, '/tree')).toBe(false);
    const after = (await manifest(ov)).filter((l) => l.startsWith('/moved'));
    expect(after).toEqual(before.filter((l) => l.startsWith('/moved')));
    await ov.close();
    const up = await openExt3Layer(image);
    const moved = await at(up.fs, '/upper/moved');
    expect(await up.fs.getxattr(moved, b('trusted.overlay.redirect'))).toBeNull();
    expect((await up.fs.getxattr(moved, b('trusted.overlay.opaque')))?.toString()).toBe('y');
    const sub = await at(up.fs, '/upper/moved/sub');
    expect((await up.fs.readdir(sub)).map((e) => e.name.toString())).toEqual(['deep']);
    expect((await up.fs.readdir(await at(up.fs, '/upper/moved/sub/deep'))).map((e) => e.name.toString())).toEqual(['file']);
    await up.fs.close();
    const again = await openStack([top, bottom], image);
    expect((await manifest(again)).filter((l) => l.startsWith('/moved'))).toEqual(after);
    await closeAndCheck(again, image);
  });
});

describe('node table', () => {
  it('forgets unreferenced nodes past nodeLimit; referenced ids and copy-ups stay right', async () => {
    const { ov, image } = await fresh('sweep', { nodeLimit: 8 });
    const deep = await at(ov, '/tree/sub/deep/file');
    await ov.ref(deep);
    const first = await manifest(ov);
    expect(ov.nodeCount).toBeLessThan(40);
    // A stale unreferenced id (its node forgotten) and a fresh one for the same file: one copy-up.
    const other = await at(ov, '/tree/sub/other');
    for (let i = 0; i < 3; i++) await manifest(ov);
    const again = await at(ov, '/tree/sub/other');
    await ov.write(again, 0, b('A'));
    try {
      await ov.write(other, 1, b('B'));
    } catch (err) {
      expect(err instanceof FsError && err.code === 'ENOENT').toBe(true);
    }
    expect((await readAll(ov, '/tree/sub/other')).toString()).toMatch(/^A[Bt]her\n$/);
    await ov.write(deep, 0, b('D'));
    expect((await readAll(ov, '/tree/sub/deep/file')).toString()).toBe('Deep\n');
    expect((await manifest(ov)).length).toBe(first.length);
    await ov.unref(deep);
    await closeAndCheck(ov, image);
  });
});
