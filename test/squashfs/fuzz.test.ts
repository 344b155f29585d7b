/**
 * Hostile-image fuzzing of the SquashFS reader: corrupted copies of small
 * mksquashfs images (several compressors, uncompressed tables, 4 KiB blocks)
 * are opened in-process with openSquashfs over a MemoryRegion and walked
 * completely (getattr, readdir, lookup, read, readlink, listxattr/getxattr,
 * statfs). Every operation must end in a value or in CorruptError,
 * UnsupportedError or FsError; nothing may hang (per-case bound through
 * Promise.race, and the test's own timeout as the total bound) or allocate far
 * more than the image justifies (the process's peak RSS is tracked per case).
 *
 * SIFUSE_FUZZ_CASES (default 1000) sets the number of cases, SIFUSE_FUZZ_SEED
 * (default 1) the seed: every case is reproducible from (seed, index), and a
 * failure report names both with the mutation applied.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { CorruptError, FsError, UnsupportedError } from '../../src/errors.js';
import { MemoryRegion } from '../../src/io/memory-region.js';
import { openSquashfs } from '../../src/squashfs/index.js';
import type { InodeId, ReadableFs } from '../../src/engine.js';
import { makeTempDir, makeTree, manifestLines, mksquashfs, removeTempDir, treeManifest } from '../tools/helpers.js';

const CASES = Math.max(1, Number(process.env.SIFUSE_FUZZ_CASES ?? 1000));
const SEED = Number(process.env.SIFUSE_FUZZ_SEED ?? 1) >>> 0;
/** One case may take this long before it counts as a hang (generous: the machine may be loaded). */
const CASE_TIMEOUT_MS = 20_000;
/** The whole run's bound (a case here takes ~10-40 ms; a synchronous endless loop ends here). */
const TOTAL_TIMEOUT_MS = 120_000 + CASES * 150;
/** Peak RSS growth (bytes) allowed for one case, and for the whole run. */
const CASE_RSS_LIMIT = 256 << 20;
const TOTAL_RSS_LIMIT = 768 << 20;
/** Walk bounds, so that a corrupted image cannot make the harness itself run away. */
const MAX_NAMES = 5000;
const MAX_READ_PER_FILE = 512 << 10;

interface Base {
  name: string;
  bytes: Buffer;
  /** Share of the cases using this base (weights). */
  weight: number;
}

const BASES: { name: string; args: string[]; weight: number }[] = [
  // Uncompressed tables and data: byte flips reach the decoders instead of the decompressors.
  { name: 'uncompressed', args: ['-noI', '-noD', '-noF', '-noX'], weight: 4 },
  { name: 'gzip', args: [], weight: 2 },
  { name: 'gzip-4K-blocks', args: ['-b', '4K'], weight: 1 },
  { name: 'xz', args: ['-comp', 'xz'], weight: 1 },
  { name: 'lz4', args: ['-comp', 'lz4'], weight: 1 },
  { name: 'zstd', args: ['-comp', 'zstd'], weight: 1 },
  { name: 'lzo', args: ['-comp', 'lzo'], weight: 1 },
  { name: 'lzma', args: ['-comp', 'lzma', '-no-fragments'], weight: 1 },
];

/** xorshift32: small, deterministic, enough for choosing mutations. */
class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let x = this.s;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
  int(n: number): number {
    return n <= 0 ? 0 : this.next() % n;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
}

/** Superblock fields (squashfs_fs.h struct squashfs_super_block): [name, offset, width]. */
const SB_FIELDS: [string, number, 2 | 4 | 8][] = [
  ['s_magic', 0x00, 4],
  ['inodes', 0x04, 4],
  ['block_size', 0x0c, 4],
  ['fragments', 0x10, 4],
  ['compression', 0x14, 2],
  ['block_log', 0x16, 2],
  ['flags', 0x18, 2],
  ['no_ids', 0x1a, 2],
  ['s_major', 0x1c, 2],
  ['root_inode', 0x20, 8],
  ['bytes_used', 0x28, 8],
  ['id_table_start', 0x30, 8],
  ['xattr_id_table_start', 0x38, 8],
  ['inode_table_start', 0x40, 8],
  ['directory_table_start', 0x48, 8],
  ['fragment_table_start', 0x50, 8],
  ['lookup_table_start', 0x58, 8],
];

