/**
 * The property-test driver: one random operation sequence applied to the
 * model and to a target (any WritableFs through VfsDriver, or a kernel mount
 * through test/tools/kernel-ops.py), outcome by outcome, then the two
 * manifests and link structures compared. test/conformance/index.ts builds
 * the per-backend suite on top of this.
 */
import { execa } from 'execa';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface, type Interface } from 'node:readline';
import type { InodeId, WritableFs } from '../../src/engine.js';
import { ModelFs } from './model.js';
import { ALL_FEATURES, OpGenerator, listTree, writeData, type Op, type OpFeatures, type Outcome } from './ops.js';
import { VfsDriver } from './vfs.js';
import { diffLines, escapeBytes, linkLines, maskMtime, walkManifest } from './manifest.js';

export const TOOLS = join(dirname(fileURLToPath(import.meta.url)), '..', 'tools');
export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/** How many sequences to run: `base` scaled by SIFUSE_PROPERTY_RUNS (a multiplier, default 1). */
export function runs(base: number): number {
  const f = Number(process.env.SIFUSE_PROPERTY_RUNS ?? '1');
  return Math.max(1, Math.round(base * (Number.isFinite(f) && f > 0 ? f : 1)));
}

/** A test timeout for work that takes about `baseMs` at the default count, scaled like `runs` (with room for a loaded machine). */
export function timeoutFor(baseMs: number): number {
  const f = Number(process.env.SIFUSE_PROPERTY_RUNS ?? '1');
  return Math.round(baseMs * 4 * Math.max(1, Number.isFinite(f) && f > 0 ? f : 1));
}

/** A manifest and link structure, as compared after each sequence. */
export interface Snapshot {
  lines: string[];
  links: string[];
}

export interface Target {
  readonly label: string;
  /** Runs ops one after another, or (when `concurrent`) all at once. */
  apply(ops: Op[], concurrent: boolean): Promise<{ outcomes: Outcome[]; shortWrites: (number | null)[] }>;
  snapshot(): Promise<Snapshot>;
}

async function fsSnapshot(fs: WritableFs, exclude: string[], root: InodeId | undefined): Promise<Snapshot> {
  const entries = await walkManifest(fs, { exclude, root });
  return { lines: entries.map((e) => e.line), links: linkLines(entries) };
}

/**
 * Any WritableFs (an engine, a layer, the model itself for self-tests) driven
 * through VfsDriver; `root` is the directory the ops see as '/' (default the
 * engine's root).
 */
export class FsTarget implements Target {
  readonly label: string;
  private driver: VfsDriver;
  constructor(
    public fs: WritableFs,
    private exclude: string[] = [],
    private root?: InodeId,
  ) {
    this.label = fs.name;
    this.driver = new VfsDriver(fs, { root });
  }
  /** Points the target at a reopened engine (and its root, when that is not the engine's root). */
  replace(fs: WritableFs, root?: InodeId): void {
    this.fs = fs;
    this.root = root;
    this.driver = new VfsDriver(fs, { root });
  }
  async apply(ops: Op[], concurrent: boolean): Promise<{ outcomes: Outcome[]; shortWrites: (number | null)[] }> {
    const one = (op: Op) => this.driver.applyDetailed(op);
    const results: { outcome: Outcome; short: number | null }[] = [];
    if (concurrent) results.push(...(await Promise.all(ops.map(one))));
    else for (const op of ops) results.push(await one(op));
    return { outcomes: results.map((r) => r.outcome), shortWrites: results.map((r) => r.short) };
  }
  snapshot(): Promise<Snapshot> {
    return fsSnapshot(this.fs, this.exclude, this.root);
  }
}

/** A kernel mount (root only: ext3 loop, overlayfs): ops run by the Python helper chrooted into it. */
export class KernelTarget implements Target {
  readonly label = 'kernel';
  private proc: ChildProcessWithoutNullStreams;
  private lines: Interface;
  private pending: ((line: string) => void)[] = [];
  private stderr = '';

