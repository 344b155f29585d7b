#!/usr/bin/env node
/**
 * Command-line wiring only: each command group lives in src/commands/ and
 * registers itself here. Every failure ends as one line on stderr naming the
 * file and the problem, and a non-zero exit; stack traces only with
 * SIFUSE_DEBUG=1.
 */
import * as fs from 'node:fs';
import { Command, CommanderError } from 'commander';
import { FsError, isFileProblem } from './errors.js';

type Register = (program: Command) => void;

/**
 * The command groups, each loaded only when its command is run (or for
 * --help and unknown commands, all of them): a `sifuse ls` start does not
 * evaluate the ext3 writer or the SIF editor. Keys are the top-level command
 * names each group registers.
 */
const GROUPS: ReadonlyArray<{ commands: readonly string[]; load: () => Promise<Register> }> = [
  { commands: ['sif'], load: async () => (await import('./commands/sif.js')).registerSifCommands },
  { commands: ['manifest', 'ls', 'cat'], load: async () => (await import('./commands/inspect.js')).registerInspectCommands },
  { commands: ['overlay'], load: async () => (await import('./commands/overlay.js')).registerOverlayCommands },
  { commands: ['mount', 'umount'], load: async () => (await import('./commands/mount.js')).registerMountCommands },
  { commands: ['build'], load: async () => (await import('./commands/build.js')).registerBuildCommand },
  { commands: ['exec', 'run', 'shell'], load: async () => (await import('./commands/exec.js')).registerContainerCommands },
  { commands: ['instance'], load: async () => (await import('./commands/exec.js')).registerInstanceCommands },
  { commands: ['demo'], load: async () => (await import('./commands/demo.js')).registerDemoCommand },
];

/** The program with the groups `argv` needs registered (all of them when `argv` is not given). */
export async function buildProgram(argv?: readonly string[]): Promise<Command> {
  const program = new Command();
  program
    .name('sifuse')
    .description('Persistent, writable overlays on read-only SIF container images, without root')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  const name = argv?.[2];
  const wanted = GROUPS.filter((g) => name !== undefined && g.commands.includes(name));
  for (const group of wanted.length > 0 ? wanted : GROUPS) (await group.load())(program);
  return program;
}

export function describeError(err: unknown): string {
  if (isFileProblem(err)) return err.describe();
  if (err instanceof FsError) return err.message;
  const e = err as NodeJS.ErrnoException;
  if (e && typeof e.code === 'string' && typeof e.message === 'string') {
    // Node system errors already read "ENOENT: no such file or directory, open 'x'".
    return e.message;
  }
  return `internal error: ${err instanceof Error ? err.message : String(err)}`;
}

/** Options of mount, exec, run, shell and instance start that take a value as the next argument. */
const VALUE_OPTIONS = new Set(['-o', '--overlay', '-B', '--bind', '--env', '--pwd', '-s', '--shell', '--log', '--ready-fd']);

/**
 * `--writable-tmpfs` takes an optional size written `--writable-tmpfs=MiB`;
 * given bare (Apptainer's form) it must not swallow the image that follows,
 * so it becomes `--writable-tmpfs=64` unless a size in digits follows it.
 * Only options before the first positional argument are looked at: what
 * comes after the image belongs to the command run in the container.
 */
export function normalizeTmpfsFlag(argv: readonly string[]): string[] {
  const out = [...argv];
  if (!['mount', 'exec', 'run', 'shell', 'instance'].includes(out[2] ?? '')) return out;
  for (let i = out[2] === 'instance' ? 4 : 3; i < out.length; i++) {
    const a = out[i]!;
    if (a === '--') break;
    if (a === '--writable-tmpfs' && !/^\d+$/.test(out[i + 1] ?? '')) {
      out[i] = '--writable-tmpfs=64';
      continue;
    }
    if (VALUE_OPTIONS.has(a)) {
      i++;
      continue;
    }
    if (!a.startsWith('-')) break;
  }
  return out;
}

/** The one-line answer a `mount -f --ready-fd N` daemon owes its caller, for failures before the command ran. */
function reportReady(argv: readonly string[], line: string): void {
  const at = argv.indexOf('--ready-fd');
  const fd = at > 0 && argv[2] === 'mount' ? Number(argv[at + 1]) : NaN;
  if (!Number.isInteger(fd) || fd < 3) return;
  try {
    fs.writeSync(fd, `${line}\n`);
    fs.closeSync(fd);
  } catch {
    // Nobody is waiting, or the command already answered and closed it.
  }
}

async function main(rawArgv: string[]): Promise<number> {
  const argv = normalizeTmpfsFlag(rawArgv);
  const program = await buildProgram(argv);
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander has already printed its message (help, version, usage errors);
      // a mount daemon's caller waits for it on the ready fd (bin/sifuse).
      if (err.exitCode !== 0) reportReady(argv, err.message.replace(/^error: /, ''));
      return err.exitCode;
    }
    if (process.env.SIFUSE_DEBUG) console.error(err);
    process.stderr.write(`sifuse: ${describeError(err)}\n`);
    return 1;
  }
}

// stdout may be a closed pipe (`sifuse sif dump ... | head`): exit quietly.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

// A command that ran another program (exec, run, shell) has set its exit status already.
main(process.argv).then((code) => {
  if (code !== 0 || process.exitCode === undefined) process.exitCode = code;
});
