/**
 * The mount workloads of shared/BENCHMARKS.md on sifuse and every installed
 * peer (bench/lib/peers.mjs), interleaved: for each repetition, each workload
 * runs once on every peer (the peer order rotates per repetition), each run on
 * a fresh mount, with the page cache dropped first when root (cold; otherwise
 * the table says warm). Every command is bounded by `timeout`.
 *
 * Prints one markdown table of medians with sifuse's ratio to the best FUSE
 * peer and the target of BENCHMARKS.md; writes the raw figures to
 * bench/out/mounts.json and a bar chart to bench/out/mounts.svg; lists the
 * peers and workloads it skipped and why. Installs nothing.
 *
 *   npm run bench -- mounts [--reps 3] [--only walk,read-all] [--warm]
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchImage, packSif, sifOffset } from './lib/images.mjs';
import { daemonPeakRss, have, isRoot, readPeers, writePeers } from './lib/peers.mjs';
import { fmt, median } from './lib/stats.mjs';
import { barChart } from './lib/svg.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, 'out');
const cache = process.env.SIFUSE_CACHE || '/var/tmp/sifuse-cache';
/** Seconds any one workload command may take before it counts as failed. */
const LIMIT = Number(process.env.SIFUSE_BENCH_LIMIT || 180);

function dropCaches() {
  execFileSync('sync');
  writeFileSync('/proc/sys/vm/drop_caches', '3');
}

/** Wall seconds of `sh -c script`, bounded by LIMIT; throws with the tail of stderr on failure. */
function timed(script) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('timeout', [String(LIMIT), 'sh', '-c', script], {
    stdio: ['ignore', 'ignore', 'pipe'],
    maxBuffer: 1 << 24,
  });
  const t = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status === 124) throw new Error(`did not finish in ${LIMIT} s`);
  if (r.status !== 0) throw new Error(`exit ${r.status}: ${String(r.stderr).trim().split('\n').slice(-2).join(' / ')}`);
  return t;
}

const q = (s) => `'${s.replaceAll("'", "'\\''")}'`;

/** The unpacked minbase tree (lower of fuse-overlayfs on host dirs) and its usr/ as a tarball (untar). */
function hostTree(tarball) {
  const rootfs = join(cache, 'bench-rootfs-minbase');
  const usrTar = join(cache, 'bench-usr.tar');
  if (!existsSync(join(rootfs, 'usr'))) {
    rmSync(rootfs, { recursive: true, force: true });
    mkdirSync(rootfs, { recursive: true });
    execFileSync('tar', ['--numeric-owner', '-C', rootfs, '-xf', tarball]);
  }
  if (!existsSync(usrTar)) {
    execFileSync('tar', ['--numeric-owner', '-C', rootfs, '-cf', `${usrTar}.part`, 'usr']);
    execFileSync('mv', [`${usrTar}.part`, usrTar]);
  }
  return { rootfs, usrTar };
}

/** An image holding /big, 1 GiB of random bytes (seq-read, rand-read); cached. */
function bigImage() {
  const sif = join(cache, 'bench-big.sif');
  if (existsSync(sif) && statSync(sif).size > 1 << 30) return { sif, offset: sifOffset(sif) };
  const dir = join(cache, 'bench-big-src');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  execFileSync('dd', ['if=/dev/urandom', `of=${join(dir, 'big')}`, 'bs=1M', 'count=1024', 'status=none']);
  const sqfs = join(cache, 'bench-big.sqfs');
  execFileSync('mksquashfs', [dir, sqfs, '-noappend', '-all-root', '-comp', 'gzip', '-quiet', '-no-progress']);
  rmSync(dir, { recursive: true, force: true });
  packSif(sqfs, `${sif}.part`);
  rmSync(sqfs);
  execFileSync('mv', [`${sif}.part`, sif]);
  return { sif, offset: sifOffset(sif) };
}

const RAND_READS = 8192;
const randRead = join(here, 'lib', 'randread.mjs');

/**
 * Read workloads: image = which image to mount; run(mnt) returns a shell
 * script to time; `metric` = 'time' or 'rss' (daemon peak over read-all).
 */
const READ = [
  { name: 'walk', image: 'minbase', script: (m) => `find ${q(m)} -printf '%s %m %u %i\\n' | wc -l` },
  { name: 'read-all', image: 'minbase', script: (m) => `tar cf - -C ${q(m)} . | wc -c`, rss: true },
  { name: 'seq-read', image: 'big', script: (m) => `dd if=${q(`${m}/big`)} of=/dev/null bs=1M status=none` },
  {
    name: 'rand-read',
    image: 'big',
    script: (m) =>
      have('fio')
        ? `fio --name=r --filename=${q(`${m}/big`)} --rw=randread --bs=4k --size=1g --io_size=${RAND_READS * 4}k --readonly --randseed=7 --output=/dev/null`
        : `${q(process.execPath)} ${q(randRead)} ${q(`${m}/big`)} ${RAND_READS} 7`,
  },
  {
    name: 'imports',
    image: 'python',
    needs: () => (have('bwrap') ? null : 'bwrap is not installed'),
    script: (m) =>
      `bwrap --ro-bind ${q(m)} / --dev /dev --proc /proc --tmpfs /tmp /usr/bin/python3 -c 'import numpy, json, email, asyncio, xml.dom.minidom, decimal, http.client'`,
  },
];

