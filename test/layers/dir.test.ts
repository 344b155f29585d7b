import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  existsSync,
  lstatSync,
  readdirSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DirLayer, openDirLayer } from '../../src/layers/dir.js';
import { FsError } from '../../src/errors.js';
import { makedev, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, type InodeId } from '../../src/engine.js';

const isRoot = process.getuid?.() === 0;
const me = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
const b = (s: string): Buffer => Buffer.from(s);
let dir: string;
let fs: DirLayer;

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof FsError) return err.code;
    throw err;
  }
  return 'no error';
}

async function mkfile(parent: InodeId, name: string, data = '', mode = 0o644): Promise<InodeId> {
  const id = await fs.mknod(parent, b(name), { mode: S_IFREG | mode, ...me });
  if (data) await fs.write(id, 0, b(data));
  return id;
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sifuse-dir-'));
  fs = DirLayer.open(dir, { writable: true });
});
afterEach(async () => {
  await fs.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('DirLayer basics', () => {
  it('creates, reads, writes, truncates and lists with raw byte names', async () => {
    const odd = Buffer.from([0x6e, 0xff, 0x80, 0x0a]);
    const f = await fs.mknod(fs.rootId, odd, { mode: S_IFREG | 0o640, ...me });
    expect(await fs.write(f, 0, b('hello world'))).toBe(11);
    expect((await fs.read(f, 6, 100)).toString()).toBe('world');
    await fs.truncate(f, 5);
    expect((await fs.read(f, 0, 100)).toString()).toBe('hello');
    const st = await fs.getattr(f);
    expect(st.mode).toBe(S_IFREG | 0o640); // exact, no umask
    expect(st.size).toBe(5);
    expect(st.ino).toBe(lstatSync(Buffer.concat([b(dir + '/'), odd])).ino);
    const d = await fs.mkdir(fs.rootId, b('sub'), { mode: S_IFDIR | 0o2750, ...me });
    expect((await fs.getattr(d)).mode).toBe(S_IFDIR | 0o2750);
    const l = await fs.symlink(d, b('link'), b('../../../etc/passwd'), me);
    expect((await fs.readlink(l)).toString()).toBe('../../../etc/passwd');
    expect(await code(fs.readlink(f))).toBe('EINVAL');
    const list = await fs.readdir(fs.rootId);
    expect(list.map((e) => e.name.toString('latin1')).sort()).toEqual([odd.toString('latin1'), 'sub'].sort());
    expect(list.find((e) => e.name.equals(odd))).toEqual({ name: odd, id: f, type: 'f' });
    expect(await fs.lookup(fs.rootId, odd)).toBe(f);
    expect(await fs.lookup(fs.rootId, b('missing'))).toBeNull();
    expect(await code(fs.lookup(f, b('x')))).toBe('ENOTDIR');
    expect(await code(fs.read(d, 0, 1))).toBe('EISDIR');
    expect(await code(fs.mknod(fs.rootId, odd, { mode: S_IFREG | 0o644, ...me }))).toBe('EEXIST');
    expect(await code(fs.lookup(fs.rootId, b('..')))).toBe('EINVAL');
    expect(await code(fs.lookup(fs.rootId, b('a/b')))).toBe('EINVAL');
    expect(await code(fs.mkdir(fs.rootId, b('x'.repeat(256)), { mode: S_IFDIR | 0o755, ...me }))).toBe('ENAMETOOLONG');
  });

  it('mknod makes fifos (and devices as root) without opening them', async () => {
    const p = await fs.mknod(fs.rootId, b('fifo'), { mode: S_IFIFO | 0o600, ...me });
    expect((await fs.getattr(p)).mode).toBe(S_IFIFO | 0o600);
    expect(await code(fs.read(p, 0, 1))).toBe('EINVAL');
    expect(await code(fs.write(p, 0, b('x')))).toBe('EINVAL');
    if (isRoot) {
      const c = await fs.mknod(fs.rootId, b('tty'), { mode: S_IFCHR | 0o620, uid: 0, gid: 5, rdev: makedev(4, 1) });
      const st = await fs.getattr(c);
      expect([st.mode, st.rdev, st.gid]).toEqual([S_IFCHR | 0o620, makedev(4, 1), 5]);
      expect(lstatSync(join(dir, 'tty')).rdev).toBe(makedev(4, 1));
    }
  });

  it('owner, mode and nanosecond times through setattr; symlinks keep their owner', async () => {
    const f = await mkfile(fs.rootId, 'f');
    await fs.setattr(f, { mode: 0o4755, atime: { sec: 100, nsec: 1 }, mtime: { sec: 200, nsec: 999999999 } });
    let st = await fs.getattr(f);
    expect([st.mode & 0o7777, st.atime, st.atimeNsec, st.mtime, st.mtimeNsec]).toEqual([0o4755, 100, 1, 200, 999999999]);
    await fs.setattr(f, { mtime: { sec: 300, nsec: 5 } });
    st = await fs.getattr(f);
    expect([st.atime, st.mtime, st.mtimeNsec]).toEqual([100, 300, 5]);
    if (isRoot) {
      await fs.setattr(f, { uid: 1000, gid: 1001, mode: 0o6755 });
      st = await fs.getattr(f);
      expect([st.uid, st.gid, st.mode & 0o7777]).toEqual([1000, 1001, 0o6755]);
      const l = await fs.symlink(fs.rootId, b('l'), b('f'), { uid: 7, gid: 8 });
      st = await fs.getattr(l);
      expect([st.uid, st.gid, st.mode & S_IFMT]).toEqual([7, 8, S_IFLNK]);
      expect(statSync(join(dir, 'f')).uid).toBe(1000);
      const d = await fs.mkdir(fs.rootId, b('owned'), { mode: S_IFDIR | 0o700, uid: 42, gid: 43 });
      expect([(await fs.getattr(d)).uid, lstatSync(join(dir, 'owned')).gid]).toEqual([42, 43]);
    } else {
      expect(await code(fs.setattr(f, { uid: 4242 }))).toBe('EPERM');
    }
  });

  it('hard links share an id and nlink; link works on a file by id', async () => {
    const f = await mkfile(fs.rootId, 'a', 'data');
    const d = await fs.mkdir(fs.rootId, b('d'), { mode: S_IFDIR | 0o755, ...me });
    await fs.link(f, d, b('b'));
    expect(await fs.lookup(d, b('b'))).toBe(f);
    expect((await fs.getattr(f)).nlink).toBe(2);
    expect(await code(fs.link(d, fs.rootId, b('dlink')))).toBe('EPERM');
    expect(await code(fs.link(f, d, b('b')))).toBe('EEXIST');
    await fs.unlink(fs.rootId, b('a'));
    expect((await fs.getattr(f)).nlink).toBe(1);
    expect((await fs.read((await fs.lookup(d, b('b'))) as number, 0, 10)).toString()).toBe('data');
  });

  it('an unlinked file stays readable and writable while referenced, then is forgotten', async () => {
    const f = await mkfile(fs.rootId, 'gone', 'still here');
    await fs.ref(f);
    await fs.unlink(fs.rootId, b('gone'));
    expect(existsSync(join(dir, 'gone'))).toBe(false);
    expect((await fs.read(f, 0, 100)).toString()).toBe('still here');
    await fs.write(f, 0, b('STILL'));
    expect((await fs.read(f, 0, 100)).toString()).toBe('STILL here');
    expect((await fs.getattr(f)).nlink).toBe(0);
    await fs.unref(f);
    expect(await code(fs.getattr(f))).toBe('ENOENT');
    expect(await code(fs.ref(f))).toBe('ENOENT');
  });

  it('unlink/rmdir errors as a local filesystem gives them', async () => {
    const d = await fs.mkdir(fs.rootId, b('d'), { mode: S_IFDIR | 0o755, ...me });
    await mkfile(d, 'f');
    expect(await code(fs.rmdir(fs.rootId, b('d')))).toBe('ENOTEMPTY');
    expect(await code(fs.unlink(fs.rootId, b('d')))).toBe('EISDIR');
    expect(await code(fs.rmdir(d, b('f')))).toBe('ENOTDIR');
    expect(await code(fs.unlink(d, b('nope')))).toBe('ENOENT');
    await fs.unlink(d, b('f'));
    await fs.rmdir(fs.rootId, b('d'));
    expect(await fs.readdir(fs.rootId)).toEqual([]);
    expect(await code(fs.getattr(d))).toBe('ENOENT');
  });

  it('rename: replace, noreplace, exchange, whiteout, directories between parents, under itself', async () => {
    const a = await mkfile(fs.rootId, 'a', 'A');
    const bb = await mkfile(fs.rootId, 'b', 'B');
    const d1 = await fs.mkdir(fs.rootId, b('d1'), { mode: S_IFDIR | 0o755, ...me });
    const d2 = await fs.mkdir(fs.rootId, b('d2'), { mode: S_IFDIR | 0o755, ...me });
    expect(await code(fs.rename(fs.rootId, b('a'), fs.rootId, b('b'), { noreplace: true }))).toBe('EEXIST');
    await fs.rename(fs.rootId, b('a'), fs.rootId, b('b'), { exchange: true });
    expect(await fs.lookup(fs.rootId, b('a'))).toBe(bb);
    expect(await fs.lookup(fs.rootId, b('b'))).toBe(a);
    expect(await code(fs.rename(fs.rootId, b('a'), fs.rootId, b('zz'), { exchange: true }))).toBe('ENOENT');
    expect(await code(fs.rename(fs.rootId, b('a'), fs.rootId, b('b'), { exchange: true, noreplace: true }))).toBe('EINVAL');
    await fs.rename(fs.rootId, b('b'), fs.rootId, b('a'));
    expect(await fs.lookup(fs.rootId, b('b'))).toBeNull();
    expect((await fs.read((await fs.lookup(fs.rootId, b('a'))) as number, 0, 9)).toString()).toBe('A');
    await fs.rename(fs.rootId, b('d1'), d2, b('moved'));
    expect(await fs.lookup(d2, b('moved'))).toBe(d1);
    expect((await fs.getattr(d2)).nlink).toBe(3);
    expect(await code(fs.rename(fs.rootId, b('d2'), d1, b('x')))).toBe('EINVAL');
    const c = await mkfile(d1, 'c', 'C');
    await fs.rename(d1, b('c'), fs.rootId, b('c'));
    expect(await fs.lookup(fs.rootId, b('c'))).toBe(c);
    expect(await fs.readdir(d1)).toEqual([]);
    if (isRoot) {
      await fs.rename(fs.rootId, b('c'), d1, b('c2'), { whiteout: { uid: 12, gid: 34 } });
      const wh = lstatSync(join(dir, 'c'));
      expect([wh.isCharacterDevice(), wh.rdev, wh.uid, wh.gid]).toEqual([true, 0, 12, 34]);
      const whId = await fs.lookup(fs.rootId, b('c'));
      expect((await fs.getattr(whId as number)).mode & S_IFMT).toBe(S_IFCHR);
    }
  });

  it('xattrs with byte names, create/replace flags, not-here as null', async () => {
    const f = await mkfile(fs.rootId, 'x');
    const name = Buffer.from('user.\xe9\xff', 'latin1');
    expect(await fs.getxattr(f, name)).toBeNull();
    await fs.setxattr(f, name, Buffer.from([1, 2, 3]), 'create');
    expect(await code(fs.setxattr(f, name, b('v'), 'create'))).toBe('EEXIST');
    expect(await code(fs.setxattr(f, b('user.none'), b('v'), 'replace'))).toBe('ENODATA');
    expect((await fs.getxattr(f, name))?.equals(Buffer.from([1, 2, 3]))).toBe(true);
    expect((await fs.listxattr(f)).some((n) => n.equals(name))).toBe(true);
    await fs.removexattr(f, name);
    expect(await code(fs.removexattr(f, name))).toBe('ENODATA');
    const d = await fs.mkdir(fs.rootId, b('d'), { mode: S_IFDIR | 0o755, ...me });
    await fs.setxattr(d, b('user.dir'), b('yes'));
    expect((await fs.getxattr(d, b('user.dir')))?.toString()).toBe('yes');
    if (isRoot) {
      const l = await fs.symlink(fs.rootId, b('l'), b('x'), me);
      await fs.setxattr(l, b('trusted.overlay.opaque'), b('y'));
      expect((await fs.getxattr(l, b('trusted.overlay.opaque')))?.toString()).toBe('y');
      expect(await fs.getxattr(f, b('trusted.overlay.opaque'))).toBeNull();
      const p = await fs.mknod(fs.rootId, b('p'), { mode: S_IFIFO | 0o644, ...me });
      await fs.setxattr(p, b('trusted.t'), b('fifo'));
      expect((await fs.getxattr(p, b('trusted.t')))?.toString()).toBe('fifo');
    }
  });

  it('dataRanges follows SEEK_DATA/SEEK_HOLE', async () => {
    const f = await mkfile(fs.rootId, 'sparse');
    await fs.write(f, 1 << 20, Buffer.alloc(8192, 1));
    await fs.truncate(f, 3 << 20);
    const ranges = await fs.dataRanges(f);
    expect(ranges.length).toBe(1);
    expect(ranges[0]!.offset).toBeLessThanOrEqual(1 << 20);
    expect(ranges[0]!.offset + ranges[0]!.length).toBeGreaterThanOrEqual((1 << 20) + 8192);
    expect(ranges[0]!.offset + ranges[0]!.length).toBeLessThan(3 << 20);
    expect(await fs.dataRanges(await mkfile(fs.rootId, 'empty'))).toEqual([]);
  });

  it('readdir snapshots: the same array while unchanged, a new one after a change here or by the host', async () => {
    await mkfile(fs.rootId, 'a');
    const first = await fs.readdir(fs.rootId);
    expect(await fs.readdir(fs.rootId)).toBe(first);
    expect(Object.isFrozen(first)).toBe(true);
    await mkfile(fs.rootId, 'b');
    const second = await fs.readdir(fs.rootId);
    expect(second).not.toBe(first);
    expect(second.length).toBe(2);
    await new Promise((r) => setTimeout(r, 20)); // a ctime tick apart from our own change
    writeFileSync(join(dir, 'host-made'), 'h');
    const third = await fs.readdir(fs.rootId);
    expect(third.map((e) => e.name.toString()).sort()).toEqual(['a', 'b', 'host-made']);
  });

  it('statfs is the host filesystem, fsync and sync succeed', async () => {
    const st = await fs.statfs();
    const host = (await import('node:fs')).statfsSync(dir);
    expect([st.bsize, st.blocks]).toEqual([host.bsize, host.blocks]);
    const f = await mkfile(fs.rootId, 'f', 'x');
    await fs.fsync(f, true);
    await fs.fsync(f, false);
    await fs.fsync(fs.rootId, false);
    await fs.sync();
  });

  it('closed fds are re-opened from where they were seen (small open cap), and checked to be the same inode', async () => {
    await fs.close();
    fs = DirLayer.open(dir, { writable: true, openCap: 4 });
    const d = await fs.mkdir(fs.rootId, b('d'), { mode: S_IFDIR | 0o755, ...me });
    const ids: InodeId[] = [];
    for (let i = 0; i < 20; i++) ids.push(await mkfile(d, `f${i}`, `content ${i}`));
    for (let i = 0; i < 20; i++) expect((await fs.read(ids[i]!, 0, 100)).toString()).toBe(`content ${i}`);
    await fs.rename(d, b('f3'), fs.rootId, b('moved3'));
    for (let i = 0; i < 10; i++) await fs.getattr(ids[10 + i]!); // push f3 out of the open set
    expect((await fs.read(ids[3]!, 0, 100)).toString()).toBe('content 3');
    // The host replaces f5 behind our back: the old id must not reach the new file.
    for (let i = 0; i < 10; i++) await fs.getattr(ids[10 + i]!);
    unlinkSync(join(dir, 'd', 'f5'));
    writeFileSync(join(dir, 'd', 'f5'), 'impostor');
    writeFileSync(join(dir, 'keep-inode-busy'), ''); // avoid the freed inode number coming straight back
    const got = await fs.read(ids[5]!, 0, 100).then(
      (x) => x.toString(),
      (e: FsError) => e.code,
    );
    expect(['ENOENT', 'content 5']).toContain(got);
    expect(got).not.toBe('impostor');
  });

  it('beyond the record cap the oldest unreferenced nodes are forgotten (ENOENT), referenced ones never', async () => {
    await fs.close();
    fs = DirLayer.open(dir, { writable: true, openCap: 2, recordCap: 5 });
    const d = await fs.mkdir(fs.rootId, b('d'), { mode: S_IFDIR | 0o755, ...me });
    await fs.ref(d);
    const kept = await mkfile(d, 'kept', 'k');
    await fs.ref(kept);
    const first = await fs.readdir(d);
    for (let i = 0; i < 30; i++) await mkfile(d, `f${i}`);
    const listing = await fs.readdir(d);
    expect(listing).not.toBe(first);
    expect(listing.length).toBe(31);
    const old = await fs.lookup(d, b('f0'));
    for (let i = 1; i < 30; i++) await fs.lookup(d, b(`f${i}`));
    expect(await code(fs.getattr(old as InodeId))).toBe('ENOENT');
    expect(await fs.lookup(d, b('f0'))).not.toBe(old); // a new id for the same file, never the old one
    expect((await fs.read(kept, 0, 10)).toString()).toBe('k');
    expect((await fs.readdir(d)).find((e) => e.name.equals(b('kept')))?.id).toBe(kept);
  });

  it('a read-only layer refuses every write with EROFS', async () => {
    writeFileSync(join(dir, 'f'), 'x');
    const ro = DirLayer.open(dir, { writable: false });
    try {
      const f = (await ro.lookup(ro.rootId, b('f'))) as InodeId;
      expect((await ro.read(f, 0, 1)).toString()).toBe('x');
      expect(ro.writable).toBe(false);
      expect(await code(ro.write(f, 0, b('y')))).toBe('EROFS');
      expect(await code(ro.mknod(ro.rootId, b('n'), { mode: S_IFREG | 0o644, ...me }))).toBe('EROFS');
      expect(await code(ro.setxattr(f, b('user.a'), b('')))).toBe('EROFS');
      expect(await code(ro.rename(ro.rootId, b('f'), ro.rootId, b('g')))).toBe('EROFS');
      expect(readFileSync(join(dir, 'f'), 'utf8')).toBe('x');
    } finally {
      await ro.close();
    }
  });

  it('concurrent operations leave a consistent tree', async () => {
    const d = await fs.mkdir(fs.rootId, b('c'), { mode: S_IFDIR | 0o755, ...me });
    await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const f = await mkfile(d, `n${i}`, `v${i}`);
        if (i % 2) await fs.rename(d, b(`n${i}`), d, b(`m${i}`));
        if (i % 5 === 0) await fs.unlink(d, b(i % 2 ? `m${i}` : `n${i}`));
        return f;
      }),
    );
    const names = (await fs.readdir(d)).map((e) => e.name.toString()).sort();
    expect(names.length).toBe(40);
    expect(names).toEqual(
      execFileSync('ls', ['-A', join(dir, 'c')], { encoding: 'utf8' })
        .trim()
        .split('\n')
        .sort(),
    );
  });
});

