/**
 * A SquashFS image (a SIF's root filesystem partition, or a SquashFS overlay
 * image) as a read-only layer: the whole image is the layer
 * (reference/sif-and-apptainer.md B.3).
 */
import type { ByteSource } from '../io/byte-source.js';
import { FileRegion } from '../io/file-region.js';
import { openSquashfs } from '../squashfs/index.js';
import type { Layer } from './layer.js';

export interface SquashfsLayerOptions {
  /** A region of the file (a SIF partition): byte offset and length. */
  offset?: number;
  length?: number;
}

export async function openSquashfsLayer(source: string | ByteSource, options: SquashfsLayerOptions = {}): Promise<Layer> {
  const src =
    typeof source === 'string' ? await FileRegion.open(source, { offset: options.offset, length: options.length }) : source;
  try {
    const fs = await openSquashfs(src);
    return { name: src.name, fs, root: fs.rootId };
  } catch (err) {
    await src.close().catch(() => undefined);
    throw err;
  }
}