/** Write workloads, run in this order on one fresh mount per peer and repetition. */
const WRITE = [
  { name: 'untar', script: (m, { usrTar }) => `mkdir -p ${q(`${m}/scratch`)} && tar xf ${q(usrTar)} -C ${q(`${m}/scratch`)}` },
  {
    name: 'copy-up',
    script: (m) => `find ${q(`${m}/usr/lib/x86_64-linux-gnu`)} -type f -size +200k | while read -r f; do echo x >> "$f"; done`,
  },
  { name: 'rm-lower', script: (m) => `rm -rf ${q(`${m}/usr/share/locale`)} ${q(`${m}/usr/share/doc`)}` },
  { name: 'rm-upper', script: (m) => `rm -rf ${q(`${m}/scratch`)}` },
];

/** BENCHMARKS.md targets: sifuse / peer at most `max`. */
const TARGETS = {
  walk: [['squashfuse_ll', 0.5]],
  'read-all': [
    ['squashfuse_ll', 1.0],
    ['fuse-overlayfs/squashfuse_ll', 0.33],
  ],
  'seq-read': [
    ['squashfuse_ll', 1.0],
    ['fuse-overlayfs/squashfuse_ll', 0.33],
  ],
  'rand-read': [
    ['squashfuse_ll', 1.0],
    ['fuse-overlayfs/squashfuse_ll', 0.33],
  ],
  imports: [
    ['squashfuse_ll', 1.0],
    ['fuse-overlayfs/squashfuse_ll', 0.33],
  ],
  untar: [
    ['apptainer-stack', 0.2],
    ['fuse-overlayfs/host', 1.0],
  ],
  'copy-up': [['apptainer-stack', 0.2]],
  'rm-lower': [['apptainer-stack', 0.2]],
  'rm-upper': [['apptainer-stack', 0.2]],
  mount: [['abs', 0.15]],
  'mount-cold': [['abs', 0.15]],
  'peak RSS MB': [['abs', 150]],
};

function rotate(xs, k) {
  const n = xs.length;
  return xs.map((_, i) => xs[(i + k) % n]);
}

