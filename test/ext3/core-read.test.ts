import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  readlinkSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
  appendFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { devMajor, devMinor } from '../../src/engine.js';
import type { Ext3Fs } from '../../src/ext3/fs.js';
import { S_IFREG } from '../../src/engine.js';
import { dirHash } from '../../src/ext3/htree.js';
import { isRoot, makeTempDir, removeTempDir, skipNote } from '../tools/helpers.js';
import { debugfs, expectFsckClean, mkfs, openImage } from './core-helpers.js';
import { itIf } from '../tools/skip.js';
import { loopMountSync, unmountSync } from '../tools/loop.js';

let dir: string;
let src: string;

/** A tree exercising every read path: sizes around block boundaries and indirection levels, holes, >4 GiB, links, symlinks, special files, xattrs, odd names. */
function buildTree(root: string): void {
  mkdirSync(root);
  const det = (n: number, seed: string) => {
    const out = Buffer.alloc(n);
    let h = createHash('sha256').update(seed).digest();
    for (let i = 0; i < n; i += 32) {
      h.copy(out, i);
      h = createHash('sha256').update(h).digest();
    }
    return out;
  };
  for (const n of [0, 1, 1023, 1024, 1025, 4096, 13 * 1024, 300 * 1024, 1100 * 1024])
    writeFileSync(join(root, `size-${n}`), det(n, `s${n}`));
  writeFileSync(join(root, 'holey'), Buffer.alloc(0));
  truncateSync(join(root, 'holey'), 2 * 1024 * 1024);
  execFileSync('dd', ['if=/dev/urandom', `of=${join(root, 'holey')}`, 'bs=4096', 'seek=100', 'count=2', 'conv=notrunc'], {
    stdio: 'ignore',
  });
  writeFileSync(join(root, 'huge-sparse'), Buffer.alloc(0));
  truncateSync(join(root, 'huge-sparse'), 5 * 1024 ** 3);
  appendFileSync(join(root, 'huge-sparse'), 'end of a five gigabyte file\n');
  mkdirSync(join(root, 'd1/d2/d3'), { recursive: true });
  writeFileSync(join(root, 'd1/d2/d3/deep'), 'deep\n');
  linkSync(join(root, 'size-1'), join(root, 'd1/hardlink'));
  symlinkSync('x'.repeat(59), join(root, 'fast59'));
  symlinkSync('y'.repeat(60), join(root, 'slow60'));
  symlinkSync('../'.repeat(150), join(root, 'slow450'));
  writeFileSync(Buffer.concat([Buffer.from(`${root}/`), Buffer.from([0x6e, 0xff, 0xfe, 0x20, 0x09])]), 'odd name\n');
  execFileSync('mkfifo', [join(root, 'fifo')]);
  if (isRoot) {
    execFileSync('mknod', [join(root, 'null'), 'c', '1', '3']);
    execFileSync('mknod', [join(root, 'whiteout'), 'c', '0', '0']);
    execFileSync('mknod', [join(root, 'blk'), 'b', '259', '300']);
  }
  execFileSync('setfattr', ['-n', 'user.small', '-v', 'value', join(root, 'size-1')]);
  execFileSync('setfattr', ['-n', 'user.large', '-v', '0x' + 'ab'.repeat(600), join(root, 'size-1024')]);
  execFileSync('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', join(root, 'd1')]);
  mkdirSync(join(root, 'wide'));
  for (let i = 0; i < 3000; i++) writeFileSync(join(root, 'wide', `file-number-${i}`), '');
}

