'use strict';
/**
 * Runs dist/bundle/cli.cjs (scripts/bundle.mjs) as one vm.Script with V8's
 * code cache from dist/bundle/cli.cache, so the bundle's functions are not
 * compiled again at every start. When the cache is missing or V8 rejects it
 * (another Node version or V8 flags), the run goes on without it and, at
 * exit, writes a fresh one (atomically: a temp file renamed over it), holding
 * every function this run compiled. A read-only install just runs uncached.
 * SIFUSE_CODE_CACHE=rebuild forces a rewrite (the build uses it).
 *
 * V8's interrupt budget (bytecode run before a function is considered for
 * the optimizing compiler) is raised 4x, from 66 KiB: a sifuse process is
 * short or bursty, and TurboFan compiling every function that is briefly hot
 * was a third of a fresh daemon's CPU over the copy-up workload (perf:
 * OptimizingCompileDispatcher 31%). Set before the script is compiled, so
 * the build's code cache (made through this file) carries the same flag
 * hash and is accepted.
 */
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
require('node:v8').setFlagsFromString('--interrupt-budget=270336');
const { createRequire } = require('node:module');

const dir = path.join(__dirname, '..', 'dist', 'bundle');
const file = path.join(dir, 'cli.cjs');
const cacheFile = path.join(dir, 'cli.cache');

// A leading #! line is only valid at the very start of a file: comment it out.
const source = fs.readFileSync(file, 'utf8').replace(/^#!/, '//');
let cachedData;
const mode = process.env.SIFUSE_CODE_CACHE; // 'rebuild', 'off' (benchmarks) or unset
if (mode !== 'rebuild' && mode !== 'off') {
  try {
    cachedData = fs.readFileSync(cacheFile);
  } catch {
    cachedData = undefined;
  }
}
const wrapped = `(function (exports, require, module, __filename, __dirname) {${source}\n})`;
const script = new vm.Script(wrapped, { filename: file, cachedData, importModuleDynamically: undefined });
if (mode !== 'off' && (cachedData === undefined || script.cachedDataRejected)) {
  process.once('exit', () => {
    try {
      const tmp = `${cacheFile}.${process.pid}`;
      fs.writeFileSync(tmp, script.createCachedData());
      fs.renameSync(tmp, cacheFile);
    } catch {
      // Not writable (an installed copy): the next start runs uncached again.
    }
  });
}
const mod = { exports: {}, filename: file, id: file, loaded: false };
script.runInThisContext()(mod.exports, createRequire(file), mod, file, dir);
