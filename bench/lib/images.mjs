/**
 * The benchmark images of shared/BENCHMARKS.md, built once and cached under
 * ${SIFUSE_CACHE:-/var/tmp/sifuse-cache}:
 *   minbase  debootstrap --variant=minbase bookworm (scripts/make-rootfs.sh)
 *   python   the same with --include=python3,python3-numpy (make-rootfs.sh --python)
 * each as root.sqfs (mksquashfs -noappend -all-root -comp gzip) wrapped in a SIF
 * (siftool new + add --datatype 4 --parttype 2 --partfs 1 --partarch 2 --groupid 1),
 * partition at offset 32768. Building needs root and, the first time, the Debian
 * mirror; without them the caller is told why (an Error) and skips.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const cache = process.env.SIFUSE_CACHE || '/var/tmp/sifuse-cache';
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/** Partition offset of the SIF's squashfs (siftool's first data object). */
export function sifOffset(sif) {
  const out = execFileSync('siftool', ['list', sif], { encoding: 'utf8' });
  const m = /\|\s*(\d+)-\d+\s*\|FS/.exec(out);
  if (!m) throw new Error(`${sif}: no FS partition in siftool list`);
  return Number(m[1]);
}

/** A new SIF at `sif` holding `sqfs` as its root filesystem partition (Apptainer's layout, BENCHMARKS.md). */
export function packSif(sqfs, sif) {
  rmSync(sif, { force: true });
  execFileSync('siftool', ['new', sif]);
  execFileSync('siftool', [
    'add',
    sif,
    sqfs,
    '--datatype',
    '4',
    '--parttype',
    '2',
    '--partfs',
    '1',
    '--partarch',
    '2',
    '--groupid',
    '1',
  ]);
}

/** { sqfs, sif, offset, rootfs? } for 'minbase' or 'python'. */
export async function benchImage(variant = 'minbase', { keepRootfs = false } = {}) {
  const sqfs = join(cache, `bench-bookworm-${variant}.sqfs`);
  const sif = join(cache, `bench-bookworm-${variant}.sif`);
  const tarball = join(cache, `bookworm-${variant}.tar`);
  if (existsSync(sqfs) && existsSync(sif) && statSync(sif).size > 0) {
    return { sqfs, sif, tarball, offset: sifOffset(sif) };
  }
  if (!isRoot) throw new Error(`${sif} is missing and building it needs root (debootstrap)`);
  const work = mkdtempSync(join(tmpdir(), 'sifuse-bench-'));
  try {
    const rootfs = join(work, 'rootfs');
    const args = variant === 'python' ? ['--python', rootfs] : [rootfs];
    const made = spawnSync(join(root, 'scripts', 'make-rootfs.sh'), args, { stdio: 'inherit' });
    if (made.status === 3) throw new Error('the Debian mirror cannot be reached (scripts/make-rootfs.sh exit 3)');
    if (made.status !== 0) throw new Error(`scripts/make-rootfs.sh failed (exit ${made.status})`);
    execFileSync('mksquashfs', [rootfs, `${sqfs}.part`, '-noappend', '-all-root', '-comp', 'gzip', '-quiet', '-no-progress']);
    packSif(`${sqfs}.part`, `${sif}.part`);
    execFileSync('mv', [`${sqfs}.part`, sqfs]);
    execFileSync('mv', [`${sif}.part`, sif]);
    return { sqfs, sif, tarball, offset: sifOffset(sif) };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