function hashFile(p: Buffer): string {
  const h = createHash('sha256');
  const fd = openSync(p, 'r');
  const buf = Buffer.alloc(1 << 20);
  try {
    for (let pos = 0; ;) {
      const n = readSync(fd, buf, 0, buf.length, pos);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
      pos += n;
    }
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

/** The host's view: one line per path (sorted), from lstat, file bytes, readlink and getfattr. */
function hostManifest(root: string): string[] {
  const xattrs = new Map<string, string[]>();
  const out = spawnSync('getfattr', ['-R', '-P', '-d', '-m', '-', '-e', 'hex', '--absolute-names', root], {
    encoding: 'latin1',
  }).stdout;
  let cur = '';
  for (const line of out.split('\n')) {
    if (line.startsWith('# file: ')) cur = line.slice(8);
    else if (line.includes('=') && cur) xattrs.set(cur, [...(xattrs.get(cur) ?? []), line.replace('=0x', '=')]);
  }
  const lines: string[] = [];
  const walk = (d: Buffer, rel: string) => {
    for (const nameBuf of readdirSync(d, { encoding: 'buffer' })) {
      const name = nameBuf.toString('latin1');
      const p = Buffer.concat([d, Buffer.from('/'), nameBuf]);
      const st = lstatSync(p, { bigint: false });
      const type = st.isFile()
        ? 'f'
        : st.isDirectory()
          ? 'd'
          : st.isSymbolicLink()
            ? 'l'
            : st.isCharacterDevice()
              ? 'c'
              : st.isBlockDevice()
                ? 'b'
                : st.isFIFO()
                  ? 'p'
                  : 's';
      let data = '-';
      // The 5 GiB sparse file is checked by targeted reads instead of hashing 5 GiB.
      if (type === 'f') data = st.size > 1024 ** 3 ? 'huge' : hashFile(p);
      else if (type === 'l') data = readlinkSync(p, { encoding: 'latin1' });
      else if (type === 'c' || type === 'b')
        data = `${Math.floor(st.rdev / 256) & 0xfff}:${(st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00)}`;
      const x = (xattrs.get(p.toString('latin1')) ?? []).sort().join(',');
      lines.push(
        `${rel}/${name} ${type} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${type === 'd' ? '-' : st.size} ${st.nlink} ${Math.floor(st.mtimeMs / 1000)} ${data} ${x}`,
      );
      if (type === 'd') walk(p, `${rel}/${name}`);
    }
  };
  walk(Buffer.from(root), '');
  return lines.sort();
}

async function engineManifest(fs: Ext3Fs): Promise<string[]> {
  const lines: string[] = [];
  const walk = async (id: number, rel: string) => {
    for (const e of await fs.readdir(id)) {
      const name = e.name.toString('latin1');
      if (rel === '' && name === 'lost+found') continue;
      const st = await fs.getattr(e.id);
      let data = '-';
      if (e.type === 'f' && st.size > 1024 ** 3) data = 'huge';
      else if (e.type === 'f') {
        const h = createHash('sha256');
        for (let pos = 0; pos < st.size;) {
          // Skip the big holes quickly: read in 1 MiB steps.
          const chunk = await fs.read(e.id, pos, 1 << 20);
          h.update(chunk);
          pos += chunk.length;
          if (chunk.length === 0) break;
        }
        data = h.digest('hex');
      } else if (e.type === 'l') data = (await fs.readlink(e.id)).toString('latin1');
      else if (e.type === 'c' || e.type === 'b') data = `${devMajor(st.rdev)}:${devMinor(st.rdev)}`;
      const xs: string[] = [];
      for (const x of await fs.listxattr(e.id))
        xs.push(`${x.toString('latin1')}=${(await fs.getxattr(e.id, x))!.toString('hex')}`);
      lines.push(
        `${rel}/${name} ${e.type} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${e.type === 'd' ? '-' : st.size} ${st.nlink} ${st.mtime} ${data} ${xs.sort().join(',')}`,
      );
      if (e.type === 'd') await walk(e.id, `${rel}/${name}`);
    }
  };
  await walk(fs.rootId, '');
  return lines.sort();
}

let expected: string[];
beforeAll(() => {
  dir = makeTempDir('ext3-core-read');
  src = join(dir, 'src');
  buildTree(src);
  if (!isRoot) skipNote('device nodes in the mkfs -d tree', 'mknod needs root');
  expected = hostManifest(src);
});
afterAll(async () => {
  await removeTempDir(dir);
});

describe('reading mkfs.ext3 -d images', () => {
  for (const [bs, isz] of [
    [1024, 128],
    [1024, 256],
    [2048, 256],
    [4096, 128],
    [4096, 256],
  ] as const) {
    it(`${bs}-byte blocks, ${isz}-byte inodes: the engine's view equals the source tree`, async () => {
      const img = join(dir, `img-${bs}-${isz}.ext3`);
      mkfs(img, { sizeK: 24 * 1024, blockSize: bs, inodeSize: isz, src });
      const fs = await openImage(img, false);
      const got = await engineManifest(fs);
      expect(got).toEqual(expected);
      const huge = (await fs.lookup(fs.rootId, Buffer.from('huge-sparse')))!;
      expect((await fs.read(huge, 5 * 1024 ** 3, 100)).toString()).toBe('end of a five gigabyte file\n');
      expect((await fs.read(huge, 3 * 1024 ** 3, 4096)).equals(Buffer.alloc(4096))).toBe(true);
      const st = await fs.getattr(huge);
      expect(st.blocks).toBe(Number(/Blockcount: (\d+)/.exec(debugfs(img, 'stat /huge-sparse'))![1]));
      await fs.close();
    });
  }
});

describe('images written by other tools', () => {
  it('reads what debugfs -w wrote (files, dirs, symlinks, devices)', async () => {
    const img = join(dir, 'debugfs.ext3');
    mkfs(img, { sizeK: 4096, blockSize: 1024, inodeSize: 128 });
    const payload = join(dir, 'payload.bin');
    writeFileSync(payload, Buffer.alloc(70_000, 0x5a));
    const script = join(dir, 'debugfs.cmds');
    writeFileSync(
      script,
      // (debugfs's mknod only creates in the current directory, hence the cd)
      [
        'mkdir d',
        `write ${payload} d/payload`,
        'symlink d/link /some/where/else',
        'mkdir d/sub',
        'cd d',
        'mknod tty c 4 1',
        'mknod pipe p',
        '',
      ].join('\n'),
    );
    execFileSync('debugfs', ['-w', '-f', script, img], { stdio: 'ignore' });
    const fs = await openImage(img, false);
    const d = (await fs.lookup(fs.rootId, Buffer.from('d')))!;
    const names = (await fs.readdir(d)).map((e) => `${e.name.toString()}:${e.type}`).sort();
    expect(names).toEqual(['link:l', 'payload:f', 'pipe:p', 'sub:d', 'tty:c']);
    const p = (await fs.lookup(d, Buffer.from('payload')))!;
    expect((await fs.read(p, 0, 100_000)).equals(Buffer.alloc(70_000, 0x5a))).toBe(true);
    expect((await fs.readlink((await fs.lookup(d, Buffer.from('link')))!)).toString()).toBe('/some/where/else');
    expect(devMajor((await fs.getattr((await fs.lookup(d, Buffer.from('tty')))!)).rdev)).toBe(4);
    await fs.close();
  });

  const canFuse2fs = isRoot && existsSync('/dev/fuse') && spawnSync('sh', ['-c', 'command -v fuse2fs']).status === 0;
  if (!canFuse2fs) skipNote('fuse2fs image test', 'needs root, /dev/fuse and fuse2fs');
  itIf(canFuse2fs, 'needs root, /dev/fuse and fuse2fs')('reads and continues an image written through fuse2fs', async () => {
    const img = join(dir, 'fuse2fs.ext3');
    mkfs(img, { sizeK: 8192, blockSize: 4096, inodeSize: 256 });
    const mnt = join(dir, 'mnt-fuse2fs');
    mkdirSync(mnt, { recursive: true });
    // In the foreground, so the test can wait for it to exit: fusermount -u returns before
    // fuse2fs has written its last blocks and closed the image (reading it earlier saw a
    // half-written symlink inode now and then).
    const server = spawn('fuse2fs', [img, mnt, '-o', 'rw,fakeroot', '-f'], { stdio: 'ignore' });
    const exited = new Promise<void>((resolve) => server.once('exit', () => resolve()));
    try {
      for (let i = 0; i < 200 && !readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${mnt} `); i++) {
        await new Promise((r) => setTimeout(r, 25));
      }
      mkdirSync(join(mnt, 'from-fuse2fs'));
      writeFileSync(join(mnt, 'from-fuse2fs', 'file'), 'written by fuse2fs\n');
      symlinkSync('file', join(mnt, 'from-fuse2fs', 'link'));
    } finally {
      execFileSync('fusermount', ['-u', mnt], { stdio: 'ignore' });
      await exited;
    }
    let fs = await openImage(img, true);
    const d = (await fs.lookup(fs.rootId, Buffer.from('from-fuse2fs')))!;
    const f = (await fs.lookup(d, Buffer.from('file')))!;
    expect((await fs.read(f, 0, 100)).toString()).toBe('written by fuse2fs\n');
    await fs.write(f, 0, Buffer.from('WRITTEN'));
    await fs.close();
    expectFsckClean(img);
    fs = await openImage(img, false);
    expect((await fs.read(f, 0, 100)).toString()).toBe('WRITTEN by fuse2fs\n');
    await fs.close();
  });
});

describe('htree (dir_index) directories', () => {
  it('hashes names like e2fsprogs (legacy, half_md4, tea; signed and unsigned chars)', () => {
    const img = join(dir, 'hash.ext3');
    mkfs(img, { sizeK: 1024 });
    const seed = '0123abcd-89ab-cdef-0123-456789abcdef';
    const words = Buffer.from(seed.replace(/-/g, ''), 'hex');
    const seedWords = [0, 1, 2, 3].map((i) => words.readUInt32LE(4 * i));
    const names = ['a', 'hello', 'file-number-1234', 'x'.repeat(40), 'y'.repeat(255), '\u00e9t\u00e9\u00ff'];
    // debugfs takes the version number (3-5: unsigned-char variants); argv carries the UTF-8 bytes.
    for (const version of [0, 1, 2, 3, 4, 5]) {
      for (const n of names) {
        const nameBuf = Buffer.from(n, 'utf8');
        const out = spawnSync('debugfs', ['-R', `dx_hash -h ${version} -s ${seed} ${n}`, img], { encoding: 'latin1' }).stdout;
        const want = Number.parseInt(/is 0x([0-9a-f]+)/.exec(out)![1]!, 16);
        expect(dirHash(version, nameBuf, seedWords), `version ${version} ${n}`).toBe(want);
      }
    }
    // Signed and unsigned variants differ exactly on bytes >= 0x80.
    expect(dirHash(1, Buffer.from([0xe9]), seedWords)).not.toBe(dirHash(4, Buffer.from([0xe9]), seedWords));
    expect(dirHash(1, Buffer.from('abc'), seedWords)).toBe(dirHash(4, Buffer.from('abc'), seedWords));
  });

  it('reads indexed directories made by e2fsck -D, then keeps them valid when changed', async () => {
    const img = join(dir, 'htree.ext3');
    mkfs(img, { sizeK: 16 * 1024, blockSize: 1024, inodeSize: 256, src });
    spawnSync('e2fsck', ['-fyD', img]);
    expect(debugfs(img, 'htree_dump /wide')).toMatch(/Root node dump/);
    let fs = await openImage(img, false);
    const wide = (await fs.lookup(fs.rootId, Buffer.from('wide')))!;
    // Lookups through the hash index, without loading the directory.
    const loads = fs.stats.dirLoads;
    const viaHash: number[] = [];
    for (let i = 0; i < 3000; i += 7) viaHash.push((await fs.lookup(wide, Buffer.from(`file-number-${i}`)))!);
    expect(await fs.lookup(wide, Buffer.from('file-number-3000'))).toBeNull();
    expect(fs.stats.dirLoads).toBe(loads);
    expect(fs.stats.htreeFallbacks).toBe(0);
    expect(fs.stats.htreeLookups).toBeGreaterThan(400);
    // The same answers from the linear view.
    const all = new Map((await fs.readdir(wide)).map((e) => [e.name.toString(), e.id]));
    expect(all.size).toBe(3000);
    expect(viaHash).toEqual([...Array(429).keys()].map((k) => all.get(`file-number-${k * 7}`)));
    await fs.close();
    fs = await openImage(img, true);
    await fs.mknod(wide, Buffer.from('added'), { mode: S_IFREG | 0o644, uid: 0, gid: 0 });
    await fs.unlink(wide, Buffer.from('file-number-17'));
    await fs.close();
    expectFsckClean(img);
    fs = await openImage(img, false);
    expect((await fs.readdir(wide)).length).toBe(3000);
    await fs.close();
  });

  if (!isRoot) skipNote('kernel-made image test', 'needs root for a loop mount');
  itIf(isRoot, 'loop mounts need root')('reads images written by the kernel (htree made by ext3 itself)', async () => {
    const img = join(dir, 'kernel.ext3');
    mkfs(img, { sizeK: 16 * 1024, blockSize: 4096, inodeSize: 256 });
    const mnt = join(dir, 'mnt');
    mkdirSync(mnt, { recursive: true });
    loopMountSync(img, mnt, { type: 'ext3' });
    try {
      mkdirSync(join(mnt, 'k'));
      for (let i = 0; i < 2000; i++) writeFileSync(join(mnt, 'k', `kernel-file-${i}`), `${i}\n`);
      execFileSync('setfacl', ['-m', 'u:1234:rx', join(mnt, 'k/kernel-file-1')]);
    } finally {
      unmountSync(mnt);
    }
    expect(debugfs(img, 'htree_dump /k')).toMatch(/Root node dump/);
    const fs = await openImage(img, false);
    const k = (await fs.lookup(fs.rootId, Buffer.from('k')))!;
    const f = (await fs.lookup(k, Buffer.from('kernel-file-1999')))!;
    expect(fs.stats.htreeLookups).toBe(1);
    expect((await fs.readdir(k)).length).toBe(2000);
    expect((await fs.read(f, 0, 100)).toString()).toBe('1999\n');
    const acl = (await fs.getxattr((await fs.lookup(k, Buffer.from('kernel-file-1')))!, Buffer.from('system.posix_acl_access')))!;
    // user format: version 2, then 8-byte entries; ACL_USER (2) for uid 1234 with r-x (5)
    expect(acl.readUInt32LE(0)).toBe(2);
    const entries = [];
    for (let o = 4; o < acl.length; o += 8) entries.push([acl.readUInt16LE(o), acl.readUInt16LE(o + 2), acl.readUInt32LE(o + 4)]);
    expect(entries).toContainEqual([2, 5, 1234]);
    // statfs as the kernel reports it for the same image
    const mine = await fs.statfs();
    await fs.close();
    loopMountSync(img, mnt, { type: 'ext3', readonly: true });
    try {
      const out = execFileSync('stat', ['-f', '-c', '%S %b %f %a %c %d %l', mnt], { encoding: 'utf8' })
        .trim()
        .split(' ')
        .map(Number);
      expect([mine.bsize, mine.blocks, mine.bfree, mine.bavail, mine.files, mine.ffree, mine.namemax]).toEqual(out);
    } finally {
      unmountSync(mnt);
    }
  });
});