  constructor(readonly mountpoint: string) {
    this.proc = spawn('python3', [join(TOOLS, 'kernel-ops.py'), mountpoint], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stderr.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.lines = createInterface({ input: this.proc.stdout });
    this.lines.on('line', (l) => this.pending.shift()?.(l));
  }

  private request(req: object): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const onExit = () => reject(new Error(`kernel helper exited: ${this.stderr}`));
      this.proc.once('exit', onExit);
      this.pending.push((l) => {
        this.proc.off('exit', onExit);
        resolve(JSON.parse(l) as Record<string, unknown>);
      });
      this.proc.stdin.write(JSON.stringify(req) + '\n');
    });
  }

  async apply(ops: Op[]): Promise<{ outcomes: Outcome[]; shortWrites: (number | null)[] }> {
    const outcomes: Outcome[] = [];
    for (const op of ops) {
      const data =
        op.op === 'write' || op.op === 'unlinkopen' || op.op === 'race' ? writeData(op.seed, op.length).toString('base64') : '';
      const r = await this.request({ cmd: 'op', op, data });
      if (typeof r.outcome !== 'string') throw new Error(`kernel helper: ${JSON.stringify(r)} ${this.stderr}`);
      outcomes.push(r.outcome);
    }
    return { outcomes, shortWrites: ops.map(() => null) };
  }

  async snapshot(): Promise<Snapshot> {
    const r = await execa('python3', [join(TOOLS, 'tree_manifest.py'), this.mountpoint], { encoding: 'buffer' });
    const lines = Buffer.from(r.stdout)
      .toString('latin1')
      .split('\n')
      .filter((l) => l.length > 0);
    const l = await this.request({ cmd: 'links' });
    const raw = (l.links as [string, number, number][]).map(([p, ino, nlink]) => ({
      path: Buffer.from(p, 'base64'),
      ino,
      nlink,
    }));
    raw.sort((a, b) => Buffer.compare(a.path, b.path));
    return { lines, links: linkLines(raw) };
  }

  async close(): Promise<void> {
    if (this.proc.exitCode === null) {
      const exited = new Promise((r) => this.proc.once('exit', r));
      this.proc.stdin.write(JSON.stringify({ cmd: 'quit' }) + '\n');
      await exited;
    }
  }
}

export interface SequenceOptions {
  seed: number;
  ops: number;
  blockSize: number;
  /** Builds the model's starting tree (what mkfs made). */
  init: (model: ModelFs) => void;
  /** Continue from this model (the state another target left) instead of a fresh one; `init` is then not called. */
  model?: ModelFs;
  /** Never targeted and left out of comparisons (lost+found). */
  exclude?: string[];
  base?: string;
  maxOffset?: number;
  /** Issue batches of independent ops at once (engine targets). */
  concurrency?: boolean;
  bigWrites?: boolean;
  /**
   * Replays exactly these steps instead of generating (shrinking, regression
   * cases): an Op runs alone, an Op[] is a batch issued at once, as generated.
   */
  replay?: Step[];
  /** Small images: ENOSPC from the target is accepted for ops that allocate; the model then skips the op. */
  allowEnospc?: boolean;
  /** What the target supports (default: everything); races are left out when ENOSPC is allowed (their outcome would be partial). */
  features?: OpFeatures;
}

/** One step of a sequence: an op alone, or a batch of independent ops issued at once. */
export type Step = Op | Op[];

export interface SequenceLog {
  ops: Op[];
  /** The same ops as issued: batches kept together (for replay; runSequence always fills it). */
  steps?: Step[];
  outcomes: Outcome[];
  model: ModelFs;
  enospc: number;
}

export class SequenceMismatch extends Error {
  /** The ops applied up to the failure, for replay and shrinking. */
  ops: Op[] = [];
  /** The steps issued up to and including the failing one, batches kept (replay with `replay`). */
  steps: Step[] = [];
}

const ALLOCATING = new Set(['mknod', 'mkdir', 'symlink', 'link', 'rename', 'write', 'truncate', 'setxattr', 'unlinkopen']);
const CONCURRENT_SAFE = new Set([
  'mknod',
  'mkdir',
  'symlink',
  'unlink',
  'rmdir',
  'write',
  'truncate',
  'chmod',
  'chown',
  'utimes',
  'setxattr',
  'removexattr',
  'race',
]);

function describe(op: Op): string {
  return JSON.stringify(op, (_key, v) => (typeof v === 'string' && v.length > 40 ? `${v.slice(0, 12)}…(${v.length})` : v));
}

