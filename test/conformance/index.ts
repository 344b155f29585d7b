/**
 * One conformance suite for every WritableFs: the ext3 engine, MemLayer,
 * DirLayer and the Overlay run the same random operation sequences against
 * the POSIX model (model.ts, proven against the kernel's ext3 by
 * test/ext3/oracle-kernel.test.ts), through the same VFS driver (vfs.ts).
 *
 * # Plugging a new WritableFs in
 *
 * Write a ConformanceTarget and call `conformanceSuite` from a test file:
 *
 *     // test/layers/mem-conformance.test.ts
 *     import { conformanceSuite, FULL_CAPABILITIES, type ConformanceTarget } from '../conformance/index.js';
 *     const target: ConformanceTarget = {
 *       name: 'MemLayer',
 *       capabilities: FULL_CAPABILITIES,
 *       async open({ small }) {
 *         const fs = new MemLayer({ capBytes: small ? 1 << 20 : 64 << 20 });
 *         return { fs, close: async () => undefined };
 *       },
 *     };
 *     conformanceSuite(target, { sequences: 300, ops: 40, seedBase: 12_000_000, fill: 40 });
 *
 * That registers, under `conformance: NAME`: the fixed edge-case sequence
 * (ops.ts EDGE_CASES, cut to the capabilities), `sequences` random sequences
 * of `ops` operations (batches of independent ops issued concurrently, 3
 * sequences in flight), bursts of up to 300 concurrent creates, unlinks and writes, a
 * lifetime-race test (60 open/unlink/re-create races at once), and with
 * `fill` that many sequences on small instances until ENOSPC. Counts scale
 * with SIFUSE_PROPERTY_RUNS. Failures are shrunk on fresh instances and
 * reported with the ops that still fail (also written to
 * $TMPDIR/sifuse-conformance-seed-N.txt).
 *
 * `open()` returns a fresh filesystem each time it is called (one per
 * sequence, several at once, plus fresh ones while shrinking with lane -1).
 * The harness owns the instance's `fs`: it runs the ops, compares with the
 * model, then closes `fs` itself and only then calls the instance's hooks,
 * in this order (all optional but close):
 *
 *   check()        the stored result is consistent (ext3: e2fsck -fn)
 *   reopen(w)      opens what was stored again (writable or not) and returns
 *                  { fs, root? }; the harness compares it with the model and
 *                  closes it (and calls check() again after a writable reopen)
 *   views()        other views of the stored result: harness Targets with a
 *                  close() (ext3 and DirLayer as root: a KernelTarget on the
 *                  loop mount or the host directory; an Overlay: the kernel's
 *                  overlayfs over the same layers)
 *   keep()         on failure: saves the state, returns where (for the report)
 *   close()        always last: releases everything the instance holds
 *
 * Instance fields: `root` (the directory the ops see as '/': a layer's
 * upper/ inside its engine; '..' and absolute symlinks stay inside it, as
 * under chroot), `init(model)` (what the fresh filesystem already holds in
 * the ops' view, e.g. lost+found, which `exclude` then leaves out) or `model`
 * (a model built by whatever wrote first: test/ext3's kernel-first
 * sequences), `exclude` (paths never touched and left out of comparisons).
 *
 * Capabilities (ops.ts OpFeatures, plus blockSize and concurrent) say what a
 * backend cannot do, so the generator never asks it: hardLinks, devices
 * (char/block nodes, whiteouts included), fifos (and sockets), chown (to
 * other ids), xattrNamespaces (e.g. ['user.'] unprivileged), renameFlags
 * (renameat2 noreplace/exchange/whiteout), races (the 'race' op: ref, unlink
 * and re-create at once; needs ref/unref ordered with mutations), blockSize
 * (symlink targets must fit: target + NUL <= blockSize; 4096 = PATH_MAX),
 * concurrent (batches issued at once). The suite prints what a target leaves
 * out. Everything a backend does support must match the model exactly:
 * outcomes (errno names), manifests (type, mode, owner, size, sha256,
 * symlink target, rdev, xattrs, mtime where set explicitly) and link
 * structure (nlink, which paths share an inode).
 *
 * `open({ small: true })` is asked only by the fill sequences: a small
 * instance (a byte cap, a small image) that they run out of space; ENOSPC
 * must then be a clean error that changed nothing (a write may be short).
 * `open({ views: true })` says the harness will ask for views this time.
 *
 * Lower-level pieces for backend-specific tests: `runSequences` and
 * `fillSequences` (lanes with all checks, returning Stats), `checkedSequence`
 * (one sequence), harness.ts (`runSequence`, `FsTarget`, `KernelTarget`,
 * `compareWithModel`, `shrinkFailure`). Examples: test/ext3/conformance-target.ts
 * (hooks for e2fsck, reopen, kernel views, copy-on-write images),
 * test/layers/mem-conformance.test.ts, test/layers/dir-conformance.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { InodeId, WritableFs } from '../../src/engine.js';
import { ModelFs } from './model.js';
import { ALL_FEATURES, EDGE_CASES, opAllowed, type Op, type OpFeatures } from './ops.js';
import { VfsDriver } from './vfs.js';
import {
  FsTarget,
  SequenceMismatch,
  compareWithModel,
  runSequence,
  runs,
  shrinkFailure,
  timeoutFor,
  type SequenceLog,
  type SequenceOptions,
  type Target,
} from './harness.js';

export { runs, timeoutFor } from './harness.js';

export interface Capabilities extends OpFeatures {
  /** Bounds symlink targets as the model checks them (target + NUL must fit): ext3's block size, 4096 elsewhere. */
  blockSize: number;
  /** Operations may be issued concurrently (every engine: FUSE requests interleave). */
  concurrent: boolean;
}

