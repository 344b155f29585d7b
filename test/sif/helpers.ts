/**
 * Shared fixtures for the SIF tests: temp dirs, running siftool and
 * bin/sifuse, and a SIF with every kind of object made by siftool itself.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { execa } from 'execa';
import { registerSifCommands } from '../../src/commands/sif.js';

export const SIFUSE = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'sifuse');

export function tempDir(tag: string): string {
  return mkdtempSync(join(tmpdir(), `sifuse-sif-${tag}-`));
}

export interface Run {
  exitCode: number;
  stdout: Buffer;
  stderr: string;
}

async function run(cmd: string, args: string[]): Promise<Run> {
  const r = await execa(cmd, args, { reject: false, encoding: 'buffer', stripFinalNewline: false, timeout: 60_000 });
  return { exitCode: r.exitCode ?? -1, stdout: Buffer.from(r.stdout), stderr: Buffer.from(r.stderr).toString('utf8') };
}

export function siftool(...args: string[]): Promise<Run> {
  return run('siftool', args);
}

export function sifuse(...args: string[]): Promise<Run> {
  return run(SIFUSE, args);
}

/** Runs siftool and fails loudly if it does. */
export async function siftoolOk(...args: string[]): Promise<Buffer> {
  const r = await siftool(...args);
  if (r.exitCode !== 0) throw new Error(`siftool ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

export async function sifuseOk(...args: string[]): Promise<Buffer> {
  const r = await sifuse(...args);
  if (r.exitCode !== 0) throw new Error(`sifuse ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

/** Runs async jobs at most `limit` at a time (CLI tests spawn many short processes). */
export async function pool<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

export function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** Deterministic pseudo-random bytes (xorshift32) so fixtures do not depend on the run. */
export function pseudoRandom(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

export const ENTITY = '433FE984155206BD962725E20E8713472A879943';

/** Input files for the objects of the rich SIF. */
export function writeInputs(dir: string): Record<string, string> {
  const files: Record<string, Buffer | string> = {
    def: 'Bootstrap: docker\nFrom: debian:12\n',
    env: 'export A=1\n',
    labels: '{"org.label-schema.build-date": "today"}',
    root: pseudoRandom(10_000, 1),
    overlay: pseudoRandom(6_000, 2),
    data: pseudoRandom(3_000, 3),
    json: '{"a": 1}',
    generic: pseudoRandom(777, 4),
    crypt: pseudoRandom(300, 5),
    sig: '-----BEGIN PGP SIGNATURE-----\nxyz\n-----END PGP SIGNATURE-----\n',
    sbom: '{"bomFormat": "CycloneDX"}',
    empty: '',
    extra: pseudoRandom(1234, 6),
  };
  mkdirSync(dir, { recursive: true });
  const paths: Record<string, string> = {};
  for (const [k, v] of Object.entries(files)) {
    paths[k] = join(dir, `${k}.in`);
    writeFileSync(paths[k]!, v);
  }
  return paths;
}

/**
 * The edits that make the rich SIF, as siftool argument lists after the
 * command name. Every data type siftool 2.8.3 can write, every partition
 * type, groups, an object link, a group link (LinkedID with the group bit,
 * which siftool's --link passes through), names up to 128 bytes, an empty
 * object, deleted slots and a reused slot.
 */
export function richEdits(sif: string, f: Record<string, string>): string[][] {
  return [
    ['add', sif, f.def!, '--datatype', '1', '--filename', 'Singularity'],
    ['add', sif, f.env!, '--datatype', '2', '--groupid', '1'],
    ['add', sif, f.labels!, '--datatype', '3', '--groupid', '1', '--filename', 'labels.json'],
    ['add', sif, f.root!, '--datatype', '4', '--parttype', '2', '--partfs', '1', '--partarch', '2', '--groupid', '1'],
    ['add', sif, f.overlay!, '--datatype', '4', '--parttype', '4', '--partfs', '2', '--partarch', '2', '--groupid', '1'],
    ['add', sif, f.data!, '--datatype', '4', '--parttype', '3', '--partfs', '4', '--partarch', '4', '--alignment', '512'],
    ['add', sif, f.json!, '--datatype', '6', '--groupid', '2', '--filename', 'x'.repeat(128)],
    ['add', sif, f.generic!, '--datatype', '7', '--link', '1'],
    ['add', sif, f.crypt!, '--datatype', '8'],
    ['add', sif, f.sig!, '--datatype', '5', '--signhash', '2', '--signentity', ENTITY, '--link', String(0xf0000001)],
    ['add', sif, f.sbom!, '--datatype', '9', '--sbomformat', 'cyclonedx-json'],
    ['add', sif, f.empty!, '--datatype', '7', '--filename', 'empty'],
    ['add', sif, f.extra!, '--datatype', '4', '--parttype', '1', '--partfs', '3', '--partarch', '12'],
    ['del', '2', sif],
    ['del', '9', sif],
    ['add', sif, f.extra!, '--datatype', '7', '--groupid', '3', '--link', '4'],
  ];
}

/** A SIF made entirely by siftool with the rich edits. */
export async function makeRichSif(dir: string): Promise<string> {
  const sif = join(dir, 'rich.sif');
  const inputs = writeInputs(join(dir, 'inputs'));
  await siftoolOk('new', sif);
  for (const args of richEdits(sif, inputs)) await siftoolOk(...args);
  return sif;
}

/**
 * Runs `sifuse sif ARGS` in-process through the real commander wiring and
 * returns what it wrote to stdout (no process start-up: the same code as
 * bin/sifuse minus cli.ts's error printing, which the CLI tests cover).
 */
export async function sifuseInProcess(...args: string[]): Promise<Buffer> {
  const program = new Command().exitOverride();
  registerSifCommands(program);
  const chunks: Buffer[] = [];
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((chunk: Uint8Array | string) => {
    chunks.push(Buffer.from(chunk as Uint8Array));
    return true;
  }) as typeof process.stdout.write;
  try {
    await program.parseAsync(['sif', ...args], { from: 'user' });
  } finally {
    process.stdout.write = write;
  }
  return Buffer.concat(chunks);
}