/** The first path component below `base`, the unit of independence for concurrent batches. */
function topOf(path: string, base: string): string {
  const rel = base === '/' ? path : path.slice(base.length);
  return rel.split('/').filter((c) => c)[0] ?? '';
}

/**
 * Walks `path` in the model: null when the walk passes a symlink (such an op
 * may reach another subtree, so it is not batched), else the inode the last
 * name denotes now (0 when absent). Ops of a concurrent batch must have
 * distinct top-level names AND distinct target inodes: hard links make two
 * subtrees share inodes, and two ops on one inode do not commute.
 */
async function plainTarget(model: ModelFs, path: string): Promise<number | null> {
  const comps = path.split('/').filter((c) => c);
  let id = model.rootId;
  for (const [i, c] of comps.entries()) {
    const next = await model.lookup(id, Buffer.from(c)).catch(() => null);
    if (next === null) return 0;
    if (i === comps.length - 1) return next;
    const t = (await model.getattr(next)).mode & 0o170000;
    if (t !== 0o040000) return t === 0o120000 ? null : 0;
    id = next;
  }
  return 0;
}

/**
 * Runs one sequence on `target` and a fresh model; throws SequenceMismatch
 * naming the first differing outcome, or the manifest/link difference.
 */
export async function runSequence(target: Target, o: SequenceOptions): Promise<SequenceLog> {
  const model = o.model ?? new ModelFs({ blockSize: o.blockSize });
  if (!o.model) o.init(model);
  const driver = new VfsDriver(model);
  const exclude = o.exclude ?? [];
  const base = o.base ?? '/';
  const features =
    o.features && o.allowEnospc
      ? { ...o.features, races: false }
      : o.allowEnospc
        ? { ...ALL_FEATURES, races: false }
        : o.features;
  const gen = new OpGenerator(o.seed, {
    blockSize: o.blockSize,
    exclude,
    base,
    maxOffset: o.maxOffset,
    bigWrites: o.bigWrites,
    features,
  });
  const log: SequenceLog = { ops: [], steps: [], outcomes: [], model, enospc: 0 };
  const excludeSet = new Set(exclude);
  const mismatch = (message: string): SequenceMismatch => {
    const m = new SequenceMismatch(message);
    m.ops = [...log.ops];
    m.steps = [...log.steps!];
    return m;
  };
  if (o.replay) {
    for (const s of o.replay) await step(Array.isArray(s) ? s : [s]);
    await compareWithModel(target, log, o);
    return log;
  }
  while (log.ops.length < o.ops) {
    const tree = await listTree(model, excludeSet);
    let batch: Op[] = [gen.next(tree)];
    if (o.concurrency && gen.rng.chance(0.3)) {
      const tops = new Set<string>();
      const targets = new Set<number>();
      const candidates: Op[] = [];
      for (let i = 0; i < 8 && candidates.length < 4; i++) {
        const op = i === 0 ? batch[0]! : gen.next(tree);
        if (!CONCURRENT_SAFE.has(op.op)) continue;
        const top = topOf(op.path, base);
        if (!top || tops.has(top)) continue;
        const target = await plainTarget(model, op.path);
        if (target === null || (target !== 0 && targets.has(target))) continue;
        tops.add(top);
        if (target !== 0) targets.add(target);
        candidates.push(op);
      }
      if (candidates.length > 1) batch = candidates;
    }
    await step(batch);
  }
  await compareWithModel(target, log, o);
  return log;

  async function step(batch: Op[]): Promise<void> {
    log.steps!.push(batch.length === 1 ? batch[0]! : batch);
    const got = await target.apply(batch, batch.length > 1);
    for (let i = 0; i < batch.length; i++) {
      let op = batch[i]!;
      const actual = got.outcomes[i]!;
      const short = got.shortWrites[i] ?? null;
      if (o.allowEnospc && actual === 'ENOSPC' && ALLOCATING.has(op.op)) {
        // The target ran out of space: the op must have changed nothing (checked by the
        // manifests), except unlinkopen, whose unlink came before the failing write.
        if (op.op === 'unlinkopen') {
          const unlinked = await driver.apply({ op: 'unlink', path: op.path });
          if (unlinked !== 'ok')
            throw mismatch(`seed ${o.seed}: unlinkopen of ${op.path} hit ENOSPC but the model cannot unlink it (${unlinked})`);
        }
        log.ops.push(op);
        log.outcomes.push(actual);
        log.enospc++;
        continue;
      }
      if (o.allowEnospc && short !== null && op.op === 'write') op = { ...op, length: short };
      const expected = await driver.apply(op);
      log.ops.push(op);
      log.outcomes.push(actual);
      if (expected.startsWith('STALE'))
        throw new Error(`seed ${o.seed}: the model itself broke a lifetime rule: ${expected} (${describe(op)})`);
      if (expected !== actual) {
        throw mismatch(
          `seed ${o.seed}, op #${log.ops.length - 1} on ${target.label}: ${describe(op)}\n` +
            `  model says ${expected}, ${target.label} says ${actual}` +
            (batch.length > 1 ? ` (in a concurrent batch of ${batch.length})` : ''),
        );
      }
    }
  }
}

