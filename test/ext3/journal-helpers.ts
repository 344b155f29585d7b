/**
 * Test helpers for the journal: ext3 fixtures from mkfs.ext3, and a store
 * that models a crash (writes since the last fdatasync may or may not reach
 * the disk).
 */
import { execa } from 'execa';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ByteStore } from '../../src/io/byte-source.js';
import { MemoryRegion } from '../../src/io/memory-region.js';

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** A fresh ext3 image made by mkfs.ext3 (the reference tool), loaded into memory. */
export async function referenceMkfsExt3(dir: string, name: string, sizeMiB: number, extra: string[] = []): Promise<Buffer> {
  const file = path.join(dir, name);
  fs.rmSync(file, { force: true });
  fs.writeFileSync(file, '');
  fs.truncateSync(file, sizeMiB * 1024 * 1024);
  await execa('mkfs.ext3', ['-q', '-F', ...extra, file], { env: { E2FSPROGS_FAKE_TIME: '1700000000' } });
  return fs.readFileSync(file);
}

/** e2fsck -fn on a copy of `bytes`; returns exit code and output. */
export async function fsck(dir: string, bytes: Buffer): Promise<{ code: number; out: string }> {
  const file = path.join(dir, `fsck-${process.pid}-${Math.random().toString(36).slice(2)}.img`);
  fs.writeFileSync(file, bytes);
  try {
    const r = await execa('e2fsck', ['-fn', file], { reject: false });
    return { code: r.exitCode ?? -1, out: `${r.stdout}\n${r.stderr}` };
  } finally {
    fs.rmSync(file, { force: true });
  }
}

export class CrashedError extends Error {
  constructor() {
    super('simulated crash');
  }
}

/**
 * A ByteStore over memory that remembers what is durable: `durable` holds
 * the bytes as of the last sync(), `current` every write. `crashImage`
 * builds what a disk could hold after a power cut: the durable bytes plus
 * any subset of the unsynced writes. `failAfterSyncs`/`failAfterWrites`
 * make the store throw mid-operation, as a killed process stops.
 */
export class CrashStore implements ByteStore {
  readonly name: string;
  readonly writable = true;
  readonly current: Buffer;
  readonly durable: Buffer;
  private pending: { pos: number; data: Buffer }[] = [];
  syncs = 0;
  writes = 0;
  failAfterSyncs = Infinity;
  failAfterWrites = Infinity;

  constructor(bytes: Buffer, name = '<crash-store>') {
    this.name = name;
    this.current = Buffer.from(bytes);
    this.durable = Buffer.from(bytes);
  }

  get size(): number {
    return this.current.length;
  }

  private region(): MemoryRegion {
    return new MemoryRegion(this.current, { name: this.name });
  }

  read(position: number, length: number): Promise<Buffer> {
    return this.region().read(position, length);
  }

  async write(position: number, data: Uint8Array): Promise<void> {
    if (this.syncs >= this.failAfterSyncs || this.writes >= this.failAfterWrites) throw new CrashedError();
    await this.region().write(position, data);
    this.writes++;
    this.pending.push({ pos: position, data: Buffer.from(data) });
  }

  async sync(): Promise<void> {
    if (this.syncs >= this.failAfterSyncs) throw new CrashedError();
    for (const w of this.pending) w.data.copy(this.durable, w.pos);
    this.pending = [];
    this.syncs++;
  }

  async close(): Promise<void> {}

  /** Durable bytes plus the unsynced writes `keep` selects (all, none, or a random subset). */
  crashImage(keep: 'all' | 'none' | ((i: number) => boolean)): Buffer {
    const img = Buffer.from(this.durable);
    this.pending.forEach((w, i) => {
      if (keep === 'all' || (keep !== 'none' && keep(i))) w.data.copy(img, w.pos);
    });
    return img;
  }
}

/**
 * A CrashStore whose disk can be held (a slow disk) until release():
 * holdSync(n) holds the n-th sync from now; holdWrites(afterSyncs) holds
 * every write issued once `afterSyncs` more syncs have completed, or, with
 * `landFirst`, lets the first of them land and holds only it (the engine
 * issues those writes one after another, so a cut falls inside the run).
 * `held` resolves once something waits.
 */
export class GateStore extends CrashStore {
  private holdSyncAt = -1;
  private holdWritesFrom = -1;
  private landFirst = false;
  private gate: Promise<void> = Promise.resolve();
  private open: () => void = () => undefined;
  private reached: () => void = () => undefined;
  held: Promise<void> = Promise.resolve();

  private arm(): void {
    this.gate = new Promise((r) => (this.open = r));
    this.held = new Promise((r) => (this.reached = r));
  }

  holdSync(n = 1): void {
    this.arm();
    this.holdSyncAt = this.syncs + n;
  }

  holdWrites(afterSyncs = 0, landFirst = false): void {
    this.arm();
    this.holdWritesFrom = this.syncs + afterSyncs;
    this.landFirst = landFirst;
  }

  release(): void {
    this.holdSyncAt = -1;
    this.holdWritesFrom = -1;
    this.open();
  }

  override async write(position: number, data: Uint8Array): Promise<void> {
    if (this.holdWritesFrom >= 0 && this.syncs >= this.holdWritesFrom) {
      const gate = this.gate;
      if (this.landFirst) {
        this.holdWritesFrom = -1;
        await super.write(position, data);
        this.reached();
        await gate;
        return;
      }
      this.reached();
      await gate;
    }
    await super.write(position, data);
  }

  override async sync(): Promise<void> {
    if (this.holdSyncAt >= 0 && this.syncs + 1 === this.holdSyncAt) {
      this.holdSyncAt = -1;
      this.reached();
      await this.gate;
    }
    await super.sync();
  }
}

/** A small deterministic PRNG (mulberry32) so failures reproduce. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
