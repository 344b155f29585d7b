/**
 * MemLayer's own rules, beyond what the conformance suite compares with the
 * model: the byte cap (short writes then ENOSPC, every kind of metadata
 * counted, space given back), sparse files, lifetimes, statfs, times,
 * readdir snapshots and xattr names as bytes.
 */
import { describe, expect, it } from 'vitest';
import { S_IFCHR, S_IFDIR, S_IFREG, type InodeId } from '../../src/engine.js';
import { FsError, InternalError } from '../../src/errors.js';
import { DEFAULT_CAP_BYTES, DIRENT_BYTES, INODE_BYTES, MemLayer, XATTR_BYTES, openMemUpperLayer } from '../../src/layers/mem.js';
import { PAGE } from '../../src/layers/sparse-data.js';

const b = (s: string) => Buffer.from(s);
const file = { mode: S_IFREG | 0o644, uid: 0, gid: 0 };

async function errno(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof FsError) return e.code;
    throw e;
  }
  return 'ok';
}

async function mkfile(fs: MemLayer, name: string, dir: InodeId = fs.rootId): Promise<InodeId> {
  return fs.mknod(dir, b(name), file);
}

describe('MemLayer byte cap', () => {
  it('defaults to 64 MiB and statfs reports the cap and what is left', async () => {
    const fs = new MemLayer();
    expect(fs.capBytes).toBe(DEFAULT_CAP_BYTES);
    const before = await fs.statfs();
    expect(before).toMatchObject({ bsize: PAGE, frsize: PAGE, blocks: DEFAULT_CAP_BYTES / PAGE, namemax: 255 });
    const id = await mkfile(fs, 'f');
    await fs.write(id, 0, Buffer.alloc(10 * PAGE, 1));
    const after = await fs.statfs();
    // Ten pages, plus the inode and entry (289 bytes, on top of the root's 256: still within the eleventh page).
    expect(before.bfree - after.bfree).toBe(10);
    expect(after.bavail).toBe(after.bfree);
    expect(after.files).toBe(Math.floor(DEFAULT_CAP_BYTES / INODE_BYTES));
  });

  it('writes what fits, then ENOSPC; the file holds exactly the prefix written', async () => {
    const fs = new MemLayer({ capBytes: 64 * PAGE });
    const id = await mkfile(fs, 'f');
    const free = Math.floor((fs.capBytes - fs.usedBytes) / PAGE);
    const data = Buffer.alloc(100 * PAGE);
    for (let i = 0; i < data.length; i++) data[i] = i % 251;
    const n = await fs.write(id, 0, data);
    expect(n).toBe(free * PAGE);
    expect((await fs.getattr(id)).size).toBe(n);
    expect((await fs.read(id, 0, data.length)).equals(data.subarray(0, n))).toBe(true);
    expect(await errno(fs.write(id, n, b('x')))).toBe('ENOSPC');
    // Overwriting pages already allocated needs no space.
    expect(await fs.write(id, 0, b('overwrite'))).toBe(9);
    // A write that starts inside the last allocated page fills it, then stops.
    const last = n - 10;
    expect(await fs.write(id, last, Buffer.alloc(100, 7))).toBe(10);
    fs.verify();
  });

  it('counts inodes, names, symlink targets and xattrs; ENOSPC changes nothing; space comes back', async () => {
    const fs = new MemLayer({ capBytes: 4 * PAGE });
    const start = fs.usedBytes;
    const d = await fs.mkdir(fs.rootId, b('dir'), { mode: S_IFDIR | 0o755, uid: 0, gid: 0 });
    expect(fs.usedBytes - start).toBe(INODE_BYTES + DIRENT_BYTES + 3);
    const l = await fs.symlink(d, b('l'), b('t'.repeat(100)), { uid: 0, gid: 0 });
    expect(fs.usedBytes - start).toBe(2 * INODE_BYTES + 2 * DIRENT_BYTES + 4 + 100);
    await fs.setxattr(d, b('user.k'), Buffer.alloc(50));
    expect(fs.usedBytes - start).toBe(2 * INODE_BYTES + 2 * DIRENT_BYTES + 4 + 100 + XATTR_BYTES + 6 + 50);
    // Fill the rest with entries until ENOSPC.
    let i = 0;
    let code = 'ok';
    while (code === 'ok') code = await errno(fs.mknod(d, b(`n${i++}`), file));
    expect(code).toBe('ENOSPC');
    // The last bytes in one xattr value: now exactly full.
    await fs.setxattr(fs.rootId, b('user.fill'), Buffer.alloc(fs.capBytes - fs.usedBytes - XATTR_BYTES - 9));
    expect(fs.usedBytes).toBe(fs.capBytes);
    expect(await errno(fs.mknod(d, b('one-more'), file))).toBe('ENOSPC');
    const full = fs.usedBytes;
    const entries = (await fs.readdir(d)).length;
    expect(await errno(fs.setxattr(d, b('user.big'), Buffer.alloc(PAGE)))).toBe('ENOSPC');
    expect(await errno(fs.link(l, d, b('another-name-for-the-link')))).toBe('ENOSPC');
    expect(await errno(fs.rename(d, b('n0'), d, b('a-much-longer-name-than-before-'.repeat(4))))).toBe('ENOSPC');
    expect(await errno(fs.rename(d, b('n0'), fs.rootId, b('n0'), { whiteout: { uid: 0, gid: 0 } }))).toBe('ENOSPC');
    expect(fs.usedBytes).toBe(full);
    expect((await fs.readdir(d)).length).toBe(entries);
    expect(await fs.lookup(d, b('n0'))).not.toBeNull();
    // Removing gives the space back, to the byte.
    for (const e of await fs.readdir(d)) if (e.type === 'f') await fs.unlink(d, e.name);
    await fs.removexattr(d, b('user.k'));
    await fs.unlink(d, b('l'));
    await fs.rmdir(fs.rootId, b('dir'));
    await fs.removexattr(fs.rootId, b('user.fill'));
    expect(fs.usedBytes).toBe(start);
    fs.verify();
  });

  it('holes cost nothing: a byte at 1 GiB takes one page; dataRanges reports it; truncate frees and zeroes', async () => {
    const fs = new MemLayer({ capBytes: 16 * PAGE });
    const id = await mkfile(fs, 'sparse');
    const used = fs.usedBytes;
    const far = 2 ** 30 + 123;
    expect(await fs.write(id, far, b('x'))).toBe(1);
    expect(fs.usedBytes - used).toBe(PAGE);
    const st = await fs.getattr(id);
    expect(st.size).toBe(far + 1);
    expect(st.blocks).toBe(PAGE / 512);
    expect(await fs.dataRanges(id)).toEqual([{ offset: far - (far % PAGE), length: (far % PAGE) + 1 }]);
    expect((await fs.read(id, far - 5, 10)).equals(Buffer.from([0, 0, 0, 0, 0, 0x78]))).toBe(true);
    // Two pages side by side merge into one range; a page past the new size is freed.
    await fs.write(id, 0, Buffer.alloc(PAGE + 10, 9));
    expect((await fs.dataRanges(id)).slice(0, 1)).toEqual([{ offset: 0, length: 2 * PAGE }]);
    await fs.truncate(id, 100);
    expect(fs.usedBytes - used).toBe(PAGE);
    expect(await fs.dataRanges(id)).toEqual([{ offset: 0, length: 100 }]);
    // Growing again reads zeros where the old bytes were (the tail of the kept page was cleared).
    await fs.truncate(id, 300);
    const back = await fs.read(id, 0, 300);
    expect(back.subarray(0, 100).every((x) => x === 9)).toBe(true);
    expect(back.subarray(100).every((x) => x === 0)).toBe(true);
    await fs.truncate(id, 0);
    expect(fs.usedBytes).toBe(used);
    expect(await fs.dataRanges(id)).toEqual([]);
    fs.verify();
  });

  it('an unlinked open file stays readable and keeps its space until the last unref', async () => {
    const fs = new MemLayer({ capBytes: 32 * PAGE });
    const id = await mkfile(fs, 'f');
    await fs.write(id, 0, Buffer.alloc(8 * PAGE, 5));
    await fs.ref(id, 2);
    const used = fs.usedBytes;
    await fs.unlink(fs.rootId, b('f'));
    expect(fs.usedBytes).toBe(used - DIRENT_BYTES - 1);
    expect((await fs.getattr(id)).nlink).toBe(0);
    expect((await fs.read(id, 0, 4)).equals(Buffer.alloc(4, 5))).toBe(true);
    expect(await fs.write(id, 8 * PAGE, b('more'))).toBe(4);
    const other = await mkfile(fs, 'f');
    expect(other).not.toBe(id);
    await fs.unref(id);
    expect((await fs.read(id, 0, 1))[0]).toBe(5);
    await fs.unref(id);
    expect(await errno(fs.getattr(id))).toBe('ENOENT');
    expect(await errno(fs.ref(id))).toBe('ENOENT');
    await expect(fs.unref(id)).rejects.toBeInstanceOf(InternalError);
    fs.verify();
  });
});

