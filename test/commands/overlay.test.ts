import { execa } from 'execa';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openExt3 } from '../../src/ext3/index.js';
import { FileRegion } from '../../src/io/file-region.js';
import { makeSif } from '../tools/helpers.js';
import { itIf } from '../tools/skip.js';
import { loopMountSync, unmountSync } from '../tools/loop.js';

const SIFUSE = path.resolve('bin/sifuse');
const isRoot = process.getuid?.() === 0;
const MiB = 1024 * 1024;

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sifuse-overlay-'));
  fs.chmodSync(dir, 0o777);
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function sifuse(args: string[], opts: { asUser?: number } = {}) {
  if (opts.asUser !== undefined) {
    const id = String(opts.asUser);
    return execa('setpriv', [`--reuid=${id}`, `--regid=${id}`, '--clear-groups', SIFUSE, ...args], { reject: false });
  }
  return execa(SIFUSE, args, { reject: false });
}

async function header(file: string): Promise<string> {
  return (await execa('dumpe2fs', ['-h', file])).stdout;
}

/**
 * dumpe2fs -h minus what differs between any two mkfs runs, and what the
 * engine's one writable open (to make upper/ and work/) changes as a kernel
 * mount would: mount count, mount time, journal sequence.
 */
function stable(h: string): string {
  return h
    .split('\n')
    .filter((l) => !/UUID|Hash Seed|time|Last checked|created|Lifetime writes|Journal sequence|Mount count/i.test(l))
    .join('\n');
}

async function fsckClean(file: string): Promise<void> {
  const r = await execa('e2fsck', ['-fn', file], { reject: false });
  expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
}

/** `ls -ln`-style listing of a directory through debugfs: name -> "mode uid gid". */
async function debugfsLs(file: string, at: string): Promise<Map<string, string>> {
  const r = await execa('debugfs', ['-R', `ls -l ${at}`, file]);
  const out = new Map<string, string>();
  for (const line of r.stdout.split('\n')) {
    const m = /^\s*\d+\s+(\d+)\s+\(\d+\)\s+(\d+)\s+(\d+)\s+\d+\s+\S+\s+\S+\s+(.+?)\s*$/.exec(line);
    if (m && m[4] !== '.' && m[4] !== '..') out.set(m[4]!, `${m[1]} ${m[2]} ${m[3]}`);
  }
  return out;
}

function leftovers(): string[] {
  return fs.readdirSync(dir).filter((n) => n.endsWith('.ext3'));
}

