/**
 * The ext3 engine against the engine contract (src/engine.ts): ref/unref
 * queued with mutations (the open/unlink/create race of issue 7), rename
 * flags (checked against the kernel's renameat2 on a loop mount as root),
 * readdir snapshots, dataRanges from the block map, and readers never seeing
 * half a rename.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S_IFREG } from '../../src/engine.js';
import type { DirEntry, InodeId, RenameFlags } from '../../src/engine.js';
import type { Ext3Fs } from '../../src/ext3/fs.js';
import { openExt3 } from '../../src/ext3/index.js';
import type { ByteStore } from '../../src/io/byte-source.js';
import { FileRegion } from '../../src/io/file-region.js';
import { isRoot, makeTempDir, removeTempDir, skipNote, toolsDir } from '../tools/helpers.js';
import { b, expectFsckClean, manifest, mkfs, openImage, resolve } from './core-helpers.js';
import { loopMount, unmount } from './image-tools.js';

let dir: string;
beforeAll(() => {
  dir = makeTempDir('ext3-contract');
});
afterAll(async () => {
  await removeTempDir(dir);
});

const REG = { mode: S_IFREG | 0o644, uid: 0, gid: 0 };
const DIR = { mode: 0o755, uid: 0, gid: 0 };

function image(name: string, o: { sizeK?: number; blockSize?: number; src?: string; inodes?: number } = {}): string {
  const p = join(dir, name);
  mkfs(p, { sizeK: o.sizeK ?? 8192, blockSize: o.blockSize ?? 1024, src: o.src, inodes: o.inodes });
  return p;
}

/** Lets `n` microtask turns pass. */
async function ticks(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await Promise.resolve();
}

/** Lets `n` rounds of microtasks (and pending I/O callbacks every 8th) run. */
async function hops(n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    if (i % 8 === 7) await new Promise((r) => setImmediate(r));
    else await Promise.resolve();
  }
}

/**
 * The image behind a store whose reads and writes finish after a seeded
 * random number of turns, so the engine's operations interleave at many
 * different points.
 */
async function openJittery(path: string, seed: number): Promise<Ext3Fs> {
  const inner = await FileRegion.open(path, { writable: true });
  let state = seed * 2654435761 + 1;
  const jitter = (): Promise<void> => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return hops(state % 24);
  };
  const store: ByteStore = {
    name: inner.name,
    size: inner.size,
    writable: true,
    read: async (pos, len) => {
      await jitter();
      return inner.read(pos, len);
    },
    write: async (pos, data) => {
      await jitter();
      return inner.write(pos, data);
    },
    sync: () => inner.sync(),
    close: () => inner.close(),
  };
  return openExt3(store, { writable: true });
}

