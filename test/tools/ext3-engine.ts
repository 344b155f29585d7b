/**
 * The ext3 engine for the ext3 verification tests, imported directly: if
 * `openExt3` moves, these files fail to load and every suite using them fails
 * loudly (never a silent skip).
 */
import type { WritableFs } from '../../src/engine.js';
import { openExt3 } from '../../src/ext3/index.js';
import { FileRegion } from '../../src/io/file-region.js';
import { walkManifest } from '../conformance/manifest.js';

export { openExt3 };

/** Opens an image file with the engine. */
export async function openImageFile(path: string, writable: boolean): Promise<WritableFs> {
  const store = await FileRegion.open(path, { writable });
  try {
    return await openExt3(store, { writable });
  } catch (e) {
    await store.close();
    throw e;
  }
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