it('close releases every fd it opened (no leak across many nodes, data fds and evictions)', async () => {
  const count = (): number => readdirSync('/proc/self/fd').length;
  await fs.close();
  const before = count();
  fs = DirLayer.open(dir, { writable: true, openCap: 16 });
  const d = await fs.mkdir(fs.rootId, b('d'), { mode: S_IFDIR | 0o755, ...me });
  for (let i = 0; i < 100; i++) {
    const f = await mkfile(d, `f${i}`, 'x');
    await fs.read(f, 0, 1);
    if (i % 3 === 0) await fs.ref(f);
    if (i % 9 === 0) await fs.unlink(d, b(`f${i}`));
  }
  await fs.readdir(d);
  expect(count()).toBeLessThan(before + 16 * 2 + 34 * 2 + 10);
  await fs.close();
  expect(count()).toBe(before);
  fs = DirLayer.open(dir, { writable: true });
});

describe('openDirLayer', () => {
  it('writable: makes upper/ and work/, probes what it may write, picks the encoding', async () => {
    const layer = await openDirLayer(dir, { writable: true });
    try {
      expect(statSync(join(dir, 'upper')).isDirectory()).toBe(true);
      expect(statSync(join(dir, 'work')).isDirectory()).toBe(true);
      expect(await layer.fs.lookup(layer.fs.rootId, b('upper'))).toBe(layer.root);
      expect(await layer.fs.lookup(layer.fs.rootId, b('work'))).toBe(layer.work);
      expect(execFileSync('ls', ['-A', join(dir, 'work')], { encoding: 'utf8' })).toBe(''); // probes leave nothing
      if (isRoot) {
        expect(layer.capabilities).toEqual({ whiteoutDevice: true, renameWhiteout: true, trustedXattrs: true, userXattrs: true });
        expect(layer.encoding).toBe('kernel');
      } else {
        expect(layer.capabilities.trustedXattrs).toBe(false);
        expect(layer.encoding).toBe('fuse-overlayfs');
      }
      await layer.fs.mknod(layer.root, b('in-upper'), { mode: S_IFREG | 0o644, ...me });
      expect(existsSync(join(dir, 'upper', 'in-upper'))).toBe(true);
    } finally {
      await layer.fs.close();
    }
  });

  it('read-only: DIR/upper when present, else DIR; upper/ that is not a directory is refused', async () => {
    writeFileSync(join(dir, 'top'), '');
    let layer = await openDirLayer(dir, { writable: false });
    expect(layer.root).toBe(layer.fs.rootId);
    expect(layer.fs.writable).toBe(false);
    await layer.fs.close();
    mkdirSync(join(dir, 'upper'));
    layer = await openDirLayer(dir, { writable: false });
    expect(layer.root).toBe(await layer.fs.lookup(layer.fs.rootId, b('upper')));
    expect(existsSync(join(dir, 'work'))).toBe(false);
    await layer.fs.close();
    rmSync(join(dir, 'upper'), { recursive: true });
    symlinkSync('/', join(dir, 'upper'));
    await expect(openDirLayer(dir, { writable: true })).rejects.toThrow(/upper is not a directory/);
    await expect(openDirLayer(join(dir, 'missing'), { writable: true })).rejects.toThrow(/ENOENT/);
  });
});

it('host renames of directories keep ids pointing at the moved directory', async () => {
  mkdirSync(join(dir, 'x'));
  const x = (await fs.lookup(fs.rootId, b('x'))) as InodeId;
  await fs.ref(x);
  renameSync(join(dir, 'x'), join(dir, 'y'));
  await mkfile(x, 'inside');
  expect(existsSync(join(dir, 'y', 'inside'))).toBe(true);
});
