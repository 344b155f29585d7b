/**
 * The layer openers: an ext3 image (a file or a region of one, as a SIF
 * partition is) gives `upper/` as the layer and `work/` beside it, both made
 * on a writable image that lacks them and required (upper/) on a read-only
 * one; a SquashFS image (or region) is a read-only layer whole.
 */
import { closeSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkfsExt3 } from '../../src/ext3/mkfs.js';
import { UsageError } from '../../src/errors.js';
import { FileRegion } from '../../src/io/file-region.js';
import { openExt3Layer } from '../../src/layers/ext3-layer.js';
import { isUpperLayer } from '../../src/layers/layer.js';
import { openMemUpperLayer as openMemUpper } from '../../src/layers/mem.js';
import { Overlay } from '../../src/layers/overlay/index.js';
import { openSquashfsLayer } from '../../src/layers/squashfs-layer.js';
import { b, names, readAll, tempDir, makeSquashfs } from './overlay-helpers.js';

let dir = '';
beforeAll(() => {
  dir = tempDir('openers');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function bareExt3(path: string, pad = 0): Promise<void> {
  writeFileSync(path, Buffer.alloc(pad + (16 << 20)));
  const store = await FileRegion.open(path, { writable: true, offset: pad, length: 16 << 20 });
  await mkfsExt3(store);
  await store.close();
}

describe('openExt3Layer', () => {
  it('makes upper/ and work/ on a writable image without them, in a region of a larger file', async () => {
    const path = join(dir, 'part.img');
    await bareExt3(path, 8192);
    const before = readFileSync(path).subarray(0, 8192);
    const l = await openExt3Layer(path, { offset: 8192, length: 16 << 20 });
    expect(isUpperLayer(l)).toBe(true);
    if (!isUpperLayer(l)) return;
    expect(l.encoding).toBe('kernel');
    expect((await l.fs.readdir(l.fs.rootId)).map((e) => e.name.toString()).sort()).toEqual(['lost+found', 'upper', 'work']);
    const ov = await Overlay.open({ lowers: [], upper: l });
    await ov.mknod(ov.rootId, b('x'), { mode: 0o100644, uid: 0, gid: 0 });
    await ov.close();
    expect(readFileSync(path).subarray(0, 8192).equals(before)).toBe(true);
    const ro = await openExt3Layer(path, { readOnly: true, offset: 8192, length: 16 << 20 });
    expect(isUpperLayer(ro)).toBe(false);
    expect(ro.name.endsWith(':ro')).toBe(true);
    expect((await ro.fs.readdir(ro.root)).map((e) => e.name.toString())).toEqual(['x']);
    await ro.fs.close();
  });

  it('refuses a read-only image without upper/, naming the image', async () => {
    const path = join(dir, 'bare.img');
    await bareExt3(path);
    await expect(openExt3Layer(path, { readOnly: true })).rejects.toThrow(UsageError);
    await expect(openExt3Layer(path, { readOnly: true })).rejects.toThrow(/no upper\/ directory/);
  });
});

describe('openSquashfsLayer and openMemUpper', () => {
  it('a SquashFS region of a larger file is a read-only layer; a memory upper takes the writes', async () => {
    const sq = makeSquashfs(dir, 'region', { 'etc/os-release': 'ID=test\n' });
    const path = join(dir, 'wrapped.bin');
    const fd = openSync(path, 'w');
    writeSync(fd, Buffer.alloc(4096, 0xaa));
    const bytes = readFileSync(sq);
    writeSync(fd, bytes, 0, bytes.length, 4096);
    writeSync(fd, Buffer.alloc(4096, 0xbb), 0, 4096, 4096 + bytes.length);
    closeSync(fd);
    const lower = await openSquashfsLayer(path, { offset: 4096, length: bytes.length });
    const upper = await openMemUpper({ capBytes: 1 << 20 });
    const ov = await Overlay.open({ lowers: [lower], upper });
    expect((await readAll(ov, '/etc/os-release')).toString()).toBe('ID=test\n');
    const etc = (await ov.lookup(ov.rootId, b('etc')))!;
    await ov.write((await ov.lookup(etc, b('os-release')))!, 0, b('ID=mine'));
    expect((await readAll(ov, '/etc/os-release')).toString()).toBe('ID=mine\n');
    expect(await names(ov, '/etc')).toEqual(['os-release']);
    expect((await ov.statfs()).blocks).toBeGreaterThan(0);
    await ov.close();
  });
});
