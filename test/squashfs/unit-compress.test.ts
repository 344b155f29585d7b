/**
 * Every compressor mksquashfs offers, through whole images and block by block:
 * decoding, the output bound (a block may not expand past its limit), garbage
 * input, and the xz BCJ/delta filters the xz library itself does not know.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import * as zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CorruptError } from '../../src/errors.js';
import { decompressorFor } from '../../src/squashfs/compress/index.js';
import { decodeXzStream } from '../../src/squashfs/compress/xz.js';
import { FileRegion } from '../../src/io/file-region.js';
import { openSquashfs } from '../../src/squashfs/index.js';
import { mksquashfs, openFile, pseudoRandom, readAll, removeDir, tempDir, textData } from './unit-fixtures.js';

const require = createRequire(import.meta.url);

let work: string;
let src: string;
const files: Record<string, Buffer> = {};

beforeAll(() => {
  work = tempDir('comp');
  src = join(work, 'src');
  mkdirSync(src);
  files['text'] = textData(200_000);
  files['random'] = pseudoRandom(150_000, 3);
  files['small'] = Buffer.from('tail-packed small file\n');
  for (const [name, data] of Object.entries(files)) writeFileSync(join(src, name), data);
  // Real x86-64 machine code, so -Xbcj x86 wins on some blocks.
  files['code'] = readFileSync('/usr/bin/bash').subarray(0, 384 * 1024);
  writeFileSync(join(src, 'code'), files['code']);
});
afterAll(() => removeDir(work));

const CASES: { name: string; id: number; args: string[] }[] = [
  { name: 'gzip', id: 1, args: ['-comp', 'gzip', '-Xcompression-level', '6'] },
  { name: 'lzma (legacy)', id: 2, args: ['-comp', 'lzma'] },
  { name: 'lzo', id: 3, args: ['-comp', 'lzo'] },
  { name: 'lzo lzo1x_1', id: 3, args: ['-comp', 'lzo', '-Xalgorithm', 'lzo1x_1'] },
  { name: 'xz', id: 4, args: ['-comp', 'xz'] },
  { name: 'xz -Xbcj x86,arm', id: 4, args: ['-comp', 'xz', '-Xbcj', 'x86,arm'] },
  { name: 'lz4', id: 5, args: ['-comp', 'lz4'] },
  { name: 'lz4 -Xhc', id: 5, args: ['-comp', 'lz4', '-Xhc'] },
  { name: 'zstd', id: 6, args: ['-comp', 'zstd', '-Xcompression-level', '19'] },
];

/** Block headers of the xz streams in an image, as filter counts. */
function xzFilterCounts(image: Buffer): number[] {
  const magic = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);
  const counts: number[] = [];
  for (let at = image.indexOf(magic); at >= 0; at = image.indexOf(magic, at + 6)) counts.push((image[at + 13]! & 3) + 1);
  return counts;
}

describe('compressors through mksquashfs images', () => {
  for (const c of CASES) {
    it(`reads every file: ${c.name}`, async () => {
      const path = mksquashfs(src, join(work, `${CASES.indexOf(c)}.sqfs`), c.args);
      const fs = await openFile(path);
      try {
        expect(fs.superblock.compression).toBe(c.id);
        for (const [name, data] of Object.entries(files)) {
          expect((await readAll(fs, `/${name}`)).equals(data), name).toBe(true);
        }
      } finally {
        await fs.close();
      }
      if (c.args.includes('-Xbcj')) {
        // The BCJ path really ran: some block carries a filter before LZMA2.
        expect(xzFilterCounts(readFileSync(path)).some((n) => n === 2)).toBe(true);
      }
    });
  }

  // gzip from a file goes through sifuse_block instead (unit-file.test.ts).
  it('reads the same with read-ahead decompressed on the thread pool', async () => {
    for (const comp of ['xz', 'lz4', 'lzma']) {
      const path = mksquashfs(src, join(work, `pool-${comp}.sqfs`), ['-comp', comp]);
      const fs = await openSquashfs(await FileRegion.open(path), { poolReadAhead: true, readAheadBlocks: 8 });
      const pooled = fs.decompressor.decompressAsync!;
      let calls = 0;
      fs.decompressor.decompressAsync = (input, max) => {
        calls++;
        return pooled(input, max);
      };
      try {
        for (const name of ['code', 'text']) {
          const id = (await fs.lookup(fs.rootId, Buffer.from(name)))!;
          const parts: Buffer[] = [];
          // 32 KiB reads: the second one is sequential and starts read-ahead of whole 128 KiB blocks.
          for (let pos = 0; pos < files[name]!.length; pos += 32768) parts.push(Buffer.from(await fs.read(id, pos, 32768)));
          expect(Buffer.concat(parts).equals(files[name]!), `${comp} ${name}`).toBe(true);
        }
        expect(calls, comp).toBeGreaterThan(0);
      } finally {
        fs.decompressor.decompressAsync = pooled;
        await fs.close();
      }
    }
  });

  it('decodes compressor options', async () => {
    const fs = await openFile(mksquashfs(src, join(work, 'opts.sqfs'), ['-comp', 'lz4', '-Xhc']));
    try {
      expect(fs.compressorOptions).toEqual({ version: 1, flags: 1 });
    } finally {
      await fs.close();
    }
  });
});

