#!/usr/bin/env node
/**
 * `npm run bench [-- NAME...] [--reps N] [--cold]`: runs the benchmark modules of
 * bench/ (all of them, or the ones named) one after the other and prints each
 * one's markdown table. Every module exports `run(options)` resolving to
 * { table, results } and writes its raw figures under bench/out/. Modules that
 * cannot run here (no root, missing tools) say why and the others still run.
 * Uses the built dist/: run `npx tsc -p tsconfig.json` first. Not part of CI.
 */
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));

/** name -> module file in bench/ (each exports run(options)). */
const MODULES = {
  startup: 'startup.mjs',
  mounts: 'mounts.mjs',
  manifest: 'manifest.mjs',
  'ext3-smallfiles': 'ext3-smallfiles.mjs',
  'ext3-ops': 'ext3-ops.mjs',
  'fuse-read': 'fuse-read.mjs',
  'fuse-floor': 'fuse-floor.mjs',
};

const args = process.argv.slice(2);
const names = [];
const options = {};
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--cold') options.cold = true;
  else if (a === '--reps') options.reps = Number(args[++i]);
  else if (a === '--warm') options.warm = true;
  else if (a === '--only') options.only = args[++i];
  else if (a in MODULES) names.push(a);
  else {
    console.error(
      `bench: unknown argument ${a} (modules: ${Object.keys(MODULES).join(', ')}; options: --reps N, --cold, --warm, --only W1,W2)`,
    );
    process.exit(1);
  }
}

let failed = 0;
for (const name of names.length > 0 ? names : Object.keys(MODULES)) {
  console.log(`\n## ${name}\n`);
  try {
    const mod = await import(pathToFileURL(join(here, MODULES[name])).href);
    const { table, results } = await mod.run(options);
    console.log(table);
    for (const s of results?.skipped ?? []) console.log(`skipped: ${s}`);
  } catch (err) {
    failed++;
    console.log(`${name} did not run: ${err instanceof Error ? err.message : String(err)}`);
  }
}
process.exit(failed > 0 ? 1 : 0);