export const FULL_CAPABILITIES: Capabilities = { ...ALL_FEATURES, blockSize: 4096, concurrent: true };

export interface OpenOptions {
  seed: number;
  /** The lane (0..lanes-1) the sequence runs in: lanes may keep per-lane resources. */
  lane: number;
  /** The plan wants other views of this sequence's result (views() should return them if it can). */
  views: boolean;
  /** A small instance for the fill sequences (see the header). */
  small: boolean;
}

export interface ConformanceInstance {
  fs: WritableFs;
  root?: InodeId;
  init?(model: ModelFs): void;
  model?: ModelFs;
  exclude?: string[];
  check?(): Promise<void>;
  reopen?(writable: boolean): Promise<{ fs: WritableFs; root?: InodeId }>;
  views?(): Promise<(Target & { close(): Promise<void> })[]>;
  keep?(): string;
  close(): Promise<void>;
}

export interface ConformanceTarget {
  readonly name: string;
  readonly capabilities: Capabilities;
  open(options: OpenOptions): Promise<ConformanceInstance>;
  /** Runs once before and after the suite's tests (shared helpers, temp dirs). */
  setup?(): Promise<void>;
  teardown?(): Promise<void>;
}

export interface Plan {
  /** Random sequences (scaled by SIFUSE_PROPERTY_RUNS). */
  sequences: number;
  /** Operations per sequence. */
  ops: number;
  /** Sequences in flight at once (default 3). */
  lanes?: number;
  /** Seeds are seedBase + index, so every target's sequences differ (default: a hash of the name). */
  seedBase?: number;
  /** Reopen every n-th sequence (default 3; 0: never). */
  reopenEvery?: number;
  /** Ask for views every n-th sequence (default 0: never). */
  viewEvery?: number;
  /** Largest file offset written (default 6 MiB). */
  maxOffset?: number;
  /** Directory the operations live under ('/' or e.g. '/upper'). */
  base?: string;
  /** Fill sequences on small instances: how many (0 or absent: none). */
  fill?: number;
  /** A test timeout base in ms at the default count (default 60 s). */
  timeoutMs?: number;
}

export interface Stats {
  sequences: number;
  ops: number;
  outcomes: Map<string, number>;
  enospc: number;
  views: number;
  reopens: number;
  /** 'race' ops run (open/unlink/re-create at once) and renames with renameat2 flags. */
  races: number;
  flaggedRenames: number;
}

export function newStats(): Stats {
  return { sequences: 0, ops: 0, outcomes: new Map(), enospc: 0, views: 0, reopens: 0, races: 0, flaggedRenames: 0 };
}

export function summary(stats: Stats): string {
  return (
    `${stats.sequences} sequences, ${stats.ops} ops (${stats.races} races, ${stats.flaggedRenames} renames with flags), ` +
    `${stats.reopens} reopens, ${stats.views} other views, ${stats.enospc} ENOSPC, ` +
    `outcomes ${JSON.stringify(Object.fromEntries(stats.outcomes))}`
  );
}

function record(stats: Stats, log: SequenceLog): void {
  stats.sequences++;
  stats.ops += log.ops.length;
  stats.enospc += log.enospc;
  for (const o of log.outcomes) stats.outcomes.set(o, (stats.outcomes.get(o) ?? 0) + 1);
  for (const op of log.ops) {
    if (op.op === 'race') stats.races++;
    else if (op.op === 'rename' && op.flags) stats.flaggedRenames++;
  }
}

