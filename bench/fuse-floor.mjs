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
 *   sifuse         `sifuse mount` of the bench's minbase SIF (the adapter's and
 *                  the engine's real negative lookup)
 *   squashfuse_ll  the same image, a C libfuse3 server
 *   kernel         the kernel's squashfs (root only), for scale
 * interleaved, median of --reps, microseconds per call and the round trip
 * (per call minus tmpfs's). A workload of R synchronous requests costs at
 * least R times the null daemon's round trip on top of its client's own
 * work. Not part of CI; no timing assertions.
 *
 *   node bench/fuse-floor.mjs [--reps 5]
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sifOffset } from './lib/images.mjs';
import { have, readPeers, sh, unmount, waitMounted } from './lib/peers.mjs';
import { median } from './lib/stats.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const cache = process.env.SIFUSE_CACHE || '/var/tmp/sifuse-cache';
const LOOKUPS = 20000;

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
  const sif = join(cache, 'bench-bookworm-minbase.sif');
  if (!existsSync(sif)) throw new Error(`${sif} is missing: run \`npm run bench -- mounts\` once (builds it)`);
  const work = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : '/tmp', 'sifuse-floor-'));
  const targets = [];
  const skipped = [];
  const undo = [];
  try {
    mkdirSync(join(work, 'tmpfs'));
    targets.push({ name: 'tmpfs', dir: join(work, 'tmpfs') });

    for (const pinned of [false, true]) {
      if (pinned && !have('taskset')) {
        skipped.push('null daemon, one CPU: taskset is not installed');
        continue;
      }
      const m = join(work, pinned ? 'null-pinned' : 'null');
      mkdirSync(m);
      const child = await nullDaemon(m, pinned);
      undo.push(() => {
        child.kill('SIGTERM');
        unmount(m);
      });
      targets.push({ name: pinned ? 'null daemon, one CPU' : 'null daemon', dir: m, pin: pinned });
    }

    // The image on three of the mounts bench's read peers, mounted as they mount it there.
    const peers = new Map(readPeers().map((p) => [p.name, p]));
    for (const [name, label] of [
      ['sifuse', 'sifuse'],
      ['squashfuse_ll', 'squashfuse_ll'],
      ['kernel', 'kernel squashfs'],
    ]) {
      const peer = peers.get(name);
      const why = peer.why();
      if (why) {
        skipped.push(`${label}: ${why}`);
        continue;
      }
      const m = await peer.mount({ sif, offset: sifOffset(sif) });
      undo.push(() => m.umount());
      targets.push({ name: label, dir: m.mnt });
    }

    const us = new Map(targets.map((t) => [t.name, []]));
    for (let r = 0; r < reps; r++) {
      for (const t of r % 2 ? [...targets].reverse() : targets) {
        const client = [process.execPath, join(here, 'lib', 'lookup-loop.mjs'), t.dir, String(LOOKUPS), `r${r}`];
        const out = t.pin ? sh('taskset', ['-c', '0', ...client]) : sh(client[0], client.slice(1));
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
        await f();
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
