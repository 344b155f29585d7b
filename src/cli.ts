#!/usr/bin/env node
/**
 * Command-line wiring only: each command group lives in src/commands/ and
 * registers itself here. Every failure ends as one line on stderr naming the
 * file and the problem, and a non-zero exit; stack traces only with
 * SIFUSE_DEBUG=1.
 */
import { Command, CommanderError } from 'commander';
import { FsError, isFileProblem } from './errors.js';
import { registerSifCommands } from './commands/sif.js';
import { registerInspectCommands } from './commands/inspect.js';
import { registerOverlayCommands } from './commands/overlay.js';
import { registerMountCommands } from './commands/mount.js';
import { registerBuildCommand } from './commands/build.js';
import { registerContainerCommands } from './commands/exec.js';
import { registerDemoCommand } from './commands/demo.js';

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('sifuse')
    .description('Persistent, writable overlays on read-only SIF container images, without root')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  registerSifCommands(program);
  registerInspectCommands(program);
  registerOverlayCommands(program);
  registerMountCommands(program);
  registerBuildCommand(program);
  registerContainerCommands(program);
  registerDemoCommand(program);
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

async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander has already printed its message (help, version, usage errors).
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
