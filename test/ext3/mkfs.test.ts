import { execa } from 'execa';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UnsupportedError, UsageError } from '../../src/errors.js';
import { FileRegion } from '../../src/io/file-region.js';
import { MemoryRegion } from '../../src/io/memory-region.js';
import { backupGroups, defaultJournalBlocks, mkfsExt3, planGeometry, sizeType } from '../../src/ext3/mkfs.js';
import { openJournalFile } from '../../src/ext3/journal/journal-file.js';
import { tempDir } from './journal-helpers.js';

const MiB = 1024 * 1024;
const UUID = '11111111-2222-4333-8444-555555555555';
const SEED = '66666666-7777-4888-9999-aaaaaaaaaaaa';
const NOW = 1700000000;
const hex = (u: string) => Buffer.from(u.replace(/-/g, ''), 'hex');

let dir: string;
beforeAll(() => {
  dir = tempDir('sifuse-mkfs-');
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function sparseFile(name: string, bytes: number): string {
  const file = path.join(dir, name);
  fs.rmSync(file, { force: true });
  fs.writeFileSync(file, '');
  fs.truncateSync(file, bytes);
  return file;
}

async function ours(name: string, bytes: number, deterministic: boolean): Promise<string> {
  const file = sparseFile(name, bytes);
  const store = await FileRegion.open(file, { writable: true });
  try {
    await mkfsExt3(store, deterministic ? { uuid: hex(UUID), hashSeed: hex(SEED), now: NOW } : {});
  } finally {
    await store.close();
  }
  return file;
}

async function reference(name: string, bytes: number, deterministic: boolean): Promise<string> {
  const file = sparseFile(name, bytes);
  const args = deterministic ? ['-U', UUID, '-E', `hash_seed=${SEED}`] : [];
  await execa('mkfs.ext3', ['-q', '-F', ...args, file], {
    env: deterministic ? { E2FSPROGS_FAKE_TIME: String(NOW) } : {},
  });
  return file;
}

/** Block numbers (in `bs` units) where two files differ, streaming 1 MiB at a time. */
function differingBlocks(a: string, b: string, bs: number): number[] {
  const fa = fs.openSync(a, 'r');
  const fb = fs.openSync(b, 'r');
  try {
    const size = fs.fstatSync(fa).size;
    expect(fs.fstatSync(fb).size).toBe(size);
    const ba = Buffer.alloc(MiB);
    const bb = Buffer.alloc(MiB);
    const out: number[] = [];
    for (let off = 0; off < size; off += MiB) {
      const n = fs.readSync(fa, ba, 0, MiB, off);
      fs.readSync(fb, bb, 0, MiB, off);
      if (ba.subarray(0, n).equals(bb.subarray(0, n))) continue;
      for (let k = 0; k < n; k += bs) {
        if (!ba.subarray(k, k + bs).equals(bb.subarray(k, k + bs))) out.push((off + k) / bs);
      }
    }
    return out;
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
}

/** dumpe2fs -h without the fields that differ between any two runs of mkfs. */
async function dumpHeader(file: string): Promise<string> {
  const r = await execa('dumpe2fs', ['-h', file]);
  return r.stdout
    .split('\n')
    .filter((l) => !/UUID|Hash Seed|time|Last checked|created|Lifetime writes|Checksum/i.test(l))
    .join('\n');
}

describe('mkfs geometry', () => {
  it('follows mke2fs.conf size types and the default journal sizes', () => {
    expect(sizeType(2 * MiB)).toBe('floppy');
    expect(sizeType(3 * MiB)).toBe('small');
    expect(sizeType(512 * MiB - 1)).toBe('small');
    expect(sizeType(512 * MiB)).toBe('default');
    expect(sizeType(4 * 1024 * 1024 * MiB)).toBe('big');
    expect(defaultJournalBlocks(2047)).toBe(-1);
    expect(defaultJournalBlocks(65536)).toBe(4096);
    expect(defaultJournalBlocks(523264)).toBe(8192);
    expect(backupGroups(50)).toEqual([1, 3, 5, 7, 9, 25, 27, 49]);
    const g = planGeometry(64 * MiB);
    expect(g).toMatchObject({
      blockSize: 1024,
      blocksCount: 65536,
      groupCount: 8,
      inodesPerGroup: 2048,
      reservedGdtBlocks: 255,
      journalBlocks: 4096,
    });
    expect(planGeometry(512 * MiB).blockSize).toBe(4096);
  });

  it('refuses sizes it cannot format', async () => {
    expect(() => planGeometry(0)).toThrow(UsageError);
    expect(() => planGeometry(100 * 1024)).toThrow(UsageError);
    expect(() => planGeometry(17 * 1024 * 1024 * MiB)).toThrow(UnsupportedError);
    const tooSmall = new MemoryRegion(Buffer.alloc(4096));
    await expect(mkfsExt3(tooSmall, { bytes: 8192 })).rejects.toThrow(UsageError);
    await expect(mkfsExt3(tooSmall, { bytes: 64 * MiB })).rejects.toThrow(/does not fit/);
  });
});

describe('mkfs output equals mkfs.ext3', () => {
  // 2: floppy; 64: Apptainer's default; 129: a short last group is dropped;
  // 300 (journal spilling into group 1) and 520: either side of the 1 KiB/4 KiB switch.
  it.each([2, 64, 129, 300, 520])('is byte-identical to mkfs.ext3 for %i MiB (same UUID, seed, time)', async (mib) => {
    const bytes = mib * MiB;
    const a = await reference(`ref-${mib}.img`, bytes, true);
    const b = await ours(`ours-${mib}.img`, bytes, true);
    const bs = planGeometry(bytes).blockSize;
    expect(differingBlocks(a, b, bs)).toEqual([]);
    fs.rmSync(a);
    fs.rmSync(b);
  });

  it('with random UUID and seed: same dumpe2fs header as mkfs.ext3, e2fsck clean, journal readable', async () => {
    const a = await reference('ref-rand.img', 100 * MiB, false);
    const b = await ours('ours-rand.img', 100 * MiB, false);
    expect(await dumpHeader(b)).toBe(await dumpHeader(a));
    const fsck = await execa('e2fsck', ['-fn', b], { reject: false });
    expect(fsck.exitCode, fsck.stdout).toBe(0);
    const header = (await execa('dumpe2fs', ['-h', b])).stdout;
    expect(header).toMatch(/Filesystem features:\s+has_journal ext_attr resize_inode dir_index filetype sparse_super large_file/);
    expect(header).toMatch(/Default directory hash:\s+half_md4/);
    const store = await FileRegion.open(b);
    const jf = await openJournalFile(store);
    expect(jf.map.length).toBe(4096);
    await store.close();
    // Two runs differ in UUID and hash seed.
    const c = await ours('ours-rand2.img', 100 * MiB, false);
    const uuids = await Promise.all(
      [b, c].map(async (f) => /UUID:\s+(\S+)/.exec((await execa('dumpe2fs', ['-h', f])).stdout)![1]),
    );
    expect(uuids[0]).not.toBe(uuids[1]);
    for (const f of [a, b, c]) fs.rmSync(f);
  });

  it('grows with e2fsck -f && resize2fs through the reserved GDT blocks', async () => {
    const file = await ours('grow.img', 64 * MiB, false);
    fs.truncateSync(file, 300 * MiB);
    await execa('e2fsck', ['-fy', file], { reject: false });
    await execa('resize2fs', [file]);
    const fsck = await execa('e2fsck', ['-fn', file], { reject: false });
    expect(fsck.exitCode, fsck.stdout).toBe(0);
    expect((await execa('dumpe2fs', ['-h', file])).stdout).toMatch(/Block count:\s+307200/);
    fs.rmSync(file);
  });
});
