/**
 * Serving one mount: the FUSE session, the adapter, the INIT options, and a
 * clean end. The end comes from the kernel (umount, `fusermount3 -u`, an
 * aborted connection: the session reports `exit`) or from a signal (SIGINT,
 * SIGTERM, SIGHUP: the mount is detached). Either way: stop reading
 * requests, let in-flight ones finish, unmount, then close the engine (which
 * flushes and commits its journal), then print --stats.
 */
import { statSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { setFlagsFromString } from 'node:v8';
import type { ReadableFs } from '../engine.js';
import { FuseSession, fuseCap, type FuseRequest } from '../native/fuse.js';
import { FuseAdapter } from './adapter.js';

export interface ServeOptions {
  fs: ReadableFs;
  mountpoint: string;
  /** fsname in /proc/mounts: the image. */
  fsname: string;
  /** Extra kernel mount options (-o), already checked. */
  mountOptions?: string[];
  debug?: boolean;
  stats?: boolean;
  /** Called once the kernel has sent INIT: the mount answers. */
  onReady?(): void;
  /** Everything the daemon says (stderr by default). */
  log?(line: string): void;
}

/** Kernel caches may live this long (seconds): the daemon is the only writer. */
const CACHE_TIMEOUT = 3600;
/** FUSE requests up to 1 MiB (max_pages 256). */
const MAX_WRITE = 1 << 20;

/** libfuse option values are separated by commas; a literal comma or backslash is escaped with a backslash. */
export function escapeOption(v: string): string {
  return v.replace(/[\\,]/g, (c) => `\\${c}`);
}

/**
 * A mount point left dead by a killed daemon answers ENOTCONN: detach it so
 * the new mount can take its place.
 */
export function clearDeadMount(mountpoint: string): void {
  try {
    statSync(mountpoint);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOTCONN') return;
    try {
      execFileSync('fusermount3', ['-uz', mountpoint], { stdio: 'ignore' });
    } catch {
      // Root without fusermount3 rights on it: the kernel's umount does the same.
      execFileSync('umount', ['-l', mountpoint], { stdio: 'ignore' });
    }
  }
}

class Stats {
  private readonly count = new Map<string, number>();
  private readonly micros = new Map<string, number>();
  private cpu0 = process.cpuUsage();
  private total = 0;

  /** Starts counting afresh (SIGUSR2: one report per workload on one mount). */
  reset(): void {
    this.count.clear();
    this.micros.clear();
    this.cpu0 = process.cpuUsage();
    this.total = 0;
  }

  record(op: string, us: number): void {
    this.total++;
    this.count.set(op, (this.count.get(op) ?? 0) + 1);
    this.micros.set(op, (this.micros.get(op) ?? 0) + us);
  }

  report(): string {
    const cpu = process.cpuUsage(this.cpu0);
    const cpuUs = cpu.user + cpu.system;
    const lines = [
      `sifuse stats: ${this.total} requests, daemon CPU ${(cpuUs / 1000).toFixed(1)} ms` +
        (this.total ? `, ${(cpuUs / this.total).toFixed(1)} us/request` : ''),
    ];
    const ops = [...this.count.entries()].sort((a, b) => b[1] - a[1]);
    for (const [op, n] of ops) {
      lines.push(`  ${op.padEnd(12)} ${String(n).padStart(9)}  mean ${((this.micros.get(op) ?? 0) / n).toFixed(1)} us`);
    }
    return lines.join('\n');
  }
}

/*
 * A daemon is a fresh process whose request path gets optimized while the
 * first workload runs, so TurboFan's compile time is part of that
 * workload's cost: a quarter of the daemon's CPU over an untar (perf), much
 * of it on the ext3 write path's large async functions, several of them
 * compiled more than once. V8 inlines callees up to 920 bytes of bytecode
 * per function by default; with 200 the optimized code runs as fast on the
 * replayed untar (bench/adapter-untar.mjs, warm JIT) and a cold run costs
 * 10-20% less CPU. Set before the first request, so every optimization of
 * the request path sees it (flags read at compile time; Node leaves V8's
 * flags unfrozen for v8.setFlagsFromString).
 */
const DAEMON_V8_FLAGS = '--max-inlined-bytecode-size-cumulative=200';
/*
 * bin/launch.cjs raises V8's interrupt budget 4x for every sifuse process,
 * measured on the write path (copy-up: TurboFan compiling the ext3 engine's
 * large async functions). A read-only daemon's request path is a few small
 * functions run thousands of times, and optimizing them early pays: with
 * V8's default budget back, a cold walk after the mount-time read-ahead
 * costs the daemon's main thread ~57 instead of ~75-85 ms (bench walk,
 * interleaved runs), imports within noise.
 */
const READ_ONLY_V8_FLAGS = '--interrupt-budget=67584';

/** Mounts `fs` and serves it until the mount ends; resolves after the engine is closed. */
export function serve(o: ServeOptions): Promise<void> {
  setFlagsFromString(DAEMON_V8_FLAGS);
  if (!o.fs.writable) setFlagsFromString(READ_ONLY_V8_FLAGS);
  const log = o.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const stats = o.stats ? new Stats() : null;
  let live: FuseSession | null = null;
  // Attributes only (negative offset): safe while serving a request on the node.
  const adapter = new FuseAdapter(o.fs, {
    log,
    noOpenCaps: fuseCap('NO_OPEN_SUPPORT') | fuseCap('NO_OPENDIR_SUPPORT'),
    invalidateAttr: (nodeid) => live?.invalInode(nodeid, -1, 0),
  });
  const opts = [`fsname=${escapeOption(o.fsname)}`, 'subtype=sifuse', 'default_permissions'];
  if (!o.fs.writable) opts.push('ro');
  opts.push(...(o.mountOptions ?? []));
  clearDeadMount(o.mountpoint);

  return new Promise<void>((resolve, reject) => {
    let ready = false;
    let stopping = false;
    const init = adapter.init.bind(adapter);
    adapter.init = (major: number, minor: number, want: number, capable: number, maxWrite: number) => {
      init(major, minor, want, capable, maxWrite);
      if (o.debug)
        log(
          `sifuse: INIT protocol ${major}.${minor}, want 0x${want.toString(16)} of capable 0x${capable.toString(16)}, max_write ${maxWrite}`,
        );
      ready = true;
      o.onReady?.();
      void adapter.warm();
    };
    const session = FuseSession.mount(o.mountpoint, adapter, {
      args: ['-o', opts.join(',')],
      entryTimeout: CACHE_TIMEOUT,
      attrTimeout: CACHE_TIMEOUT,
      negativeTimeout: CACHE_TIMEOUT,
      maxWrite: MAX_WRITE,
      wantSet:
        fuseCap('ASYNC_READ') |
        fuseCap('PARALLEL_DIROPS') |
        fuseCap('READDIRPLUS') |
        fuseCap('ATOMIC_O_TRUNC') |
        fuseCap('CACHE_SYMLINKS') |
        fuseCap('HANDLE_KILLPRIV_V2'),
      // KILLPRIV_V2 (added to INIT by fuse.c): no GETXATTR security.capability
      // before buffered writes, no GETATTR before each chown; the adapter
      // clears set-id bits and file capabilities itself.
      // Always READDIRPLUS (one request per page, no LOOKUP per entry).
      // No writeback cache: measured on untar it halves WRITE requests but
      // adds a FLUSH and a SETATTR (mtime flush) per file, no daemon CPU
      // gained, and ENOSPC would reach the writer at close(2), not write(2);
      // write-only opens go direct_io instead (adapter.ts). No POSIX ACLs
      // (mode checks only). HANDLE_KILLPRIV: libfuse 3.14 never passes it to
      // the kernel, whatever `want` says.
      wantClear: fuseCap('READDIRPLUS_AUTO') | fuseCap('WRITEBACK_CACHE') | fuseCap('POSIX_ACL') | fuseCap('HANDLE_KILLPRIV'),
      onDone:
        !stats && !o.debug
          ? undefined
          : (r: FuseRequest, errno: number) => {
              const us = Number(process.hrtime.bigint() - r.started) / 1000;
              stats?.record(r.op, us);
              if (o.debug) log(`${r.op} pid=${r.pid} uid=${r.uid} ${errno ? `-> errno ${errno}` : 'ok'} ${us.toFixed(0)} us`);
            },
      onBug: (m: string) => log(`sifuse: internal error in FUSE op ${m}`),
    });
    live = session;

    const stop = async (why: string): Promise<void> => {
      if (stopping) return;
      stopping = true;
      if (o.debug) log(`sifuse: stopping (${why})`);
      for (const sig of SIGNALS) process.off(sig, onSignal);
      process.off('SIGUSR2', onStats);
      session.pause();
      await session.drained();
      await adapter.quiesce();
      session.unmount();
      try {
        await o.fs.close();
      } catch (err) {
        reject(err);
        return;
      } finally {
        if (stats) log(stats.report());
      }
      resolve();
    };
    const onSignal = (sig: NodeJS.Signals): void => void stop(sig);
    adapter.onExit(() => void stop(ready ? 'unmounted' : 'connection closed before INIT'));
    for (const sig of SIGNALS) process.on(sig, onSignal);
    // --stats: SIGUSR2 prints the counts so far and starts again (bench/mounts.mjs, per workload).
    const onStats = (): void => {
      if (!stats) return;
      log(stats.report());
      stats.reset();
    };
    if (stats) process.on('SIGUSR2', onStats);
  });
}

const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