function nameSeed(name: string): number {
  let h = 2166136261;
  for (const c of Buffer.from(name)) h = Math.imul(h ^ c, 16777619) >>> 0;
  return (h % 1_000_000) * 1000;
}

export interface SequencePlan extends Omit<SequenceOptions, 'init' | 'model' | 'exclude' | 'features'> {
  reopen: boolean;
  views: boolean;
  small?: boolean;
}

/**
 * One sequence on a fresh instance with every check the instance offers (see
 * the header); a failure is shrunk on fresh instances and reported with the
 * ops that still fail.
 */
export async function checkedSequence(target: ConformanceTarget, seq: SequencePlan, stats: Stats, lane: number): Promise<void> {
  const inst = await target.open({ seed: seq.seed, lane, views: seq.views, small: seq.small ?? false });
  try {
    const opts: SequenceOptions = {
      ...seq,
      blockSize: target.capabilities.blockSize,
      concurrency: seq.concurrency && target.capabilities.concurrent,
      init: inst.init ?? (() => undefined),
      model: inst.model,
      exclude: inst.exclude,
      features: target.capabilities,
    };
    const fsTarget = new FsTarget(inst.fs, inst.exclude, inst.root);
    let log: SequenceLog;
    try {
      log = await runSequence(fsTarget, opts);
    } catch (e) {
      await inst.fs.close().catch(() => undefined);
      let report = `${target.name}: ${String(e)}`;
      if (e instanceof SequenceMismatch && e.steps.length > 0 && !inst.model) {
        // Replayed one op at a time on fresh instances, cut down to what still fails.
        const fresh = async () => {
          const f = await target.open({ seed: seq.seed, lane: -1, views: false, small: seq.small ?? false });
          return {
            target: new FsTarget(f.fs, f.exclude, f.root),
            done: async () => {
              await f.fs.close().catch(() => undefined);
              await f.close();
            },
          };
        };
        const shrunk = await shrinkFailure(fresh, opts, e.steps);
        report +=
          `\nshrunk to ${shrunk.ops.length} steps (an array is a batch issued at once; replay with { replay: [...] }):\n` +
          `${shrunk.ops.map((step) => JSON.stringify(step)).join('\n')}\n${shrunk.error}`;
      } else if (e instanceof SequenceMismatch) {
        report += `\nsteps (an array is a batch issued at once):\n${e.steps.map((step) => JSON.stringify(step)).join('\n')}`;
      }
      const kept = inst.keep?.();
      const file = join(tmpdir(), `sifuse-conformance-seed-${seq.seed}.txt`);
      writeFileSync(file, report);
      throw new Error(`${report}\n(report in ${file}${kept ? `, state kept in ${kept}` : ''})`);
    }
    // Every third sequence syncs first, so close also runs with nothing left to do.
    if (seq.seed % 3 === 0) await inst.fs.sync();
    await inst.fs.close();
    await inst.check?.();
    if (seq.reopen && inst.reopen) {
      // Writable on even seeds (then checked again after its close), read-only on odd ones.
      const writable = seq.seed % 2 === 0;
      const again = await inst.reopen(writable);
      fsTarget.replace(again.fs, again.root);
      try {
        await compareWithModel(fsTarget, log, opts, `after close and ${writable ? 'writable' : 'read-only'} reopen`);
      } finally {
        await again.fs.close();
      }
      stats.reopens++;
      if (writable) await inst.check?.();
    }
    if (seq.views && inst.views) {
      for (const view of await inst.views()) {
        try {
          await compareWithModel(view, log, opts, `as ${view.label} sees the stored result`);
        } finally {
          await view.close();
        }
        stats.views++;
      }
    }
    record(stats, log);
  } finally {
    await inst.close();
  }
}

/**
 * Runs `count` sequences, `lanes` at a time; the first failure stops new ones
 * from starting and is thrown once all have settled.
 */
