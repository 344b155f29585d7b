/**
 * The adapter's plain-node set (adapter.ts isPlain/markPlain: no set-id bit,
 * no security.capability), against a scripted writable engine. GETXATTR
 * security.capability of a plain node is answered ENODATA without the
 * engine, so the set must never hold a node that has a capability: a
 * check of the capability still in flight when a SETXATTR of it lands (its
 * answer read before the set) must not mark the node plain afterwards.
 */
import { describe, expect, it } from 'vitest';
import type { InodeId, Stat, WritableFs } from '../../src/engine.js';
import { S_IFDIR, S_IFREG } from '../../src/engine.js';
import { FuseAdapter } from '../../src/fuse/adapter.js';
import { plainStat as stat } from '../tools/stat.js';
import type { FuseRequest } from '../../src/native/fuse.js';

const CAP = Buffer.from('security.capability');
const CAP_VALUE = Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

/** A FuseRequest that records its one reply. */
function request(): { r: FuseRequest; reply: { kind: string; value?: unknown }[] } {
  const reply: { kind: string; value?: unknown }[] = [];
  const r = {
    uid: 0,
    gid: 0,
    pid: 1,
    entryWith: (nodeid: number) => reply.push({ kind: 'entry', value: nodeid }),
    entry: () => reply.push({ kind: 'negative' }),
    write: (n: number) => reply.push({ kind: 'write', value: n }),
    ok: () => reply.push({ kind: 'ok' }),
    err: (e: number) => reply.push({ kind: 'err', value: e }),
    xattrSize: (n: number) => reply.push({ kind: 'xattrSize', value: n }),
    buf: (b: Buffer) => reply.push({ kind: 'buf', value: Buffer.from(b) }),
  } as unknown as FuseRequest;
  return { r, reply };
}

const FILE = 2;

/** A one-file engine; `gates` holds the next getxattr's answer or the next setxattr's change until released. */
function engine(): {
  fs: WritableFs;
  gates: { getxattr: Promise<void> | null; setxattr: Promise<void> | null };
  reached: { getxattr: () => void; setxattr: () => void };
} {
  const xattrs = new Map<string, Buffer>();
  const gates: { getxattr: Promise<void> | null; setxattr: Promise<void> | null } = { getxattr: null, setxattr: null };
  const reached = { getxattr: () => undefined, setxattr: () => undefined } as { getxattr: () => void; setxattr: () => void };
  const fs = {
    rootId: 1,
    writable: true,
    name: 'scripted',
    async getattr(id: InodeId): Promise<Stat> {
      return stat(id, id === 1 ? S_IFDIR | 0o755 : S_IFREG | 0o644);
    },
    async lookup(dir: InodeId, name: Buffer): Promise<InodeId | null> {
      return dir === 1 && name.toString() === 'f' ? FILE : null;
    },
    async ref(): Promise<void> {},
    async unref(): Promise<void> {},
    async getxattr(id: InodeId, name: Buffer): Promise<Buffer | null> {
      // The state is read at once; the answer waits for the gate.
      const v = xattrs.get(`${id}:${name.toString('latin1')}`) ?? null;
      const g = gates.getxattr;
      if (g) {
        gates.getxattr = null;
        reached.getxattr();
        await g;
      }
      return v;
    },
    async setxattr(id: InodeId, name: Buffer, value: Buffer): Promise<void> {
      const g = gates.setxattr;
      if (g) {
        gates.setxattr = null;
        reached.setxattr();
        await g;
      }
      xattrs.set(`${id}:${name.toString('latin1')}`, Buffer.from(value));
    },
    async write(_id: InodeId, _pos: number, data: Buffer): Promise<number> {
      return data.length;
    },
  } as unknown as WritableFs;
  return { fs, gates, reached };
}

async function fileNode(adapter: FuseAdapter): Promise<number> {
  const look = request();
  await adapter.lookup(look.r, 1, Buffer.from('f'));
  expect(look.reply[0]!.kind).toBe('entry');
  return look.reply[0]!.value as number;
}

async function expectCapability(adapter: FuseAdapter, nodeid: number): Promise<void> {
  const get = request();
  await adapter.getxattr(get.r, nodeid, CAP, 0);
  expect(get.reply, 'GETXATTR security.capability after it was set').toEqual([{ kind: 'xattrSize', value: CAP_VALUE.length }]);
}

describe('plain nodes (no set-id bit, no file capability)', () => {
  it('a capability check in flight across a SETXATTR of the capability does not mark the node plain', async () => {
    const { fs, gates, reached } = engine();
    const adapter = new FuseAdapter(fs, { log: () => undefined });
    const nodeid = await fileNode(adapter);
    let release!: () => void;
    gates.getxattr = new Promise<void>((r) => (release = r));
    const read = new Promise<void>((r) => (reached.getxattr = r));
    const w = request();
    const writing = adapter.write(w.r, nodeid, Buffer.from('x'), 0, 0, 0);
    await read; // the write's capability check has read "none"
    const set = request();
    await adapter.setxattr(set.r, nodeid, CAP, CAP_VALUE, 0);
    expect(set.reply).toEqual([{ kind: 'ok' }]);
    release();
    await writing;
    expect(w.reply).toEqual([{ kind: 'write', value: 1 }]);
    await expectCapability(adapter, nodeid);
  });

  it('a capability check made while a SETXATTR of the capability is under way does not leave the node plain', async () => {
    const { fs, gates, reached } = engine();
    const adapter = new FuseAdapter(fs, { log: () => undefined });
    const nodeid = await fileNode(adapter);
    let release!: () => void;
    gates.setxattr = new Promise<void>((r) => (release = r));
    const started = new Promise<void>((r) => (reached.setxattr = r));
    const set = request();
    const setting = adapter.setxattr(set.r, nodeid, CAP, CAP_VALUE, 0);
    await started; // the engine has not stored it yet
    const w = request();
    await adapter.write(w.r, nodeid, Buffer.from('x'), 0, 0, 0);
    expect(w.reply).toEqual([{ kind: 'write', value: 1 }]);
    release();
    await setting;
    expect(set.reply).toEqual([{ kind: 'ok' }]);
    await expectCapability(adapter, nodeid);
  });
});
