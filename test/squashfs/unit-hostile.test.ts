/**
 * Hostile input: hundreds of corrupted images (flipped bytes, truncations)
 * opened and walked in-process must end in a clean error naming the image, or
 * in a result; never a crash, a hang or a foreign exception. Then targeted
 * corruptions per decoder: superblock fields, metadata block sizes, a
 * directory that contains its own ancestor, fragment indexes out of range,
 * absurd file sizes.
 */
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CorruptError, FsError, UnsupportedError } from '../../src/errors.js';
import { manifestLines } from '../../src/inspect/manifest.js';
import { resolvePath } from '../../src/inspect/path.js';
import { MemoryRegion } from '../../src/io/memory-region.js';
import { openSquashfs } from '../../src/squashfs/index.js';
import { decodeFragmentEntry } from '../../src/squashfs/fragment-table.js';
import { mksquashfs, openBytes, pseudoRandom, removeDir, setXattr, tempDir, textData } from './unit-fixtures.js';

const NAME = 'hostile.sqfs';
let work: string;
let gzipImage: Buffer;
let plainImage: Buffer; // -noI -noD -noF -noX: tables readable and patchable in place

beforeAll(() => {
  work = tempDir('hostile');
  const src = join(work, 'src');
  mkdirSync(join(src, 'a/b'), { recursive: true });
  writeFileSync(join(src, 'a/b/deep.txt'), 'deep\n');
  writeFileSync(join(src, 'small'), 'small file in a fragment\n');
  writeFileSync(join(src, 'blocks'), textData(300_000));
  writeFileSync(join(src, 'random'), pseudoRandom(20_000, 5));
  symlinkSync('a/b/deep.txt', join(src, 'link'));
  setXattr(join(src, 'small'), 'user.k', Buffer.from('value'));
  for (let i = 0; i < 40; i++) writeFileSync(join(src, `a/f${i}`), `file ${i}\n`);
  gzipImage = readFileSync(mksquashfs(src, join(work, 'gzip.sqfs'), ['-b', '64K']));
  plainImage = readFileSync(mksquashfs(src, join(work, 'plain.sqfs'), ['-noI', '-noD', '-noF', '-noX', '-b', '64K']));
});
afterAll(() => removeDir(work));

/** Opens and walks everything; returns 'ok' or the error, which must be a clean one. */
async function walkAll(bytes: Buffer): Promise<'ok' | Error> {
  try {
    const fs = await openSquashfs(new MemoryRegion(bytes, { name: NAME, writable: false }));
    for await (const line of manifestLines(fs, '/')) expect(line.length).toBeGreaterThan(0);
    await fs.close();
    return 'ok';
  } catch (err) {
    return err as Error;
  }
}

function expectClean(result: 'ok' | Error, what: string): void {
  if (result === 'ok') return;
  const clean = result instanceof CorruptError || result instanceof UnsupportedError || result instanceof FsError;
  expect(clean, `${what}: ${result.name}: ${result.message}`).toBe(true);
  if (result instanceof CorruptError || result instanceof UnsupportedError) expect(result.file, what).toBe(NAME);
}

/** Deterministic positions: xorshift over the seed. */
function positions(count: number, limit: number, seed: number): number[] {
  let x = seed;
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out.push(x % limit);
  }
  return out;
}

