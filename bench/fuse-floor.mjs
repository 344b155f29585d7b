#!/usr/bin/env node
/**
 * The floor under every request-bound workload: what one synchronous FUSE
 * request costs on this machine when the server does nothing. A client
 * (bench/lib/lookup-loop.mjs) stat(2)s 20,000 distinct missing names, one
 * LOOKUP each, on
 *   tmpfs          no FUSE at all: the client's own cost per call
 *   null daemon    sifuse's transport answering at once (bench/lib/null-daemon.mjs)
 *   ... one CPU    the same, client and daemon pinned to CPU 0 (taskset): no
 *                  wake-up crosses CPUs, so the difference to the row above
 *                  is what waking the other CPU costs on this machine
 *   sifuse         `sifuse mount` of the bench's minbase SquashFS (the adapter's
 *                  and the engine's real negative lookup)
 *   squashfuse_ll  the same image, a C libfuse3 server
 *   kernel         the kernel's squashfs (root only), for scale
 * interleaved, median of --reps, microseconds per call and the round trip
 * (per call minus tmpfs's). A workload of R synchronous requests costs at
 * least R times the null daemon's round trip on top of its client's own
 * work. Not part of CI; no timing assertions.
 *
 *   node bench/fuse-floor.mjs [--reps 5]
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { have, isMounted, isRoot, sifuseBin, unmount } from './lib/peers.mjs';
import { median } from './lib/stats.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const cache = process.env.SIFUSE_CACHE || '/var/tmp/sifuse-cache';
const LOOKUPS = 20000;

function must(cmd, args) {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.status}): ${String(r.stderr).trim()}`);
  return String(r.stdout);
}

async function waitMounted(dir, what) {
  for (let i = 0; i < 300; i++) {
    if (isMounted(dir)) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`${what}: ${dir} did not become a mount`);
}

/** Starts the null daemon on `mnt` (on CPU 0 with `pinned`); resolves to its child process once it serves. */
async function nullDaemon(mnt, pinned = false) {
  const argv = [process.execPath, join(here, 'lib', 'null-daemon.mjs'), mnt];
  if (pinned) argv.unshift('taskset', '-c', '0');
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`null daemon exited (${code}) before it served`)));
    child.stdout.once('data', resolve);
  });
  await waitMounted(mnt, 'null daemon');
  return child;
}

export async function run(options = {}) {
  const reps = options.reps ?? 5;
  const sqfs = join(cache, 'bench-bookworm-minbase.sqfs');
  if (!existsSync(sqfs)) throw new Error(`${sqfs} is missing: run \`npm run bench -- mounts\` once (builds it)`);
  const work = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : '/tmp', 'sifuse-floor-'));
  const targets = [];
  const skipped = [];
  const undo = [];
  try {
    mkdirSync(join(work, 'tmpfs'));
    targets.push({ name: 'tmpfs', dir: join(work, 'tmpfs') });

    const nullMnt = join(work, 'null');
    mkdirSync(nullMnt);
    const child = await nullDaemon(nullMnt);
    undo.push(() => {
      child.kill('SIGTERM');
      unmount(nullMnt);
    });
    targets.push({ name: 'null daemon', dir: nullMnt });

    if (have('taskset')) {
      const m = join(work, 'null-pinned');
      mkdirSync(m);
      const pinned = await nullDaemon(m, true);
      undo.push(() => {
        pinned.kill('SIGTERM');
        unmount(m);
      });
      targets.push({ name: 'null daemon, one CPU', dir: m, pin: true });
    } else skipped.push('null daemon, one CPU: taskset is not installed');

    const sifMnt = join(work, 'sifuse');
    mkdirSync(sifMnt);
    must(sifuseBin, ['mount', sqfs, sifMnt]);
    undo.push(() => {
      spawnSync(sifuseBin, ['umount', sifMnt], { stdio: 'ignore', timeout: 60_000 });
      unmount(sifMnt);
    });
    await waitMounted(sifMnt, 'sifuse mount');
    targets.push({ name: 'sifuse', dir: sifMnt });

    if (have('squashfuse_ll')) {
      const m = join(work, 'sqll');
      mkdirSync(m);
      must('squashfuse_ll', [sqfs, m]);
      undo.push(() => unmount(m));
      await waitMounted(m, 'squashfuse_ll');
      targets.push({ name: 'squashfuse_ll', dir: m });
    } else skipped.push('squashfuse_ll: not installed');

    if (isRoot) {
      const m = join(work, 'kernel');
      mkdirSync(m);
      must('mount', ['-t', 'squashfs', '-o', 'loop,ro', sqfs, m]);
      undo.push(() => unmount(m));
      targets.push({ name: 'kernel squashfs', dir: m });
    } else skipped.push('kernel squashfs: not root (loop mount)');

    const us = new Map(targets.map((t) => [t.name, []]));
    for (let r = 0; r < reps; r++) {
      for (const t of r % 2 ? [...targets].reverse() : targets) {
        const client = [process.execPath, join(here, 'lib', 'lookup-loop.mjs'), t.dir, String(LOOKUPS), `r${r}`];
        const out = t.pin ? must('taskset', ['-c', '0', ...client]) : must(client[0], client.slice(1));
        us.get(t.name).push(Number(out.trim()));
      }
    }
    const base = median(us.get('tmpfs'));
    let table = `${LOOKUPS} stat(2)s of distinct missing names (one LOOKUP each through FUSE), median of ${reps} interleaved runs\n\n`;
    table += '| server | us per call | round trip (minus tmpfs) |\n|---|---|---|\n';
    for (const t of targets) {
      const m = median(us.get(t.name));
      table += `| ${t.name} | ${m.toFixed(1)} | ${t.name === 'tmpfs' ? '' : (m - base).toFixed(1)} |\n`;
    }
    const results = { lookups: LOOKUPS, reps, usPerCall: Object.fromEntries(us), skipped };
    const out = join(here, 'out');
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, 'fuse-floor.json'), `${JSON.stringify(results, null, 2)}\n`);
    table += `\nraw figures: bench/out/fuse-floor.json\n`;
    return { table, results };
  } finally {
    for (const f of undo.reverse()) {
      try {
        f();
      } catch {
        // Each undo step is best effort; the next still runs.
      }
    }
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf('--reps');
  const r = await run({ reps: i > 0 ? Number(process.argv[i + 1]) : 5 });
  console.log(r.table);
}
