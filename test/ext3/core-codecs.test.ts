import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CorruptError, FsError, UnsupportedError } from '../../src/errors.js';
import { MemoryRegion } from '../../src/io/memory-region.js';
import { openExt3 } from '../../src/ext3/index.js';
import { checkFeatures, featureNames, INCOMPAT, RO_COMPAT, COMPAT } from '../../src/ext3/features.js';
import { decodeSuperblock, encodeSuperblock, groupHasSuper } from '../../src/ext3/superblock.js';
import { decodeGroupDesc, encodeGroupDesc } from '../../src/ext3/group-desc.js';
import { decodeDevice, decodeInode, emptyInode, encodeDevice, encodeInode } from '../../src/ext3/inode.js';
import { decodeDirBlock, encodeDirent, encodeDotBlock, emptyDirBlock, scanFreeSpace } from '../../src/ext3/dir.js';
import {
  decodeInodeXattrs,
  decodeXattrBlock,
  encodeInodeXattrs,
  encodeXattrBlock,
  fullXattrName,
  splitXattrName,
  xattrEntryHash,
} from '../../src/ext3/xattr.js';
import { aclDiskToXattr, aclXattrToDisk } from '../../src/ext3/acl.js';
import { blockPath, maxLogicalBlocks } from '../../src/ext3/block-map.js';
import { MaxTree } from '../../src/ext3/dir-index.js';
import { makeTempDir, removeTempDir } from '../tools/helpers.js';
import { mkfs } from './core-helpers.js';

let dir: string;
let image: Buffer;
beforeAll(() => {
  dir = makeTempDir('ext3-core-codecs');
  const p = join(dir, 'small.img');
  mkfs(p, { sizeK: 2048, blockSize: 1024, inodeSize: 256 });
  image = readFileSync(p);
});
afterAll(async () => {
  await removeTempDir(dir);
});

/** A small deterministic PRNG for fuzzing (xorshift32). */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 0x100000000;
  };
}

function onlyCorrupt(fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof CorruptError)) throw e;
  }
}

describe('superblock', () => {
  it('round-trips mkfs.ext3 bytes exactly', () => {
    const raw = image.subarray(1024, 2048);
    const sb = decodeSuperblock(raw, image.length);
    expect(sb.s_magic).toBe(0xef53);
    expect(sb.s_log_block_size).toBe(0);
    expect(encodeSuperblock(sb).equals(raw)).toBe(true);
    expect(encodeSuperblock({ ...sb, raw: undefined }).equals(raw)).toBe(false); // unmodelled fields live in raw
    expect(
      featureNames({ compat: sb.s_feature_compat, incompat: sb.s_feature_incompat, roCompat: sb.s_feature_ro_compat }),
    ).toEqual(
      expect.arrayContaining(['has_journal', 'ext_attr', 'resize_inode', 'dir_index', 'filetype', 'sparse_super', 'large_file']),
    );
    expect([0, 1, 2, 3, 4, 5, 7, 9, 25, 27, 49].filter((g) => groupHasSuper(sb, g))).toEqual([0, 1, 3, 5, 7, 9, 25, 27, 49]);
  });

  it('rejects hostile geometry with CorruptError', () => {
    const raw = Buffer.from(image.subarray(1024, 2048));
    const bad = (mut: (b: Buffer) => void, size = image.length) => {
      const b = Buffer.from(raw);
      mut(b);
      expect(() => decodeSuperblock(b, size)).toThrow(CorruptError);
    };
    bad((b) => b.writeUInt16LE(0x1234, 0x38));
    bad((b) => b.writeUInt32LE(7, 0x18));
    bad((b) => b.writeUInt32LE(0, 0x20));
    bad((b) => b.writeUInt32LE(0, 0x28));
    bad((b) => b.writeUInt32LE(12345, 0x00));
    bad((b) => b.writeUInt16LE(200, 0x58));
    bad((b) => b.writeUInt32LE(0, 0x14));
    bad(() => undefined, 1024 * 1024);
    const r = rng(1);
    for (let i = 0; i < 3000; i++) {
      const b = Buffer.from(raw);
      for (let k = 0; k < 3; k++) b[Math.floor(r() * 0x180)] = Math.floor(r() * 256);
      onlyCorrupt(() => decodeSuperblock(b, image.length));
    }
  });

  it('refuses unknown or unwritable features by name', () => {
    expect(() =>
      checkFeatures({ compat: 0, incompat: INCOMPAT.filetype | INCOMPAT.inline_data, roCompat: 0 }, false, 'x.img'),
    ).toThrow(/x\.img|inline_data/);
    expect(() => checkFeatures({ compat: 0, incompat: 0x80000000, roCompat: 0 }, false)).toThrow(UnsupportedError);
    expect(() => checkFeatures({ compat: 0, incompat: INCOMPAT.extent, roCompat: 0 }, true)).toThrow(/extent/);
    expect(() => checkFeatures({ compat: 0, incompat: 0, roCompat: RO_COMPAT.metadata_csum }, true)).toThrow(/metadata_csum/);
    expect(() => checkFeatures({ compat: 0, incompat: 0, roCompat: RO_COMPAT.metadata_csum }, false)).not.toThrow();
    expect(() =>
      checkFeatures(
        { compat: COMPAT.has_journal | COMPAT.dir_index, incompat: INCOMPAT.filetype, roCompat: RO_COMPAT.large_file },
        true,
      ),
    ).not.toThrow();
  });
});

