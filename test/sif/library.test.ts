/**
 * The SIF library in-process: codecs round-trip, siftool's number and time
 * formats, alignment, edits (groups, links, primary rules, delete options,
 * concurrency) and rollback when a write fails half-way.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { CorruptError, UsageError } from '../../src/errors.js';
import {
  DataType,
  DESCRIPTOR_SIZE,
  decodeDescriptor,
  decodeHeader,
  encodeDescriptor,
  encodeHeader,
  HEADER_SIZE,
  isSifHeader,
  MemoryStorage,
  nextAligned,
  SifImage,
  ZERO_TIME,
  type AddInput,
} from '../../src/sif/index.js';
import { goTimeString, readableSize, tabwrite } from '../../src/sif/report.js';

const T = 1_700_000_000;

async function fixture(): Promise<SifImage> {
  return SifImage.createInMemory({
    time: T,
    id: '12345678-9abc-def0-1234-56789abcdef0',
    objects: [
      { dataType: DataType.Deffile, data: Buffer.from('Bootstrap: scratch\n'), name: 'def' },
      { dataType: DataType.Partition, data: Buffer.alloc(5000, 7), partition: { fsType: 1, partType: 2, arch: 'amd64' } },
      { dataType: DataType.Partition, data: Buffer.alloc(3000, 8), partition: { fsType: 2, partType: 4, arch: 'amd64' } },
    ],
  });
}

function bytesOf(image: SifImage): Buffer {
  return (image as unknown as { storage: MemoryStorage }).storage.bytes;
}

/** A MemoryStorage whose nth write (1-based) fails, like a full disk. */
class FailingStorage extends MemoryStorage {
  writes = 0;
  constructor(
    bytes: Buffer,
    readonly failAt: number,
  ) {
    super(bytes, { name: 'failing.sif' });
  }
  override async write(position: number, data: Uint8Array): Promise<void> {
    if (++this.writes === this.failAt) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
    return super.write(position, data);
  }
}

describe('siftool formats', () => {
  it('times print as Go time.Time.String() in UTC', () => {
    expect(goTimeString(0)).toBe('1970-01-01 00:00:00 +0000 UTC');
    expect(goTimeString(1593475316)).toBe('2020-06-30 00:01:56 +0000 UTC');
    expect(goTimeString(ZERO_TIME)).toBe('0001-01-01 00:00:00 +0000 UTC');
    expect(goTimeString(-1)).toBe('1969-12-31 23:59:59 +0000 UTC');
    expect(goTimeString(253402300800)).toBe('10000-01-01 00:00:00 +0000 UTC');
    expect(goTimeString(951782400)).toBe('2000-02-29 00:00:00 +0000 UTC');
  });

  it('sizes print as siftool readableSize', () => {
    expect(readableSize(0)).toBe('0 B');
    expect(readableSize(1023)).toBe('1023 B');
    expect(readableSize(1024)).toBe('1 KiB');
    expect(readableSize(1536)).toBe('2 KiB');
    expect(readableSize(28080)).toBe('27 KiB');
    expect(readableSize(1048575)).toBe('1024 KiB');
    expect(readableSize(5 * 1024 ** 3)).toBe('5 GiB');
    expect(readableSize(-2048)).toBe('-2 KiB');
  });

  it('tabwrite aligns column blocks as Go text/tabwriter', () => {
    expect(tabwrite('a:\t1\nlonger:\t2\n', 1)).toBe('a:      1\nlonger: 2\n');
    // A line without a cell ends the block; the next block has its own width.
    expect(tabwrite('a:\t1\nplain\nlong label:\t2\n', 1)).toBe('a: 1\nplain\nlong label: 2\n');
    expect(tabwrite('\tX:\tv\n\tLonger:\tw\n', 2)).toBe('  X:       v\n  Longer:  w\n');
  });
});

