/**
 * Directory read-ahead of a read-only mount (adapter.ts prefetchChildren)
 * against a scripted engine: quiesce(), which serve() awaits before it closes
 * the engine, must not resolve while an engine call of the read-ahead is
 * still running, even when another call of the same directory failed first.
 */
import { describe, expect, it } from 'vitest';
import type { DirEntry, InodeId, ReadableFs, Stat } from '../../src/engine.js';
import { S_IFDIR, S_IFREG } from '../../src/engine.js';
import { FuseAdapter } from '../../src/fuse/adapter.js';
import { plainStat as stat } from '../tools/stat.js';
import type { FuseRequest } from '../../src/native/fuse.js';
import { FsError } from '../../src/errors.js';

const NO_OPEN = 1;

describe('read-only directory read-ahead', () => {
  it('quiesce waits for every engine call of the read-ahead, also after one of them failed', async () => {
    let release!: () => void;
    const slow = new Promise<void>((resolve) => (release = resolve));
    let running = 0;
    const dirs = new Map<InodeId, DirEntry[]>([
      [1, [{ name: Buffer.from('d'), id: 2, type: 'd' }]],
      [
        2,
        [
          { name: Buffer.from('bad'), id: 10, type: 'f' },
          { name: Buffer.from('slow'), id: 11, type: 'f' },
        ],
      ],
    ]);
    const fs = {
      rootId: 1,
      writable: false,
      async getattr(id: InodeId): Promise<Stat> {
        if (id === 10) throw new FsError('EIO');
        if (id === 11) {
          running++;
          await slow;
          running--;
        }
        return stat(id, dirs.has(id) ? S_IFDIR | 0o755 : S_IFREG | 0o644);
      },
      async readdir(id: InodeId): Promise<DirEntry[]> {
        return dirs.get(id) ?? [];
      },
      async ref(): Promise<void> {},
      async unref(): Promise<void> {},
      async lookup(): Promise<InodeId | null> {
        return null;
      },
    } as unknown as ReadableFs;
    const adapter = new FuseAdapter(fs, { log: () => undefined, noOpenCaps: NO_OPEN });
    adapter.init(7, 38, 0, NO_OPEN, 0);
    let replies = 0;
    const r = {
      dirplus: (_size: number, _offset: number, names: Buffer[]) => {
        replies++;
        return names.length;
      },
      buf: () => replies++,
    } as unknown as FuseRequest;
    await adapter.readdirplus(r, 1, 65536, 0, 0);
    expect(replies).toBe(1);
    // The read-ahead of "d" starts on a later turn of the event loop.
    for (let k = 0; k < 20 && running === 0; k++) await new Promise((resolve) => setImmediate(resolve));
    expect(running, 'the read-ahead asked for the attributes of d/slow').toBe(1);
    let quiet = false;
    const q = adapter.quiesce().then(() => (quiet = true));
    for (let k = 0; k < 20; k++) await new Promise((resolve) => setImmediate(resolve));
    expect(quiet, 'quiesce resolved while getattr(d/slow) was still running').toBe(false);
    release();
    await q;
    expect(running).toBe(0);
  });
});