describe('group descriptors and inodes', () => {
  it('round-trip group descriptors', () => {
    const raw = image.subarray(2048, 2048 + 32);
    const gd = decodeGroupDesc(raw);
    expect(encodeGroupDesc(gd).equals(raw)).toBe(true);
    expect(() => decodeGroupDesc(Buffer.alloc(16))).toThrow(CorruptError);
  });

  it('round-trips inodes with 32-bit ids, 64-bit sizes and nanosecond times', () => {
    const ino = emptyInode(256, 32);
    ino.i_mode = 0o100644;
    ino.i_uid = 100000;
    ino.i_gid = 0x12345678;
    ino.i_size = 5 * 1024 ** 3 + 7;
    ino.i_mtime = { sec: 1_700_000_000, nsec: 999_999_999 };
    ino.i_atime = { sec: -5, nsec: 1 };
    ino.i_ctime = { sec: 2 ** 32 + 10, nsec: 3 }; // past 2038: epoch bits
    ino.i_block[14] = 0xfffffffe;
    const enc = encodeInode(ino);
    const dec = decodeInode(enc, 256);
    expect([dec.i_uid, dec.i_gid, dec.i_size, dec.i_mtime, dec.i_atime, dec.i_ctime, dec.i_block[14]]).toEqual([
      100000,
      0x12345678,
      5 * 1024 ** 3 + 7,
      { sec: 1_700_000_000, nsec: 999_999_999 },
      { sec: -5, nsec: 1 },
      { sec: 2 ** 32 + 10, nsec: 3 },
      0xfffffffe,
    ]);
    const small = decodeInode(encodeInode(ino, 128), 128);
    expect(small.i_mtime).toEqual({ sec: 1_700_000_000, nsec: 0 });
    const bad = Buffer.from(enc);
    bad.writeUInt16LE(200, 0x80);
    expect(() => decodeInode(bad, 256)).toThrow(CorruptError);
    for (const [maj, min] of [
      [0, 0],
      [1, 3],
      [255, 255],
      [259, 70000],
      [4095, 1048575],
    ]) {
      expect(decodeDevice(encodeDevice(maj!, min!))).toEqual({ major: maj, minor: min });
    }
    expect(encodeDevice(0, 0)).toEqual(new Array(15).fill(0));
  });
});

