/**
 * openImage / detectImageKind: choosing the engine by content (SIF, SquashFS,
 * ext3), the SIF primary partition versus --partition, and the refusals.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CorruptError, UsageError } from '../../src/errors.js';
import { detectImageKind, openImage } from '../../src/image/index.js';
import { resolvePath } from '../../src/inspect/path.js';
import { mksquashfs, removeDir, tempDir } from '../squashfs/unit-fixtures.js';

let work: string;
let sqfs: string;
let ext3: string;
let sif: string;

beforeAll(() => {
  work = tempDir('image');
  const src = join(work, 'src');
  mkdirSync(src);
  writeFileSync(join(src, 'marker'), 'squash\n');
  sqfs = mksquashfs(src, join(work, 'a.sqfs'));
  const e3 = join(work, 'e3');
  mkdirSync(e3);
  writeFileSync(join(e3, 'marker'), 'ext3\n');
  ext3 = join(work, 'b.img');
  execFileSync('mkfs.ext3', ['-q', '-F', '-d', e3, ext3, '2M'], { stdio: 'ignore' });
  sif = join(work, 'c.sif');
  execFileSync('siftool', ['new', sif]);
  execFileSync('siftool', ['add', sif, sqfs, '--datatype', '4', '--parttype', '2', '--partfs', '1', '--partarch', '2']);
  execFileSync('siftool', ['add', sif, ext3, '--datatype', '4', '--parttype', '4', '--partfs', '2', '--partarch', '2']);
  writeFileSync(join(work, 'junk'), Buffer.alloc(4096, 0x41));
});
afterAll(() => removeDir(work));

async function marker(path: string, partition?: number): Promise<string> {
  const fs = await openImage(path, { partition });
  try {
    const id = await resolvePath(fs, '/marker');
    return (await fs.read(id, 0, 100)).toString();
  } finally {
    await fs.close();
  }
}

describe('openImage', () => {
  it('detects each kind by content', async () => {
    expect(await detectImageKind(sqfs)).toBe('squashfs');
    expect(await detectImageKind(ext3)).toBe('ext3');
    expect(await detectImageKind(sif)).toBe('sif');
    expect(await detectImageKind(join(work, 'junk'))).toBeNull();
  });

  it('opens raw images and SIF partitions (primary by default)', async () => {
    expect(await marker(sqfs)).toBe('squash\n');
    expect(await marker(ext3)).toBe('ext3\n');
    expect(await marker(sif)).toBe('squash\n');
    expect(await marker(sif, 1)).toBe('squash\n');
    expect(await marker(sif, 2)).toBe('ext3\n');
  });

  it('refuses what it cannot open, naming the file', async () => {
    await expect(openImage(join(work, 'junk'))).rejects.toBeInstanceOf(CorruptError);
    await expect(openImage(join(work, 'junk'))).rejects.toMatchObject({ file: join(work, 'junk') });
    await expect(openImage(sif, { partition: 9 })).rejects.toBeInstanceOf(UsageError);
    await expect(openImage(sqfs, { partition: 1 })).rejects.toThrow(/--partition applies only to SIF images/);
    await expect(openImage(join(work, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' });
    const noPrimary = join(work, 'd.sif');
    execFileSync('siftool', ['new', noPrimary]);
    execFileSync('siftool', ['add', noPrimary, sqfs, '--datatype', '4', '--parttype', '3', '--partfs', '1', '--partarch', '2']);
    await expect(openImage(noPrimary)).rejects.toThrow(/SIF has no primary system partition \(use --partition ID\)/);
    expect(await marker(noPrimary, 1)).toBe('squash\n');
  });
});
