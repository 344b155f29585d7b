#!/usr/bin/env node
/**
 * Per-operation cost of the in-process ext3 engine (what the FUSE daemon will
 * pay per request): wall and CPU microseconds per create+write, lookup,
 * getattr, read, overwrite, setattr and unlink, over FILES small files in
 * DIRS directories of a fresh mkfs.ext3 image (256 MiB, 1 KiB blocks), plus
 * the whole create-and-sync workload of bench/ext3-smallfiles.mjs.
 *
 * Several builds can be compared in one run (`--dist DIR` repeated, e.g. a
 * copy of an older dist/ next to a node_modules link): repetitions are
 * interleaved ABBA so machine load falls on all alike. CPU is
 * process.cpuUsage() (all threads, including libuv's pool). Each image is
 * checked with e2fsck -fn afterwards. Not part of CI; no timing assertions.
 *
 *   node bench/ext3-ops.mjs [--files 10000] [--dirs 20] [--size 512] [--reps 4] [--dist DIR ...]
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { median } from './lib/stats.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

function content(i, size) {
  const b = Buffer.alloc(size, 0x61 + (i % 26));
  b.write(`file ${i}\n`);
  return b;
}

async function phase(res, key, n, fn) {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await fn();
  const wall = Number(process.hrtime.bigint() - t0) / 1e3;
  const c = process.cpuUsage(c0);
  (res[key] ??= []).push({ wallUs: wall / n, cpuUs: (c.user + c.system) / n });
}

async function once(engine, pristine, work, o, names) {
  const img = join(work, 'ops.img');
  copyFileSync(pristine, img);
  execFileSync('sync');
  const store = await engine.FileRegion.open(img, { writable: true });
  const fs = await engine.openExt3(store, { writable: true });
  const res = {};
  const dirs = [];
  const ids = [];
  const node = { mode: 0o100644, uid: 0, gid: 0 };
  for (let d = 0; d < o.dirs; d++) dirs.push(await fs.mkdir(fs.rootId, Buffer.from(`d${d}`), { mode: 0o40755, uid: 0, gid: 0 }));
  await phase(res, 'create+write+sync (whole run, per file)', o.files, async () => {
    await phase(res, 'create+write', o.files, async () => {
      for (let i = 0; i < o.files; i++) {
        const id = await fs.mknod(dirs[i % o.dirs], names[i], node);
        ids.push(id);
        await fs.write(id, 0, content(i, o.size));
      }
    });
    await fs.sync();
  });
  await phase(res, 'lookup', o.files, async () => {
    for (let i = 0; i < o.files; i++) await fs.lookup(dirs[i % o.dirs], names[i]);
  });
  await phase(res, 'getattr', o.files, async () => {
    for (let i = 0; i < o.files; i++) await fs.getattr(ids[i]);
  });
  await phase(res, 'read 4 KiB', o.files, async () => {
    for (let i = 0; i < o.files; i++) await fs.read(ids[i], 0, 4096);
  });
  await phase(res, 'overwrite 10 B', o.files, async () => {
    for (let i = 0; i < o.files; i++) await fs.write(ids[i], 10, names[i]);
  });
  await phase(res, 'setattr (chmod)', o.files, async () => {
    for (let i = 0; i < o.files; i++) await fs.setattr(ids[i], { mode: 0o100600 });
  });
  await phase(res, 'unlink', o.files, async () => {
    for (let i = 0; i < o.files; i++) await fs.unlink(dirs[i % o.dirs], names[i]);
  });
  await fs.close();
  await store.close();
  execFileSync('e2fsck', ['-fn', img], { stdio: 'ignore' });
  return res;
}

export async function run(options = {}) {
  const o = { files: 10_000, dirs: 20, size: 512, reps: 4, ...options };
  const dists = o.dist && o.dist.length > 0 ? o.dist : [join(root, 'dist')];
  const engines = [];
  for (const d of dists) {
    if (!existsSync(join(d, 'ext3', 'index.js')))
      throw new Error(`${d}/ext3/index.js missing: run \`npx tsc -p tsconfig.json\` first`);
    const { openExt3 } = await import(pathToFileURL(join(d, 'ext3', 'index.js')).href);
    const { FileRegion } = await import(pathToFileURL(join(d, 'io', 'file-region.js')).href);
    engines.push({ dist: d, openExt3, FileRegion });
  }
  const names = Array.from({ length: o.files }, (_, i) => Buffer.from(`f${i}`));
  const work = mkdtempSync(join(tmpdir(), 'sifuse-bench-ops-'));
  const all = engines.map(() => ({}));
  try {
    const pristine = join(work, 'pristine.img');
    execFileSync('mkfs.ext3', ['-q', '-F', pristine, '256M']);
    for (let r = 0; r < o.reps; r++) {
      for (let kk = 0; kk < engines.length; kk++) {
        const k = r % 2 ? engines.length - 1 - kk : kk;
        const res = await once(engines[k], pristine, work, o, names);
        for (const [key, v] of Object.entries(res)) (all[k][key] ??= []).push(...v);
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const rows = [
    `| operation (median of ${o.reps}, us per op, wall / cpu) | ${engines.map((e) => e.dist).join(' | ')} |`,
    `|---|${engines.map(() => '---').join('|')}|`,
  ];
  for (const key of Object.keys(all[0])) {
    const cells = all.map(
      (a) => `${median(a[key].map((x) => x.wallUs)).toFixed(1)} / ${median(a[key].map((x) => x.cpuUs)).toFixed(1)}`,
    );
    rows.push(`| ${key} | ${cells.join(' | ')} |`);
  }
  return { table: rows.join('\n'), results: all };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  const opts = { dist: [] };
  for (let i = 0; i < args.length; i += 2) {
    const k = args[i].replace(/^--/, '');
    if (k === 'dist') opts.dist.push(resolve(args[i + 1]));
    else if (['files', 'dirs', 'size', 'reps'].includes(k)) opts[k] = Number(args[i + 1]);
    else {
      console.error(`ext3-ops: unknown option ${args[i]}`);
      process.exit(1);
    }
  }
  run(opts).then(
    ({ table }) => console.log(table),
    (err) => {
      console.error(`ext3-ops: ${err.message}`);
      process.exit(1);
    },
  );
}