/**
 * Smallest step list (greedy chunk removal; a concurrent batch stays one
 * step) that still fails on fresh targets from `fresh()`; `fresh` returns the
 * target and a cleanup. For reports.
 */
export async function shrinkFailure(
  fresh: () => Promise<{ target: Target; done: () => Promise<void> }>,
  o: SequenceOptions,
  ops: Step[],
  budget = 300,
): Promise<{ ops: Step[]; error: string }> {
  const fails = async (candidate: Step[]): Promise<string | null> => {
    const { target, done } = await fresh();
    try {
      await runSequence(target, { ...o, replay: candidate });
      return null;
    } catch (e) {
      return String(e);
    } finally {
      await done();
    }
  };
  let best = ops;
  let error = (await fails(best)) ?? '';
  if (!error) return { ops, error: 'did not fail when replayed (a timing-dependent failure)' };
  let chunk = Math.max(1, Math.floor(best.length / 2));
  let tries = 0;
  while (chunk >= 1 && tries < budget) {
    let removed = false;
    for (let i = 0; i + chunk <= best.length && tries < budget;) {
      const candidate = [...best.slice(0, i), ...best.slice(i + chunk)];
      tries++;
      const e = await fails(candidate);
      if (e) {
        best = candidate;
        error = e;
        removed = true;
      } else {
        i += chunk;
      }
    }
    if (!removed) chunk = Math.floor(chunk / 2);
  }
  return { ops: best, error };
}

/** Compares the target's manifest and links with the model's (MTIME only where the model knows it). */
export async function compareWithModel(
  target: Target,
  log: SequenceLog,
  o: { seed: number; exclude?: string[] },
  when = 'after the sequence',
): Promise<void> {
  const entries = await walkManifest(log.model, { exclude: o.exclude ?? [] });
  const known = new Set(entries.filter((e) => log.model.mtimeKnown(e.id)).map((e) => pathField(e.line)));
  const mask = (line: string) => (known.has(pathField(line)) ? line : maskMtime(line));
  const want = { lines: entries.map((e) => mask(e.line)), links: linkLines(entries) };
  const raw = await target.snapshot();
  const ex = new Set((o.exclude ?? []).map((p) => escapeBytes(Buffer.from(p))));
  const keep = (line: string) => {
    const p = pathField(line);
    for (const e of ex) if (p === e || p.startsWith(e + '/')) return false;
    return true;
  };
  const got = { lines: raw.lines.filter(keep).map(mask), links: raw.links.filter(keep) };
  const d1 = diffLines(want.lines, got.lines);
  const d2 = diffLines(want.links, got.links);
  if (d1 || d2) {
    const m = new SequenceMismatch(
      `seed ${o.seed}: ${target.label} differs from the model ${when} (- model, + ${target.label})\n${d1}\n${d2 ? 'links:\n' + d2 : ''}`,
    );
    m.ops = [...log.ops];
    m.steps = [...(log.steps ?? log.ops)];
    throw m;
  }
}

/** The unescaped-enough PATH field of a manifest line (escaped form; used only as a key). */
function pathField(line: string): string {
  const i = line.indexOf('\t');
  return line.slice(0, i);
}

export function formatOps(ops: Op[], outcomes: Outcome[]): string {
  return ops.map((op, i) => `${i}\t${outcomes[i]}\t${JSON.stringify(op)}`).join('\n');
}
