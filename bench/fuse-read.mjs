#!/usr/bin/env node
/**
 * The FUSE read path: `sifuse mount` of the bookworm minbase SquashFS image
 * against squashfuse_ll (and, as root, the kernel's squashfs for scale), and
 * the same through an overlay: `sifuse mount --writable-tmpfs` against
 * fuse-overlayfs over squashfuse_ll. Each run mounts afresh (so the FUSE
 * caches are cold; the image file stays in the page cache: warm image), then
 *   walk      find MNT -printf '%s %m %i\n' (READDIRPLUS/LOOKUP/GETATTR)
 *   read-all  find MNT -type f -print0 | xargs -0 cat (every byte)
 *   mount     from the command to the mount answering
 * Runs are interleaved after a warm-up round; medians with ratios to the
 * first row. sifuse's --stats request counts of the last run are printed
 * beside. Image: BENCHMARKS.md's (see bench/manifest.mjs), cached under
 * ${SIFUSE_CACHE:-/var/tmp/sifuse-cache}. No timing assertions; not CI.
 *
 *   node bench/fuse-read.mjs [--reps 5]
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const cache = process.env.SIFUSE_CACHE || '/var/tmp/sifuse-cache';
const sifuse = join(root, 'bin', 'sifuse');

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function seconds(fn) {
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

function sh(script) {
  const r = spawnSync('sh', ['-c', script], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`failed (exit ${r.status}): ${script}\n${r.stderr}`);
}

function has(tool) {
  return spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
}

const q = (s) => `'${s.replace(/'/g, `'\\''`)}'`;

export async function run(options = {}) {
  const reps = options.reps ?? 5;
  const sqfs = join(cache, 'bench-bookworm-minbase.sqfs');
  if (!existsSync(sqfs)) throw new Error(`${sqfs} is missing: run \`npm run bench -- manifest\` once (builds it)`);
  if (!existsSync(join(root, 'dist', 'cli.js'))) throw new Error('dist/cli.js is missing: run `npx tsc -p tsconfig.json`');
  const work = mkdtempSync(join(tmpdir(), 'sifuse-bench-fuse-'));
  const log = join(work, 'sifuse.log');
  const skipped = [];
  const umountSifuse = (m) => execFileSync(sifuse, ['umount', m]);
  const servers = [
    {
      name: 'sifuse mount (SquashFS)',
      mount: (m) => execFileSync(sifuse, ['mount', '--stats', '--log', log, sqfs, m]),
      umount: umountSifuse,
    },
    {
      name: 'squashfuse_ll',
      need: 'squashfuse_ll',
      mount: (m) => execFileSync('squashfuse_ll', [sqfs, m]),
      umount: (m) => execFileSync('fusermount3', ['-u', m]),
    },
    {
      name: 'sifuse mount --writable-tmpfs (Overlay)',
      mount: (m) => execFileSync(sifuse, ['mount', '--stats', '--log', log, '--writable-tmpfs', sqfs, m]),
      umount: umountSifuse,
    },
    {
      name: 'fuse-overlayfs over squashfuse_ll',
      need: 'fuse-overlayfs',
      mount: (m) => {
        sh(`mkdir -p ${q(m)}.lower ${q(m)}.upper ${q(m)}.work && squashfuse_ll ${q(sqfs)} ${q(m)}.lower`);
        execFileSync('fuse-overlayfs', ['-o', `lowerdir=${m}.lower,upperdir=${m}.upper,workdir=${m}.work`, m]);
      },
      umount: (m) => {
        execFileSync('fusermount3', ['-u', m]);
        // fuse-overlayfs lets go of its lower a moment after its own unmount.
        for (let i = 0; ; i++) {
          try {
            execFileSync('fusermount3', ['-u', `${m}.lower`], { stdio: 'ignore' });
            break;
          } catch (err) {
            if (i === 50) throw err;
            spawnSync('sleep', ['0.1']);
          }
        }
        rmSync(`${m}.upper`, { recursive: true, force: true });
        rmSync(`${m}.work`, { recursive: true, force: true });
      },
    },
  ];
  if (isRoot) {
    servers.push({
      name: 'kernel squashfs (loop)',
      mount: (m) => execFileSync('mount', ['-t', 'squashfs', '-o', 'loop,ro', sqfs, m]),
      umount: (m) => execFileSync('umount', [m]),
    });
  } else {
    skipped.push('kernel squashfs row: needs root');
  }
  const active = servers.filter((s) => {
    if (s.need && !has(s.need)) {
      skipped.push(`${s.name}: ${s.need} is not installed`);
      return false;
    }
    return true;
  });
  const mnt = join(work, 'mnt');
  sh(`mkdir -p ${q(mnt)}`);
  const samples = Object.fromEntries(active.map((s) => [s.name, { mount: [], walk: [], read: [] }]));
  const stats = {};
  const loadBefore = loadavg();
  try {
    for (let round = 0; round <= reps; round++) {
      for (const s of active) {
        for (const phase of ['walk', 'read']) {
          rmSync(log, { force: true });
          if (s.failed) continue;
          let tMount;
          try {
            tMount = seconds(() => s.mount(mnt));
          } catch (err) {
            if (round > 0) throw err;
            s.failed = true;
            skipped.push(`${s.name}: mount failed (${String(err.stderr ?? err.message).trim().split('\n')[0]})`);
            continue;
          }
          let t;
          try {
            t = phase === 'walk'
              ? seconds(() => sh(`find ${q(mnt)} -printf '%s %m %i\\n' > /dev/null`))
              : seconds(() => sh(`find ${q(mnt)} -type f -print0 | xargs -0 -r cat > /dev/null`));
          } finally {
            s.umount(mnt);
          }
          if (round === 0) continue;
          samples[s.name][phase].push(t);
          samples[s.name].mount.push(tMount);
          if (existsSync(log) && s.name.startsWith('sifuse')) {
            stats[`${s.name} ${phase}`] = readFileSync(log, 'utf8').trim();
          }
        }
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const loadAfter = loadavg();
  for (let i = active.length - 1; i >= 0; i--) if (active[i].failed) active.splice(i, 1);
  const med = (name, k) => median(samples[name][k]);
  const base = active[0].name;
  const rows = active.map((s) => ({
    server: s.name,
    mount: med(s.name, 'mount'),
    walk: med(s.name, 'walk'),
    read: med(s.name, 'read'),
  }));
  const ms = (x) => `${(x * 1000).toFixed(0)} ms`;
  const ratio = (x, k) => `${(x / rows[0][k]).toFixed(2)}x`;
  const lines = [
    `Image ${sqfs} (warm in the page cache), each run on a fresh mount (cold FUSE caches); ` +
      `median of ${reps} interleaved runs; load ${loadBefore[0].toFixed(1)} -> ${loadAfter[0].toFixed(1)} on this 2-core machine.`,
    '',
    '| server | walk (find) | read-all (cat) | mount |',
    '|---|---|---|---|',
    ...rows.map((r) => `| ${r.server} | ${ms(r.walk)} (${ratio(r.walk, 'walk')}) | ${ms(r.read)} (${ratio(r.read, 'read')}) | ${ms(r.mount)} |`),
    '',
    ...skipped.map((s) => `skipped: ${s}`),
    '',
    'sifuse --stats of the last run of each:',
    '```',
    ...Object.entries(stats).map(([k, v]) => `${k}:\n${v}`),
    '```',
  ];
  const table = lines.join('\n');
  const out = join(root, 'bench', 'out');
  sh(`mkdir -p ${q(out)}`);
  writeFileSync(join(out, 'fuse-read.json'), JSON.stringify({ rows, samples, stats, loadBefore, loadAfter }, null, 2));
  return { table, results: rows };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const i = process.argv.indexOf('--reps');
  const { table } = await run({ reps: i > 0 ? Number(process.argv[i + 1]) : undefined });
  console.log(table);
}
