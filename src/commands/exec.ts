/**
 * `sifuse exec|run|shell`: the container commands of
 * reference/persistent-overlays.rst, with Apptainer's flags. Options end at
 * the image: everything after it belongs to the command (`sifuse exec
 * img.sif ls -l`).
 */
import { type Command, InvalidArgumentError } from 'commander';
import { UsageError } from '../errors.js';
import { runContainer, type Action, type ContainerOptions } from '../runtime/container.js';

interface Flags {
  overlay: string[];
  writable?: boolean;
  writableTmpfs?: string | boolean;
  fakeroot?: boolean;
  bind: string[];
  contain?: boolean;
  env: string[];
  pwd?: string;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function envPair(value: string, previous: string[]): string[] {
  if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(value))
    throw new InvalidArgumentError(`expected NAME=VALUE, got ${JSON.stringify(value)}`);
  return [...previous, value];
}

export function containerOptions(f: Flags): ContainerOptions {
  let tmpfs: number | undefined;
  if (f.writableTmpfs !== undefined && f.writableTmpfs !== false) {
    tmpfs = f.writableTmpfs === true ? 64 : Number(f.writableTmpfs);
    if (!Number.isSafeInteger(tmpfs) || tmpfs < 1)
      throw new UsageError(`--writable-tmpfs=${String(f.writableTmpfs)}: expected a size in MiB`);
  }
  return {
    overlays: f.overlay,
    writable: f.writable ?? false,
    writableTmpfs: tmpfs,
    fakeroot: f.fakeroot ?? false,
    binds: f.bind,
    contain: f.contain ?? false,
    env: f.env,
    pwd: f.pwd,
  };
}

function withContainerFlags(cmd: Command): Command {
  return cmd
    .option(
      '-o, --overlay <path[:ro]>',
      'an overlay: ext3 image, SquashFS image or directory (repeatable; the last is on top)',
      collect,
      [] as string[],
    )
    .option('-w, --writable', "write into the SIF's own overlay partition")
    .option('--writable-tmpfs [MiB]', 'a writable layer in memory, discarded at exit (default 64 MiB)')
    .option('-f, --fakeroot', 'be root (uid/gid 0) inside; files you create are stored as 0:0')
    .option('-B, --bind <src[:dst[:ro]]>', 'bind a host path into the container (repeatable)', collect, [] as string[])
    .option('-c, --contain', 'bind nothing from the host but /proc, /dev and a private /tmp')
    .option('--env <NAME=VALUE>', 'set an environment variable inside (repeatable)', envPair, [] as string[])
    .option('--pwd <dir>', 'working directory inside the container')
    .passThroughOptions();
}

async function act(image: string, action: Action, flags: Flags): Promise<void> {
  process.exitCode = await runContainer(image, action, containerOptions(flags));
}

export function registerInstanceCommands(program: Command): void {
  program.enablePositionalOptions();
  const instance = program.command('instance').description('named, long-running containers (start, list, stop)');
  withContainerFlags(
    instance
      .command('start')
      .description('start a named instance: the mount, and /.singularity.d/startscript if the image has one'),
  )
    .argument('<image>', 'the SIF')
    .argument('<name>', 'the instance name')
    .argument('[args...]', 'arguments for the startscript')
    .action(async (image: string, name: string, args: string[], flags: Flags) => {
      const { startInstance } = await import('../runtime/instance.js');
      await startInstance(image, name, args, containerOptions(flags));
    });
  instance
    .command('list')
    .description('list running instances (crashed ones are cleaned up)')
    .option('--json', 'as JSON')
    .action(async (flags: { json?: boolean }) => {
      const { listInstances } = await import('../runtime/instance.js');
      const all = await listInstances();
      if (flags.json) {
        process.stdout.write(
          JSON.stringify(
            { instances: all.map((s) => ({ instance: s.name, pid: s.daemon, img: s.image, mountpoint: s.mountpoint })) },
            null,
            2,
          ) + '\n',
        );
        return;
      }
      const rows = [['INSTANCE NAME', 'PID', 'IMAGE'], ...all.map((s) => [s.name, String(s.daemon), s.image])];
      for (const r of rows) process.stdout.write(`${r[0]!.padEnd(16)} ${r[1]!.padEnd(8)} ${r[2]}\n`);
    });
  instance
    .command('stop')
    .description('stop an instance: end its processes, unmount (committing the overlay)')
    .argument('[name]', 'the instance name')
    .option('-a, --all', 'stop every instance')
    .action(async (name: string | undefined, flags: { all?: boolean }) => {
      const { listInstances, stopInstance } = await import('../runtime/instance.js');
      if (flags.all) {
        for (const s of await listInstances()) await stopInstance(s.name);
        return;
      }
      if (!name) throw new UsageError('name an instance, or use --all');
      await stopInstance(name);
    });
}

export function registerContainerCommands(program: Command): void {
  program.enablePositionalOptions();
  withContainerFlags(program.command('exec').description('run a command in the container'))
    .argument('<image>', 'the SIF, or instance://NAME')
    .argument('<command...>', 'the command and its arguments')
    .action((image: string, argv: string[], flags: Flags) => act(image, { kind: 'exec', argv }, flags));
  withContainerFlags(program.command('run').description("run the container's runscript"))
    .argument('<image>', 'the SIF')
    .argument('[args...]', 'arguments for the runscript')
    .action((image: string, args: string[], flags: Flags) => act(image, { kind: 'run', args }, flags));
  withContainerFlags(program.command('shell').description('an interactive shell in the container'))
    .option('-s, --shell <path>', 'the shell to run inside (default /bin/bash, else /bin/sh)')
    .argument('<image>', 'the SIF')
    .action((image: string, flags: Flags & { shell?: string }) => act(image, { kind: 'shell', shell: flags.shell }, flags));
}