function interesting(rng: Rng, size: number, original: bigint): bigint {
  const choices = [
    0n,
    1n,
    2n,
    0x7fn,
    0xffn,
    0x7fffn,
    0x8000n,
    0xffffn,
    0x7fffffffn,
    0x80000000n,
    0xffffffffn,
    0x100000000n,
    0x7fffffffffffffffn,
    0xffffffffffffffffn,
    BigInt(size),
    BigInt(size) - 1n,
    BigInt(size) + 1n,
    original + 1n,
    original - 1n,
    original + 8192n,
    original * 2n,
    BigInt(rng.next()),
  ];
  return rng.pick(choices);
}

function writeField(buf: Buffer, at: number, width: 2 | 4 | 8, value: bigint): void {
  if (at + width > buf.length) return;
  const mask = (1n << BigInt(width * 8)) - 1n;
  const v = ((value % (mask + 1n)) + (mask + 1n)) & mask;
  if (width === 2) buf.writeUInt16LE(Number(v), at);
  else if (width === 4) buf.writeUInt32LE(Number(v), at);
  else buf.writeBigUInt64LE(v, at);
}

function readField(buf: Buffer, at: number, width: 2 | 4 | 8): bigint {
  if (width === 2) return BigInt(buf.readUInt16LE(at));
  if (width === 4) return BigInt(buf.readUInt32LE(at));
  return buf.readBigUInt64LE(at);
}

/** Start of the metadata tables (inode table) of a pristine image, and its used size. */
function layout(image: Buffer): { tables: number; used: number } {
  const tables = Number(image.readBigUInt64LE(0x40));
  const used = Number(image.readBigUInt64LE(0x28));
  return { tables, used };
}

/** Positions of metadata block headers, found by chaining u16 lengths from the inode table. */
function metadataHeaders(image: Buffer): number[] {
  const { tables, used } = layout(image);
  const out: number[] = [];
  let pos = tables;
  while (pos + 2 <= used && out.length < 10_000) {
    out.push(pos);
    const len = image.readUInt16LE(pos) & 0x7fff;
    if (len === 0) break;
    pos += 2 + len;
  }
  return out;
}

/** Applies one seeded mutation to a copy of `image`; returns the bytes and a description. */
function mutate(image: Buffer, rng: Rng): { bytes: Buffer; what: string } {
  const buf = Buffer.from(image);
  const { tables, used } = layout(image);
  const flips = (lo: number, hi: number, count: number): string => {
    const at: number[] = [];
    for (let i = 0; i < count; i++) {
      const p = lo + rng.int(Math.max(1, hi - lo));
      if (p < buf.length) {
        buf[p] = rng.int(4) === 0 ? rng.int(256) : buf[p]! ^ (1 << rng.int(8));
        at.push(p);
      }
    }
    return at.join(',');
  };
  switch (rng.int(10)) {
    case 0:
      return { bytes: buf, what: `flip anywhere @${flips(0, used, 1 + rng.int(16))}` };
    case 1:
      return { bytes: buf, what: `flip superblock @${flips(0, 96, 1 + rng.int(3))}` };
    case 2: {
      const [name, at, width] = rng.pick(SB_FIELDS);
      const v = interesting(rng, buf.length, readField(buf, at, width));
      writeField(buf, at, width, v);
      return { bytes: buf, what: `superblock ${name} = ${v}` };
    }
    case 3:
      return { bytes: buf, what: `flip tables @${flips(tables, used, 1 + rng.int(8))}` };
    case 4: {
      const headers = metadataHeaders(image);
      const at = headers.length > 0 ? rng.pick(headers) : tables;
      const v = rng.pick([0, 1, 0x7fff, 0x8000, 0x8001, 0xffff, 0x2001, 0x8000 | 8193, rng.int(0x10000)]);
      if (at + 2 <= buf.length) buf.writeUInt16LE(v, at);
      return { bytes: buf, what: `metadata header @${at} = 0x${v.toString(16)}` };
    }
    case 5: {
      // An interesting 16/32/64-bit value inside the tables: counts, sizes, offsets, references.
      const width = rng.pick([2, 4, 4, 8] as const);
      const at = tables + rng.int(Math.max(1, used - tables - width));
      const v = interesting(rng, buf.length, readField(buf, at, width));
      writeField(buf, at, width, v);
      return { bytes: buf, what: `tables u${width * 8} @${at} = ${v}` };
    }
    case 6:
      return { bytes: buf, what: `flip data @${flips(96, tables, 1 + rng.int(8))}` };
    case 7: {
      const len = rng.pick([0, 1, 95, 96, 97, tables, tables + 1, rng.int(used), used - 1, used - 8, rng.int(buf.length)]);
      return { bytes: buf.subarray(0, Math.max(0, Math.min(len, buf.length))), what: `truncate to ${len}` };
    }
    case 8: {
      const at = rng.int(used);
      const len = 1 + rng.int(4096);
      buf.fill(rng.pick([0, 0xff]), at, Math.min(at + len, buf.length));
      return { bytes: buf, what: `fill ${len} bytes @${at}` };
    }
    default: {
      // Copy a run of the tables over another place: duplicated headers and references (cycles).
      const from = tables + rng.int(Math.max(1, used - tables));
      const to = tables + rng.int(Math.max(1, used - tables));
      const len = 1 + rng.int(256);
      image.copy(buf, to, from, Math.min(from + len, image.length));
      return { bytes: buf, what: `splice ${len} bytes ${from} -> ${to}` };
    }
  }
}

