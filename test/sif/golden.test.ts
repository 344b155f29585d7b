/**
 * On a SIF made by siftool with every kind of object, `bin/sifuse sif
 * header|list|info` print exactly siftool's bytes and `dump` gives the same
 * object bytes; the library and the JSON forms agree with them.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SifImage } from '../../src/sif/index.js';
import { formatHeader, formatInfo, formatList } from '../../src/sif/report.js';
import { makeRichSif, pool, pseudoRandom, siftoolOk, sifuse, sifuseInProcess, sifuseOk, tempDir } from './helpers.js';

let dir: string;
let sif: string;
let ids: number[];

beforeAll(async () => {
  dir = tempDir('golden');
  sif = await makeRichSif(dir);
  const image = await SifImage.open(sif);
  ids = image.descriptors().map((d) => d.id);
  await image.close();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('sifuse sif on a siftool-made SIF', () => {
  it('has the objects the fixture meant to make (slots reused after delete)', () => {
    expect(ids).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13]);
  });

  it('header and list are byte-identical to siftool', async () => {
    for (const cmd of ['header', 'list']) {
      const [ours, theirs] = await Promise.all([sifuseOk('sif', cmd, sif), siftoolOk(cmd, sif)]);
      expect(ours.toString('latin1')).toBe(theirs.toString('latin1'));
    }
  });

  it('info is byte-identical to siftool (CLI; one object of each kind)', async () => {
    // Partition, 128-byte name, group-linked signature, SBOM, empty object.
    const sample = [4, 7, 10, 11, 12];
    const results = await pool(sample, 3, async (id) => {
      const [ours, theirs] = await Promise.all([sifuseOk('sif', 'info', String(id), sif), siftoolOk('info', String(id), sif)]);
      return { id, ours: ours.toString('latin1'), theirs: theirs.toString('latin1') };
    });
    for (const r of results) expect(r.ours, `info ${r.id}`).toBe(r.theirs);
  });

  it('dump gives the same bytes as siftool', async () => {
    const sample = [4, 12];
    const results = await pool(sample, 3, async (id) => {
      const [ours, theirs] = await Promise.all([sifuseOk('sif', 'dump', String(id), sif), siftoolOk('dump', String(id), sif)]);
      return { id, same: ours.equals(theirs), len: ours.length };
    });
    for (const r of results) expect(r.same, `dump ${r.id} (${r.len} bytes)`).toBe(true);
  });

  it('the library formats every object as siftool does (in-process, all IDs)', async () => {
    const image = await SifImage.open(sif);
    try {
      expect(formatHeader(image.header)).toBe((await siftoolOk('header', sif)).toString('latin1'));
      expect(formatList(image.descriptors())).toBe((await siftoolOk('list', sif)).toString('latin1'));
      for (const d of image.descriptors()) {
        expect(formatInfo(d).text).toBe((await siftoolOk('info', String(d.id), sif)).toString('latin1'));
        expect((await image.readObject(d.id)).equals(await siftoolOk('dump', String(d.id), sif))).toBe(true);
      }
    } finally {
      await image.close();
    }
  });

  it('decodes groups, links and extras', async () => {
    const image = await SifImage.open(sif);
    try {
      const root = image.primaryPartition()!;
      expect(root.id).toBe(4);
      expect(root.offset % 4096).toBe(0);
      expect(root.partition).toMatchObject({ fsType: 1, partType: 2, arch: 'amd64' });
      expect(root.groupId).toBe(1);
      expect(image.primaryArch).toBe('amd64');
      const sig = image.descriptor(10)!;
      expect(sig.linkedId).toBe(1);
      expect(sig.linkedIsGroup).toBe(true);
      expect(sig.groupId).toBeNull();
      expect(sig.signature?.entity?.toString('hex').toUpperCase()).toBe('433FE984155206BD962725E20E8713472A879943');
      const generic = image.descriptor(8)!;
      expect([generic.linkedId, generic.linkedIsGroup]).toEqual([1, false]);
      expect(image.descriptor(7)!.name).toBe('x'.repeat(128));
      expect(image.descriptor(6)!.offset % 512).toBe(0);
      expect(image.descriptor(12)!.size).toBe(0);
      expect(image.descriptor(9)).toBeUndefined();
    } finally {
      await image.close();
    }
  });

  it('--json forms parse and agree with the text', async () => {
    const list = await sifuseOk('sif', 'list', '--json', sif);
    const info = await sifuseInProcess('info', '--json', '4', sif);
    const header = await sifuseInProcess('header', '--json', sif);
    const objects = JSON.parse(list.toString()) as { id: number }[];
    expect(objects.map((o) => o.id)).toEqual(ids);
    expect(JSON.parse(info.toString())).toMatchObject({
      id: 4,
      dataType: 'FS',
      groupId: 1,
      partition: { fsType: 'Squashfs', partType: '*System', arch: 'amd64' },
    });
    expect(JSON.parse(header.toString())).toMatchObject({
      version: '01',
      primaryArch: 'amd64',
      descriptorsTotal: 48,
      descriptorsFree: 36,
    });
  });

  it('info and dump of a missing ID fail with one line', async () => {
    const r = await sifuse('sif', 'info', '9', sif);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/^sifuse: .*rich\.sif: object not found: no object with ID 9\n$/);
    await expect(sifuseInProcess('dump', '9', sif)).rejects.toThrow(/no object with ID 9/);
  });

  it('names with tabs, newlines, form feeds, 0xFF escapes and bad UTF-8 print exactly as siftool prints them', async () => {
    const names = [
      'a\tb',
      'line1\nline2\tx',
      'x\fy\tz',
      '\xffesc\tape\xff and more',
      '\xffunterminated\tescape\nnext',
      'tab at end\t',
      '\v\vvertical',
      'caf\xc3\xa9 \xe2\x82 \xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80 end',
    ].map((n) => Buffer.from(n, 'latin1'));
    const path = join(dir, 'names.sif');
    const image = await SifImage.create(path, {
      objects: names.map((name, i) => ({
        dataType: i % 2 ? 0x4007 : 0x4004,
        data: Buffer.from([i]),
        name,
        groupId: i + 1,
        partition: i % 2 ? undefined : { fsType: 1, partType: 3, arch: 'amd64' },
      })),
    });
    try {
      const theirs = await pool(image.descriptors(), 4, (d) => siftoolOk('info', String(d.id), path));
      image.descriptors().forEach((d, i) => {
        expect(formatInfo(d).text, `name ${JSON.stringify(names[i]!.toString('latin1'))}`).toBe(theirs[i]!.toString('latin1'));
      });
      expect(formatList(image.descriptors())).toBe((await siftoolOk('list', path)).toString('latin1'));
    } finally {
      await image.close();
    }
  });

  it('dump streams a multi-megabyte object with the same bytes as siftool', async () => {
    const path = join(dir, 'big.sif');
    const payload = join(dir, 'big.bin');
    writeFileSync(payload, pseudoRandom(2.5 * 1024 * 1024 + 123, 9));
    await siftoolOk('new', path);
    await siftoolOk('add', path, payload, '--datatype', '4', '--parttype', '3', '--partfs', '4', '--partarch', '2');
    const [ours, theirs] = await Promise.all([sifuseOk('sif', 'dump', '1', path), siftoolOk('dump', '1', path)]);
    expect(ours.length).toBe(2.5 * 1024 * 1024 + 123);
    expect(ours.equals(theirs)).toBe(true);
  });
});
