#!/usr/bin/env node
/**
 * The copy-up workload's engine side replayed in-process (no FUSE, no
 * overlay, no lower reads): for every regular file over 200 KiB under the
 * bench rootfs's usr/lib/x86_64-linux-gnu (what `echo x >> f` copies up),
 * the calls the overlay's copy-up makes on an ext3 upper: mknod in work/,
 * the data in 1 MiB writes, truncate, setxattr (the inode number),
 * setattr mode, setattr times, rename into upper/, then the append; a sync
 * at the end. Fresh image per run (`sifuse overlay create --size 4096
 * --sparse` geometry); builds compared with `--dist DIR` repeated, runs
 * interleaved ABBA, the first of each build dropped (JIT warm-up); wall and
 * CPU (process.cpuUsage(), all threads) medians; e2fsck -fn after each run.
 * Not part of CI; no timing assertions.
 *
 *   node bench/ext3-copyup.mjs [--reps 6] [--root /var/tmp/sifuse-cache/bench-rootfs-minbase] [--dist DIR ...]
 */
import { execFileSync } from 'node:child_process';
import { lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { median } from './lib/stats.mjs';

const here = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const o = { reps: 6, root: '/var/tmp/sifuse-cache/bench-rootfs-minbase', dist: [] };
for (let i = 0; i < args.length; i += 2) {
  const k = args[i].replace(/^--/, '');
  if (k === 'dist') o.dist.push(resolve(args[i + 1]));
  else if (k === 'reps') o.reps = Number(args[i + 1]);
  else if (k === 'root') o.root = args[i + 1];
  else {
    console.error(`ext3-copyup: unknown option ${args[i]}`);
    process.exit(1);
  }
}
if (o.dist.length === 0) o.dist.push(join(here, 'dist'));

function bigFiles(dir, out = []) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = lstatSync(p);
    if (st.isDirectory()) bigFiles(p, out);
    else if (st.isFile() && st.size > 200 * 1024) out.push(readFileSync(p));
  }
  return out;
}

const files = bigFiles(join(o.root, 'usr/lib/x86_64-linux-gnu'));
const engines = [];
for (const d of o.dist) {
  const load = async (m) => import(pathToFileURL(join(d, m)).href);
  engines.push({
    dist: d,
    ...(await load('ext3/index.js')),
    ...(await load('io/file-region.js')),
    ...(await load('commands/overlay.js')),
  });
}
const work = mkdtempSync(join(tmpdir(), 'sifuse-bench-copyup-'));
const results = engines.map(() => []);
try {
  const pristine = join(work, 'pristine.img');
  const img = join(work, 'copyup.img');
  await engines[0].createOverlayImage(pristine, { sizeMiB: 4096, sparse: true, createDirs: [], fakeroot: false });
  const ino = Buffer.from('trusted.overlay.sifuse.ino');
  for (let r = 0; r <= o.reps; r++) {
    for (let kk = 0; kk < engines.length; kk++) {
      const k = r % 2 ? engines.length - 1 - kk : kk;
      const e = engines[k];
      execFileSync('cp', ['--sparse=always', pristine, img]);
      const store = await e.FileRegion.open(img, { writable: true });
      const fs = await e.openExt3(store, { writable: true });
      const upper = await fs.lookup(fs.rootId, Buffer.from('upper'));
      const workDir = await fs.lookup(fs.rootId, Buffer.from('work'));
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      for (let i = 0; i < files.length; i++) {
        const data = files[i];
        const tmp = Buffer.from(`#sifuse-copy-${i}`);
        const id = await fs.mknod(workDir, tmp, { mode: 0o100644, uid: 0, gid: 0 });
        for (let p = 0; p < data.length; p += 1 << 20) await fs.write(id, p, data.subarray(p, p + (1 << 20)));
        await fs.truncate(id, data.length);
        await fs.setxattr(id, ino, Buffer.from(String(1000 + i)));
        await fs.setattr(id, { mode: 0o644 });
        await fs.setattr(id, { atime: { sec: 1, nsec: 0 }, mtime: { sec: 1, nsec: 0 } });
        await fs.rename(workDir, tmp, upper, Buffer.from(`f${i}`));
        await fs.write(id, data.length, Buffer.from('x\n'));
      }
      await fs.sync();
      const c = process.cpuUsage(c0);
      if (r > 0) results[k].push({ wall: performance.now() - t0, cpu: (c.user + c.system) / 1000 });
      await fs.close();
      await store.close();
      execFileSync('e2fsck', ['-fn', img], { stdio: 'ignore' });
    }
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
console.log(`${files.length} files, ${(files.reduce((s, b) => s + b.length, 0) / 1e6).toFixed(1)} MB, median of ${o.reps}\n`);
console.log('| build | wall ms | CPU ms | min CPU ms |\n|---|---|---|---|');
engines.forEach((e, k) => {
  const x = results[k];
  console.log(
    `| ${e.dist} | ${median(x.map((v) => v.wall)).toFixed(0)} | ${median(x.map((v) => v.cpu)).toFixed(0)} | ${Math.min(...x.map((v) => v.cpu)).toFixed(0)} |`,
  );
});