function isClean(err: unknown): boolean {
  return err instanceof CorruptError || err instanceof UnsupportedError || err instanceof FsError;
}

interface WalkStats {
  names: number;
  bytesRead: number;
  /** Errors that are not CorruptError/UnsupportedError/FsError. */
  bad: unknown[];
  clean: number;
}

/** Runs `op`, sorting its failure into clean or bad; undefined on failure. */
async function attempt<T>(stats: WalkStats, op: () => Promise<T>): Promise<T | undefined> {
  try {
    return await op();
  } catch (err) {
    if (isClean(err)) stats.clean++;
    else stats.bad.push(err);
    return undefined;
  }
}

/** Visits every name once (directories entered once per inode, so cycles end), exercising every operation. */
async function walk(fs: ReadableFs, stats: WalkStats): Promise<void> {
  await attempt(stats, () => fs.statfs());
  const seenDirs = new Set<InodeId>();
  const queue: InodeId[] = [fs.rootId];
  stats.names++;
  await visit(fs, fs.rootId, stats);
  while (queue.length > 0 && stats.names < MAX_NAMES) {
    const dir = queue.shift()!;
    if (seenDirs.has(dir)) continue;
    seenDirs.add(dir);
    const entries = await attempt(stats, () => fs.readdir(dir));
    if (!entries) continue;
    for (const entry of entries) {
      if (stats.names >= MAX_NAMES) break;
      stats.names++;
      // On a corrupted listing lookup may legitimately find another entry (duplicate names): only errors count.
      await attempt(stats, () => fs.lookup(dir, entry.name));
      const type = await visit(fs, entry.id, stats);
      if (type === 'd' || entry.type === 'd') queue.push(entry.id);
    }
    await attempt(stats, () => fs.lookup(dir, Buffer.from('no such name here')));
  }
}

async function visit(fs: ReadableFs, id: InodeId, stats: WalkStats): Promise<string | undefined> {
  const st = await attempt(stats, () => fs.getattr(id));
  const names = await attempt(stats, () => fs.listxattr(id));
  for (const name of names ?? []) await attempt(stats, () => fs.getxattr(id, name));
  await attempt(stats, () => fs.getxattr(id, Buffer.from('user.absent')));
  if (!st) return undefined;
  const type = (st.mode & 0o170000) >>> 12;
  if (type === 0o12) await attempt(stats, () => fs.readlink(id));
  if (type === 0o10) {
    // The start, a window past the first blocks, and the end: bounded however large the size claims to be.
    const size = st.size;
    const windows: [number, number][] = [[0, Math.min(size, MAX_READ_PER_FILE)]];
    if (size > MAX_READ_PER_FILE) windows.push([Math.max(0, size - 70_000), 70_000]);
    for (const [pos, len] of windows) {
      for (let done = 0; done < len;) {
        const chunk = Math.min(131072, len - done);
        const data = await attempt(stats, () => fs.read(id, pos + done, chunk));
        if (!data || data.length === 0) break;
        stats.bytesRead += data.length;
        done += data.length;
      }
    }
  }
  if (type === 0o04) return 'd';
  return undefined;
}

async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), ms);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

/** A full GC through V8's gc() (exposed at run time: no node flag needed). */
const collectGarbage: () => void = (() => {
  v8.setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
})();

function peakRss(): number {
  return process.resourceUsage().maxRSS * 1024;
}

let dir: string;
const bases: Base[] = [];
let treeEntries = 0;