describe('codecs', () => {
  it('header and descriptors round-trip byte for byte', async () => {
    const image = await fixture();
    const bytes = bytesOf(image);
    expect(encodeHeader(decodeHeader(bytes.subarray(0, HEADER_SIZE))).equals(bytes.subarray(0, HEADER_SIZE))).toBe(true);
    for (let slot = 0; slot < 3; slot++) {
      const at = 4096 + slot * DESCRIPTOR_SIZE;
      const raw = bytes.subarray(at, at + DESCRIPTOR_SIZE);
      expect(encodeDescriptor(decodeDescriptor(raw, slot)).equals(raw)).toBe(true);
    }
    expect(isSifHeader(bytes.subarray(0, 64))).toBe(true);
    expect(isSifHeader(Buffer.from('#!/bin/sh\n'.padEnd(64, ' ')))).toBe(false);
    expect(isSifHeader(bytes.subarray(0, 40))).toBe(false);
  });

  it('nextAligned is sylabs/sif nextAligned', () => {
    expect(nextAligned(32176, 4096)).toBe(32768);
    expect(nextAligned(32768, 4096)).toBe(32768);
    expect(nextAligned(32177, 0)).toBe(32177);
    expect(nextAligned(32176, 3)).toBe(32179);
  });
});

describe('deterministic create', () => {
  // SHA-256 of sylabs/sif v2.8.3 test/images/*.sif, which its test/gen_sifs.go makes
  // with OptCreateDeterministic from the inputs repeated here.
  const golden: [string, Parameters<typeof SifImage.createInMemory>[0], string][] = [
    ['empty.sif', {}, '1987d6041b278a3a87810475ce3bbe5416bc0301471c29c1e2f020579a61f815'],
    [
      'empty-id.sif',
      { id: '3fa802cc-358b-45e3-bcc0-69dc7a45f9f8' },
      'e69ae87e8234646a5cea26af912dbdf40e28b8ac4917f591eb66f94af3073b6e',
    ],
    [
      'empty-launch-script.sif',
      { launchScript: '#!/usr/bin/env run-script\n' },
      'c403ae5756610316b5a138386ae6fbbf052e5c3d21579c1f0c77066ec84fc2a1',
    ],
    [
      'one-object-generic-json.sif',
      { objects: [{ dataType: DataType.GenericJSON, data: Buffer.from('{}'), name: 'data.json' }] },
      '710a9262f63f5fbde75973110767922d42fdf26673ed19c6093b44da0fcbbef9',
    ],
    [
      'one-object-crypt-message.sif',
      {
        objects: [
          {
            dataType: DataType.CryptoMessage,
            data: Buffer.from([0xfe, 0xfe, 0xf0, 0xf0]),
            cryptoMessage: { formatType: 1, messageType: 0x100 },
          },
        ],
      },
      'da3d848c3b6fe26ee6340cdc731865c9d273a233cddb62794aecd132bfea71a4',
    ],
  ];
  it.each(golden)("%s is byte-identical to sylabs/sif's", async (_name, options, sha) => {
    const image = await SifImage.createInMemory({ deterministic: true, ...options });
    expect(createHash('sha256').update(bytesOf(image)).digest('hex')).toBe(sha);
  });
});

