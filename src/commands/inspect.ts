import { type Command, InvalidArgumentError } from 'commander';
import { fileTypeOf } from '../engine.js';
import { FsError, UsageError } from '../errors.js';
import { openImage } from '../image/index.js';
import { LineWriter, writeWithBackpressure } from '../io/write-stream.js';
import { lsLines } from '../inspect/ls.js';
import { writeManifest } from '../inspect/manifest.js';
import { normalizePath, resolvePath } from '../inspect/path.js';

/**
 * `sifuse manifest|ls|cat IMAGE [PATH]`: read a SIF, SquashFS or ext3 image
 * without mounting it. Paths inside the image are resolved as if it were the
 * root directory.
 */

function parsePartition(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 0xffffffff) {
    throw new InvalidArgumentError('expected a SIF descriptor id (a positive integer)');
  }
  return Number(value);
}

/** Turns "no such file" inside the image into "IMAGE: /x/y: no such file or directory". */
function inImage<T>(image: string, path: string, fn: () => Promise<T>): Promise<T> {
  return fn().catch((err: unknown) => {
    if (err instanceof FsError) {
      const what = err.message.replace(/^[A-Z0-9]+: /, '');
      throw new UsageError(`${normalizePath(path).toString()}: ${what}`, image);
    }
    throw err;
  });
}

interface CommonOptions {
  partition?: number;
}

export function registerInspectCommands(program: Command): void {
  program
    .command('manifest')
    .description('print one line per entry under PATH: path, type, mode, owner, size, mtime, sha256/target/device, xattrs')
    .argument('<image>', 'a .sif, SquashFS or ext3 image')
    .argument('[path]', 'path inside the image', '/')
    .option('--partition <id>', 'SIF descriptor id of the partition to read (default: the primary partition)', parsePartition)
    .action(async (image: string, path: string, opts: CommonOptions) => {
      const fs = await openImage(image, { partition: opts.partition });
      try {
        await inImage(image, path, () => writeManifest(fs, path, process.stdout));
      } finally {
        await fs.close();
      }
    });

  program
    .command('ls')
    .description('list a directory (or one entry) inside an image')
    .argument('<image>', 'a .sif, SquashFS or ext3 image')
    .argument('[path]', 'path inside the image', '/')
    .option('-l', 'long format: mode, links, uid, gid, size, mtime, name, link target')
    .option('-R', 'list subdirectories recursively')
    .option('--partition <id>', 'SIF descriptor id of the partition to read (default: the primary partition)', parsePartition)
    .action(async (image: string, path: string, opts: CommonOptions & { l?: boolean; R?: boolean }) => {
      const fs = await openImage(image, { partition: opts.partition });
      try {
        await inImage(image, path, async () => {
          // As GNU ls: a symlink named on the command line is followed unless -l.
          const id = await resolvePath(fs, path, { followLast: !opts.l });
          const shown = Buffer.from(path === '' ? '/' : path);
          const out = new LineWriter(process.stdout);
          try {
            for await (const line of lsLines(fs, id, shown, { long: !!opts.l, recursive: !!opts.R })) await out.line(line);
          } finally {
            await out.flush();
          }
        });
      } finally {
        await fs.close();
      }
    });

  program
    .command('cat')
    .description('write a file inside an image to standard output')
    .argument('<image>', 'a .sif, SquashFS or ext3 image')
    .argument('<path>', 'path inside the image')
    .option('--partition <id>', 'SIF descriptor id of the partition to read (default: the primary partition)', parsePartition)
    .action(async (image: string, path: string, opts: CommonOptions) => {
      const fs = await openImage(image, { partition: opts.partition });
      try {
        await inImage(image, path, async () => {
          const id = await resolvePath(fs, path, { followLast: true });
          const st = await fs.getattr(id);
          if (fileTypeOf(st.mode) === 'd') throw new FsError('EISDIR');
          if (fileTypeOf(st.mode) !== 'f') throw new UsageError(`${normalizePath(path).toString()}: not a regular file`, image);
          for (let pos = 0; pos < st.size;) {
            // 128 KiB: one SquashFS block per read, a view rather than a joined copy.
            const chunk = await fs.read(id, pos, Math.min(128 << 10, st.size - pos));
            if (chunk.length === 0) break;
            await writeWithBackpressure(process.stdout, chunk);
            pos += chunk.length;
          }
        });
      } finally {
        await fs.close();
      }
    });
}