describe('corrupted images end in clean errors', () => {
  it('survives 160 single-byte flips in a gzip image', async () => {
    const sbEnd = 96;
    const metaStart = Number(gzipImage.readBigUInt64LE(0x40));
    const used = Number(gzipImage.readBigUInt64LE(0x28));
    // A third in the superblock, the rest in metadata and tables, where a
    // flip changes structure rather than only file content.
    const spots = [...positions(50, sbEnd, 17), ...positions(110, used - metaStart, 23).map((p) => p + metaStart)];
    const outcomes = { ok: 0, failed: 0 };
    for (const at of spots) {
      const bad = Buffer.from(gzipImage);
      bad[at]! ^= 1 << (at % 8);
      const r = await walkAll(bad);
      expectClean(r, `flip at ${at}`);
      outcomes[r === 'ok' ? 'ok' : 'failed']++;
    }
    expect(outcomes.failed).toBeGreaterThan(30);
  });

  it('survives 160 byte overwrites in an uncompressed image (tables decoded raw)', async () => {
    const metaStart = Number(plainImage.readBigUInt64LE(0x40));
    const used = Number(plainImage.readBigUInt64LE(0x28));
    const values = [0x00, 0xff, 0x7f, 0x80, 0x01];
    let failed = 0;
    for (const [k, p] of positions(160, used - metaStart, 99).entries()) {
      const at = metaStart + p;
      const bad = Buffer.from(plainImage);
      bad[at] = values[k % values.length]!;
      const r = await walkAll(bad);
      expectClean(r, `byte ${values[k % values.length]} at ${at}`);
      if (r !== 'ok') failed++;
    }
    expect(failed).toBeGreaterThan(20);
  });

  it('survives truncation at 60 lengths', async () => {
    // mksquashfs pads the image to 4 KiB; only bytes_used matter.
    const used = Number(gzipImage.readBigUInt64LE(0x28));
    for (const len of [0, 1, 50, 95, 96, 97, used - 1, ...positions(53, used, 5)]) {
      const r = await walkAll(gzipImage.subarray(0, len));
      expect(r, `truncated to ${len}`).not.toBe('ok');
      expectClean(r, `truncated to ${len}`);
    }
    expect(await walkAll(gzipImage.subarray(0, used))).toBe('ok');
  });
});