describe('MemLayer semantics', () => {
  it('keeps nanosecond times, stamps changes with the clock, and generations tell inodes apart', async () => {
    let t = { sec: 1_700_000_000, nsec: 123_456_789 };
    const fs = new MemLayer({ now: () => t });
    const a = await mkfile(fs, 'a');
    const sa = await fs.getattr(a);
    expect([sa.mtime, sa.mtimeNsec, sa.ctimeNsec, sa.atimeNsec]).toEqual([1_700_000_000, 123_456_789, 123_456_789, 123_456_789]);
    t = { sec: 1_700_000_001, nsec: 5 };
    await fs.write(a, 0, b('x'));
    expect((await fs.getattr(a)).mtimeNsec).toBe(5);
    expect((await fs.getattr(fs.rootId)).mtimeNsec).toBe(123_456_789);
    await fs.setattr(a, { atime: { sec: 1, nsec: 2 }, mtime: { sec: 3, nsec: 999_999_999 } });
    const s2 = await fs.getattr(a);
    expect([s2.atime, s2.atimeNsec, s2.mtime, s2.mtimeNsec, s2.ctime, s2.ctimeNsec]).toEqual([
      1, 2, 3, 999_999_999, 1_700_000_001, 5,
    ]);
    const c = await mkfile(fs, 'c');
    expect((await fs.getattr(c)).generation).not.toBe(sa.generation);
    // Wall clock by default: now, with a sub-second part.
    const wall = new MemLayer();
    const w = await wall.getattr(await mkfile(wall, 'w'));
    expect(Math.abs(w.mtime - Date.now() / 1000)).toBeLessThan(60);
    expect(w.mtimeNsec).toBeGreaterThanOrEqual(0);
    expect(w.mtimeNsec).toBeLessThan(1e9);
  });

  it('readdir hands out one frozen snapshot until the directory changes', async () => {
    const fs = new MemLayer();
    for (let i = 0; i < 5; i++) await mkfile(fs, `f${i}`);
    const one = await fs.readdir(fs.rootId);
    expect(await fs.readdir(fs.rootId)).toBe(one);
    expect(Object.isFrozen(one)).toBe(true);
    expect(one.map((e) => e.name.toString())).toEqual(['f0', 'f1', 'f2', 'f3', 'f4']);
    await fs.unlink(fs.rootId, b('f2'));
    const two = await fs.readdir(fs.rootId);
    expect(two).not.toBe(one);
    expect(one.map((e) => e.name.toString())).toEqual(['f0', 'f1', 'f2', 'f3', 'f4']);
    expect(two.map((e) => e.name.toString())).toEqual(['f0', 'f1', 'f3', 'f4']);
  });

  it('xattr names are bytes; trusted.* is allowed; unknown namespaces and oversize names are refused', async () => {
    const fs = new MemLayer();
    const id = await mkfile(fs, 'x');
    const latin = Buffer.from([0x75, 0x73, 0x65, 0x72, 0x2e, 0xff, 0xfe]); // "user." + two bytes that are not UTF-8
    const utf8 = b('user.café');
    await fs.setxattr(id, latin, b('1'));
    await fs.setxattr(id, utf8, b('2'));
    await fs.setxattr(id, b('trusted.overlay.opaque'), b('y'));
    const names = await fs.listxattr(id);
    expect(names.map((n) => n.toString('hex')).sort()).toEqual(
      [latin, utf8, b('trusted.overlay.opaque')].map((n) => n.toString('hex')).sort(),
    );
    expect((await fs.getxattr(id, utf8))!.toString()).toBe('2');
    expect(await fs.getxattr(id, b('user.cafe'))).toBeNull();
    expect(await errno(fs.setxattr(id, b('bogus.x'), b('')))).toBe('EOPNOTSUPP');
    expect(await errno(fs.setxattr(id, b('user.'), b('')))).toBe('EINVAL');
    expect(await errno(fs.setxattr(id, b('user.' + 'n'.repeat(251)), b('')))).toBe('ERANGE');
    expect(await errno(fs.setxattr(id, b('user.v'), Buffer.alloc(65537)))).toBe('E2BIG');
    expect(await errno(fs.setxattr(id, utf8, b('3'), 'create'))).toBe('EEXIST');
    expect(await errno(fs.setxattr(id, b('user.none'), b('3'), 'replace'))).toBe('ENODATA');
    expect(await errno(fs.removexattr(id, b('user.none')))).toBe('ENODATA');
    fs.verify();
  });

  it('rename flags: noreplace, exchange across parents, whiteout as char 0/0 owned as asked', async () => {
    const fs = new MemLayer();
    const root = fs.rootId;
    const d = await fs.mkdir(root, b('d'), { mode: S_IFDIR | 0o755, uid: 0, gid: 0 });
    const f = await mkfile(fs, 'f');
    expect(await errno(fs.rename(root, b('f'), root, b('d'), { noreplace: true }))).toBe('EEXIST');
    expect(await errno(fs.rename(root, b('f'), root, b('gone'), { exchange: true }))).toBe('ENOENT');
    expect(await errno(fs.rename(root, b('f'), root, b('d'), { exchange: true, noreplace: true }))).toBe('EINVAL');
    const sub = await fs.mkdir(d, b('sub'), { mode: S_IFDIR | 0o700, uid: 0, gid: 0 });
    expect(await errno(fs.rename(root, b('d'), d, b('sub'), { exchange: true }))).toBe('EINVAL');
    await fs.rename(root, b('f'), d, b('sub'), { exchange: true });
    expect(await fs.lookup(root, b('f'))).toBe(sub);
    expect(await fs.lookup(d, b('sub'))).toBe(f);
    expect((await fs.getattr(d)).nlink).toBe(2);
    expect((await fs.getattr(root)).nlink).toBe(4);
    await fs.rename(d, b('sub'), root, b('moved'), { whiteout: { uid: 1000, gid: 100 } });
    const w = await fs.getattr((await fs.lookup(d, b('sub')))!);
    expect([w.mode, w.rdev, w.uid, w.gid, w.nlink]).toEqual([S_IFCHR, 0, 1000, 100, 1]);
    expect(await fs.lookup(root, b('moved'))).toBe(f);
    fs.verify();
  });

  it('openMemUpperLayer: upper/ and work/ owned by the caller, kernel whiteout encoding, the default cap', async () => {
    const layer = await openMemUpperLayer({ uid: 1000, gid: 1001 });
    expect(layer.encoding).toBe('kernel');
    expect(layer.fs.capBytes).toBe(DEFAULT_CAP_BYTES);
    expect(await layer.fs.lookup(layer.fs.rootId, b('upper'))).toBe(layer.root);
    expect(await layer.fs.lookup(layer.fs.rootId, b('work'))).toBe(layer.work);
    for (const id of [layer.root, layer.work]) {
      const st = await layer.fs.getattr(id);
      expect([st.mode, st.uid, st.gid]).toEqual([S_IFDIR | 0o755, 1000, 1001]);
    }
    layer.fs.verify();
  });

  it('refuses use after close', async () => {
    const fs = new MemLayer();
    await fs.close();
    await expect(fs.getattr(fs.rootId)).rejects.toBeInstanceOf(InternalError);
  });
});
