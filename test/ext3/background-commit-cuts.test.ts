/**
 * Power cuts while a background journal commit (transaction.ts
 * closeRunning) and the next transaction's operations overlap, at the
 * points test/ext3/background-commit.test.ts does not cut: with the commit
 * block written but not yet synced, and in the middle of the checkpoint
 * (home writes after the commit block is durable). Meanwhile the next
 * transaction creates a file, writes past the pending-data cap (a
 * background data flush) and frees the blocks of another file. Every cut
 * (nothing, everything, and random subsets of the unsynced writes) must
 * recover, e2fsck-clean, to the state before the commit or the state it
 * commits, each file whole; never anything of the later transaction.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openExt3 } from '../../src/ext3/index.js';
import { S_IFREG } from '../../src/engine.js';
import { b, mkfs } from './core-helpers.js';
import { recoveredFiles } from './crash-helpers.js';
import { GateStore, prng, tempDir } from './journal-helpers.js';

let dir: string;
let base: Buffer;

beforeAll(() => {
  dir = tempDir('sifuse-bg-cuts-');
  const img = path.join(dir, 'base.img');
  mkfs(img, { sizeK: 16384, extra: ['-J', 'size=1'] });
  base = fs.readFileSync(img);
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const FILE = { mode: S_IFREG | 0o644, uid: 0, gid: 0 };

type State = Map<string, Buffer>;

/**
 * `got` is `want`, but for "keep"'s first block: ordered mode writes an
 * overwrite of an allocated block in place, unjournaled, so the later
 * transaction's "changed" may be there whatever state the metadata is in.
 */
function sameState(got: State, want: State): boolean {
  if (got.size !== want.size) return false;
  for (const [k, v] of want) {
    let g = got.get(k);
    if (g && k === 'keep' && g.subarray(0, 7).equals(b('changed'))) {
      g = Buffer.from(g);
      v.copy(g, 0, 0, 7);
    }
    if (!g?.equals(v)) return false;
  }
  return true;
}

const describeState = (s: State): string =>
  [...s]
    .sort(([x], [y]) => (x < y ? -1 : 1))
    .map(([k, v]) => `${k}(${v.length})`)
    .join(' ');

describe('power cuts inside an overlapping background commit', () => {
  for (const where of ['commit block unsynced', 'mid checkpoint'] as const) {
    it(`${where}: every cut recovers to the state before the commit or after it`, async () => {
      const store = new GateStore(base, `<cuts-${where}>`);
      const e = await openExt3(store, { writable: true, commitIntervalMs: 5 });
      const old = Buffer.alloc(200 * 1024, 'O');
      const keep0 = Buffer.alloc(3000, 'k');
      const victim = Buffer.alloc(300 * 1024, 'V');
      const f = await e.mknod(e.rootId, b('old'), FILE);
      await e.write(f, 0, old);
      const k = await e.mknod(e.rootId, b('keep'), FILE);
      await e.write(k, 0, keep0);
      const v = await e.mknod(e.rootId, b('victim'), FILE);
      await e.write(v, 0, victim);
      await e.sync();
      const before: State = new Map([
        ['keep', keep0],
        ['old', old],
        ['victim', victim],
      ]);

      // The transaction the held commit carries: "old" unlinked, "keep" grown.
      if (where === 'commit block unsynced') store.holdSync(2);
      else store.holdWrites(2, true);
      await e.unlink(e.rootId, b('old'));
      const more = Buffer.alloc(70 * 1024, 'K');
      await e.write(k, keep0.length, more);
      const keep1 = Buffer.concat([keep0, more]);
      const after: State = new Map([
        ['keep', keep1],
        ['victim', victim],
      ]);
      await store.held;

      // The next transaction, while that commit is held: a new file past the pending-data
      // cap (its data reaches the disk now) and "victim"'s blocks freed.
      const fresh = Buffer.alloc(9 * 1024 * 1024, 'N');
      const g = await e.mknod(e.rootId, b('new'), FILE);
      for (let p = 0; p < fresh.length; p += 65536) await e.write(g, p, fresh.subarray(p, p + 65536));
      await e.unlink(e.rootId, b('victim'));
      await e.write(k, 0, b('changed'));
      expect((await e.read(g, 0, fresh.length)).equals(fresh)).toBe(true);

      const rand = prng(where.length);
      const cuts: [string, Buffer][] = [
        ['none', store.crashImage('none')],
        ['all', store.crashImage('all')],
      ];
      for (let i = 0; i < 4; i++) cuts.push([`subset ${i}`, store.crashImage(() => rand() < 0.5)]);
      const seen = new Set<string>();
      for (const [what, img] of cuts) {
        const r = await recoveredFiles(dir, img);
        expect(r.fsck, `${where}, cut ${what}: e2fsck -fn after recovery:\n${r.out}`).toBe(0);
        const ok = sameState(r.files, before) || sameState(r.files, after);
        expect(ok, `${where}, cut ${what}: recovered ${describeState(r.files)}`).toBe(true);
        seen.add(sameState(r.files, before) ? 'before' : 'after');
      }
      // Mid checkpoint the commit block is durable: only the committed state can come back.
      if (where === 'mid checkpoint') expect([...seen]).toEqual(['after']);
      else expect(seen.has('before')).toBe(true);

      store.release();
      await e.sync();
      const r = await recoveredFiles(dir, store.crashImage('none'));
      expect(r.fsck, r.out).toBe(0);
      const changed = Buffer.from(keep1);
      changed.write('changed', 0, 'latin1');
      expect(describeState(r.files)).toBe(
        describeState(
          new Map([
            ['keep', changed],
            ['new', fresh],
          ]),
        ),
      );
      expect(r.files.get('new')!.equals(fresh)).toBe(true);
      expect(r.files.get('keep')!.equals(changed)).toBe(true);
      await e.close();
    }, 60_000);
  }
});
