import { execa } from 'execa';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CorruptError, InternalError, UnsupportedError } from '../../src/errors.js';
import { MemoryRegion } from '../../src/io/memory-region.js';
import {
  BlockType,
  decodeCommitBlock,
  decodeDescriptorTags,
  decodeJournalSuperblock,
  decodeRevokeRecords,
  encodeBlockHeader,
  encodeCommitBlock,
  encodeDescriptorTag,
  encodeJournalSuperblock,
  encodeRevokeBlock,
  JBD2_MAGIC,
  JournalIncompat,
  newJournalSuperblock,
  TagFlag,
  tagLayout,
} from '../../src/ext3/journal/format.js';
import { openJournalFile, readJournalMap, readFsSuperblock } from '../../src/ext3/journal/journal-file.js';
import { Journal } from '../../src/ext3/journal/journal.js';
import { readJournalSuperblock } from '../../src/ext3/journal/replay.js';
import { recoverFilesystem, setNeedsRecovery } from '../../src/ext3/recovery.js';
import { crc32cRaw } from '../../src/ext3/journal/checksum.js';
import { CrashedError, CrashStore, fsck, referenceMkfsExt3, prng, tempDir } from './journal-helpers.js';
import { itIf } from '../tools/skip.js';
import { loopMountSync, unmountSync } from '../tools/loop.js';

let dir: string;
/** 8 MiB, 1 KiB blocks, 1024-block journal: free blocks 1591-8191. */
let small: Buffer;
/** 16 MiB, 4 KiB blocks (exercises s_first_data_block 0 and the superblock inside block 0). */
let big4k: Buffer;

