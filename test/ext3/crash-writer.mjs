// The crash test's writer process: plain node on the built engine (dist/),
// running the seeded workload on an image file until the parent kills it
// with SIGKILL. Every log line is appended synchronously to the log file, so
// it is in the page cache (and survives the kill) before the next step.
//   node crash-writer.mjs IMAGE LOGFILE SEED COMMIT_INTERVAL_MS
import { appendFileSync } from 'node:fs';
import { runWorkload } from './crash-workload.mjs';

const [image, logFile, seed, interval] = process.argv.slice(2);
const dist = new URL('../../dist/', import.meta.url);
const { openExt3 } = await import(new URL('ext3/index.js', dist).href);
const { FileRegion } = await import(new URL('io/file-region.js', dist).href);

const store = await FileRegion.open(image, { writable: true });
const fs = await openExt3(store, { writable: true, commitIntervalMs: Number(interval) });
await runWorkload(fs, { seed: Number(seed), ops: Infinity, log: (line) => appendFileSync(logFile, `${line}\n`) });
