/**
 * Bad input through bin/sifuse: every case prints one line
 * "sifuse: FILE: problem" on stderr, exits 1, never a stack trace, and leaves
 * the SIF byte for byte as it was.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isFileProblem, type CorruptError } from '../../src/errors.js';
import { SifImage } from '../../src/sif/index.js';
import { DESCRIPTOR_SIZE } from '../../src/sif/descriptor.js';
import { makeRichSif, pool, sha256, sifuse, sifuseInProcess, tempDir } from './helpers.js';

let dir: string;
let good: Buffer;
let goodPath: string;
let objectFile: string;

interface Case {
  name: string;
  /** Builds the SIF for this case (from the good one); returns its path. */
  file: () => Promise<string> | string;
  /** sifuse arguments; '%' is the SIF path. */
  args: string[];
  /** What the message must say. */
  message: RegExp;
}

function variant(name: string, edit: (b: Buffer) => Buffer): () => string {
  return () => {
    const path = join(dir, `${name}.sif`);
    writeFileSync(path, edit(Buffer.from(good)));
    return path;
  };
}

const descOffset = (id: number, field: number) => 4096 + (id - 1) * DESCRIPTOR_SIZE + field;

beforeAll(async () => {
  dir = tempDir('bad');
  goodPath = await makeRichSif(dir);
  good = readFileSync(goodPath);
  objectFile = join(dir, 'object.bin');
  writeFileSync(objectFile, 'payload\n');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const cases: Case[] = [
  {
    name: 'not-a-sif',
    file: () => {
      const p = join(dir, 'text.sif');
      writeFileSync(p, 'hello, this is text\n'.repeat(20));
      return p;
    },
    args: ['list', '%'],
    message: /not a SIF image/,
  },
  {
    name: 'empty',
    file: () => {
      const p = join(dir, 'empty.sif');
      writeFileSync(p, '');
      return p;
    },
    args: ['header', '%'],
    message: /not a SIF image/,
  },
  {
    name: 'truncated-header',
    file: variant('trunc-header', (b) => b.subarray(0, 100)),
    args: ['header', '%'],
    message: /truncated SIF header/,
  },
  {
    name: 'wrong-version',
    file: variant('version', (b) => {
      b.write('02', 0x2a, 'latin1');
      return b;
    }),
    args: ['list', '%'],
    message: /unsupported SIF version "02"/,
  },
  {
    name: 'descriptor-table-past-eof',
    file: variant('table-eof', (b) => b.subarray(0, 20_000)),
    args: ['list', '%'],
    message: /descriptor table .* extends past the end of the file/,
  },
  {
    name: 'object-past-eof',
    file: variant('object-eof', (b) => b.subarray(0, b.length - 100)),
    args: ['info', '1', '%'],
    message: /object \d+ .* extends past the end of the file/,
  },
  {
    name: 'overlapping-objects',
    file: variant('overlap', (b) => {
      b.writeBigInt64LE(b.readBigInt64LE(descOffset(1, 0x11)) + 2n, descOffset(3, 0x11));
      return b;
    }),
    args: ['list', '%'],
    message: /objects \d+ .* and \d+ .* overlap/,
  },
  {
    name: 'huge-offset',
    file: variant('huge', (b) => {
      b.writeBigInt64LE(1n << 62n, descOffset(4, 0x11));
      return b;
    }),
    args: ['dump', '4', '%'],
    message: /out of range/,
  },
  {
    name: 'negative-size',
    file: variant('negsize', (b) => {
      b.writeBigInt64LE(-5n, descOffset(1, 0x19));
      return b;
    }),
    args: ['list', '%'],
    message: /bad offset\/size/,
  },
  {
    name: 'table-size-mismatch',
    file: variant('tablesize', (b) => {
      b.writeBigInt64LE(1000n, 0x58);
      return b;
    }),
    args: ['list', '%'],
    message: /descriptor table size 28080 does not match 1000 descriptors/,
  },
  {
    name: 'full-descriptor-table',
    file: async () => {
      const p = join(dir, 'full.sif');
      const image = await SifImage.create(p, {
        descriptorCapacity: 2,
        objects: [
          { dataType: 0x4007, data: Buffer.from('a') },
          { dataType: 0x4007, data: Buffer.from('b') },
        ],
      });
      await image.close();
      return p;
    },
    args: ['add', '%', '@obj', '--datatype', '7'],
    message: /descriptor table is full \(all 2 slots used\)/,
  },
  {
    name: 'unknown-data-type',
    file: () => goodPath,
    args: ['add', '%', '@obj', '--datatype', '12'],
    message: /--datatype must be one of 1\.\.11/,
  },
  { name: 'no-data-type', file: () => goodPath, args: ['add', '%', '@obj'], message: /--datatype must be one of/ },
  {
    name: 'name-too-long',
    file: () => goodPath,
    args: ['add', '%', '@obj', '--datatype', '1', '--filename', 'n'.repeat(129)],
    message: /name is too long \(129 bytes, at most 128\)/,
  },
  {
    name: 'second-primary',
    file: () => goodPath,
    args: ['add', '%', '@obj', '--datatype', '4', '--parttype', '2', '--partfs', '1', '--partarch', '2'],
    message: /already contains a primary partition/,
  },
  {
    name: 'partition-flags-missing',
    file: () => goodPath,
    args: ['add', '%', '@obj', '--datatype', '4', '--parttype', '1'],
    message: /--partfs, --parttype and --partarch must be passed/,
  },
  {
    name: 'bad-entity',
    file: () => goodPath,
    args: ['add', '%', '@obj', '--datatype', '5', '--signhash', '1', '--signentity', 'ABCD'],
    message: /fingerprint length: got 2, want 20/,
  },
  {
    name: 'missing-object-file',
    file: () => goodPath,
    args: ['add', '%', '/nonexistent/object', '--datatype', '1'],
    message: /no such file or directory.*\/nonexistent\/object/,
  },
  { name: 'del-missing-id', file: () => goodPath, args: ['del', '9', '%'], message: /no object with ID 9/ },
  { name: 'setprim-not-partition', file: () => goodPath, args: ['setprim', '1', '%'], message: /object 1 is not a partition/ },
  {
    name: 'setprim-data-partition',
    file: () => goodPath,
    args: ['setprim', '6', '%'],
    message: /object 6 is not a system partition/,
  },
  { name: 'bad-id', file: () => goodPath, args: ['info', 'x1', '%'], message: /invalid object ID "x1"/ },
  {
    name: 'add-to-corrupt',
    file: variant('corrupt-add', (b) => {
      b.writeBigInt64LE(b.readBigInt64LE(descOffset(1, 0x11)) + 2n, descOffset(3, 0x11));
      return b;
    }),
    args: ['add', '%', '@obj', '--datatype', '1'],
    message: /overlap/,
  },
  {
    name: 'add-where-header-data-size-lies',
    file: variant('datasize', (b) => {
      b.writeBigInt64LE(0n, 0x78);
      return b;
    }),
    args: ['add', '%', '@obj', '--datatype', '1'],
    message: /puts a new object at 32176, inside object 1/,
  },
];

/** The list of bad inputs goes through the real binary; the rest in-process (same code, no start-up cost). */
const CLI_CASES = new Set([
  'not-a-sif',
  'empty',
  'truncated-header',
  'wrong-version',
  'descriptor-table-past-eof',
  'object-past-eof',
  'overlapping-objects',
  'full-descriptor-table',
  'unknown-data-type',
  'name-too-long',
  'add-where-header-data-size-lies',
  'missing-object-file',
]);

async function prepare(list: Case[]) {
  const prepared: { c: Case; path: string; before: string }[] = [];
  for (const c of list) {
    const path = await c.file();
    prepared.push({ c, path, before: sha256(path) });
  }
  return prepared;
}

const argsFor = (c: Case, path: string) => c.args.map((a) => (a === '%' ? path : a === '@obj' ? objectFile : a));

describe('bad input to sifuse sif', () => {
  it('through bin/sifuse: one line naming the file, exit 1, file unchanged', async () => {
    const prepared = await prepare(cases.filter((c) => CLI_CASES.has(c.name)));
    expect(prepared.length).toBe(CLI_CASES.size);
    const results = await pool(prepared, 3, ({ c, path }) => sifuse('sif', ...argsFor(c, path)));
    prepared.forEach(({ c, path, before }, i) => {
      const r = results[i]!;
      const label = `${c.name}: ${r.stderr}`;
      expect(r.exitCode, label).toBe(1);
      expect(r.stdout.length, label).toBe(0);
      expect(r.stderr, label).toMatch(/^sifuse: [^\n]+\n$/);
      expect(r.stderr, label).not.toMatch(/internal error|\n\s+at /);
      expect(r.stderr, label).toMatch(c.message);
      if (!/no such file/.test(r.stderr)) expect(r.stderr, label).toContain(path);
      expect(sha256(path), `${c.name}: file changed`).toBe(before);
    });
  });

  it('in-process: a clean UsageError/CorruptError naming the file, file unchanged', async () => {
    const prepared = await prepare(cases.filter((c) => !CLI_CASES.has(c.name)));
    expect(prepared.length).toBeGreaterThan(8);
    for (const { c, path, before } of prepared) {
      const err: unknown = await sifuseInProcess(...argsFor(c, path)).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isFileProblem(err), `${c.name}: ${String(err)}`).toBe(true);
      const line = (err as CorruptError).describe();
      expect(line, c.name).toMatch(c.message);
      expect(line, c.name).toContain(path);
      expect(line, c.name).not.toContain('\n');
      expect(sha256(path), `${c.name}: file changed`).toBe(before);
    }
  });
});
