#!/usr/bin/env node
/**
 * The client of bench/fuse-floor.mjs: stat(2)s N distinct names that do not
 * exist in DIR (one LOOKUP each on a FUSE mount that caches no negative
 * entry) and prints the microseconds per call. Names are unique per run
 * (TAG), so no earlier run's dentries help.
 *
 *   node bench/lib/lookup-loop.mjs DIR N TAG
 */
import { statSync } from 'node:fs';

const [dir, n, tag] = [process.argv[2], Number(process.argv[3]), process.argv[4]];
const paths = Array.from({ length: n }, (_, i) => `${dir}/${tag}-${i}`);
// The first calls compile the loop; they are not counted.
for (let i = 0; i < 200; i++) statSync(`${dir}/${tag}-warm-${i}`, { throwIfNoEntry: false });
const t0 = process.hrtime.bigint();
for (const p of paths) if (statSync(p, { throwIfNoEntry: false }) !== undefined) throw new Error(`${p} exists`);
process.stdout.write(`${Number(process.hrtime.bigint() - t0) / 1000 / n}\n`);