export async function inLanes(count: number, lanes: number, run: (s: number, lane: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | null = null;
  await Promise.all(
    Array.from({ length: lanes }, async (_, lane) => {
      while (failure === null && next < count) {
        const s = next++;
        try {
          await run(s, lane);
        } catch (error) {
          failure ??= { error };
        }
      }
    }),
  );
  if (failure !== null) throw (failure as { error: unknown }).error;
}

/** `plan.sequences` random sequences (scaled) with the plan's checks; returns the counts. */
export async function runSequences(target: ConformanceTarget, plan: Plan, stats = newStats()): Promise<Stats> {
  const n = runs(plan.sequences);
  const seedBase = plan.seedBase ?? nameSeed(target.name);
  const reopenEvery = plan.reopenEvery ?? 3;
  const viewEvery = plan.viewEvery ?? 0;
  await inLanes(n, plan.lanes ?? 3, (s, lane) =>
    checkedSequence(
      target,
      {
        seed: seedBase + s,
        ops: plan.ops,
        blockSize: target.capabilities.blockSize,
        concurrency: true,
        maxOffset: plan.maxOffset ?? 6 << 20,
        base: plan.base,
        reopen: reopenEvery > 0 && s % reopenEvery === 0,
        views: viewEvery > 0 && s % viewEvery === 0,
      },
      stats,
      lane,
    ),
  );
  return stats;
}

/**
 * `count` sequences (scaled) of 150 ops that mostly create and write, on
 * small instances (`open({ small: true })`) until they are full: ENOSPC must
 * change nothing (a write may be short); views every 10th, reopen every 3rd.
 */
export async function fillSequences(
  target: ConformanceTarget,
  count: number,
  o: { seedBase?: number; lanes?: number } = {},
  stats = newStats(),
): Promise<Stats> {
  const seedBase = o.seedBase ?? nameSeed(target.name) + 500_000;
  await inLanes(runs(count), o.lanes ?? 3, (s, lane) =>
    checkedSequence(
      target,
      {
        seed: seedBase + s,
        ops: 150,
        blockSize: target.capabilities.blockSize,
        concurrency: true,
        allowEnospc: true,
        bigWrites: true,
        maxOffset: 3 << 20,
        reopen: s % 3 === 0,
        views: s % 10 === 0,
        small: true,
      },
      stats,
      lane,
    ),
  );
  return stats;
}

/** The fixed edge-case sequence, cut to what the target supports. */
export function edgeCases(capabilities: OpFeatures): Op[] {
  return EDGE_CASES.filter((op) => opAllowed(op, capabilities));
}

/** Ops issued at once whose outcomes do not depend on their order, checked against the model one by one. */
async function burst(target: FsTarget, driver: VfsDriver, ops: Op[]): Promise<void> {
  const got = await target.apply(ops, true);
  for (const [i, op] of ops.entries()) expect(got.outcomes[i], JSON.stringify(op)).toBe(await driver.apply(op));
}

const mknod = (path: string): Op => ({ op: 'mknod', path, kind: 'f', mode: 0o644, major: 0, minor: 0 });

/**
 * Registers the conformance tests of `target`: the edge cases, `plan.sequences`
 * random sequences, bursts of concurrent operations, lifetime races, and (with
 * `plan.fill`) sequences that fill small instances.
 */
export function conformanceSuite(target: ConformanceTarget, plan: Plan): void {
  const caps = target.capabilities;
  const timeout = timeoutFor(plan.timeoutMs ?? 60_000);
  const off = (Object.keys(caps) as (keyof Capabilities)[]).filter(
    (k) => caps[k] === false || (k === 'xattrNamespaces' && caps.xattrNamespaces.length < 2),
  );
  if (off.length > 0)
    console.log(`conformance: ${target.name}: the generator leaves out what the target does not support: ${off.join(', ')}`);
  describe(`conformance: ${target.name}`, () => {
    if (target.setup) beforeAll(target.setup);
    if (target.teardown) afterAll(target.teardown);

    it('the fixed edge-case sequence (its outcomes proven on the kernel in test/ext3/oracle-kernel.test.ts)', async () => {
      const stats = newStats();
      for (const views of [false, true]) {
        await checkedSequence(
          target,
          { seed: views ? 2 : 1, ops: 0, blockSize: caps.blockSize, replay: edgeCases(caps), reopen: true, views },
          stats,
          0,
        );
      }
      expect(stats.sequences).toBe(2);
      expect(stats.outcomes.get('ok') ?? 0).toBeGreaterThan(20);
    });

    it(
      `${runs(plan.sequences)} random sequences of ${plan.ops} ops: outcomes, manifests, links, then the target's checks`,
      async () => {
        const stats = await runSequences(target, plan);
        console.log(`${target.name}: ${summary(stats)}`);
        const n = runs(plan.sequences);
        expect(stats.sequences).toBe(n);
        expect(stats.outcomes.get('ok') ?? 0).toBeGreaterThan(n * 10);
      },
      timeout,
    );

    it('bursts of concurrent operations on one file and in one directory (order-independent by construction)', async () => {
      const inst = await target.open({ seed: 0, lane: 0, views: false, small: false });
      try {
        const model = new ModelFs({ blockSize: caps.blockSize });
        inst.init?.(model);
        const driver = new VfsDriver(model);
        const fsTarget = new FsTarget(inst.fs, inst.exclude, inst.root);
        await burst(fsTarget, driver, [mknod('/f'), { op: 'mkdir', path: '/d', mode: 0o755 }]);
        // 64 writes of 3000 bytes at disjoint offsets of one file (ext3: direct, indirect and double-indirect blocks).
        const slots = Array.from({ length: 64 }, (_, i) => i).sort((a, b) => ((a * 37) % 64) - ((b * 37) % 64));
        await burst(
          fsTarget,
          driver,
          slots.map((i) => ({ op: 'write', path: '/f', offset: i * 70_001, length: 3000, seed: i })),
        );
        // 300 creates, then 100 unlinks and 100 more mkdirs, each burst at once in one directory.
        await burst(
          fsTarget,
          driver,
          Array.from({ length: 300 }, (_, i) => mknod(`/d/n${i}`)),
        );
        await burst(fsTarget, driver, [
          ...Array.from({ length: 100 }, (_, i) => ({ op: 'unlink', path: `/d/n${i * 3}` }) as Op),
          ...Array.from({ length: 100 }, (_, i) => ({ op: 'mkdir', path: `/d/m${i}`, mode: 0o700 }) as Op),
        ]);
        await burst(
          fsTarget,
          driver,
          Array.from(
            { length: 50 },
            (_, i) => ({ op: 'write', path: `/d/n${i * 3 + 1}`, offset: 0, length: 5000, seed: 1000 + i }) as Op,
          ),
        );
        await compareWithModel(fsTarget, { ops: [], outcomes: [], model, enospc: 0 }, { seed: 0, exclude: inst.exclude });
        await inst.fs.close();
        await inst.check?.();
      } finally {
        await inst.close();
      }
    });

    if (caps.races) {
      it('lifetime races: open, unlink and re-create of 60 names at once, with creates and writes beside them', async () => {
        const inst = await target.open({ seed: 0, lane: 0, views: false, small: false });
        try {
          const model = new ModelFs({ blockSize: caps.blockSize });
          inst.init?.(model);
          const driver = new VfsDriver(model);
          const fsTarget = new FsTarget(inst.fs, inst.exclude, inst.root);
          await burst(fsTarget, driver, [{ op: 'mkdir', path: '/r', mode: 0o755 }]);
          await burst(
            fsTarget,
            driver,
            Array.from({ length: 60 }, (_, i) => mknod(`/r/f${i}`)),
          );
          for (let round = 0; round < 4; round++) {
            // Files with distinct contents, so a handle reading another file's bytes is seen.
            await burst(
              fsTarget,
              driver,
              Array.from(
                { length: 60 },
                (_, i) => ({ op: 'write', path: `/r/f${i}`, offset: 0, length: 100 + i * 37, seed: round * 100 + i }) as Op,
              ),
            );
            await burst(fsTarget, driver, [
              ...Array.from(
                { length: 60 },
                (_, i) =>
                  ({
                    op: 'race',
                    path: `/r/f${i}`,
                    order: (i + round) % 6,
                    length: i % 4 === 0 ? 0 : 4000 + i,
                    seed: round * 1000 + i,
                  }) as Op,
              ),
              ...Array.from({ length: 20 }, (_, i) => mknod(`/r/new${round}-${i}`)),
              ...Array.from({ length: 20 }, (_, i) => ({ op: 'unlink', path: `/r/new${round - 1}-${i}` }) as Op),
            ]);
          }
          await compareWithModel(fsTarget, { ops: [], outcomes: [], model, enospc: 0 }, { seed: 0, exclude: inst.exclude });
          await inst.fs.close();
          await inst.check?.();
        } finally {
          await inst.close();
        }
      });
    }

    if (plan.fill) {
      it(
        `${runs(plan.fill)} sequences filling small instances: ENOSPC is a clean error, nothing corrupted`,
        async () => {
          const stats = await fillSequences(target, plan.fill!, {
            seedBase: (plan.seedBase ?? nameSeed(target.name)) + 500_000,
            lanes: plan.lanes,
          });
          console.log(`${target.name} small: ${summary(stats)}`);
          expect(stats.sequences).toBe(runs(plan.fill!));
          expect(stats.enospc).toBeGreaterThan(0);
        },
        timeout,
      );
    }
  });
}
