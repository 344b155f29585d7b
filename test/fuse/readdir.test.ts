/**
 * Listing directories through the mount while things happen: on a writable
 * mount every open keeps its own snapshot, so a directory changed during a
 * listing still lists each unchanged entry exactly once; on a read-only
 * mount (no open handles: the kernel pages through READDIRPLUS with fh 0)
 * two listings of one large directory interleaved both see every entry once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { makeSif, makeTempDir, mksquashfs, removeTempDir } from '../tools/helpers.js';
import { skipBecause } from '../tools/skip.js';
import { cleanup, fuseAvailable, logTail, mount, umount } from './helpers.js';

const why = fuseAvailable();
const FILES = 2000;
let dir: string;
let sif: string;

beforeAll(async () => {
  dir = makeTempDir('fuse-readdir');
  if (why) return;
  const big = join(dir, 'tree', 'big');
  mkdirSync(big, { recursive: true });
  for (let i = 0; i < FILES; i++) writeFileSync(join(big, `f${String(i).padStart(5, '0')}`), '');
  await mksquashfs(join(dir, 'tree'), join(dir, 'img.sqfs'));
  sif = join(dir, 'img.sif');
  await makeSif(join(dir, 'img.sqfs'), sif);
}, 300_000);

afterAll(async () => {
  await cleanup();
  await removeTempDir(dir);
});

/** Runs a Python script with the mount point as argv[1]; returns its stdout as JSON. */
async function python(script: string, mnt: string): Promise<unknown> {
  const r = await execa('python3', ['-c', script, mnt], { reject: false, timeout: 120_000 });
  if (r.exitCode !== 0) throw new Error(`python: exit ${r.exitCode}: ${r.stderr}`);
  return JSON.parse(r.stdout) as unknown;
}

/** Names seen more than once in `names`. */
function duplicates(names: string[]): string[] {
  const seen = new Set<string>();
  return names.filter((n) => (seen.has(n) ? true : (seen.add(n), false)));
}

describe('readdir through the mount', () => {
  it('writable: a directory changed while it is listed lists every unchanged entry exactly once', async (ctx) => {
    if (why) skipBecause(ctx, why);
    const mnt = join(dir, 'mnt-rw');
    const log = join(dir, 'rw.log');
    mkdirSync(mnt);
    await mount(['--writable-tmpfs', sif, mnt], log);
    let out: { names: string[]; removed: string[]; added: string[] };
    try {
      // Reads 100 entries (a few READDIRPLUS pages), then removes 50 of the
      // names already read (a listing that re-read the directory by index
      // would now skip 50 unchanged ones) and 250 later ones, adds 300 new
      // ones, then reads on to the end.
      out = (await python(
        `
import os, sys, json
d = os.path.join(sys.argv[1], 'big')
it = os.scandir(d)
names = [next(it).name for _ in range(100)]
removed = names[:50] + ['f%05d' % i for i in range(1000, 1250)]
added = ['g%05d' % i for i in range(300)]
for n in removed: os.unlink(os.path.join(d, n))
for n in added: open(os.path.join(d, n), 'w').close()
names += [e.name for e in it]
print(json.dumps({'names': names, 'removed': removed, 'added': added}))
`,
        mnt,
      )) as typeof out;
    } finally {
      const u = await umount(mnt);
      expect(u.exitCode, u.stderr + logTail(log)).toBe(0);
    }
    const changed = new Set([...out.removed, ...out.added]);
    const unchanged = Array.from({ length: FILES }, (_, i) => `f${String(i).padStart(5, '0')}`).filter((n) => !changed.has(n));
    expect(duplicates(out.names)).toEqual([]);
    const listed = new Set(out.names);
    expect(unchanged.filter((n) => !listed.has(n))).toEqual([]);
    // Nothing but the directory's names, old or new.
    expect(out.names.filter((n) => !/^[fg]\d{5}$/.test(n))).toEqual([]);
  }, 300_000);

  it('read-only: two interleaved listings of one large directory each see every entry once, with one OPENDIR', async (ctx) => {
    if (why) skipBecause(ctx, why);
    const mnt = join(dir, 'mnt-ro');
    const log = join(dir, 'ro.log');
    mkdirSync(mnt);
    await mount(['--stats', sif, mnt], log);
    let out: { a: string[]; b: string[] };
    try {
      out = (await python(
        `
import os, sys, json
d = os.path.join(sys.argv[1], 'big')
a, b = os.scandir(d), os.scandir(d)
la, lb = [], []
done_a = done_b = False
while not (done_a and done_b):
    for _ in range(37):
        if done_a: break
        try: la.append(next(a).name)
        except StopIteration: done_a = True
    for _ in range(53):
        if done_b: break
        try: lb.append(next(b).name)
        except StopIteration: done_b = True
print(json.dumps({'a': la, 'b': lb}))
`,
        mnt,
      )) as typeof out;
    } finally {
      const u = await umount(mnt);
      expect(u.exitCode, u.stderr + logTail(log)).toBe(0);
    }
    const all = Array.from({ length: FILES }, (_, i) => `f${String(i).padStart(5, '0')}`);
    expect([...out.a].sort()).toEqual(all);
    expect([...out.b].sort()).toEqual(all);
    const stats = readFileSync(log, 'utf8');
    const count = (op: string): number => Number(new RegExp(`^\\s+${op}\\s+(\\d+)`, 'm').exec(stats)?.[1] ?? 0);
    expect(count('opendir'), stats).toBe(1);
    expect(count('releasedir'), stats).toBe(0);
    // The 2000 entries took several pages per listing.
    expect(count('readdirplus'), stats).toBeGreaterThan(4);
  }, 300_000);
});
