#!/usr/bin/env node
/**
 * The untar workload's FUSE requests replayed in-process on the FuseAdapter
 * over the mount's stack (`sifuse mount --overlay IMG SIF`: openStack, so an
 * ext3 upper over the SIF's SquashFS), without the kernel: each request gets
 * a stand-in FuseRequest whose replies only note the nodeid. What it measures
 * is the daemon's own JS cost per request (adapter, overlay, engines), the
 * part of `--stats` daemon CPU that is not /dev/fuse syscalls or N-API.
 *
 * The requests per tar entry, as a real `tar xf` on the mount sends them
 * (default_permissions, KILLPRIV_V2, direct-I/O writes; strace of tar plus
 * --stats counts):
 *   file     LOOKUP (negative), CREATE 0700, GETATTR of the parent, one WRITE
 *            per 10 KiB record, SETATTR mtime, GETXATTR security.capability,
 *            SETATTR uid/gid (kill set-id), SETATTR mode, RELEASE
 *   symlink  LOOKUP, SYMLINK, GETATTR of the parent, SETATTR times, GETXATTR,
 *            SETATTR uid/gid
 *   link     LOOKUP, LINK, GETATTR of the parent
 *   dir      LOOKUP, MKDIR, GETATTR of the parent; once all entries are in:
 *            SETATTR times, SETATTR uid/gid, SETATTR mode
 *
 * Several builds compare (`--dist DIR` repeated, each a built dist/): runs
 * interleave ABBA after --warmup runs each; CPU is process.cpuUsage() (all
 * threads) of the replay, median of --reps, and us per request. Not part of
 * CI; no timing assertions.
 *
 *   node bench/adapter-untar.mjs [--tar /var/tmp/sifuse-cache/bench-usr.tar] [--sif IMG] [--reps 5] [--warmup 1] [--dist DIR ...]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseTar } from './lib/tar.mjs';
import { median } from './lib/stats.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

const SET_MODE = 1 << 0;
const SET_UID = 1 << 1;
const SET_GID = 1 << 2;
const SET_ATIME = 1 << 4;
const SET_MTIME = 1 << 5;
const SET_KILL_SUIDGID = 1 << 11;
const O_WRONLY = 1;
const O_CREAT = 0o100;
const O_EXCL = 0o200;
const CAP = Buffer.from('security.capability');

/** A FuseRequest stand-in: every reply is accepted once; entry replies hand back the nodeid. */
class Req {
  constructor(uid = 0, gid = 0) {
    this.uid = uid;
    this.gid = gid;
    this.pid = 1;
    this.done = false;
    this.nodeid = 0;
    this.errno = 0;
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
    this.errno = e;
  }
  ok() {
    this.take();
  }
  entry(st) {
    this.take();
    this.nodeid = st.nodeid;
  }
  entryWith(nodeid) {
    this.take();
    this.nodeid = nodeid;
  }
  create(st) {
    this.take();
    this.nodeid = st.nodeid;
  }
  createWith(nodeid) {
    this.take();
    this.nodeid = nodeid;
  }
  attr() {
    this.take();
  }
  attrWith() {
    this.take();
  }
  open() {
    this.take();
  }
  write() {
    this.take();
  }
  buf() {
    this.take();
  }
  xattrSize() {
    this.take();
  }
}

/** Runs one handler as FuseSession.serve does: a rejection becomes the errno, an FsError's or EIO. */
async function call(counts, op, fn) {
  counts.n++;
  const r = new Req();
  try {
    await fn(r);
  } catch (err) {
    r.errno = typeof err?.errno === 'number' ? err.errno : 5;
    if (!(typeof err?.errno === 'number')) throw err;
  }
  if (!r.done && !r.errno) throw new Error(`${op}: no answer`);
  return r;
}

