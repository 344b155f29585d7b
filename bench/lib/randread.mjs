#!/usr/bin/env node
/**
 * rand-read without fio: COUNT 4 KiB preads at seeded random 4 KiB-aligned
 * offsets of FILE (one at a time, like fio's default iodepth=1 psync).
 *   node randread.mjs FILE COUNT SEED
 * Runs in its own process, never in the one serving a mount.
 */
import { openSync, readSync, fstatSync, closeSync } from 'node:fs';

const [file, countArg, seedArg] = process.argv.slice(2);
const count = Number(countArg);
let x = Number(seedArg) >>> 0 || 1;
const fd = openSync(file, 'r');
const blocks = Math.floor(fstatSync(fd).size / 4096);
const buf = Buffer.allocUnsafe(4096);
for (let i = 0; i < count; i++) {
  // xorshift32: the same offsets for every peer
  x ^= x << 13;
  x >>>= 0;
  x ^= x >>> 17;
  x ^= x << 5;
  x >>>= 0;
  const n = readSync(fd, buf, 0, 4096, (x % blocks) * 4096);
  if (n !== 4096) throw new Error(`short read at block ${x % blocks}: ${n}`);
}
closeSync(fd);
