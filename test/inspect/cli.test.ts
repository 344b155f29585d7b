/**
 * `sifuse manifest|ls|cat` through the real CLI (bin/sifuse, child process):
 * raw SquashFS and SIF images (primary partition and --partition), binary-
 * safe cat, one-line errors naming the image, exit status 1.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mksquashfs, pseudoRandom, removeDir, tempDir } from '../squashfs/unit-fixtures.js';

const BIN = resolve(import.meta.dirname, '../../bin/sifuse');
let work: string;
let sqfs: string;
let sif: string;
const binary = pseudoRandom(300_000, 42);

async function sifuse(...args: string[]): Promise<{ exitCode: number; stdout: Buffer; stderr: Buffer }> {
  const r = await execa(BIN, args, { reject: false, encoding: 'buffer', stripFinalNewline: false });
  return { exitCode: r.exitCode ?? -1, stdout: Buffer.from(r.stdout), stderr: Buffer.from(r.stderr) };
}

beforeAll(() => {
  work = tempDir('cli');
  const src = join(work, 'src');
  mkdirSync(join(src, 'etc'), { recursive: true });
  mkdirSync(join(src, 'usr/bin'), { recursive: true });
  writeFileSync(join(src, 'etc/hostname'), 'box\n');
  writeFileSync(join(src, 'usr/bin/tool'), binary);
  symlinkSync('usr/bin', join(src, 'bin'));
  sqfs = mksquashfs(src, join(work, 'root.sqfs'), ['-all-time', '1700000000', '-all-root']);
  const other = join(work, 'other');
  mkdirSync(other);
  writeFileSync(join(other, 'only-in-data'), 'data partition\n');
  const data = mksquashfs(other, join(work, 'data.sqfs'), ['-comp', 'zstd']);
  sif = join(work, 'image.sif');
  execFileSync('siftool', ['new', sif]);
  execFileSync('siftool', ['add', sif, sqfs, '--datatype', '4', '--parttype', '2', '--partfs', '1', '--partarch', '2']);
  execFileSync('siftool', ['add', sif, data, '--datatype', '4', '--parttype', '3', '--partfs', '1', '--partarch', '2']);
});
afterAll(() => removeDir(work));

describe('sifuse manifest / ls / cat', () => {
  it('prints the same manifest for a raw image and the SIF holding it', async () => {
    const raw = await sifuse('manifest', sqfs);
    const viaSif = await sifuse('manifest', sif);
    expect(raw.exitCode).toBe(0);
    expect(viaSif.exitCode).toBe(0);
    expect(Buffer.compare(raw.stdout, viaSif.stdout)).toBe(0);
    const lines = raw.stdout.toString().trimEnd().split('\n');
    expect(lines[0]).toBe('/\td\t0755\t0\t0\t-\t1700000000\t-\t-');
    expect(lines).toContain('/bin\tl\t0777\t0\t0\t7\t1700000000\tusr/bin\t-');
    expect(lines).toHaveLength(7);
  });

  it('reads another SIF partition with --partition', async () => {
    const r = await sifuse('ls', '--partition', '2', sif);
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString()).toBe('only-in-data\n');
    const m = await sifuse('manifest', '--partition', '2', sif, '/only-in-data');
    expect(m.stdout.toString()).toMatch(/^\/only-in-data\tf\t0644\t/);
  });

  it('cats binary files byte for byte, through symlinked directories', async () => {
    const r = await sifuse('cat', sif, '/bin/tool');
    expect(r.exitCode).toBe(0);
    expect(Buffer.compare(r.stdout, binary)).toBe(0);
  });

  it('lists long and recursive like ls', async () => {
    const r = await sifuse('ls', '-l', sqfs, '/');
    expect(r.exitCode).toBe(0);
    const out = r.stdout.toString();
    expect(out).toMatch(/^total \d+\n/);
    expect(out).toMatch(/lrwxrwxrwx 1 0 0 +7 2023-11-14 22:13 bin -> usr\/bin\n/);
    expect(out).toMatch(/drwxr-xr-x 2 0 0 +\d+ 2023-11-14 22:13 etc\n/);
    const rec = await sifuse('ls', '-R', sqfs, '/usr');
    expect(rec.stdout.toString()).toBe('/usr:\nbin\n\n/usr/bin:\ntool\n');
    const one = await sifuse('ls', '-l', sqfs, '/usr/bin/tool');
    expect(one.stdout.toString()).toMatch(/^-rw-r--r-- 1 0 0 300000 2023-11-14 22:13 \/usr\/bin\/tool\n$/);
  });

  it('fails with one line naming the image and exit 1', async () => {
    const cases: [string[], RegExp][] = [
      [['cat', sif, '/etc/missing'], /^sifuse: .*image\.sif: \/etc\/missing: no such file or directory\n$/],
      [['ls', sqfs, '/etc/hostname/x'], /^sifuse: .*root\.sqfs: \/etc\/hostname\/x: not a directory\n$/],
      [['cat', sqfs, '/etc'], /^sifuse: .*root\.sqfs: \/etc: is a directory\n$/],
      [['ls', '--partition', '7', sif], /^sifuse: .*image\.sif: SIF has no object with id 7\n$/],
      [['ls', '--partition', '1', sqfs], /^sifuse: .*root\.sqfs: --partition applies only to SIF images\n$/],
      [['manifest', join(work, 'src/etc/hostname')], /^sifuse: .*hostname: the file is not a SIF, SquashFS or ext3 image\n$/],
    ];
    for (const [args, message] of cases) {
      const r = await sifuse(...args);
      expect(r.exitCode, args.join(' ')).toBe(1);
      expect(r.stderr.toString(), args.join(' ')).toMatch(message);
      expect(r.stdout.length).toBe(0);
    }
  });

  it('reads ext3 images, raw and as a SIF overlay partition', async () => {
    const ext3 = join(work, 'overlay.img');
    execFileSync('mkfs.ext3', ['-q', '-F', '-d', join(work, 'other'), ext3, '4M'], { stdio: 'ignore' });
    const withOverlay = join(work, 'overlay.sif');
    execFileSync('cp', [sif, withOverlay]);
    execFileSync('siftool', ['add', withOverlay, ext3, '--datatype', '4', '--parttype', '4', '--partfs', '2', '--partarch', '2']);
    const raw = await sifuse('cat', ext3, '/only-in-data');
    expect(raw.stdout.toString()).toBe('data partition\n');
    const part = await sifuse('ls', '--partition', '3', withOverlay, '/');
    expect(part.exitCode).toBe(0);
    expect(part.stdout.toString()).toBe('lost+found\nonly-in-data\n');
  });

  it('reports a corrupt image as a CorruptError line naming it', async () => {
    const bad = join(work, 'bad.sqfs');
    const bytes = Buffer.from(execFileSync('cat', [sqfs]));
    bytes.writeUInt32LE(0x12345, 0x0c); // block_size
    writeFileSync(bad, bytes);
    const r = await sifuse('manifest', bad);
    expect(r.exitCode).toBe(1);
    expect(r.stderr.toString()).toBe(
      `sifuse: ${bad}: superblock block_size 74565 is not a power of two between 4 KiB and 1 MiB\n`,
    );
  });
});
