#!/usr/bin/env node
/**
 * The untar and rm-upper workloads replayed on the ext3 engine in-process (no
 * FUSE, no overlay): the engine calls a FUSE mount makes for `tar xf usr.tar`
 * into an ext3 overlay image's upper/, then `rm -rf` of that tree.
 *
 *   untar  per entry: a negative lookup, then
 *            file     mknod, the data in 10 KiB writes (tar's record size),
 *                     setattr uid/gid, setattr mode, setattr times
 *            dir      mkdir (mode and times set once all entries are in, as tar does)
 *            symlink  symlink, setattr times
 *            hard link  link
 *          then sync (a commit and fdatasync, as the mount's last flush)
 *   rm     depth first: readdir, lookup + getattr per entry, unlink / rmdir; then sync
 *
 * The image is made like the bench's (`sifuse overlay create --size 4096
 * --sparse`: 4 KiB blocks), fresh per repetition. Several builds can be
 * compared (`--dist DIR` repeated): repetitions interleave ABBA. Wall and CPU
 * (process.cpuUsage(), all threads) in ms per phase and us per entry, median
 * of --reps; each image is checked with e2fsck -fn afterwards. Not part of
 * CI; no timing assertions.
 *
 *   node bench/ext3-untar.mjs [--tar /var/tmp/sifuse-cache/bench-usr.tar] [--reps 3] [--warmup 1] [--chunk 10240] [--dist DIR ...]
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { median } from './lib/stats.mjs';
import { parseTar } from './lib/tar.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Counts the store's reads, writes (and bytes) and syncs: the I/O the engine asks for. */
function countIo(store) {
  const io = { reads: 0, writes: 0, writeBytes: 0, syncs: 0 };
  const { read, write, sync } = store;
  store.read = (p, n) => (io.reads++, read.call(store, p, n));
  store.write = (p, d) => (io.writes++, (io.writeBytes += d.length), write.call(store, p, d));
  store.sync = () => (io.syncs++, sync.call(store));
  return io;
}

let currentIo = null;

/** With UNTAR_OPS=1: wall us spent in each engine method (calls are sequential here), printed per run. */
const opTimes = new Map();
function timed(fs) {
  if (!process.env.UNTAR_OPS) return fs;
  return new Proxy(fs, {
    get(t, k) {
      const v = t[k];
      if (typeof v !== 'function') return v;
      return async (...a) => {
        const t0 = process.hrtime.bigint();
        try {
          return await v.apply(t, a);
        } finally {
          const r = opTimes.get(k) ?? { n: 0, us: 0, max: 0 };
          const us = Number(process.hrtime.bigint() - t0) / 1e3;
          r.n++;
          r.us += us;
          r.max = Math.max(r.max, us);
          opTimes.set(k, r);
        }
      };
    },
  });
}
function printOps(label) {
  if (!process.env.UNTAR_OPS) return;
  const rows = [...opTimes].sort((a, b) => b[1].us - a[1].us);
  console.error(
    `${label}: ${rows.map(([k, r]) => `${k} ${r.n}x ${(r.us / r.n).toFixed(1)}us = ${(r.us / 1000).toFixed(0)}ms (max ${(r.max / 1000).toFixed(1)}ms)`).join(', ')}`,
  );
  opTimes.clear();
}

async function phase(res, key, n, fn) {
  const before = currentIo ? { ...currentIo } : null;
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await fn();
  const wall = Number(process.hrtime.bigint() - t0) / 1e6;
  const c = process.cpuUsage(c0);
  const io = before ? Object.fromEntries(Object.entries(currentIo).map(([k, v]) => [k, v - before[k]])) : {};
  (res[key] ??= []).push({ wallMs: wall, cpuMs: (c.user + c.system) / 1e3, userMs: c.user / 1e3, n, io });
}