describe('ref/unref: queued with the mutations', () => {
  it('an open racing an unlink and a create that reuses the number never reads the new file', async () => {
    const img = image('race.img');
    const ROUNDS = 160;
    let attached = 0;
    let refused = 0;
    for (const jittery of [false, true]) {
      // Plain: every step a microtask apart, swept turn by turn. Jittery: I/O finishing late.
      const fs = jittery ? await openJittery(img, 7) : await openImage(img, true);
      for (let round = 0; round < (jittery ? ROUNDS / 4 : ROUNDS); round++) {
        const id = await fs.mknod(fs.rootId, b('old'), REG);
        await fs.write(id, 0, b('OLD-BYTES'));
        const refOf = (): Promise<boolean> =>
          fs.ref(id).then(
            () => true,
            (e: { code?: string }) => {
              if (e.code !== 'ENOENT') throw e;
              return false;
            },
          );
        // The ref (an open) is issued concurrently with the unlink (before or after it, a
        // varying number of turns apart) and always before the create that may reuse the number.
        let refP: Promise<boolean>;
        let u: Promise<void>;
        if (round % 4 === 0) {
          refP = refOf();
          u = fs.unlink(fs.rootId, b('old'));
        } else {
          u = fs.unlink(fs.rootId, b('old'));
          await ticks(round >> 2);
          refP = refOf();
        }
        await ticks(round % 4);
        const c = fs.mknod(fs.rootId, b('new'), REG);
        await u;
        const nid = await c;
        await fs.write(nid, 0, b('NEW-BYTES'));
        if (await refP) {
          attached++;
          // The old inode stays alive (orphaned) and its number is not reused.
          expect(nid).not.toBe(id);
          expect((await fs.read(id, 0, 100)).toString()).toBe('OLD-BYTES');
          expect((await fs.getattr(id)).nlink).toBe(0);
          await fs.unref(id);
          await expect(fs.getattr(id)).rejects.toMatchObject({ code: 'ENOENT' });
        } else {
          refused++;
        }
        await fs.unlink(fs.rootId, b('new'));
      }
      await fs.close();
      expectFsckClean(img);
    }
    console.log(`open/unlink/create race: ${attached} refs held the old inode, ${refused} refused with ENOENT`);
    expect(attached + refused).toBe(ROUNDS + ROUNDS / 4);
  });

  it('ref of a freed inode fails with ENOENT; counts add up (lookups and handles alike)', async () => {
    const img = image('counts.img');
    const fs = await openImage(img, true);
    const r = fs.rootId;
    const f = await fs.mknod(r, b('f'), REG);
    await fs.write(f, 0, b('data'));
    await fs.ref(f, 3); // e.g. two kernel lookups and one open handle
    await fs.unlink(r, b('f'));
    await fs.unref(f, 2);
    expect((await fs.read(f, 0, 10)).toString()).toBe('data');
    await fs.unref(f, 1);
    await expect(fs.getattr(f)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(fs.ref(f)).rejects.toMatchObject({ code: 'ENOENT' });
    // ref and unref issued together, unawaited, then an unlink: applied in call order, so
    // the inode is freed by the unlink (no reference leaked by an unref overtaking its ref).
    const g = await fs.mknod(r, b('g'), REG);
    const p1 = fs.ref(g);
    const p2 = fs.unref(g);
    const p3 = fs.unlink(r, b('g'));
    await Promise.all([p1, p2, p3]);
    await expect(fs.getattr(g)).rejects.toMatchObject({ code: 'ENOENT' });
    await fs.close();
    expectFsckClean(img);
  });

  it('works on a read-only engine', async () => {
    const img = image('ro.img');
    const fs = await openImage(img, false);
    await fs.ref(fs.rootId, 2);
    await fs.unref(fs.rootId, 2);
    await expect(fs.ref(12345)).rejects.toMatchObject({ code: 'ENOENT' });
    await fs.close();
  });
});

/** The tree both the engine and the kernel start from (mkfs.ext3 -d). */
function renameSource(): string {
  const src = join(dir, 'rename-src');
  mkdirSync(join(src, 'd1', 'sub'), { recursive: true });
  mkdirSync(join(src, 'd2'), { recursive: true });
  mkdirSync(join(src, 'd3'), { recursive: true });
  mkdirSync(join(src, 'e'), { recursive: true });
  writeFileSync(join(src, 'f1'), 'one');
  writeFileSync(join(src, 'f2'), 'two');
  writeFileSync(join(src, 'd1', 'x'), 'x');
  writeFileSync(join(src, 'd2', 'y'), 'y');
  if (isRoot) execFileSync('chown', ['-R', '0:0', src]);
  return src;
}

const NOREPLACE = 1;
const EXCHANGE = 2;
const WHITEOUT = 4;

/** [old, new, renameat2 flags, outcome]: the outcomes are the kernel's (checked as root below). */
const RENAMES: [string, string, number, string][] = [
  ['f1', 'f2', NOREPLACE, 'EEXIST'],
  ['f1', 'nf', NOREPLACE, 'ok'],
  ['nf', 'f2', EXCHANGE, 'ok'],
  ['d1', 'd2/y', EXCHANGE, 'ok'], // a directory and a file across parents
  ['d2/y', 'd3', EXCHANGE, 'ok'], // two directories across parents
  ['missing', 'f2', EXCHANGE, 'ENOENT'],
  ['f2', 'missing', EXCHANGE, 'ENOENT'],
  ['d3', 'd3/sub', EXCHANGE, 'EINVAL'],
  ['d3/sub', 'd3', EXCHANGE, 'EINVAL'],
  ['f2', 'w1', WHITEOUT, 'ok'],
  ['nf', 'd2/y', WHITEOUT | NOREPLACE, 'EEXIST'],
  ['d3/sub', 'e/sub2', WHITEOUT, 'ok'], // a directory, across parents
  ['f2', 'nf', EXCHANGE | WHITEOUT, 'EINVAL'],
  ['f2', 'nf', EXCHANGE | NOREPLACE, 'EINVAL'],
  ['nf', 'nf', NOREPLACE, 'EEXIST'],
  ['nf', 'nf', EXCHANGE, 'ok'],
  ['w1', 'nf', 0, 'ok'],
  ['d1', 'f2', WHITEOUT, 'ok'], // replaces a whiteout, leaves one
  ['e', 'd2/y', EXCHANGE, 'ok'],
  ['d2/y/sub2', 'd2/y', EXCHANGE, 'EINVAL'],
  ['e', 'd2/y', WHITEOUT, 'ENOTEMPTY'],
  ['nf', 'e', EXCHANGE, 'ok'], // a file and a directory in one parent
  ['nf', 'd2/y/sub2', WHITEOUT, 'ok'], // an empty directory replaced, a whiteout left
];

function flagsOf(n: number): RenameFlags {
  const f: RenameFlags = {};
  if (n & NOREPLACE) f.noreplace = true;
  if (n & EXCHANGE) f.exchange = true;
  if (n & WHITEOUT) f.whiteout = { uid: 0, gid: 0 };
  return f;
}

async function split(fs: Ext3Fs, path: string): Promise<{ dir: InodeId; name: Buffer }> {
  const parts = path.split('/');
  const name = parts.pop()!;
  const d = await resolve(fs, parts.join('/'));
  if (d === null) throw new Error(`no parent for ${path}`);
  return { dir: d, name: b(name) };
}

/** Manifest plus every directory's link count (what '..' fixes show). */
async function snapshot(fs: Ext3Fs): Promise<string[]> {
  const lines = await manifest(fs);
  const links: string[] = [];
  const walk = async (id: InodeId, path: string): Promise<void> => {
    links.push(`${path || '/'} nlink ${(await fs.getattr(id)).nlink}`);
    for (const e of await fs.readdir(id)) if (e.type === 'd') await walk(e.id, `${path}/${e.name.toString('latin1')}`);
  };
  await walk(fs.rootId, '');
  return [...lines, ...links.sort()];
}

describe('rename flags', () => {
  it('noreplace, exchange and whiteout give the kernel outcomes, e2fsck clean after each', async () => {
    const src = renameSource();
    const img = image('rename-engine.img', { src });
    const outcomes: string[] = [];
    for (const [from, to, flags] of RENAMES) {
      const fs = await openImage(img, true);
      const o = await split(fs, from);
      const n = await split(fs, to);
      const out = await fs.rename(o.dir, o.name, n.dir, n.name, flagsOf(flags)).then(
        () => 'ok',
        (e: { code?: string }) => e.code ?? String(e),
      );
      outcomes.push(out);
      await fs.close();
      expectFsckClean(img);
    }
    expect(outcomes.map((o, i) => `${RENAMES[i]!.slice(0, 3).join(' ')} -> ${o}`)).toEqual(
      RENAMES.map((r) => `${r.slice(0, 3).join(' ')} -> ${r[3]}`),
    );
    const fs = await openImage(img, false);
    const mine = await snapshot(fs);
    await fs.close();
    // Spot checks that do not need the kernel.
    for (const w of ['/d1', '/d3/sub', '/nf']) expect(mine).toContain(`${w} c 0 0:0 0 0 `);
    expect(mine).toContain('/d2/y/sub2 d 755 0:0 - - ');
    if (!isRoot) {
      skipNote('rename flags against the kernel', 'needs root for a loop mount');
      return;
    }
    const kimg = image('rename-kernel.img', { src });
    const mnt = join(dir, 'mnt-rename');
    await loopMount(kimg, mnt);
    let kernel: string[];
    try {
      const input = RENAMES.map(([f, t, fl]) => `${f}\t${t}\t${fl}\n`).join('');
      const r = spawnSync('python3', [join(toolsDir, 'renameat2.py')], { cwd: mnt, input, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      kernel = r.stdout.trim().split('\n');
    } finally {
      await unmount(mnt);
    }
    expect(kernel).toEqual(RENAMES.map((r) => r[3]));
    expectFsckClean(kimg);
    const kfs = await openImage(kimg, false);
    const theirs = await snapshot(kfs);
    await kfs.close();
    expect(mine).toEqual(theirs);
  });

  it('a whiteout rename that cannot get an inode fails with ENOSPC and changes nothing', async () => {
    const img = image('whiteout-enospc.img', { sizeK: 2048, inodes: 16 });
    const fs = await openImage(img, true);
    const r = fs.rootId;
    await fs.mknod(r, b('a'), REG);
    let i = 0;
    for (;;) {
      const ok = await fs.mknod(r, b(`fill${i++}`), REG).then(
        () => true,
        () => false,
      );
      if (!ok) break;
    }
    const before = await snapshot(fs);
    await expect(fs.rename(r, b('a'), r, b('b'), { whiteout: { uid: 1, gid: 2 } })).rejects.toMatchObject({ code: 'ENOSPC' });
    expect(await snapshot(fs)).toEqual(before);
    await fs.close();
    expectFsckClean(img);
  });

  it('the whiteout is in the same transaction as the rename (one commit, none between)', async () => {
    const img = image('whiteout-tx.img');
    const fs = await openImage(img, true, { commitIntervalMs: 5000 });
    const r = fs.rootId;
    const d = await fs.mkdir(r, b('d'), DIR);
    await fs.mknod(r, b('a'), REG);
    await fs.sync();
    const commits = fs.stats.commits;
    await fs.rename(r, b('a'), d, b('a'), { whiteout: { uid: 7, gid: 8 } });
    expect(fs.stats.commits).toBe(commits);
    await fs.sync();
    expect(fs.stats.commits).toBe(commits + 1);
    const w = (await fs.lookup(r, b('a')))!;
    const st = await fs.getattr(w);
    expect([st.mode, st.rdev, st.uid, st.gid]).toEqual([0o020000, 0, 7, 8]);
    await fs.close();
    expectFsckClean(img);
  });
});

describe('readers and renames', () => {
  it('lookups and readdir issued together never see half a rename (same dir, across dirs, exchange)', async () => {
    const img = image('atomic.img');
    const fs = await openImage(img, true);
    const r = fs.rootId;
    const d1 = await fs.mkdir(r, b('d1'), DIR);
    const d2 = await fs.mkdir(r, b('d2'), DIR);
    const A = await fs.mknod(d1, b('a'), REG);
    const B = await fs.mknod(d1, b('b'), REG);
    const X = await fs.mkdir(d1, b('x'), DIR);
    for (let i = 0; i < 50; i++) await fs.mknod(d1, b(`pad${i}`), REG);
    let stop = false;
    const violations: string[] = [];
    const writer = (async () => {
      try {
        for (let i = 0; i < 150; i++) {
          await fs.rename(d1, b(i % 2 ? 'c' : 'a'), d1, b(i % 2 ? 'a' : 'c')); // a <-> c within d1
          await fs.rename(i % 2 ? d2 : d1, b('x'), i % 2 ? d1 : d2, b('x')); // x between d1 and d2
          await fs.rename(d1, b('b'), d1, b(i % 2 ? 'a' : 'c'), { exchange: true });
        }
      } finally {
        stop = true;
      }
    })();
    const reader = (async () => {
      let n = 0;
      while (!stop) {
        const [la, lc, lb, x1, x2, list] = await Promise.all([
          fs.lookup(d1, b('a')),
          fs.lookup(d1, b('c')),
          fs.lookup(d1, b('b')),
          fs.lookup(d1, b('x')),
          fs.lookup(d2, b('x')),
          fs.readdir(d1),
        ]);
        const ids = [la, lc, lb].filter((v) => v !== null).sort();
        if (ids.length !== 2 || ids[0] === ids[1] || !ids.every((v) => v === A || v === B)) {
          violations.push(`lookups a=${la} c=${lc} b=${lb}`);
        }
        if ((x1 === null) === (x2 === null)) violations.push(`x in d1=${x1} d2=${x2}`);
        const names = new Set(list.map((e: DirEntry) => e.name.toString()));
        const present = ['a', 'b', 'c'].filter((k) => names.has(k)).length;
        if (present !== 2) violations.push(`readdir shows ${present} of a/b/c`);
        n++;
        await hops(n % 5);
      }
      return n;
    })();
    const [, reads] = await Promise.all([writer, reader]);
    console.log(`readers during renames: ${reads} observation sets, ${violations.length} violations`);
    expect(violations.slice(0, 5)).toEqual([]);
    expect(X).toBeGreaterThan(0);
    await fs.close();
    expectFsckClean(img);
  });
});

describe('readdir snapshots', () => {
  it('hands out one immutable array while the directory is unchanged, a new one after a change', async () => {
    const img = image('snap.img', { sizeK: 32768, inodes: 24000 });
    const fs = await openImage(img, true);
    const r = fs.rootId;
    const d = await fs.mkdir(r, b('big'), DIR);
    for (let i = 0; i < 20000; i++) await fs.mknod(d, b(`entry-${i}`), REG);
    const first = await fs.readdir(d);
    expect(first.length).toBe(20000);
    expect(Object.isFrozen(first)).toBe(true);
    // A FUSE READDIR paging through it: every page indexes the same snapshot.
    let seen = 0;
    for (let off = 0; off < 20000; off += 50) {
      const snap = await fs.readdir(d);
      expect(snap).toBe(first);
      seen += snap.slice(off, off + 50).length;
    }
    expect(seen).toBe(20000);
    await fs.mknod(d, b('later'), REG);
    const second = await fs.readdir(d);
    expect(second).not.toBe(first);
    expect(first.length).toBe(20000);
    expect(second.length).toBe(20001);
    expect(second.some((e) => e.name.equals(b('later')))).toBe(true);
    await fs.rename(d, b('later'), d, b('renamed'));
    const third = await fs.readdir(d);
    expect(third.some((e) => e.name.equals(b('renamed'))) && !third.some((e) => e.name.equals(b('later')))).toBe(true);
    await fs.close();
    const ro = await openImage(img, false);
    const rd = (await resolve(ro, 'big'))!;
    expect(await ro.readdir(rd)).toBe(await ro.readdir(rd));
    await ro.close();
  });
});

describe('dataRanges from the block map', () => {
  it('reports holes as gaps (sparse files skip them), within the size', async () => {
    const img = image('ranges.img', { sizeK: 16384 });
    const fs = await openImage(img, true);
    const r = fs.rootId;
    const bs = fs.blockSize;
    const empty = await fs.mknod(r, b('empty'), REG);
    expect(await fs.dataRanges(empty)).toEqual([]);
    const sparse = await fs.mknod(r, b('sparse'), REG);
    await fs.write(sparse, 10, b('head'));
    await fs.write(sparse, 300 * bs + 5, Buffer.alloc(2 * bs, 1)); // spans 3 blocks
    await fs.truncate(sparse, 5000 * bs); // a hole to the end
    expect(await fs.dataRanges(sparse)).toEqual([
      { offset: 0, length: bs },
      { offset: 300 * bs, length: 3 * bs },
    ]);
    const dense = await fs.mknod(r, b('dense'), REG);
    await fs.write(dense, 0, Buffer.alloc(3 * bs + 7, 2));
    expect(await fs.dataRanges(dense)).toEqual([{ offset: 0, length: 3 * bs + 7 }]);
    const holeOnly = await fs.mknod(r, b('hole-only'), REG);
    await fs.truncate(holeOnly, 1 << 30);
    expect(await fs.dataRanges(holeOnly)).toEqual([]);
    await expect(fs.dataRanges(r)).rejects.toMatchObject({ code: 'EISDIR' });
    await fs.close();
    // The same answers from a read-only open (blocks on disk, no pending data).
    const ro = await openImage(img, false);
    expect(await ro.dataRanges((await resolve(ro, 'sparse'))!)).toEqual([
      { offset: 0, length: bs },
      { offset: 300 * bs, length: 3 * bs },
    ]);
    await ro.close();
  });

  it('equals the kernel SEEK_DATA/SEEK_HOLE map of files the kernel wrote (root)', async () => {
    if (!isRoot) {
      skipNote('dataRanges against the kernel', 'needs root for a loop mount');
      return;
    }
    const img = image('ranges-kernel.img', { sizeK: 65536, blockSize: 4096 });
    const mnt = join(dir, 'mnt-ranges');
    await loopMount(img, mnt);
    let kernel: string;
    try {
      const py = `
import os
def mk(p, pieces, size):
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
    for off, n in pieces: os.pwrite(fd, b'z' * n, off)
    os.ftruncate(fd, size); os.fsync(fd); os.close(fd)
mk('a', [(0, 1), (1 << 20, 9000), (40 << 20, 4096)], 50 << 20)
mk('b', [(12288, 100)], 12388)
mk('c', [], 1 << 24)
mk('d', [(0, 70000)], 70000)
out = []
for p in 'abcd':
    fd = os.open(p, os.O_RDONLY); size = os.fstat(fd).st_size; pos = 0; r = []
    while pos < size:
        try: s = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError: break
        e = os.lseek(fd, s, os.SEEK_HOLE); r.append('%d+%d' % (s, e - s)); pos = e
    os.close(fd); out.append(p + ':' + ','.join(r))
print(' '.join(out))
`;
      kernel = execFileSync('python3', ['-c', py], { cwd: mnt, encoding: 'utf8' }).trim();
    } finally {
      await unmount(mnt);
    }
    const fs = await openImage(img, false);
    const mine: string[] = [];
    for (const p of ['a', 'b', 'c', 'd']) {
      const ranges = await fs.dataRanges((await resolve(fs, p))!);
      mine.push(`${p}:${ranges.map((x) => `${x.offset}+${x.length}`).join(',')}`);
    }
    await fs.close();
    expect(mine.join(' ')).toBe(kernel);
  });
});