export async function run(options = {}) {
  const reps = options.reps ?? 3;
  const cold = isRoot && !options.warm;
  const only = options.only ? new Set(options.only.split(',')) : null;
  const skipped = [];
  const samples = {}; // workload -> peer -> [values]
  const failures = [];
  /** workload -> sifuse's --stats report (last repetition). */
  const stats = {};
  const add = (w, p, v) => ((samples[w] ??= {})[p] ??= []).push(v);

  const images = {};
  try {
    images.minbase = await benchImage('minbase');
  } catch (err) {
    throw new Error(`the minbase benchmark image cannot be built: ${err.message}`);
  }
  const want = (name) => !only || only.has(name);
  try {
    if (READ.some((w) => w.image === 'python' && want(w.name))) images.python = await benchImage('python');
  } catch (err) {
    skipped.push(`imports: the python3+numpy image cannot be built (${err.message})`);
  }
  if (READ.some((w) => w.image === 'big' && want(w.name))) images.big = bigImage();
  const host = hostTree(images.minbase.tarball);
  if (!have('fio') && want('rand-read'))
    skipped.push(`rand-read: fio is not installed; ${RAND_READS} seeded 4 KiB preads by bench/lib/randread.mjs instead`);

  const rpeers = readPeers().filter((p) => {
    const why = p.why();
    if (why) skipped.push(`${p.name} (read path): ${why}`);
    return !why;
  });
  const wpeers = writePeers().filter((p) => {
    const why = p.why();
    if (why) skipped.push(`${p.name} (write path): ${why}`);
    return !why;
  });
  if (!cold)
    skipped.push(
      isRoot ? 'cold cache: --warm given, runs are warm' : 'cold cache: not root, runs are warm (page cache not dropped)',
    );

  const readWork = READ.filter(
    (w) => want(w.name) && images[w.image] && !(w.needs && w.needs() && skipped.push(`${w.name}: ${w.needs()}`)),
  );
  const writeWork = WRITE.filter((w) => want(w.name));
  const measureMount = want('mount');

  for (let rep = 0; rep < reps; rep++) {
    const order = rotate(rpeers, rep);
    // mount: warm (the daemon's own binary and code in the page cache, as on a
    // machine that ran it before); mount-cold: page cache dropped first (root).
    for (const [label, drop] of measureMount ? [['mount', false], ...(cold ? [['mount-cold', true]] : [])] : []) {
      for (const peer of order) {
        if (drop) dropCaches();
        const t0 = process.hrtime.bigint();
        let m;
        try {
          m = await peer.mount({ ...images.minbase });
          execFileSync('ls', [m.mnt], { stdio: 'ignore', timeout: 30_000 });
          add(label, peer.name, Number(process.hrtime.bigint() - t0) / 1e9);
        } catch (err) {
          failures.push(`${label} on ${peer.name}: ${err.message}`);
        } finally {
          await m?.umount();
        }
      }
    }
    const last = rep === reps - 1;
    for (const w of readWork) {
      for (const peer of order) {
        let m;
        try {
          // sifuse counts its requests on the last repetition only (--stats costs a little per request).
          m = await peer.mount({ ...images[w.image], stats: last });
          if (cold) dropCaches();
          add(w.name, peer.name, timed(w.script(m.mnt)));
          if (w.rss && m.dirs.length > 0) {
            const rss = daemonPeakRss(m.dirs);
            if (rss !== null) add('peak RSS MB', peer.name, rss / 1e6);
          }
        } catch (err) {
          failures.push(`${w.name} on ${peer.name}: ${err.message}`);
        } finally {
          await m?.umount();
          if (m?.stats) stats[w.name] = m.stats;
        }
      }
    }
    if (writeWork.length > 0) {
      for (const peer of rotate(wpeers, rep)) {
        let m;
        try {
          // sifuse counts its requests on the last repetition only, one report per workload.
          m = await peer.mount({ ...images.minbase, rootfs: host.rootfs, stats: last });
          m.takeStats?.();
          for (const w of writeWork) {
            if (cold) dropCaches();
            try {
              add(w.name, peer.name, timed(w.script(m.mnt, host)));
            } catch (err) {
              failures.push(`${w.name} on ${peer.name}: ${err.message}`);
            }
            const report = m.takeStats?.();
            if (report) stats[w.name] = report;
          }
        } catch (err) {
          failures.push(`write path on ${peer.name}: ${err.message}`);
        } finally {
          await m?.umount();
        }
      }
    }
    report(rep + 1);
  }

  return report(reps);

  /** The table, raw JSON and chart of what has been measured so far (written after every repetition). */
  function report(done) {
    const peerNames = [...new Set([...rpeers, ...wpeers].map((p) => p.name))];
    const rows = [];
    let table = `${cold ? 'cold' : 'warm'} cache, median of ${done} interleaved runs, seconds (peak RSS in MB)\n\n`;
    table += `| workload | ${peerNames.join(' | ')} | sifuse / best FUSE peer | target |\n|${'---|'.repeat(peerNames.length + 3)}\n`;
    for (const w of [
      ...(measureMount ? ['mount', ...(cold ? ['mount-cold'] : [])] : []),
      ...readWork.map((x) => x.name),
      ...(readWork.some((x) => x.rss) ? ['peak RSS MB'] : []),
      ...writeWork.map((x) => x.name),
    ]) {
      const med = Object.fromEntries(Object.entries(samples[w] ?? {}).map(([p, v]) => [p, median(v)]));
      const fusePeers = Object.entries(med).filter(([p]) => p !== 'sifuse' && !p.startsWith('kernel'));
      const best = fusePeers.sort((a, b) => a[1] - b[1])[0];
      const s = med.sifuse;
      const ratio = s !== undefined && best ? `${fmt(s / best[1], 2)}x ${best[0]}` : '-';
      const target = (TARGETS[w] ?? [])
        .map(([p, max]) => {
          if (p === 'abs') return `<= ${max}${s === undefined ? '' : s <= max ? ' met' : ' MISSED'}`;
          const r = s !== undefined && med[p] !== undefined ? s / med[p] : undefined;
          return `<= ${max}x ${p}${r === undefined ? '' : ` (${fmt(r, 2)}x ${r <= max ? 'met' : 'MISSED'})`}`;
        })
        .join('; ');
      table += `| ${w} | ${peerNames.map((p) => fmt(med[p], w === 'peak RSS MB' ? 1 : 3)).join(' | ')} | ${ratio} | ${target || '-'} |\n`;
      rows.push({ workload: w, medians: med });
    }
    const statLines = Object.entries(stats).map(([w, text]) => `- ${w}: ${text.replace(/\n\s*/g, '; ')}`);
    if (statLines.length > 0)
      table += `\nsifuse --stats (requests by type, mean JS time each; last repetition):\n${statLines.join('\n')}\n`;
    if (failures.length > 0) table += `\nfailed runs:\n${failures.map((f) => `- ${f}`).join('\n')}\n`;
    if (!peerNames.includes('sifuse')) table += '\nsifuse is not in this table: see "skipped" below.\n';
    const results = { cold, reps: done, samples, stats, failures, skipped, images };
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, 'mounts.json'), JSON.stringify(results, null, 2));
    writeFileSync(
      join(out, 'mounts.svg'),
      barChart(
        rows.filter((r) => r.workload !== 'peak RSS MB'),
        peerNames,
        `sifuse and peers, ${cold ? 'cold' : 'warm'}, median of ${done} (seconds)`,
      ),
    );
    table += `\nraw figures: bench/out/mounts.json; chart: bench/out/mounts.svg\n`;
    return { table, results };
  }
}
