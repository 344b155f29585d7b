/**
 * kill -9 of the engine's process right after an fsync returned, in process:
 * everything the engine has written so far (pwritten, in the host's page
 * cache) survives such a kill, so the image's current bytes at the moment
 * each sync() resolves must recover (journal replay) with that file whole.
 * One async sequence creates, writes and fsyncs files (fsync_writer.py's
 * pattern) while another makes heavy metadata changes: mkdirs, small
 * creates, a file past the 8 MiB pending-data cap, unlinks and truncates.
 * Writes and syncs of the store take random short delays (seeded) so the
 * background commit and the background data flush interleave differently.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openExt3 } from '../../src/ext3/index.js';
import { S_IFDIR, S_IFREG } from '../../src/engine.js';
import { MemoryRegion } from '../../src/io/memory-region.js';
import { b, mkfs } from './core-helpers.js';
import { CrashStore, prng, tempDir } from './journal-helpers.js';

let dir: string;
let base: Buffer;

beforeAll(() => {
  dir = tempDir('sifuse-fsync-kill-');
  const img = path.join(dir, 'base.img');
  mkfs(img, { sizeK: 49152, blockSize: 4096, extra: ['-J', 'size=4'] });
  base = fs.readFileSync(img);
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const FILE = { mode: S_IFREG | 0o644, uid: 0, gid: 0 };
/** The most files the fsync writer makes in one trial (see writer). */
const WRITER_FILES = 110;
const DIR = { mode: S_IFDIR | 0o755, uid: 0, gid: 0 };

/** fsync_writer.py's content for file n. */
function content(n: number): Buffer {
  return Buffer.from(
    String(n)
      .padStart(8, '0')
      .repeat(128 * (1 + ((n * 37) % 200))),
  );
}

/** A store whose writes and syncs each take a random short time. */
class SlowStore extends CrashStore {
  constructor(
    bytes: Buffer,
    private readonly rnd: () => number,
  ) {
    super(bytes, '<slow-store>');
  }

  private async delay(): Promise<void> {
    const r = this.rnd();
    if (r < 0.5) return;
    if (r < 0.8) await new Promise((res) => setImmediate(res));
    else await new Promise((res) => setTimeout(res, Math.floor(r * 3)));
  }

  /** Called before each write lands (a kill -9 may come just before any write). */
  beforeWrite: (() => void) | null = null;

  override async write(position: number, data: Uint8Array): Promise<void> {
    await this.delay();
    this.beforeWrite?.();
    await super.write(position, data);
  }

  override async sync(): Promise<void> {
    await this.delay();
    await super.sync();
  }
}

async function randomPause(rnd: () => number): Promise<void> {
  const r = rnd();
  if (r < 0.6) return;
  if (r < 0.9) await new Promise((res) => setImmediate(res));
  else await new Promise((res) => setTimeout(res, 1));
}

/** Which of files 0..last fail to recover whole from `img`. */
async function badFiles(img: Buffer, last: number): Promise<string[]> {
  const bytes = Buffer.from(img);
  const e = await openExt3(new MemoryRegion(bytes), { writable: true });
  const bad: string[] = [];
  try {
    const w = await e.lookup(e.rootId, b('w'));
    if (w === null) return ['w/ missing'];
    for (let n = 0; n <= last; n++) {
      const id = await e.lookup(w, b(`w${n}`));
      if (id === null) {
        bad.push(`w${n} missing`);
        continue;
      }
      const want = content(n);
      const { size } = await e.getattr(id);
      const got = await e.read(id, 0, size);
      if (!got.equals(want)) bad.push(`w${n} wrong (${size} bytes, want ${want.length})`);
    }
  } finally {
    await e.close();
  }
  return bad;
}