async function once(engine, pristine, work, entries, o) {
  const img = join(work, 'untar.img');
  execFileSync('cp', ['--sparse=always', pristine, img]);
  const store = await engine.FileRegion.open(img, { writable: true });
  const io = countIo(store);
  currentIo = io;
  const fs = timed(await engine.openExt3(store, { writable: true }));
  const upper = await fs.lookup(fs.rootId, Buffer.from('upper'));
  const res = {};
  const dirNode = (e) => ({ mode: 0o40000 | e.mode, uid: e.uid, gid: e.gid });
  const scratch = await fs.mkdir(upper, Buffer.from('scratch'), { mode: 0o40755, uid: 0, gid: 0 });
  const ids = new Map([['', scratch]]);
  const keyOf = (parts) => parts.map((p) => p.toString('latin1')).join('/');
  const parentOf = (parts) => ids.get(keyOf(parts.slice(0, -1)));
  const dirs = [];
  await phase(res, 'untar', entries.length, async () => {
    for (const e of entries) {
      const dir = parentOf(e.parts);
      const name = e.parts[e.parts.length - 1];
      const times = { atime: { sec: e.mtime, nsec: 0 }, mtime: { sec: e.mtime, nsec: 0 } };
      if (e.type === '5') {
        if ((await fs.lookup(dir, name)) !== null) continue;
        const id = await fs.mkdir(dir, name, dirNode(e));
        ids.set(keyOf(e.parts), id);
        dirs.push({ id, e, times });
        continue;
      }
      await fs.lookup(dir, name);
      if (e.type === '0' || e.type === '7') {
        const id = await fs.mknod(dir, name, { mode: 0o100000 | e.mode, uid: 0, gid: 0 });
        for (let p = 0; p < e.data.length; p += o.chunk) await fs.write(id, p, e.data.subarray(p, p + o.chunk));
        await fs.setattr(id, { uid: e.uid, gid: e.gid });
        await fs.setattr(id, { mode: e.mode });
        await fs.setattr(id, times);
        ids.set(keyOf(e.parts), id);
      } else if (e.type === '2') {
        const id = await fs.symlink(dir, name, e.link, { uid: e.uid, gid: e.gid });
        await fs.setattr(id, times);
      } else if (e.type === '1') {
        const target = ids.get(
          keyOf(
            e.link
              .toString('latin1')
              .split('/')
              .filter((p) => p !== '' && p !== '.'),
          ),
        );
        await fs.link(target, dir, name);
      }
    }
    for (const { id, e, times } of dirs.reverse()) {
      await fs.setattr(id, { mode: e.mode });
      await fs.setattr(id, times);
    }
  });
  printOps('untar');
  await phase(res, 'untar sync', entries.length, () => fs.sync());
  printOps('untar sync');
  let removed = 0;
  const rmTree = async (dir) => {
    for (const e of [...(await fs.readdir(dir))]) {
      const id = await fs.lookup(dir, e.name);
      const st = await fs.getattr(id);
      if ((st.mode & 0o170000) === 0o40000) {
        await rmTree(id);
        await fs.rmdir(dir, e.name);
      } else await fs.unlink(dir, e.name);
      removed++;
    }
  };
  await phase(res, 'rm -rf', entries.length, () => rmTree(scratch));
  printOps('rm');
  await phase(res, 'rm sync', entries.length, () => fs.sync());
  printOps('rm sync');
  await fs.close();
  await store.close();
  if (removed < entries.length - dirs.length) throw new Error(`removed only ${removed} entries`);
  execFileSync('e2fsck', ['-fn', img], { stdio: 'ignore' });
  rmSync(img);
  return res;
}

/** UNTAR_PROF=FILE: a CPU profile (.cpuprofile) of the last run only, the JIT warm by then. */
async function profiled(fn) {
  const { Session } = await import('node:inspector/promises');
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 200 });
  await session.post('Profiler.start');
  try {
    return await fn();
  } finally {
    const { profile } = await session.post('Profiler.stop');
    writeFileSync(process.env.UNTAR_PROF, JSON.stringify(profile));
    session.disconnect();
  }
}

