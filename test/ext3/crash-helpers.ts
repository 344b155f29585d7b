/**
 * Judging a crash image: e2fsck's replay (e2fsck -fy on a copy) against the
 * engine's (a writable open of another copy: journal replay, then the orphan
 * list), both read back through the engine's manifest, and e2fsck -fn on the
 * engine's result.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openExt3 } from '../../src/ext3/index.js';
import { MemoryRegion } from '../../src/io/memory-region.js';
import { manifest } from './core-helpers.js';
import { fsck } from './journal-helpers.js';

export { fsck as fsckBytes };

function scratch(dir: string, what: string): string {
  return path.join(dir, `${what}-${process.pid}-${Math.random().toString(36).slice(2)}.img`);
}

/** e2fsck -fy on a copy of `img` (replays the journal and repairs), then that copy's manifest. */
export async function e2fsckFixedManifest(dir: string, img: Buffer): Promise<string[]> {
  const file = scratch(dir, 'fixed');
  fs.writeFileSync(file, img);
  try {
    const r = spawnSync('e2fsck', ['-fy', file], { encoding: 'utf8' });
    // 0 clean, 1 errors corrected: both leave a consistent filesystem.
    if (r.status !== 0 && r.status !== 1) throw new Error(`e2fsck -fy exit ${r.status}:\n${r.stdout}${r.stderr}`);
    const e = await openExt3(new MemoryRegion(fs.readFileSync(file), { writable: false }), { writable: false });
    try {
      return await manifest(e);
    } finally {
      await e.close();
    }
  } finally {
    fs.rmSync(file, { force: true });
  }
}

/** The engine's recovery of `img` (on a copy), its manifest, and the recovered bytes. */
export async function engineRecovered(img: Buffer): Promise<{ lines: string[]; bytes: Buffer }> {
  const bytes = Buffer.from(img);
  const e = await openExt3(new MemoryRegion(bytes), { writable: true });
  try {
    return { lines: await manifest(e), bytes };
  } finally {
    await e.close();
  }
}

/**
 * The engine's recovery of `img` (engineRecovered): the regular files under
 * its root with their bytes, and e2fsck's verdict on the recovered bytes
 * (run in `dir`).
 */
export async function recoveredFiles(
  dir: string,
  img: Buffer,
): Promise<{ files: Map<string, Buffer>; fsck: number; out: string }> {
  const { bytes } = await engineRecovered(img);
  const e = await openExt3(new MemoryRegion(bytes, { writable: false }), { writable: false });
  const files = new Map<string, Buffer>();
  try {
    for (const d of await e.readdir(e.rootId)) {
      if (d.type !== 'f') continue;
      const { size } = await e.getattr(d.id);
      files.set(d.name.toString('latin1'), await e.read(d.id, 0, size));
    }
  } finally {
    await e.close();
  }
  const r = await fsck(dir, bytes);
  return { files, fsck: r.code, out: r.out };
}

export async function engineManifest(img: Buffer): Promise<string[]> {
  return (await engineRecovered(img)).lines;
}
