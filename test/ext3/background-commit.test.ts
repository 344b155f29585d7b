/**
 * The journal commit runs in the background (transaction.ts closeRunning):
 * a timer commit is held at its first fdatasync (the store's sync does not
 * return) while operations arrive. They must complete meanwhile, in the next
 * transaction; a power cut at that point must recover the state before the
 * held commit (nothing of it or of the later operations, the blocks it freed
 * untouched by the later writes: a file it deletes still reads back whole);
 * once it is released, sync must make both durable; e2fsck is clean after
 * every recovery. Likewise a write past the engine's pending-data cap hands
 * the data to a background flush and returns while the disk holds it; later
 * writes into those blocks must neither wait nor be lost.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openExt3 } from '../../src/ext3/index.js';
import { S_IFREG } from '../../src/engine.js';
import { b, mkfs } from './core-helpers.js';
import { recoveredFiles } from './crash-helpers.js';
import { GateStore, tempDir } from './journal-helpers.js';

let dir: string;
/** 16 MiB, 1 KiB blocks, ext3 with a 1 MiB journal. */
let base: Buffer;

beforeAll(() => {
  dir = tempDir('sifuse-bg-commit-');
  const img = path.join(dir, 'base.img');
  mkfs(img, { sizeK: 16384, extra: ['-J', 'size=1'] });
  base = fs.readFileSync(img);
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const FILE = { mode: S_IFREG | 0o644, uid: 0, gid: 0 };

describe('background journal commit', () => {
  it('operations arriving while a commit waits on the disk complete, and a power cut then recovers the state before it', async () => {
    const store = new GateStore(base, '<held-store>');
    const e = await openExt3(store, { writable: true, commitIntervalMs: 5 });
    const old = Buffer.alloc(200 * 1024, 'F');
    const f = await e.mknod(e.rootId, b('old'), FILE);
    await e.write(f, 0, old);
    await e.sync();

    // The next commit (the timer's, 5 ms after the unlink) is held at its first fdatasync.
    store.holdSync();
    await e.unlink(e.rootId, b('old'));
    await store.held;

    // These run while that commit is in flight: under a commit on the request path they would
    // wait for release() and the test would time out.
    // More than the engine keeps pending (8 MiB), so new data reaches the disk during the commit.
    const fresh = Buffer.alloc(9 * 1024 * 1024, 'N');
    const g = await e.mknod(e.rootId, b('new'), FILE);
    for (let p = 0; p < fresh.length; p += 65536) await e.write(g, p, fresh.subarray(p, p + 65536));
    await e.setattr(g, { mode: 0o600 });
    expect((await e.read(g, 0, fresh.length)).equals(fresh)).toBe(true);
    // A metadata block of the held commit evicted from the cache would be re-read from its copy.
    expect(await e.lookup(e.rootId, b('old'))).toBeNull();

    // Power cut now, every write issued so far on the disk or none of them: the held commit
    // has no commit block, so the state after the first sync comes back, with "old" whole
    // (the later file's data went to other blocks than the ones the unlink freed).
    for (const keep of ['none', 'all'] as const) {
      const r = await recoveredFiles(dir, store.crashImage(keep));
      expect(r.fsck, `${keep}: e2fsck -fn after recovery:\n${r.out}`).toBe(0);
      expect([...r.files.keys()], keep).toEqual(['old']);
      expect(r.files.get('old')!.equals(old), `${keep}: "old" reads back whole`).toBe(true);
    }

    // A sync issued now waits for the held commit and then commits the later operations.
    let synced = false;
    const s = e.sync().then(() => (synced = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(synced).toBe(false);
    store.release();
    await s;
    const r = await recoveredFiles(dir, store.crashImage('none'));
    expect(r.fsck, r.out).toBe(0);
    expect([...r.files.keys()]).toEqual(['new']);
    expect(r.files.get('new')!.equals(fresh)).toBe(true);
    await e.close();
    // A commit on the request path never lets the operations above finish: a deadlock, cut short.
  }, 30_000);

  it('a commit failing in the background fails the next sync with EIO and leaves a recoverable image', async () => {
    const store = new GateStore(base, '<held-fail-store>');
    const e = await openExt3(store, { writable: true, commitIntervalMs: 5 });
    const f = await e.mknod(e.rootId, b('kept'), FILE);
    await e.write(f, 0, b('kept\n'));
    await e.sync();
    store.holdSync();
    const g = await e.mknod(e.rootId, b('lost'), FILE);
    await store.held;
    await e.write(g, 0, b('lost\n'));
    // The disk goes away under the held commit.
    store.failAfterSyncs = store.syncs;
    const write = process.stderr.write;
    process.stderr.write = () => true;
    try {
      store.release();
      await expect(e.sync()).rejects.toThrow(/EIO|simulated crash/);
      await expect(e.mknod(e.rootId, b('later'), FILE)).rejects.toThrow(/EIO/);
      await expect(e.close()).rejects.toThrow(/EIO|simulated crash/);
    } finally {
      process.stderr.write = write;
    }
    const r = await recoveredFiles(dir, store.crashImage('all'));
    expect(r.fsck, r.out).toBe(0);
    expect([...r.files.keys()]).toEqual(['kept']);
  }, 30_000);

  it('a write past the pending-data cap returns while its data is still being written, and later writes into those blocks are kept', async () => {
    const store = new GateStore(base, '<held-writes-store>');
    const e = await openExt3(store, { writable: true });
    const f = await e.mknod(e.rootId, b('big'), FILE);
    await e.sync();
    // 9 MiB in one call: past 8 MiB pending the blocks go to a background flush, which the
    // disk holds; the call returns all the same (on the request path it would never return).
    const want = Buffer.alloc(9 * 1024 * 1024, 'A');
    store.holdWrites();
    expect(await e.write(f, 0, want)).toBe(want.length);
    // Blocks under that flush changed again: the first block, and one in the middle.
    for (const at of [100, 4 * 1024 * 1024 + 5]) {
      expect(await e.write(f, at, b('BBBB'))).toBe(4);
      want.write('BBBB', at, 'latin1');
    }
    expect((await e.read(f, 0, want.length)).equals(want)).toBe(true);
    store.release();
    await e.sync();
    const r = await recoveredFiles(dir, store.crashImage('none'));
    expect(r.fsck, r.out).toBe(0);
    expect(r.files.get('big')!.equals(want)).toBe(true);
    await e.close();
  }, 30_000);
});