beforeAll(async () => {
  dir = makeTempDir('fuzz');
  const tree = join(dir, 'tree');
  // Small files and directories, so that one case walks the whole tree in milliseconds.
  await makeTree(tree, { many: 100, depth: 10, seed: 7, small: true });
  treeEntries = manifestLines(await treeManifest(tree)).length;
  for (const b of BASES) {
    const image = join(dir, `${b.name}.sqfs`);
    await mksquashfs(tree, image, b.args);
    bases.push({ name: b.name, bytes: readFileSync(image), weight: b.weight });
  }
}, 300_000);

afterAll(async () => {
  await removeTempDir(dir);
});

async function openAndWalk(bytes: Buffer, stats: WalkStats): Promise<boolean> {
  const fs = await attempt(stats, () => openSquashfs(new MemoryRegion(bytes, { name: 'fuzz.sqfs', writable: false })));
  if (!fs) return false;
  try {
    await walk(fs, stats);
  } finally {
    await attempt(stats, () => fs.close());
  }
  return true;
}

describe('SquashFS reader on corrupted images', () => {
  it('walks every pristine base image completely and cleanly', async () => {
    for (const base of bases) {
      const stats: WalkStats = { names: 0, bytesRead: 0, bad: [], clean: 0 };
      expect(await openAndWalk(base.bytes, stats), base.name).toBe(true);
      expect(stats.bad, base.name).toEqual([]);
      expect(stats.clean, `${base.name}: only the probes for absent names fail`).toBe(0);
      expect(stats.names, base.name).toBe(treeEntries);
      expect(stats.bytesRead, base.name).toBeGreaterThan(100_000);
    }
  }, 120_000);

  it(
    `survives ${CASES} corrupted images with clean errors only (seed ${SEED})`,
    async () => {
      const weighted = bases.flatMap((b) => Array.from({ length: b.weight }, () => b));
      const failures: string[] = [];
      const outcomes = { opened: 0, refused: 0, walkedSomething: 0, cleanErrors: 0 };
      collectGarbage();
      const startRss = peakRss();
      for (let i = 0; i < CASES; i++) {
        const rng = new Rng((SEED * 0x9e3779b1 + i * 0x85ebca6b + 1) >>> 0);
        const base = rng.pick(weighted);
        const { bytes, what } = mutate(base.bytes, rng);
        const label = `case ${i} (seed ${SEED}, ${base.name}, ${what})`;
        const stats: WalkStats = { names: 0, bytesRead: 0, bad: [], clean: 0 };
        const before = peakRss();
        const result = await withTimeout(openAndWalk(bytes, stats), CASE_TIMEOUT_MS);
        const grew = peakRss() - before;
        if (result === 'timeout') failures.push(`${label}: no result within ${CASE_TIMEOUT_MS} ms (hang)`);
        else if (result) outcomes.opened++;
        else outcomes.refused++;
        if (stats.names > 1) outcomes.walkedSomething++;
        outcomes.cleanErrors += stats.clean;
        for (const err of stats.bad.slice(0, 2)) {
          failures.push(`${label}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        }
        if (grew > CASE_RSS_LIMIT) failures.push(`${label}: peak RSS grew by ${Math.round(grew / 2 ** 20)} MiB`);
        if (failures.length >= 20) break;
        // Collect now and then, so that peak RSS measures what the reader retains rather than GC lag.
        if ((i + 1) % 200 === 0) collectGarbage();
        if ((i + 1) % 1000 === 0) {
          const m = process.memoryUsage();
          const mib = (n: number) => Math.round(n / 2 ** 20);
          console.info(
            `fuzz: ${i + 1} cases, rss ${mib(m.rss)} MiB, heap ${mib(m.heapUsed)} MiB, external ${mib(m.external)} MiB, ` +
              `peak +${mib(peakRss() - startRss)} MiB`,
          );
        }
      }
      const totalGrowth = peakRss() - startRss;
      console.info(
        `fuzz: ${CASES} cases, ${outcomes.opened} opened, ${outcomes.refused} refused at open, ` +
          `${outcomes.walkedSomething} walked past the root, ${outcomes.cleanErrors} clean errors, ` +
          `peak RSS +${Math.round(totalGrowth / 2 ** 20)} MiB`,
      );
      expect(failures.join('\n\n')).toBe('');
      expect(totalGrowth).toBeLessThan(TOTAL_RSS_LIMIT);
      // The harness must reach past the superblock checks, or it proves nothing.
      expect(outcomes.walkedSomething).toBeGreaterThan(CASES / 10);
    },
    TOTAL_TIMEOUT_MS,
  );
});
