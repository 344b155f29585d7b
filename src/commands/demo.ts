/**
 * `sifuse demo` (also `npm run demo`): the walkthrough of
 * reference/persistent-overlays.rst, run for real with no network and no
 * root. It builds a small SIF from a root filesystem assembled from the
 * host's own programs, creates an overlay image, and shows, step by step,
 * each command a user would type and what it printed: changes persist in
 * the overlay, are gone without it, are discarded with --writable-tmpfs,
 * and live inside the SIF with an embedded overlay and --writable. Each
 * step checks what it shows; the demo fails (exit 1) if one does not.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { execa } from 'execa';
import { UsageError } from '../errors.js';
import { assembleHostRootfs } from '../runtime/host-rootfs.js';

const SIFUSE_BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'sifuse');

interface Step {
  say: string;
  args: string[];
  /** What the output (stdout + stderr) must contain, or a status it must end with. */
  expect: { output?: string; fails?: boolean };
}

function shellQuote(a: string): string {
  return /^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`;
}

export async function runDemo(workdir: string, out: (s: string) => void = (s) => process.stdout.write(s)): Promise<void> {
  const root = path.join(workdir, 'rootfs');
  fs.mkdirSync(root, { recursive: true });
  out(`Building a small root filesystem from this host's programs in ${root}\n`);
  await assembleHostRootfs(root, {
    files: {
      '/.singularity.d/runscript': { content: '#!/bin/sh\necho "Hello from the demo container: $*"\n', mode: 0o755 },
      '/.singularity.d/env/90-environment.sh': { content: 'export PS1="sifuse> "\n' },
      '/etc/os-release': { content: 'NAME="sifuse demo"\n' },
    },
  });
  const sif = 'demo.sif';
  const steps: Step[] = [
    {
      say: 'Build a SIF from that directory (SquashFS inside, as apptainer build makes)',
      args: ['build', sif, 'rootfs'],
      expect: {},
    },
    { say: 'Run its runscript', args: ['run', sif, 'world'], expect: { output: 'Hello from the demo container: world' } },
    {
      say: 'Create a 64 MiB persistent overlay image (ext3, no mkfs.ext3 needed)',
      args: ['overlay', 'create', '--sparse', 'overlay.img'],
      expect: {},
    },
    {
      say: 'Write into the container through the overlay',
      args: [
        'exec',
        '--overlay',
        'overlay.img',
        sif,
        'sh',
        '-c',
        'mkdir -p /data && echo "kept across runs" > /data/note && ls -l /data',
      ],
      expect: { output: 'note' },
    },
    {
      say: 'A new run with the same overlay: the change persisted',
      args: ['exec', '--overlay', 'overlay.img', sif, 'cat', '/data/note'],
      expect: { output: 'kept across runs' },
    },
    {
      say: 'Without the overlay the image is untouched',
      args: ['exec', sif, 'ls', '/data'],
      expect: { output: 'No such file or directory', fails: true },
    },
    {
      say: '--writable-tmpfs: writable for one run, in memory',
      args: ['exec', '--writable-tmpfs', sif, 'sh', '-c', 'echo scratch > /scratch && cat /scratch'],
      expect: { output: 'scratch' },
    },
    {
      say: '... and discarded when the run ends',
      args: ['exec', '--writable-tmpfs', sif, 'ls', '/scratch'],
      expect: { output: 'No such file or directory', fails: true },
    },
    { say: 'Embed an overlay partition in the SIF itself', args: ['overlay', 'create', '--sparse', sif], expect: {} },
    {
      say: 'The SIF now holds its root filesystem and its overlay',
      args: ['sif', 'list', sif],
      expect: { output: 'FS (Ext3/Overlay/' },
    },
    {
      say: '--writable writes into the embedded overlay',
      args: ['exec', '--writable', sif, 'sh', '-c', 'echo "inside the SIF" > /embedded.txt'],
      expect: {},
    },
    {
      say: 'Later runs see it: the embedded overlay is a read-only layer by default',
      args: ['exec', sif, 'cat', '/embedded.txt'],
      expect: { output: 'inside the SIF' },
    },
  ];
  let n = 0;
  for (const step of steps) {
    n++;
    out(`\n${n}. ${step.say}\n   $ sifuse ${step.args.map(shellQuote).join(' ')}\n`);
    const r = await execa(SIFUSE_BIN, step.args, { cwd: workdir, reject: false, all: true, stdin: 'ignore' });
    const shown = (r.all ?? '').trimEnd();
    if (shown)
      out(
        shown
          .split('\n')
          .map((l) => `   ${l}`)
          .join('\n') + '\n',
      );
    const failed = r.exitCode !== 0;
    const ok =
      failed === (step.expect.fails ?? false) && (step.expect.output === undefined || shown.includes(step.expect.output));
    if (!ok) {
      throw new UsageError(
        `step ${n} did not show what it should (exit ${r.exitCode}${step.expect.output ? `, expected "${step.expect.output}"` : ''})`,
        'sifuse demo',
      );
    }
  }
  out(`\nAll ${steps.length} steps showed what they should. The files are in ${workdir}\n`);
}

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description(
      'walk through persistent overlays for real: build a SIF, overlay it, persist, discard, embed (no root, no network)',
    )
    .option('--dir <dir>', 'where to put the demo files (default: a new directory under the temporary directory)')
    .action(async (flags: { dir?: string }) => {
      const dir = flags.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'sifuse-demo-'));
      fs.mkdirSync(dir, { recursive: true });
      await runDemo(path.resolve(dir));
    });
}
