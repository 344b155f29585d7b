#!/usr/bin/env node
/**
 * ext3 small-file creation: the sifuse engine in-process against the kernel's
 * ext3 on a loop mount (root only), same image geometry, same workload:
 * FILES files of SIZE bytes spread over DIRS directories, then a final sync
 * (the engine's sync(): a journal commit and fdatasync; the kernel: syncfs).
 *
 * Repetitions are interleaved (engine, kernel, engine, kernel, ...), each on a
 * fresh copy of one mkfs.ext3 image, with the page cache dropped before each
 * run when root. Prints a markdown table of medians and the ratio, writes the
 * raw figures to bench/out/ext3-smallfiles.json. Uses the built dist/ (run
 * `npx tsc -p tsconfig.json` first). Not part of CI; no timing assertions.
 *
 *   node bench/ext3-smallfiles.mjs [--files 10000] [--dirs 20] [--size 512] [--reps 5]
 *
 * Also importable: `run(options)` resolves to { table, results } (for bench/run.mjs).
 */
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  copyFileSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { median } from './lib/stats.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

function dropCaches() {
  if (!isRoot) return;
  execFileSync('sync');
  writeFileSync('/proc/sys/vm/drop_caches', '3');
}

function content(i, size) {
  const b = Buffer.alloc(size, 0x61 + (i % 26));
  b.write(`file ${i}\n`);
  return b;
}

async function engineRun(image, o, engine) {
  const store = await engine.FileRegion.open(image, { writable: true });
  const t0 = process.hrtime.bigint();
  const fs = await engine.openExt3(store, { writable: true });
  const tOpen = process.hrtime.bigint();
  const dirs = [];
  for (let d = 0; d < o.dirs; d++) {
    dirs.push(await fs.mkdir(fs.rootId, Buffer.from(`d${d}`), { mode: 0o40755, uid: 0, gid: 0 }));
  }
  for (let i = 0; i < o.files; i++) {
    const id = await fs.mknod(dirs[i % o.dirs], Buffer.from(`f${i}`), { mode: 0o100644, uid: 0, gid: 0 });
    await fs.write(id, 0, content(i, o.size));
  }
  await fs.sync();
  const tSync = process.hrtime.bigint();
  await fs.close();
  const tClose = process.hrtime.bigint();
  return {
    seconds: Number(tSync - t0) / 1e9,
    openSeconds: Number(tOpen - t0) / 1e9,
    closeSeconds: Number(tClose - tSync) / 1e9,
  };
}

function kernelRun(image, o, mnt) {
  mkdirSync(mnt, { recursive: true });
  execFileSync('mount', ['-t', 'ext3', '-o', 'loop', image, mnt]);
  try {
    const t0 = process.hrtime.bigint();
    for (let d = 0; d < o.dirs; d++) mkdirSync(join(mnt, `d${d}`), { mode: 0o755 });
    for (let i = 0; i < o.files; i++) {
      const fd = openSync(join(mnt, `d${i % o.dirs}`, `f${i}`), 'wx', 0o644);
      writeSync(fd, content(i, o.size));
      closeSync(fd);
    }
    // syncfs(2) through sync -f: everything on this filesystem durable.
    const fd = openSync(mnt, 'r');
    try {
      execFileSync('sync', ['-f', mnt]);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    const t1 = process.hrtime.bigint();
    return { seconds: Number(t1 - t0) / 1e9 };
  } finally {
    execFileSync('umount', [mnt]);
  }
}

export async function run(options = {}) {
  const o = { files: 10_000, dirs: 20, size: 512, reps: 5, ...options };
  const dist = join(root, 'dist');
  if (!existsSync(join(dist, 'ext3', 'index.js')))
    throw new Error('dist/ext3/index.js missing: run `npx tsc -p tsconfig.json` first');
  const { openExt3 } = await import(pathToFileURL(join(dist, 'ext3', 'index.js')).href);
  const { FileRegion } = await import(pathToFileURL(join(dist, 'io', 'file-region.js')).href);
  const engine = { openExt3, FileRegion };
  const work = mkdtempSync(join(tmpdir(), 'sifuse-bench-ext3-'));
  const results = { options: o, engine: [], kernel: [], skipped: [] };
  try {
    const pristine = join(work, 'pristine.img');
    // mkfs.ext3's own choice for a 256 MiB image: 1 KiB blocks, 256-byte inodes.
    execFileSync('mkfs.ext3', ['-q', '-F', pristine, '256M']);
    if (!isRoot) results.skipped.push('kernel: loop mounts need root');
    for (let r = 0; r < o.reps; r++) {
      const a = join(work, 'engine.img');
      copyFileSync(pristine, a);
      dropCaches();
      const e = await engineRun(a, o, engine);
      execFileSync('e2fsck', ['-fn', a], { stdio: 'ignore' });
      results.engine.push(e);
      if (isRoot) {
        const b = join(work, 'kernel.img');
        copyFileSync(pristine, b);
        dropCaches();
        results.kernel.push(kernelRun(b, o, join(work, 'mnt')));
        execFileSync('e2fsck', ['-fn', b], { stdio: 'ignore' });
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const eMed = median(results.engine.map((x) => x.seconds));
  const rows = ['| workload | sifuse engine (in-process) | kernel ext3 (loop mount) | kernel / sifuse |', '|---|---|---|---|'];
  const label = `create ${o.files} files of ${o.size} B in ${o.dirs} dirs + sync (median of ${o.reps})`;
  if (results.kernel.length > 0) {
    const kMed = median(results.kernel.map((x) => x.seconds));
    rows.push(`| ${label} | ${eMed.toFixed(3)} s | ${kMed.toFixed(3)} s | ${(kMed / eMed).toFixed(2)} |`);
    results.median = { engine: eMed, kernel: kMed, ratio: kMed / eMed };
  } else {
    rows.push(`| ${label} | ${eMed.toFixed(3)} s | skipped (not root) | - |`);
    results.median = { engine: eMed };
  }
  const closeMed = median(results.engine.map((x) => x.closeSeconds));
  rows.push('', `engine close (flush + clean unmount) median ${closeMed.toFixed(3)} s, not included above.`);
  const table = rows.join('\n');
  mkdirSync(join(root, 'bench', 'out'), { recursive: true });
  writeFileSync(join(root, 'bench', 'out', 'ext3-smallfiles.json'), JSON.stringify(results, null, 2) + '\n');
  return { table, results };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  const opts = {};
  for (let i = 0; i < args.length; i += 2) {
    const k = args[i].replace(/^--/, '');
    if (!['files', 'dirs', 'size', 'reps'].includes(k)) {
      console.error(`ext3-smallfiles: unknown option ${args[i]}`);
      process.exit(1);
    }
    opts[k] = Number(args[i + 1]);
  }
  run(opts).then(
    ({ table, results }) => {
      console.log(table);
      for (const s of results.skipped) console.log(`skipped: ${s}`);
    },
    (err) => {
      console.error(`ext3-smallfiles: ${err.message}`);
      process.exit(1);
    },
  );
}
