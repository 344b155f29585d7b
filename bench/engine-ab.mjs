#!/usr/bin/env node
/**
 * Engine-level A/B: two builds of sifuse (dist directories) loaded in this one
 * process, run alternately (A B A B ...) on the same image, no FUSE:
 *   walk      readdir + getattr of every entry, fresh engine (cold engine caches)
 *   read-all  walk plus every regular file read in 128 KiB reads
 *   stall     the longest the event loop is kept from running during the first
 *             readdir of the largest directory (ms; a 1 ms timer chain measures it)
 * walk and read-all run each in a fresh child process (A B, B A, ...: cold
 * JIT and its own heap, as a daemon starts), reporting wall, CPU (all
 * threads), GC time (perf_hooks) and peak RSS, medians; stall runs in this
 * process with both builds loaded.
 *
 *   node bench/engine-ab.mjs A_DIST B_DIST [IMAGE] [--reps N] [--only walk,read-all,stall]
 *   (AB_OPTS='{"dataCacheBytes":16777216}' passes engine options to both; AB_RAW=1 prints every run)
 *
 * The page cache is warm (the image is read once first): this measures the
 * engine's CPU, which is what A/B differ in.
 */
import { PerformanceObserver } from 'node:perf_hooks';
import { spawnSync } from 'node:child_process';
import { resolve, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const opt = { reps: 5, only: null, child: null };
const pos = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--reps') opt.reps = Number(args[++i]);
  else if (args[i] === '--only') opt.only = new Set(args[++i].split(','));
  else if (args[i] === '--child') opt.child = args[++i];
  else pos.push(args[i]);
}
const image = pos[2] ?? '/var/tmp/sifuse-cache/bench-bookworm-minbase.sif';
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;

async function load(dist) {
  return import(pathToFileURL(join(resolve(dist), 'image', 'index.js')).href);
}

async function walk(fs, readFiles) {
  let entries = 0;
  let bytes = 0;
  const stack = [fs.rootId];
  while (stack.length > 0) {
    const dir = stack.pop();
    const list = await fs.readdir(dir);
    for (const e of list) {
      entries++;
      const st = await fs.getattr(e.id);
      const type = st.mode & S_IFMT;
      if (type === S_IFDIR) stack.push(e.id);
      else if (readFiles && type === S_IFREG) {
        for (let p = 0; p < st.size; p += 131072) bytes += (await fs.read(e.id, p, 131072)).length;
      }
    }
  }
  return { entries, bytes };
}

/** The directory with the most entries, found once. */
async function biggestDir(fs) {
  let best = { id: fs.rootId, n: 0 };
  const stack = [fs.rootId];
  while (stack.length > 0) {
    const dir = stack.pop();
    const list = await fs.readdir(dir);
    if (list.length > best.n) best = { id: dir, n: list.length };
    for (const e of list) if (e.type === 'd' || ((await fs.getattr(e.id)).mode & S_IFMT) === S_IFDIR) stack.push(e.id);
  }
  return best;
}

/** The first readdir of a directory (a path, or an inode id of this image) and the longest event-loop stall meanwhile. */
async function stall(mod, dir) {
  const fs = await mod.openImage(image);
  try {
    let id = typeof dir === 'string' ? fs.rootId : dir;
    if (typeof dir === 'string') for (const part of dir.split('/').filter(Boolean)) id = await fs.lookup(id, Buffer.from(part));
    // Both wall and CPU between two turns of the loop: on a loaded machine a
    // wall gap may be the scheduler's; a CPU gap is the decoder's own.
    let last = performance.now();
    let lastCpu = process.cpuUsage();
    let worst = 0;
    let worstCpu = 0;
    let on = true;
    const tick = () => {
      const now = performance.now();
      const cpu = process.cpuUsage(lastCpu);
      worst = Math.max(worst, now - last);
      worstCpu = Math.max(worstCpu, (cpu.user + cpu.system) / 1000);
      last = now;
      lastCpu = process.cpuUsage();
      if (on) setImmediate(tick);
    };
    setImmediate(tick);
    await new Promise((r) => setTimeout(r, 5));
    worst = 0;
    worstCpu = 0;
    last = performance.now();
    lastCpu = process.cpuUsage();
    const t0 = performance.now();
    const n = (await fs.readdir(id)).length;
    const total = performance.now() - t0;
    on = false;
    await new Promise((r) => setTimeout(r, 2));
    return { worst, worstCpu, total, n };
  } finally {
    await fs.close();
  }
}