beforeAll(async () => {
  dir = tempDir('sifuse-journal-');
  small = await referenceMkfsExt3(dir, 'small.img', 8, ['-b', '1024', '-J', 'size=1']);
  big4k = await referenceMkfsExt3(dir, 'b4k.img', 16, ['-b', '4096']);
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Free blocks of a fresh image (content irrelevant to e2fsck): the tail of the last group. */
function freeBlocks(bytes: Buffer, n: number): number[] {
  const total = bytes.readUInt32LE(1024 + 0x04);
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(total - 1 - 2 * i); // every other block: runs and gaps
  return out;
}

function blockOf(bytes: Buffer, bs: number, nr: number): Buffer {
  return bytes.subarray(nr * bs, (nr + 1) * bs);
}

function filled(bs: number, tag: number, salt = 0): Buffer {
  const b = Buffer.alloc(bs);
  for (let i = 0; i < bs; i += 4) b.writeUInt32LE((tag * 0x9e3779b1 + i + salt) >>> 0, i);
  return b;
}

/** The superblock block with a new volume name (a real, fsck-neutral metadata change). */
function withVolumeName(bytes: Buffer, name: string): { nr: number; data: Buffer } {
  const bs = 1024 << bytes.readUInt32LE(1024 + 0x18);
  const nr = bs === 1024 ? 1 : 0;
  const data = Buffer.from(blockOf(bytes, bs, nr));
  const off = 1024 - nr * bs + 0x78;
  data.fill(0, off, off + 16);
  data.write(name, off, 'latin1');
  return { nr, data };
}

/** Block `nr` of `img` equals `want`, ignoring needs_recovery (replay clears it) when it is the superblock's block. */
function sameBlock(img: Buffer, bs: number, nr: number, want: Buffer): boolean {
  const got = Buffer.from(blockOf(img, bs, nr));
  const w = Buffer.from(want);
  const sbBlock = bs === 1024 ? 1 : 0;
  if (nr === sbBlock) {
    const off = 1024 - nr * bs + 0x60;
    got.writeUInt32LE(got.readUInt32LE(off) & ~4, off);
    w.writeUInt32LE(w.readUInt32LE(off) & ~4, off);
  }
  return got.equals(w);
}

/** Compares our replay with e2fsck's: whole blocks, except the superblock where only the volume name counts (e2fsck also updates counts and state there). */
function sameAsE2fsck(theirs: Buffer, ours: Buffer, bs: number, nr: number): boolean {
  if (nr === (bs === 1024 ? 1 : 0)) {
    const off = nr * bs + (1024 - nr * bs) + 0x78;
    return theirs.subarray(off, off + 16).equals(ours.subarray(off, off + 16));
  }
  return blockOf(theirs, bs, nr).equals(blockOf(ours, bs, nr));
}

async function e2fsckReplay(bytes: Buffer): Promise<Buffer> {
  const file = path.join(dir, `replay-${Math.random().toString(36).slice(2)}.img`);
  fs.writeFileSync(file, bytes);
  try {
    await execa('e2fsck', ['-f', '-y', '-E', 'journal_only', file], { reject: false });
    return fs.readFileSync(file);
  } finally {
    fs.rmSync(file, { force: true });
  }
}

describe('journal format codec', () => {
  it('round-trips the journal superblock and keeps unmodelled bytes', () => {
    const sb = newJournalSuperblock(1024, 1024, Buffer.alloc(16, 7));
    sb.raw.writeUInt32BE(0xdeadbeef, 0x100); // s_users[0] start
    sb.start = 5;
    sb.sequence = 0xfffffffe;
    sb.featureIncompat = JournalIncompat.REVOKE | JournalIncompat.BIT64;
    const back = decodeJournalSuperblock(encodeJournalSuperblock(sb), 1024, 1024);
    expect(back.start).toBe(5);
    expect(back.sequence).toBe(0xfffffffe);
    expect(back.featureIncompat).toBe(3);
    expect(back.uuid.equals(Buffer.alloc(16, 7))).toBe(true);
    expect(back.raw.readUInt32BE(0x100)).toBe(0xdeadbeef);
  });

  it('refuses hostile journal superblocks', () => {
    const good = encodeJournalSuperblock(newJournalSuperblock(1024, 1024, Buffer.alloc(16)));
    const mut = (off: number, v: number) => {
      const b = Buffer.from(good);
      b.writeUInt32BE(v >>> 0, off);
      return b;
    };
    expect(() => decodeJournalSuperblock(mut(0, 0), 1024, 1024)).toThrow(CorruptError);
    expect(() => decodeJournalSuperblock(mut(4, 9), 1024, 1024)).toThrow(CorruptError);
    expect(() => decodeJournalSuperblock(mut(0x0c, 4096), 1024, 1024)).toThrow(CorruptError);
    expect(() => decodeJournalSuperblock(mut(0x10, 5000), 1024, 1024)).toThrow(/s_maxlen/);
    expect(() => decodeJournalSuperblock(mut(0x14, 0), 1024, 1024)).toThrow(/s_first/);
    expect(() => decodeJournalSuperblock(mut(0x1c, 2000), 1024, 1024)).toThrow(/s_start/);
    expect(() => decodeJournalSuperblock(mut(0x28, JournalIncompat.FAST_COMMIT), 1024, 1024)).toThrow(UnsupportedError);
    expect(() => decodeJournalSuperblock(good.subarray(0, 100), 1024, 1024)).toThrow(CorruptError);
  });

  it('encodes and decodes tags for every layout (32/64-bit, CSUM_V2, CSUM_V3)', () => {
    const uuid = Buffer.alloc(16, 0xab);
    const variants = [
      0,
      JournalIncompat.BIT64,
      JournalIncompat.CSUM_V2,
      JournalIncompat.CSUM_V2 | JournalIncompat.BIT64,
      JournalIncompat.CSUM_V3,
      JournalIncompat.CSUM_V3 | JournalIncompat.BIT64,
    ];
    const expectedSizes = [8, 12, 10, 14, 16, 16];
    variants.forEach((features, vi) => {
      const layout = tagLayout(features);
      expect(layout.tagSize).toBe(expectedSizes[vi]);
      const block = Buffer.alloc(1024);
      encodeBlockHeader(block, BlockType.DESCRIPTOR, 42);
      const nrs = [5, layout.bit64 ? 0x1_0000_0007 : 7, 9];
      let off = 12;
      nrs.forEach((nr, k) => {
        const flags = (k ? TagFlag.SAME_UUID : 0) | (k === 1 ? TagFlag.ESCAPE : 0) | (k === 2 ? TagFlag.LAST_TAG : 0);
        off = encodeDescriptorTag(
          block,
          off,
          layout,
          { blockNr: nr, flags, checksum: layout.csumV3 ? 0x12345678 : 0x1234 },
          uuid,
        );
      });
      expect(off).toBe(12 + 3 * layout.tagSize + 16);
      const tags = decodeDescriptorTags(block, layout);
      expect(tags.map((t) => t.blockNr)).toEqual(nrs);
      expect(tags[1]!.flags & TagFlag.ESCAPE).toBeTruthy();
      if (layout.csumV2 || layout.csumV3) expect(tags[0]!.checksum).toBe(layout.csumV3 ? 0x12345678 : 0x1234);
    });
  });

  it('bounds tags by the block and revoke records by r_count', () => {
    const layout = tagLayout(0);
    const block = Buffer.alloc(1024);
    encodeBlockHeader(block, BlockType.DESCRIPTOR, 1);
    // No LAST_TAG anywhere, all SAME_UUID: the walk stops at the block end.
    for (let off = 12; off + 8 <= 1024; off += 8) block.writeUInt32BE(TagFlag.SAME_UUID, off + 4);
    expect(decodeDescriptorTags(block, layout).length).toBe(Math.floor((1024 - 12) / 8));

    const rev = encodeRevokeBlock(1024, 3, layout, [10, 11, 12]);
    expect(decodeRevokeRecords(rev, layout)).toEqual([10, 11, 12]);
    rev.writeUInt32BE(5000, 0x0c);
    expect(() => decodeRevokeRecords(rev, layout)).toThrow(CorruptError);
    rev.writeUInt32BE(3, 0x0c);
    expect(() => decodeRevokeRecords(rev, layout)).toThrow(CorruptError);
    const rev64 = encodeRevokeBlock(1024, 3, tagLayout(JournalIncompat.BIT64), [0x2_0000_0001]);
    expect(decodeRevokeRecords(rev64, tagLayout(JournalIncompat.BIT64))).toEqual([0x2_0000_0001]);

    const commit = encodeCommitBlock(1024, 9, { sec: 1700000000, nsec: 5 });
    expect(decodeCommitBlock(commit)).toMatchObject({ commitSec: 1700000000, commitNsec: 5 });
  });

  it('computes crc32c like the kernel (raw, no inversion)', () => {
    // Standard CRC-32C check value of "123456789" is 0xE3069283 with pre/post inversion.
    expect((crc32cRaw(0xffffffff, Buffer.from('123456789')) ^ 0xffffffff) >>> 0).toBe(0xe3069283);
  });
});

describe('journal file map', () => {
  it('reads inode 8 block map through direct, indirect and double-indirect blocks', async () => {
    const store = new MemoryRegion(Buffer.from(small));
    const sb = await readFsSuperblock(store);
    const map = await readJournalMap(store, sb);
    expect(map.length).toBe(1024);
    // mkfs.ext3 lays the journal out contiguously apart from its indirect blocks.
    expect(map[0]).toBe(562);
    expect(map[12]).toBe(575);
    expect(map[268]).toBe(833);
    expect(map[1023]).toBe(1590);
  });

  it('refuses hostile journal inodes (hole, pointer outside the filesystem)', async () => {
    const bytes = Buffer.from(small);
    const store = new MemoryRegion(bytes);
    const sb = await readFsSuperblock(store);
    const gdOff = 2 * 1024;
    const itable = bytes.readUInt32LE(gdOff + 8);
    const inodeOff = itable * 1024 + 7 * 256;
    const ind = bytes.readUInt32LE(inodeOff + 0x28 + 12 * 4);
    bytes.writeUInt32LE(0, ind * 1024 + 40);
    await expect(readJournalMap(store, sb)).rejects.toThrow(/hole/);
    bytes.writeUInt32LE(99999999, ind * 1024 + 40);
    await expect(readJournalMap(store, sb)).rejects.toThrow(/outside the filesystem/);
    bytes.writeUInt32LE(1024 * 1024 * 100, inodeOff + 4); // i_size far beyond the fs
    await expect(readJournalMap(store, sb)).rejects.toThrow(CorruptError);
  });
});

describe('journal writer and replay', () => {
  it('replays a transaction committed before a crash, as e2fsck does', async () => {
    const bs = 1024;
    const store = new CrashStore(small);
    await setNeedsRecovery(store, true);
    const file = await openJournalFile(store);
    const journal = await Journal.open(file);
    const [a, b, c] = freeBlocks(small, 3) as [number, number, number];
    const before = Buffer.from(store.current);
    const vol = withVolumeName(before, 'journaled');
    // The kernel writes the superblock's free counts outside the journal, so
    // the journaled superblock image may carry stale ones: recovery
    // recomputes them from the group descriptors.
    const sbFreeBlocks = before.readUInt32LE(1024 + 0x0c);
    const sbFreeInodes = before.readUInt32LE(1024 + 0x10);
    vol.data.writeUInt32LE(17, 0x0c);
    vol.data.writeUInt32LE(3, 0x10);
    const escaped = filled(bs, 1);
    escaped.writeUInt32BE(JBD2_MAGIC, 0); // must be escaped in the log and restored on replay
    const blocks = new Map<number, Buffer>([
      [vol.nr, vol.data],
      [a, escaped],
      [b, filled(bs, 2)],
      [c, filled(bs, 3)],
    ]);
    // Crash right after the commit block is durable: no home write happens.
    store.failAfterSyncs = store.syncs + 2;
    await expect(journal.commit(blocks)).rejects.toThrow(CrashedError);
    const crashed = store.crashImage('all');
    for (const [nr] of blocks) expect(blockOf(crashed, bs, nr).equals(blockOf(before, bs, nr))).toBe(true);

    const ours = new MemoryRegion(Buffer.from(crashed));
    const r = await recoverFilesystem(ours);
    expect(r).toMatchObject({ needed: true, transactions: 1, blocksReplayed: 4 });
    expect(ours.bytes.readUInt32LE(1024 + 0x0c)).toBe(sbFreeBlocks);
    expect(ours.bytes.readUInt32LE(1024 + 0x10)).toBe(sbFreeInodes);
    for (const [nr, data] of blocks) {
      if (nr !== vol.nr) expect(sameBlock(ours.bytes, bs, nr, data)).toBe(true);
    }
    expect(ours.bytes.subarray(1024 + 0x78, 1024 + 0x78 + 9).toString()).toBe('journaled');
    expect(ours.bytes.readUInt32LE(1024 + 0x60) & 4).toBe(0);
    const jsb = await readJournalSuperblock(await openJournalFile(ours));
    expect(jsb.start).toBe(0);

    const theirs = await e2fsckReplay(crashed);
    for (const [nr] of blocks) expect(sameAsE2fsck(theirs, ours.bytes, bs, nr)).toBe(true);
    const check = await fsck(dir, ours.bytes);
    expect(check.out).toContain('journaled');
    expect(check.code).toBe(0);
  });

  itIf(process.getuid?.() === 0, 'loop mounts need root')('leaves logs the kernel replays on mount (loop, as root)', async () => {
    const bs = 1024;
    const store = new CrashStore(small);
    await setNeedsRecovery(store, true);
    const journal = await Journal.open(await openJournalFile(store));
    const vol = withVolumeName(store.current, 'kernelsees');
    const [a, b] = freeBlocks(small, 2) as [number, number];
    await journal.commit(new Map([[a, filled(bs, 8)]]));
    await journal.commit(
      new Map([
        [vol.nr, vol.data],
        [b, filled(bs, 9)],
      ]),
      new Set([a]),
    );
    const file = path.join(dir, 'kernel-replay.img');
    fs.writeFileSync(file, store.crashImage('none'));
    const mnt = fs.mkdtempSync(path.join(dir, 'mnt-'));
    loopMountSync(file, mnt, { type: 'ext3' });
    unmountSync(mnt);
    const after = fs.readFileSync(file);
    expect(blockOf(after, bs, b).equals(filled(bs, 9))).toBe(true);
    expect(after.subarray(1024 + 0x78, 1024 + 0x78 + 10).toString()).toBe('kernelsees');
    expect((await fsck(dir, after)).code).toBe(0);
  });
  if (process.getuid?.() !== 0) console.warn('journal: kernel replay test skipped: loop mounts need root');

  itIf(process.getuid?.() === 0, 'loop mounts need root')(
    'replays a kernel-made ext4 journal (64-bit tags, CSUM_V3, extent-mapped) like e2fsck (loop + shutdown, as root)',
    async () => {
      const file = path.join(dir, 'ext4-crash.img');
      fs.writeFileSync(file, '');
      fs.truncateSync(file, 64 * 1024 * 1024);
      await execa('mkfs.ext4', ['-q', '-F', file]);
      const mnt = fs.mkdtempSync(path.join(dir, 'mnt-'));
      loopMountSync(file, mnt, { type: 'ext4' });
      try {
        fs.mkdirSync(path.join(mnt, 'd'));
        for (let i = 0; i < 100; i++) fs.writeFileSync(path.join(mnt, 'd', `f${i}`), `file ${i}\n`);
        await execa('sync');
        for (let i = 0; i < 50; i++) fs.rmSync(path.join(mnt, 'd', `f${i}`));
        fs.mkdirSync(path.join(mnt, 'e'));
        await execa('xfs_io', ['-x', '-c', 'shutdown -f', mnt]);
      } finally {
        unmountSync(mnt);
      }
      const crashed = fs.readFileSync(file);
      const header = (await execa('dumpe2fs', ['-h', file])).stdout;
      expect(header).toMatch(/Journal features:\s+journal_64bit journal_checksum_v3/);
      expect(header).toMatch(/needs_recovery/);
      const ours = new MemoryRegion(Buffer.from(crashed));
      const r = await recoverFilesystem(ours);
      expect(r.transactions).toBeGreaterThan(0);
      expect(r.badChecksumImages).toBe(0);
      const theirs = await e2fsckReplay(crashed);
      const bs = 4096;
      for (let b = 1; b < crashed.length / bs; b++) {
        if (!blockOf(theirs, bs, b).equals(blockOf(ours.bytes, bs, b)))
          throw new Error(`block ${b} differs from e2fsck's replay`);
      }
      const check = await fsck(dir, ours.bytes);
      expect(check.code, check.out).toBe(0);
    },
  );

  it('ignores a transaction whose commit block never reached the disk', async () => {
    const bs = 1024;
    const store = new CrashStore(small);
    await setNeedsRecovery(store, true);
    const journal = await Journal.open(await openJournalFile(store));
    const before = Buffer.from(store.current);
    const vol = withVolumeName(before, 'lost');
    store.failAfterSyncs = store.syncs + 1; // the log is durable, the commit block write fails
    await expect(journal.commit(new Map([[vol.nr, vol.data]]))).rejects.toThrow(CrashedError);
    const ours = new MemoryRegion(store.crashImage('all'));
    const r = await recoverFilesystem(ours);
    expect(r).toMatchObject({ needed: true, transactions: 0, blocksReplayed: 0 });
    expect(sameBlock(ours.bytes, bs, vol.nr, blockOf(before, bs, vol.nr))).toBe(true);
    expect((await fsck(dir, ours.bytes)).code).toBe(0);
  });

  it('is atomic at every crash point: each transaction is replayed whole or not at all', async () => {
    const bs = 1024;
    const homes = freeBlocks(small, 40);
    const rand = prng(1234);
    // Transaction t writes block images tagged t to a random subset of `homes`.
    const plan: number[][] = [];
    for (let t = 1; t <= 4; t++) plan.push(homes.filter(() => rand() < 0.5));
    let crashPoints = 0;
    for (let stopAt = 0; ; stopAt++) {
      const store = new CrashStore(small);
      await setNeedsRecovery(store, true);
      const journal = await Journal.open(await openJournalFile(store));
      store.failAfterWrites = store.writes + stopAt;
      const expected = new Map<number, number>(); // home -> committed transaction tag
      let inflight: { t: number; homes: number[] } | null = null;
      let finished = true;
      try {
        for (let t = 1; t <= plan.length; t++) {
          inflight = { t, homes: plan[t - 1]! };
          await journal.commit(new Map(plan[t - 1]!.map((h) => [h, filled(bs, t, h)])));
          for (const h of plan[t - 1]!) expected.set(h, t);
          inflight = null;
        }
        await journal.close();
      } catch (err) {
        if (!(err instanceof CrashedError)) throw err;
        finished = false;
      }
      crashPoints++;
      // Power cut: durable bytes plus a random subset of unsynced writes.
      const img = store.crashImage((i) => rand() < 0.5 !== (i % 3 === 0));
      const region = new MemoryRegion(img);
      await recoverFilesystem(region);
      const seen = (h: number) => {
        const got = blockOf(region.bytes, bs, h);
        for (let t = plan.length; t >= 1; t--) if (got.equals(filled(bs, t, h))) return t;
        return blockOf(small, bs, h).equals(got) ? 0 : -1;
      };
      for (const [h, t] of expected) {
        const s = seen(h);
        // A later, in-flight transaction may or may not have made it.
        if (inflight && inflight.homes.includes(h)) expect([t, inflight.t]).toContain(s);
        else expect(s).toBe(t);
      }
      if (inflight) {
        const states = inflight.homes.map((h) => seen(h) === inflight!.t);
        expect(states.every((x) => x === states[0])).toBe(true);
      }
      if (finished) break;
    }
    expect(crashPoints).toBeGreaterThan(15);
  });

  it('honours revoke records: a revoked image is never written over newer data', async () => {
    const bs = 1024;
    const [x, y] = freeBlocks(small, 2) as [number, number];
    const store = new CrashStore(small);
    await setNeedsRecovery(store, true);
    const journal = await Journal.open(await openJournalFile(store));
    await journal.commit(
      new Map([
        [x, filled(bs, 1)],
        [y, filled(bs, 1)],
      ]),
    );
    // x is freed from metadata use and reused for file data (written in place).
    await journal.commit(new Map(), new Set([x]));
    await store.write(x * bs, filled(bs, 99));
    // y is revoked and journaled again in one transaction: journaling wins.
    await journal.commit(new Map([[y, filled(bs, 3)]]), new Set([y]));
    const jsb = await readJournalSuperblock(journal.file);
    expect(jsb.featureIncompat & JournalIncompat.REVOKE).toBeTruthy();
    const ours = new MemoryRegion(store.crashImage('all'));
    const r = await recoverFilesystem(ours);
    expect(r.transactions).toBe(3);
    expect(r.revokedImages).toBe(1);
    expect(blockOf(ours.bytes, bs, x).equals(filled(bs, 99))).toBe(true);
    expect(blockOf(ours.bytes, bs, y).equals(filled(bs, 3))).toBe(true);
    const theirs = await e2fsckReplay(store.crashImage('all'));
    expect(blockOf(theirs, bs, x).equals(filled(bs, 99))).toBe(true);
    expect(blockOf(theirs, bs, y).equals(filled(bs, 3))).toBe(true);
  });

  it('wraps around the log and replays transactions that straddle its end', async () => {
    const bs = 1024;
    const homes = freeBlocks(small, 300);
    const store = new CrashStore(small);
    await setNeedsRecovery(store, true);
    const journal = await Journal.open(await openJournalFile(store));
    expect(journal.maxTransactionBlocks).toBe(Math.floor(1023 / 2));
    const latest = new Map<number, number>();
    const rand = prng(7);
    // Commit until a transaction straddles the end of the log, then "crash"
    // before its home writes reach the disk: only the wrapped log has it.
    let straddled = false;
    for (let t = 1; t <= 200 && !straddled; t++) {
      const chosen = homes.filter(() => rand() < 0.3);
      const c = await journal.commit(new Map(chosen.map((h) => [h, filled(bs, t, h)])));
      straddled = c.logStart + c.logBlocks > journal.maxLen;
      for (const h of chosen) latest.set(h, t);
    }
    expect(straddled).toBe(true);
    expect(journal.stats.logBlocks).toBeGreaterThan(journal.logLength);
    expect(journal.stats.resets).toBeGreaterThan(0);
    // Make some transactions' home writes vanish: only the log can restore them.
    const img = store.crashImage('none');
    const jsb = await readJournalSuperblock(await openJournalFile(new MemoryRegion(Buffer.from(img))));
    expect(jsb.start).toBeGreaterThan(0);
    const region = new MemoryRegion(img);
    const r = await recoverFilesystem(region);
    expect(r.transactions).toBeGreaterThanOrEqual(1);
    for (const [h, t] of latest) expect(blockOf(region.bytes, bs, h).equals(filled(bs, t, h))).toBe(true);
    const theirs = await e2fsckReplay(store.crashImage('none'));
    for (const [h] of latest) expect(blockOf(theirs, bs, h).equals(blockOf(region.bytes, bs, h))).toBe(true);
  });

  it.each([
    ['64-bit tags', JournalIncompat.BIT64],
    ['CSUM_V2', JournalIncompat.CSUM_V2],
    ['CSUM_V3 + 64-bit', JournalIncompat.CSUM_V3 | JournalIncompat.BIT64],
  ])('writes and replays %s journals like e2fsck', async (_name, features) => {
    const bs = 4096;
    const bytes = Buffer.from(big4k);
    const store0 = new MemoryRegion(bytes);
    const file0 = await openJournalFile(store0);
    const jsb = await readJournalSuperblock(file0);
    jsb.featureIncompat |= features;
    if (features & (JournalIncompat.CSUM_V2 | JournalIncompat.CSUM_V3)) jsb.featureCompat = 0;
    jsb.checksumType = features & (JournalIncompat.CSUM_V2 | JournalIncompat.CSUM_V3) ? 4 : 0;
    encodeJournalSuperblock(jsb).copy(bytes, file0.map[0]! * bs);

    const store = new CrashStore(bytes);
    await setNeedsRecovery(store, true);
    const journal = await Journal.open(await openJournalFile(store));
    const homes = freeBlocks(bytes, 20);
    const vol = withVolumeName(store.current, 'v3');
    const m = new Map<number, Buffer>(homes.map((h) => [h, filled(bs, 5, h)]));
    m.set(vol.nr, vol.data);
    const esc = filled(bs, 6);
    esc.writeUInt32BE(JBD2_MAGIC, 0);
    m.set(homes[0]!, esc);
    await journal.commit(m, new Set([homes[19]! - 1]));
    const crashed = store.crashImage('none');
    const ours = new MemoryRegion(Buffer.from(crashed));
    const r = await recoverFilesystem(ours);
    expect(r.badChecksumImages).toBe(0);
    expect(r.blocksReplayed).toBe(m.size);
    for (const [h, d] of m) expect(sameBlock(ours.bytes, bs, h, d)).toBe(true);
    const theirs = await e2fsckReplay(crashed);
    for (const [h] of m) expect(sameAsE2fsck(theirs, ours.bytes, bs, h)).toBe(true);
    expect((await fsck(dir, ours.bytes)).code).toBe(0);

    if (features & (JournalIncompat.CSUM_V2 | JournalIncompat.CSUM_V3)) {
      // A damaged image in the log is skipped, not replayed.
      const bad = Buffer.from(crashed);
      const jf = await openJournalFile(new MemoryRegion(bad));
      const start = (await readJournalSuperblock(jf)).start;
      const firstImage = jf.map[start + 1]!;
      bad[firstImage * bs + 100]! ^= 0xff;
      const r2 = await recoverFilesystem(new MemoryRegion(bad));
      expect(r2.badChecksumImages).toBe(1);
    }
  });

  it('opens read-only without writing: replayed blocks come back as an overlay', async () => {
    const bs = 1024;
    const store = new CrashStore(small);
    await setNeedsRecovery(store, true);
    const journal = await Journal.open(await openJournalFile(store));
    const vol = withVolumeName(store.current, 'overlay');
    store.failAfterSyncs = store.syncs + 2;
    await expect(journal.commit(new Map([[vol.nr, vol.data]]))).rejects.toThrow(CrashedError);
    const img = store.crashImage('all');
    const before = Buffer.from(img);
    const ro = new MemoryRegion(img, { writable: false });
    const r = await recoverFilesystem(ro);
    expect(r.needed).toBe(true);
    expect(r.overlay.get(vol.nr)?.equals(vol.data)).toBe(true);
    expect(img.equals(before)).toBe(true);
    await expect(Journal.open(await openJournalFile(ro))).rejects.toThrow(InternalError);
  });

  it('leaves an empty journal after close, and refuses blocks outside the filesystem or inside the journal', async () => {
    const store = new CrashStore(small);
    const file = await openJournalFile(store);
    const journal = await Journal.open(file);
    await journal.commit(new Map([[freeBlocks(small, 1)[0]!, filled(1024, 1)]]));
    expect((await readJournalSuperblock(file)).start).not.toBe(0);
    await journal.close();
    const jsb = await readJournalSuperblock(file);
    expect(jsb.start).toBe(0);
    expect(jsb.sequence).toBe(2);
    const j2 = await Journal.open(file);
    await expect(j2.commit(new Map([[8192, filled(1024, 1)]]))).rejects.toThrow(InternalError);
    await expect(j2.commit(new Map([[file.map[5]!, filled(1024, 1)]]))).rejects.toThrow(/journal itself/);
    await expect(j2.commit(new Map([[100, Buffer.alloc(10)]]))).rejects.toThrow(InternalError);
    expect((await fsck(dir, store.current)).code).toBe(0);
  });
});

describe('hostile journals', () => {
  it('replay of randomly damaged logs ends in success or CorruptError, in bounds', async () => {
    const bs = 1024;
    // A log holding several transactions with revokes, left needing recovery.
    const store = new CrashStore(small);
    await setNeedsRecovery(store, true);
    const journal = await Journal.open(await openJournalFile(store));
    const homes = freeBlocks(small, 60);
    for (let t = 1; t <= 5; t++) {
      await journal.commit(new Map(homes.slice(t * 5, t * 5 + 20).map((h) => [h, filled(bs, t, h)])), new Set([homes[t]!]));
    }
    const base = store.crashImage('none');
    const file = await openJournalFile(new MemoryRegion(Buffer.from(base)));
    const logPhys = Array.from(file.map.slice(0, 200));
    const rand = prng(99);
    const CASES = 200;
    let ok = 0;
    let refused = 0;
    for (let i = 0; i < CASES; i++) {
      const img = Buffer.from(base);
      const nMut = 1 + Math.floor(rand() * 6);
      for (let k = 0; k < nMut; k++) {
        const blk = logPhys[Math.floor(rand() * logPhys.length)]!;
        const off = blk * bs + (rand() < 0.6 ? Math.floor(rand() * 64) : Math.floor(rand() * bs));
        img[off] = Math.floor(rand() * 256);
        if (rand() < 0.3) img.writeUInt32BE(Math.floor(rand() * 0xffffffff), blk * bs + 12 + 4 * Math.floor(rand() * 8));
      }
      const region = new MemoryRegion(img);
      try {
        await recoverFilesystem(region);
        ok++;
      } catch (err) {
        if (!(err instanceof CorruptError) && !(err instanceof UnsupportedError)) throw err;
        refused++;
      }
      expect(region.bytes.length).toBe(base.length);
    }
    expect(ok + refused).toBe(CASES);
    expect(ok).toBeGreaterThan(0);
  });
});
