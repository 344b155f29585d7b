#!/usr/bin/env node
/**
 * The Overlay in-process against the kernel's overlayfs doing the same work
 * (issue 8 "Must show"): over a SquashFS lower and a fresh ext3 overlay
 * image (made by `sifuse overlay create`'s code path for both),
 *
 *   copy-up   every lower file over 200 KiB is copied up (chmod: a metadata
 *             change copies the whole file in both; no metacopy), then sync
 *   rename    a 5,000-entry lower directory is renamed (a redirect in both,
 *             no subtree copy), then sync
 *
 * Wall milliseconds per phase (median of --reps), and the Overlay/kernel
 * ratio (below 1: the Overlay is faster). The kernel side needs root (loop
 * mounts); without it only the Overlay's numbers are printed. Each image is
 * checked with e2fsck -fn afterwards. Not part of CI; no timing assertions.
 *
 *   npx tsc -p tsconfig.json && node bench/overlay-inprocess.mjs [--files 40] [--mib 1] [--entries 5000] [--reps 3]
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = (p) => import(pathToFileURL(join(root, 'dist', p)).href);
const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const FILES = arg('files', 40);
const MIB = arg('mib', 1);
const ENTRIES = arg('entries', 5000);
const REPS = arg('reps', 3);
const isRoot = process.getuid?.() === 0;

const { createOverlayImage } = await dist('commands/overlay.js');
const { openExt3Layer } = await dist('layers/ext3-layer.js');
const { openSquashfsLayer } = await dist('layers/squashfs-layer.js');
const { Overlay } = await dist('layers/overlay/index.js');

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;

const work = mkdtempSync(join(tmpdir(), 'sifuse-bench-ov-'));
const src = join(work, 'src');
const big = [];
mkdirSync(join(src, 'big'), { recursive: true });
for (let i = 0; i < FILES; i++) {
  const size = 200 * 1024 + Math.floor((((i * 7919) % 100) / 100) * MIB * 1024 * 1024);
  const b = Buffer.alloc(size);
  for (let j = 0; j < size; j += 4096) b.writeUInt32LE((i * 2654435761 + j) >>> 0, j);
  writeFileSync(join(src, 'big', `f${i}`), b);
  big.push(`f${i}`);
}
mkdirSync(join(src, 'many'));
for (let i = 0; i < ENTRIES; i++) writeFileSync(join(src, 'many', `entry-${i}`), `${i}\n`);
const lower = join(work, 'lower.sqfs');
execFileSync('mksquashfs', [src, lower, '-noappend', '-quiet', '-no-progress']);
rmSync(src, { recursive: true, force: true });

async function image(tag) {
  const p = join(work, `${tag}.img`);
  rmSync(p, { force: true });
  await createOverlayImage(p, {
    sizeMiB: 64 + FILES * MIB * 2,
    sparse: true,
    createDirs: [],
    fakeroot: false,
    owner: { uid: 0, gid: 0 },
  });
  return p;
}

function fsck(img) {
  const r = spawnSync('e2fsck', ['-fn', img], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`e2fsck -fn ${img} failed:\n${r.stdout}${r.stderr}`);
}

async function overlayRun() {
  const img = await image('ov');
  const ov = await Overlay.open({ lowers: [await openSquashfsLayer(lower)], upper: await openExt3Layer(img) });
  const dir = await ov.lookup(ov.rootId, Buffer.from('big'));
  let t0 = process.hrtime.bigint();
  for (const n of big) await ov.setattr(await ov.lookup(dir, Buffer.from(n)), { mode: 0o600 });
  await ov.sync();
  const copy = ms(t0);
  t0 = process.hrtime.bigint();
  await ov.rename(ov.rootId, Buffer.from('many'), ov.rootId, Buffer.from('moved'));
  await ov.sync();
  const rename = ms(t0);
  await ov.close();
  fsck(img);
  return { copy, rename };
}

function kernelRun(img) {
  const l = join(work, 'k-l');
  const u = join(work, 'k-u');
  const m = join(work, 'k-m');
  for (const d of [l, u, m]) mkdirSync(d, { recursive: true });
  execFileSync('mount', ['-t', 'squashfs', '-o', 'loop,ro', lower, l]);
  execFileSync('mount', ['-t', 'ext3', '-o', 'loop', img, u]);
  execFileSync('mount', [
    '-t',
    'overlay',
    'overlay',
    '-o',
    `lowerdir=${l},upperdir=${u}/upper,workdir=${u}/work,redirect_dir=on,index=on`,
    m,
  ]);
  try {
    let t0 = process.hrtime.bigint();
    for (const n of big) chmodSync(join(m, 'big', n), 0o600);
    execFileSync('sync', ['-f', join(m, 'big')]);
    const copy = ms(t0);
    t0 = process.hrtime.bigint();
    renameSync(join(m, 'many'), join(m, 'moved'));
    execFileSync('sync', ['-f', m]);
    const rename = ms(t0);
    return { copy, rename };
  } finally {
    spawnSync('umount', [m]);
    spawnSync('umount', [u]);
    spawnSync('umount', [l]);
  }
}

const res = { ov: [], k: [] };
for (let r = 0; r < REPS; r++) {
  res.ov.push(await overlayRun());
  if (isRoot) {
    const img = await image('k');
    res.k.push(kernelRun(img));
    fsck(img);
  }
}
const total = big.length;
console.log(
  `lower: ${total} files of 200 KiB..${200 + MIB * 1024} KiB, one directory of ${ENTRIES} entries; ${REPS} reps, medians`,
);
for (const phase of ['copy', 'rename']) {
  const o = median(res.ov.map((x) => x[phase]));
  const line = [`${phase.padEnd(7)} Overlay ${o.toFixed(1)} ms`];
  if (isRoot) {
    const k = median(res.k.map((x) => x[phase]));
    line.push(`kernel ${k.toFixed(1)} ms`, `ratio ${(o / k).toFixed(2)}`);
  }
  console.log(line.join('   '));
}
if (!isRoot) console.log('kernel side skipped: loop mounts need root');
rmSync(work, { recursive: true, force: true });