describe('directory blocks', () => {
  it('encodes "." and ".." and parses records', () => {
    const blk = encodeDotBlock(1024, 12, 2, true);
    const recs = decodeDirBlock(blk);
    expect(recs.map((r) => [r.inode, r.rec_len, r.name.toString(), r.file_type])).toEqual([
      [12, 12, '.', 2],
      [2, 1012, '..', 2],
    ]);
    expect(scanFreeSpace(blk)).toBe(1000);
    const e = emptyDirBlock(4096);
    encodeDirent(e, 0, { inode: 5, rec_len: 4096, file_type: 1, name: Buffer.from('abc') });
    expect(decodeDirBlock(e)[0]!.name.toString()).toBe('abc');
    expect(() => encodeDirent(e, 4000, { inode: 5, rec_len: 200, file_type: 1, name: Buffer.from('x') })).toThrow(CorruptError);
  });

  it('rejects hostile records (and fuzzed blocks) with CorruptError only', () => {
    const z = Buffer.alloc(1024);
    expect(() => decodeDirBlock(z)).toThrow(CorruptError); // rec_len 0 would loop forever
    const past = emptyDirBlock(1024);
    past.writeUInt16LE(2000, 4);
    expect(() => decodeDirBlock(past)).toThrow(CorruptError);
    const longName = emptyDirBlock(1024);
    longName.writeUInt32LE(11, 0);
    longName.writeUInt16LE(12, 4);
    longName.writeUInt8(200, 6);
    expect(() => decodeDirBlock(longName)).toThrow(CorruptError);
    const r = rng(7);
    for (let i = 0; i < 3000; i++) {
      const b = encodeDotBlock(1024, 12, 2, true);
      for (let k = 0; k < 4; k++) b[Math.floor(r() * 40)] = Math.floor(r() * 256);
      onlyCorrupt(() => decodeDirBlock(b));
      onlyCorrupt(() => scanFreeSpace(b));
    }
  });
});

