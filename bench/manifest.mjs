#!/usr/bin/env node
/**
 * `sifuse manifest` of the bookworm image against the reference tools:
 *   - `unsquashfs -lln` (metadata listing only: no file data is read; `sifuse ls -l -R`
 *     is the like-for-like sifuse row),
 *   - `unsquashfs -d DIR` followed by sha256sum of every file (what a manifest
 *     computes, through the reference extractor).
 * The image is BENCHMARKS.md's: debootstrap minbase bookworm (scripts/make-rootfs.sh),
 * `mksquashfs DIR root.sqfs -noappend -all-root -comp gzip`, wrapped in a SIF with
 * siftool; both are cached under ${SIFUSE_CACHE:-/var/tmp/sifuse-cache}.
 *
 * Runs are interleaved (A B C D, A B C D, ...) after one warm-up round; each is
 * timed by /usr/bin/time (wall, user+sys CPU, peak RSS). With --cold (root only)
 * the page cache is dropped before every run; otherwise the runs are warm and the
 * table says so. Prints a markdown table of medians with ratios to sifuse and
 * writes the raw figures to bench/out/manifest.json. Uses the built dist/ (run
 * `npx tsc -p tsconfig.json` first). Not part of CI; no timing assertions.
 *
 *   node bench/manifest.mjs [--reps 5] [--cold]
 *
 * Also importable: `run(options)` resolves to { table, results } (for bench/run.mjs).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchImage } from './lib/images.mjs';
import { median } from './lib/stats.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

function dropCaches() {
  execFileSync('sync');
  writeFileSync('/proc/sys/vm/drop_caches', '3');
}

/** Runs `sh -c script` under /usr/bin/time; returns { wall, cpu, rssMiB } (seconds, MiB). */
function timed(script) {
  const out = join(tmpdir(), `sifuse-bench-time-${process.pid}`);
  const r = spawnSync('/usr/bin/time', ['-f', '%e %U %S %M', '-o', out, 'sh', '-c', script], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  if (r.status !== 0) throw new Error(`failed (exit ${r.status}): ${script}\n${r.stderr}`);
  const [wall, user, sys, rss] = readFileSync(out, 'utf8').trim().split('\n').pop().split(' ').map(Number);
  rmSync(out, { force: true });
  return { wall, cpu: user + sys, rssMiB: Math.round(rss / 1024) };
}

export async function run(options = {}) {
  const reps = options.reps ?? 5;
  const cold = Boolean(options.cold) && isRoot;
  const skipped = [];
  if (options.cold && !isRoot) skipped.push('--cold: dropping the page cache needs root; runs are warm');
  if (!existsSync(join(root, 'dist', 'cli.js'))) throw new Error('dist/cli.js is missing: run `npx tsc -p tsconfig.json`');
  const { sqfs, sif } = await benchImage('minbase');
  const sifuse = join(root, 'bin', 'sifuse');
  const extractDir = join(tmpdir(), `sifuse-bench-extract-${process.pid}`);
  const q = (s) => `'${s.replace(/'/g, `'\\''`)}'`;
  const workloads = [
    { name: 'sifuse manifest root.sqfs', script: `${q(sifuse)} manifest ${q(sqfs)} > /dev/null` },
    { name: 'sifuse manifest root.sif', script: `${q(sifuse)} manifest ${q(sif)} > /dev/null` },
    { name: 'sifuse ls -l -R root.sqfs (metadata only)', script: `${q(sifuse)} ls -l -R ${q(sqfs)} > /dev/null` },
    { name: 'unsquashfs -lln', script: `unsquashfs -lln ${q(sqfs)} > /dev/null` },
    {
      name: 'unsquashfs -d + sha256sum of every file',
      script:
        `unsquashfs -q -n -d ${q(extractDir)} ${q(sqfs)} > /dev/null && ` +
        `find ${q(extractDir)} -type f -print0 | xargs -0 -r sha256sum > /dev/null`,
      after: () => rmSync(extractDir, { recursive: true, force: true }),
    },
  ];
  const samples = Object.fromEntries(workloads.map((w) => [w.name, []]));
  const loadBefore = loadavg();
  for (let round = 0; round <= reps; round++) {
    for (const w of workloads) {
      if (cold) dropCaches();
      const t = timed(w.script);
      w.after?.();
      if (round > 0) samples[w.name].push(t); // round 0 warms the page cache and the code paths
    }
  }
  const loadAfter = loadavg();
  const med = (name, key) => median(samples[name].map((s) => s[key]));
  const base = workloads[0].name;
  const rows = workloads.map((w) => {
    const wall = med(w.name, 'wall');
    const cpu = med(w.name, 'cpu');
    return {
      workload: w.name,
      wall,
      cpu,
      rssMiB: med(w.name, 'rssMiB'),
      sifuseOverThisWall: med(base, 'wall') / wall,
      sifuseOverThisCpu: med(base, 'cpu') / cpu,
    };
  });
  const fmt = (x) => x.toFixed(2);
  const table = [
    `manifest of the bookworm minbase image (${statSync(sqfs).size} bytes), ${reps} interleaved runs, ` +
      `${cold ? 'cold (page cache dropped before each run)' : 'warm page cache'}, ` +
      `load average ${loadBefore[0].toFixed(1)} -> ${loadAfter[0].toFixed(1)}`,
    '',
    '| workload | wall s (median) | CPU s (median) | peak RSS MiB | sifuse .sqfs / this, wall | sifuse .sqfs / this, CPU |',
    '|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.workload} | ${fmt(r.wall)} | ${fmt(r.cpu)} | ${r.rssMiB} | ${fmt(r.sifuseOverThisWall)} | ${fmt(r.sifuseOverThisCpu)} |`,
    ),
  ].join('\n');
  const results = { image: { sqfs, sif, bytes: statSync(sqfs).size }, reps, cold, loadBefore, loadAfter, samples, rows, skipped };
  mkdirSync(join(root, 'bench', 'out'), { recursive: true });
  writeFileSync(join(root, 'bench', 'out', 'manifest.json'), JSON.stringify(results, null, 2) + '\n');
  return { table, results };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  const opts = {};
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--cold') opts.cold = true;
    else if (args[i] === '--reps') opts.reps = Number(args[++i]);
    else {
      console.error(`manifest: unknown option ${args[i]}`);
      process.exit(1);
    }
  }
  run(opts).then(
    ({ table, results }) => {
      console.log(table);
      for (const s of results.skipped) console.log(`skipped: ${s}`);
    },
    (err) => {
      console.error(`manifest: ${err.message}`);
      process.exit(1);
    },
  );
}