export async function run(options = {}) {
  const o = { tar: '/var/tmp/sifuse-cache/bench-usr.tar', reps: 3, warmup: 1, chunk: 10240, ...options };
  const dists = o.dist && o.dist.length > 0 ? o.dist : [join(root, 'dist')];
  const engines = [];
  let createOverlayImage = null;
  for (const d of dists) {
    if (!existsSync(join(d, 'ext3', 'index.js'))) throw new Error(`${d}/ext3/index.js missing: build it first`);
    const { openExt3 } = await import(pathToFileURL(join(d, 'ext3', 'index.js')).href);
    const { FileRegion } = await import(pathToFileURL(join(d, 'io', 'file-region.js')).href);
    createOverlayImage ??= (await import(pathToFileURL(join(d, 'commands', 'overlay.js')).href)).createOverlayImage;
    engines.push({ dist: d, openExt3, FileRegion });
  }
  const entries = parseTar(readFileSync(o.tar));
  const work = mkdtempSync(join(tmpdir(), 'sifuse-bench-untar-'));
  const all = engines.map(() => ({}));
  try {
    const pristine = join(work, 'pristine.img');
    await createOverlayImage(pristine, { sizeMiB: 4096, sparse: true, createDirs: [], fakeroot: false });
    // Warm-up runs (not counted): the JIT of each build warm before the measured ones.
    for (let r = 0; r < o.warmup; r++) for (const e of engines) await once(e, pristine, work, entries, o);
    for (let r = 0; r < o.reps; r++) {
      for (let kk = 0; kk < engines.length; kk++) {
        const k = r % 2 ? engines.length - 1 - kk : kk;
        const last = r === o.reps - 1 && kk === engines.length - 1;
        const res =
          last && process.env.UNTAR_PROF
            ? await profiled(() => once(engines[k], pristine, work, entries, o))
            : await once(engines[k], pristine, work, entries, o);
        if (process.env.UNTAR_RAW) console.error(engines[k].dist, JSON.stringify(res));
        for (const [key, v] of Object.entries(res)) (all[k][key] ??= []).push(...v);
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const rows = [
    `${entries.length} entries, ${(entries.reduce((s, e) => s + e.data.length, 0) / 1e6).toFixed(0)} MB, ${o.chunk}-byte writes\n`,
    `| phase (median of ${o.reps}: wall ms / CPU ms (min, user) / CPU us per entry; store I/O calls of the last run) | ${engines.map((e) => e.dist).join(' | ')} |`,
    `|---|${engines.map(() => '---').join('|')}|`,
  ];
  for (const key of Object.keys(all[0])) {
    const cells = all.map((a) => {
      const w = median(a[key].map((x) => x.wallMs));
      const c = median(a[key].map((x) => x.cpuMs));
      const cmin = Math.min(...a[key].map((x) => x.cpuMs));
      const u = median(a[key].map((x) => x.userMs));
      const io = a[key][a[key].length - 1].io;
      return `${w.toFixed(0)} / ${c.toFixed(0)} (min ${cmin.toFixed(0)}, user ${u.toFixed(0)}) / ${((c * 1000) / a[key][0].n).toFixed(1)}; io r${io.reads} w${io.writes} ${(io.writeBytes / 1e6).toFixed(1)}MB s${io.syncs}`;
    });
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
    else if (k === 'tar') opts.tar = args[i + 1];
    else if (['reps', 'chunk', 'warmup'].includes(k)) opts[k] = Number(args[i + 1]);
    else {
      console.error(`ext3-untar: unknown option ${args[i]}`);
      process.exit(1);
    }
  }
  run(opts).then(
    ({ table }) => console.log(table),
    (err) => {
      console.error(`ext3-untar: ${err.stack}`);
      process.exit(1);
    },
  );
}
