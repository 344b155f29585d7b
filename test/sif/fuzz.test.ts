/**
 * Hostile SIFs: 1,200 mutations of a siftool-made SIF (byte flips in the
 * header and descriptors, truncations, huge and negative offsets and sizes,
 * random field values) opened, printed, read and edited in-process; only
 * CorruptError/UsageError may come out, a failed edit leaves the bytes as
 * they were, a successful edit leaves a SIF that opens again. Mutants we
 * accept are printed exactly as siftool prints them; a sample goes through
 * bin/sifuse.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isFileProblem } from '../../src/errors.js';
import { DESCRIPTOR_SIZE } from '../../src/sif/descriptor.js';
import { MemoryStorage, SifImage } from '../../src/sif/index.js';
import { descriptorJson, formatHeader, formatInfo, formatList, headerJson } from '../../src/sif/report.js';
import { makeRichSif, pool, siftool, sifuse, tempDir } from './helpers.js';

let dir: string;
let base: Buffer;

beforeAll(async () => {
  dir = tempDir('fuzz');
  base = readFileSync(await makeRichSif(dir));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Seeded xorshift32 so a failing case can be replayed from its number. */
function rng(seed: number): () => number {
  let x = (seed * 2654435761) >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

const TABLE = 4096;
const USED_SLOTS = 13;
const INT64_FIELDS = [0x11, 0x19, 0x21, 0x29, 0x31];
const HEADER_INT64 = [0x40, 0x48, 0x50, 0x58, 0x60, 0x68, 0x70, 0x78];
const NASTY = [0n, 1n, -1n, 1n << 62n, -(1n << 62n), (1n << 63n) - 1n, -(1n << 63n), 4096n, 32176n, BigInt(2 ** 53), 1n << 40n];

function mutate(seed: number): { bytes: Buffer; kind: string } {
  const r = rng(seed);
  const int = (n: number) => Math.floor(r() * n);
  let b = Buffer.from(base);
  const kind = ['header-flip', 'descriptor-flip', 'truncate', 'int64', 'int32', 'garbage'][seed % 6]!;
  const slotStart = () => TABLE + int(USED_SLOTS + 1) * DESCRIPTOR_SIZE;
  switch (kind) {
    case 'header-flip':
      for (let i = 0, n = 1 + int(4); i < n; i++) b[int(128)]! ^= 1 << int(8);
      break;
    case 'descriptor-flip':
      for (let i = 0, n = 1 + int(4); i < n; i++) b[slotStart() + int(DESCRIPTOR_SIZE)]! ^= 1 << int(8);
      break;
    case 'truncate':
      b = b.subarray(0, int(b.length));
      break;
    case 'int64': {
      const v = r() < 0.6 ? NASTY[int(NASTY.length)]! : BigInt(int(2 ** 31)) * BigInt(int(2 ** 20)) - (1n << 45n);
      if (r() < 0.3) b.writeBigInt64LE(v, HEADER_INT64[int(HEADER_INT64.length)]!);
      else b.writeBigInt64LE(v, slotStart() + INT64_FIELDS[int(INT64_FIELDS.length)]!);
      break;
    }
    case 'int32': {
      const field = [0x00, 0x05, 0x09, 0x0d, 0xc9, 0xcd][int(6)]!;
      const v = [0, 1, 2, 4, 0x4004, 0x4005, 0x4009, 0x400b, 0x5000, 0xf0000001, 0xffffffff][int(11)]!;
      b.writeUInt32LE(v, slotStart() + field);
      break;
    }
    case 'garbage': {
      const at = r() < 0.5 ? int(128) : slotStart();
      for (let i = 0, n = 1 + int(64); i < n && at + i < b.length; i++) b[at + i] = int(256);
      break;
    }
  }
  return { bytes: b, kind };
}

function expectClean(err: unknown, where: string): void {
  if (!isFileProblem(err)) {
    throw new Error(`${where}: not a clean error: ${err instanceof Error ? err.stack : String(err)}`);
  }
  expect(err.describe()).not.toContain('\n');
}

/** Opens, prints and reads everything; returns the printed list/header when the mutant is accepted. */
interface Printed {
  list: string;
  header: string;
  /** One object's `info` (ID and text, or the error siftool also stops with). */
  info?: { id: number; text: string; error?: string };
}

async function exercise(bytes: Buffer, where: string, seed: number): Promise<Printed | undefined> {
  let image: SifImage;
  try {
    image = await SifImage.fromBytes(Buffer.from(bytes), 'fuzz.sif');
  } catch (err) {
    expectClean(err, where);
    return undefined;
  }
  const list = formatList(image.descriptors());
  const header = formatHeader(image.header);
  JSON.stringify(headerJson(image));
  const all = image.descriptors();
  const picked = all[seed % Math.max(1, all.length)];
  const info = picked ? { id: picked.id, ...formatInfo(picked) } : undefined;
  for (const d of all) {
    formatInfo(d);
    JSON.stringify(descriptorJson(d));
    if (d.size <= 1 << 20) expect((await image.readObject(d.id)).length).toBe(d.size);
  }
  const edits: [string, (img: SifImage) => Promise<unknown>][] = [
    ['add', (img) => img.add({ dataType: 0x4007, data: Buffer.from('fuzz'), groupId: null })],
    [
      'add-partition',
      (img) => img.add({ dataType: 0x4004, data: Buffer.from('part'), partition: { fsType: 1, partType: 2, arch: 'arm64' } }),
    ],
    ['delete', (img) => img.delete(img.descriptors()[0]?.id ?? 1, { compact: true })],
    ['setprim', (img) => img.setPrimary(img.descriptors((d) => d.partition !== undefined).pop()?.id ?? 1)],
  ];
  // Two of the four edits per case (rotating), to keep the run short.
  for (const [name, edit] of [edits[seed % 4]!, edits[(seed + 1) % 4]!]) {
    const storage = new MemoryStorage(Buffer.from(bytes), { name: 'fuzz.sif' });
    const img = await SifImage.fromStorage(storage);
    try {
      await edit(img);
    } catch (err) {
      expectClean(err, `${where} ${name}`);
      expect(storage.bytes.equals(bytes), `${where} ${name}: failed edit changed the bytes`).toBe(true);
      continue;
    }
    await SifImage.fromBytes(storage.bytes, 'edited.sif').catch((err: unknown) => {
      throw new Error(`${where} ${name}: edit left an invalid SIF: ${String(err)}`);
    });
  }
  return { list, header, info };
}

describe('fuzzing the SIF library', () => {
  it('1,200 mutated SIFs give only clean errors; accepted ones print as siftool does', async () => {
    const CASES = 1200;
    const t0 = Date.now();
    const accepted: ({ seed: number; bytes: Buffer } & Printed)[] = [];
    const kinds: Record<string, number> = {};
    let rejected = 0;
    for (let seed = 1; seed <= CASES; seed++) {
      const { bytes, kind } = mutate(seed);
      kinds[kind] = (kinds[kind] ?? 0) + 1;
      const out = await exercise(bytes, `case ${seed} (${kind})`, seed);
      if (out) accepted.push({ seed, bytes, ...out });
      else rejected++;
    }
    console.info(
      `sif fuzz: ${Date.now() - t0} ms in-process; ${CASES} cases, ${accepted.length} accepted, ${rejected} rejected cleanly, by kind ${JSON.stringify(kinds)}`,
    );
    // Both outcomes must be well represented for the test to mean something.
    expect(rejected).toBeGreaterThan(300);
    expect(accepted.length).toBeGreaterThan(300);

    // Differential check against siftool on a sample of accepted mutants.
    const sample = accepted.filter((_, i) => i % Math.ceil(accepted.length / 40) === 0);
    const results = await pool(sample, 4, async (a) => {
      const path = join(dir, `accepted-${a.seed}.sif`);
      writeFileSync(path, a.bytes);
      const [list, header, info] = await Promise.all([
        siftool('list', path),
        siftool('header', path),
        a.info ? siftool('info', String(a.info.id), path) : undefined,
      ]);
      return { a, list, header, info };
    });
    for (const { a, list, header, info } of results) {
      expect(list.exitCode, `case ${a.seed}: siftool list failed: ${list.stderr}`).toBe(0);
      expect(a.list, `case ${a.seed} list`).toBe(list.stdout.toString('latin1'));
      expect(a.header, `case ${a.seed} header`).toBe(header.stdout.toString('latin1'));
      if (info && a.info) {
        expect(info.exitCode, `case ${a.seed} info exit`).toBe(a.info.error ? 1 : 0);
        expect(a.info.text, `case ${a.seed} info`).toBe(info.stdout.toString('latin1'));
      }
    }
  });

  it('20 mutated SIFs through bin/sifuse: exit 0, or exit 1 with one clean line', async () => {
    const seeds = Array.from({ length: 20 }, (_, i) => 5000 + i * 7);
    const results = await pool(seeds, 3, async (seed) => {
      const path = join(dir, `cli-${seed}.sif`);
      writeFileSync(path, mutate(seed).bytes);
      return { seed, r: await sifuse('sif', 'list', path) };
    });
    let failures = 0;
    for (const { seed, r } of results) {
      expect([0, 1], `case ${seed}`).toContain(r.exitCode);
      if (r.exitCode === 1) {
        failures++;
        expect(r.stderr, `case ${seed}`).toMatch(/^sifuse: \S*cli-\d+\.sif: [^\n]+\n$/);
        expect(r.stderr, `case ${seed}`).not.toMatch(/internal error/);
      } else {
        expect(r.stdout.toString('latin1'), `case ${seed}`).toMatch(/^-{78}\nID   \|GROUP/);
      }
    }
    expect(failures).toBeGreaterThan(0);
  });
});