describe('targeted corruptions', () => {
  const patched = (f: (b: Buffer) => void): Buffer => {
    const b = Buffer.from(gzipImage);
    f(b);
    return b;
  };

  it('names what is wrong with a superblock', async () => {
    const cases: [string, (b: Buffer) => void, RegExp][] = [
      ['magic', (b) => b.write('hsqt', 0), /not a SquashFS image/],
      ['version', (b) => b.writeUInt16LE(3, 0x1c), /version 3\.0 is not supported/],
      ['block size', (b) => b.writeUInt32LE(100_000, 0x0c), /block_size 100000/],
      ['block log', (b) => b.writeUInt16LE(12, 0x16), /block_log 12 does not match/],
      ['compressor', (b) => b.writeUInt16LE(7, 0x14), /unknown SquashFS compressor id 7/],
      ['bytes used', (b) => b.writeBigUInt64LE(BigInt(b.length + 1), 0x28), /bytes_used .*does not fit .*truncated/],
      ['table order', (b) => b.writeBigUInt64LE(50n, 0x40), /inode_table_start overlaps/],
      ['inode count', (b) => b.writeUInt32LE(0xffffffff, 0x04), /inode count 4294967295 is impossible/],
      ['no ids', (b) => b.writeUInt16LE(0, 0x1a), /no_ids is 0/],
    ];
    for (const [what, patch, message] of cases) {
      const r = await walkAll(patched(patch));
      expect(r, what).toBeInstanceOf(Error);
      expect((r as Error).message, what).toMatch(message);
      expectClean(r, what);
    }
  });

  it('refuses a metadata block claiming more than 8 KiB', async () => {
    const inodeTable = Number(gzipImage.readBigUInt64LE(0x40));
    const r = await walkAll(patched((b) => b.writeUInt16LE(0x7fff, inodeTable)));
    expect((r as Error).message).toMatch(/metadata block at \d+ has invalid size 32767/);
    expectClean(r, 'metadata size');
  });

  /** Absolute position of an inode in the (single, uncompressed) inode table of plainImage. */
  const inodeAt = (ref: number): number => Number(plainImage.readBigUInt64LE(0x40)) + Math.floor(ref / 65536) + 2 + (ref % 65536);

  it('detects a directory that contains its ancestor, and path lookups through it stay bounded', async () => {
    const fs = await openBytes(plainImage, NAME);
    const a = (await fs.lookup(fs.rootId, Buffer.from('a')))!;
    const b = (await fs.lookup(a, Buffer.from('b')))!;
    const root = fs.rootId;
    await fs.close();
    // Find b's entry in a's listing (uncompressed directory table) and point it at the root inode.
    const dirTable = Number(plainImage.readBigUInt64LE(0x48));
    const bad = Buffer.from(plainImage);
    const nameAt = bad.indexOf(Buffer.from([0, 0, 0x62]), dirTable) + 2; // size field 0 (1-byte name) then "b"
    expect(bad[nameAt]).toBe(0x62);
    const entryAt = nameAt - 8;
    expect(bad.readUInt16LE(entryAt)).toBe(b % 65536);
    bad.writeUInt16LE(root % 65536, entryAt);
    // The header's start_block is shared by the run; root and b live in the same (only) inode block here.
    expect(Math.floor(root / 65536)).toBe(Math.floor(b / 65536));
    const r = await walkAll(bad);
    expect((r as Error).message).toMatch(/directory appears twice in the tree/);
    expectClean(r, 'loop');
    const looped = await openBytes(bad, NAME);
    const id = await resolvePath(looped, '/a/b/a/b/a/b/a/b/link', { followLast: false });
    expect((await looped.readlink(id)).toString()).toBe('a/b/deep.txt');
    expect(await resolvePath(looped, '/a/b/a/b/a/b/small')).toBe(await resolvePath(looped, '/small'));
    await looped.close();
  });

  it('refuses a fragment index past the fragment table', async () => {
    const fs = await openBytes(plainImage, NAME);
    const small = (await fs.lookup(fs.rootId, Buffer.from('random')))!;
    const inode = await fs.inode(small);
    await fs.close();
    expect(inode.kind).toBe('f');
    const at = inodeAt(small);
    const bad = Buffer.from(plainImage);
    const type = bad.readUInt16LE(at);
    // basic reg: fragment at 0x14; extended reg: at 0x2c
    bad.writeUInt32LE(500, at + (type === 2 ? 0x14 : 0x2c));
    const r = await walkAll(bad);
    expect((r as Error).message).toMatch(/uses fragment 500, but there are \d+/);
    expectClean(r, 'fragment index');
  });

  it('refuses a file size its block list cannot back', async () => {
    const fs = await openBytes(plainImage, NAME);
    const id = (await fs.lookup(fs.rootId, Buffer.from('blocks')))!;
    await fs.close();
    const at = inodeAt(id);
    const bad = Buffer.from(plainImage);
    expect(bad.readUInt16LE(at)).toBe(2);
    bad.writeUInt32LE(0xfffffff0, at + 0x1c); // file_size: 65535 blocks of 64 KiB
    const r = await walkAll(bad);
    expectClean(r, 'file size');
    expect(r).toBeInstanceOf(CorruptError);
  });

  it('refuses a symlink of absurd length and an invalid inode type', async () => {
    const fs = await openBytes(plainImage, NAME);
    const link = (await fs.lookup(fs.rootId, Buffer.from('link')))!;
    await fs.close();
    const at = inodeAt(link);
    const long = Buffer.from(plainImage);
    long.writeUInt32LE(1 << 30, at + 0x14);
    expect(((await walkAll(long)) as Error).message).toMatch(/symlink target of 1073741824 bytes is invalid/);
    const typed = Buffer.from(plainImage);
    typed.writeUInt16LE(15, at);
    expect(((await walkAll(typed)) as Error).message).toMatch(/invalid type 15/);
  });

  it('refuses a fragment entry whose size has bits set above the uncompressed flag', () => {
    const entry = Buffer.alloc(16);
    entry.writeBigUInt64LE(96n, 0x00);
    entry.writeUInt32LE(100 | (1 << 24), 0x08); // a valid, uncompressed 100-byte fragment
    expect(decodeFragmentEntry(entry, 4096, 4096)).toEqual({ start: 96, size: 100, compressed: false });
    for (const bit of [25, 31]) {
      entry.writeUInt32LE((100 | (1 << bit)) >>> 0, 0x08);
      expect(() => decodeFragmentEntry(entry, 4096, 4096)).toThrow(CorruptError);
    }
  });
});
