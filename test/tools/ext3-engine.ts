/**
 * Access to the ext3 engine for the ext3 verification tests, tolerant of the
 * engine not having landed yet: `loadEngine()` returns null (and the caller
 * prints why it skips) until src/ext3/index.ts exports `openExt3`.
 *
 * The engine's contract used here (issue 4, .coord/ext3-core.md):
 *   openExt3(store: ByteStore, { writable }) -> WritableFs
 * and a clean `close()` that leaves the journal empty and the image clean.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { WritableFs } from '../../src/engine.js';
import { FileRegion } from '../../src/io/file-region.js';
import type { ByteStore } from '../../src/io/byte-source.js';
import { walkManifest } from '../ext3/model-manifest.js';
import { repoRoot, skipNote } from './helpers.js';

export type OpenExt3 = (store: ByteStore, options: { writable: boolean }) => Promise<WritableFs>;

let cached: OpenExt3 | null | undefined;

/** The engine's opener, or null when src/ext3/index.ts (with openExt3) does not exist yet. */
export async function loadEngine(): Promise<OpenExt3 | null> {
  if (cached !== undefined) return cached;
  const index = join(repoRoot, 'src', 'ext3', 'index.ts');
  if (!existsSync(index)) return (cached = null);
  const mod = (await import(index)) as { openExt3?: OpenExt3 };
  cached = typeof mod.openExt3 === 'function' ? mod.openExt3 : null;
  return cached;
}

/** Opens an image file with the engine (which must exist: check loadEngine first). */
export async function openImageFile(path: string, writable: boolean): Promise<WritableFs> {
  const open = await loadEngine();
  if (!open) throw new Error('the ext3 engine (src/ext3/index.ts openExt3) is not available');
  const store = await FileRegion.open(path, { writable });
  try {
    return await open(store, { writable });
  } catch (e) {
    await store.close();
    throw e;
  }
}

/** Call at the top of a test file: prints the reason when the engine tests cannot run. */
export async function engineOrSkipNote(what: string): Promise<boolean> {
  const open = await loadEngine();
  if (!open) skipNote(what, 'the ext3 engine (openExt3 in src/ext3/index.ts) has not landed yet');
  return open !== null;
}

/** The engine's manifest lines of an image file (lost+found left out), opened read-only. */
export async function engineManifestLines(image: string): Promise<string[]> {
  const fs = await openImageFile(image, false);
  try {
    return (await walkManifest(fs, { exclude: ['/lost+found'] })).map((e) => e.line);
  } finally {
    await fs.close();
  }
}
