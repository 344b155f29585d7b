/**
 * The image helpers the ext3 tests share: mkfs.ext3 with explicit geometry,
 * `e2fsck -fn` (directly, or through a long-lived helper process), kernel
 * loop mounts.
 */
import { loopMountSync, unmountSync } from '../tools/loop.js';
import { execa } from 'execa';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { TOOLS } from '../conformance/harness.js';

export interface MkfsOptions {
  blockSize: 1024 | 2048 | 4096;
  inodeSize: 128 | 256;
  sizeKiB: number;
  /** Inode count (-N), for inode-exhaustion images. */
  inodes?: number;
  /** Source tree (-d). */
  source?: string;
  extra?: string[];
}

export async function mkfsExt3(image: string, o: MkfsOptions): Promise<void> {
  const args = ['-q', '-F', '-b', String(o.blockSize), '-I', String(o.inodeSize)];
  if (o.inodes) args.push('-N', String(o.inodes));
  if (o.source) args.push('-d', o.source);
  args.push(...(o.extra ?? []), image, `${o.sizeKiB}k`);
  await execa('mkfs.ext3', args);
}

/**
 * `e2fsck -fn`: clean means exit 0 and no journal left to recover (e2fsck -n
 * skips recovery with only a warning and still exits 0, so an image closed
 * without clearing needs_recovery would otherwise pass). The output is
 * returned for messages.
 */
export async function fsck(image: string): Promise<{ clean: boolean; output: string }> {
  const r = await execa('e2fsck', ['-fn', image], { reject: false, all: true });
  return fsckVerdict(r.exitCode, r.all ?? '');
}

function fsckVerdict(code: number | undefined, output: string): { clean: boolean; output: string } {
  return { clean: code === 0 && !/skipping journal recovery/.test(output), output };
}

/**
 * `fsck()` through a long-lived helper (test/tools/ext3-fsck-server.py) that
 * spawns e2fsck itself: same command, same verdict, without forking the big
 * test process once per image. Requests are answered in order.
 */
export class FsckServer {
  private proc: ChildProcessWithoutNullStreams;
  private lines: Interface;
  private pending: { resolve: (line: string) => void; reject: (e: Error) => void }[] = [];
  private stderr = '';

  constructor() {
    this.proc = spawn('python3', [join(TOOLS, 'ext3-fsck-server.py')], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stderr.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.lines = createInterface({ input: this.proc.stdout });
    this.lines.on('line', (l) => this.pending.shift()?.resolve(l));
    this.proc.on('exit', () => {
      for (const p of this.pending.splice(0)) p.reject(new Error(`e2fsck helper exited: ${this.stderr}`));
    });
  }

  check(image: string): Promise<{ clean: boolean; output: string }> {
    return new Promise((resolve, reject) => {
      if (this.proc.exitCode !== null) return reject(new Error(`e2fsck helper exited: ${this.stderr}`));
      this.pending.push({
        resolve: (l) => {
          const r = JSON.parse(l) as { code: number; output: string };
          resolve(fsckVerdict(r.code, r.output));
        },
        reject,
      });
      this.proc.stdin.write(JSON.stringify({ image }) + '\n');
    });
  }

  async close(): Promise<void> {
    if (this.proc.exitCode === null) {
      const exited = new Promise((r) => this.proc.once('exit', r));
      this.proc.stdin.end();
      await exited;
    }
  }
}

/** A kernel mount of an ext3 image on a fresh loop device (see test/tools/loop.ts for why not -o loop). */
export async function loopMount(image: string, mountpoint: string): Promise<void> {
  loopMountSync(image, mountpoint, { type: 'ext3', options: ['nodev'] });
}

export async function unmount(mountpoint: string): Promise<void> {
  unmountSync(mountpoint);
}
