import type { Command } from 'commander';

/** `sifuse sif ...`: siftool-compatible commands (filled in by the SIF work). */
export function registerSifCommands(program: Command): void {
  program.command('sif').description('Inspect and edit SIF images (siftool-compatible)');
}