describe('xz filters and checks (streams made by the xz tool)', () => {
  const data = Buffer.concat([pseudoRandom(50_000, 11), readFileSync('/usr/bin/bash').subarray(0, 150_000)]);
  const variants: [string, string[]][] = [
    ['x86', ['--x86', '--lzma2=preset=0']],
    ['powerpc', ['--powerpc', '--lzma2=preset=0']],
    ['ia64', ['--ia64', '--lzma2=preset=0']],
    ['arm', ['--arm', '--lzma2=preset=0']],
    ['armthumb', ['--armthumb', '--lzma2=preset=0']],
    ['sparc', ['--sparc', '--lzma2=preset=0']],
    ['x86 with start offset', ['--x86=start=4096', '--lzma2=preset=0']],
    ['delta', ['--delta=dist=4', '--lzma2=preset=0']],
    ['check none', ['--check=none', '-0']],
    ['check crc64', ['--check=crc64', '-0']],
    ['check sha256', ['--check=sha256', '-0']],
  ];
  for (const [name, args] of variants) {
    it(`decodes ${name}`, () => {
      const stream = execFileSync('xz', ['--format=xz', '--check=crc32', ...args, '-c'], { input: data, maxBuffer: 1 << 24 });
      expect(decodeXzStream(stream, 1 << 20).equals(data)).toBe(true);
    });
  }

  it('refuses a stream whose check does not match', () => {
    const stream = execFileSync('xz', ['--format=xz', '--check=crc32', '-0', '-c'], { input: data, maxBuffer: 1 << 24 });
    const bad = Buffer.from(stream);
    // The CRC32 check sits just before the index; the index starts after it.
    const indexAt = bad.length - 12 - 12 - 4; // stream footer (12), a one-record index (12 bytes here)
    bad[indexAt - 1]! ^= 0xff;
    expect(() => decodeXzStream(bad, 1 << 20)).toThrow(CorruptError);
  });
});

describe('decompressor bounds and garbage', () => {
  const plain = textData(50_000);
  const lz4napi = require('lz4-napi') as { compressSync(d: Buffer): Buffer };
  const zstdNapi = require('zstd-napi') as { compress(d: Buffer): Buffer };
  const lzoLib = require('lzo') as { compress(d: Buffer): Buffer };
  const lzmaAlone = (): Buffer => {
    const s = Buffer.from(execFileSync('xz', ['--format=lzma', '-c'], { input: plain }));
    s.writeBigUInt64LE(BigInt(plain.length), 5); // squashfs-tools fills in the size; the xz tool streams "unknown"
    return s;
  };
  const blocks: Record<number, () => Buffer> = {
    1: () => zlib.deflateSync(plain),
    2: lzmaAlone,
    3: () => lzoLib.compress(plain),
    4: () => execFileSync('xz', ['--format=xz', '--check=crc32', '-c'], { input: plain }),
    5: () => lz4napi.compressSync(plain).subarray(4),
    6: () => zstdNapi.compress(plain),
  };
  for (const id of [1, 2, 3, 4, 5, 6]) {
    const d = decompressorFor(id);
    it(`${d.name}: decodes within the limit, refuses past it, rejects garbage`, () => {
      const block = blocks[id]!();
      expect(d.decompress(block, 65536).equals(plain)).toBe(true);
      expect(() => d.decompress(block, 40_000)).toThrow(CorruptError);
      expect(() => d.decompress(pseudoRandom(3000, id), 65536)).toThrow(CorruptError);
      expect(() => d.decompress(block.subarray(0, block.length >> 1), 65536)).toThrow(CorruptError);
      expect(() => d.decompress(Buffer.alloc(0), 65536)).toThrow(CorruptError);
    });
  }

  it('refuses an unknown compressor id', () => {
    expect(() => decompressorFor(9)).toThrow(/unknown SquashFS compressor id 9/);
  });
});