describe('sifuse overlay create', () => {
  it('makes what `apptainer overlay create` makes: mkfs.ext3 -d with upper/ and work/', async () => {
    const img = path.join(dir, 'default.img');
    const r = await sifuse(['overlay', 'create', img]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(fs.statSync(img).size).toBe(64 * MiB);
    expect(fs.statSync(img).mode & 0o777).toBe(0o600);
    await fsckClean(img);

    // The reference: Apptainer's recipe, mkfs.ext3 -d over a directory holding upper/ and work/.
    const src = path.join(dir, 'src');
    fs.mkdirSync(path.join(src, 'upper'), { recursive: true, mode: 0o755 });
    fs.mkdirSync(path.join(src, 'work'), { mode: 0o755 });
    const ref = path.join(dir, 'ref.img');
    fs.writeFileSync(ref, Buffer.alloc(0));
    fs.truncateSync(ref, 64 * MiB);
    await execa('mkfs.ext3', ['-q', '-F', '-d', src, ref]);
    const ours = await header(img);
    expect(stable(ours)).toBe(stable(await header(ref)));
    expect(ours).toMatch(/Filesystem features:\s+has_journal ext_attr resize_inode dir_index filetype sparse_super large_file\n/);
    expect(ours).toMatch(/Block size:\s+1024/);
    expect(ours).toMatch(/Inode size:\s+256/);
    expect(ours).toMatch(/Filesystem state:\s+clean/);
    expect(ours).toMatch(/Journal start:\s+0/);

    const uid = process.getuid!();
    const gid = process.getgid!();
    const root = await debugfsLs(img, '/');
    expect(root.get('upper')).toBe(`40755 ${uid} ${gid}`);
    expect(root.get('work')).toBe(`40755 ${uid} ${gid}`);
    expect(root.get('lost+found')).toBe('40700 0 0');
    expect(leftovers()).toEqual([]);
    fs.rmSync(ref);
  });

  it('creates --create-dir paths under upper/, sparse when asked, 0:0 with --fakeroot', async () => {
    const img = path.join(dir, 'dirs.img');
    const r = await sifuse(
      [
        'overlay',
        'create',
        '--sparse',
        '--size',
        '100',
        '--fakeroot',
        '--create-dir',
        '/opt/data',
        '--create-dir',
        'a/b/../c',
        '--create-dir',
        'opt',
      ].concat([img]),
    );
    expect(r.exitCode, r.stderr).toBe(0);
    const st = fs.statSync(img);
    expect(st.size).toBe(100 * MiB);
    expect(st.blocks * 512).toBeLessThan(8 * MiB);
    await fsckClean(img);
    expect([...(await debugfsLs(img, '/upper')).keys()].sort()).toEqual(['a', 'opt']);
    expect((await debugfsLs(img, '/upper/opt')).get('data')).toBe('40755 0 0');
    expect([...(await debugfsLs(img, '/upper/a')).keys()]).toEqual(['c']);
    expect((await debugfsLs(img, '/')).get('upper')).toBe('40755 0 0');
  });

  it('allocates the whole file without --sparse, and uses 4 KiB blocks from 512 MiB', async () => {
    const full = path.join(dir, 'full.img');
    expect((await sifuse(['overlay', 'create', full])).exitCode).toBe(0);
    expect(fs.statSync(full).blocks * 512).toBeGreaterThanOrEqual(64 * MiB);
    const big = path.join(dir, 'big.img');
    expect((await sifuse(['overlay', 'create', '-S', '-s', '600', big])).exitCode).toBe(0);
    expect(await header(big)).toMatch(/Block size:\s+4096/);
    await fsckClean(big);
    fs.rmSync(full);
    fs.rmSync(big);
  });

  it('refuses small sizes, existing targets and escaping --create-dir, leaving nothing behind', async () => {
    const small = path.join(dir, 'small.img');
    let r = await sifuse(['overlay', 'create', '--size', '63', small]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr.trim()).toBe(`sifuse: ${small}: image size must be equal or greater than 64 MiB`);
    expect(fs.existsSync(small)).toBe(false);

    r = await sifuse(['overlay', 'create', '--size', 'lots', small]);
    expect(r.exitCode).not.toBe(0);

    const existing = path.join(dir, 'existing.img');
    fs.writeFileSync(existing, '');
    fs.truncateSync(existing, 8 * MiB);
    await execa('mkfs.ext3', ['-q', '-F', existing]);
    const before = fs.readFileSync(existing);
    r = await sifuse(['overlay', 'create', existing]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`${existing}: EXT3 overlay image already exists`);
    expect(fs.readFileSync(existing).equals(before)).toBe(true);

    const sif = path.join(dir, 'fake.sif');
    const sifBytes = Buffer.alloc(4096);
    sifBytes.write('#!/usr/bin/env run-singularity\n', 0);
    sifBytes.write('SIF_MAGIC', 32);
    fs.writeFileSync(sif, sifBytes);
    r = await sifuse(['overlay', 'create', sif]);
    // A damaged SIF: one line naming it, and not a byte changed.
    expect(r.exitCode).toBe(1);
    expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(1);
    expect(r.stderr).toMatch(new RegExp(`^sifuse: ${sif.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
    expect(fs.readFileSync(sif).equals(sifBytes)).toBe(true);

    const other = path.join(dir, 'notes.txt');
    fs.writeFileSync(other, 'keep me');
    r = await sifuse(['overlay', 'create', other]);
    expect(r.stderr).toContain(`${other}: already exists`);
    expect(fs.readFileSync(other, 'utf8')).toBe('keep me');

    const esc = path.join(dir, 'escape.img');
    r = await sifuse(['overlay', 'create', '--create-dir', 'x/../../etc', esc]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('outside of the overlay layout');
    expect(fs.existsSync(esc)).toBe(false);
    expect(leftovers()).toEqual([]);

    r = await sifuse(['overlay', 'create', path.join(dir, 'no-such-dir', 'x.img')]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(1);
  });

  it('leaves nothing behind when interrupted', async () => {
    const img = path.join(dir, 'interrupted.img');
    const child = execa(SIFUSE, ['overlay', 'create', '--size', '8192', img], { reject: false });
    // Wait until the temporary file exists (allocation under way), then interrupt.
    for (let i = 0; i < 2000 && leftovers().length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    expect(leftovers().length).toBe(1);
    child.kill('SIGINT');
    const r = await child;
    expect(r.exitCode === 0).toBe(false);
    expect(fs.existsSync(img)).toBe(false);
    expect(leftovers()).toEqual([]);
  });

  itIf(isRoot, 'needs root')('gives the layer to the caller: 0755 for 16-bit ids, 0777 above 65535', async () => {
    const a = path.join(dir, 'nobody.img');
    const b = path.join(dir, 'bigid.img');
    expect((await sifuse(['overlay', 'create', '-S', a], { asUser: 65534 })).exitCode).toBe(0);
    expect((await sifuse(['overlay', 'create', '-S', b], { asUser: 100000 })).exitCode).toBe(0);
    expect((await debugfsLs(a, '/')).get('upper')).toBe('40755 65534 65534');
    expect((await debugfsLs(b, '/')).get('work')).toBe('40777 100000 100000');
    expect(fs.statSync(a).uid).toBe(65534);
    const fr = path.join(dir, 'fakeroot.img');
    expect((await sifuse(['overlay', 'create', '-S', '--fakeroot', fr], { asUser: 100000 })).exitCode).toBe(0);
    expect((await debugfsLs(fr, '/')).get('upper')).toBe('40755 0 0');
  });
  if (!isRoot) console.warn('overlay create: owner tests for other users skipped: they need root (setpriv)');

  itIf(isRoot, 'needs root')('fails cleanly on a full disk: one line, nothing left behind (tmpfs, as root)', async () => {
    const small = fs.mkdtempSync(path.join(os.tmpdir(), 'sifuse-full-'));
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', small]);
    try {
      const img = path.join(small, 'full.img');
      const r = await sifuse(['overlay', 'create', img]);
      expect(r.exitCode).toBe(1);
      expect(r.stderr.trim()).toBe(`sifuse: ${img}: cannot create the image: ENOSPC: no space left on device`);
      expect(fs.readdirSync(small)).toEqual([]);
    } finally {
      await execa('umount', [small]);
      fs.rmSync(small, { recursive: true, force: true });
    }
  });

  itIf(isRoot, 'needs root')('mounts with the kernel (loop) showing upper/, work/, lost+found and their owners', async () => {
    const img = path.join(dir, 'kernel.img');
    const made = await sifuse(['overlay', 'create', '-S', '--fakeroot', '--create-dir', 'opt/data', img]);
    expect(made.exitCode, made.stderr).toBe(0);
    const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'sifuse-mnt-'));
    try {
      loopMountSync(img, mnt, { type: 'ext3' });
      try {
        expect(fs.readdirSync(mnt).sort()).toEqual(['lost+found', 'upper', 'work']);
        const st = fs.statSync(path.join(mnt, 'upper'));
        expect([st.uid, st.gid, st.mode & 0o7777]).toEqual([0, 0, 0o755]);
        expect(fs.existsSync(path.join(mnt, 'upper/opt/data'))).toBe(true);
        fs.writeFileSync(path.join(mnt, 'upper/opt/data/file'), 'written by the kernel');
      } finally {
        unmountSync(mnt);
      }
      await fsckClean(img);
    } finally {
      fs.rmSync(mnt, { recursive: true, force: true });
    }
  });
  if (!isRoot) console.warn('overlay create: kernel loop-mount test skipped: it needs root');

  it('grows with e2fsck -f && resize2fs, and the engine then reads the same content', async () => {
    const img = path.join(dir, 'grow.img');
    const r = await sifuse(['overlay', 'create', '-S', '--create-dir', 'keep/me', img]);
    expect(r.exitCode, r.stderr).toBe(0);
    fs.truncateSync(img, 256 * MiB);
    await execa('e2fsck', ['-f', '-y', img], { reject: false });
    await execa('resize2fs', [img]);
    await fsckClean(img);
    expect(await header(img)).toMatch(/Block count:\s+262144/);
    const engine = await openExt3(await FileRegion.open(img), { writable: false });
    try {
      const upper = await engine.lookup(engine.rootId, Buffer.from('upper'));
      expect(upper).not.toBeNull();
      const keep = await engine.lookup(upper!, Buffer.from('keep'));
      const names = (await engine.readdir(keep!)).map((e) => e.name.toString());
      expect(names).toEqual(['me']);
      expect((await engine.readdir(engine.rootId)).map((e) => e.name.toString()).sort()).toEqual(['lost+found', 'upper', 'work']);
    } finally {
      await engine.close();
    }
  });

  it('adds an ext3 overlay partition to a SIF, as apptainer overlay create SIF does, and refuses what Apptainer refuses', async () => {
    const tree = path.join(dir, 'sif-tree');
    fs.mkdirSync(path.join(tree, 'etc'), { recursive: true });
    fs.writeFileSync(path.join(tree, 'etc', 'hostname'), 'box\n');
    const sqfs = path.join(dir, 'root.sqfs');
    await execa('mksquashfs', [tree, sqfs, '-noappend', '-all-root', '-quiet']);
    const sifNamed = async (name: string, partfs = '1') => {
      const f = path.join(dir, name);
      await makeSif(sqfs, f, partfs);
      return f;
    };
    const sif = await sifNamed('with-overlay.sif');
    let r = await sifuse(['overlay', 'create', '--sparse', '--create-dir', '/data', sif]);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    const list = (await execa('siftool', ['list', sif])).stdout;
    const row = list.split('\n').find((l) => l.includes('Ext3/Overlay'));
    expect(row).toMatch(/^2\s+\|1\s+\|NONE\s+\|(\d+)-(\d+)\s+\|FS \(Ext3\/Overlay\/amd64\)$/);
    const [, start, end] = /\|(\d+)-(\d+)/.exec(row!)!;
    expect(Number(start) % 4096).toBe(0);
    expect(Number(end) - Number(start)).toBe(64 * MiB);
    // The partition is a clean ext3 with the overlay layout.
    const part = path.join(dir, 'partition-2.img');
    fs.writeFileSync(part, (await execa('siftool', ['dump', '2', sif], { encoding: 'buffer' })).stdout);
    expect((await execa('e2fsck', ['-fn', part], { reject: false })).exitCode).toBe(0);
    r = await sifuse(['ls', '--partition', '2', sif, '/upper']);
    expect(r.stdout.split('\n')).toEqual(['data']);
    expect((await sifuse(['cat', sif, '/etc/hostname'])).stdout).toBe('box');

    // Refusals: a second overlay, a signed image, an encrypted root filesystem; the SIF unchanged each time.
    const refused = async (file: string, message: string) => {
      const before = fs.readFileSync(file);
      const res = await sifuse(['overlay', 'create', '--sparse', file]);
      expect(res.exitCode).toBe(1);
      expect(res.stderr.trim().split('\n')).toHaveLength(1);
      expect(res.stderr).toContain(`sifuse: ${file}: ${message}`);
      expect(fs.readFileSync(file).equals(before)).toBe(true);
    };
    await refused(sif, 'a writable overlay partition already exists in the SIF image (object 2)');
    const signed = await sifNamed('signed.sif');
    const sig = path.join(dir, 'sig.bin');
    fs.writeFileSync(sig, 'not really a signature');
    await execa('siftool', [
      'add',
      signed,
      sig,
      '--datatype',
      '5',
      '--signhash',
      '1',
      '--signentity',
      'a'.repeat(40),
      '--link',
      '1',
    ]);
    await refused(signed, 'the SIF image is signed');
    const encrypted = await sifNamed('encrypted.sif', '5');
    await refused(encrypted, 'the root filesystem is encrypted');
    expect(leftovers()).toEqual([]);
  });
});

describe('sifuse overlay resize', () => {
  /** dumpe2fs minus what differs between any two tools' runs (times, UUIDs, checksums, mount counts). */
  async function layout(img: string): Promise<string[]> {
    const out = (await execa('dumpe2fs', [img], { reject: false })).stdout;
    return out.split('\n').filter((l) => !/time|checksum|Mount count|UUID|Lifetime writes|Last checked/i.test(l));
  }
  async function manifest(img: string): Promise<string> {
    return (await execa(SIFUSE, ['manifest', img])).stdout;
  }
  async function fill(img: string, files: number, bytes: number): Promise<void> {
    const region = await FileRegion.open(img, { writable: true });
    const fsx = await openExt3(region, { writable: true });
    const upper = (await fsx.lookup(fsx.rootId, Buffer.from('upper')))!;
    for (let i = 0; i < files; i++) {
      const f = await fsx.mknod(upper, Buffer.from(`f${i}`), { mode: 0o100644, uid: 0, gid: 0 });
      await fsx.write(f, 0, Buffer.alloc(bytes, i + 1));
    }
    await fsx.close();
  }

  it('grows and shrinks in place exactly as e2fsck -f && resize2fs would, keeping every file', async () => {
    const img = path.join(dir, 'resize.img');
    expect((await sifuse(['overlay', 'create', '--sparse', '--create-dir', '/opt/data', img])).exitCode).toBe(0);
    await fill(img, 20, 300_000);
    const before = await manifest(img);
    for (const size of [300, 2000, 100, 64]) {
      const peer = path.join(dir, `resize-peer-${size}.img`);
      fs.copyFileSync(img, peer);
      const r = await sifuse(['overlay', 'resize', '--size', String(size), img]);
      expect(r.stderr).toBe('');
      expect(r.exitCode).toBe(0);
      expect(fs.statSync(img).size).toBe(size * MiB);
      if (fs.statSync(peer).size < size * MiB) fs.truncateSync(peer, size * MiB);
      await execa('e2fsck', ['-fy', peer], { reject: false });
      expect((await execa('resize2fs', [peer, `${size}M`], { reject: false })).exitCode).toBe(0);
      expect((await execa('e2fsck', ['-fn', img], { reject: false })).exitCode, `e2fsck after resize to ${size} MiB`).toBe(0);
      expect(await layout(img), `layout at ${size} MiB`).toEqual(await layout(peer));
      expect(await manifest(img)).toBe(before);
      fs.rmSync(peer);
    }
    if (isRoot) {
      const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'sifuse-resize-mnt-'));
      loopMountSync(img, mnt, { type: 'ext3', readonly: true });
      try {
        expect(fs.readdirSync(path.join(mnt, 'upper')).length).toBe(21);
        expect(fs.statSync(path.join(mnt, 'upper', 'f19')).size).toBe(300_000);
      } finally {
        unmountSync(mnt);
        fs.rmdirSync(mnt);
      }
    }
  });

  it('refuses a shrink the data does not fit, an image in use, and sizes below 64 MiB, changing nothing', async () => {
    const img = path.join(dir, 'resize-full.img');
    expect((await sifuse(['overlay', 'create', '--sparse', '--size', '200', img])).exitCode).toBe(0);
    await fill(img, 30, 4_000_000);
    const bytes = fs.readFileSync(img);
    let r = await sifuse(['overlay', 'resize', '--size', '100', img]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(
      new RegExp(
        `^sifuse: ${img.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: the data does not fit in 100 MiB \\((block|blocks|inodes) .*resize2fs can move`,
      ),
    );
    expect(fs.readFileSync(img).equals(bytes)).toBe(true);

    r = await sifuse(['overlay', 'resize', '--size', '63', img]);
    expect(r.stderr.trim()).toBe(`sifuse: ${img}: image size must be equal or greater than 64 MiB`);

    const { ofdLock } = await import('../../src/native/sys.js');
    const fd = fs.openSync(img, 'r+');
    try {
      expect(ofdLock(fd, 0, 0, true)).toBe(true);
      r = await sifuse(['overlay', 'resize', '--size', '300', img]);
      expect(r.stderr.trim()).toBe(`sifuse: ${img}: the overlay image is in use (locked by another process)`);
    } finally {
      fs.closeSync(fd);
    }
    expect(fs.readFileSync(img).equals(bytes)).toBe(true);
  });

  it('resizes the overlay partition of a SIF when it is the last object, and refuses when it is not', async () => {
    const tree = path.join(dir, 'resize-sif-tree');
    fs.mkdirSync(path.join(tree, 'etc'), { recursive: true });
    fs.writeFileSync(path.join(tree, 'etc', 'hostname'), 'box\n');
    const sqfs = path.join(dir, 'resize-sif.sqfs');
    await execa('mksquashfs', [tree, sqfs, '-noappend', '-all-root', '-quiet']);
    const sif = path.join(dir, 'resize.sif');
    await makeSif(sqfs, sif);
    expect((await sifuse(['overlay', 'create', '--sparse', '--create-dir', '/keep', sif])).exitCode).toBe(0);
    const partition = async () => {
      const row = (await execa('siftool', ['list', sif])).stdout.split('\n').find((l) => l.includes('Ext3/Overlay'))!;
      const [, a, b] = /\|(\d+)-(\d+)/.exec(row)!;
      return { start: Number(a), size: Number(b) - Number(a) };
    };
    const before = await partition();
    for (const size of [300, 64]) {
      const r = await sifuse(['overlay', 'resize', '--size', String(size), sif]);
      expect(r.stderr).toBe('');
      expect(r.exitCode).toBe(0);
      const p = await partition();
      expect(p).toEqual({ start: before.start, size: size * MiB });
      expect(fs.statSync(sif).size).toBe(p.start + p.size);
      const header = JSON.parse((await sifuse(['sif', 'header', '--json', sif])).stdout) as {
        dataOffset: number;
        dataSize: number;
      };
      expect(header.dataOffset + header.dataSize).toBe(p.start + p.size);
      expect((await execa('siftool', ['list', sif])).exitCode).toBe(0);
      const dumped = path.join(dir, 'resize-sif-part.img');
      // Through the shell: hundreds of MiB are too much for a child-process buffer.
      await execa('sh', ['-c', 'siftool dump 2 "$1" > "$2"', 'sh', sif, dumped]);
      expect((await execa('e2fsck', ['-fn', dumped], { reject: false })).exitCode, `e2fsck at ${size} MiB`).toBe(0);
      fs.rmSync(dumped);
      expect((await sifuse(['ls', '--partition', '2', sif, '/upper'])).stdout).toBe('keep');
      expect((await sifuse(['cat', sif, '/etc/hostname'])).stdout).toBe('box');
    }
    const extra = path.join(dir, 'resize-extra.bin');
    fs.writeFileSync(extra, 'after the overlay');
    await execa('siftool', ['add', sif, extra, '--datatype', '7']);
    const bytes = fs.readFileSync(sif);
    const r = await sifuse(['overlay', 'resize', '--size', '100', sif]);
    expect(r.stderr.trim()).toBe(
      `sifuse: ${sif}: the overlay partition (object 2) is not the last object in the SIF, so it cannot change size in place`,
    );
    expect(fs.readFileSync(sif).equals(bytes)).toBe(true);
  });
});
