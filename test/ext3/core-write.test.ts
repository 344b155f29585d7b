import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { S_IFCHR, S_IFBLK, S_IFIFO, S_IFREG, S_IFSOCK, makedev } from '../../src/engine.js';
import { UnsupportedError } from '../../src/errors.js';
import { isRoot, makeTempDir, removeTempDir, skipNote } from '../tools/helpers.js';
import { b, debugfs, debugfsCat, expectFsckClean, manifest, mkfs, openImage, resolve } from './core-helpers.js';
import { execFileSync } from 'node:child_process';
import { itIf } from '../tools/skip.js';
import { loopMountSync, unmountSync } from '../tools/loop.js';

let dir: string;
beforeAll(() => {
  dir = makeTempDir('ext3-core-write');
});
afterAll(async () => {
  await removeTempDir(dir);
});

const REG = (perm = 0o644) => ({ mode: S_IFREG | perm, uid: 1000, gid: 1000 });

function image(name: string, sizeK = 8192, blockSize = 1024, inodeSize = 256): string {
  const p = join(dir, name);
  mkfs(p, { sizeK, blockSize, inodeSize });
  return p;
}

describe('Ext3Fs write path (checked by e2fsck -fn and debugfs)', () => {
  it('creates, links, symlinks, unlinks and removes, and the result survives reopening', async () => {
    const img = image('basic.img');
    let fs = await openImage(img, true);
    const r = fs.rootId;
    const a = await fs.mknod(r, b('a.txt'), REG());
    expect(await fs.write(a, 0, b('hello world\n'))).toBe(12);
    await fs.link(a, r, b('hard'));
    const d = await fs.mkdir(r, b('dir'), { mode: 0o750, uid: 5, gid: 6 });
    await fs.symlink(d, b('fast'), b('../a.txt'), { uid: 0, gid: 0 });
    const long = b('t/'.repeat(100));
    await fs.symlink(d, b('slow'), long, { uid: 0, gid: 0 });
    const e = await fs.mkdir(d, b('empty'), { mode: 0o755, uid: 0, gid: 0 });
    await expect(fs.mknod(r, b('a.txt'), REG())).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(fs.rmdir(r, b('dir'))).rejects.toMatchObject({ code: 'ENOTEMPTY' });
    await expect(fs.unlink(r, b('dir'))).rejects.toMatchObject({ code: 'EISDIR' });
    await expect(fs.link(d, r, b('dirlink'))).rejects.toMatchObject({ code: 'EPERM' });
    await expect(fs.mknod(r, Buffer.alloc(256, 0x61), REG())).rejects.toMatchObject({ code: 'ENAMETOOLONG' });
    expect((await fs.getattr(a)).nlink).toBe(2);
    expect((await fs.getattr(d)).nlink).toBe(3);
    expect((await fs.getattr(r)).nlink).toBe(4); // ., .., lost+found/.., dir/..
    expect((await fs.readlink(await (resolve(fs, 'dir/slow') as Promise<number>))).equals(long)).toBe(true);
    await fs.rmdir(d, b('empty'));
    await expect(fs.getattr(e)).rejects.toMatchObject({ code: 'ENOENT' });
    await fs.unlink(r, b('hard'));
    expect((await fs.getattr(a)).nlink).toBe(1);
    const before = await manifest(fs);
    await fs.close();
    expectFsckClean(img);
    expect(debugfs(img, 'ls -l /dir')).toMatch(/fast/);
    expect(debugfsCat(img, '/a.txt').toString()).toBe('hello world\n');
    expect(debugfs(img, 'stat /dir/slow')).toMatch(/Size: 200/);
    // A clean close leaves the journal empty and the filesystem clean.
    const dump = execFileSync('dumpe2fs', ['-h', img], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    expect(dump).toMatch(/Filesystem state:\s+clean/);
    expect(dump).not.toMatch(/needs_recovery/);
    expect(dump).toMatch(/Journal start:\s+0/);
    fs = await openImage(img, false);
    expect(await manifest(fs)).toEqual(before);
    await fs.close();
  });

  it('marks the image in use while open and clean after a close with no changes', async () => {
    const img = image('idle.img');
    const fs = await openImage(img, true);
    const dumpOpen = execFileSync('dumpe2fs', ['-h', img], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    expect(dumpOpen).toMatch(/needs_recovery/);
    await fs.close();
    const dump = execFileSync('dumpe2fs', ['-h', img], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    expect(dump).not.toMatch(/needs_recovery/);
    expect(dump).toMatch(/Journal start:\s+0/);
    expectFsckClean(img);
  });

  it('renames files and directories across parents, fixing ".." and link counts, with POSIX errors', async () => {
    const img = image('rename.img');
    const fs = await openImage(img, true);
    const r = fs.rootId;
    const A = await fs.mkdir(r, b('A'), { mode: 0o755, uid: 0, gid: 0 });
    const B = await fs.mkdir(r, b('B'), { mode: 0o755, uid: 0, gid: 0 });
    const C = await fs.mkdir(A, b('C'), { mode: 0o755, uid: 0, gid: 0 });
    const f = await fs.mknod(C, b('f'), REG());
    await fs.write(f, 0, b('x'));
    await expect(fs.rename(r, b('A'), C, b('loop'))).rejects.toMatchObject({ code: 'EINVAL' });
    await fs.rename(A, b('C'), B, b('C2'));
    expect((await fs.getattr(A)).nlink).toBe(2);
    expect((await fs.getattr(B)).nlink).toBe(3);
    // rename over an empty directory, over a non-empty one, file over dir, dir over file
    const E = await fs.mkdir(A, b('E'), { mode: 0o755, uid: 0, gid: 0 });
    await fs.rename(B, b('C2'), A, b('E'));
    await expect(fs.getattr(E)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await fs.lookup(A, b('E'))).toBe(C);
    expect((await fs.getattr(A)).nlink).toBe(3);
    expect((await fs.getattr(B)).nlink).toBe(2);
    const g = await fs.mknod(r, b('g'), REG());
    await expect(fs.rename(r, b('g'), r, b('A'))).rejects.toMatchObject({ code: 'EISDIR' });
    await expect(fs.rename(r, b('B'), r, b('g'))).rejects.toMatchObject({ code: 'ENOTDIR' });
    await expect(fs.rename(r, b('B'), r, b('A'))).rejects.toMatchObject({ code: 'ENOTEMPTY' });
    // file over file frees the old target; same-inode rename is a no-op
    const h = await fs.mknod(r, b('h'), REG());
    await fs.write(h, 0, Buffer.alloc(5000, 1));
    await fs.rename(r, b('g'), r, b('h'));
    await expect(fs.getattr(h)).rejects.toMatchObject({ code: 'ENOENT' });
    await fs.link(g, r, b('g2'));
    await fs.rename(r, b('g2'), r, b('h'));
    expect(await fs.lookup(r, b('g2'))).toBe(g);
    // a directory renamed within its parent
    await fs.rename(r, b('B'), r, b('B-renamed'));
    await fs.close();
    expectFsckClean(img);
    // debugfs `ls` prints "INODE  (REC_LEN) NAME" per entry: the moved directory's '..' names A.
    const entries = [...debugfs(img, 'ls /A/E').matchAll(/(\d+)\s+\(\d+\)\s+(\S+)/g)].map((m) => [m[2], Number(m[1])]);
    expect(entries).toContainEqual(['..', A]);
    expect(entries).toContainEqual(['.', C]);
    const st = debugfs(img, 'stat /A');
    expect(st).toMatch(/Links: 3/);
  });

  it('writes sparse files, crosses triple indirection past 4 GiB, and truncates freeing indirect blocks', async () => {
    const img = image('sparse.img', 16384);
    const fs = await openImage(img, true);
    const r = fs.rootId;
    const f = await fs.mknod(r, b('big'), REG());
    const far = 5 * 1024 ** 3 + 123; // logical block ~5.2M at 1 KiB: triple indirect
    await fs.write(f, 0, b('head'));
    await fs.write(f, 70_000 * 1024, b('double-indirect'));
    await fs.write(f, far, b('tail'));
    const st = await fs.getattr(f);
    expect(st.size).toBe(far + 4);
    // 3 data blocks + ind/dind chain for the middle one (dind + ind) + tind chain (tind + dind + ind)
    expect(st.blocks).toBe((3 + 2 + 3) * 2);
    expect((await fs.read(f, far - 2, 10)).equals(Buffer.concat([Buffer.alloc(2), b('tail')]))).toBe(true);
    expect((await fs.read(f, 4, 1000)).equals(Buffer.alloc(1000))).toBe(true);
    const freeBefore = (await fs.statfs()).bfree;
    await fs.truncate(f, 10);
    expect((await fs.getattr(f)).blocks).toBe(2);
    expect((await fs.statfs()).bfree).toBe(freeBefore + 7);
    // Growing again reads zeros past the old end (the tail of the block was zeroed).
    await fs.truncate(f, 3000);
    expect((await fs.read(f, 0, 3000)).equals(Buffer.concat([b('head'), Buffer.alloc(2996)]))).toBe(true);
    // An unaligned overwrite inside existing blocks and an extension in the same block.
    await fs.write(f, 2, b('XY'));
    await fs.write(f, 2999, b('ZZ'));
    const g = await fs.mknod(r, b('medium'), REG());
    const data = createHash('sha512').update('seed').digest();
    const chunks: Buffer[] = [];
    for (let i = 0; i < 3000; i++) chunks.push(data);
    const big = Buffer.concat(chunks); // 192000 bytes: direct + indirect + double indirect at 1 KiB
    await fs.write(g, 0, big);
    expect((await fs.read(g, 0, big.length)).equals(big)).toBe(true);
    await fs.close();
    expectFsckClean(img);
    expect(debugfsCat(img, '/medium').equals(big)).toBe(true);
    const head = debugfsCat(img, '/big');
    expect(head.length).toBe(3001);
    expect(head.subarray(0, 5).toString()).toBe('heXY\0');
    expect(head.subarray(2999).toString()).toBe('ZZ');
  });

  it('frees large files in steps (truncate and unlink), leaving exact counts', async () => {
    const img = image('bigfree.img', 65536);
    const fs = await openImage(img, true);
    const r = fs.rootId;
    const free0 = (await fs.statfs()).bfree;
    const chunk = Buffer.alloc(1 << 20, 0x42);
    const a = await fs.mknod(r, b('a'), REG());
    const c = await fs.mknod(r, b('c'), REG());
    for (let i = 0; i < 20; i++) {
      await fs.write(a, i * chunk.length, chunk);
      await fs.write(c, i * chunk.length, chunk);
    }
    await fs.truncate(a, 1000);
    expect((await fs.getattr(a)).blocks).toBe(2);
    expect((await fs.read(a, 0, 2000)).equals(chunk.subarray(0, 1000))).toBe(true);
    await fs.unlink(r, b('c'));
    await fs.unlink(r, b('a'));
    expect((await fs.statfs()).bfree).toBe(free0);
    await fs.close();
    expectFsckClean(img);
  });

  it('sets modes, owners and nanosecond times; makes devices (char 0/0), fifos and sockets', async () => {
    const img = image('attrs.img');
    const fs = await openImage(img, true);
    const r = fs.rootId;
    const wh = await fs.mknod(r, b('whiteout'), { mode: S_IFCHR, uid: 0, gid: 0, rdev: makedev(0, 0) });
    const tty = await fs.mknod(r, b('tty'), { mode: S_IFCHR | 0o620, uid: 0, gid: 5, rdev: makedev(4, 1) });
    const big = await fs.mknod(r, b('bigdev'), { mode: S_IFBLK | 0o660, uid: 0, gid: 6, rdev: makedev(259, 70000) });
    await fs.mknod(r, b('fifo'), { mode: S_IFIFO | 0o600, uid: 1, gid: 1 });
    await fs.mknod(r, b('sock'), { mode: S_IFSOCK | 0o755, uid: 1, gid: 1 });
    const f = await fs.mknod(r, b('f'), REG(0o600));
    await fs.setattr(f, {
      mode: 0o4755,
      uid: 70000,
      gid: 80000,
      atime: { sec: 1_000_000_000, nsec: 5 },
      mtime: { sec: 1_600_000_000, nsec: 123_456_789 },
    });
    const st = await fs.getattr(f);
    expect(st.mode).toBe(S_IFREG | 0o4755);
    expect([st.uid, st.gid, st.mtime, st.mtimeNsec, st.atime, st.atimeNsec]).toEqual([
      70000, 80000, 1_600_000_000, 123_456_789, 1_000_000_000, 5,
    ]);
    expect((await fs.getattr(wh)).rdev).toBe(0);
    expect((await fs.getattr(tty)).rdev).toBe(makedev(4, 1));
    expect((await fs.getattr(big)).rdev).toBe(makedev(259, 70000));
    await fs.close();
    expectFsckClean(img);
    expect(debugfs(img, 'stat /whiteout')).toMatch(/Type: character special/);
    expect(debugfs(img, 'stat /whiteout')).toMatch(/Device major\/minor number: 00:00/);
    expect(debugfs(img, 'stat /bigdev')).toMatch(/Device major\/minor number: 259:70000/);
    const fst = debugfs(img, 'stat /f');
    expect(fst).toMatch(/User: 70000\s+Group: 80000/);
    expect(fst).toMatch(/mtime: 0x5f5e1000:1d6f3454/); // 1600000000 s, 123456789 ns << 2
    expect(debugfs(img, 'stat /sock')).toMatch(/Type: socket/);
  });

  it('keeps xattrs in the inode first, then in a block, and stores POSIX ACLs in ext3 form', async () => {
    for (const inodeSize of [256, 128]) {
      const img = image(`xattr-${inodeSize}.img`, 8192, 1024, inodeSize);
      const fs = await openImage(img, true);
      const r = fs.rootId;
      const f = await fs.mknod(r, b('f'), REG());
      await fs.setxattr(f, Buffer.from('user.small'), b('v'));
      await fs.setxattr(f, Buffer.from('trusted.overlay.opaque'), b('y'));
      await fs.setxattr(f, Buffer.from('user.big'), Buffer.alloc(300, 7));
      await expect(fs.setxattr(f, Buffer.from('user.small'), b('w'), 'create')).rejects.toMatchObject({ code: 'EEXIST' });
      await expect(fs.setxattr(f, Buffer.from('user.none'), b('w'), 'replace')).rejects.toMatchObject({ code: 'ENODATA' });
      await expect(fs.removexattr(f, Buffer.from('user.none'))).rejects.toMatchObject({ code: 'ENODATA' });
      await expect(fs.setxattr(f, Buffer.from('user.huge'), Buffer.alloc(2000))).rejects.toMatchObject({ code: 'ENOSPC' });
      const acl = Buffer.alloc(4 + 8 * 4);
      acl.writeUInt32LE(2, 0);
      const ents: [number, number, number][] = [
        [1, 7, 0xffffffff],
        [2, 5, 1234],
        [4, 5, 0xffffffff],
        [0x10, 5, 0xffffffff],
      ];
      ents.forEach(([tag, perm, id], i) => {
        acl.writeUInt16LE(tag, 4 + 8 * i);
        acl.writeUInt16LE(perm, 6 + 8 * i);
        acl.writeUInt32LE(id, 8 + 8 * i);
      });
      const acl5 = Buffer.concat([acl, Buffer.from([0x20, 0, 4, 0, 0xff, 0xff, 0xff, 0xff])]);
      acl5.writeUInt32LE(2, 0);
      await fs.setxattr(f, Buffer.from('system.posix_acl_access'), acl5);
      expect((await fs.getxattr(f, Buffer.from('system.posix_acl_access')))!.equals(acl5)).toBe(true);
      // The access ACL sets the mode (group bits from the mask), and chmod rewrites the ACL.
      expect((await fs.getattr(f)).mode & 0o777).toBe(0o754);
      await fs.setattr(f, { mode: 0o640 });
      const chmodded = (await fs.getxattr(f, Buffer.from('system.posix_acl_access')))!;
      const perms = new Map<number, number>();
      for (let o = 4; o < chmodded.length; o += 8) perms.set(chmodded.readUInt16LE(o), chmodded.readUInt16LE(o + 2));
      expect([perms.get(1), perms.get(0x10), perms.get(0x20), perms.get(2)]).toEqual([6, 4, 0, 5]);
      expect((await fs.listxattr(f)).map(String).sort()).toEqual([
        'system.posix_acl_access',
        'trusted.overlay.opaque',
        'user.big',
        'user.small',
      ]);
      // An ACL the mode fully expresses is not stored: it only sets the mode.
      const g = await fs.mknod(r, b('g'), REG());
      const plain = Buffer.alloc(4 + 24);
      plain.writeUInt32LE(2, 0);
      [
        [1, 7],
        [4, 0],
        [0x20, 1],
      ].forEach(([tag, perm], i) => {
        plain.writeUInt16LE(tag!, 4 + 8 * i);
        plain.writeUInt16LE(perm!, 6 + 8 * i);
        plain.writeUInt32LE(0xffffffff, 8 + 8 * i);
      });
      await fs.setxattr(g, Buffer.from('system.posix_acl_access'), plain);
      expect(await fs.listxattr(g)).toEqual([]);
      expect((await fs.getattr(g)).mode & 0o777).toBe(0o701);
      expect((await fs.getxattr(f, Buffer.from('user.big')))!.equals(Buffer.alloc(300, 7))).toBe(true);
      const withBlock = (await fs.getattr(f)).blocks;
      expect(withBlock).toBe(2); // the xattr block
      await fs.removexattr(f, Buffer.from('user.big'));
      expect(await fs.getxattr(f, Buffer.from('user.big'))).toBeNull();
      await fs.setxattr(f, Buffer.from('user.small'), b('changed'));
      expect((await fs.getxattr(f, Buffer.from('user.small')))!.toString()).toBe('changed');
      // Filling the in-inode area to the byte: the end marker must still fit (found by the property tests).
      const d = await fs.mkdir(r, b('d'), { mode: 0o755, uid: 0, gid: 0 });
      await fs.setxattr(d, Buffer.from(`user.${'n'.repeat(40)}`), Buffer.alloc(0));
      await fs.setxattr(d, Buffer.from('trusted.overlay.opaque'), b('\x00\xff\x00\xff'));
      await fs.setxattr(d, Buffer.from('user.a'), Buffer.alloc(64, 0xab));
      expect((await fs.listxattr(d)).length).toBe(3);
      await fs.close();
      expectFsckClean(img);
      expect(debugfs(img, 'ea_get /f user.small')).toMatch(/changed/);
    }
  });

  if (!isRoot) skipNote('shared xattr block test', 'needs root for a kernel loop mount to make shared blocks');
  itIf(isRoot, 'a kernel loop mount makes the shared xattr blocks: needs root')(
    'copies a shared xattr block on write (kernel-made sharing)',
    async () => {
      const img = image('shared.img', 8192, 1024, 128);
      const mnt = join(dir, 'mnt-shared');
      execFileSync('mkdir', ['-p', mnt]);
      loopMountSync(img, mnt, { type: 'ext3' });
      try {
        for (const n of ['one', 'two', 'three']) {
          execFileSync('touch', [join(mnt, n)]);
          execFileSync('setfattr', ['-n', 'user.same', '-v', 'identical-value', join(mnt, n)]);
        }
      } finally {
        unmountSync(mnt);
      }
      expect(debugfs(img, 'stat /one')).toMatch(/File ACL: (\d+)/);
      const blk = /File ACL: (\d+)/.exec(debugfs(img, 'stat /one'))![1];
      expect(/File ACL: (\d+)/.exec(debugfs(img, 'stat /two'))![1]).toBe(blk);
      const fs = await openImage(img, true);
      const two = (await resolve(fs, 'two'))!;
      await fs.setxattr(two, Buffer.from('user.other'), b('x'));
      const three = (await resolve(fs, 'three'))!;
      await fs.removexattr(three, Buffer.from('user.same'));
      expect((await fs.getxattr((await resolve(fs, 'one'))!, Buffer.from('user.same')))!.toString()).toBe('identical-value');
      await fs.close();
      expectFsckClean(img);
      expect(/File ACL: (\d+)/.exec(debugfs(img, 'stat /two'))![1]).not.toBe(blk);
      expect(/File ACL: (\d+)/.exec(debugfs(img, 'stat /one'))![1]).toBe(blk);
    },
  );

  it('keeps an unlinked open file until release, and frees orphans left by a crash', async () => {
    const img = image('orphan.img');
    const fs = await openImage(img, true);
    const r = fs.rootId;
    const f = await fs.mknod(r, b('open'), REG());
    await fs.write(f, 0, Buffer.alloc(50_000, 3));
    await fs.ref(f);
    await fs.unlink(r, b('open'));
    expect((await fs.read(f, 49_990, 100)).length).toBe(10);
    await fs.sync();
    // The image as a crash right now would leave it: the orphan list holds the file.
    const crashed = join(dir, 'orphan-crash.img');
    copyFileSync(img, crashed);
    const free1 = (await fs.statfs()).bfree;
    await fs.unref(f);
    expect((await fs.statfs()).bfree).toBeGreaterThan(free1);
    await fs.close();
    expectFsckClean(img);
    const again = await openImage(crashed, true);
    expect(await again.lookup(again.rootId, b('open'))).toBeNull();
    await again.close();
    expectFsckClean(crashed);
  });

  it('commits on its own within the commit interval: a crash after it loses nothing', async () => {
    const img = image('timer.img');
    const fs = await openImage(img, true, { commitIntervalMs: 100 });
    const f = await fs.mknod(fs.rootId, b('kept'), REG());
    await fs.write(f, 0, b('durable without fsync'));
    const commits = fs.stats.commits;
    await new Promise((res) => setTimeout(res, 600));
    expect(fs.stats.commits).toBeGreaterThan(commits);
    const crashed = join(dir, 'timer-crash.img');
    copyFileSync(img, crashed);
    await fs.close();
    const again = await openImage(crashed, true);
    const id = (await again.lookup(again.rootId, b('kept')))!;
    expect((await again.read(id, 0, 100)).toString()).toBe('durable without fsync');
    await again.close();
    expectFsckClean(crashed);
  });

  it('sets large_file when a file passes 2 GiB on an image without it', async () => {
    const img = join(dir, 'nolarge.img');
    mkfs(img, { sizeK: 8192, extra: ['-O', '^large_file'] });
    expect(debugfs(img, 'features')).not.toMatch(/large_file/);
    const fs = await openImage(img, true);
    const f = await fs.mknod(fs.rootId, b('big'), REG());
    await fs.write(f, 3 * 1024 ** 3, b('x'));
    await fs.close();
    expectFsckClean(img);
    expect(debugfs(img, 'features')).toMatch(/large_file/);
  });

  it('serialises concurrent operations', async () => {
    const img = image('concurrent.img');
    const fs = await openImage(img, true);
    const r = fs.rootId;
    const ops: Promise<unknown>[] = [];
    for (let i = 0; i < 200; i++) {
      ops.push(
        fs.mknod(r, b(`f${i}`), REG()).then(async (id) => {
          await fs.write(id, i * 100, Buffer.alloc(1500, i & 0xff));
          if (i % 3 === 0) await fs.setxattr(id, Buffer.from('user.i'), b(String(i)));
          if (i % 5 === 0) await fs.rename(r, b(`f${i}`), r, b(`g${i}`));
          if (i % 7 === 0) await fs.unlink(r, b(i % 5 === 0 ? `g${i}` : `f${i}`));
        }),
      );
      if (i % 10 === 0) ops.push(fs.mkdir(r, b(`d${i}`), { mode: 0o755, uid: 0, gid: 0 }));
    }
    await Promise.all(ops);
    const names = (await fs.readdir(r)).map((e) => e.name.toString()).sort();
    const expected = ['lost+found'];
    for (let i = 0; i < 200; i++) {
      if (i % 7 !== 0) expected.push(i % 5 === 0 ? `g${i}` : `f${i}`);
      if (i % 10 === 0) expected.push(`d${i}`);
    }
    expect(names).toEqual(expected.sort());
    const f13 = (await fs.lookup(r, b('f13')))!;
    expect((await fs.read(f13, 1300, 1500)).equals(Buffer.alloc(1500, 13))).toBe(true);
    await fs.close();
    expectFsckClean(img);
  });

  it('refuses writes when read-only and features it cannot write, leaving the image untouched', async () => {
    const img = image('ro.img');
    const ro = await openImage(img, false);
    await expect(ro.mknod(ro.rootId, b('x'), REG())).rejects.toMatchObject({ code: 'EROFS' });
    await ro.close();
    const ext4 = join(dir, 'ext4.img');
    const src = join(dir, 'ext4-src');
    execFileSync('mkdir', ['-p', src]);
    execFileSync('sh', ['-c', `seq 1 20000 > ${src}/numbers`]);
    execFileSync('mkfs.ext4', ['-q', '-F', '-d', src, ext4, '8M']);
    const hash = () => createHash('sha256').update(readFileSync(ext4)).digest('hex');
    const before = hash();
    const err = await openImage(ext4, true).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnsupportedError);
    expect((err as UnsupportedError).describe()).toMatch(new RegExp(`^${ext4}: .*(64bit|flex_bg|metadata_csum|extent)`));
    expect(hash()).toBe(before);
    // Extent-mapped files of an ext4 image read fine (read-only): not with metadata_csum/64bit though.
    const ext4ro = join(dir, 'ext4-plain.img');
    execFileSync('mkfs.ext4', [
      '-q',
      '-F',
      '-O',
      '^metadata_csum,^64bit,^flex_bg,^huge_file,^dir_nlink,^extra_isize,^metadata_csum_seed,^orphan_file',
      '-d',
      src,
      ext4ro,
      '8M',
    ]);
    const fs = await openImage(ext4ro, false).catch((e: unknown) => e);
    if (fs instanceof Error) throw fs;
    const rfs = fs as Awaited<ReturnType<typeof openImage>>;
    const id = (await rfs.lookup(rfs.rootId, b('numbers')))!;
    const st = await rfs.getattr(id);
    expect((await rfs.read(id, 0, st.size)).equals(readFileSync(join(src, 'numbers')))).toBe(true);
    await rfs.close();
  });
});