let gcMs = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcMs += e.duration;
}).observe({ entryTypes: ['gc'] });

async function measure(mod, work) {
  const g0 = gcMs;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const fs = await mod.openImage(image, JSON.parse(process.env.AB_OPTS ?? '{}'));
  const r = await walk(fs, work === 'read-all');
  await fs.close();
  const wall = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  return { wall, cpu: (c.user + c.system) / 1e6, gc: (gcMs - g0) / 1000, ...r };
}

if (opt.child) {
  // One workload of one build in a fresh process (cold JIT, its own heap and GC).
  const mod = await load(opt.child);
  const r = await measure(mod, process.env.AB_WORK ?? 'read-all');
  console.log(JSON.stringify({ ...r, maxRss: process.resourceUsage().maxRSS * 1024 }));
  process.exit(0);
}

const [aDist, bDist] = pos;
if (!aDist || !bDist) {
  console.error('usage: node bench/engine-ab.mjs A_DIST B_DIST [IMAGE] [--reps N] [--only walk,read-all,stall]');
  process.exit(2);
}
readFileSync(image); // warm the page cache
const builds = { A: await load(aDist), B: await load(bDist) };
const dists = { A: aDist, B: bDist };
const want = (w) => !opt.only || opt.only.has(w);
const med = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
const rows = [];
/** One run of `work` on build k in a child process: { wall, cpu, gc, maxRss, entries, bytes }. */
function child(k, work) {
  const r = spawnSync(process.execPath, [process.argv[1], '--child', dists[k], 'x', 'y', image], {
    encoding: 'utf8',
    env: { ...process.env, AB_WORK: work },
  });
  if (r.status !== 0) throw new Error(`child ${k} ${work}: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}
for (const work of ['walk', 'read-all'].filter(want)) {
  const t = { A: [], B: [] };
  for (let r = 0; r < opt.reps; r++) for (const k of r % 2 ? ['B', 'A'] : ['A', 'B']) t[k].push(child(k, work));
  for (const k of ['A', 'B']) {
    const x = t[k];
    if (process.env.AB_RAW) console.log(k, work, x.map((v) => `${v.wall.toFixed(2)}/${v.cpu.toFixed(2)}`).join(' '));
    rows.push(
      `| ${work} | ${k} | ${med(x.map((v) => v.wall)).toFixed(3)} | ${med(x.map((v) => v.cpu)).toFixed(3)} | ${med(x.map((v) => v.gc)).toFixed(3)} | ${(med(x.map((v) => v.maxRss)) / 1e6).toFixed(0)} | ${x[0].entries} entries, ${(x[0].bytes / 1e6).toFixed(0)} MB |`,
    );
  }
}
if (want('stall')) {
  const probe = await builds.A.openImage(image);
  const big = await biggestDir(probe);
  await probe.close();
  const path = process.env.STALL_DIR ?? null;
  const t = { A: [], B: [] };
  for (let r = 0; r < opt.reps; r++) {
    for (const k of ['A', 'B']) {
      // the directory by path when given (STALL_DIR), else the image's biggest by inode id
      const res = await stall(builds[k], path ?? big.id);
      t[k].push(res);
    }
  }
  for (const k of ['A', 'B']) {
    rows.push(
      `| first readdir (${t[k][0].n} entries) | ${k} | ${med(t[k].map((x) => x.total / 1000)).toFixed(4)} | - | - | - | longest event-loop stall ${med(t[k].map((x) => x.worst)).toFixed(1)} ms wall, ${med(t[k].map((x) => x.worstCpu)).toFixed(1)} ms CPU |`,
    );
  }
}

console.log(`image ${image}; A = ${aDist}, B = ${bDist}; median of ${opt.reps}, interleaved, warm page cache\n`);
console.log('| workload | build | wall s | CPU s | GC s | peak RSS MB | |\n|---|---|---|---|---|---|---|');
for (const r of rows) console.log(r);
