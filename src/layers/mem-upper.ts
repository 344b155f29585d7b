/**
 * The `--writable-tmpfs` upper (reference/sif-and-apptainer.md B.4): a
 * MemLayer (everything in memory, a byte cap, 64 MiB by default, ENOSPC at
 * the cap) laid out as Apptainer lays out its tmpfs session: the layer is
 * `upper/`, scratch `work/`, kernel encoding (whiteout char 0/0,
 * trusted.overlay.* marks).
 */
import { S_IFDIR } from '../engine.js';
import type { UpperLayer } from './layer.js';
import { MemLayer, type MemLayerOptions } from './mem.js';

export async function openMemUpper(options: MemLayerOptions = {}): Promise<UpperLayer> {
  const fs = new MemLayer({ rootMode: 0o1777, ...options });
  const owner = { uid: options.rootUid ?? 0, gid: options.rootGid ?? 0 };
  const root = await fs.mkdir(fs.rootId, Buffer.from('upper'), { mode: S_IFDIR | 0o755, ...owner });
  const work = await fs.mkdir(fs.rootId, Buffer.from('work'), { mode: S_IFDIR | 0o755, ...owner });
  return { name: fs.name, fs, root, work, encoding: 'kernel' };
}