async function once(build, sif, work, entries, chunk) {
  const img = join(work, 'overlay.img');
  rmSync(img, { force: true });
  await build.createOverlayImage(img, { sizeMiB: 4096, sparse: true, createDirs: [], fakeroot: false });
  const stack = await build.openStack({ image: sif, overlays: [img] });
  const a = new build.FuseAdapter(stack.fs, { log: (l) => console.error(l) });
  const counts = { n: 0 };
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const mk = await call(counts, 'mkdir', (r) => a.mkdir(r, 1, Buffer.from('scratch'), 0o40755));
  const nodeids = new Map([['', mk.nodeid]]);
  const keyOf = (parts) => parts.map((p) => p.toString('latin1')).join('/');
  const dirs = [];
  for (const e of entries) {
    const parent = nodeids.get(keyOf(e.parts.slice(0, -1)));
    if (parent === undefined) continue;
    const name = e.parts[e.parts.length - 1];
    const key = keyOf(e.parts);
    const look = await call(counts, 'lookup', (r) => a.lookup(r, parent, name));
    if (look.nodeid !== 0) {
      if (e.type === '5') nodeids.set(key, look.nodeid);
      continue;
    }
    if (e.type === '5') {
      const d = await call(counts, 'mkdir', (r) => a.mkdir(r, parent, name, 0o40700));
      nodeids.set(key, d.nodeid);
      dirs.push({ nodeid: d.nodeid, e });
    } else if (e.type === '0' || e.type === '7') {
      const c = await call(counts, 'create', (r) => a.create(r, parent, name, 0o100700, O_WRONLY | O_CREAT | O_EXCL));
      const n = c.nodeid;
      nodeids.set(key, n);
      for (let p = 0; p < e.data.length; p += chunk) {
        await call(counts, 'write', (r) => a.write(r, n, e.data.subarray(p, p + chunk), p, 0, 0));
      }
      await call(counts, 'setattr', (r) => a.setattr(r, n, SET_MTIME, Float64Array.of(0, 0, 0, 0, 0, 0, e.mtime, 0), 0));
      await call(counts, 'getxattr', (r) => a.getxattr(r, n, CAP, 0));
      await call(counts, 'setattr', (r) =>
        a.setattr(r, n, SET_UID | SET_GID | SET_KILL_SUIDGID, Float64Array.of(0, e.uid, e.gid, 0, 0, 0, 0, 0), 0),
      );
      await call(counts, 'setattr', (r) => a.setattr(r, n, SET_MODE, Float64Array.of(e.mode, 0, 0, 0, 0, 0, 0, 0), 0));
      await call(counts, 'release', (r) => a.release(r, n, 0, O_WRONLY));
    } else if (e.type === '2') {
      const s = await call(counts, 'symlink', (r) => a.symlink(r, parent, name, e.link));
      const n = s.nodeid;
      await call(counts, 'setattr', (r) =>
        a.setattr(r, n, SET_ATIME | SET_MTIME, Float64Array.of(0, 0, 0, 0, e.mtime, 0, e.mtime, 0), 0),
      );
      await call(counts, 'getxattr', (r) => a.getxattr(r, n, CAP, 0));
      await call(counts, 'setattr', (r) =>
        a.setattr(r, n, SET_UID | SET_GID | SET_KILL_SUIDGID, Float64Array.of(0, e.uid, e.gid, 0, 0, 0, 0, 0), 0),
      );
    } else if (e.type === '1') {
      const target = nodeids.get(
        keyOf(
          e.link
            .toString('latin1')
            .split('/')
            .filter((p) => p !== '' && p !== '.'),
        ),
      );
      if (target === undefined) continue;
      await call(counts, 'link', (r) => a.link(r, target, parent, name));
    } else continue;
    await call(counts, 'getattr', (r) => a.getattr(r, parent, 0));
  }
  for (const { nodeid: n, e } of dirs.reverse()) {
    await call(counts, 'setattr', (r) =>
      a.setattr(r, n, SET_ATIME | SET_MTIME, Float64Array.of(0, 0, 0, 0, e.mtime, 0, e.mtime, 0), 0),
    );
    await call(counts, 'setattr', (r) => a.setattr(r, n, SET_UID | SET_GID, Float64Array.of(0, e.uid, e.gid, 0, 0, 0, 0, 0), 0));
    await call(counts, 'setattr', (r) => a.setattr(r, n, SET_MODE, Float64Array.of(e.mode, 0, 0, 0, 0, 0, 0, 0), 0));
  }
  const c = process.cpuUsage(c0);
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  await stack.fs.close();
  stack.release();
  execFileSync('e2fsck', ['-fn', img], { stdio: 'ignore' });
  return { requests: counts.n, wallMs, cpuMs: (c.user + c.system) / 1e3, userMs: c.user / 1e3 };
}

export async function run(options = {}) {
  const o = {
    tar: '/var/tmp/sifuse-cache/bench-usr.tar',
    sif: '/var/tmp/sifuse-cache/bench-bookworm-minbase.sif',
    reps: 5,
    warmup: 1,
    chunk: 10240,
    ...options,
  };
  const dists = o.dist && o.dist.length > 0 ? o.dist : [join(root, 'dist')];
  const builds = [];
  for (const d of dists) {
    const imp = (p) => import(pathToFileURL(join(d, p)).href);
    builds.push({
      dist: d,
      FuseAdapter: (await imp('fuse/adapter.js')).FuseAdapter,
      openStack: (await imp('fuse/stack.js')).openStack,
      createOverlayImage: (await imp('commands/overlay.js')).createOverlayImage,
    });
  }
  const entries = parseTar(readFileSync(o.tar));
  const work = mkdtempSync(join(tmpdir(), 'sifuse-bench-adapter-untar-'));
  const all = builds.map(() => []);
  try {
    for (let r = 0; r < o.warmup; r++) for (const b of builds) await once(b, o.sif, work, entries, o.chunk);
    for (let r = 0; r < o.reps; r++) {
      for (let kk = 0; kk < builds.length; kk++) {
        const k = r % 2 ? builds.length - 1 - kk : kk;
        const res = await once(builds[k], o.sif, work, entries, o.chunk);
        if (process.env.UNTAR_RAW) console.error(builds[k].dist, JSON.stringify(res));
        all[k].push(res);
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const rows = [
    `${entries.length} tar entries, ${all[0][0].requests} requests; median of ${o.reps}: wall ms / CPU ms (min, user) / CPU us per request`,
  ];
  all.forEach((xs, k) => {
    const c = median(xs.map((x) => x.cpuMs));
    rows.push(
      `${builds[k].dist}: ${median(xs.map((x) => x.wallMs)).toFixed(0)} / ${c.toFixed(0)} (min ${Math.min(...xs.map((x) => x.cpuMs)).toFixed(0)}, user ${median(xs.map((x) => x.userMs)).toFixed(0)}) / ${((c * 1000) / xs[0].requests).toFixed(1)}`,
    );
  });
  return { table: rows.join('\n'), results: all };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const o = { dist: [] };
  for (let i = 0; i < args.length; i++) {
    const k = args[i].replace(/^--/, '');
    const v = args[++i];
    if (k === 'dist') o.dist.push(resolve(v));
    else o[k] = k === 'tar' || k === 'sif' ? v : Number(v);
  }
  console.log((await run(o)).table);
}