describe('SifImage edits', () => {
  it('lays objects out as sylabs/sif: IDs by slot, partitions aligned, library group 1, header arch', async () => {
    const image = await fixture();
    const [def, root, overlay] = image.descriptors();
    expect([def!.id, root!.id, overlay!.id]).toEqual([1, 2, 3]);
    expect(def!.offset).toBe(32176);
    expect(root!.offset).toBe(32768);
    expect(root!.sizeWithPadding).toBe(32768 - 32195 + 5000);
    expect(overlay!.offset).toBe(40960);
    expect(def!.groupId).toBe(1);
    expect(def!.raw.groupId).toBe(0xf0000001);
    expect(def!.createdAt).toBe(T);
    expect(image.primaryArch).toBe('amd64');
    expect(image.primaryPartition()?.id).toBe(2);
    const h = image.header;
    expect([h.descriptorsFree, h.dataSize]).toEqual([45, 40960 + 3000 - 32176]);
    expect((await image.readObjectAt(2, 4990, 10)).equals(Buffer.alloc(10, 7))).toBe(true);
    await expect(image.readObjectAt(2, 4990, 11)).rejects.toBeInstanceOf(UsageError);
  });

  it('links, groups, names, extras and OCI digests', async () => {
    const image = await fixture();
    const sig = await image.add({
      dataType: DataType.Signature,
      data: Buffer.from('sig'),
      groupId: null,
      linkedGroupId: 1,
      signature: { hashType: 1, entity: Buffer.alloc(20, 0xab) },
    });
    expect([sig.groupId, sig.linkedId, sig.linkedIsGroup]).toEqual([null, 1, true]);
    expect(sig.signature?.entity?.equals(Buffer.alloc(20, 0xab))).toBe(true);
    const blob = await image.add({
      dataType: DataType.OCIBlob,
      data: Buffer.from('{}'),
      linkedId: 1,
      groupId: 7,
      name: 'blob',
      time: 5,
    });
    expect(blob.ociDigest).toBe(`sha256:${createHash('sha256').update('{}').digest('hex')}`);
    expect([blob.groupId, blob.linkedId, blob.linkedIsGroup, blob.name, blob.createdAt]).toEqual([7, 1, false, 'blob', 5]);
    const sbom = await image.add({ dataType: DataType.SBOM, data: Buffer.from('x'), sbom: { format: 4 } });
    expect(sbom.sbom?.format).toBe(4);
    const msg = await image.add({
      dataType: DataType.CryptoMessage,
      data: Buffer.from('x'),
      cryptoMessage: { formatType: 1, messageType: 0x100 },
    });
    expect(msg.cryptoMessage).toEqual({ formatType: 1, messageType: 0x100 });
    const reopened = await SifImage.fromBytes(bytesOf(image));
    expect(reopened.descriptors().map((d) => d.id)).toEqual([1, 2, 3, 4, 5, 6, 7]);
  });

  it('refuses bad input before writing anything', async () => {
    const image = await fixture();
    const before = Buffer.from(bytesOf(image));
    const bad: [AddInput, RegExp][] = [
      [{ dataType: 0x5000, data: Buffer.from('x') }, /unknown data type 0x5000/],
      [{ dataType: DataType.Generic, data: Buffer.from('x'), name: 'n'.repeat(129) }, /name is too long/],
      [
        { dataType: DataType.Partition, data: Buffer.from('x'), partition: { fsType: 1, partType: 2, arch: 'arm64' } },
        /already contains a primary partition/,
      ],
      [
        { dataType: DataType.Partition, data: Buffer.from('x'), partition: { fsType: 1, partType: 1, arch: 'vax' } },
        /unknown architecture: vax/,
      ],
      [{ dataType: DataType.Partition, data: Buffer.from('x') }, /needs a filesystem type/],
      [{ dataType: DataType.Generic, data: Buffer.from('x'), groupId: 0 }, /invalid group ID/],
      [{ dataType: DataType.Generic, data: Buffer.from('x'), linkedId: 1, linkedGroupId: 1 }, /not both/],
      [
        { dataType: DataType.Generic, data: Buffer.from('x'), sbom: { format: 1 } },
        /sbom metadata given for a Generic\/Raw object/,
      ],
      [{ dataType: DataType.Generic, data: Buffer.from('x'), alignment: -1 }, /invalid alignment/],
    ];
    for (const [input, message] of bad) {
      await expect(image.add(input)).rejects.toThrow(message);
    }
    await expect(image.delete(9)).rejects.toThrow(/no object with ID 9/);
    await expect(image.delete(2, { compact: true })).rejects.toThrow(/not the last object/);
    await expect(image.setPrimary(1)).rejects.toThrow(/not a partition/);
    await expect(image.setPrimary(3)).rejects.toThrow(/not a system partition/);
    expect(bytesOf(image).equals(before)).toBe(true);
    const ro = await SifImage.fromStorage(new MemoryStorage(Buffer.from(before), { writable: false }));
    await expect(ro.add({ dataType: DataType.Generic, data: Buffer.from('x') })).rejects.toThrow(/read-only/);
    await expect(SifImage.createInMemory({ launchScript: 'x'.repeat(32) })).rejects.toThrow(/launch script is too long/);
  });

  it('a write failing at any step leaves the bytes as they were', async () => {
    const base = Buffer.from(bytesOf(await fixture()));
    const edits: [string, (img: SifImage) => Promise<unknown>][] = [
      ['add', (img) => img.add({ dataType: DataType.Generic, data: Buffer.from('payload') })],
      [
        'add partition',
        (img) =>
          img.add({
            dataType: DataType.Partition,
            data: Buffer.alloc(100),
            partition: { fsType: 1, partType: 1, arch: 'arm64' },
          }),
      ],
      ['delete', (img) => img.delete(1)],
    ];
    let injected = 0;
    for (const [name, edit] of edits) {
      for (let failAt = 1; failAt <= 3; failAt++) {
        const storage = new FailingStorage(Buffer.from(base), failAt);
        const image = await SifImage.fromStorage(storage);
        const err = await edit(image).then(
          () => undefined,
          (e: unknown) => e,
        );
        if (storage.writes < failAt) continue; // the edit makes fewer writes than that
        injected++;
        expect(err, `${name} failing at write ${failAt}`).toBeInstanceOf(Error);
        expect(storage.bytes.equals(base), `${name} failing at write ${failAt}`).toBe(true);
      }
    }
    expect(injected).toBe(8);
    // setPrimary writes the new primary, the demoted one, then the header.
    for (let failAt = 1; failAt <= 3; failAt++) {
      const storage = new FailingStorage(Buffer.from(base), 1000);
      const image = await SifImage.fromStorage(storage);
      const p = await image.add({
        dataType: DataType.Partition,
        data: Buffer.alloc(10),
        partition: { fsType: 1, partType: 1, arch: 'arm64' },
      });
      const snapshot = Buffer.from(storage.bytes);
      Object.assign(storage, { writes: 0, failAt });
      await expect(image.setPrimary(p.id)).rejects.toThrow(/ENOSPC/);
      expect(storage.bytes.equals(snapshot), `setPrimary failing at write ${failAt}`).toBe(true);
    }
  });

  it('concurrent adds are serialised: distinct slots, valid image, right data', async () => {
    const image = await fixture();
    const payloads = Array.from({ length: 20 }, (_, i) => Buffer.alloc(100 + i, i));
    const added = await Promise.all(
      payloads.map((data, i) =>
        image.add({
          dataType: i % 2 ? DataType.Generic : DataType.Partition,
          data,
          partition: i % 2 ? undefined : { fsType: 4, partType: 3, arch: 'arm64' },
        }),
      ),
    );
    expect(new Set(added.map((d) => d.id)).size).toBe(20);
    const reopened = await SifImage.fromBytes(bytesOf(image));
    for (const [i, d] of added.entries()) expect((await reopened.readObject(d.id)).equals(payloads[i]!)).toBe(true);
    expect(reopened.header.descriptorsFree).toBe(48 - 23);
  });

  it('delete: slot freed and reused, zero and compact options, primary resets arch', async () => {
    const image = await fixture();
    const size = bytesOf(image).length;
    await image.delete(3, { compact: true, zero: true });
    expect(bytesOf(image).length).toBe(40960 - (40960 - 37768));
    expect(image.header.dataSize).toBe(37768 - 32176);
    await image.delete(1, { zero: true });
    expect(
      bytesOf(image)
        .subarray(32176, 32176 + 19)
        .equals(Buffer.alloc(19)),
    ).toBe(true);
    await image.delete(2, { deterministic: true });
    expect(image.primaryArch).toBe('unknown');
    expect(image.header.modifiedAt).toBe(ZERO_TIME);
    expect(image.header.descriptorsFree).toBe(48);
    const again = await image.add({ dataType: DataType.Generic, data: Buffer.from('x') });
    expect(again.id).toBe(1);
    expect(size).toBeGreaterThan(bytesOf(image).length);
  });

  it('validation: hostile headers and descriptors are CorruptError', async () => {
    const base = bytesOf(await fixture());
    const mutants: [string, (b: Buffer) => void, RegExp][] = [
      ['used byte', (b) => (b[4096 + 4] = 2), /Used byte is 2/],
      ['duplicate id', (b) => b.writeUInt32LE(1, 4096 + DESCRIPTOR_SIZE + 5), /two descriptors have ID 1/],
      ['zero id', (b) => b.writeUInt32LE(0, 4096 + 5), /ID 0/],
      ['two primaries', (b) => b.writeInt32LE(2, 4096 + 2 * DESCRIPTOR_SIZE + 0xc9 + 4), /2 primary partitions/],
      ['object in table', (b) => b.writeBigInt64LE(4096n, 4096 + 0x11), /lies before the data section/],
      ['data offset in table', (b) => b.writeBigInt64LE(5000n, 0x70), /lies inside the descriptor table/],
      ['free > total', (b) => b.writeBigInt64LE(49n, 0x50), /bad descriptor counts/],
      ['table offset in header', (b) => b.writeBigInt64LE(64n, 0x60), /overlaps the header/],
    ];
    for (const [name, mutate, message] of mutants) {
      const b = Buffer.from(base);
      mutate(b);
      const err = await SifImage.fromBytes(b, 'm.sif').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, name).toBeInstanceOf(CorruptError);
      expect((err as CorruptError).describe(), name).toMatch(message);
      expect((err as CorruptError).describe(), name).toMatch(/^m\.sif: /);
    }
  });
});
