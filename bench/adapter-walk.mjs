#!/usr/bin/env node
/**
 * The walk workload's FUSE requests (`find M -printf ...` on a read-only
 * mount) replayed in-process on the FuseAdapter over the image's engine,
 * without the kernel: per directory, depth first as find goes, one
 * READDIRPLUS from offset 0 (fh 0: the read-only stateless mode) and one
 * more from where it ended (the empty EOF reply), the event loop turning
 * once after each reply as it does while the kernel and find digest it (the
 * read-ahead runs then). Each request gets a stand-in FuseRequest whose
 * dirplus reply packs everything offered.
 *
 * What it measures is the daemon's own JS cost of a cold walk (fresh
 * process per run: cold JIT, cold engine caches; the image is in the page
 * cache), without /dev/fuse syscalls, N-API or the wake-ups of a real mount.
 * Several builds compare (`--dist DIR` repeated, each a built dist/, or
 * DIR@FLAGS to run it with node flags): runs
 * interleave A B B A ...; CPU is process.cpuUsage() of the replay (all
 * threads) and the main thread alone (/proc/thread-self/stat), medians.
 * Not part of CI; no timing assertions.
 *
 *   node bench/adapter-walk.mjs [--image SIF] [--reps 7] [--dist DIR ...]
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { median } from './lib/stats.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const STAT_LEN = 17;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
/** The READDIRPLUS size the kernel asks for (fs/fuse/readdir.c: up to max_pages). */
const SIZE = 128 * 1024;

class Req {
  constructor() {
    this.uid = 0;
    this.gid = 0;
    this.pid = 1;
    this.done = false;
    this.packed = null;
  }
  get answered() {
    return this.done;
  }
  take() {
    if (this.done) throw new Error('answered twice');
    this.done = true;
  }
  err(e) {
    this.take();
    throw new Error(`errno ${e}`);
  }
  buf() {
    this.take();
    this.packed = { names: [], stats: new Float64Array(0) };
  }
  dirplus(size, first, names, stats) {
    this.take();
    // The addon copies the stats out before it returns: so does this.
    this.packed = { names, stats: Float64Array.from(stats.subarray(0, names.length * STAT_LEN)) };
    return names.length;
  }
}

/** CPU time of the calling (main) thread so far, ms: /proc/thread-self/schedstat counts it in ns. */
function mainThreadMs() {
  return Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]) / 1e6;
}

async function child(dist, image) {
  const imp = (p) => import(pathToFileURL(join(resolve(dist), p)).href);
  const { openImage } = await imp('image/index.js');
  const { FuseAdapter } = await imp('fuse/adapter.js');
  const { fuseCap } = await imp('native/fuse.js');
  const fs = await openImage(image);
  const caps = fuseCap('NO_OPEN_SUPPORT') | fuseCap('NO_OPENDIR_SUPPORT');
  const adapter = new FuseAdapter(fs, { log: () => {}, noOpenCaps: caps });
  adapter.init(7, 31, 0, caps, 1 << 20);
  const turn = () => new Promise((r) => setImmediate(r));
  const m0 = mainThreadMs();
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  let requests = 0;
  let entries = 0;
  const stack = [1];
  while (stack.length > 0) {
    const nodeid = stack.pop();
    let offset = 0;
    const subdirs = [];
    for (;;) {
      const r = new Req();
      await adapter.readdirplus(r, nodeid, SIZE, offset, 0);
      requests++;
      await turn();
      const { names, stats } = r.packed;
      if (names.length === 0) break;
      for (let i = 0; i < names.length; i++) {
        const name = names[i].toString('latin1');
        if (name === '.' || name === '..') continue;
        entries++;
        if ((stats[i * STAT_LEN + 3] & S_IFMT) === S_IFDIR) subdirs.push(stats[i * STAT_LEN]);
      }
      offset += names.length;
    }
    // find descends in listing order: the first subdirectory on top.
    for (let i = subdirs.length - 1; i >= 0; i--) stack.push(subdirs[i]);
  }
  const wall = Number(process.hrtime.bigint() - t0) / 1e6;
  const c = process.cpuUsage(c0);
  const main = mainThreadMs() - m0;
  await adapter.quiesce();
  await fs.close();
  process.stdout.write(JSON.stringify({ wall, cpu: (c.user + c.system) / 1000, main, requests, entries }));
}

async function main() {
  const args = process.argv.slice(2);
  const dists = [];
  let image = '/var/tmp/sifuse-cache/bench-bookworm-minbase.sif';
  let reps = 7;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--dist') dists.push(args[++i]);
    else if (args[i] === '--image') image = args[++i];
    else if (args[i] === '--reps') reps = Number(args[++i]);
    else if (args[i] === '--child') return child(args[++i], args[++i]);
  }
  if (dists.length === 0) dists.push(join(root, 'dist'));
  readFileSync(image); // into the page cache: the engine's CPU is what builds differ in
  const runs = dists.map(() => []);
  for (let rep = 0; rep < reps; rep++) {
    const order = rep % 2 === 0 ? dists.map((_, i) => i) : dists.map((_, i) => dists.length - 1 - i);
    for (const i of order) {
      // DIR or DIR@FLAGS: node flags for that build's runs (e.g. dist@--max-semi-space-size=32).
      const [dir, flags] = dists[i].split('@');
      const r = spawnSync(
        process.execPath,
        [...(flags ? flags.split(' ') : []), fileURLToPath(import.meta.url), '--child', dir, image],
        {
          encoding: 'utf8',
          env: { ...process.env, NODE_EXTRA_CA_CERTS: '' },
        },
      );
      if (r.status !== 0) throw new Error(`run of ${dists[i]} failed: ${r.stderr}`);
      runs[i].push(JSON.parse(r.stdout));
    }
  }
  console.log(`image ${image}; median of ${reps} runs, interleaved, warm page cache\n`);
  console.log('| build | requests | entries | wall ms | CPU ms (all threads) | main thread ms |\n|---|---|---|---|---|---|');
  dists.forEach((d, i) => {
    const m = (k) => median(runs[i].map((x) => x[k])).toFixed(1);
    console.log(`| ${d} | ${runs[i][0].requests} | ${runs[i][0].entries} | ${m('wall')} | ${m('cpu')} | ${m('main')} |`);
  });
}

await main();
