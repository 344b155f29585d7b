/**
 * Ext3Fs names the image on its own errors (NAMES_OWN_ERRORS: no
 * nameEngineErrors wrapper per call), on every path: a read method, a
 * namespace lookup and a queued change all report a CorruptError with the
 * image's name; and statNow (the FUSE fast path) answers as getattr does
 * wherever the inode is in memory, undefined wherever getattr would fail.
 */
import { describe, expect, it } from 'vitest';
import { CorruptError, NAMES_OWN_ERRORS } from '../../src/errors.js';
import { openExt3 } from '../../src/ext3/index.js';
import { Ext3Fs } from '../../src/ext3/fs.js';
import { mkfsExt3 } from '../../src/ext3/mkfs.js';
import { MemoryRegion } from '../../src/io/memory-region.js';

const NAME = 'own-errors.img';
const ENTRY = Buffer.from('an-entry-name-found-nowhere-else');

async function freshImage(): Promise<MemoryRegion> {
  const store = new MemoryRegion(Buffer.alloc(16 << 20), { name: NAME });
  await mkfsExt3(store, { now: 1_700_000_000 });
  return store;
}

/** Every copy of `needle`'s directory record in the image gets rec_len 0 (decodeDirent refuses it). */
function breakRecords(store: MemoryRegion, needle: Buffer): number {
  let hits = 0;
  for (let at = store.bytes.indexOf(needle); at >= 0; at = store.bytes.indexOf(needle, at + 1)) {
    store.bytes.writeUInt16LE(0, at - 8 + 4);
    hits++;
  }
  return hits;
}

describe('Ext3Fs names its own errors', () => {
  it('is left unwrapped by nameEngineErrors and names the image on read, lookup and queued-change errors', async () => {
    const store = await freshImage();
    let fs = await openExt3(store, { writable: true });
    expect((fs as unknown as Record<symbol, unknown>)[NAMES_OWN_ERRORS]).toBe(NAME);
    // No per-instance wrapper: the methods are the class's own.
    expect(fs.getattr).toBe(Ext3Fs.prototype.getattr);
    expect(fs.write).toBe(Ext3Fs.prototype.write);
    const dir = await fs.mkdir(fs.rootId, Buffer.from('d'), { mode: 0o40755, uid: 0, gid: 0 });
    await fs.mknod(dir, ENTRY, { mode: 0o100644, uid: 0, gid: 0 });
    await fs.close();
    expect(breakRecords(store, ENTRY)).toBeGreaterThan(0);

    fs = await openExt3(store, { writable: true });
    const d = (await fs.lookup(fs.rootId, Buffer.from('d')))!;
    const named = { name: 'CorruptError', file: NAME };
    await expect(fs.readdir(d)).rejects.toBeInstanceOf(CorruptError);
    await expect(fs.readdir(d)).rejects.toMatchObject(named);
    await expect(fs.lookup(d, Buffer.from('other'))).rejects.toMatchObject(named);
    // A change on the writer queue (Transaction.run) reads the broken block too.
    await expect(fs.mknod(d, Buffer.from('new'), { mode: 0o100644, uid: 0, gid: 0 })).rejects.toMatchObject(named);
    await fs.close().catch(() => undefined);
  });
});

describe('Ext3Fs.statNow', () => {
  it('equals getattr for inodes in memory; undefined for ids getattr refuses', async () => {
    const store = await freshImage();
    const fs = await openExt3(store, { writable: true });
    const f = await fs.mknod(fs.rootId, Buffer.from('f'), { mode: 0o100640, uid: 7, gid: 8 });
    await fs.write(f, 0, Buffer.alloc(5000, 1));
    await fs.setattr(f, { mtime: { sec: 1234, nsec: 5 } });
    const l = await fs.symlink(fs.rootId, Buffer.from('l'), Buffer.from('f'), { uid: 0, gid: 0 });
    for (const id of [fs.rootId, f, l]) expect(fs.statNow(id)).toEqual(await fs.getattr(id));
    expect(fs.statNow(f)).toMatchObject({ size: 5000, uid: 7, gid: 8, mtime: 1234, mtimeNsec: 5, mode: 0o100640 });
    for (const bad of [0, -1, 1.5, 1e12]) expect(fs.statNow(bad)).toBeUndefined();
    // Freed: getattr says ENOENT, statNow has nothing.
    await fs.unlink(fs.rootId, Buffer.from('f'));
    await expect(fs.getattr(f)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(fs.statNow(f)).toBeUndefined();
    await fs.close();
  });
});
