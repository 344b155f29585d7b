/**
 * Mounting through the real CLI in child processes (never in the test
 * runner's own thread: a synchronous call on a mount served by this process
 * would deadlock). Every mount made here is detached in `cleanup`, even
 * when a test fails.
 */
import { existsSync, readFileSync } from 'node:fs';
import { execa } from 'execa';
import { runSifuse, type SifuseResult } from '../tools/helpers.js';

const live = new Set<string>();

export function fuseAvailable(): string | null {
  if (!existsSync('/dev/fuse')) return '/dev/fuse is missing';
  return null;
}

export function isMounted(mnt: string): boolean {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .some((line) => line.split(' ')[1] === mnt);
}

/** `sifuse mount ARGS` (background daemon, messages to LOG); throws with its one line on failure. */
export async function mount(args: string[], log: string): Promise<void> {
  const mnt = args[args.length - 1]!;
  const r = await runSifuse(['mount', '--log', log, ...args], { timeoutMs: 60_000 });
  if (r.exitCode !== 0) throw new Error(`sifuse mount ${args.join(' ')}: ${r.stderr.trim()}\n${logTail(log)}`);
  live.add(mnt);
}

export async function umount(mnt: string): Promise<SifuseResult> {
  const r = await runSifuse(['umount', mnt], { timeoutMs: 150_000 });
  if (r.exitCode === 0) live.delete(mnt);
  return r;
}

/** Resolves once process `pid` is gone; throws after 30 s. */
export async function waitGone(pid: number): Promise<void> {
  for (let i = 0; i < 600; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`daemon ${pid} did not exit`);
}

export function logTail(log: string): string {
  return existsSync(log) ? readFileSync(log, 'utf8').split('\n').slice(-20).join('\n') : '';
}

/** Detaches whatever a failed test left mounted. */
export async function cleanup(): Promise<void> {
  for (const mnt of [...live]) {
    if (isMounted(mnt)) await execa('fusermount3', ['-uz', mnt], { reject: false });
    live.delete(mnt);
  }
}

export function sh(script: string, options: { cwd?: string; user?: string } = {}) {
  const argv = options.user ? ['runuser', '-u', options.user, '--', 'sh', '-ec', script] : ['sh', '-ec', script];
  return execa(argv[0]!, argv.slice(1), { cwd: options.cwd, reject: false, timeout: 600_000 });
}