describe('xattrs and ACLs', () => {
  const entries = [
    { index: 1, name: Buffer.from('a'), value: Buffer.from('one') },
    { index: 4, name: Buffer.from('overlay.opaque'), value: Buffer.from('y') },
    { index: 1, name: Buffer.from('empty'), value: Buffer.alloc(0) },
  ];
  it('round-trips in-inode and block xattrs', () => {
    const ino = emptyInode(256, 32);
    expect(encodeInodeXattrs(ino.raw, 32, entries)).toBe(true);
    expect(decodeInodeXattrs(ino.raw, 32)).toEqual(entries);
    expect(encodeInodeXattrs(ino.raw, 32, [{ index: 1, name: Buffer.from('x'), value: Buffer.alloc(100) }])).toBe(false);
    const blk = encodeXattrBlock(1024, 3, entries)!;
    const dec = decodeXattrBlock(blk);
    expect(dec.refcount).toBe(3);
    expect(dec.entries.map((e) => e.name.toString()).sort()).toEqual(['a', 'empty', 'overlay.opaque']);
    expect(encodeXattrBlock(1024, 1, [{ index: 1, name: Buffer.from('x'), value: Buffer.alloc(1000) }])).toBeNull();
    // e2fsprogs' ext2fs_ext_attr_hash_entry for name "a", value "one" (checked by e2fsck in the write tests too)
    expect(xattrEntryHash(Buffer.from('a'), Buffer.from('one'))).toBe(((0x61 << 16) ^ 0x656e6f) >>> 0);
  });

  it('splits and joins full names on bytes: prefix by index, suffix stored as given', () => {
    const L = (s: string) => Buffer.from(s, 'latin1');
    const split = (s: Buffer) => {
      const k = splitXattrName(s);
      return k && { index: k.index, name: k.name.toString('hex') };
    };
    expect(split(Buffer.from('user.café'))).toEqual({ index: 1, name: Buffer.from('café').toString('hex') });
    expect(split(L('user.\xff\xfe'))).toEqual({ index: 1, name: 'fffe' });
    expect(split(L('trusted.\x80'))).toEqual({ index: 4, name: '80' });
    expect(split(L('security.capability'))).toEqual({ index: 6, name: Buffer.from('capability').toString('hex') });
    expect(split(L('system.posix_acl_access'))).toEqual({ index: 2, name: '' });
    expect(split(L('system.posix_acl_default'))).toEqual({ index: 3, name: '' });
    expect(split(L('system.posix_acl_accessX'))).toEqual({ index: 7, name: Buffer.from('posix_acl_accessX').toString('hex') });
    for (const bad of ['user.', 'user', 'User.a', 'other.a', '', '\xffuser.a']) expect(splitXattrName(L(bad)), bad).toBeNull();
    expect(fullXattrName(1, L('\xff\xfe'))?.equals(L('user.\xff\xfe'))).toBe(true);
    expect(fullXattrName(2, Buffer.alloc(0))?.equals(L('system.posix_acl_access'))).toBe(true);
    expect(fullXattrName(9, L('x'))).toBeNull();
    // The suffix is a copy: the caller's buffer may change afterwards.
    const name = Buffer.from('user.abc');
    const key = splitXattrName(name)!;
    name.fill(0);
    expect(key.name.toString()).toBe('abc');
  });

  it('rejects hostile xattr areas with CorruptError only', () => {
    const blk = encodeXattrBlock(1024, 1, entries)!;
    const badOff = Buffer.from(blk);
    badOff.writeUInt16LE(1023, 0x20 + 2);
    expect(() => decodeXattrBlock(badOff)).toThrow(CorruptError);
    const badMagic = Buffer.from(blk);
    badMagic.writeUInt32LE(1, 0);
    expect(() => decodeXattrBlock(badMagic)).toThrow(CorruptError);
    const r = rng(3);
    for (let i = 0; i < 3000; i++) {
      const b = Buffer.from(blk);
      for (let k = 0; k < 4; k++) b[Math.floor(r() * 96)] = Math.floor(r() * 256);
      onlyCorrupt(() => decodeXattrBlock(b));
      const ino = emptyInode(256, 32);
      encodeInodeXattrs(ino.raw, 32, entries);
      for (let k = 0; k < 4; k++) ino.raw[160 + Math.floor(r() * 96)] = Math.floor(r() * 256);
      onlyCorrupt(() => decodeInodeXattrs(ino.raw, 32));
    }
  });

  it('converts POSIX ACLs between the user and the ext3 form', () => {
    const user = Buffer.alloc(4 + 8 * 3);
    user.writeUInt32LE(2, 0);
    [
      [1, 6, 0xffffffff],
      [8, 4, 42],
      [0x20, 0, 0xffffffff],
    ].forEach(([t, p, id], i) => {
      user.writeUInt16LE(t!, 4 + 8 * i);
      user.writeUInt16LE(p!, 6 + 8 * i);
      user.writeUInt32LE(id!, 8 + 8 * i);
    });
    const disk = aclXattrToDisk(user);
    expect(disk.length).toBe(4 + 4 + 8 + 4);
    expect(aclDiskToXattr(disk).equals(user)).toBe(true);
    expect(() => aclXattrToDisk(Buffer.from([2, 0, 0, 0, 1]))).toThrow(FsError);
    expect(() => aclDiskToXattr(Buffer.from([1, 0, 0, 0, 2, 0, 7, 0]))).toThrow(CorruptError);
    expect(() => aclDiskToXattr(Buffer.from([9, 0, 0, 0]))).toThrow(CorruptError);
  });
});

describe('block map arithmetic and the directory free-space tree', () => {
  it('maps logical blocks to direct/indirect/double/triple paths, EFBIG beyond', () => {
    expect(blockPath(11, 256)).toEqual([11]);
    expect(blockPath(12, 256)).toEqual([12, 0]);
    expect(blockPath(12 + 256, 256)).toEqual([13, 0, 0]);
    expect(blockPath(12 + 256 + 65536, 256)).toEqual([14, 0, 0, 0]);
    expect(blockPath(maxLogicalBlocks(256) - 1, 256)).toEqual([14, 255, 255, 255]);
    expect(() => blockPath(maxLogicalBlocks(256), 256)).toThrow(FsError);
  });

  it('finds the first block with room', () => {
    const t = new MaxTree();
    [0, 12, 100, 8, 400].forEach((v, i) => t.set(i, v));
    expect(t.findFirst(10)).toBe(1);
    expect(t.findFirst(101)).toBe(4);
    expect(t.findFirst(401)).toBe(-1);
    for (let i = 5; i < 3000; i++) t.set(i, i === 2999 ? 1000 : 0);
    expect(t.findFirst(500)).toBe(2999);
  });
});

