/**
 * bin/sifuse and bin/launch.cjs (the start-up path of scripts/bundle.mjs):
 * the bundle runs with its V8 code cache, a rejected cache is rewritten, the
 * launcher drops NODE_EXTRA_CA_CERTS before node starts, and --debug or
 * SIFUSE_DEBUG=1 run the unbundled dist/cli.js (source maps), --debug passed on.
 * Needs `npm run build` (npm test runs it first).
 */
import { execa } from 'execa';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDir, repoRoot, sifuseBin } from './helpers.js';

const bundle = join(repoRoot, 'dist', 'bundle', 'cli.cjs');
const version = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')).version as string;
let work: string;

beforeAll(() => {
  work = makeTempDir('launcher');
});
afterAll(async () => removeTempDir(work));

describe('launcher', () => {
  it('the build made the bundle and its code cache', () => {
    expect(existsSync(bundle)).toBe(true);
    expect(readFileSync(join(repoRoot, 'dist', 'bundle', 'cli.cache')).length).toBeGreaterThan(1000);
  });

  it('the build’s code cache is accepted (launch.cjs sets the V8 flags it was made with)', async () => {
    const dir = join(work, 'accepted');
    mkdirSync(join(dir, 'bin'), { recursive: true });
    mkdirSync(join(dir, 'dist', 'bundle'), { recursive: true });
    copyFileSync(join(repoRoot, 'bin', 'launch.cjs'), join(dir, 'bin', 'launch.cjs'));
    copyFileSync(bundle, join(dir, 'dist', 'bundle', 'cli.cjs'));
    const cache = join(dir, 'dist', 'bundle', 'cli.cache');
    copyFileSync(join(repoRoot, 'dist', 'bundle', 'cli.cache'), cache);
    const before = readFileSync(cache);
    const r = await execa(process.execPath, [join(dir, 'bin', 'launch.cjs'), '--version'], { reject: false });
    expect(r.exitCode).toBe(0);
    // A rejected cache would have been rewritten at exit.
    expect(readFileSync(cache).equals(before)).toBe(true);
  });

  it('a rejected code cache still runs and is rewritten', async () => {
    // A copy of the layout launch.cjs expects: bin/launch.cjs beside dist/bundle/.
    mkdirSync(join(work, 'bin'));
    mkdirSync(join(work, 'dist', 'bundle'), { recursive: true });
    copyFileSync(join(repoRoot, 'bin', 'launch.cjs'), join(work, 'bin', 'launch.cjs'));
    copyFileSync(bundle, join(work, 'dist', 'bundle', 'cli.cjs'));
    const cache = join(work, 'dist', 'bundle', 'cli.cache');
    const garbage = Buffer.alloc(4096, 0x5a);
    writeFileSync(cache, garbage);
    const r = await execa(process.execPath, [join(work, 'bin', 'launch.cjs'), '--version'], { reject: false });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.trim()).toBe(version);
    const rewritten = readFileSync(cache);
    expect(rewritten.equals(garbage)).toBe(false);
    expect(rewritten.length).toBeGreaterThan(1000);
  });

  it('drops NODE_EXTRA_CA_CERTS (node would warn about the missing file)', async () => {
    const env = { ...process.env, NODE_EXTRA_CA_CERTS: join(work, 'no-such-ca.pem') };
    const direct = await execa(process.execPath, ['-e', '0'], { env, reject: false });
    expect(direct.stderr).toMatch(/extra certs/i);
    const r = await execa(sifuseBin, ['--version'], { env, reject: false });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.trim()).toBe(version);
    expect(r.stderr).toBe('');
  });

  it('SIFUSE_DEBUG=1 runs dist/cli.js with source maps: the whole error object is printed', async () => {
    const env = { ...process.env, SIFUSE_DEBUG: '1' };
    const bad = await execa(sifuseBin, ['ls', join(work, 'missing.sif')], { env, reject: false });
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr).toMatch(/code: 'ENOENT'/);
    expect(bad.stderr).toMatch(/^sifuse: ENOENT: .*missing\.sif/m);
    const plain = await execa(sifuseBin, ['ls', join(work, 'missing.sif')], { reject: false });
    expect(plain.stderr).not.toMatch(/code: 'ENOENT'/);
    expect(plain.stderr).toMatch(/^sifuse: ENOENT: .*missing\.sif/m);
  });

  it('--debug is passed on to the command unchanged', async () => {
    // ls has no --debug option: commander refuses it by name, so the flag reached the CLI.
    const r = await execa(sifuseBin, ['ls', '--debug', join(work, 'x.sif')], { reject: false });
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/unknown option '--debug'/);
  });
});
