/**
 * The read-ahead a stateless read-only mount starts with (adapter.ts warm)
 * against a scripted engine: it lists the tree depth first from the root,
 * at most `warmDirs` directories, keeps the listings for READDIRPLUS, and
 * stops at quiesce(). Mounts that keep open handles never warm.
 */
import { describe, expect, it } from 'vitest';
import type { DirEntry, InodeId, ReadableFs, Stat } from '../../src/engine.js';
import { S_IFDIR, S_IFREG } from '../../src/engine.js';
import { FuseAdapter } from '../../src/fuse/adapter.js';
import { plainStat as stat } from '../tools/stat.js';
import type { FuseRequest } from '../../src/native/fuse.js';

const NO_OPEN = 1;
const d = (name: string, id: InodeId): DirEntry => ({ name: Buffer.from(name), id, type: 'd' });
const f = (name: string, id: InodeId): DirEntry => ({ name: Buffer.from(name), id, type: 'f' });

/** root 1: a 2 (a1 3 (a11 4), a2 5), file 6, b 7 (b1 8) */
const TREE = new Map<InodeId, DirEntry[]>([
  [1, [d('a', 2), f('file', 6), d('b', 7)]],
  [2, [d('a1', 3), d('a2', 5)]],
  [3, [d('a11', 4)]],
  [4, []],
  [5, []],
  [7, [d('b1', 8)]],
  [8, []],
]);

function engine(writable = false): { fs: ReadableFs; listed: InodeId[] } {
  const listed: InodeId[] = [];
  const fs = {
    rootId: 1,
    writable,
    async getattr(id: InodeId): Promise<Stat> {
      return stat(id, TREE.has(id) ? S_IFDIR | 0o755 : S_IFREG | 0o644);
    },
    async readdir(id: InodeId): Promise<DirEntry[]> {
      listed.push(id);
      return TREE.get(id) ?? [];
    },
    async ref(): Promise<void> {},
    async unref(): Promise<void> {},
    async lookup(): Promise<InodeId | null> {
      return null;
    },
  } as unknown as ReadableFs;
  return { fs, listed };
}

async function turns(n: number): Promise<void> {
  for (let k = 0; k < n; k++) await new Promise((resolve) => setImmediate(resolve));
}

describe('read-ahead at mount', () => {
  it('lists warmDirs directories depth first from the root and keeps them for READDIRPLUS', async () => {
    const { fs, listed } = engine();
    const adapter = new FuseAdapter(fs, { log: () => undefined, noOpenCaps: NO_OPEN, warmDirs: 4 });
    adapter.init(7, 38, 0, NO_OPEN, 0);
    await adapter.warm();
    expect(listed).toEqual([1, 2, 3, 4]);
    let names: string[] = [];
    const r = {
      dirplus: (_size: number, _offset: number, packed: Buffer[]) => {
        names = packed.map((n) => n.toString());
        return packed.length;
      },
      buf: () => undefined,
    } as unknown as FuseRequest;
    await adapter.readdirplus(r, 1, 65536, 0, 0);
    expect(names).toEqual(['.', '..', 'a', 'file', 'b']);
    expect(listed.slice(0, 4), 'the root listing came from the warm read-ahead').toEqual([1, 2, 3, 4]);
    expect(listed.filter((id) => id === 1)).toHaveLength(1);
    await adapter.quiesce();
  });

  it('stops when quiesce() is called', async () => {
    const { fs, listed } = engine();
    const adapter = new FuseAdapter(fs, { log: () => undefined, noOpenCaps: NO_OPEN, warmDirs: 100 });
    adapter.init(7, 38, 0, NO_OPEN, 0);
    const warming = adapter.warm();
    await adapter.quiesce();
    await warming;
    await turns(50);
    expect(listed.length).toBeLessThanOrEqual(1);
  });

  it('does nothing on a mount with open handles or a writable one', async () => {
    for (const [writable, caps] of [
      [false, 0],
      [true, NO_OPEN],
    ] as const) {
      const { fs, listed } = engine(writable);
      const adapter = new FuseAdapter(fs, { log: () => undefined, noOpenCaps: NO_OPEN, warmDirs: 100 });
      adapter.init(7, 38, 0, caps, 0);
      expect(adapter.warm()).toBeNull();
      await turns(50);
      expect(listed, `writable ${writable}, capable ${caps}`).toEqual([]);
    }
  });

  it('lists the whole tree when it is smaller than warmDirs, each directory once', async () => {
    const { fs, listed } = engine();
    const adapter = new FuseAdapter(fs, { log: () => undefined, noOpenCaps: NO_OPEN, warmDirs: 100 });
    adapter.init(7, 38, 0, NO_OPEN, 0);
    await adapter.warm();
    expect(listed).toEqual([1, 2, 3, 4, 5, 7, 8]);
  });
});
