/**
 * SquashfsFs.statNow (the FUSE fast path for lookup, getattr and
 * readdirplus) on a hostile image: an inode whose uid index lies past the
 * id table. getattr reports it (CorruptError); statNow must answer
 * undefined, never throw (engine.ts: "undefined otherwise, including
 * wherever getattr would fail"), also once the inode is cached, so that a
 * READDIRPLUS treats the entry the same way every time it lists the
 * directory instead of failing from the second listing on.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CorruptError } from '../../src/errors.js';
import { FuseAdapter } from '../../src/fuse/adapter.js';
import type { FuseRequest } from '../../src/native/fuse.js';
import { mksquashfs, openBytes, removeDir, tempDir } from './unit-fixtures.js';

const NAME = 'hostile-statnow.sqfs';
let work: string;
let bad: Buffer;
let badId: number;

beforeAll(async () => {
  work = tempDir('statnow');
  const src = join(work, 'src');
  mkdirSync(join(src, 'a'), { recursive: true });
  for (const n of ['b', 'c', 'd']) writeFileSync(join(src, n), `${n}\n`);
  // Uncompressed tables: the inode is patched in place.
  const plain = readFileSync(mksquashfs(src, join(work, 'plain.sqfs'), ['-noI', '-noD', '-noF', '-noX']));
  const fs = await openBytes(plain, NAME);
  badId = (await fs.lookup(fs.rootId, Buffer.from('c')))!;
  await fs.close();
  const at = Number(plain.readBigUInt64LE(0x40)) + Math.floor(badId / 65536) + 2 + (badId % 65536);
  bad = Buffer.from(plain);
  bad.writeUInt16LE(0xfff0, at + 0x04); // uid_idx, far past the id table
});
afterAll(() => removeDir(work));

describe('statNow on an inode getattr refuses', () => {
  it('answers undefined before and after the inode is cached, as getattr keeps failing', async () => {
    const fs = await openBytes(bad, NAME);
    await expect(fs.getattr(badId)).rejects.toBeInstanceOf(CorruptError);
    expect(fs.statNow(badId)).toBeUndefined();
    // Cached now (the decode succeeded, the Stat did not): still no throw.
    await fs.inode(badId);
    expect(() => fs.statNow(badId)).not.toThrow();
    expect(fs.statNow(badId)).toBeUndefined();
    await expect(fs.getattr(badId)).rejects.toBeInstanceOf(CorruptError);
    await fs.close();
  });

  it('a READDIRPLUS of the directory answers the same every time', async () => {
    const fs = await openBytes(bad, NAME);
    const NO_OPEN = 1;
    const adapter = new FuseAdapter(fs, { log: () => undefined, noOpenCaps: NO_OPEN });
    adapter.init(7, 38, 0, NO_OPEN, 0);
    const listings: string[][] = [];
    for (let k = 0; k < 3; k++) {
      const replies: string[][] = [];
      const r = {
        dirplus: (_size: number, _offset: number, names: Buffer[]) => {
          replies.push(names.map((n) => n.toString()));
          return names.length;
        },
        err: (e: number) => replies.push([`errno ${e}`]),
      } as unknown as FuseRequest;
      await adapter.readdirplus(r, 1, 65536, 0, 0);
      expect(replies.length, 'one reply').toBe(1);
      listings.push(replies[0]!);
    }
    await adapter.quiesce();
    expect(listings[0]).toEqual(['.', '..', 'a', 'b']);
    expect(listings[1]).toEqual(listings[0]);
    expect(listings[2]).toEqual(listings[0]);
    await fs.close();
  });
});
