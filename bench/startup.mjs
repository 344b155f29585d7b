/**
 * Start-up: wall time from spawning `sifuse ls IMAGE /` to its exit, for the
 * ways of starting the CLI, interleaved (A B C ... A B C ...), median of N.
 * Variants:
 *   esm+maps+CA   the old launcher: node --enable-source-maps dist/cli.js, NODE_EXTRA_CA_CERTS set
 *   esm           node dist/cli.js, no CA store
 *   bundle        node bin/launch.cjs with the code cache disabled (SIFUSE_CODE_CACHE=off)
 *   bundle+cache  node bin/launch.cjs (what bin/sifuse runs)
 *   bin/sifuse    the launcher itself, from a shell (NODE_EXTRA_CA_CERTS set: it drops it)
 *   node -e 0     the floor
 * Needs dist/ and dist/bundle (npm run build) and an image (the bench image, or IMAGE=...).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { median } from './lib/stats.mjs';
import { benchImage } from './lib/images.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

export async function run(options = {}) {
  const reps = options.reps ?? 15;
  const image = process.env.IMAGE ?? (await benchImage('minbase', options)).sif;
  const ca =
    process.env.NODE_EXTRA_CA_CERTS ||
    (existsSync('/etc/ssl/certs/ca-certificates.crt') ? '/etc/ssl/certs/ca-certificates.crt' : '');
  const withCa = { ...process.env, NODE_EXTRA_CA_CERTS: ca };
  const noCa = { ...process.env };
  delete noCa.NODE_EXTRA_CA_CERTS;
  const node = process.execPath;
  const variants = [
    ['esm+maps+CA', node, ['--enable-source-maps', join(root, 'dist/cli.js'), 'ls', image, '/'], withCa],
    ['esm', node, [join(root, 'dist/cli.js'), 'ls', image, '/'], noCa],
    ['bundle', node, [join(root, 'bin/launch.cjs'), 'ls', image, '/'], { ...noCa, SIFUSE_CODE_CACHE: 'off' }],
    ['bundle+cache', node, [join(root, 'bin/launch.cjs'), 'ls', image, '/'], noCa],
    ['bin/sifuse', join(root, 'bin/sifuse'), ['ls', image, '/'], withCa],
    ['node -e 0', node, ['-e', '0'], noCa],
  ];
  const times = Object.fromEntries(variants.map(([n]) => [n, []]));
  for (let r = 0; r < reps + 1; r++) {
    for (const [name, cmd, args, env] of variants) {
      const t0 = process.hrtime.bigint();
      const p = spawnSync(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
      const t = Number(process.hrtime.bigint() - t0) / 1e9;
      if (p.status !== 0) throw new Error(`${name}: exit ${p.status}: ${p.stderr}`);
      if (r > 0) times[name].push(t); // the first round warms the page cache
    }
  }
  const base = median(times['esm+maps+CA']);
  let table = `start to exit of \`sifuse ls IMAGE /\`, median of ${reps}, interleaved\n\n| variant | median s | vs old |\n|---|---|---|\n`;
  for (const [name] of variants) {
    const m = median(times[name]);
    table += `| ${name} | ${m.toFixed(3)} | ${(m / base).toFixed(2)}x |\n`;
  }
  const results = { image, reps, times };
  mkdirSync(join(root, 'bench/out'), { recursive: true });
  writeFileSync(join(root, 'bench/out/startup.json'), JSON.stringify(results, null, 2));
  return { table, results };
}
