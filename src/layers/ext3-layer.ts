/**
 * An ext3 overlay image (a file, or a SIF partition region) as a layer
 * (reference/sif-and-apptainer.md B.3): the layer is `upper/`; written to,
 * `work/` beside it holds copy-up temporaries and the hard-link index. Both
 * are made (0755, owned by the image root's owner) when missing on a writable
 * image, as Apptainer does; a read-only image must have `upper/`.
 */
import { S_IFDIR, S_IFMT, type InodeId } from '../engine.js';
import { UsageError } from '../errors.js';
import { openExt3, type Ext3Fs } from '../ext3/index.js';
import type { ByteStore } from '../io/byte-source.js';
import { FileRegion } from '../io/file-region.js';
import type { Layer, UpperLayer } from './layer.js';

export interface Ext3LayerOptions {
  /** `:ro`: open read-only, usable only as a lower layer. */
  readOnly?: boolean;
  /** A region of the file (a SIF partition): byte offset and length. */
  offset?: number;
  length?: number;
  /** Passed to the engine (tests). */
  commitIntervalMs?: number;
}

const UPPER = Buffer.from('upper');
const WORK = Buffer.from('work');

async function layerDir(fs: Ext3Fs, name: Buffer, writable: boolean, image: string): Promise<InodeId> {
  const id = await fs.lookup(fs.rootId, name);
  if (id !== null) {
    const st = await fs.getattr(id);
    if ((st.mode & S_IFMT) !== S_IFDIR) throw new UsageError(`${name.toString()} in the overlay image is not a directory`, image);
    return id;
  }
  if (!writable) throw new UsageError(`the overlay image has no ${name.toString()}/ directory`, image);
  const root = await fs.getattr(fs.rootId);
  return fs.mkdir(fs.rootId, name, { mode: S_IFDIR | 0o755, uid: root.uid, gid: root.gid });
}

/**
 * Opens an ext3 overlay image from a path or an already opened store: an
 * UpperLayer when writable (test with isUpperLayer), else a read-only Layer.
 */
export async function openExt3Layer(source: string | ByteStore, options: Ext3LayerOptions = {}): Promise<Layer | UpperLayer> {
  const readOnly = options.readOnly ?? false;
  const store =
    typeof source === 'string'
      ? await FileRegion.open(source, { offset: options.offset, length: options.length, writable: !readOnly })
      : source;
  const writable = !readOnly && store.writable;
  let fs: Ext3Fs;
  try {
    fs = await openExt3(store, { writable, commitIntervalMs: options.commitIntervalMs });
  } catch (err) {
    await store.close().catch(() => undefined);
    throw err;
  }
  try {
    const root = await layerDir(fs, UPPER, writable, store.name);
    const name = readOnly ? `${store.name}:ro` : store.name;
    if (!writable) return { name, fs, root };
    const work = await layerDir(fs, WORK, true, store.name);
    return { name, fs, root, work, encoding: 'kernel' };
  } catch (err) {
    await fs.close().catch(() => undefined);
    throw err;
  }
}
