#!/usr/bin/env node
/**
 * `npm run build`, second step (after tsc): one CommonJS bundle of the CLI,
 * dist/bundle/cli.cjs, and its V8 code cache, dist/bundle/cli.cache.
 *
 * Why: loading ~100 ESM modules (plus their source maps) was 70% of a
 * `sifuse ls` start; one script whose compiled code V8 takes from the cache
 * starts in a fraction of that (numbers in bench/startup.mjs). bin/launch.cjs
 * runs the bundle with the cache and rewrites the cache when V8 rejects it
 * (another Node version or flags).
 *
 * Native addons (our build/Release/*.node and the decompressor packages) stay
 * outside the bundle and load with require() at first use, as from dist/.
 * The bundle lives two directories below the package root, like
 * dist/native/load.js, so the addon paths computed from import.meta.url
 * resolve the same way.
 */
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outDir = join(root, 'dist', 'bundle');
rmSync(outDir, { recursive: true, force: true });

await build({
  entryPoints: [join(root, 'src', 'cli.ts')],
  outfile: join(outDir, 'cli.cjs'),
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: ['*.node', 'lzo', 'zstd-napi', 'zstd-napi/*', 'lz4-napi', '@napi-rs/lzma', '@napi-rs/lzma/*'],
  // import.meta.url of whichever source module asks: in one bundle it is the bundle's.
  define: { 'import.meta.url': '__sifuseBundleUrl' },
  banner: { js: 'var __sifuseBundleUrl = require("node:url").pathToFileURL(__filename).href;' },
  logLevel: 'warning',
  legalComments: 'none',
});

// The code cache: run the bundle once through the launcher with every command
// group loaded (--help), so the cache holds the functions a start-up compiles.
const made = spawnSync(process.execPath, [join(root, 'bin', 'launch.cjs'), '--help'], {
  env: { ...process.env, SIFUSE_CODE_CACHE: 'rebuild' },
  stdio: ['ignore', 'ignore', 'inherit'],
});
if (made.status !== 0) {
  console.error(`bundle: making the code cache failed (exit ${made.status})`);
  process.exit(1);
}
