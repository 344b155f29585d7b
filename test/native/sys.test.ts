import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  closeSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
  mkdirSync,
  writeSync,
  readlinkSync,
  lstatSync,
  statfsSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { isProcfs, isSysError, ofdLock, ofdUnlock, procFdPath, sys } from '../../src/native/sys.js';
import { devMajor, devMinor, makedev, S_IFCHR, S_IFIFO, S_IFMT, S_IFREG } from '../../src/engine.js';
import { skipBecause } from '../tools/skip.js';

const s = sys();
const c = s.constants;
const isRoot = process.getuid?.() === 0;
let dir: string;
let dfd: number;

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (isSysError(err)) return err.code;
    throw err;
  }
  return 'no error';
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sifuse-sys-'));
  dfd = s.openat2(c.AT_FDCWD, dir, c.O_PATH | c.O_DIRECTORY, 0, 0);
});
afterAll(() => {
  closeSync(dfd);
  rmSync(dir, { recursive: true, force: true });
});

describe('errors', () => {
  it('throws an Error with the errno name, number and syscall', () => {
    let caught: unknown;
    try {
      s.openat2(dfd, 'missing', c.O_RDONLY, 0, c.RESOLVE_BENEATH);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(Error);
    expect(isSysError(caught, 'ENOENT')).toBe(true);
    expect((caught as { errno: number }).errno).toBe(2);
    expect((caught as { syscall: string }).syscall).toBe('openat2');
    expect((caught as Error).message).toBe('ENOENT: No such file or directory, openat2');
  });

  it('refuses bad arguments with TypeError, NUL in paths with EINVAL, long paths with ENAMETOOLONG', () => {
    expect(() => s.openat2(dfd, 'x', 0.5, 0, 0)).toThrow(TypeError);
    expect(() => s.openat2('3' as unknown as number, 'x', 0, 0, 0)).toThrow(TypeError);
    expect(() => (s.mkdirat as unknown as (a: number) => void)(dfd)).toThrow(TypeError);
    expect(() => s.fsetxattr(dfd, 'user.a', 'str' as unknown as Buffer, 0)).toThrow(TypeError);
    expect(code(() => s.mkdirat(dfd, Buffer.from('a\0b'), 0o755))).toBe('EINVAL');
    expect(code(() => s.mkdirat(dfd, 'a\0b', 0o755))).toBe('EINVAL');
    expect(code(() => s.mkdirat(dfd, 'x'.repeat(5000), 0o755))).toBe('ENAMETOOLONG');
    expect(code(() => s.fgetxattr(dfd, 'user.' + 'x'.repeat(300)))).toBe('ERANGE');
  });
});

describe('openat2 resolve flags', () => {
  beforeAll(() => {
    mkdirSync(join(dir, 'beneath'));
    writeFileSync(join(dir, 'beneath', 'f'), 'inside');
    symlinkSync('/etc', join(dir, 'beneath', 'abs'));
    symlinkSync('../beneath/f', join(dir, 'beneath', 'rel-up'));
    symlinkSync('f', join(dir, 'beneath', 'rel'));
  });

  it('RESOLVE_BENEATH refuses .., absolute paths and absolute symlinks with EXDEV', () => {
    const b = s.openat2(dfd, 'beneath', c.O_PATH | c.O_DIRECTORY, 0, c.RESOLVE_BENEATH);
    try {
      const beneath = c.RESOLVE_BENEATH | c.RESOLVE_NO_MAGICLINKS;
      expect(code(() => s.openat2(b, '../beneath/f', c.O_RDONLY, 0, beneath))).toBe('EXDEV');
      expect(code(() => s.openat2(b, '/etc/passwd', c.O_RDONLY, 0, beneath))).toBe('EXDEV');
      expect(code(() => s.openat2(b, 'abs/passwd', c.O_RDONLY, 0, beneath))).toBe('EXDEV');
      expect(code(() => s.openat2(b, 'rel-up', c.O_RDONLY, 0, beneath))).toBe('EXDEV');
      const fd = s.openat2(b, 'rel', c.O_RDONLY, 0, beneath);
      expect(readFileSync(fd, 'utf8')).toBe('inside');
      closeSync(fd);
      expect(code(() => s.openat2(b, 'rel', c.O_RDONLY, 0, beneath | c.RESOLVE_NO_SYMLINKS))).toBe('ELOOP');
      expect(code(() => s.openat2(c.AT_FDCWD, '/proc/self/fd/0', c.O_RDONLY, 0, c.RESOLVE_NO_MAGICLINKS))).toBe('ELOOP');
    } finally {
      closeSync(b);
    }
  });

  it('creates with mode, O_EXCL gives EEXIST, O_PATH|O_NOFOLLOW opens a symlink itself', () => {
    const fd = s.openat2(dfd, 'created', c.O_CREAT | c.O_EXCL | c.O_WRONLY, 0o640, c.RESOLVE_BENEATH);
    closeSync(fd);
    expect(statSync(join(dir, 'created')).mode & 0o7777).toBe(0o640 & ~process.umask());
    expect(code(() => s.openat2(dfd, 'created', c.O_CREAT | c.O_EXCL | c.O_WRONLY, 0o640, 0))).toBe('EEXIST');
    const l = s.openat2(dfd, 'beneath/abs', c.O_PATH | c.O_NOFOLLOW, 0, c.RESOLVE_BENEATH);
    expect(s.readlinkat(l, '').toString()).toBe('/etc');
    expect(s.fstatat(l, '', c.AT_EMPTY_PATH).mode & S_IFMT).toBe(0o120000);
    expect(code(() => s.reopen(l, c.O_RDONLY))).toBe('ELOOP');
    closeSync(l);
  });
});

describe('namespace calls', () => {
  it('mkdirat, mknodat (fifo, regular), symlinkat, readlinkat, linkat, renameat2 flags, unlinkat', () => {
    s.mkdirat(dfd, 'ns', 0o755);
    expect(code(() => s.mkdirat(dfd, 'ns', 0o755))).toBe('EEXIST');
    const ns = s.openat2(dfd, 'ns', c.O_PATH | c.O_DIRECTORY, 0, c.RESOLVE_BENEATH);
    try {
      s.mknodat(ns, 'fifo', S_IFIFO | 0o644, 0);
      expect(lstatSync(join(dir, 'ns', 'fifo')).isFIFO()).toBe(true);
      s.mknodat(ns, 'reg', S_IFREG | 0o600, 0);
      expect(lstatSync(join(dir, 'ns', 'reg')).isFile()).toBe(true);
      const target = Buffer.from([0x2e, 0x2f, 0xff, 0xfe]);
      s.symlinkat(target, ns, 'link');
      expect(s.readlinkat(ns, 'link').equals(target)).toBe(true);
      expect(code(() => s.readlinkat(ns, 'reg'))).toBe('EINVAL');
      s.linkat(ns, 'reg', ns, 'reg2', 0);
      expect(lstatSync(join(dir, 'ns', 'reg')).nlink).toBe(2);
      // Link an inode by its fd, no name involved (works unprivileged).
      const r = s.openat2(ns, 'reg', c.O_PATH | c.O_NOFOLLOW, 0, c.RESOLVE_BENEATH);
      s.linkat(c.AT_FDCWD, procFdPath(r), ns, 'reg3', c.AT_SYMLINK_FOLLOW);
      closeSync(r);
      expect(lstatSync(join(dir, 'ns', 'reg')).nlink).toBe(3);

      expect(code(() => s.renameat2(ns, 'reg', ns, 'fifo', c.RENAME_NOREPLACE))).toBe('EEXIST');
      s.renameat2(ns, 'reg', ns, 'fifo', c.RENAME_EXCHANGE);
      expect(lstatSync(join(dir, 'ns', 'fifo')).isFile()).toBe(true);
      expect(lstatSync(join(dir, 'ns', 'reg')).isFIFO()).toBe(true);
      expect(code(() => s.renameat2(ns, 'missing', ns, 'reg', c.RENAME_EXCHANGE))).toBe('ENOENT');
      s.renameat2(ns, 'reg', ns, 'moved', c.RENAME_NOREPLACE);
      if (isRoot) {
        s.renameat2(ns, 'moved', ns, 'moved2', c.RENAME_WHITEOUT);
        const wh = lstatSync(join(dir, 'ns', 'moved'));
        expect(wh.isCharacterDevice() && wh.rdev === 0).toBe(true);
      }
      s.unlinkat(ns, 'fifo', 0);
      expect(code(() => s.unlinkat(ns, 'fifo', 0))).toBe('ENOENT');
      s.mkdirat(ns, 'sub', 0o700);
      expect(code(() => s.unlinkat(ns, 'sub', 0))).toBe('EISDIR');
      s.unlinkat(ns, 'sub', c.AT_REMOVEDIR);
      expect(code(() => s.unlinkat(dfd, 'ns', c.AT_REMOVEDIR))).toBe('ENOTEMPTY');
    } finally {
      closeSync(ns);
    }
  });

  it('mknodat makes device nodes with the makedev number (root)', (ctx) => {
    if (!isRoot) skipBecause(ctx, 'mknod of a device needs root');
    s.mknodat(dfd, 'dev', S_IFCHR | 0o600, makedev(259, 70000));
    const st = s.fstatat(dfd, 'dev', c.AT_SYMLINK_NOFOLLOW);
    expect(st.mode & S_IFMT).toBe(S_IFCHR);
    expect([devMajor(st.rdev), devMinor(st.rdev)]).toEqual([259, 70000]);
    expect(lstatSync(join(dir, 'dev')).rdev).toBe(st.rdev);
  });
});

describe('metadata calls', () => {
  it('fstatat returns every field with nanoseconds; utimensat sets ns, UTIME_OMIT keeps, UTIME_NOW sets now', () => {
    writeFileSync(join(dir, 'times'), 'abc');
    s.utimensat(dfd, 'times', 1000, 123456789, 2000, 987654321, 0);
    let st = s.fstatat(dfd, 'times', c.AT_SYMLINK_NOFOLLOW);
    const node = statSync(join(dir, 'times'), { bigint: true });
    expect(st.ino).toBe(Number(node.ino));
    expect(st.dev).toBe(Number(node.dev));
    expect([st.atime, st.atimeNsec, st.mtime, st.mtimeNsec]).toEqual([1000, 123456789, 2000, 987654321]);
    expect(st.size).toBe(3);
    expect(st.nlink).toBe(1);
    expect(st.ctimeNsec).toBe(Number(node.ctimeNs % 1_000_000_000n));
    s.utimensat(dfd, 'times', 0, c.UTIME_OMIT, 5, 6, 0);
    st = s.fstatat(dfd, 'times', 0);
    expect([st.atime, st.atimeNsec, st.mtime, st.mtimeNsec]).toEqual([1000, 123456789, 5, 6]);
    s.utimensat(dfd, 'times', 0, c.UTIME_NOW, 0, c.UTIME_OMIT, 0);
    st = s.fstatat(dfd, 'times', 0);
    expect(Math.abs(st.atime - Date.now() / 1000)).toBeLessThan(3600);
    expect(st.mtime).toBe(5);
    expect(() => s.utimensat(dfd, 'times', 0, 1e9, 0, 0, 0)).toThrow(TypeError);
    expect(code(() => s.fstatat(dfd, 'nope', 0))).toBe('ENOENT');
  });

  it('fchmodat / fchmod / fchownat on O_PATH fds and paths', () => {
    writeFileSync(join(dir, 'perm'), '');
    const p = s.openat2(dfd, 'perm', c.O_PATH | c.O_NOFOLLOW, 0, c.RESOLVE_BENEATH);
    s.fchmodat(p, '', 0o4751, c.AT_EMPTY_PATH);
    expect(statSync(join(dir, 'perm')).mode & 0o7777).toBe(0o4751);
    s.fchmodat(dfd, 'perm', 0o600, 0);
    expect(statSync(join(dir, 'perm')).mode & 0o7777).toBe(0o600);
    const real = s.reopen(p, c.O_RDONLY);
    s.fchmod(real, 0o644);
    expect(statSync(join(dir, 'perm')).mode & 0o7777).toBe(0o644);
    expect(code(() => s.fchmod(p, 0o600))).toBe('EBADF');
    closeSync(real);
    symlinkSync('perm', join(dir, 'permlink'));
    expect(code(() => s.fchmodat(dfd, 'permlink', 0o600, c.AT_SYMLINK_NOFOLLOW))).toBe('EOPNOTSUPP');
    const me = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
    s.fchownat(p, '', -1, me.gid, c.AT_EMPTY_PATH);
    if (isRoot) {
      s.fchownat(p, '', 1234, 5678, c.AT_EMPTY_PATH);
      expect([statSync(join(dir, 'perm')).uid, statSync(join(dir, 'perm')).gid]).toEqual([1234, 5678]);
      s.fchownat(dfd, 'permlink', 42, 43, c.AT_SYMLINK_NOFOLLOW);
      expect(lstatSync(join(dir, 'permlink')).uid).toBe(42);
      expect(statSync(join(dir, 'perm')).uid).toBe(1234);
    } else {
      expect(code(() => s.fchownat(p, '', 1234, -1, c.AT_EMPTY_PATH))).toBe('EPERM');
    }
    closeSync(p);
  });

  it('fstatfs describes the host filesystem; isProcfs', () => {
    const f = s.fstatfs(dfd);
    const node = statfsSync(dir);
    expect(f.bsize).toBe(node.bsize);
    expect(f.blocks).toBe(node.blocks);
    expect(f.type).toBe(node.type);
    expect(f.namemax).toBeGreaterThan(0);
    expect(isProcfs()).toBe(true);
  });
});

describe('readdir', () => {
  it('lists raw names as Buffers with d_type and inode, without . and ..', () => {
    s.mkdirat(dfd, 'rd', 0o755);
    const rd = s.openat2(dfd, 'rd', c.O_PATH | c.O_DIRECTORY, 0, c.RESOLVE_BENEATH);
    const odd = Buffer.from([0x66, 0xff, 0x0a, 0x80]);
    s.mknodat(rd, odd, S_IFREG | 0o644, 0);
    s.mkdirat(rd, 'd', 0o755);
    s.symlinkat('x', rd, 'l');
    const list = s.readdir(rd);
    closeSync(rd);
    const byName = new Map(list.map((e) => [e.name.toString('latin1'), e]));
    expect([...byName.keys()].sort()).toEqual(['d', 'f\xff\n\x80', 'l'].sort());
    expect(byName.get('f\xff\n\x80')?.name.equals(odd)).toBe(true);
    expect(byName.get('d')?.type).toBe(c.DT_DIR);
    expect(byName.get('l')?.type).toBe(c.DT_LNK);
    expect(byName.get('d')?.ino).toBe(lstatSync(join(dir, 'rd', 'd')).ino);
    expect(code(() => s.readdir(s.openat2(dfd, 'times', c.O_PATH, 0, 0)))).toBe('ENOTDIR');
  });

  it('reads a 1,500-entry directory in full (more than one getdents buffer)', () => {
    s.mkdirat(dfd, 'big', 0o755);
    const big = s.openat2(dfd, 'big', c.O_PATH | c.O_DIRECTORY, 0, 0);
    for (let i = 0; i < 1500; i++) s.mknodat(big, `entry-${i}`, S_IFREG | 0o644, 0);
    const names = new Set(s.readdir(big).map((e) => e.name.toString()));
    closeSync(big);
    expect(names.size).toBe(1500);
    expect(names.has('entry-1499')).toBe(true);
  });
});

describe('extended attributes', () => {
  it('f*xattr on a real fd: set flags, get, list as Buffers, remove, ENODATA', () => {
    writeFileSync(join(dir, 'xa'), '');
    const fd = openSync(join(dir, 'xa'), 'r');
    const name = Buffer.from('user.\xff\x01name', 'latin1');
    s.fsetxattr(fd, name, Buffer.from([0, 1, 2]), c.XATTR_CREATE);
    expect(code(() => s.fsetxattr(fd, name, Buffer.alloc(0), c.XATTR_CREATE))).toBe('EEXIST');
    expect(code(() => s.fsetxattr(fd, 'user.none', Buffer.alloc(0), c.XATTR_REPLACE))).toBe('ENODATA');
    expect(s.fgetxattr(fd, name).equals(Buffer.from([0, 1, 2]))).toBe(true);
    s.fsetxattr(fd, 'user.empty', Buffer.alloc(0), 0);
    expect(s.fgetxattr(fd, 'user.empty').length).toBe(0);
    const big = Buffer.alloc(3000, 7);
    s.fsetxattr(fd, 'user.big', big, 0);
    expect(s.fgetxattr(fd, 'user.big').equals(big)).toBe(true);
    const names = s.flistxattr(fd);
    expect(names.some((n) => n.equals(name))).toBe(true);
    expect(names.map((n) => n.toString('latin1'))).toContain('user.empty');
    s.fremovexattr(fd, name);
    expect(code(() => s.fgetxattr(fd, name))).toBe('ENODATA');
    expect(code(() => s.fremovexattr(fd, name))).toBe('ENODATA');
    expect(code(() => s.fsetxattr(fd, 'user.huge', Buffer.alloc(70000), 0))).toBe('E2BIG');
    closeSync(fd);
    const out = execFileSync('getfattr', ['-d', '--absolute-names', join(dir, 'xa')], { encoding: 'utf8' });
    expect(out).toContain('user.big=');
  });

  it("*xattrat through /proc/self/fd/N reaches an O_PATH fd's own inode (a symlink, not its target)", () => {
    writeFileSync(join(dir, 'xt'), '');
    symlinkSync('xt', join(dir, 'xl'));
    const f = s.openat2(dfd, 'xt', c.O_PATH | c.O_NOFOLLOW, 0, c.RESOLVE_BENEATH);
    s.setxattrat(c.AT_FDCWD, procFdPath(f), 0, 'user.via', Buffer.from('proc'), 0);
    expect(s.getxattrat(c.AT_FDCWD, procFdPath(f), 0, 'user.via').toString()).toBe('proc');
    expect(s.listxattrat(c.AT_FDCWD, procFdPath(f), 0).map(String)).toContain('user.via');
    expect(s.getxattrat(dfd, 'xt', c.AT_SYMLINK_NOFOLLOW, 'user.via').toString()).toBe('proc');
    s.removexattrat(c.AT_FDCWD, procFdPath(f), 0, 'user.via');
    expect(code(() => s.getxattrat(c.AT_FDCWD, procFdPath(f), 0, 'user.via'))).toBe('ENODATA');
    closeSync(f);
    if (isRoot) {
      const l = s.openat2(dfd, 'xl', c.O_PATH | c.O_NOFOLLOW, 0, c.RESOLVE_BENEATH);
      s.setxattrat(c.AT_FDCWD, procFdPath(l), 0, 'trusted.on-link', Buffer.from('L'), 0);
      closeSync(l);
      const linkAttrs = execFileSync('getfattr', ['-h', '-d', '-m', '-', '--absolute-names', join(dir, 'xl')], {
        encoding: 'utf8',
      });
      const fileAttrs = execFileSync('getfattr', ['-d', '-m', '-', '--absolute-names', join(dir, 'xt')], { encoding: 'utf8' });
      expect(linkAttrs).toContain('trusted.on-link="L"');
      expect(fileAttrs).not.toContain('trusted.on-link');
    }
  });
});

describe('file data', () => {
  it("lseek SEEK_DATA / SEEK_HOLE finds a sparse file's data; ENXIO past it; fallocate punches", () => {
    const path = join(dir, 'sparse');
    const fd = openSync(path, 'w+');
    const block = Buffer.alloc(65536, 1);
    writeSync(fd, block, 0, block.length, 1 << 20);
    writeSync(fd, Buffer.alloc(0), 0, 0, 4 << 20);
    s.fallocate(fd, 0, 0, 0 + 1); // allocates the first byte's block (data, zeros)
    const data = s.lseek(fd, 4096, c.SEEK_DATA);
    expect(data).toBe(1 << 20);
    expect(s.lseek(fd, data, c.SEEK_HOLE)).toBe((1 << 20) + 65536);
    expect(code(() => s.lseek(fd, (1 << 20) + 65536, c.SEEK_DATA))).toBe('ENXIO');
    s.fallocate(fd, c.FALLOC_FL_PUNCH_HOLE | c.FALLOC_FL_KEEP_SIZE, 1 << 20, 65536);
    expect(code(() => s.lseek(fd, 4096, c.SEEK_DATA))).toBe('ENXIO');
    closeSync(fd);
  });
});

describe('OFD locks', () => {
  it('two open file descriptions conflict; shared locks share; unlock releases; close releases', () => {
    const path = join(dir, 'lock');
    writeFileSync(path, Buffer.alloc(4096));
    const a = openSync(path, 'r+');
    const b = openSync(path, 'r+');
    expect(ofdLock(a, 100, 200, true)).toBe(true);
    expect(ofdLock(a, 100, 200, true)).toBe(true); // same description: re-taking is fine
    expect(ofdLock(b, 150, 10, false)).toBe(false);
    expect(ofdLock(b, 300, 10, true)).toBe(true); // outside [100, 300)
    const holder = s.ofdGetLock(b, 0, 0, true);
    expect(holder).toEqual({ exclusive: true, start: 100, length: 200, pid: -1 });
    ofdUnlock(a, 100, 200);
    expect(ofdLock(b, 150, 10, true)).toBe(true);
    expect(s.ofdGetLock(a, 0, 100, true)).toBeNull();
    ofdUnlock(b, 0, 0);
    expect(ofdLock(a, 0, 0, false)).toBe(true);
    expect(ofdLock(b, 0, 0, false)).toBe(true);
    expect(ofdLock(b, 0, 0, true)).toBe(false);
    closeSync(a);
    expect(ofdLock(b, 0, 0, true)).toBe(true);
    closeSync(b);
  });

  it('a lock held by another process is refused', () => {
    const path = join(dir, 'lock2');
    writeFileSync(path, Buffer.alloc(16));
    const a = openSync(path, 'r+');
    expect(ofdLock(a, 0, 16, true)).toBe(true);
    const addon = new URL('../../build/Release/sifuse_sys.node', import.meta.url).pathname;
    const script = `
      const { openSync } = require('node:fs');
      const s = require(${JSON.stringify(addon)});
      const fd = openSync(${JSON.stringify(path)}, 'r+');
      process.stdout.write(String(s.ofdLock(fd, 0, 16, true)) + ' ' + String(s.ofdLock(fd, 16, 16, true)));`;
    const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(out).toBe('false true');
    closeSync(a);
  });
});

it('readlinkSync agrees with readlinkat for the names made here', () => {
  expect(readlinkSync(join(dir, 'beneath', 'abs'))).toBe(s.readlinkat(dfd, 'beneath/abs').toString());
});
