/**
 * `sifuse build OUT.sif DIR|TARBALL`: a SIF from a root filesystem directory
 * or a tarball of one, the way `apptainer build` lays it out
 * (reference/sif-and-apptainer.md A): Apptainer's launch-script line, an
 * optional Deffile object and a Labels object (JSON), then the root
 * filesystem as a SquashFS primary system partition (group 1, the host's
 * architecture). The SquashFS is made by `mksquashfs` (squashfs-tools);
 * a tarball is unpacked with `tar` first.
 *
 * Everything is built in a hidden temporary directory next to OUT and
 * renamed into place only when complete, so a failure or Ctrl-C leaves
 * nothing behind and never touches an existing OUT without --force.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import { execa } from 'execa';
import { UsageError } from '../errors.js';
import { DataType, FsType, PartType, SifImage } from '../sif/index.js';
import { hostGoArch } from '../sif/types.js';

/** What `apptainer build` writes as the SIF launch script. */
export const LAUNCH_SCRIPT = '#!/usr/bin/env run-singularity\n';

export interface BuildOptions {
  /** A definition file stored as the Deffile object. */
  deffile?: string;
  /** Labels stored as the Labels object, JSON as Apptainer's org.label-schema/... map. */
  labels?: Record<string, string>;
  /** Keep the source's owners (default: everything owned by root, as a container expects). */
  keepOwners?: boolean;
  /** mksquashfs compressor (default gzip, Apptainer's default). */
  compression?: string;
  /** Replace an existing OUT. */
  force?: boolean;
  /** Show mksquashfs's progress bar (default: when stderr is a terminal). */
  progress?: boolean;
}

async function requireTool(tool: string, pkg: string, out: string): Promise<void> {
  const r = await execa(tool, ['-version'], { reject: false });
  if ((r as { code?: string }).code === 'ENOENT' || r.exitCode === 127) {
    throw new UsageError(`${tool} is not installed (Debian/Ubuntu: apt-get install ${pkg})`, out);
  }
}

function oneLine(text: string): string {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  return lines[lines.length - 1] ?? 'failed';
}

export async function buildSif(out: string, source: string, opts: BuildOptions = {}): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.statSync(source);
  } catch {
    throw new UsageError('no such file or directory', source);
  }
  if (!st.isDirectory() && !st.isFile()) throw new UsageError('not a directory or a tarball', source);
  if (!opts.force && (fs.existsSync(out) || isLink(out))) {
    throw new UsageError('already exists (use --force to replace it)', out);
  }
  const deffile = opts.deffile === undefined ? null : readInput(opts.deffile);
  await requireTool('mksquashfs', 'squashfs-tools', out);

  const tmp = path.join(path.dirname(path.resolve(out)), `.${path.basename(out)}.${randomBytes(4).toString('hex')}.build`);
  const onSignal = (sig: NodeJS.Signals) => {
    fs.rmSync(tmp, { recursive: true, force: true });
    process.kill(process.pid, sig);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    fs.mkdirSync(tmp, { mode: 0o700 });
    let rootfs = source;
    if (st.isFile()) {
      rootfs = path.join(tmp, 'rootfs');
      fs.mkdirSync(rootfs);
      // As the user: owners come from -all-root below; device nodes need root to unpack.
      const r = await execa('tar', ['-xf', path.resolve(source), '-C', rootfs, '--no-same-owner', '--delay-directory-restore'], {
        reject: false,
      });
      if (r.exitCode !== 0) throw new UsageError(`cannot unpack the tarball: ${oneLine(r.stderr)}`, source);
    }
    const sqfs = path.join(tmp, 'rootfs.squashfs');
    const progress = opts.progress ?? process.stderr.isTTY === true;
    const args = [rootfs, sqfs, '-noappend', '-comp', opts.compression ?? 'gzip'];
    if (!opts.keepOwners) args.push('-all-root');
    args.push(progress ? '-progress' : '-no-progress');
    if (!progress) args.push('-quiet');
    const r = await execa('mksquashfs', args, {
      reject: false,
      stdout: progress ? ['inherit'] : 'pipe',
      stderr: 'pipe',
    });
    if (r.exitCode !== 0) throw new UsageError(`mksquashfs failed: ${oneLine(r.stderr || String(r.stdout ?? ''))}`, source);

    const tmpSif = path.join(tmp, 'image.sif');
    const sif = await SifImage.create(tmpSif, { launchScript: LAUNCH_SCRIPT });
    try {
      if (deffile) await sif.add({ dataType: DataType.Deffile, data: deffile, groupId: 1 });
      if (opts.labels && Object.keys(opts.labels).length > 0) {
        await sif.add({ dataType: DataType.Labels, data: Buffer.from(JSON.stringify(opts.labels, null, '\t')), groupId: 1 });
      }
      await sif.add({
        dataType: DataType.Partition,
        data: { path: sqfs },
        groupId: 1,
        partition: { fsType: FsType.Squash, partType: PartType.PrimSys, arch: hostGoArch() },
      });
    } finally {
      await sif.close();
    }
    fs.chmodSync(tmpSif, 0o755);
    fs.renameSync(tmpSif, out);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e && typeof e.code === 'string' && !(err instanceof UsageError)) {
      throw new UsageError(`cannot build the image: ${e.message.replace(tmp, path.dirname(out))}`, out);
    }
    throw err;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
}

function readInput(file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new UsageError(`cannot read: ${(err as Error).message.replace(/^\w+: /, '')}`, file);
  }
}

function isLink(p: string): boolean {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

function collectLabel(value: string, previous: Record<string, string>): Record<string, string> {
  const at = value.indexOf('=');
  if (at <= 0) throw new UsageError(`--label ${value}: expected KEY=VALUE`);
  return { ...previous, [value.slice(0, at)]: value.slice(at + 1) };
}

interface BuildFlags {
  deffile?: string;
  label: Record<string, string>;
  keepOwners?: boolean;
  comp: string;
  force?: boolean;
}

export function registerBuildCommand(program: Command): void {
  program
    .command('build')
    .description('build a SIF from a root filesystem directory or tarball (SquashFS made by mksquashfs)')
    .argument('<out>', 'the SIF to write')
    .argument('<source>', 'a root filesystem directory, or a tarball of one')
    .option('--deffile <file>', 'store FILE as the image definition (Deffile object)')
    .option('--label <key=value>', 'add a label (repeatable)', collectLabel, {} as Record<string, string>)
    .option('--keep-owners', "keep the source's file owners (default: all owned by root)")
    .option('--comp <name>', 'mksquashfs compressor: gzip, xz, zstd, lz4, lzo', 'gzip')
    .option('-F, --force', 'replace OUT if it exists')
    .action(async (out: string, source: string, flags: BuildFlags) => {
      await buildSif(out, source, {
        deffile: flags.deffile,
        labels: flags.label,
        keepOwners: flags.keepOwners ?? false,
        compression: flags.comp,
        force: flags.force ?? false,
      });
    });
}