describe('hostile images', () => {
  it('a fuzzed image opens and walks with clean errors only, never writing', async () => {
    const r = rng(11);
    // Metadata lives in the first blocks: superblock, GDT, bitmaps, inode table, root/lost+found dirs.
    const hot = 1024 * 300;
    let opened = 0;
    for (let i = 0; i < 150; i++) {
      const bytes = Buffer.from(image);
      for (let k = 0; k < 8; k++) {
        const pos = r() < 0.2 ? 1024 + Math.floor(r() * 1024) : Math.floor(r() * hot);
        bytes[pos] = Math.floor(r() * 256);
      }
      const before = Buffer.from(bytes);
      const store = new MemoryRegion(bytes, { name: `fuzz-${i}.img`, writable: false });
      try {
        const fs = await openExt3(store, { writable: false });
        opened++;
        let seen = 0;
        const walk = async (id: number, depth: number): Promise<void> => {
          if (depth > 8 || seen > 5000) return;
          for (const e of await fs.readdir(id)) {
            seen++;
            const st = await fs.getattr(e.id).catch(() => null);
            if (!st) continue;
            await fs.listxattr(e.id).catch(() => null);
            if (e.type === 'f') await fs.read(e.id, 0, Math.min(st.size, 1 << 20)).catch(() => null);
            if (e.type === 'l') await fs.readlink(e.id).catch(() => null);
            if (e.type === 'd') await walk(e.id, depth + 1).catch(() => null);
          }
        };
        await walk(fs.rootId, 0).catch((e: unknown) => {
          if (!(e instanceof CorruptError || e instanceof FsError || e instanceof UnsupportedError)) throw e;
        });
        await fs.statfs();
        await fs.close();
      } catch (e) {
        if (!(e instanceof CorruptError || e instanceof FsError || e instanceof UnsupportedError)) throw e;
      }
      expect(bytes.equals(before)).toBe(true);
    }
    expect(opened).toBeGreaterThan(10);
  });

  it('a fuzzed image opened for writing takes mutations with clean errors only', async () => {
    const r = rng(29);
    const ok = (e: unknown) => e instanceof CorruptError || e instanceof FsError || e instanceof UnsupportedError;
    let opened = 0;
    for (let i = 0; i < 120; i++) {
      const bytes = Buffer.from(image);
      for (let k = 0; k < 6; k++) bytes[Math.floor(r() * 1024 * 300)] = Math.floor(r() * 256);
      const store = new MemoryRegion(bytes, { name: `wfuzz-${i}.img`, writable: true });
      let fs;
      try {
        fs = await openExt3(store, { writable: true });
      } catch (e) {
        if (!ok(e)) throw e;
        continue;
      }
      opened++;
      const root = fs.rootId;
      const ops: (() => Promise<unknown>)[] = [
        () =>
          fs
            .mknod(root, Buffer.from(`n${i}`), { mode: 0o100644, uid: 0, gid: 0 })
            .then((id) => fs.write(id, 0, Buffer.alloc(5000, 1))),
        () => fs.mkdir(root, Buffer.from(`d${i}`), { mode: 0o755, uid: 0, gid: 0 }),
        async () => {
          for (const e of await fs.readdir(root)) {
            if (e.type === 'f') {
              await fs.truncate(e.id, 10);
              await fs.setxattr(e.id, Buffer.from('user.x'), Buffer.from('y'));
            }
            if (e.type === 'd' && e.name.toString() !== 'lost+found') await fs.rename(root, e.name, root, Buffer.from(`r${i}`));
          }
        },
        async () => {
          for (const e of await fs.readdir(root)) if (e.type === 'f') await fs.unlink(root, e.name);
        },
      ];
      for (const op of ops) {
        await op().catch((e: unknown) => {
          if (!ok(e)) throw e;
        });
      }
      await fs.close().catch((e: unknown) => {
        if (!ok(e)) throw e;
      });
    }
    expect(opened).toBeGreaterThan(50);
  });
});
