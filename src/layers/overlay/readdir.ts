/**
 * Merged listings (overlayfs.rst "readdir"): the upper directory first, then
 * each merged lower directory, a name taken from the highest layer that has
 * it. Whiteouts (char 0/0 and `.wh.NAME`) hide the name below and are not
 * listed; `.wh..wh..opq` and other `.wh.` names never appear.
 */
import type { DirEntry } from '../../engine.js';
import { isKernelWhiteoutMode, isWhiteoutName, WH_PREFIX } from './encoding.js';
import type { LayerRef } from './nodes.js';
import type { Stack } from './stack.js';

export interface LayerEntry {
  entry: DirEntry;
  layer: number;
}

export async function mergeListing(stack: Stack, dirs: readonly LayerRef[]): Promise<LayerEntry[]> {
  const seen = new Set<string>();
  const out: LayerEntry[] = [];
  for (const d of dirs) {
    const fs = stack[d.layer]!.fs;
    const entries = await fs.readdir(d.id);
    const hidden: string[] = [];
    for (const e of entries) {
      if (isWhiteoutName(e.name)) {
        hidden.push(e.name.subarray(WH_PREFIX.length).toString('latin1'));
        continue;
      }
      const key = e.name.toString('latin1');
      if (seen.has(key)) continue;
      seen.add(key);
      if (e.type === 'c') {
        const st = await fs.getattr(e.id);
        if (isKernelWhiteoutMode(st.mode, st.rdev)) continue;
      }
      out.push({ entry: e, layer: d.layer });
    }
    // A `.wh.` marker hides the name in the layers below only: added after this layer's own names.
    for (const h of hidden) seen.add(h);
  }
  return out;
}