async function trial(seed: number): Promise<{ checked: number; bad: string[] }> {
  const rnd = prng(seed);
  const store = new SlowStore(base, prng(seed ^ 0x5bd1e995));
  const e = await openExt3(store, { writable: true, commitIntervalMs: seed % 2 === 0 ? 5000 : 1 + (seed % 5) });
  const w = await e.mkdir(e.rootId, b('w'), DIR);
  const top = await e.mkdir(e.rootId, b('u'), DIR);
  await e.sync();
  const snapshots: { n: number; img: Buffer }[] = [];
  let stop = false;
  /** The last file whose fsync (and directory sync) has resolved. */
  let done = -1;
  const killRnd = prng(seed * 7919);
  let later = 0;
  store.beforeWrite = () => {
    // A kill at a later write: everything written before it must hold every fsynced file.
    if (done >= 0 && later < 12 && killRnd() < 0.01) {
      later++;
      snapshots.push({ n: done, img: Buffer.from(store.current) });
    }
  };

  const writer = async (): Promise<void> => {
    // Bounded: it runs until the churn ends, and a slow (loaded) machine would otherwise have it
    // fill the 48 MiB image (ENOSPC). An idle run writes 87-106 files for seed 1, 5-6 for seed 2.
    for (let n = 0; !stop && n < WRITER_FILES; n++) {
      const id = await e.mknod(w, b(`w${n}`), FILE);
      const data = content(n);
      // One or a few write requests, as the kernel may split it.
      let p = 0;
      while (p < data.length) {
        const len = Math.min(data.length - p, 4096 * (1 + Math.floor(rnd() * 40)));
        await e.write(id, p, data.subarray(p, p + len));
        p += len;
      }
      await e.fsync(id, false);
      await e.sync();
      // What kill -9 right now would leave: every byte written so far.
      snapshots.push({ n, img: Buffer.from(store.current) });
      done = n;
      await randomPause(rnd);
    }
  };

  const churn = async (k: number): Promise<void> => {
    const big = Buffer.alloc((k === 0 ? 9 : 3) * 1024 * 1024, 0x42);
    const u = await e.mkdir(top, b(`u${k}`), DIR);
    for (let round = 0; round < 3; round++) {
      const d = await e.mkdir(u, b(`d${round}`), DIR);
      const ids: number[] = [];
      for (let i = 0; i < 120; i++) {
        const sub = i % 10 === 0 ? await e.mkdir(d, b(`s${i}`), DIR) : d;
        const f = await e.mknod(sub, b(`f${i}`), FILE);
        ids.push(f);
        await e.write(f, 0, Buffer.alloc(512 + Math.floor(rnd() * 20000), i));
        await randomPause(rnd);
      }
      const g = await e.mknod(d, b('big'), FILE);
      for (let p = 0; p < big.length; p += 131072) {
        await e.write(g, p, big.subarray(p, p + 131072));
        if (rnd() < 0.2) await randomPause(rnd);
      }
      for (let i = 0; i < 120; i += 2) {
        const sub = i % 10 === 0 ? await e.lookup(d, b(`s${i}`)) : d;
        await e.unlink(sub!, b(`f${i}`));
      }
      await e.truncate(g, Math.floor(rnd() * big.length));
      if (round > 0) {
        await e.unlink(u, b(`big${round - 1}`)).catch(() => undefined);
      }
      await e.rename(d, b('big'), u, b(`big${round}`));
    }
  };

  /** Unqueued reads meanwhile, as the kernel's lookups, getattrs and readdirs are. */
  const reader = async (): Promise<void> => {
    while (!stop) {
      for (const d of await e.readdir(w)) {
        if (rnd() < 0.3) await e.getattr(d.id).catch(() => undefined);
      }
      await e.lookup(top, b('u1')).catch(() => undefined);
      await randomPause(rnd);
      await new Promise((res) => setImmediate(res));
    }
  };

  await Promise.all([
    writer(),
    reader(),
    Promise.all([churn(0), churn(1), churn(2)]).then(() => {
      stop = true;
    }),
  ]);
  await e.close();

  // Check a spread of snapshots (all of them would take too long): the last ones and some early.
  let checked = 0;
  const bad: string[] = [];
  const picks = snapshots.filter((_, i) => i % 4 === 0 || i >= snapshots.length - 3);
  for (const s of picks) {
    const r = await badFiles(s.img, s.n);
    checked++;
    if (r.length > 0) bad.push(`seed ${seed}, kill after w${s.n}: ${r.slice(0, 5).join(', ')}`);
  }
  return { checked, bad };
}

describe('kill -9 after fsync (in process)', () => {
  it('every file whose fsync resolved recovers whole from the bytes written by then', async () => {
    const bad: string[] = [];
    let checked = 0;
    for (const seed of [1, 2]) {
      const r = await trial(seed);
      checked += r.checked;
      bad.push(...r.bad);
    }
    console.log(`${checked} kill points checked`);
    expect(checked).toBeGreaterThan(0);
    expect(bad).toEqual([]);
  }, 120_000);
});
